"""Robust audio loading (any format/rate/channels -> 16 kHz mono float32) and JSONL manifests.

Bad input always raises a subclass of :class:`AudioError` (itself a ``ValueError``) with a
one-line message; nothing else escapes for malformed audio.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SILENCE_RMS = 1e-4          # below this (about -80 dBFS) a clip is flagged silent
SILENCE_PEAK = 1e-3
MAX_ABS_SAMPLE = 100.0      # float audio lives in [-1, 1]; far beyond that it is not audio (or overflows)
PCM_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
             "ULAW": 1, "ALAW": 1}


class AudioError(ValueError):
    """Base class for every audio input problem."""


class EmptyAudioError(AudioError):
    pass


class CorruptAudioError(AudioError):
    pass


class UnsupportedFormatError(AudioError):
    pass


class InvalidSamplesError(AudioError):
    pass


class AudioTooLongError(AudioError):
    pass


@dataclass
class AudioClip:
    samples: np.ndarray            # float32, mono, 16 kHz
    sample_rate: int = SAMPLE_RATE
    duration: float = 0.0
    silent: bool = False
    warning: str = ""              # one line for the user when the clip was read but is suspicious


# --------------------------------------------------------------------------------------------
# loading
_MAGIC = (
    (b"RIFF", "wav"), (b"RF64", "wav"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"ID3", "mp3"),
    (b"FORM", "aiff"), (b".snd", "au"),
)


def _sniff(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mp3"
    return None


def _describe_unsupported(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "an MP4/M4A container (not supported; convert to wav/flac/ogg/mp3)"
    try:
        head.decode("utf-8")
        return "text, not audio"
    except UnicodeDecodeError:
        return "an unrecognised binary format"


def resample(x: np.ndarray, sr_in: float, sr_out: float = SAMPLE_RATE) -> np.ndarray:
    """soxr HQ resampling to float32: the one resampler (loader, corpus builder, augmentation)."""
    x = np.asarray(x, dtype=np.float32)
    if abs(sr_in - sr_out) < 1e-6:
        return x
    import soxr
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def rms(x: np.ndarray) -> float:
    """Root mean square level (float64 accumulation); 0 for an empty signal."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def load_audio(source: str | os.PathLike | bytes, max_seconds: float = 60.0) -> AudioClip:
    """Load wav/flac/ogg/mp3 (path or bytes) as 16 kHz mono float32.

    Raises EmptyAudioError, CorruptAudioError, UnsupportedFormatError, InvalidSamplesError or
    AudioTooLongError (all ``AudioError``). All-silent audio is returned with ``silent=True``.
    """
    import soundfile as sf

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name, file_size = "<bytes>", len(data)
        if not data:
            raise EmptyAudioError("audio is empty (0 bytes)")
        head = data[:64]
        opener = lambda: io.BytesIO(data)  # noqa: E731
    else:
        path = Path(os.fspath(source))
        name = path.name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise AudioError(f"audio file not found: {path}") from None
        except OSError as e:
            raise AudioError(f"cannot read audio file {path}: {e.strerror}") from None
        if path.is_dir():
            raise AudioError(f"{path} is a directory, not an audio file")
        if size == 0:
            raise EmptyAudioError(f"{name}: audio file is empty (0 bytes)")
        file_size = size
        try:
            with open(path, "rb") as fh:
                head = fh.read(64)
        except OSError as e:
            raise AudioError(f"cannot read audio file {path}: {e.strerror}") from None
        opener = lambda: str(path)  # noqa: E731

    kind = _sniff(head)
    if kind is None:
        raise UnsupportedFormatError(f"{name}: {_describe_unsupported(head)}; expected wav, flac, ogg or mp3")

    try:
        with sf.SoundFile(opener()) as f:
            sr, channels, frames = f.samplerate, f.channels, f.frames
            if sr <= 0 or channels <= 0:
                raise CorruptAudioError(f"{name}: invalid header (sample rate {sr}, {channels} channels)")
            if frames == 0:
                raise EmptyAudioError(f"{name}: audio has zero length")
            # header-declared length is checked before decoding anything
            if frames > 0 and frames / sr > max_seconds:
                raise AudioTooLongError(
                    f"{name}: audio is {frames / sr:.1f} s long; the limit is {max_seconds:g} s")
            limit = int(max_seconds * sr) + 1
            data = f.read(frames=limit if frames < 0 or frames > limit else frames, dtype="float32", always_2d=True)
            warning = _undeclared_data(kind, f.subtype, frames, channels, sr, file_size)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, EOFError, OSError, TypeError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = re.sub(r"^Error opening .*?: ", "", msg).strip() or type(e).__name__
        raise CorruptAudioError(f"{name}: cannot decode {kind} audio ({msg})") from None
    except MemoryError:
        raise CorruptAudioError(f"{name}: header declares an impossible size") from None

    if data.size == 0:
        raise EmptyAudioError(f"{name}: audio has zero length (no decodable samples)")
    if data.shape[0] / sr > max_seconds:
        raise AudioTooLongError(f"{name}: audio is longer than the limit of {max_seconds:g} s")
    if not np.all(np.isfinite(data)):
        raise InvalidSamplesError(f"{name}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(data)))
    if peak > MAX_ABS_SAMPLE:
        raise InvalidSamplesError(f"{name}: sample values reach {peak:.3g}; audio samples must lie within "
                                  f"±1 (refused beyond ±{MAX_ABS_SAMPLE:g})")
    x = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    x = np.ascontiguousarray(resample(np.ascontiguousarray(x, dtype=np.float32), sr), dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise InvalidSamplesError(f"{name}: audio contains NaN or infinite samples")
    if x.size == 0:
        raise EmptyAudioError(f"{name}: audio is too short ({data.shape[0]} samples at {sr} Hz is less than one "
                              f"sample at {SAMPLE_RATE} Hz)")
    peak = float(np.max(np.abs(x)))
    silent = rms(x) < SILENCE_RMS and peak < SILENCE_PEAK
    return AudioClip(samples=x, sample_rate=SAMPLE_RATE, duration=x.size / SAMPLE_RATE, silent=silent,
                     warning=warning)


def _undeclared_data(kind: str, subtype: str, frames: int, channels: int, sr: int, file_size: int) -> str:
    """A WAV whose header declares less audio than the file holds (e.g. claims 2 s, holds 10 min): only the
    declared part is decoded; say so. Empty when the sizes agree (a few trailing chunks are normal)."""
    width = PCM_BYTES.get(subtype)
    if kind != "wav" or width is None or frames <= 0:
        return ""
    extra = file_size - 44 - frames * channels * width
    per_second = sr * channels * width
    if extra <= max(per_second, 64 << 10):
        return ""
    return (f"the header declares {frames / sr:.1f} s of audio but the file holds about {extra / per_second:.0f} s "
            f"more; only the declared {frames / sr:.1f} s were read")


# --------------------------------------------------------------------------------------------
# manifests
def _manifest_row(row, where: str, base: Path) -> dict:
    """One manifest row, checked: a non-empty string path (made absolute), a string text, and a finite,
    non-negative duration when there is one. Raises ValueError naming the manifest and the line."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a manifest row must be a JSON object, got {type(row).__name__}")
    missing = [key for key in ("audio_filepath", "text") if key not in row]
    if missing:
        raise ValueError(f"{where}: a manifest row needs 'audio_filepath' and 'text' (missing {', '.join(missing)})")
    if not isinstance(row["audio_filepath"], str) or not row["audio_filepath"].strip():
        raise ValueError(f"{where}: 'audio_filepath' must be a non-empty string, got {json.dumps(row['audio_filepath'])[:40]}")
    if not isinstance(row["text"], str):
        raise ValueError(f"{where}: 'text' must be a string, got {json.dumps(row['text'])[:40]}")
    if "duration" in row:
        value = row["duration"]
        try:
            duration = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            duration = math.nan
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(f"{where}: 'duration' must be a non-negative number of seconds, got {json.dumps(value)[:40]}")
        row["duration"] = duration
    audio = Path(row["audio_filepath"])
    row["audio_filepath"] = str(audio if audio.is_absolute() else (base / audio))
    return row


def load_manifest(path: str | os.PathLike) -> list[dict]:
    """Read NeMo-style JSONL ({"audio_filepath","text","duration", ...}); paths made absolute; every row
    also gets its line number ("line"). A malformed row raises ValueError naming the manifest and line."""
    path = Path(path)
    base = path.resolve().parent
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            rows.append(_manifest_row(row, f"{path}:{lineno}", base))
            rows[-1]["line"] = lineno
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write JSONL atomically (temp file + os.replace); audio paths relative to the manifest's folder."""
    path = Path(path)
    base = path.resolve().parent
    base.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        row = dict(row)
        audio = Path(row["audio_filepath"])
        if audio.is_absolute():
            try:
                row["audio_filepath"] = os.path.relpath(audio, base)
            except ValueError:
                row["audio_filepath"] = str(audio)
        else:
            row["audio_filepath"] = audio.as_posix()
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=False))
    tmp = base / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # normal umask permissions
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sample_speech(seconds: float) -> np.ndarray:
    """`seconds` of speech for benchmarks and export checks: the synthetic data_samples clips (synth_*.wav) in
    name order, 0.3 s apart, repeated."""
    from .paths import SAMPLES
    clips = [load_audio(p).samples for p in sorted(SAMPLES.glob("synth_*.wav"))]
    if not clips:
        raise FileNotFoundError(f"no synth_*.wav clips in {SAMPLES}")
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    parts, total, need = [], 0, int(seconds * SAMPLE_RATE)
    while total < need:
        for c in clips:
            parts += [c, gap]
            total += len(c) + len(gap)
    return np.concatenate(parts)[:need].astype(np.float32)
