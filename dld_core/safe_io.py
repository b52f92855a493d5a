"""Safe file I/O for files this project writes or is handed: crash-safe writes, and reads that trust nothing.

* **Writes** go to a temp file in the same folder, are fsynced, then renamed into place, so a reader never
  sees half a file; a tensor file and the JSON recording its checksum are committed with a pending file
  (``commit_tensors_and_json``), so a kill at any instant leaves a consistent pair.
* **Builders** of a shared folder (a corpus, decoder files) hold ``exclusive_lock(<folder>.lock)`` while they
  check and build, so a second process (another test worker, the app beside a CLI run) waits, then reuses.
* **Reads** of untrusted files open them without following symbolic links, read only regular files, up
  to a size limit, and never unpickle anything: tensors only ever come from safetensors, whose header is
  checked here before the safetensors library parses it.

Every refusal is a :class:`CheckpointError` with a one-line message.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

MAX_HEADER_BYTES = 16 << 20        # a safetensors JSON header larger than this is refused
PENDING_SUFFIX = ".pending"
# safetensors dtype -> bytes per element (the dtypes this project writes, and nothing else)
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8,
                      "F16": 2, "BF16": 2, "F32": 4, "F64": 8}


class CheckpointError(ValueError):
    """A checkpoint (or another untrusted file) that cannot be used; the message is one line meant for the user."""


# ------------------------------------------------------------------------------------------ crash-safe writes
@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing; its parent must exist) for the block: one process at a
    time builds what the lock guards, the others wait. Released when the block ends or the process dies."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


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
    the pending file's, which readers then use."""
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


def clean_interrupted_writes(folder: Path, names) -> list[Path]:
    """Remove the temp files (".NAME.XXXX.tmp") of the given file names that a killed writer left behind;
    only for a folder this process holds (training, under its lock). Returns what was removed."""
    removed = []
    folder = Path(folder)
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


# ------------------------------------------------------------------------------------------ untrusted reads
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
