"""Checkpoints are folders: config.json + model.safetensors (+ metrics.json, train_log.jsonl).

Loading validates the config, the file sizes, the weights' checksum, the safetensors header (our own
checks, then the safetensors library's) and every tensor shape, and never unpickles anything: weights
only ever come from safetensors. Files are opened without following symbolic links, and only regular
files are read.

Writes are crash-safe: every file goes to a temp file, is fsynced, then renamed into place; a tensor file
and the JSON recording its checksum are committed with a pending file (see ``commit_tensors_and_json``),
so a kill at any instant leaves a loadable, consistent pair.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

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
MAX_METRICS_BYTES = 16 << 20
MAX_HEADER_BYTES = 16 << 20        # a safetensors JSON header larger than this is refused
PENDING_SUFFIX = ".pending"
# safetensors dtype -> bytes per element (the dtypes this project writes, and nothing else)
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8,
                      "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
WEIGHT_DTYPES = ("F16", "BF16", "F32", "I64")


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

    @property
    def protected(self) -> list[int]:
        """Modules this student was trained never to drop (its recipe's `protected`), as indices."""
        from .masks import parse_modules
        text = (self.info.get("train") or {}).get("protected") or ""
        return parse_modules(text, self.config.module_names) if text else []

    @property
    def protected_names(self) -> list[str]:
        return [self.config.module_names[i] for i in self.protected]


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


def read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file, opened without following a symbolic link (so a link cannot point
    the loader at another file) and read only if not over max_bytes. Raises CheckpointError."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CheckpointError(f"{what} is missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise CheckpointError(f"{what} is a symbolic link (refused: checkpoint files must be regular files)") from None
        raise CheckpointError(f"{what} cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{what} is not a regular file")
        if st.st_size > max_bytes:
            raise CheckpointError(f"{what} is {st.st_size >> 20} MB, over the {max_bytes >> 20} MB limit"
                                  if max_bytes >= 1 << 20 else f"{what} is {st.st_size} bytes, over the {max_bytes}-byte limit")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 24, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise CheckpointError(f"{what} grew past the {max_bytes}-byte limit while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise CheckpointError(f"{what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)


def json_object(raw: bytes, what: str) -> dict:
    """A JSON object from bytes, else CheckpointError("<what> is not valid JSON" / "is not a JSON object")."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} is not a JSON object")
    return obj


def check_safetensors_header(data: bytes, what: str, allowed_dtypes=tuple(SAFETENSORS_DTYPES)) -> dict:
    """Validate a whole safetensors file's layout before anything parses its tensors (see
    `check_safetensors_entries`). Returns the header. Raises CheckpointError with a one-line reason."""
    n = safetensors_header_length(data[:8], len(data), what)
    return check_safetensors_entries(data[8:8 + n], len(data) - 8 - n, what, allowed_dtypes)


def safetensors_header_length(first8: bytes, size: int, what: str) -> int:
    """The header length a safetensors file of `size` bytes declares in its first 8 bytes, checked."""
    if size < 8 or len(first8) < 8:
        raise CheckpointError(f"{what} is truncated ({size} bytes; not a safetensors file)")
    (n,) = struct.unpack("<Q", first8[:8])
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise CheckpointError(f"{what} is not a valid safetensors file (header length {n} is beyond the "
                              f"{size}-byte file; truncated, or not safetensors at all)")
    return n


def check_safetensors_entries(header_bytes: bytes, body: int, what: str,
                              allowed_dtypes=tuple(SAFETENSORS_DTYPES)) -> dict:
    """A safetensors header (its JSON bytes; `body` = the size of the data area after it): a JSON object of
    {name: {dtype, shape, data_offsets}}, known dtypes, non-negative shapes whose byte size equals the
    offsets' span, and offsets that tile the data area exactly (no gaps, overlaps or bytes past the end)."""
    header = json_object(header_bytes, f"the safetensors header of {what}")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{what}: invalid safetensors metadata")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{what}: malformed safetensors entry for {name[:60]!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in allowed_dtypes or dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{what}: tensor {name[:60]!r} has dtype {str(dtype)[:20]!r}, not one of {', '.join(allowed_dtypes)}")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
            raise CheckpointError(f"{what}: tensor {name[:60]!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= body):
            raise CheckpointError(f"{what}: tensor {name[:60]!r} has data offsets outside the file")
        if math.prod(shape) * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
            raise CheckpointError(f"{what}: tensor {name[:60]!r} declares shape {shape} of {dtype}, "
                                  f"which does not match its {offsets[1] - offsets[0]} bytes")
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise CheckpointError(f"{what}: tensor {name[:60]!r} " + ("overlaps another tensor" if begin < position
                                  else "leaves a gap in the data area"))
        position = end
    if position != body:
        raise CheckpointError(f"{what}: {body - position} bytes after the last tensor (not a valid safetensors file)")
    return header


def parse_safetensors(data: bytes, what: str, allowed_dtypes=tuple(SAFETENSORS_DTYPES)) -> dict[str, torch.Tensor]:
    """Our header checks, then the safetensors library's own parser (which never unpickles)."""
    check_safetensors_header(data, what, allowed_dtypes)
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{what} is not a valid safetensors file ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None


def pending_path(path: Path) -> Path:
    """Where a new tensor file waits while the JSON recording its checksum is committed."""
    path = Path(path)
    return path.with_name(f".{path.name}{PENDING_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_tensors_and_json(tensor_path: Path, tensors: dict[str, torch.Tensor], json_path: Path,
                            make_json) -> None:
    """Commit a tensor file and the JSON that records its sha256 so that a crash at any instant leaves a
    consistent pair. (1) tensors -> pending file (atomically); (2) JSON with the new checksum replaces the
    old JSON (atomically); (3) the pending file is renamed over the old tensors. A crash before (2) leaves
    the old pair (plus a stale pending file); a crash between (2) and (3) leaves a JSON whose checksum is
    the pending file's, which readers then use (``resolve_committed``)."""
    tensor_path, json_path = Path(tensor_path), Path(json_path)
    pending = pending_path(tensor_path)
    atomic_save_tensors(pending, tensors)
    atomic_write_json(json_path, make_json(sha256_file(pending)))
    os.replace(pending, tensor_path)
    fsync_dir(tensor_path.parent)


def finish_commit(tensor_path: Path, expected_sha: Optional[str]) -> None:
    """For a writer that holds the folder (training, under its lock): complete a commit that a crash
    interrupted between steps (2) and (3), or drop a stale pending file."""
    tensor_path = Path(tensor_path)
    pending = pending_path(tensor_path)
    if not pending.is_file() or pending.is_symlink():
        return
    try:
        if (isinstance(expected_sha, str) and sha256_file(pending) == expected_sha
                and not (tensor_path.is_file() and sha256_file(tensor_path) == expected_sha)):
            os.replace(pending, tensor_path)
            fsync_dir(tensor_path.parent)
        else:
            pending.unlink(missing_ok=True)
    except FileNotFoundError:        # another rank of the same run got there first
        pass


def clean_interrupted_writes(folder: Path, names=(CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE)) -> list[Path]:
    """Remove temp files that a killed writer left behind (".NAME.XXXX.tmp"); only for a folder this
    process holds (training, under its lock). Returns what was removed."""
    removed = []
    folder = Path(folder)
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def recover_checkpoint_folder(folder: Path) -> None:
    """After a crash (training start, under the lock): drop temp files, finish or drop a pending commit."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    clean_interrupted_writes(folder)
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
