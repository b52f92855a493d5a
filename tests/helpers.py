"""Helpers shared by the tests: a tiny model config and a tiny deterministic corpus (tones + noise, no TTS)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from dld_core.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero"]


def tiny_config(**kw) -> ModelConfig:
    base = dict(d_model=32, n_layers=4, n_heads=2, ffn_dim=64, conv_kernel=7, dropout=0.1)
    base.update(kw)
    return ModelConfig(**base)


def wavlm_config() -> ModelConfig:
    return tiny_config(family="wavlm", extractor_layers=[[16, 10, 5], [16, 3, 2], [16, 2, 2]], num_buckets=16,
                       max_distance=64, pos_conv_kernel=8, pos_conv_groups=2)


def write_tiny_corpus(folder: Path, n: int = 24, seed: int = 0) -> dict[str, Path]:
    """Each 'word' is a tone at its own pitch: a model can actually learn this in a few steps."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wav").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        parts = []
        for w in words:
            f = 200 + 90 * WORDS.index(w)
            t = np.arange(int(16000 * 0.35)) / 16000
            parts += [0.3 * np.sin(2 * np.pi * f * t), np.zeros(1600)]
        audio = np.concatenate(parts) + 0.01 * rng.standard_normal(sum(len(p) for p in parts))
        path = folder / "wav" / f"u{i:03d}.wav"
        sf.write(path, audio.astype(np.float32), 16000, subtype="PCM_16")
        rows.append({"audio_filepath": f"wav/{path.name}", "text": " ".join(words), "duration": len(audio) / 16000})
    out = {}
    for split, part in (("train", rows[: n * 2 // 3]), ("valid", rows[n * 2 // 3: n * 5 // 6]), ("test", rows[n * 5 // 6:])):
        out[split] = folder / f"{split}.jsonl"
        out[split].write_text("".join(json.dumps(r) + "\n" for r in part))
    return out


CT2_TIED = (("decoder/projection/weight", "decoder/embeddings/weight"),)     # the output projection is the embedding


def ct2_bytes(variables: dict, aliases=CT2_TIED, version: int = 6, spec: str = "WhisperSpec") -> bytes:
    """CTranslate2's model.bin layout (ctranslate2/specs/model_spec.py, _serialize): tests' model.bin files."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
                np.dtype("float16"): 4}

    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", version), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.ascontiguousarray(value)
        out += [string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                struct.pack("<BI", type_ids[value.dtype], value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases:
        out += [string(alias), string(target)]
    return b"".join(out)


SMALL_CONFORMER = REPO / "checkpoints" / "scratch" / "dld"    # a small shipped conformer student (L1 .. L12)


def corrupted_copy(checkpoint: Path, dest: Path) -> Path:
    """A copy of a checkpoint folder whose weights fail their checksum (one byte flipped near the end)."""
    import shutil
    shutil.copytree(checkpoint, dest)
    weights = dest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    return dest


def ddp_train(folder: Path, train_call: str, imports: str = "") -> tuple[list[str], list[str]]:
    """Run `train_call` (Python source calling T.train(...) -> metrics; `imports` for its names) under torchrun with
    two CPU processes (gloo), the trainer's model captured on each rank: returns each rank's [weights sha256, steps].
    Raises AssertionError with torchrun's stderr when it fails."""
    hashes = folder / "hashes"
    hashes.mkdir()
    runner = folder / "ddp_check.py"
    runner.write_text(f"""
import hashlib, os, sys
sys.path.insert(0, {str(REPO)!r})
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
from dld_core import train as T
{imports}
captured = {{}}
class Spy(T.DynamicCTCModel):
    def __init__(self, cfg):
        super().__init__(cfg)
        captured["model"] = self
T.DynamicCTCModel = Spy
m = {train_call}
h = hashlib.sha256()
for k, v in sorted(captured["model"].state_dict().items()):
    h.update(k.encode()); h.update(v.detach().cpu().numpy().tobytes())
open(os.path.join({str(hashes)!r}, f"rank{{dist.get_rank()}}.txt"), "w").write(f"{{h.hexdigest()}} {{m['steps']}}")
dist.barrier()
dist.destroy_process_group()
""")
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(runner)],
                          capture_output=True, text=True, timeout=480, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [(hashes / f"rank{r}.txt").read_text().split() for r in (0, 1)]
