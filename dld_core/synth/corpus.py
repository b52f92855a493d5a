"""Build the seeded synthetic speech corpus (+ optional FSDD real speech).

Layout of ``out``::

    audio/{train,valid,test}/{id}.wav   16 kHz mono PCM-16
    fsdd/*.wav                          FSDD resampled to 16 kHz (when fsdd_dir is given)
    train.jsonl valid.jsonl test.jsonl  (+ fsdd_{train,valid,test}.jsonl)
    corpus.json                         exact recipe, stats, cache key; written last

The plan (text, voice, speed, pitch, augmentation) is drawn up front from ``random.Random(seed)``
and every utterance's audio depends only on its own plan entry, so the same seed gives the same
manifests and byte-identical audio regardless of worker scheduling.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from dld_core.audio import SAMPLE_RATE as SR
from dld_core.audio import rms, write_manifest
from dld_core.safe_io import exclusive_lock
from dld_core.synth import augment, engines, fsdd, text as textsrc
from dld_core.synth.engines import Voice
from dld_core.text import normalize_text

VERSION = 4
SPLIT_FRACTIONS = {"train": 0.90, "valid": 0.05, "test": 0.05}
ENGINE_WEIGHTS = {"flite": 0.36, "festival": 0.34, "espeak": 0.30}
VOICE_WEIGHTS = {  # within an engine (train/valid); unlisted voices weight 1
    "flite:kal16": 0.35, "flite:kal": 0.15, "flite:rms": 0.25, "flite:slt": 0.25,
    "festival:kal_diphone": 0.55, "festival:cmu_us_slt_arctic_hts": 0.45,
}
TEXT_WEIGHTS = {"wordnet_examples": 0.30, "wordnet_glosses": 0.18, "kjv": 0.22, "wordfreq": 0.18, "numbers": 0.12}
TEST_HELD_OUT_FRACTION = 0.5       # share of test utterances spoken by held-out (test-only) voices
SPEED_RANGE = (0.82, 1.22)         # tempo factor
PITCH_RANGE = (0.86, 1.16)         # pitch factor
SEC_PER_CHAR = 0.0565              # duration estimate used for planning only
PAD_S = 0.15
BABBLE_POOL = 24
CHUNK = {"festival": 24, "flite": 12, "espeak": 12}
WORKERS = 2


# --------------------------------------------------------------------------------------------
# planning
def _weighted(rng: random.Random, weights: dict):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _available_voices() -> list[Voice]:
    return [v for v in engines.all_voices() if engines.engine_available(v.engine)]


def _pick_voice(rng: random.Random, voices: list[Voice]) -> Voice:
    by_engine: dict[str, list[Voice]] = {}
    for v in voices:
        by_engine.setdefault(v.engine, []).append(v)
    eng = _weighted(rng, {e: w for e, w in ENGINE_WEIGHTS.items() if e in by_engine})
    cands = by_engine[eng]
    return rng.choices(cands, weights=[VOICE_WEIGHTS.get(v.speaker, 1.0) for v in cands])[0]


def make_plan(hours: float, seed: int, exclude: frozenset[str] = frozenset()) -> dict:
    """Deterministic plan: list of utterances per split + babble pool sentences. Sentences in `exclude`
    (normalised texts, e.g. another corpus's test set) are never drawn."""
    rng = random.Random(seed)
    voices = _available_voices()
    if not voices:
        raise RuntimeError("no TTS engine found: install espeak-ng, flite or festival")
    seen_voices = [v for v in voices if not v.held_out]
    held_voices = [v for v in voices if v.held_out]
    iters = {}
    for src in textsrc.LIST_SOURCES:                  # fixed order: each list shuffled by the seeded rng
        items = list(textsrc.source_sentences(src))
        rng.shuffle(items)
        iters[src] = iter(items)
    used: set[str] = set(exclude)

    def next_sentence() -> tuple[str, str, str]:
        for _ in range(1000):
            src = _weighted(rng, TEXT_WEIGHTS)
            spoken = textsrc.sentence_from(src, rng, iters)
            key = normalize_text(spoken)
            if key and key not in used and len(key.split()) >= 2:
                used.add(key)
                return src, spoken, key
        raise RuntimeError("could not draw a new sentence")

    babble = []
    for i in range(BABBLE_POOL if hours >= 0.1 else 6):    # tiny (test) corpora need only a small pool
        src, spoken, key = next_sentence()
        voice = _pick_voice(rng, [v for v in seen_voices if v.engine in ("flite", "espeak")] or seen_voices)
        babble.append({"index": i, "id": f"babble_{i:03d}", "split": "babble", "voice": voice, "spoken": spoken,
                       "text": key, "source": src, "speed": 1.0, "pitch": 1.0, "aug": None})

    total_s = hours * 3600.0
    utts = []
    prefix = {"train": "tr", "valid": "va", "test": "te"}
    for split in ("train", "valid", "test"):
        budget = total_s * SPLIT_FRACTIONS[split]
        est = 0.0
        n = 0
        while est < budget or n == 0:
            src, spoken, key = next_sentence()
            if split == "test" and held_voices and rng.random() < TEST_HELD_OUT_FRACTION:
                voice = _pick_voice(rng, held_voices)
            else:
                voice = _pick_voice(rng, seen_voices)
            speed = round(rng.uniform(*SPEED_RANGE), 3)
            pitch = round(rng.uniform(*PITCH_RANGE), 3)
            aug = augment.plan_augmentation(rng, split)
            utts.append({"index": len(utts), "id": f"{prefix[split]}_{n:06d}", "split": split, "voice": voice,
                         "spoken": spoken, "text": key, "source": src, "speed": speed, "pitch": pitch, "aug": aug})
            est += len(spoken) * SEC_PER_CHAR / speed + 2 * PAD_S
            n += 1
    return {"utts": utts, "babble": babble, "voices": voices}


def _tasks(utts: list[dict]) -> list[list[dict]]:
    """Group utterances by voice into chunks (festival batches many sentences per process)."""
    by_voice: dict[Voice, list[dict]] = {}
    for u in utts:
        by_voice.setdefault(u["voice"], []).append(u)
    tasks = []
    for voice, items in by_voice.items():
        size = CHUNK[voice.engine]
        tasks += [items[i: i + size] for i in range(0, len(items), size)]
    tasks.sort(key=lambda t: t[0]["index"])
    return tasks


# --------------------------------------------------------------------------------------------
# workers
_POOL: list[np.ndarray] = []
_OUT = ""
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _exit_quietly(signum, _frame):
    raise SystemExit(128 + signum)


def _quiet_unraisable(unraisable) -> None:
    """A stop signal that lands inside a destructor (a second Stop while a worker unwinds from the first, e.g. in
    a sound file's flush on close) raises its SystemExit where Python can only print it ("Exception ignored in
    ... Traceback") and go on: say nothing, the worker is on its way out (or leaves at the next signal, as
    before). Any other exception in a destructor is still printed."""
    if not issubclass(unraisable.exc_type, SystemExit):
        sys.__unraisablehook__(unraisable)


def _worker_signals() -> None:
    """A pool worker leaves stopping to its parent: SIGTERM (pool.terminate(), or a Stop sent to the job's
    process group) and Ctrl-C end it quietly, whatever handlers the parent had installed. An inherited handler
    that raises an Exception (a job's Stop) printed a traceback from every worker when its pool closed, and a
    worker that caught it inside a task survived terminate() and hung the build. SystemExit is not caught by a
    task and releases the pool's queue locks on its way out (SIG_DFL would not: a worker killed while holding
    one would hang the parent's terminate())."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit_quietly)
    sys.unraisablehook = _quiet_unraisable
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _init_worker(pool: list[np.ndarray], out: str) -> None:
    global _POOL, _OUT
    _worker_signals()
    _POOL, _OUT = pool, out
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextmanager
def _worker_pool(initializer=_worker_signals, initargs=()):
    """A pool of WORKERS processes. The stop signals are blocked while it starts, so that none reaches a
    worker before its initializer (which must call _worker_signals) has reset its handlers.

    Workers come from a fork server (a fresh, single-threaded interpreter), never forked from the caller: a
    caller with threads (torch's pool, a test runner, a Streamlit server) can hold a lock at fork time that no
    forked child ever sees released, and a build forked from the 400th test of the suite hung for an hour.

    A pool whose work is done is closed and joined (each worker ends on the sentinel it reads), never terminated:
    terminate() SIGTERMs the workers, and a signal that lands while a worker is between Python code and the wait
    for the queue's lock only marks its Python handler as pending; the worker then sleeps in that wait for ever
    and terminate() joins it for ever (seen on a loaded machine: a worker in sem_wait with its SIGTERM handler
    installed, unblocked, and no signal pending). Only an exception (a Stop) terminates the pool; a Stop sent
    to the job's process group has already signalled each worker once, so a lost first signal is not the last."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])    # the server imports this module once; workers start warm
    else:
        ctx = mp.get_context("spawn")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pool = ctx.Pool(WORKERS, initializer=initializer, initargs=initargs)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)      # a Stop that came meanwhile arrives here
        yield pool
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()


def _plausible(x: np.ndarray | None, n_words: int) -> bool:
    if x is None or x.size < SR * 0.2:
        return False
    dur = x.size / SR
    return rms(x) > 1e-3 and n_words * 0.08 <= dur <= n_words * 1.6 + 2.0


def synth_clean(task: list[dict]) -> list[np.ndarray | None]:
    voice = task[0]["voice"]
    raw = engines.synthesize(voice, [(u["spoken"], u["speed"], u["pitch"]) for u in task])
    out = []
    for u, x in zip(task, raw):
        if x is not None:
            x = augment.trim_silence(x, pad_s=PAD_S)
        out.append(x if _plausible(x, len(u["text"].split())) else None)
    return out


def _run_task(task: list[dict]) -> list[tuple[int, dict | None]]:
    results = []
    for u, x in zip(task, synth_clean(task)):
        if x is None:
            results.append((u["index"], None))
            continue
        y = augment.apply_augmentation(x, u["aug"], _POOL)
        rel = f"audio/{u['split']}/{u['id']}.wav"
        sf.write(os.path.join(_OUT, rel), y, SR, subtype="PCM_16")
        v: Voice = u["voice"]
        row = {"audio_filepath": rel, "text": u["text"], "duration": round(y.size / SR, 4),
               "speaker": v.speaker, "engine": v.engine, "voice": v.name, "held_out_voice": v.held_out,
               "source": u["source"], "speed": u["speed"], "pitch": u["pitch"],
               "aug": augment.describe(u["aug"])}
        results.append((u["index"], row))
    return results


# --------------------------------------------------------------------------------------------
def _engine_versions() -> dict:
    out = {}
    for name, cmd in (("espeak-ng", ["espeak-ng", "--version"]), ("flite", ["flite", "--version"]),
                      ("festival", ["festival", "--version"])):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out[name] = (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            out[name] = None
    return out


def _cache_key(hours: float, seed: int, fsdd_fp: str | None, voices: list[Voice], exclude: frozenset[str]) -> str:
    blob = json.dumps({"version": VERSION, "hours": float(hours), "seed": int(seed), "fsdd": fsdd_fp,
                       "voices": [v.speaker for v in voices],
                       **({"exclude": sorted(exclude)} if exclude else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached(out: Path, key: str) -> dict | None:
    meta = out / "corpus.json"
    if not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("key") != key or not info.get("complete"):
        return None
    for name in info.get("manifests", []):
        if not (out / name).exists():
            return None
    return info


def _write_wav_pool(task: list[dict]) -> list[np.ndarray | None]:
    return synth_clean(task)


def _swap_in(staging: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def excluded_texts(manifests) -> frozenset[str]:
    """The normalised texts of these manifests: sentences a new corpus must not draw (another corpus's
    validation and test sets, a real dev set), so a bigger training corpus never holds their sentences."""
    from dld_core.audio import load_manifest
    return frozenset(normalize_text(str(r.get("text", ""))) for m in manifests for r in load_manifest(m)) - {""}


def build_corpus(out: str, hours: float, seed: int = 0, fsdd_dir: str | None = None, progress: bool = True,
                 exclude: frozenset[str] = frozenset()) -> dict:
    """Build (or reuse) the corpus in ``out``; returns the corpus.json dict. `exclude`: normalised sentences
    never drawn (see `excluded_texts`)."""
    if hours <= 0:
        raise ValueError("hours must be positive")
    t0 = time.time()
    out_p = Path(out).resolve()
    fsdd_fp = fsdd.fsdd_fingerprint(fsdd_dir) if fsdd_dir else None
    if fsdd_dir and not fsdd.fsdd_files(fsdd_dir):
        raise FileNotFoundError(f"no FSDD recordings found under {fsdd_dir}")
    voices = _available_voices()
    key = _cache_key(hours, seed, fsdd_fp, voices, exclude)
    cached = _cached(out_p, key)
    if cached is not None:
        if progress:
            print(f"corpus {out} is complete (key {key}); reusing it", file=sys.stderr)
        return cached
    out_p.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out_p.with_name(out_p.name + ".lock")):     # one builder per corpus; others wait, reuse
        cached = _cached(out_p, key)
        if cached is not None:
            return cached
        return _build(out_p, hours, seed, fsdd_dir, progress, key, t0, exclude)


def _build(out_p: Path, hours: float, seed: int, fsdd_dir: str | None, progress: bool, key: str, t0: float,
           exclude: frozenset[str] = frozenset()) -> dict:
    final_p = out_p
    if final_p.exists() and any(final_p.iterdir()) and not (final_p / "corpus.json").exists():
        raise FileExistsError(f"{final_p} exists, is not empty and holds no corpus.json; refusing to overwrite it")
    # build in a sibling staging folder and swap at the end: a reader of an older corpus in ``out``
    # never sees a half-written one, and an interrupted build leaves ``out`` untouched
    out_p = final_p.with_name(final_p.name + ".building")
    if out_p.exists():
        shutil.rmtree(out_p)
    for split in ("train", "valid", "test"):
        (out_p / "audio" / split).mkdir(parents=True, exist_ok=True)

    plan = make_plan(hours, seed, exclude)
    utts = plan["utts"]

    from tqdm import tqdm
    # babble pool: clean utterances (not in any manifest) used as background speech
    babble_tasks = _tasks(plan["babble"])
    pool_audio: list[np.ndarray] = []
    with _worker_pool() as p:
        for res in p.map(_write_wav_pool, babble_tasks):
            pool_audio += [x for x in res if x is not None]

    rows_by_index: dict[int, dict | None] = {}
    synth_s = 0.0
    tasks = _tasks(utts)
    t_synth = time.time()
    with _worker_pool(_init_worker, (pool_audio, str(out_p))) as p, \
            tqdm(total=len(utts), desc="synth", unit="utt", disable=not progress, file=sys.stderr,
                 smoothing=0.05) as bar:
        for res in p.imap_unordered(_run_task, tasks):
            for idx, row in res:
                rows_by_index[idx] = row
                if row:
                    synth_s += row["duration"]
            bar.update(len(res))
            bar.set_postfix(audio_h=f"{synth_s / 3600:.2f}", x_rt=f"{synth_s / max(time.time() - t_synth, 1e-9):.0f}")
    synth_wall = time.time() - t_synth

    split_rows: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    failed = 0
    for u in utts:
        row = rows_by_index.get(u["index"])
        if row is None:
            failed += 1
            continue
        split_rows[u["split"]].append(row)

    manifests = ["train.jsonl", "valid.jsonl", "test.jsonl"]
    fsdd_rows = None
    if fsdd_dir:
        fsdd_rows = fsdd.convert_fsdd(fsdd_dir, out_p, seed=seed, progress=progress)
        for split in ("train", "valid", "test"):
            write_manifest(out_p / f"fsdd_{split}.jsonl", fsdd_rows[split])
        manifests += ["fsdd_train.jsonl", "fsdd_valid.jsonl", "fsdd_test.jsonl"]
        train_rows = split_rows["train"] + [dict(r) for r in fsdd_rows["train"]]
    else:
        train_rows = split_rows["train"]
    write_manifest(out_p / "train.jsonl", train_rows)
    write_manifest(out_p / "valid.jsonl", split_rows["valid"])
    write_manifest(out_p / "test.jsonl", split_rows["test"])

    info = _summary(plan, split_rows, fsdd_rows, hours, seed, key, fsdd_dir, failed, manifests)
    info["excluded_sentences"] = len(exclude)
    info = json.loads(json.dumps(info))          # exactly what corpus.json holds (lists, not tuples)
    info["build"] = {"seconds": round(time.time() - t0, 1), "synth_seconds": round(synth_wall, 1),
                     "synth_x_realtime": round(synth_s / max(synth_wall, 1e-9), 1), "workers": WORKERS}
    (out_p / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
    _swap_in(out_p, final_p)
    if progress:
        print(f"corpus {final_p}: {info['hours']:.2f} h synthetic, {sum(s['utterances'] for s in info['splits'].values())} "
              f"utterances, {info['distinct_words']} distinct words, {info['build']['synth_x_realtime']}x real time",
              file=sys.stderr)
    return info


def _summary(plan, split_rows, fsdd_rows, hours, seed, key, fsdd_dir, failed, manifests) -> dict:
    voices: list[Voice] = plan["voices"]
    splits = {}
    all_words: set[str] = set()
    for split, rows in split_rows.items():
        words = {w for r in rows for w in r["text"].split()}
        all_words |= words
        splits[split] = {
            "utterances": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
            "distinct_words": len(words),
            "per_engine": dict(sorted(Counter(r["engine"] for r in rows).items())),
            "per_source": dict(sorted(Counter(r["source"] for r in rows).items())),
            "augmented": sum(r["aug"] != "clean" for r in rows),
            "held_out_voice_utterances": sum(bool(r["held_out_voice"]) for r in rows),
            "speakers": sorted({r["speaker"] for r in rows}),
        }
    info = {
        "version": VERSION, "key": key, "complete": True, "seed": seed, "hours_requested": hours,
        "hours": round(sum(s["hours"] for s in splits.values()), 4),
        "distinct_words": len(all_words), "failed_utterances": failed,
        "manifests": manifests, "sample_rate": SR, "audio_format": "wav PCM_16 mono",
        "splits": splits,
        "engines": _engine_versions(),
        "voices": {"train_valid": [v.speaker for v in voices if not v.held_out],
                   "held_out_test_only": [v.speaker for v in voices if v.held_out]},
        "synthesis": {"engine_weights": ENGINE_WEIGHTS, "voice_weights": VOICE_WEIGHTS,
                      "speed_range": SPEED_RANGE, "pitch_range": PITCH_RANGE,
                      "test_held_out_fraction": TEST_HELD_OUT_FRACTION, "silence_pad_s": PAD_S,
                      "notes": "espeak-ng -s/-p; flite duration_stretch/int_f0_target_mean; festival "
                               "Duration_Stretch + resampling pitch shift; all resampled to 16 kHz with soxr HQ"},
        "split_fractions": SPLIT_FRACTIONS,
        "text": {"weights": TEXT_WEIGHTS, "sources": {
            "kjv": {"what": "King James Bible clauses of 3-16 words", "licence": textsrc.KJV_LICENCE},
            "wordnet_examples": {"what": "WordNet 3.0 usage example sentences of 3-16 words (modern English)",
                                 "licence": textsrc.WORDNET_LICENCE, "notice": textsrc.WORDNET_NOTICE,
                                 "available": len(textsrc.wordnet_examples())},
            "wordnet_glosses": {"what": "WordNet 3.0 definitions (glosses) of 3-16 words, no capitalised words",
                                "licence": textsrc.WORDNET_LICENCE, "notice": textsrc.WORDNET_NOTICE,
                                "available": len(textsrc.wordnet_glosses())},
            "wordfreq": {"what": f"word strings drawn from the wordfreq English list (top {textsrc.WORDFREQ_TOP}, "
                                f"filtered by WordNet below the top {textsrc.WORDFREQ_TRUSTED}; "
                                f"{len(textsrc.wordfreq_vocab())} words; rank = n * u^{textsrc.WORDFREQ_SKEW})",
                         "licence": textsrc.WORDFREQ_LICENCE},
            "numbers": {"what": "spoken-number phrases (phone numbers, counts, years, times, money, dates)",
                        "licence": textsrc.NUMBERS_LICENCE}},
            "transcript": "dld_core.text.normalize_text of exactly the spoken text; each sentence used once "
                          "(test/valid sentences never in train)"},
        "augmentation": {"settings": augment.SETTINGS, "noise_kinds": augment.NOISE_KINDS,
                         "babble_pool_utterances": BABBLE_POOL,
                         "reverb": "synthetic exponentially decaying noise impulse response",
                         "telephone": "300-3400 Hz band-pass, 8 kHz round trip, 8-bit mu-law"},
    }
    if fsdd_rows is not None:
        info["fsdd"] = {"dir": str(fsdd_dir), "attribution": fsdd.ATTRIBUTION, "licence": fsdd.LICENCE,
                        "speaker_split": fsdd.fsdd_speaker_split(fsdd_dir, seed),
                        "utterances": {k: len(v) for k, v in fsdd_rows.items()},
                        "hours": {k: round(sum(r["duration"] for r in v) / 3600, 4) for k, v in fsdd_rows.items()},
                        "mixed_into_train": True}
    return info
