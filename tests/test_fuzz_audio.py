"""Fuzzing the audio input paths: load_audio and the CLI's `transcribe`.

Every input must end in a valid clip or an AudioError (never another exception), within a time bound
and a memory bound; the CLI prints exactly one stderr line per bad file, never a traceback, and exits
non-zero when any file failed. Hypothesis runs derandomized, so CI sees the same inputs every time.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import resource
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dld_core import cli
from dld_core.audio import AudioClip, AudioError, AudioTooLongError, InvalidSamplesError, load_audio
from dld_core.checkpoint import save_checkpoint
from dld_core.model import DynamicCTCModel
from tests.helpers import REPO, tiny_config

SECONDS_PER_INPUT = 2.0               # CPU-time bound for one input: what other jobs on the machine take is not counted
PEAK_BYTES = 200 << 20                # Python-visible (numpy included) allocation bound per input
FUZZ = settings(derandomize=True, database=None, deadline=None,      # wall time: bounded in CPU time instead
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])



def fuzz(n: int) -> settings:
    return settings(FUZZ, max_examples=n)


COUNTS: dict[str, int] = {}           # inputs tried per fuzz test (see `counted`)


def counted(name: str, minimum: int):
    """Run a fuzz test, then check it really tried `minimum` inputs (guards against a silently shrunken
    run). Each test checks its own volume, so nothing depends on the order tests run in."""
    def wrap(test):
        @functools.wraps(test)
        def run(*args, **kwargs):
            COUNTS[name] = 0
            test(*args, **kwargs)
            assert COUNTS[name] >= minimum, f"{name}: only {COUNTS[name]} inputs tried"
        return run
    return wrap


# ----------------------------------------------------------------------------------------- builders
def riff_wav(fmt_tag=1, channels=1, rate=16000, bits=16, payload=b"", data_size=None, riff_size=None,
             fmt_size=16, block_align=None, byte_rate=None, extra_chunk=None, data_first=False) -> bytes:
    """A WAV whose every header field may lie."""
    align = block_align if block_align is not None else max(1, channels * bits // 8)
    brate = byte_rate if byte_rate is not None else rate * align
    fmt = struct.pack("<HHIIHH", fmt_tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF, brate & 0xFFFFFFFF,
                      align & 0xFFFF, bits & 0xFFFF)
    fmt = (fmt + b"\0" * max(0, fmt_size - 16))[:fmt_size] if fmt_size < 0x10000 else fmt
    fmt_chunk = b"fmt " + struct.pack("<I", fmt_size & 0xFFFFFFFF) + fmt
    data_chunk = b"data" + struct.pack("<I", (len(payload) if data_size is None else data_size) & 0xFFFFFFFF) + payload
    chunks = [fmt_chunk, data_chunk] if not data_first else [data_chunk, fmt_chunk]
    if extra_chunk is not None:
        chunks.insert(1, extra_chunk)
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", (len(body) if riff_size is None else riff_size) & 0xFFFFFFFF) + body


def encode(x: np.ndarray, rate=16000, fmt="WAV", subtype=None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds=0.5, rate=16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def _seeds() -> dict[str, bytes]:
    seeds = {"wav16": encode(tone()), "wav_float": encode(tone(), subtype="FLOAT"),
             "wav24_8k": encode(tone(0.5, 8000), 8000, subtype="PCM_24"), "wav_ulaw": encode(tone(), subtype="ULAW"),
             "flac": encode(tone(), fmt="FLAC"), "stereo": encode(np.stack([tone(), tone()], 1), 22050)}
    for fmt in ("OGG", "MP3"):
        try:
            seeds[fmt.lower()] = encode(tone(0.5, 22050), 22050, fmt=fmt)
        except Exception:  # pragma: no cover - depends on the libsndfile build
            pass
    return seeds


SEEDS = _seeds()
MAGICS = [b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"FORM", b".snd", b"RIFF\xff\xff\xff\xffWAVE",
          b"\x89PNG", b"PK\x03\x04", b"%PDF", b""]


def check_outcome(source, max_seconds: float = 60.0) -> str:
    """Run load_audio under the time and memory bounds; return the outcome's name."""
    tracemalloc.start()
    t0 = time.process_time()
    try:
        clip = load_audio(source, max_seconds=max_seconds)
        outcome = "ok"
    except AudioError as exc:
        clip, outcome = None, type(exc).__name__
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message, repr(message)
    finally:
        elapsed = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < SECONDS_PER_INPUT, f"took {elapsed:.2f} s"
    assert peak < PEAK_BYTES, f"peak {peak >> 20} MB"
    if clip is not None:
        assert isinstance(clip, AudioClip) and clip.sample_rate == 16000
        assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1 and clip.samples.size > 0
        assert np.all(np.isfinite(clip.samples))
        assert clip.duration <= max_seconds + 0.01
    return outcome


# ----------------------------------------------------------------------------------------- strategies
u32 = st.integers(0, 0xFFFFFFFF)


LIES = {     # header field -> values that lie about the payload or are simply invalid
    "fmt_tag": st.sampled_from([0xFFFE, 6, 7, 2, 0x11, 0x31, 0x55, 0]) | st.integers(0, 0xFFFF),
    "channels": st.sampled_from([0, 3, 8, 255, 1024, 65535]) | st.integers(0, 0xFFFF),
    "rate": st.sampled_from([0, 1, 2, 100, 192000, 2**31 - 1, 2**32 - 1]) | u32,
    "bits": st.sampled_from([0, 1, 4, 7, 12, 20, 33, 64, 0xFFFF]),
    "data_size": st.sampled_from([0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF, 16000 * 2 * 600]) | u32,
    "riff_size": st.sampled_from([0, 4, 0xFFFFFFFF]) | u32,
    "fmt_size": st.sampled_from([0, 2, 14, 18, 20, 40, 0xFFFF]),
    "block_align": st.sampled_from([0, 1, 3, 0xFFFF]),
    "byte_rate": st.sampled_from([0, 0xFFFFFFFF]),
    "extra_chunk": st.sampled_from([b"LIST\xff\xff\xff\xff", b"junk\x04\x00\x00\x00abcd",
                                    b"fact\x04\x00\x00\x00\xff\xff\xff\xff"]),
    "data_first": st.just(True),
}


@st.composite
def crafted_wavs(draw) -> bytes:
    """A plausible WAV (PCM or float, honest header) with zero to three header fields turned into lies,
    and maybe cut short: exercises both the decoders' error paths and the checks after decoding."""
    fmt_tag, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]))
    channels = draw(st.sampled_from([1, 2]))
    fields = dict(fmt_tag=fmt_tag, bits=bits, channels=channels, rate=draw(st.sampled_from([8000, 16000, 44100, 22050])))
    frames = draw(st.integers(0, 1500))
    width = bits // 8 * channels
    if fmt_tag == 3:      # float samples, sometimes NaN / Inf / enormous
        values = draw(st.lists(st.sampled_from([0.0, 0.25, -0.5, 1.0, np.nan, np.inf, -np.inf, 3e38]),
                               min_size=1, max_size=8))
        reps = -(-frames * channels // len(values))
        payload = np.array((values * reps)[:frames * channels], np.float32 if bits == 32 else np.float64).tobytes()
    else:
        payload = draw(st.binary(min_size=frames * width, max_size=frames * width) | st.just(b"\0" * (frames * width)))
    for name in draw(st.lists(st.sampled_from(sorted(LIES)), max_size=3, unique=True)):
        fields[name] = draw(LIES[name])
    data = riff_wav(payload=payload, **fields)
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "field", "append", "zero_tail"]))
        if not data:
            break
        if kind == "truncate":
            data = data[:draw(st.integers(0, len(data)))]
        elif kind == "flip":
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "field" and len(data) >= 8:       # overwrite a 32-bit header field with a lie
            off = draw(st.integers(0, min(96, len(data) - 4)))
            data[off:off + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]) | u32))
        elif kind == "append":
            data += draw(st.binary(max_size=512))
        elif kind == "zero_tail":
            start = draw(st.integers(0, len(data)))
            data[start:] = b"\0" * (len(data) - start)
    return bytes(data)


random_blobs = st.tuples(st.sampled_from(MAGICS), st.binary(max_size=2048)).map(lambda t: t[0] + t[1])


# ----------------------------------------------------------------------------------------- load_audio
@pytest.mark.slow
@counted("crafted_wav", 100)
@fuzz(300)
@given(crafted_wavs())
def test_crafted_wav_headers(data):
    COUNTS["crafted_wav"] = COUNTS.get("crafted_wav", 0) + 1
    check_outcome(data)


@counted("mutated", 60)
@fuzz(200)
@given(mutated_files())
def test_mutated_real_files(data):
    COUNTS["mutated"] = COUNTS.get("mutated", 0) + 1
    check_outcome(data)


@counted("random", 40)
@fuzz(150)
@given(random_blobs)
def test_random_bytes(data):
    COUNTS["random"] = COUNTS.get("random", 0) + 1
    outcome = check_outcome(data)
    if not data:
        assert outcome == "EmptyAudioError"


@fuzz(40)
@given(st.one_of(crafted_wavs(), mutated_files(), random_blobs))
def test_paths_behave_like_bytes(tmp_path, data):
    """The same input through a file path gives the same kind of outcome as through bytes."""
    COUNTS["paths"] = COUNTS.get("paths", 0) + 1
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    from_path = check_outcome(path)
    if data:
        assert from_path == check_outcome(data)
    else:
        assert from_path == "EmptyAudioError"


def test_ten_minutes_is_refused_quickly_without_decoding(tmp_path):
    """A real 10-minute file (19 MB) is refused from its header: fast, and without allocating its samples."""
    path = tmp_path / "ten_minutes.wav"
    sf.write(path, np.zeros(16000 * 600, np.int16), 16000, subtype="PCM_16")
    for source in (path, str(path)):
        tracemalloc.start()
        t0 = time.process_time()
        with pytest.raises(AudioTooLongError, match="600.0 s"):
            load_audio(source)
        elapsed = time.process_time() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 0.5 and peak < 4 << 20, (elapsed, peak)
    flac = tmp_path / "ten_minutes.flac"
    sf.write(flac, np.zeros(16000 * 600, np.int16), 16000, format="FLAC")
    assert check_outcome(flac) == "AudioTooLongError"
    # a streaming-style header ("size unknown": 0xFFFFFFFF) in front of 10 minutes of samples
    streaming = riff_wav(payload=b"\0" * (16000 * 2 * 600), data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF)
    assert check_outcome(streaming) == "AudioTooLongError"
    # and a header that claims 10 minutes in front of 100 bytes: just a short clip (or an error)
    assert check_outcome(riff_wav(payload=b"\0" * 100, data_size=16000 * 2 * 600)) in ("ok", "CorruptAudioError")


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_sample(n):
    data = encode(np.full(n, 0.1, np.float32))
    if n == 0:
        assert check_outcome(data) == "EmptyAudioError"
    else:
        assert check_outcome(data) == "ok"
        assert load_audio(data).samples.size == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_non_finite_float_wavs(bad, subtype):
    x = tone()
    x[100] = bad
    with pytest.raises(InvalidSamplesError, match="NaN or infinite"):
        load_audio(encode(x, subtype=subtype))


@pytest.mark.parametrize("field", ["riff_size", "data_size"])
def test_huge_declared_sizes(field):
    data = riff_wav(payload=b"\x10\x00" * 8000, **{field: 0xFFFFFFFF})
    assert check_outcome(data) == "ok"
    assert abs(load_audio(data).duration - 0.5) < 0.01


# ----------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", DynamicCTCModel(tiny_config(n_layers=2)).eval(),
                           recipe="ld")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def check_cli(ckpt: Path, paths: list[Path], rc: int, out: str, err: str, elapsed: float) -> tuple[int, int]:
    assert "Traceback" not in err and "Traceback" not in out
    ok_lines, err_lines = out.splitlines(), err.splitlines()
    assert len(ok_lines) + len(err_lines) == len(paths), (out, err)
    shown = [cli.one_line(p) for p in paths]
    for line in err_lines:
        assert any(line.startswith(f"{p}: error: ") for p in shown), line
    for line in ok_lines:
        assert "\t" in line and any(line.startswith(f"{p}\t") for p in shown), line
    assert rc == (1 if err_lines else 0)
    assert elapsed < SECONDS_PER_INPUT * len(paths) + 2.0
    return len(ok_lines), len(err_lines)


@pytest.mark.slow
@counted("cli_files", 80)
@fuzz(80)
@given(st.lists(st.one_of(crafted_wavs(), mutated_files(), random_blobs), min_size=1, max_size=3))
def test_cli_transcribe_fuzz(tiny_ckpt, tmp_path_factory, blobs):
    COUNTS["cli_files"] = COUNTS.get("cli_files", 0) + len(blobs)
    folder = tmp_path_factory.mktemp("cli")
    paths = []
    for i, blob in enumerate(blobs):
        paths.append(folder / f"in{i}.wav")
        paths[-1].write_bytes(blob)
    t0 = time.process_time()
    rc, out, err = run_cli(["transcribe", "--checkpoint", str(tiny_ckpt), *map(str, paths)])
    check_cli(tiny_ckpt, paths, rc, out, err, time.process_time() - t0)


def _hand_picked(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(good files, bad files, files that may go either way) covering every failure class, in folder."""
    good = {"good.wav": encode(tone()), "good.flac": encode(tone(), fmt="FLAC")}
    bad = {
        "empty.wav": b"", "one_sample.wav": encode(np.array([0.1], np.float32)),
        "nan.wav": encode(np.array([np.nan] * 800, np.float32), subtype="FLOAT"),
        "zero_channels.wav": riff_wav(channels=0, payload=b"\0" * 100),
        "zero_rate.wav": riff_wav(rate=0, payload=b"\0" * 100),
        "odd_bits.wav": riff_wav(bits=0, payload=b"\0" * 100),
        "header_only.wav": riff_wav(payload=b""), "text.wav": b"hello, I am not audio\n",
        "png.wav": b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "truncated.flac": encode(tone(), fmt="FLAC")[:60],
        "ten_minutes.wav": riff_wav(payload=b"\0" * (16000 * 2 * 600)),
        "name\nwith newline.wav": b"RIFF junk",
    }
    either = {}
    if "mp3" in SEEDS:
        mp3 = bytearray(SEEDS["mp3"])
        for i in range(200, len(mp3), 97):           # corrupt frames: libmpg123 complains on fd 2
            mp3[i] ^= 0x5A
        either["corrupt.mp3"] = bytes(mp3)
    for name, blob in {**good, **bad, **either}.items():
        (folder / name).write_bytes(blob)
    (folder / "a_folder.wav").mkdir()
    return ([folder / n for n in good], [folder / n for n in bad] + [folder / "a_folder.wav", folder / "missing.wav"],
            [folder / n for n in either])


def test_cli_one_line_per_bad_file_in_process(tiny_ckpt, tmp_path, capfd):
    good, bad, either = _hand_picked(tmp_path)
    rc, out, err = run_cli(["transcribe", "--checkpoint", str(tiny_ckpt), *map(str, good + bad + either)])
    native = capfd.readouterr()
    assert native.err == "", f"native libraries wrote to fd 2: {native.err[:300]!r}"
    assert rc == 1 and "Traceback" not in err
    lines = err.splitlines()
    assert len(bad) <= len(lines) <= len(bad) + len(either), err
    check_cli(tiny_ckpt, good + bad + either, rc, out, err, 0.0)
    assert any("too short" in l for l in lines) and any("NaN" in l for l in lines)
    assert any("limit is 60 s" in l for l in lines)
    assert any("name\\nwith newline.wav: error:" in l for l in lines)
    rc, out, err = run_cli(["transcribe", "--checkpoint", str(tiny_ckpt), *map(str, good)])
    assert rc == 0 and err == "" and len(out.splitlines()) == len(good)


@pytest.mark.slow
def test_cli_one_line_per_bad_file_subprocess(tiny_ckpt, tmp_path):
    """What a user really sees (file descriptor 2 included, so native decoder chatter would show)."""
    good, bad, either = _hand_picked(tmp_path)
    peak_file = tmp_path / "peak_kb"
    # the CLI itself, reporting its own peak memory: VmHWM, the high-water mark of this program's address space.
    # Not getrusage's ru_maxrss, which execve keeps from the fork: the pytest worker's resident size at the fork
    # (1.6 and 2.1 GB in fresh-clone runs, after other test files had loaded models in that worker).
    measured = ("import re, runpy, sys\n"
                "try:\n    runpy.run_module('dld_core', run_name='__main__', alter_sys=True)\n"
                "finally:\n    open(" + repr(str(peak_file)) + ", 'w')"
                ".write(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1))\n")
    proc = subprocess.run([sys.executable, "-c", measured, "transcribe", "--checkpoint", str(tiny_ckpt),
                           *map(str, good + bad + either)], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(bad) <= len(proc.stderr.splitlines()) <= len(bad) + len(either), proc.stderr
    check_cli(tiny_ckpt, good + bad + either, proc.returncode, proc.stdout, proc.stderr, 0.0)
    # the whole CLI process (torch included): 0.68-0.81 GB
    assert int(peak_file.read_text()) < 1_500_000


def test_cli_unreadable_checkpoint_is_one_line(tmp_path):
    (tmp_path / "clip.wav").write_bytes(encode(tone()))
    rc, out, err = run_cli(["transcribe", "--checkpoint", str(tmp_path / "nope"), str(tmp_path / "clip.wav")])
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: ")
