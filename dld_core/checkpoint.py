"""Checkpoints are folders: config.json + model.safetensors (+ metrics.json, train_log.jsonl).

Loading validates the config, the file sizes, the weights' checksum and every tensor shape, and never
unpickles anything: weights only ever come from safetensors.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, from_dict, to_dict
from .model import DynamicCTCModel

FORMAT = "dld-studio-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
LOG_FILE = "train_log.jsonl"
MAX_WEIGHTS_BYTES = 1 << 30        # 1 GiB: refuse anything larger
MAX_CONFIG_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line meant for the user."""


@dataclass
class Checkpoint:
    model: DynamicCTCModel
    config: ModelConfig
    info: dict[str, Any]           # the whole config.json (recipe, training metadata, ...)
    path: Path

    @property
    def recipe(self) -> str:
        return self.info.get("recipe", "unknown")

    @property
    def name(self) -> str:
        return self.path.name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: Optional[dict] = None) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(folder: str | os.PathLike, model: DynamicCTCModel, *, recipe: str,
                    metadata: Optional[dict] = None, metrics: Optional[dict] = None,
                    dtype: torch.dtype = torch.float16) -> Path:
    """Write weights first, then config.json (which records their checksum): a crash leaves either the
    old checkpoint or a config whose checksum check fails, never a silently mixed one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    atomic_save_tensors(folder / WEIGHTS_FILE, weights)
    info = {
        "format": FORMAT, "version": VERSION, "recipe": recipe,
        "model": to_dict(model.config),
        "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
        "weights_dtype": str(dtype).replace("torch.", ""),
        **(metadata or {}),
    }
    atomic_write_json(folder / CONFIG_FILE, info)
    if metrics is not None:
        atomic_write_json(folder / METRICS_FILE, metrics)
    return folder


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check config.json only (cheap: used to list checkpoints)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder")
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file() or cfg_path.is_symlink():
        raise CheckpointError(f"{folder.name}: no {CONFIG_FILE} (not a DLD Studio checkpoint)")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{folder.name}: {CONFIG_FILE} is too large")
    try:
        info = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder.name}: {CONFIG_FILE} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{folder.name}: {CONFIG_FILE} is not a DLD Studio checkpoint config")
    if info.get("version") != VERSION:
        raise CheckpointError(f"{folder.name}: unsupported checkpoint version {info.get('version')!r}")
    try:
        from_dict(ModelConfig, info.get("model"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder.name}: invalid model config: {exc}") from None
    return info


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    folder = Path(folder)
    info = read_config(folder)
    config = from_dict(ModelConfig, info["model"])
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file() or weights_path.is_symlink():
        raise CheckpointError(f"{folder.name}: {WEIGHTS_FILE} is missing")
    size = weights_path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{folder.name}: {WEIGHTS_FILE} is {size >> 20} MB, over the {MAX_WEIGHTS_BYTES >> 20} MB limit")
    expected = info.get("weights_sha256")
    if not isinstance(expected, str) or sha256_file(weights_path) != expected:
        raise CheckpointError(f"{folder.name}: {WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE} (corrupt or altered)")
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder.name}: {WEIGHTS_FILE} is not a valid safetensors file ({str(exc).splitlines()[0][:120]})") from None
    model = DynamicCTCModel(config)
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got_shapes = {k: tuple(v.shape) for k, v in state.items()}
    if expected_shapes != got_shapes:
        missing = sorted(set(expected_shapes) - set(got_shapes))
        extra = sorted(set(got_shapes) - set(expected_shapes))
        wrong = sorted(k for k in set(expected_shapes) & set(got_shapes) if expected_shapes[k] != got_shapes[k])
        detail = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                  else f"shape of {wrong[0]} is {got_shapes[wrong[0]]}, expected {expected_shapes[wrong[0]]}")
        raise CheckpointError(f"{folder.name}: weights do not fit the config ({detail})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.to(device).eval()
    return Checkpoint(model=model, config=config, info=info, path=folder)


def read_metrics(folder: str | os.PathLike) -> Optional[dict]:
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Every folder under root (recursively) that holds a readable checkpoint config, sorted."""
    root = Path(root)
    found = []
    if root.is_dir():
        for cfg in sorted(root.rglob(CONFIG_FILE)):
            try:
                read_config(cfg.parent)
            except CheckpointError:
                continue
            if (cfg.parent / WEIGHTS_FILE).is_file():
                found.append(cfg.parent)
    return found
