"""Free Spoken Digit Dataset (FSDD): speaker-disjoint split, resampled to 16 kHz.

FSDD (Z. Jackson et al., CC BY-SA 4.0): ``recordings/{digit}_{speaker}_{take}.wav`` at 8 kHz.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from dld_core.audio import SAMPLE_RATE as SR
from dld_core.audio import resample

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTION = "Free Spoken Digit Dataset (FSDD), Z. Jackson et al."
LICENCE = "CC BY-SA 4.0"
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def fsdd_files(fsdd_dir: str | os.PathLike) -> list[tuple[Path, str, str]]:
    """(path, digit word, speaker) for every recording, sorted by name."""
    root = Path(fsdd_dir)
    rec = root / "recordings" if (root / "recordings").is_dir() else root
    out = []
    for p in sorted(rec.glob("*.wav")):
        m = _NAME.match(p.name)
        if m:
            out.append((p, DIGITS[int(m.group(1))], m.group(2)))
    return out


def fsdd_speaker_split(fsdd_dir: str | os.PathLike, seed: int = 0) -> dict[str, list[str]]:
    """Speakers -> splits: one test speaker, one valid speaker, the rest train (seeded, disjoint)."""
    speakers = sorted({spk for _, _, spk in fsdd_files(fsdd_dir)})
    if len(speakers) < 3:
        raise ValueError(f"FSDD folder {fsdd_dir} has {len(speakers)} speakers; need at least 3 for a speaker split")
    rng = random.Random(f"fsdd-{seed}")
    order = speakers[:]
    rng.shuffle(order)
    return {"train": sorted(order[2:]), "valid": [order[1]], "test": [order[0]]}


def fsdd_fingerprint(fsdd_dir: str | os.PathLike | None) -> str | None:
    if not fsdd_dir:
        return None
    files = fsdd_files(fsdd_dir)
    return f"{len(files)}:{sum(p.stat().st_size for p, _, _ in files)}"


def convert_fsdd(fsdd_dir: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
                 progress: bool = False) -> dict[str, list[dict]]:
    """Resample every FSDD clip to 16 kHz mono into ``out/fsdd/`` and return manifest rows per split."""
    out = Path(out)
    (out / "fsdd").mkdir(parents=True, exist_ok=True)
    split_of = {spk: split for split, spks in fsdd_speaker_split(fsdd_dir, seed).items() for spk in spks}
    rows: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    files = fsdd_files(fsdd_dir)
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc="fsdd", unit="clip")
    for path, word, spk in it:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x = resample(x.mean(axis=1), sr, SR)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > 0.999:
            x = x * (0.999 / peak)
        dst = out / "fsdd" / path.name
        sf.write(dst, x, SR, subtype="PCM_16")
        rows[split_of[spk]].append({
            "audio_filepath": str(dst.resolve()), "text": word, "duration": round(x.size / SR, 4),
            "speaker": f"fsdd:{spk}", "engine": "human", "source": "fsdd",
        })
    return rows
