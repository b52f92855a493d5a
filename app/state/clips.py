"""Audio clips as the pages use them: uploads, recordings and sample files decoded once (st.cache_data) into a
`Clip` whose content hash is the audio part of every result cache key; the sample set and manifests' rows."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import streamlit as st

from app.state.paths import samples_manifest


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray          # float32, 16 kHz mono
    duration: float
    silent: bool
    digest: str                  # content hash: the audio part of every result cache key
    name: str
    warning: str = ""            # dld_core.audio's note on a suspicious file (shown, not fatal)


def _clip_from(audio_clip, name: str) -> Clip:
    samples = np.ascontiguousarray(audio_clip.samples, dtype=np.float32)
    digest = hashlib.sha1(samples.tobytes()).hexdigest()[:16]
    return Clip(samples, float(audio_clip.duration), bool(audio_clip.silent), digest, name, audio_clip.warning)


@st.cache_data(max_entries=32, show_spinner=False)
def load_clip_bytes(data: bytes, name: str) -> Clip:
    """Decode uploaded/recorded bytes. Raises dld_core.audio.AudioError with a one-line message."""
    from dld_core.audio import load_audio
    return _clip_from(load_audio(data), name)


@st.cache_data(max_entries=64, show_spinner=False)
def _load_clip_file(path: str, stamp: float) -> Clip:
    from dld_core.audio import load_audio
    return _clip_from(load_audio(path), Path(path).name)


def load_clip_file(path: Path) -> Clip:
    path = Path(path)
    return _load_clip_file(str(path), path.stat().st_mtime)


def load_samples() -> list[dict]:
    """data_samples/manifest.jsonl rows (absolute audio_filepath, text, duration); [] if there is none."""
    return _load_samples(str(samples_manifest()))


@st.cache_data(ttl=10, show_spinner=False)
def _load_samples(manifest_path: str) -> list[dict]:
    """load_samples, cached per manifest path (the samples folder can be moved with DLD_SAMPLES_DIR)."""
    manifest = Path(manifest_path)
    if not manifest.is_file():
        return []
    from dld_core.audio import load_manifest
    rows = load_manifest(str(manifest))
    return [r for r in rows if Path(r["audio_filepath"]).is_file()]


@st.cache_data(max_entries=16, show_spinner=False)
def _manifest_rows(path: str, stamp: int) -> list[dict]:
    from dld_core.audio import load_manifest
    return [r for r in load_manifest(path) if Path(r["audio_filepath"]).is_file()]


def manifest_rows(path: Path) -> list[dict]:
    """A manifest's rows whose audio file exists (absolute paths). Raises OSError / ValueError (one line)."""
    path = Path(path)
    return _manifest_rows(str(path.resolve()), path.stat().st_mtime_ns)


def samples_key(rows: Sequence[dict]) -> str:
    """Changes when the sample set (paths, texts, files) changes."""
    parts = []
    for r in rows:
        p = Path(r["audio_filepath"])
        try:
            stamp = p.stat().st_mtime_ns
        except OSError:
            stamp = 0
        parts.append(f"{p}|{stamp}|{r.get('text', '')}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
