"""Regenerate ``data_samples/``: a few short synthetic clips (incl. held-out voices) + 3 real FSDD digits.

    python -m dld_core.synth.samples [data_samples] [path/to/fsdd]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from dld_core.audio import write_manifest
from dld_core.synth import augment, engines, fsdd
from dld_core.audio import SAMPLE_RATE as SR
from dld_core.audio import resample
from dld_core.synth.engines import Voice
from dld_core.text import normalize_text

# (voice, spoken text, speed, pitch, augmentation or None, label)
SYNTHETIC = [
    (Voice("flite", "kal16"), "and god said, let there be light.", 1.0, 1.0, None, ""),
    (Voice("festival", "cmu_us_slt_arctic_hts"), "call me at five five five, one two three four.", 1.05, 1.0,
     None, ""),
    (Voice("espeak", "en-gb-x-rp+f3"), "the train leaves at half past seven.", 1.0, 1.0,
     {"gain_dbfs": -22.0, "seed": 11, "noise": "pink", "snr_db": 15.0}, ""),
    (Voice("festival", "kal_diphone"), "she bought twenty three apples.", 1.0, 1.05,
     {"gain_dbfs": -22.0, "seed": 12, "reverb_rt60": 0.45, "reverb_wet": 0.6}, ""),
    (Voice("flite", "awb", True), "it happened in nineteen eighty four.", 1.0, 1.0, None, "held-out voice"),
    (Voice("festival", "ked_diphone", True), "the party is on the twenty first of may.", 1.0, 1.0, None,
     "held-out voice"),
    (Voice("espeak", "en-029+m3", True), "we open at nine in the morning.", 1.0, 1.0,
     {"gain_dbfs": -22.0, "seed": 13, "telephone": True}, "held-out voice"),
]
FSDD_PICKS = ("3_jackson_0.wav", "7_theo_1.wav", "0_nicolas_2.wav")


def make_samples(dest: str | Path = "data_samples", fsdd_dir: str | Path | None = None) -> list[dict]:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (voice, spoken, speed, pitch, aug, label) in enumerate(SYNTHETIC):
        if not engines.engine_available(voice.engine):
            continue
        x = engines.synthesize(voice, [(spoken, speed, pitch)])[0]
        if x is None:
            continue
        x = augment.trim_silence(x, pad_s=0.1)
        y = augment.apply_augmentation(x, aug or {"gain_dbfs": -20.0, "seed": 0})
        name = f"synth_{i:02d}_{voice.engine}_{voice.name.replace('+', '_')}.wav"
        sf.write(dest / name, y, SR, subtype="PCM_16")
        source = f"{voice.speaker}" + (f" ({label})" if label else "")
        if aug:
            source += f", augmented: {augment.describe(aug)}"
        rows.append({"audio_filepath": name, "text": normalize_text(spoken), "duration": round(y.size / SR, 4),
                     "source": source})
    if fsdd_dir:
        by_name = {p.name: (p, word, spk) for p, word, spk in fsdd.fsdd_files(fsdd_dir)}
        for pick in FSDD_PICKS:
            if pick not in by_name:
                continue
            p, word, spk = by_name[pick]
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            x = resample(x.mean(axis=1), sr, SR)
            x = x * min(1.0, 0.999 / max(float(np.max(np.abs(x))), 1e-9))
            name = f"fsdd_{pick}"
            sf.write(dest / name, x, SR, subtype="PCM_16")
            rows.append({"audio_filepath": name, "text": word, "duration": round(x.size / SR, 4),
                         "source": f"FSDD {spk} (real speech; {fsdd.ATTRIBUTION}, {fsdd.LICENCE})"})
    write_manifest(dest / "manifest.jsonl", rows)
    return rows


if __name__ == "__main__":  # pragma: no cover
    repo = Path(__file__).resolve().parents[2]
    out = sys.argv[1] if len(sys.argv) > 1 else str(repo / "data_samples")
    src = sys.argv[2] if len(sys.argv) > 2 else str(repo.parent / "shared/data/fsdd")
    for r in make_samples(out, src if Path(src).is_dir() else None):
        print(r)
