"""The checkpoints the app offers, and the shared model cache: `get_checkpoint(path)` is one `st.cache_resource`
entry per (path, file stamps), shared by every browser session. The layer mask is never stored on a model: it
is an argument of every call that runs one (app.state.results)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import streamlit as st

from app.state.paths import checkpoints_dir, jobs_dir
from dld_core.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, Checkpoint, list_checkpoints, load_checkpoint,
                                 read_config, read_metrics)
from dld_core.config import RECIPE_LABELS
from dld_core.safe_io import CheckpointError


@dataclass(frozen=True)
class CheckpointEntry:
    path: Path
    label: str           # folder · recipe · validation WER (when metrics.json has one): what pickers show
    recipe: str
    origin: str          # "shipped" (under checkpoints/) or "trained" (made by the trainer)
    valid_wer: Optional[float] = None     # the trainer's best validation WER (fraction), None if unknown


def metrics_valid_wer(metrics: Optional[dict]) -> Optional[float]:
    """The full-depth validation WER of the kept model, from a trainer's metrics.json. A student's
    best_valid_wer is the mean over its validation masks (full depth and every other module), so the kept
    epoch's full-depth entry in "history" is read when there is one; otherwise best_valid_wer (a teacher's
    is full depth), or older files' valid_wer / wer."""
    metrics = metrics or {}
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    best = metrics.get("best_valid_wer")
    for entry in metrics.get("history") or []:
        wers = entry.get("valid_wer_masks") if isinstance(entry, dict) else None
        if number(best) and wers and all(number(w) for w in wers) and number(entry.get("valid_wer")) \
                and abs(sum(wers) / len(wers) - best) < 1e-9:
            return float(entry["valid_wer"])
    return next((float(metrics[k]) for k in ("best_valid_wer", "valid_wer", "wer") if number(metrics.get(k))), None)


def wer_text(wer: Optional[float]) -> str:
    """" · valid WER 12.3%" for a picker label ("" when unknown)."""
    return f" · valid WER {100 * wer:.1f}%" if isinstance(wer, (int, float)) else ""


@st.cache_data(ttl=3, show_spinner=False)
def _scan(root: str, origin: str) -> list[tuple[str, str, str, Optional[float]]]:
    out = []
    for folder in list_checkpoints(root):
        try:
            recipe = str(read_config(folder).get("recipe", "unknown"))
        except CheckpointError:
            continue
        try:
            wer = metrics_valid_wer(read_metrics(folder))
        except (CheckpointError, OSError, ValueError):
            wer = None
        out.append((str(folder), recipe, origin, wer))
    return out


def checkpoint_name(path: Path) -> str:
    """A checkpoint as people tell it apart: its folder under checkpoints/ ("conformer_dld", "scratch/dld") or
    under the trainer's jobs folder ("trained/<run>"), else its folder name."""
    path = Path(path)
    for root, prefix in ((checkpoints_dir(), ""), (jobs_dir(), "trained/")):
        try:
            return prefix + path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def find_checkpoints() -> list[CheckpointEntry]:
    """Every usable checkpoint folder: under checkpoints/ and under the trainer's jobs folder."""
    entries, seen = [], set()
    for root, origin in ((checkpoints_dir(), "shipped"), (jobs_dir(), "trained")):
        for path_s, recipe, org, wer in _scan(str(root), origin):
            path = Path(path_s)
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                rel = path.relative_to(root)
            except ValueError:
                rel = Path(path.name)
            prefix = "" if org == "shipped" else "trained/"
            label = f"{prefix}{rel.as_posix()} · {RECIPE_LABELS.get(recipe, recipe)}{wer_text(wer)}"
            entries.append(CheckpointEntry(path, label, recipe, org, wer))
    return entries


def checkpoint_stamp(path: Path) -> str:
    """Changes whenever the checkpoint files change (a retrained model is reloaded, not served stale)."""
    path = Path(path)
    parts = []
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            st_ = (path / name).stat()
            parts.append(f"{st_.st_mtime_ns}:{st_.st_size}")
        except OSError:
            parts.append("missing")
    return "|".join(parts)


def checkpoint_key(path: Path) -> str:
    return f"{Path(path).resolve()}@{checkpoint_stamp(path)}"


@st.cache_resource(max_entries=8, show_spinner="Loading model…")
def _load_checkpoint(path: str, stamp: str) -> Checkpoint:
    ckpt = load_checkpoint(path)
    ckpt.model.eval()
    for p in ckpt.model.parameters():
        p.requires_grad_(False)
    _warm_up(ckpt)
    return ckpt


def _warm_up(ckpt: Checkpoint) -> None:
    """One short forward at load time, so one-off kernel/allocator setup is not billed to a user's first
    toggle (the page shows measured latency)."""
    from dld_core.audio import SAMPLE_RATE
    from dld_core.inference import recognize
    try:
        recognize(ckpt.model, [np.zeros(SAMPLE_RATE, dtype=np.float32)])
    except (RuntimeError, ValueError):
        pass


def get_checkpoint(path: Path) -> Checkpoint:
    """The shared, cached model. Raises CheckpointError (one-line message) if it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path.name}: checkpoint folder not found ({path})")
    return _load_checkpoint(str(path.resolve()), checkpoint_stamp(path))


def checkpoint_summary(ckpt: Checkpoint) -> dict[str, Any]:
    from dld_core.model import count_parameters
    metrics = read_metrics(ckpt.path) or {}
    cfg = ckpt.config
    return {"recipe": RECIPE_LABELS.get(ckpt.recipe, ckpt.recipe), "family": cfg.family, "layers": cfg.num_modules,
            "d_model": cfg.d_model, "params_m": count_parameters(ckpt.model) / 1e6,
            "valid_wer": metrics_valid_wer(metrics), "protected": list(ckpt.protected.kept_names)}


def model_config_of(folder) -> Optional["ModelConfig"]:
    """A checkpoint's model config from its config.json alone (no weights read); None if unreadable."""
    from dld_core.config import ModelConfig, from_dict
    try:
        return from_dict(ModelConfig, read_config(folder)["model"])
    except (CheckpointError, OSError, KeyError, TypeError, ValueError):
        return None


@st.cache_resource(max_entries=2, show_spinner="Loading the pretrained Whisper…")
def get_pretrained_whisper(source: str):
    """The unchanged pretrained Whisper an encoder-decoder student was distilled from (dld_core.story.
    pretrained_whisper; `source`: dld_core.story.pretrained_source of its config), loaded once per server. Raises
    CheckpointError / OSError / ValueError when it cannot be read here."""
    from dld_core.story import pretrained_whisper
    return pretrained_whisper(source)
