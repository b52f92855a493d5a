"""Where things are: the repository root, and paths that config files record relative to it."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples"
CHECKPOINTS = REPO / "checkpoints"


def user_cache(env: str, name: str) -> Path:
    """A cache folder: $``env`` when set, else ~/.cache/dld_studio/``name``."""
    root = os.environ.get(env)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "dld_studio" / name


def repo_path(path: str | os.PathLike) -> Path:
    """A path as given, else (when only that exists) relative to the repository, as config.json records them."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (REPO / p).exists():
        p = REPO / p
    return p


def display_path(path: str | os.PathLike) -> str:
    """A path relative to the repository when it lies inside it (what results files and logs show)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)
