"""load_audio on good and bad input; manifests round trip."""
from __future__ import annotations

import io
import json
import struct
import time

import numpy as np
import pytest
import soundfile as sf

from dld_core.audio import (AudioClip, AudioError, AudioTooLongError, CorruptAudioError, EmptyAudioError,
                            InvalidSamplesError, UnsupportedFormatError, load_audio, load_manifest,
                            write_manifest)

SR = 16000


def tone(seconds=1.0, sr=SR, freq=440.0, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(x, sr=SR, fmt="WAV", subtype=None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def check_clip(clip: AudioClip, seconds: float):
    assert isinstance(clip, AudioClip)
    assert clip.sample_rate == SR
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.duration == pytest.approx(seconds, abs=0.06)
    assert clip.samples.size == pytest.approx(seconds * SR, abs=0.06 * SR)
    assert np.all(np.isfinite(clip.samples))


def test_wav_path_and_bytes(tmp_path):
    data = encode(tone(1.0))
    p = tmp_path / "a.wav"
    p.write_bytes(data)
    for src in (p, str(p), data):
        clip = load_audio(src)
        check_clip(clip, 1.0)
        assert not clip.silent


def test_stereo_44k_to_mono_16k(tmp_path):
    x = np.stack([tone(1.5, 44100), tone(1.5, 44100, 880.0)], axis=1)
    p = tmp_path / "s.wav"
    sf.write(p, x, 44100)
    clip = load_audio(p)
    check_clip(clip, 1.5)
    assert 0.1 < float(np.abs(clip.samples).max()) < 0.7


def test_8k_upsampled(tmp_path):
    p = tmp_path / "n.wav"
    sf.write(p, tone(0.8, 8000, 300.0), 8000)
    check_clip(load_audio(p), 0.8)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_compressed_formats(tmp_path, fmt):
    try:
        data = encode(tone(1.0, 22050), 22050, fmt)
    except Exception as e:  # pragma: no cover - depends on libsndfile build
        pytest.skip(f"libsndfile cannot write {fmt}: {e}")
    clip = load_audio(data)
    assert clip.duration == pytest.approx(1.0, abs=0.1)
    assert not clip.silent
    p = tmp_path / f"x.{fmt.lower()}"
    p.write_bytes(data)
    assert load_audio(p).duration == pytest.approx(1.0, abs=0.1)


def test_empty_file(tmp_path):
    p = tmp_path / "e.wav"
    p.write_bytes(b"")
    with pytest.raises(EmptyAudioError):
        load_audio(p)
    with pytest.raises(EmptyAudioError):
        load_audio(b"")


def test_zero_length_wav():
    with pytest.raises(EmptyAudioError):
        load_audio(encode(np.zeros(0, np.float32)))


@pytest.mark.parametrize("cut", [12, 20, 30])
def test_truncated_header(cut):
    with pytest.raises(CorruptAudioError):
        load_audio(encode(tone())[:cut])


def test_corrupt_bytes():
    rng = np.random.default_rng(0)
    with pytest.raises(CorruptAudioError):
        load_audio(b"RIFF" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError):
        load_audio(b"fLaC" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + b"\0" * 200, b"just some text, not audio\n",
                                  b"%PDF-1.4 ...", b"PK\x03\x04" + b"\0" * 100])
def test_unsupported_format(tmp_path, data):
    p = tmp_path / "x.wav"
    p.write_bytes(data)
    with pytest.raises(UnsupportedFormatError) as e:
        load_audio(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_float_wav(bad):
    x = tone(0.5)
    x[100] = bad
    with pytest.raises(InvalidSamplesError):
        load_audio(encode(x, subtype="FLOAT"))


def test_silent_is_flagged():
    clip = load_audio(encode(np.zeros(SR, np.float32)))
    assert clip.silent and clip.duration == pytest.approx(1.0)
    assert not load_audio(encode(tone())).silent


def test_too_long_refused_with_limit_in_message():
    with pytest.raises(AudioTooLongError, match="2 s"):
        load_audio(encode(tone(3.0)), max_seconds=2.0)


def test_huge_declared_size_is_cheap():
    # header claims ~4 GB of data / a 1 Hz sample rate: refused or clamped quickly, never decoded
    data = bytearray(encode(tone(1.0), subtype="PCM_16"))
    i = data.find(b"data")
    data[i + 4: i + 8] = struct.pack("<I", 0xFFFFFFF0)
    data[4:8] = struct.pack("<I", 0xFFFFFFF8)
    slow = bytearray(encode(tone(1.0), subtype="PCM_16"))
    slow[24:28] = struct.pack("<I", 1)
    t0 = time.process_time()                       # CPU time: a busy machine does not fail it
    for blob in (bytes(data), bytes(slow)):
        try:
            clip = load_audio(blob)
            assert clip.duration <= 60.0
        except AudioError:
            pass
    with pytest.raises(AudioTooLongError):
        load_audio(bytes(slow))
    assert time.process_time() - t0 < 2.0


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioError):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError):
        load_audio(tmp_path)


def test_errors_are_value_errors():
    for cls in (EmptyAudioError, CorruptAudioError, UnsupportedFormatError, InvalidSamplesError, AudioTooLongError):
        assert issubclass(cls, AudioError) and issubclass(cls, ValueError)


def test_manifest_round_trip(tmp_path):
    sub = tmp_path / "audio"
    sub.mkdir()
    wav = sub / "a.wav"
    sf.write(wav, tone(0.5), SR)
    rows = [{"audio_filepath": str(wav), "text": "hello world", "duration": 0.5, "speaker": "x"},
            {"audio_filepath": "audio/b.wav", "text": "b", "duration": 1}]
    man = tmp_path / "m.jsonl"
    write_manifest(man, rows)
    raw = [json.loads(line) for line in man.read_text().splitlines()]
    assert raw[0]["audio_filepath"] == "audio/a.wav" and raw[1]["audio_filepath"] == "audio/b.wav"
    assert not list(tmp_path.glob(".m.jsonl*"))           # no temp file left behind
    back = load_manifest(man)
    assert back[0]["audio_filepath"] == str(wav.resolve())
    assert back[1]["audio_filepath"] == str((tmp_path / "audio/b.wav").resolve())
    assert back[0]["text"] == "hello world" and back[0]["speaker"] == "x" and back[1]["duration"] == 1.0
    check_clip(load_audio(back[0]["audio_filepath"]), 0.5)


def test_manifest_bad_line(tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text('{"audio_filepath": "a.wav", "text": "x"}\nnot json\n')
    with pytest.raises(ValueError, match=":2:"):
        load_manifest(man)


# ------------------------------------------------------------------ reliability round 2 (issue 14)
def test_huge_finite_samples_are_refused_like_nan():
    from dld_core.audio import InvalidSamplesError, load_audio
    for scale, spike in ((1e30, None), (1.0, 3e38)):
        x = (np.sin(np.arange(16000) / 10) * 0.5 * scale).astype(np.float32)
        if spike:
            x[100] = spike
        buf = io.BytesIO()
        sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
        with pytest.raises(InvalidSamplesError, match="sample values reach"):
            load_audio(buf.getvalue())


def test_header_shorter_than_the_audio_is_said():
    from dld_core.audio import load_audio
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 60, dtype=np.float32) + 0.01, 16000, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    pos = data.index(b"data")
    data[pos + 4: pos + 8] = struct.pack("<I", 2 * 16000 * 2)          # the header now claims 2 s
    clip = load_audio(bytes(data))
    assert clip.duration == pytest.approx(2.0)
    assert "declares 2.0 s" in clip.warning and "58 s more" in clip.warning
    assert load_audio(buf.getvalue()).warning == ""                    # an honest header: no warning


def test_one_sample_at_a_high_rate_is_empty_not_a_zero_length_clip():
    """Found by the fuzzer: 1 sample at 44.1 kHz resamples to nothing."""
    from dld_core.audio import EmptyAudioError, load_audio
    data = (b"RIFF%\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00D\xac\x00\x00\x01\x00\x08\x00"
            b"data\x01\x00\x00\x00\x00")
    with pytest.raises(EmptyAudioError, match="too short"):
        load_audio(data)
