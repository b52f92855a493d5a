"""Seeded waveform augmentation: loudness, additive noise (white/pink/babble), room reverb, telephone band.

All randomness comes from the ``numpy.random.Generator`` passed in, so a seeded plan reproduces
byte-identical audio. ``plan_augmentation`` draws the *settings* (stored in the manifest);
``apply_augmentation`` applies them.
"""
from __future__ import annotations

import math
import random

import numpy as np

from dld_core.audio import SAMPLE_RATE as SR
from dld_core.audio import resample, rms

# Probabilities / ranges per split ("light" is used for valid and test).
SETTINGS = {
    "train": {"p_any": 0.5, "p_noise": 0.6, "p_reverb": 0.35, "p_telephone": 0.2, "snr_db": (5.0, 30.0),
              "rt60_s": (0.15, 0.7), "gain_dbfs": (-32.0, -14.0)},
    "light": {"p_any": 0.3, "p_noise": 0.6, "p_reverb": 0.3, "p_telephone": 0.2, "snr_db": (12.0, 30.0),
              "rt60_s": (0.15, 0.5), "gain_dbfs": (-30.0, -16.0)},
}
NOISE_KINDS = ("white", "pink", "babble")


def plan_augmentation(rng: random.Random, split: str) -> dict:
    """Draw augmentation settings for one utterance (JSON-serialisable)."""
    s = SETTINGS["train" if split == "train" else "light"]
    aug: dict = {"gain_dbfs": round(rng.uniform(*s["gain_dbfs"]), 2), "seed": rng.randrange(2 ** 31)}
    if rng.random() < s["p_any"]:
        applied = False
        if rng.random() < s["p_reverb"]:
            aug["reverb_rt60"] = round(rng.uniform(*s["rt60_s"]), 3)
            aug["reverb_wet"] = round(rng.uniform(0.3, 0.8), 3)
            applied = True
        if rng.random() < s["p_noise"] or not applied:
            aug["noise"] = rng.choice(NOISE_KINDS)
            aug["snr_db"] = round(rng.uniform(*s["snr_db"]), 2)
        if rng.random() < s["p_telephone"]:
            aug["telephone"] = True
    return aug


def describe(aug: dict) -> str:
    parts = []
    if "reverb_rt60" in aug:
        parts.append(f"reverb(rt60={aug['reverb_rt60']}s)")
    if "noise" in aug:
        parts.append(f"{aug['noise']}_noise(snr={aug['snr_db']}dB)")
    if aug.get("telephone"):
        parts.append("telephone(8kHz)")
    return "+".join(parts) or "clean"


def trim_silence(x: np.ndarray, pad_s: float = 0.15, thresh_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing silence (relative to the peak) keeping ``pad_s`` seconds each side."""
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return x
    frame = 160
    n = x.size // frame
    if n == 0:
        return x
    env = np.abs(x[: n * frame]).reshape(n, frame).max(axis=1)
    idx = np.nonzero(env > peak * 10 ** (thresh_db / 20))[0]
    if idx.size == 0:
        return x
    pad = int(pad_s * SR)
    start = max(0, idx[0] * frame - pad)
    end = min(x.size, (idx[-1] + 1) * frame + pad)
    out = x[start:end]
    # re-pad with digital silence if the engine left less than pad_s
    lead, tail = pad - (idx[0] * frame - start), pad - (end - (idx[-1] + 1) * frame)
    if lead > 0 or tail > 0:
        out = np.concatenate([np.zeros(max(lead, 0), np.float32), out, np.zeros(max(tail, 0), np.float32)])
    return out.astype(np.float32)


def white_noise(gen: np.random.Generator, n: int) -> np.ndarray:
    return gen.standard_normal(n).astype(np.float32)


def pink_noise(gen: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(gen.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(spec / np.sqrt(f), n)
    return (pink / (np.std(pink) + 1e-12)).astype(np.float32)


def babble_noise(gen: np.random.Generator, n: int, pool: list[np.ndarray]) -> np.ndarray:
    """Sum of 3-6 other utterances (random offsets, looped) -> speech-like background."""
    if not pool:
        return pink_noise(gen, n)
    out = np.zeros(n, np.float32)
    for _ in range(int(gen.integers(3, 7))):
        src = pool[int(gen.integers(len(pool)))]
        src = src / (rms(src) + 1e-9)
        reps = int(math.ceil((n + src.size) / src.size)) + 1
        tiled = np.tile(src, reps)
        off = int(gen.integers(src.size))
        out += tiled[off: off + n]
    return out


def room_impulse(gen: np.random.Generator, rt60: float) -> np.ndarray:
    """Synthetic RIR: direct path + exponentially decaying noise tail (-60 dB at rt60)."""
    n = max(int(rt60 * SR), 16)
    t = np.arange(n) / SR
    tail = gen.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    pre = int(0.002 * SR)
    tail[:pre] = 0.0
    ir = tail * 0.3
    ir[0] = 1.0
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """Band-limit to 300-3400 Hz via an 8 kHz round trip, plus mu-law 8-bit quantisation."""
    from scipy.signal import butter, sosfilt
    sos = butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos")
    y = sosfilt(sos, x).astype(np.float32)
    y8 = resample(y, SR, 8000)
    peak = float(np.max(np.abs(y8))) or 1.0
    y8 = y8 / peak
    mu = 255.0
    q = np.sign(y8) * np.log1p(mu * np.abs(y8)) / np.log1p(mu)
    q = np.round(q * 127) / 127
    y8 = np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu * peak
    return resample(y8, 8000, SR)[: x.size]


def apply_augmentation(x: np.ndarray, aug: dict, pool: list[np.ndarray] | None = None) -> np.ndarray:
    """Apply planned settings to a clean 16 kHz utterance; returns float32 in [-1, 1]."""
    gen = np.random.default_rng(aug["seed"])
    y = x.astype(np.float32)
    if "reverb_rt60" in aug:
        from scipy.signal import fftconvolve
        ir = room_impulse(gen, aug["reverb_rt60"])
        wet = fftconvolve(y, ir)[: y.size].astype(np.float32)
        w = aug["reverb_wet"]
        y = (1 - w) * y + w * wet * (rms(y) / (rms(wet) + 1e-9))
    if "noise" in aug:
        kind = aug["noise"]
        noise = (white_noise(gen, y.size) if kind == "white" else pink_noise(gen, y.size) if kind == "pink"
                 else babble_noise(gen, y.size, pool or []))
        speech = rms(y)
        target = speech / (10 ** (aug["snr_db"] / 20))
        y = y + noise * (target / (rms(noise) + 1e-12))
    if aug.get("telephone"):
        y = telephone(y)
    # loudness: scale to the target RMS level, then keep peaks below full scale
    level = 10 ** (aug["gain_dbfs"] / 20)
    y = y * (level / (rms(y) + 1e-12))
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0.98:
        y = y * (0.98 / peak)
    return y.astype(np.float32)
