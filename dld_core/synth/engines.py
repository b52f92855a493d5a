"""Command-line TTS engines (espeak-ng, flite, festival) -> 16 kHz mono float32.

Every engine is deterministic for fixed text and parameters; speed and pitch are passed as
explicit parameters so a seeded plan reproduces byte-identical audio.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from dld_core.audio import SAMPLE_RATE as SR
from dld_core.audio import resample
TIMEOUT_S = 120

# Voices. ``held_out`` voices appear only in the test split.
ESPEAK_ACCENTS_TRAIN = ("en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
ESPEAK_ACCENTS_HELD_OUT = ("en-029", "en-gb-scotland")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "Andy", "Annie", "Denis", "Ed", "Robert", "Steph", "Zac", "klatt")

FLITE_TRAIN = ("kal16", "kal", "rms", "slt")
FLITE_HELD_OUT = ("awb",)
FLITE_F0 = {"kal16": 105.0, "kal": 105.0, "rms": 100.0, "slt": 170.0, "awb": 110.0}

FESTIVAL_TRAIN = ("kal_diphone", "cmu_us_slt_arctic_hts")
FESTIVAL_HELD_OUT = ("ked_diphone",)


@dataclass(frozen=True)
class Voice:
    engine: str        # espeak | flite | festival
    name: str          # engine-specific voice id (espeak: "accent+variant")
    held_out: bool = False

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"


def all_voices() -> list[Voice]:
    voices = [Voice("espeak", f"{a}+{v}") for a in ESPEAK_ACCENTS_TRAIN for v in ESPEAK_VARIANTS]
    voices += [Voice("espeak", f"{a}+{v}", True) for a in ESPEAK_ACCENTS_HELD_OUT for v in ESPEAK_VARIANTS]
    voices += [Voice("flite", n) for n in FLITE_TRAIN] + [Voice("flite", n, True) for n in FLITE_HELD_OUT]
    voices += [Voice("festival", n) for n in FESTIVAL_TRAIN] + [Voice("festival", n, True) for n in FESTIVAL_HELD_OUT]
    return voices


def engine_available(engine: str) -> bool:
    return shutil.which({"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}[engine]) is not None


def _tmpdir() -> tempfile.TemporaryDirectory:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="dldsynth_", dir=base)


def _read(path: str, pitch: float = 1.0) -> np.ndarray | None:
    """Read a wav, mix to mono and resample to 16 kHz; ``pitch`` != 1 resamples as if played ``pitch`` x faster."""
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception:
        return None
    x = x.mean(axis=1)
    if x.size == 0:
        return None
    return resample(x, sr * pitch, SR)


def _run(cmd: list[str], **kw) -> bool:
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT_S, check=True, **kw)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def synth_espeak(voice: str, text: str, speed: float, pitch: float, tmp: str) -> np.ndarray | None:
    """speed: relative rate (1.0 = 165 wpm); pitch: relative (1.0 = espeak pitch 50)."""
    out = os.path.join(tmp, "e.wav")
    wpm = int(round(165 * speed))
    p = int(np.clip(round(50 * pitch), 0, 99))
    if not _run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(p), "-w", out, "--", text]):
        return None
    return _read(out)


def synth_flite(voice: str, text: str, speed: float, pitch: float, tmp: str) -> np.ndarray | None:
    out = os.path.join(tmp, "f.wav")
    f0 = FLITE_F0.get(voice, 110.0) * pitch
    cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={1.0 / speed:.4f}",
           "--setf", f"int_f0_target_mean={f0:.2f}", "-t", text, "-o", out]
    if not _run(cmd):
        return None
    return _read(out)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", " ").replace('"', " ") + '"'


def synth_festival_batch(voice: str, items: list[tuple[str, float, float]], tmp: str) -> list[np.ndarray | None]:
    """Synthesise many (text, speed, pitch) items with ONE festival process.

    Speed uses Duration_Stretch (diphone voices) and pitch is a resampling shift applied afterwards
    (the stretch is pre-compensated so the final tempo is ``speed``). HTS voices get hts_engine's ``-r`` rate.
    """
    lines = [f"(voice_{voice})"]
    paths = []
    for i, (text, speed, pitch) in enumerate(items):
        path = os.path.join(tmp, f"fest_{i}.wav")
        paths.append(path)
        if voice.endswith("_hts"):   # HTS ignores Duration_Stretch; hts_engine's -r is a speed rate
            lines.append(f"(set! hts_engine_params (append {voice}::hts_engine_params "
                         f"(list '(\"-r\" {speed / pitch:.4f}))))")
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {pitch / speed:.4f})")
        lines.append(f"(utt.save.wave (SynthText {_scheme_string(text)}) {_scheme_string(path)} 'riff)")
    script = os.path.join(tmp, "batch.scm")
    with open(script, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    _run(["festival", "-b", script])
    out = []
    for path, (_, speed, pitch) in zip(paths, items):
        out.append(_read(path, pitch=pitch) if os.path.exists(path) else None)
    return out


def synthesize(voice: Voice, items: list[tuple[str, float, float]]) -> list[np.ndarray | None]:
    """Synthesise (text, speed, pitch) items with one voice -> list of 16 kHz float32 arrays (None on failure)."""
    with _tmpdir() as tmp:
        if voice.engine == "festival":
            return synth_festival_batch(voice.name, items, tmp)
        fn = synth_espeak if voice.engine == "espeak" else synth_flite
        return [fn(voice.name, text, speed, pitch, tmp) for text, speed, pitch in items]
