"""Checkpoints are folders: config.json + model.safetensors (+ metrics.json, train_log.jsonl).

Loading validates the config, the file sizes, the weights' checksum, the safetensors header and every
tensor shape, and never unpickles anything: files are read with ``dld_core.safe_io`` (no symbolic links,
regular files only, weights only ever from safetensors). Saving commits the weights and the config.json
that records their checksum together (``safe_io.commit_tensors_and_json``), so a kill at any instant
leaves a loadable, consistent pair.
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

from .config import ModelConfig, from_dict, to_dict
from .masks import Mask
from .model import DynamicCTCModel
from .safe_io import (CheckpointError, atomic_write_json, clean_interrupted_writes, commit_tensors_and_json,
                      finish_commit, parse_safetensors, pending_path, read_regular_file)

FORMAT = "dld-studio-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
LOG_FILE = "train_log.jsonl"
MAX_WEIGHTS_BYTES = 1 << 30        # 1 GiB: refuse anything larger
MAX_CONFIG_BYTES = 1 << 20
MAX_METRICS_BYTES = 16 << 20
WEIGHT_DTYPES = ("F16", "BF16", "F32", "I64")


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

    @property
    def protected(self) -> Mask:
        """The modules this student was trained never to drop (True), from its recipe's `protected` text in
        config.json (TrainConfig.protected: "A1", "" for none; read with Mask.parse)."""
        return Mask.parse((self.info.get("train") or {}).get("protected") or "", self.config.module_names)


def recover_checkpoint_folder(folder: Path) -> None:
    """After a crash (training start, under the lock): drop temp files, finish or drop a pending commit."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    clean_interrupted_writes(folder, (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE))
    try:
        expected = read_config(folder).get("weights_sha256")
    except CheckpointError:
        expected = None
    finish_commit(folder / WEIGHTS_FILE, expected)


def save_checkpoint(folder: str | os.PathLike, model: DynamicCTCModel, *, recipe: str,
                    metadata: Optional[dict] = None, metrics: Optional[dict] = None,
                    dtype: torch.dtype = torch.float16) -> Path:
    """Weights and config.json (which records their checksum) are committed together
    (``commit_tensors_and_json``): a crash at any instant leaves the old checkpoint or the new one, both
    loadable, never a mixed one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}

    def make_info(digest: str) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "recipe": recipe,
            "model": to_dict(model.config),
            "model_sha256": config_digest(to_dict(model.config)),
            "weights_sha256": digest,
            "weights_dtype": str(dtype).replace("torch.", ""),
            **(metadata or {}),
        }

    commit_tensors_and_json(folder / WEIGHTS_FILE, weights, folder / CONFIG_FILE, make_info)
    if metrics is not None:
        atomic_write_json(folder / METRICS_FILE, metrics)
    return folder


def config_digest(model: dict) -> str:
    """The checksum of the model-defining config (family, sizes, vocabulary, ...) recorded next to the
    weights' one: an edited config.json is refused like edited weights."""
    return hashlib.sha256(json.dumps(model, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check config.json only (cheap: used to list checkpoints)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder")
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.exists() and not cfg_path.is_symlink():
        raise CheckpointError(f"{folder.name}: no {CONFIG_FILE} (not a DLD Studio checkpoint)")
    return parse_config(read_regular_file(cfg_path, MAX_CONFIG_BYTES, f"{folder.name}: {CONFIG_FILE}"), folder.name)


def parse_config(raw: bytes, name: str) -> dict[str, Any]:
    """config.json's bytes, checked: format and version, a model config within bounds, and the model
    config's checksum. `name` prefixes every one-line error."""
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{name}: {CONFIG_FILE} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{name}: {CONFIG_FILE} is not a DLD Studio checkpoint config")
    if info.get("version") != VERSION:
        raise CheckpointError(f"{name}: unsupported checkpoint version {info.get('version')!r}")
    try:
        check_config_bounds(from_dict(ModelConfig, info.get("model")))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: invalid model config: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
    if info.get("model_sha256") != config_digest(info["model"]):
        raise CheckpointError(f"{name}: the model config in {CONFIG_FILE} does not match its checksum "
                              f"(model_sha256: edited or corrupt)")
    return info


def max_weights_bytes(info: dict) -> int:
    """The largest model.safetensors the (checked) config can need: every tensor in float32, plus a
    generous header. A bigger file is refused from its size, before a byte of it is read."""
    with torch.device("meta"):
        skeleton = DynamicCTCModel(from_dict(ModelConfig, info["model"]))
    return min(MAX_WEIGHTS_BYTES, sum(t.numel() for t in skeleton.state_dict().values()) * 8 + (1 << 20))


# Generous bounds on what a checkpoint's config may ask for (the largest models here are ~100x smaller):
# a crafted config.json cannot make building the model take minutes or unbounded memory.
CONFIG_BOUNDS = {"n_mels": 512, "d_model": 4096, "n_layers": 128, "n_heads": 128, "ffn_dim": 32768,
                 "conv_kernel": 1023, "num_buckets": 8192, "max_distance": 1 << 20, "pos_conv_kernel": 1024,
                 "pos_conv_groups": 256}


def check_config_bounds(cfg: ModelConfig) -> None:
    for name, limit in CONFIG_BOUNDS.items():
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise ValueError(f"{name}={value!r} is outside 1..{limit}")
    if not isinstance(cfg.vocab, list) or not 2 <= len(cfg.vocab) <= 10000 or not all(isinstance(t, str) and len(t) <= 32 for t in cfg.vocab):
        raise ValueError("vocab must be a list of at most 10000 short strings")
    if not isinstance(cfg.dropout, (int, float)) or isinstance(cfg.dropout, bool) or not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout={cfg.dropout!r} is outside [0, 1)")
    layers = cfg.extractor_layers
    if (not isinstance(layers, list) or not 1 <= len(layers) <= 16
            or not all(isinstance(l, list) and len(l) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   and 0 < v <= 4096 for v in l) for l in layers)):
        raise ValueError("extractor_layers must be 1..16 [channels, kernel, stride] triples of positive integers")


def _read_verified(folder: Path) -> tuple[dict, bytes]:
    """config.json and the weights' bytes whose sha256 it records. The weights are read once, into memory,
    and everything after (checksum, header checks, parsing) works on those bytes, so the file cannot change
    between the check and the use. If a writer was caught between committing config.json and renaming the
    pending weights into place, the pending file (whose checksum matches) is used; a second attempt covers
    a commit that completed while we read."""
    what = f"{folder.name}: {WEIGHTS_FILE}"
    for attempt in range(2):
        info = read_config(folder)
        expected = info.get("weights_sha256")
        if not isinstance(expected, str):
            raise CheckpointError(f"{folder.name}: {CONFIG_FILE} records no weights checksum")
        pending = pending_path(folder / WEIGHTS_FILE)
        limit = max_weights_bytes(info)
        try:
            data = read_regular_file(folder / WEIGHTS_FILE, limit, what)
        except CheckpointError:
            if not (pending.is_file() and not pending.is_symlink()):    # the first save, killed before its rename
                raise
            data = b""
        if hashlib.sha256(data).hexdigest() == expected:
            return info, data
        if pending.is_file() and not pending.is_symlink():
            try:
                data = read_regular_file(pending, limit, what)
            except CheckpointError:
                continue
            if hashlib.sha256(data).hexdigest() == expected:
                return info, data
    raise CheckpointError(f"{what} does not match the checksum in {CONFIG_FILE} (corrupt or altered)")


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    folder = Path(folder)
    info, data = _read_verified(folder)
    config = from_dict(ModelConfig, info["model"])
    state = parse_safetensors(data, f"{folder.name}: {WEIGHTS_FILE}", WEIGHT_DTYPES)
    del data
    try:       # shapes first, on the meta device: a config cannot make us allocate what the file does not hold
        with torch.device("meta"):
            skeleton = DynamicCTCModel(config)
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointError(f"{folder.name}: invalid model config ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    expected_shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    got_shapes = {k: tuple(v.shape) for k, v in state.items()}
    if expected_shapes != got_shapes:
        missing = sorted(set(expected_shapes) - set(got_shapes))
        extra = sorted(set(got_shapes) - set(expected_shapes))
        wrong = sorted(k for k in set(expected_shapes) & set(got_shapes) if expected_shapes[k] != got_shapes[k])
        detail = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                  else f"shape of {wrong[0]} is {got_shapes[wrong[0]]}, expected {expected_shapes[wrong[0]]}")
        raise CheckpointError(f"{folder.name}: weights do not fit the config ({detail})")
    model = DynamicCTCModel(config)
    params = model.state_dict()
    for k, v in state.items():
        if v.is_floating_point() != params[k].is_floating_point():
            raise CheckpointError(f"{folder.name}: weights do not fit the config (dtype of {k} is {v.dtype})")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{folder.name}: {WEIGHTS_FILE} holds NaN or infinite values in {k}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.to(device).eval()
    return Checkpoint(model=model, config=config, info=info, path=folder)


def read_metrics(folder: str | os.PathLike) -> Optional[dict]:
    path = Path(folder) / METRICS_FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        metrics = json.loads(read_regular_file(path, MAX_METRICS_BYTES, METRICS_FILE).decode("utf-8"))
    except (CheckpointError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return metrics if isinstance(metrics, dict) else None


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


def export_checkpoint(run_dir: str | os.PathLike, out_dir: str | os.PathLike, **extra_info) -> Path:
    """Copy the shippable part of a training run (best model, metrics, log; not resume/) to out_dir.
    The copy is assembled in a temp folder next to out_dir and renamed into place."""
    import shutil
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    load_checkpoint(run_dir)                                   # refuse to ship something unloadable
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        for name in (WEIGHTS_FILE, METRICS_FILE, LOG_FILE):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        info = {**read_config(run_dir), **extra_info}
        atomic_write_json(tmp / CONFIG_FILE, info)
        load_checkpoint(tmp)                                   # the copy itself must verify
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
