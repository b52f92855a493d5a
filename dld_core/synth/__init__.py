"""Synthetic speech corpus: offline TTS engines + seeded augmentation (+ FSDD real digits)."""
from __future__ import annotations

from dld_core.synth.corpus import build_corpus

__all__ = ["build_corpus"]
