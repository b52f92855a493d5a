"""Synthetic corpus: determinism, split hygiene, engines, augmentation, FSDD, text; the real-speech dev set."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dld_core.audio import load_audio, load_manifest
from dld_core.synth import augment, build_corpus, engines, fsdd, real_dev
from dld_core.synth import text as textsrc
from dld_core.synth.corpus import TEXT_WEIGHTS, make_plan
from dld_core.text import normalize_text

REPO = Path(__file__).resolve().parents[1]
REAL_FSDD = Path(__file__).resolve().parents[2] / "shared/data/fsdd"
ANY_ENGINE = any(engines.engine_available(e) for e in ("espeak", "flite", "festival"))
needs_tts = pytest.mark.skipif(not ANY_ENGINE, reason="no TTS engine installed")


def _fake_fsdd(root: Path) -> Path:
    rec = root / "recordings"
    rec.mkdir(parents=True)
    t = np.arange(3000) / 8000
    for spk_i, spk in enumerate(["amy", "bob", "cat", "dan"]):
        for d in range(3):
            x = 0.2 * np.sin(2 * np.pi * (200 + 50 * d + 10 * spk_i) * t)
            sf.write(rec / f"{d}_{spk}_0.wav", x.astype(np.float32), 8000)
    return root


def _hashes(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix in (".wav", ".jsonl"):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    fake = _fake_fsdd(root / "fsdd_src")
    a = build_corpus(str(root / "a"), hours=0.01, seed=3, fsdd_dir=str(fake), progress=False)
    b = build_corpus(str(root / "b"), hours=0.01, seed=3, fsdd_dir=str(fake), progress=False)
    return root, a, b, fake


# python -c BUILDS OUT N HOURS: N corpus builds in a process with the handler of app/jobs.py's runner (SIGTERM
# raises dld_core.train.Interrupted, torch loaded), which the pool workers used to inherit
BUILDS = textwrap.dedent("""
    import faulthandler, signal, sys, time
    from dld_core.train import Interrupted
    from dld_core.synth import build_corpus

    faulthandler.register(signal.SIGUSR1, all_threads=True)    # a stalled run's stacks, for the failure message

    def on_sigterm(signum, frame):
        raise Interrupted()
    signal.signal(signal.SIGTERM, on_sigterm)
    out, n, hours = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        for i in range(n):
            t0 = time.time()
            build_corpus(f"{out}/c{i}", hours=hours, seed=i)
            print("built", i, flush=True)
            print(f"build {i}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    except Interrupted:
        print("stopped", flush=True)
        sys.exit(130)
""")


def start_builds(out: Path, n: int, hours: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILDS, str(out), str(n), str(hours)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def process_group(pgid: int) -> str:
    """One line per process of group `pgid`, from /proc: pid, state, kernel wait channel, CPU seconds, command."""
    lines = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:                       # fields after "(comm)": state ppid pgrp ...
                continue
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            wchan = (stat.parent / "wchan").read_text()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:100]
            lines.append(f"{stat.parent.name} {fields[0]} {wchan or '-'} {cpu:.1f}s {cmd}")
        except (OSError, IndexError, ValueError):
            continue                                         # the process ended meanwhile
    return "\n".join(sorted(lines))


def finish_builds(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The builds' (stdout, stderr); past `timeout`, a failure that says where they stood: the Python stacks of
    the builder (SIGUSR1: faulthandler) and every process of its group with its kernel wait channel and CPU
    time (a stall shows as sleeping processes whose CPU time no longer grows), then the group is killed."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        listing = []
        for _ in range(2):
            listing.append(process_group(proc.pid))
            time.sleep(5)
        locks = Path("/proc/locks").read_text() if Path("/proc/locks").exists() else ""
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the builds did not finish in {timeout:.0f} s; stdout: {out.split()!r}\nprocesses, 5 s apart:\n"
                    + "\n".join(listing) + f"\n/proc/locks:\n{locks}\nstderr (last 6000):\n{err[-6000:]}")


def test_pool_workers_are_not_forked_from_the_caller():
    """A worker forked from a caller with threads (the test runner after 400 tests, a Streamlit server) can
    inherit a lock that no thread will ever release: CI's suite hung for an hour building the fixture corpus.
    The workers come from a fork server instead."""
    from dld_core.synth.corpus import WORKERS, _worker_pool
    with _worker_pool() as p:
        parents = {p.apply(os.getppid) for _ in range(2 * WORKERS)}
    assert os.getpid() not in parents and len(parents) == 1


@pytest.mark.slow
@needs_tts
def test_twenty_builds_under_a_jobs_stop_handler_finish_quietly(tmp_path):
    """Issue 22: the pool workers inherited the job's SIGTERM handler. Closing a pool SIGTERMs its workers: each
    printed "Process ForkPoolWorker-2: Traceback ... Interrupted", and one that caught it inside a task lived
    on, so the build hung (0 files, 0% CPU) joining it."""
    proc = start_builds(tmp_path, 20, 0.001)
    out, err = finish_builds(proc, 480)
    assert proc.returncode == 0, err[-3000:]
    assert out.split() == [w for i in range(20) for w in ("built", str(i))]
    assert "Traceback" not in err and "Error" not in err, err[-3000:]


@pytest.mark.slow
@needs_tts
def test_a_stop_inside_a_destructor_leaves_no_traceback_in_a_worker():
    """A worker's stop handler raises SystemExit; when a second Stop lands in a destructor (a sound file's flush on
    close, while the worker unwinds from the first) Python could only print it with a traceback: the worker's
    unraisable hook keeps that quiet, and still prints any other exception raised in a destructor."""
    code = """if True:
        import os, signal, sys, time
        from dld_core.synth import corpus
        corpus._worker_signals()
        class Closing:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)     # the Stop arrives while the destructor runs
                time.sleep(0.5)
        Closing()
        print("still here", flush=True)
        class Broken:
            def __del__(self):
                raise ValueError("a real bug")
        Broken()
    """
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["still", "here"], proc.stderr
    assert "SystemExit" not in proc.stderr and proc.stderr.count("Traceback") == 1 and "a real bug" in proc.stderr


def test_a_stop_during_a_build_ends_it_quietly(tmp_path):
    """The job's Stop (SIGTERM to its process group) mid-build: the builder stops at once, its workers end
    without a traceback and leave no process behind."""
    proc = start_builds(tmp_path, 1, 0.05)
    try:
        deadline = time.time() + 300
        while not list((tmp_path / "c0.building" / "audio" / "train").glob("*.wav")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130 and out.split() == ["stopped"], err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    deadline = time.time() + 10
    while True:                                                # the workers are gone with their parent
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "a worker outlived the stopped build"
        time.sleep(0.1)


@pytest.mark.slow
@needs_tts
def test_same_seed_same_bytes(tiny):
    root, a, b, _ = tiny
    ha, hb = _hashes(root / "a"), _hashes(root / "b")
    assert len(ha) > 10 and ha == hb
    assert a["key"] == b["key"] and a["splits"] == b["splits"]


@needs_tts
def test_corpus_layout_and_recipe(tiny):
    root, info, _, _ = tiny
    out = root / "a"
    for name in ("train", "valid", "test", "fsdd_train", "fsdd_valid", "fsdd_test"):
        assert (out / f"{name}.jsonl").exists()
    meta = json.loads((out / "corpus.json").read_text())
    assert meta == info and meta["complete"] and meta["seed"] == 3
    for key in ("engines", "voices", "splits", "text", "augmentation", "hours", "version", "key"):
        assert key in meta
    assert "CC BY-SA 4.0" in meta["text"]["sources"]["wordfreq"]["licence"]
    assert "public domain" in meta["text"]["sources"]["kjv"]["licence"]
    for src in ("wordnet_examples", "wordnet_glosses"):
        assert "WordNet 3.0" in meta["text"]["sources"][src]["licence"] and meta["text"]["sources"][src]["notice"]
    for line in (out / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert not Path(row["audio_filepath"]).is_absolute()
    rows = load_manifest(out / "train.jsonl")
    assert any(r["source"] == "fsdd" for r in rows) and any(r["source"] != "fsdd" for r in rows)
    for name in ("train", "valid", "test", "fsdd_train", "fsdd_valid", "fsdd_test"):
        assert all(Path(r["audio_filepath"]).is_file() for r in load_manifest(out / f"{name}.jsonl")), name
    for r in rows[:5]:
        clip = load_audio(r["audio_filepath"])
        assert clip.duration == pytest.approx(r["duration"], abs=0.01) and not clip.silent
        assert r["text"] == normalize_text(r["text"])
    assert not (root / "a.building").exists()


@needs_tts
def test_cache_reuse(tiny):
    root, info, _, fake = tiny
    wav = next((root / "a" / "audio").rglob("*.wav"))
    mtime = wav.stat().st_mtime_ns
    again = build_corpus(str(root / "a"), hours=0.01, seed=3, fsdd_dir=str(fake), progress=False)
    assert again == info and wav.stat().st_mtime_ns == mtime


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_corpus(str(tmp_path), hours=0.01, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@needs_tts
def test_fsdd_in_corpus_speaker_disjoint(tiny):
    root, info, _, fake = tiny
    spk = {s: {r["speaker"] for r in load_manifest(root / "a" / f"fsdd_{s}.jsonl")} for s in ("train", "valid", "test")}
    assert all(spk.values())
    assert not (spk["train"] & spk["valid"]) and not (spk["train"] & spk["test"]) and not (spk["valid"] & spk["test"])
    r = load_manifest(root / "a" / "fsdd_test.jsonl")[0]
    assert sf.info(r["audio_filepath"]).samplerate == 16000 and r["text"] in fsdd.DIGITS


@pytest.mark.skipif(not (REAL_FSDD / "recordings").is_dir(), reason="shared FSDD copy not present")
def test_real_fsdd_split_by_speaker():
    split = fsdd.fsdd_speaker_split(REAL_FSDD, seed=0)
    all_spk = {s for _, _, s in fsdd.fsdd_files(REAL_FSDD)}
    assert set().union(*split.values()) == all_spk
    assert sum(len(v) for v in split.values()) == len(all_spk)
    assert split == fsdd.fsdd_speaker_split(REAL_FSDD, seed=0)


def test_plan_splits_disjoint_and_held_out_voices_test_only():
    plan = make_plan(hours=0.6, seed=1)
    texts = {s: {u["text"] for u in plan["utts"] if u["split"] == s} for s in ("train", "valid", "test")}
    assert not (texts["train"] & texts["test"]) and not (texts["valid"] & texts["test"])
    assert not (texts["train"] & texts["valid"])
    babble = {u["text"] for u in plan["babble"]}
    assert not (babble & texts["test"])
    for u in plan["utts"]:
        if u["voice"].held_out:
            assert u["split"] == "test"
    held = {u["voice"].engine for u in plan["utts"] if u["voice"].held_out}
    avail = {v.engine for v in engines.all_voices() if engines.engine_available(v.engine)}
    assert held == avail                                       # >= 1 held-out voice per engine
    counts = {}
    for u in plan["utts"]:
        counts[u["voice"].engine] = counts.get(u["voice"].engine, 0) + 1
    if avail == {"espeak", "flite", "festival"}:
        assert (counts["flite"] + counts["festival"]) / len(plan["utts"]) > 0.6
    assert make_plan(hours=0.6, seed=1)["utts"] == plan["utts"]


@pytest.mark.parametrize("voice", [v for v in engines.all_voices()
                                   if v.name in ("en-us+m3", "en-029+f2", "kal16", "slt", "awb",
                                                 "kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")],
                         ids=lambda v: v.speaker)
def test_engine_produces_speech(voice):
    if not engines.engine_available(voice.engine):
        pytest.skip(f"{voice.engine} not installed")
    sentence = "the quick brown fox jumps over the lazy dog near the river."
    n = len(sentence.split())
    out = engines.synthesize(voice, [(sentence, 1.0, 1.0), (sentence, 1.2, 0.9)])
    for x in out:
        assert x is not None and x.dtype == np.float32
        x = augment.trim_silence(x)
        assert augment.rms(x) > 0.01
        assert n * 0.2 <= x.size / 16000 <= n * 1.5
    assert out[1].size < out[0].size                         # faster speech is shorter


def test_augmentation_seeded_and_snr():
    rng = random.Random(0)
    x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    pool = [np.random.default_rng(i).standard_normal(8000).astype(np.float32) for i in range(4)]
    for kind in augment.NOISE_KINDS:
        aug = {"gain_dbfs": -20.0, "seed": 5, "noise": kind, "snr_db": 10.0}
        y1, y2 = augment.apply_augmentation(x, aug, pool), augment.apply_augmentation(x, aug, pool)
        assert np.array_equal(y1, y2) and y1.shape == x.shape
        assert 20 * np.log10(augment.rms(y1)) == pytest.approx(-20.0, abs=0.5)
        scale = augment.rms(y1) / augment.rms(x + 0)          # recover the noise part
        noise = y1 - x * (np.dot(y1, x) / np.dot(x, x))
        snr = 20 * np.log10(augment.rms(y1 - noise) / augment.rms(noise))
        assert snr == pytest.approx(10.0, abs=1.5), (kind, scale)
    rev = augment.apply_augmentation(x, {"gain_dbfs": -20.0, "seed": 1, "reverb_rt60": 0.5, "reverb_wet": 0.7})
    assert rev.shape == x.shape and np.all(np.isfinite(rev))
    tel = augment.apply_augmentation(x + 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32),
                                     {"gain_dbfs": -20.0, "seed": 1, "telephone": True})
    spec = np.abs(np.fft.rfft(tel)) ** 2
    freqs = np.fft.rfftfreq(tel.size, 1 / 16000)
    assert spec[freqs > 4200].sum() < 1e-3 * spec.sum()
    plans = [augment.plan_augmentation(rng, "train") for _ in range(400)]
    frac = sum(augment.describe(p) != "clean" for p in plans) / len(plans)
    assert 0.35 < frac < 0.65
    light = [augment.plan_augmentation(rng, "test") for _ in range(400)]
    assert sum(augment.describe(p) != "clean" for p in light) < frac * len(light)


def test_numbers_to_words():
    assert textsrc.number_to_words(0) == "zero"
    assert textsrc.number_to_words(23) == "twenty three"
    assert textsrc.number_to_words(1905) == "one thousand nine hundred five"
    assert textsrc.number_to_words(2_000_017) == "two million seventeen"
    assert textsrc.ordinal_to_words(21) == "twenty first" and textsrc.ordinal_to_words(40) == "fortieth"
    assert textsrc.year_to_words(1984) == "nineteen eighty four" and textsrc.year_to_words(2005) == "two thousand five"
    assert textsrc.expand_numbers("in 1984 we had 3 cats") == "in nineteen eighty four we had three cats"
    rng = random.Random(0)
    for _ in range(200):
        s = textsrc.number_sentence(rng)
        assert not any(c.isdigit() for c in s)
        assert normalize_text(s)


def test_text_sources():
    k = textsrc.kjv_sentences()
    assert len(k) > 20000
    for s in k[:2000]:
        assert textsrc.MIN_WORDS <= len(normalize_text(s).split()) <= textsrc.MAX_WORDS
    vocab = textsrc.wordfreq_vocab()
    assert len(vocab) > 20000 and "mr" not in vocab and "the" in vocab
    rng = random.Random(0)
    words = {w for _ in range(3000) for w in normalize_text(textsrc.wordfreq_sentence(rng)).split()}
    words |= {w for s in k for w in normalize_text(s).split()}
    assert len(words) >= 5000


def test_wordnet_text_sources():
    ex, gl = textsrc.wordnet_examples(), textsrc.wordnet_glosses()
    assert len(ex) > 20000 and len(gl) > 50000
    assert ex == textsrc.wordnet_examples() and textsrc.source_sentences("wordnet_glosses") == gl
    for s in ex[:3000] + gl[:3000]:
        key = normalize_text(s)
        assert textsrc.MIN_WORDS <= len(key.split()) <= textsrc.MAX_WORDS
        assert not set(s) - set("abcdefghijklmnopqrstuvwxyzI ,.;:!?'-"), s    # no digits, symbols, capitals
    assert not set(map(normalize_text, ex)) & set(map(normalize_text, gl))      # each sentence once
    words = {w for s in ex + gl for w in normalize_text(s).split()}
    assert len(words) > 30000
    assert "Princeton" in textsrc.WORDNET_LICENCE and "Princeton" in textsrc.WORDNET_NOTICE


def test_text_lists_are_cached_on_disk_and_rebuilt_when_their_inputs_change(tmp_path, monkeypatch):
    """Cleaning KJV and WordNet costs seconds in every process that builds a corpus: the lists are kept as JSON,
    keyed by the input files (size, time) and the cleaning code; a changed input or a broken cache file rebuilds."""
    monkeypatch.setenv(textsrc.TEXT_CACHE_ENV, str(tmp_path / "cache"))
    source, calls = tmp_path / "source.txt", []
    source.write_text("one two three")

    def sentences(n):
        calls.append(n)
        return {"words": tuple(source.read_text().split()[:n])}
    cached = textsrc._disk_cached(lambda: [source, "version-1"])(sentences)

    assert cached(2) == {"words": ("one", "two")} and calls == [2]
    assert cached(2) == {"words": ("one", "two")} and calls == [2]            # from disk, not recomputed
    assert cached(3) == {"words": ("one", "two", "three")} and calls == [2, 3]  # the argument is part of the key
    source.write_text("four five six seven")                                   # a changed input: rebuilt
    assert cached(2) == {"words": ("four", "five")} and calls == [2, 3, 2]
    for f in (tmp_path / "cache").glob("sentences-*.json"):
        f.write_text("{broken")
    assert cached(2) == {"words": ("four", "five")} and calls == [2, 3, 2, 2]
    source.unlink()                                                            # a missing input: the function
    with pytest.raises(FileNotFoundError):                                     # runs (and says what is missing)
        cached(2)


def test_wordnet_cleaning_and_known_words():
    clean = textsrc._wordnet_clean
    assert clean("he paid 3 dollars (in cash) for it") == "he paid three dollars for it."
    assert clean("the U.S. army") is None and clean("NATO troops arrived") is None
    assert clean('he said "no" twice') is None and clean("too short") is None
    lemmas = textsrc.wordnet_lemmas()
    assert {"dog", "run", "happy"} <= lemmas
    for w in ("viceroys", "dogs", "running", "happily", "cities", "stopped", "bigger", "field's"):
        assert textsrc.known_word(w, lemmas), w
    assert not textsrc.known_word("opressed", lemmas) and not textsrc.known_word("vhdl", lemmas)


def test_wordfreq_vocab_wide_and_filtered():
    vocab = textsrc.wordfreq_vocab()
    assert len(vocab) > 60000
    assert len(set(vocab) - set(textsrc.wordfreq_vocab(40000))) > 30000        # reaches far past the top 40k
    assert "vhdl" not in vocab and "opressed" not in vocab and "viceroys" in vocab
    rng = random.Random(1)
    ranks = {w: i for i, w in enumerate(vocab)}
    drawn = [ranks[w] for _ in range(2000) for w in normalize_text(textsrc.wordfreq_sentence(rng)).split()
             if w in ranks and w not in textsrc._FUNCTION]
    assert sum(r > 40000 for r in drawn) / len(drawn) > 0.1                    # the long tail is really used


def test_plan_uses_all_text_sources():
    plan = make_plan(hours=0.6, seed=2)
    used = {u["source"] for u in plan["utts"]}
    assert used == set(textsrc.LIST_SOURCES) | {"wordfreq", "numbers"}
    assert used == set(TEXT_WEIGHTS)
    keys = [u["text"] for u in plan["utts"]] + [u["text"] for u in plan["babble"]]
    assert len(keys) == len(set(keys))


# --------------------------------------------------------------------------------------------
# real-speech dev set (pocketsphinx-testdata)
def test_real_dev_parsers():
    got = real_dev.parse_transcription("<s> ten of clubs  </s> (001)\n<s> five five </s> (004)\n\nnoise\n")
    assert got == {"001": "ten of clubs", "004": "five five"}
    gram = "#JSGF V1.0;\ngrammar g;\npublic <move> = go forward ten meters;\npublic <m2> = go <d> [a | b];"
    assert real_dev.jsgf_rule(gram, "move") == "go forward ten meters"
    with pytest.raises(ValueError):
        real_dev.jsgf_rule(gram, "m2")
    assert real_dev.transcript("Call 911, Mister Dashwood!") == "call nine hundred eleven mister dashwood"


def _fake_testdata(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    (data / "librivox").mkdir(parents=True)
    (data / "cards").mkdir()
    t = np.arange(8000) / 8000
    sf.write(data / "librivox" / "a-01.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)
    (data / "librivox" / "transcription").write_text("<s> he was 2 years old </s> (a-01)\n<s> missing </s> (zz)\n")
    sf.write(data / "cards" / "001.wav", np.zeros((16000, 2), np.float32) + 0.1, 16000)
    (data / "cards" / "cards.transcription").write_text("<s> ten of clubs </s> (001)\n")
    (0.2 * 32767 * np.sin(2 * np.pi * 300 * np.arange(24000) / 16000)).astype("<i2").tofile(data / "goforward.raw")
    (data / "goforward.gram").write_text("public <move> = go forward ten meters;\n")
    cp = root / "copyright"
    cp.write_text("Format: x\n\nFiles: *\nCopyright: 1995 Somebody\n  2014 Else\nLicense: BSD-2\n text\n\n"
                  "Files: debian/*\nLicense: GPL-2+\n")
    return data, cp


def test_build_real_dev_from_fake_package(tmp_path):
    data, cp = _fake_testdata(tmp_path)
    man = real_dev.build_real_dev(tmp_path / "out", data_dir=data, copyright_file=cp)
    assert man == tmp_path / "out" / real_dev.MANIFEST_NAME
    rows = load_manifest(man)
    assert [r["text"] for r in rows] == ["he was two years old", "ten of clubs", "go forward ten meters"]
    for r in rows:
        info = sf.info(r["audio_filepath"])
        assert info.samplerate == 16000 and info.channels == 1
        assert info.duration == pytest.approx(r["duration"], abs=1e-3)
    assert [r["duration"] for r in rows] == pytest.approx([1.0, 1.0, 1.5], abs=1e-3)
    lic = json.loads((tmp_path / "out" / real_dev.LICENCE_NAME).read_text())
    assert lic["licence"] == "BSD-2" and lic["copyright"] == "1995 Somebody 2014 Else" and lic["utterances"] == 3
    before = _hashes(tmp_path / "out")
    real_dev.build_real_dev(tmp_path / "out", data_dir=data, copyright_file=cp)
    assert _hashes(tmp_path / "out") == before
    with pytest.raises(real_dev.RealDevUnavailable):
        real_dev.build_real_dev(tmp_path / "x", data_dir=tmp_path / "nowhere", copyright_file=cp)


@pytest.mark.skipif(not real_dev.available(), reason="Debian package pocketsphinx-testdata is not installed "
                                                     "(scripts/setup.sh installs it)")
def test_build_real_dev_from_pocketsphinx_testdata(tmp_path):
    man = real_dev.build_real_dev(tmp_path)
    rows = load_manifest(man)
    assert len(rows) == 11
    assert {r["set"] for r in rows} == {"librivox", "cards", "goforward"}
    assert 30 < sum(r["duration"] for r in rows) < 45
    texts = {Path(r["audio_filepath"]).stem: r["text"] for r in rows}
    assert texts["goforward"] == "go forward ten meters" and texts["cards_002"] == "four queen of clubs"
    assert texts["librivox_sense_and_sensibility_01_austen_64kb-0880"] == "he was not an ill disposed young man"
    for r in rows:
        assert r["text"] == normalize_text(r["text"]) and not any(c.isdigit() for c in r["text"])
        clip = load_audio(r["audio_filepath"])
        assert clip.duration == pytest.approx(r["duration"], abs=0.01) and not clip.silent
    lic = json.loads((tmp_path / real_dev.LICENCE_NAME).read_text())
    assert lic["licence"] == "BSD-2" and "Carnegie Mellon" in lic["copyright"]


def test_a_bigger_corpus_never_draws_the_sentences_of_excluded_sets(tmp_path):
    """`synth --exclude`: a training corpus built after the evaluation sets holds none of their sentences."""
    from dld_core.audio import write_manifest
    from dld_core.synth.corpus import excluded_texts
    small = make_plan(hours=0.3, seed=1)
    held = [{"audio_filepath": "x.wav", "text": u["text"], "duration": 1.0}
            for u in small["utts"] if u["split"] in ("valid", "test")]
    write_manifest(tmp_path / "held.jsonl", held)
    exclude = excluded_texts([tmp_path / "held.jsonl"])
    assert exclude == {r["text"] for r in held}
    big = make_plan(hours=1.0, seed=1, exclude=exclude)
    drawn = {u["text"] for u in big["utts"]} | {u["text"] for u in big["babble"]}
    assert not drawn & exclude
    assert {u["text"] for u in make_plan(hours=1.0, seed=1)["utts"]} & exclude      # without it: drawn
    assert make_plan(hours=1.0, seed=1, exclude=exclude)["utts"] == big["utts"]      # still seeded
