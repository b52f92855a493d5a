"""Where things live. Environment variables override the defaults (the tests point them at temp folders):
DLD_CHECKPOINTS_DIR (<repo>/checkpoints), DLD_JOBS_DIR (<repo>/runs/jobs), DLD_SAMPLES_DIR (<repo>/data_samples),
DLD_RESULTS_DIR (committed <repo>/results, and <repo>/runs/eval for background evaluations started from the
app), DLD_DOWNLOADS_DIR (<repo>/runs/downloads: exported-model zips), DLD_CORPUS_DIR (<repo>/corpus)."""
from __future__ import annotations

import os
from pathlib import Path

from dld_core import report

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def checkpoints_dir() -> Path:
    return _env_path("DLD_CHECKPOINTS_DIR", REPO_ROOT / "checkpoints")


def jobs_dir() -> Path:
    return _env_path("DLD_JOBS_DIR", REPO_ROOT / "runs" / "jobs")


def samples_dir() -> Path:
    return _env_path("DLD_SAMPLES_DIR", REPO_ROOT / "data_samples")


def results_dir() -> Path:
    """Committed evaluation results (results/*.json)."""
    return _env_path("DLD_RESULTS_DIR", REPO_ROOT / "results")


def app_results_dir() -> Path:
    """Where background evaluations started from the app write (git-ignored runs/ unless overridden)."""
    return _env_path("DLD_RESULTS_DIR", REPO_ROOT / "runs" / "eval")


def downloads_dir() -> Path:
    """The cached "Download this model" zips, shared by sessions (git-ignored runs/ unless overridden)."""
    return _env_path("DLD_DOWNLOADS_DIR", REPO_ROOT / "runs" / "downloads")


def corpus_dir() -> Path:
    """The built-in corpora (DLD_CORPUS_DIR overrides <repo>/corpus)."""
    return _env_path("DLD_CORPUS_DIR", REPO_ROOT / "corpus")


def samples_manifest() -> Path:
    return samples_dir() / "manifest.jsonl"


def default_student() -> Path:
    """The shipped DLD student with the lowest real-dev WER at half compute (dld_core.report.default_student)."""
    return report.default_student(checkpoints_dir(), results_dir())


def default_teacher() -> Path:
    return checkpoints_dir() / "teacher"


def resolve_manifest(manifest: str) -> Path:
    """A manifest path as results record it (often relative to the repository)."""
    path = Path(str(manifest))
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path
