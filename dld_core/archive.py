"""Checkpoint archives: a checkpoint folder as one .zip, for download and upload.

Importing treats the archive as hostile. Only config.json, model.safetensors, metrics.json and
train_log.jsonl are accepted, either at the top of the archive or inside one top-level folder; absolute
paths, ``..``, backslashes, links, devices, encrypted members, duplicates and anything else are refused
before a byte is written. Every member has a size limit that is enforced while decompressing (a lying
header or a zip bomb stops at the limit), and the CRC is checked. Files are extracted into a fresh hidden
temp folder next to the destination, the result is validated with :func:`load_checkpoint` (checksum,
safetensors header, shapes; nothing is ever unpickled), and only then renamed into place, so a failed
import leaves nothing behind. Every refusal is a :class:`CheckpointError` with a one-line message.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from . import checkpoint as ck
from .safe_io import CheckpointError, atomic_write_bytes, fsync_dir, read_regular_file

ALLOWED_FILES = (ck.CONFIG_FILE, ck.WEIGHTS_FILE, ck.METRICS_FILE, ck.LOG_FILE)
REQUIRED_FILES = (ck.CONFIG_FILE, ck.WEIGHTS_FILE)
MAX_LOG_BYTES = 64 << 20
MAX_MEMBERS = 16
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def member_limit(name: str) -> int:
    """Largest accepted uncompressed size of one member (read at call time: tests may lower the limits)."""
    return {ck.CONFIG_FILE: ck.MAX_CONFIG_BYTES, ck.WEIGHTS_FILE: ck.MAX_WEIGHTS_BYTES,
            ck.METRICS_FILE: ck.MAX_METRICS_BYTES, ck.LOG_FILE: MAX_LOG_BYTES}[name]


def max_archive_bytes() -> int:
    return sum(member_limit(n) for n in ALLOWED_FILES) + (1 << 20)


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's path, after refusing every way a name can escape or mislead."""
    raw = getattr(info, "orig_filename", None) or info.filename     # before zipfile cut it at a NUL
    shown = raw[:80].encode("unicode_escape").decode("ascii")
    if not raw or "\\" in raw or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise CheckpointError(f"archive member {shown!r} has an invalid name")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise CheckpointError(f"archive member {shown!r} has an absolute path (refused)")
    parts = raw.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise CheckpointError(f"archive member {shown!r} has a '..', '.' or empty path component (refused)")
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise CheckpointError(f"archive member {shown!r} is a symbolic link (refused)")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise CheckpointError(f"archive member {shown!r} is not a regular file (refused)")
    if info.flag_bits & 0x1:
        raise CheckpointError(f"archive member {shown!r} is encrypted (refused)")
    if len(parts) > 2:
        raise CheckpointError(f"archive member {shown!r} is nested too deeply (expected the checkpoint files "
                              f"at the top or inside one folder)")
    return PurePosixPath(*parts)


def _plan(zf: zipfile.ZipFile) -> tuple[Optional[str], dict[str, zipfile.ZipInfo]]:
    """(top-level folder or None, {file name: member}) after checking every member."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"archive has {len(infos)} members; a checkpoint has at most {len(ALLOWED_FILES)} files")
    tops: set[Optional[str]] = set()
    files: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        path = _member_path(info)
        if info.is_dir():
            if len(path.parts) != 1:
                raise CheckpointError(f"archive folder {info.filename[:80]!r} is nested too deeply")
            tops.add(path.parts[0])
            continue
        top, name = (path.parts[0], path.parts[1]) if len(path.parts) == 2 else (None, path.parts[0])
        tops.add(top)
        if name not in ALLOWED_FILES:
            raise CheckpointError(f"archive member {info.filename[:80]!r} is not a checkpoint file "
                                  f"(only {', '.join(ALLOWED_FILES)} are allowed)")
        if name in files:
            raise CheckpointError(f"archive holds {name} twice")
        if info.file_size > member_limit(name):
            raise CheckpointError(f"archive member {name} is {info.file_size} bytes, over the {member_limit(name)}-byte limit")
        total += info.file_size
        files[name] = info
    if len(tops) > 1:
        raise CheckpointError("archive holds more than one checkpoint (files in several folders)")
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing:
        raise CheckpointError(f"archive has no {missing[0]} (not a DLD Studio checkpoint)")
    if total > max_archive_bytes():
        raise CheckpointError("archive is too large once decompressed")
    return (tops.pop() if tops else None), files


def _check_declared_weights(zf: zipfile.ZipFile, files: dict[str, zipfile.ZipInfo]) -> None:
    """Refuse, from the sizes the archive declares, weights larger than its own config.json can need
    (checkpoint.max_weights_bytes): nothing big is extracted or read before the checksum could refuse it."""
    info = files[ck.CONFIG_FILE]
    if info.file_size > ck.MAX_CONFIG_BYTES:
        raise CheckpointError(f"archive member {ck.CONFIG_FILE} is over the {ck.MAX_CONFIG_BYTES}-byte limit")
    try:
        with zf.open(info) as fh:
            raw = fh.read(ck.MAX_CONFIG_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(f"archive member {ck.CONFIG_FILE} cannot be read "
                              f"({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None
    limit = ck.max_weights_bytes(ck.parse_config(raw, "archive"))
    declared = files[ck.WEIGHTS_FILE].file_size
    if declared > limit:
        raise CheckpointError(f"archive member {ck.WEIGHTS_FILE} declares {declared} bytes, more than the "
                              f"{limit} bytes its {ck.CONFIG_FILE} can need (refused before extracting)")


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> None:
    """Stream one member into a new file (never following or replacing a link), stopping at limit bytes."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            written += len(chunk)
            if written > limit or written > info.file_size:
                raise CheckpointError(f"archive member {target.name} decompresses past its declared size or the "
                                      f"{limit}-byte limit (refused)")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def import_checkpoint_archive(source: Union[str, os.PathLike, bytes, bytearray, memoryview],
                              dest_root: Union[str, os.PathLike], name: Optional[str] = None) -> Path:
    """Safely unpack a checkpoint .zip (a path or its bytes) into DEST_ROOT/NAME and return that folder.

    NAME defaults to the archive's top-level folder, else the zip file's stem, else "imported". The
    destination must not exist yet. Raises CheckpointError (one line) for anything unsafe or invalid.
    """
    dest_root = Path(dest_root)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_archive_bytes():
            raise CheckpointError("archive is too large")
        handle, stem = io.BytesIO(data), None
    else:
        path = Path(source)
        try:
            if path.stat().st_size > max_archive_bytes():
                raise CheckpointError(f"{path.name} is too large to be a checkpoint archive")
        except OSError as exc:
            raise CheckpointError(f"cannot read {path.name} ({exc.strerror})") from None
        handle, stem = path, path.stem
    try:
        zf = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(f"not a valid zip archive ({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None
    with zf:
        top, files = _plan(zf)
        _check_declared_weights(zf, files)
        folder_name = name or top or stem or "imported"
        if not _NAME_RE.fullmatch(folder_name):
            raise CheckpointError(f"{folder_name[:80]!r} is not a usable checkpoint name (letters, digits, '.', '_', '-'; "
                                  f"at most 64 characters)")
        dest = dest_root / folder_name
        if dest.exists() or dest.is_symlink():
            raise CheckpointError(f"a checkpoint named {folder_name} already exists")
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".import-"))
        try:
            for file_name, info in files.items():
                try:
                    _extract(zf, info, tmp / file_name, member_limit(file_name))
                except CheckpointError:
                    raise
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError,
                        RuntimeError) as exc:
                    raise CheckpointError(f"archive member {file_name} cannot be extracted "
                                          f"({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None
            if ck.METRICS_FILE in files:
                try:
                    json.loads((tmp / ck.METRICS_FILE).read_bytes().decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    raise CheckpointError(f"archive member {ck.METRICS_FILE} is not valid JSON") from None
            try:
                ck.load_checkpoint(tmp)
            except CheckpointError as exc:
                message = str(exc)
                if message.startswith(f"{tmp.name}: "):
                    message = message[len(tmp.name) + 2:]
                raise CheckpointError(f"archive: {message}") from None
            try:
                os.rename(tmp, dest)
            except OSError as exc:
                raise CheckpointError(f"cannot create {dest.name} ({exc.strerror})") from None
            fsync_dir(dest_root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def export_checkpoint_archive(folder: Union[str, os.PathLike], zip_path: Union[str, os.PathLike, None] = None) -> bytes:
    """Zip a checkpoint folder (validated first) as FOLDER_NAME/{config.json, model.safetensors, ...}.
    Writes zip_path atomically when given; returns the archive's bytes."""
    folder = Path(folder)
    ck.load_checkpoint(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file_name in ALLOWED_FILES:
            path = folder / file_name
            if path.is_file() and not path.is_symlink():
                zf.writestr(f"{folder.name}/{file_name}",
                            read_regular_file(path, member_limit(file_name), f"{folder.name}: {file_name}"))
    data = buf.getvalue()
    if zip_path is not None:
        atomic_write_bytes(Path(zip_path), data)
    return data
