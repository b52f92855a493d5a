"""Result files on disk: evaluation JSONs (`python -m dld_core evaluate --json`, committed under results/ or
written by the app's background evaluations), bench JSONs and budget reports (dld_core.recommend), found for a
checkpoint; and the evaluation sets' keys and names those files are grouped by."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from app.state.paths import REPO_ROOT, app_results_dir, results_dir, samples_dir, samples_manifest
from dld_core.eval_sets import EVAL_SETS, by_manifest_name

# -------------------------------------------------------------------------------------- evaluate results
# Results name their evaluation set by the manifest's file name (the sample clips by their folder); the
# names people read come from dld_core.eval_sets.
SAMPLES_NAME = "Sample clips"
EVAL_SET_ORDER = tuple(Path(s.manifest).name for s in EVAL_SETS) + ("samples",)


def eval_set_key(manifest) -> str:
    """The evaluation set a result was made on: the manifest's file name, or "samples" for the sample clips."""
    path = Path(str(manifest or ""))
    if path.name == samples_manifest().name and (
            path.parent.name in ("data_samples", samples_dir().name) or path.resolve() == samples_manifest().resolve()):
        return "samples"
    return path.name or "unknown"


def eval_set_name(key: str) -> str:
    if key == "samples":
        return SAMPLES_NAME
    found = by_manifest_name(key)
    return found.name if found else key


def eval_result_paths(checkpoint: Path) -> list[Path]:
    """Evaluation JSONs (from `python -m dld_core evaluate --json`) that may belong to a checkpoint:
    <checkpoint>/eval_*.json, then results/*.json whose "checkpoint" field names it (checked by the reader)."""
    checkpoint = Path(checkpoint)
    own = sorted(checkpoint.glob("eval_*.json")) if checkpoint.is_dir() else []
    shared = []
    for folder in dict.fromkeys((results_dir(), app_results_dir())):
        shared += sorted(folder.glob("*.json")) if folder.is_dir() else []
    return own + shared


def background_eval_path(checkpoint: Path) -> Path:
    """Where a background evaluation started from the app writes its JSON."""
    return app_results_dir() / f"eval_app_{Path(checkpoint).name}_{_short_hash(str(Path(checkpoint).resolve()))}.json"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _eval_results(checkpoint: Path) -> list[tuple[float, dict]]:
    """(mtime, data) of every evaluation JSON of this checkpoint."""
    checkpoint = Path(checkpoint)
    found = []
    for path in dict.fromkeys(eval_result_paths(checkpoint) + [background_eval_path(checkpoint)]):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("levels"), list):
            continue
        if path.parent != checkpoint and not _names(data, checkpoint):
            continue
        found.append((path.stat().st_mtime, data))
    return found


def _names(data: dict, checkpoint: Path) -> bool:
    """Whether a result JSON's "checkpoint" field names this checkpoint folder."""
    named = data.get("checkpoint")
    if not named:
        return False
    named_path = Path(str(named))
    if not named_path.is_absolute():
        named_path = REPO_ROOT / named_path
    # results made on another machine: the same <parent>/<name> tail (e.g. checkpoints/dld)
    return named_path.resolve() == Path(checkpoint).resolve() or (
        named_path.name == Path(checkpoint).name and named_path.parent.name == Path(checkpoint).parent.name)


def eval_sets(checkpoint: Path) -> set[tuple[str, str]]:
    """(test set key, decoder) of every evaluation result of this checkpoint."""
    return {(eval_set_key(d.get("manifest")), str(d.get("decoder") or "greedy")) for _, d in _eval_results(checkpoint)}


def read_eval_results(checkpoint: Path, test_set: Optional[str] = None, decoder: Optional[str] = None
                      ) -> Optional[dict]:
    """The newest evaluation JSON for this checkpoint, or None; optionally only those made on a test set
    (an eval_set_key) and with a decoder ("greedy" when the JSON names none)."""
    best, best_mtime = None, -1.0
    for mtime, data in _eval_results(checkpoint):
        if test_set is not None and eval_set_key(data.get("manifest")) != test_set:
            continue
        if decoder is not None and str(data.get("decoder") or "greedy") != decoder:
            continue
        if mtime > best_mtime:
            best, best_mtime = data, mtime
    return best


def read_bench(num_layers: int, full_gflops: float) -> Optional[dict]:
    """Measured latency of an architecture (`python -m dld_core bench` JSONs: results/bench.json and
    results/*/bench.json), matched by its module count and full-depth GFLOPs (within 1%):
    {"seconds", "threads", "latency_ms": {kept: ms}}, or None."""
    for path in [results_dir() / "bench.json", *sorted(results_dir().glob("*/bench.json"))]:
        try:
            data = json.loads(path.read_text())
            levels = {int(lv["kept"]): lv for lv in data["levels"]}
            full = float(levels[int(num_layers)]["gflops"])
            seconds = float(data.get("seconds", 10.0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if max(levels) == int(num_layers) and abs(full - float(full_gflops)) <= 0.01 * max(full, 1e-9):
            return {"seconds": seconds, "threads": data.get("threads"),
                    "latency_ms": {k: float(lv["latency_ms"]) for k, lv in levels.items() if "latency_ms" in lv}}
    return None


# ------------------------------------------------------------------------------- the budget recommendation
BUDGET_REPORT = "budget_masks.json"      # in a checkpoint folder; or results/budget_masks/<name>.json


def read_budget_report(checkpoint: Path) -> Optional[dict]:
    """dld_core.recommend's report of a checkpoint (masks chosen on its validation set, evaluated on test
    sets): the newest of <checkpoint>/budget_masks.json and results/budget_masks/*.json naming it; None if none."""
    checkpoint = Path(checkpoint)
    paths = [checkpoint / BUDGET_REPORT]
    for folder in dict.fromkeys((results_dir(), app_results_dir())):
        paths += sorted((folder / "budget_masks").glob("*.json")) if (folder / "budget_masks").is_dir() else []
    best, best_mtime = None, -1.0
    for path in paths:
        try:
            data, mtime = json.loads(path.read_text()), path.stat().st_mtime
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("masks"), list) and mtime > best_mtime and (
                path.parent == checkpoint or _names(data, checkpoint)):
            best, best_mtime = data, mtime
    return best
