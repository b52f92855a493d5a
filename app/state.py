"""Where things live, and the cached resources / results the pages share.

* Models: `get_checkpoint(path)` — one `st.cache_resource` entry per (path, file mtimes), shared by every
  browser session. The layer mask is never stored on a model: it is an argument of every call below.
* Results: `st.cache_data` entries keyed by (checkpoint key, audio hash, mask).
* Paths: environment variables override the defaults (the tests point them at temp folders):
  DLD_CHECKPOINTS_DIR (<repo>/checkpoints), DLD_JOBS_DIR (<repo>/runs/jobs), DLD_SAMPLES_DIR
  (<repo>/data_samples), DLD_RESULTS_DIR (committed <repo>/results, and <repo>/runs/eval for background
  evaluations started from the app), DLD_DOWNLOADS_DIR (<repo>/runs/downloads: exported-model zips).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import streamlit as st

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from dld_core.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, Checkpoint, list_checkpoints,  # noqa: E402
                                 load_checkpoint, read_config, read_metrics)

from dld_core.config import RECIPE_LABELS as RECIPE_NAMES  # noqa: E402
from dld_core.eval_sets import EVAL_SETS, by_manifest_name  # noqa: E402
from dld_core.safe_io import CheckpointError  # noqa: E402

# One intra-op thread per request by default: the server runs several sessions (and maybe a training job)
# on few cores, and multi-threaded kernels slow down many-fold when their threads are descheduled
# (measured on 2 shared cores: a 10 s forward took 60-80 ms with 1 thread, 300-2500 ms with 2).
def configure_torch() -> None:
    """Call at the start of every script run: OpenMP thread counts are per OS thread, and Streamlit runs
    each session's script in a thread of its own."""
    try:
        threads = max(1, int(os.environ.get("DLD_TORCH_THREADS", "1")))
    except ValueError:
        threads = 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


configure_torch()


@st.cache_resource(show_spinner=False)
def warm_up_flop_counter() -> bool:
    """The first FLOP count in a process pays ~1 s of one-off setup (torch imports torch._dynamo the first
    time FlopCounterMode is used). Pay it once per server, on a background thread, while the first
    session loads its models."""
    import threading

    def work() -> None:
        try:
            from dld_core.config import ModelConfig
            from dld_core.flops import gflops
            gflops(ModelConfig(d_model=16, n_layers=1, n_heads=2, ffn_dim=16), 0.5, None)
        except Exception:  # noqa: BLE001 - a warm-up must never break the app
            pass

    threading.Thread(target=work, name="dld-flops-warmup", daemon=True).start()
    return True


# ----------------------------------------------------------------------------------------------- paths
def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def checkpoints_dir() -> Path:
    return _env_path("DLD_CHECKPOINTS_DIR", REPO_ROOT / "checkpoints")


def jobs_dir() -> Path:
    return _env_path("DLD_JOBS_DIR", REPO_ROOT / "runs" / "jobs")


# ------------------------------------------------------------------------------ who can reach the app
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def served_to_network() -> bool:
    """True when the server listens beyond this machine (server.address is not a loopback address)."""
    return str(st.get_option("server.address") or "0.0.0.0") not in LOCAL_ADDRESSES


def model_config_of(folder) -> Optional["ModelConfig"]:
    """A checkpoint's model config from its config.json alone (no weights read); None if unreadable."""
    from dld_core.config import ModelConfig, from_dict
    try:
        return from_dict(ModelConfig, read_config(folder)["model"])
    except (CheckpointError, OSError, KeyError, TypeError, ValueError):
        return None


def training_enabled() -> bool:
    """The operator's switch: DLD_TRAINING=off hides training (the Train page only shows past jobs)."""
    return os.environ.get("DLD_TRAINING", "on").strip().lower() not in ("off", "0", "false", "no")


def data_dirs() -> list[Path]:
    """Folders whose manifests the Train page may read when the app is served to a network
    (DLD_DATA_DIRS, separated by ':'); none by default, so visitors can use only the built-in corpus."""
    return [Path(p).expanduser().resolve() for p in os.environ.get("DLD_DATA_DIRS", "").split(":") if p.strip()]


def manifest_problem(text: str, what: str) -> Optional[str]:
    """Why a typed manifest path cannot be used, or None. Served to a network, a path outside the allowed
    data folders is refused before the file system is asked anything, so the message never reveals which
    files exist."""
    path = Path(text.strip()).expanduser()
    if served_to_network():
        resolved = path.resolve()                  # links resolved: a link cannot point outside
        if not any(resolved.is_relative_to(d) for d in data_dirs()):
            return (f"The {what} must be inside a data folder the operator allows (DLD_DATA_DIRS)."
                    if data_dirs() else "This server accepts no manifest paths: use the built-in corpus.")
    return None if path.is_file() else f"The {what} is not a readable file."


def samples_dir() -> Path:
    return _env_path("DLD_SAMPLES_DIR", REPO_ROOT / "data_samples")


def results_dir() -> Path:
    """Committed evaluation results (results/*.json)."""
    return _env_path("DLD_RESULTS_DIR", REPO_ROOT / "results")


def app_results_dir() -> Path:
    """Where background evaluations started from the app write (git-ignored runs/ unless overridden)."""
    return _env_path("DLD_RESULTS_DIR", REPO_ROOT / "runs" / "eval")


def downloads_dir() -> Path:
    """The cached "Download this model" zips, shared by sessions (git-ignored runs/ unless overridden)."""
    return _env_path("DLD_DOWNLOADS_DIR", REPO_ROOT / "runs" / "downloads")


def samples_manifest() -> Path:
    return samples_dir() / "manifest.jsonl"


def default_student() -> Path:
    return checkpoints_dir() / "dld"


def default_teacher() -> Path:
    return checkpoints_dir() / "teacher"


def eval_result_paths(checkpoint: Path) -> list[Path]:
    """Evaluation JSONs (from `python -m dld_core evaluate --json`) that may belong to a checkpoint:
    <checkpoint>/eval_*.json, then results/*.json whose "checkpoint" field names it (checked by the reader)."""
    checkpoint = Path(checkpoint)
    own = sorted(checkpoint.glob("eval_*.json")) if checkpoint.is_dir() else []
    shared = []
    for folder in dict.fromkeys((results_dir(), app_results_dir())):
        shared += sorted(folder.glob("*.json")) if folder.is_dir() else []
    return own + shared


def background_eval_path(checkpoint: Path) -> Path:
    """Where a background evaluation started from the app writes its JSON."""
    return app_results_dir() / f"eval_app_{Path(checkpoint).name}_{_short_hash(str(Path(checkpoint).resolve()))}.json"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class CheckpointEntry:
    path: Path
    label: str           # folder · recipe · validation WER (when metrics.json has one): what pickers show
    recipe: str
    origin: str          # "shipped" (under checkpoints/) or "trained" (made by the trainer)
    valid_wer: Optional[float] = None     # the trainer's best validation WER (fraction), None if unknown


def metrics_valid_wer(metrics: Optional[dict]) -> Optional[float]:
    """The full-depth validation WER of the kept model, from a trainer's metrics.json. A student's
    best_valid_wer is the mean over its validation masks (full depth and every other module), so the kept
    epoch's full-depth entry in "history" is read when there is one; otherwise best_valid_wer (a teacher's
    is full depth), or older files' valid_wer / wer."""
    metrics = metrics or {}
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    best = metrics.get("best_valid_wer")
    for entry in metrics.get("history") or []:
        wers = entry.get("valid_wer_masks") if isinstance(entry, dict) else None
        if number(best) and wers and all(number(w) for w in wers) and number(entry.get("valid_wer")) \
                and abs(sum(wers) / len(wers) - best) < 1e-9:
            return float(entry["valid_wer"])
    return next((float(metrics[k]) for k in ("best_valid_wer", "valid_wer", "wer") if number(metrics.get(k))), None)


def wer_text(wer: Optional[float]) -> str:
    """" · valid WER 12.3%" for a picker label ("" when unknown)."""
    return f" · valid WER {100 * wer:.1f}%" if isinstance(wer, (int, float)) else ""


@st.cache_data(ttl=3, show_spinner=False)
def _scan(root: str, origin: str) -> list[tuple[str, str, str, Optional[float]]]:
    out = []
    for folder in list_checkpoints(root):
        try:
            recipe = str(read_config(folder).get("recipe", "unknown"))
        except CheckpointError:
            continue
        try:
            wer = metrics_valid_wer(read_metrics(folder))
        except (CheckpointError, OSError, ValueError):
            wer = None
        out.append((str(folder), recipe, origin, wer))
    return out


def checkpoint_name(path: Path) -> str:
    """A checkpoint as people tell it apart: its folder under checkpoints/ ("conformer_dld", "scratch/dld") or
    under the trainer's jobs folder ("trained/<run>"), else its folder name."""
    path = Path(path)
    for root, prefix in ((checkpoints_dir(), ""), (jobs_dir(), "trained/")):
        try:
            return prefix + path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def find_checkpoints() -> list[CheckpointEntry]:
    """Every usable checkpoint folder: under checkpoints/ and under the trainer's jobs folder."""
    entries, seen = [], set()
    for root, origin in ((checkpoints_dir(), "shipped"), (jobs_dir(), "trained")):
        for path_s, recipe, org, wer in _scan(str(root), origin):
            path = Path(path_s)
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                rel = path.relative_to(root)
            except ValueError:
                rel = Path(path.name)
            prefix = "" if org == "shipped" else "trained/"
            label = f"{prefix}{rel.as_posix()} · {RECIPE_NAMES.get(recipe, recipe)}{wer_text(wer)}"
            entries.append(CheckpointEntry(path, label, recipe, org, wer))
    return entries


def checkpoint_stamp(path: Path) -> str:
    """Changes whenever the checkpoint files change (a retrained model is reloaded, not served stale)."""
    path = Path(path)
    parts = []
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            st_ = (path / name).stat()
            parts.append(f"{st_.st_mtime_ns}:{st_.st_size}")
        except OSError:
            parts.append("missing")
    return "|".join(parts)


def checkpoint_key(path: Path) -> str:
    return f"{Path(path).resolve()}@{checkpoint_stamp(path)}"


@st.cache_resource(max_entries=8, show_spinner="Loading model…")
def _load_checkpoint(path: str, stamp: str) -> Checkpoint:
    ckpt = load_checkpoint(path)
    ckpt.model.eval()
    for p in ckpt.model.parameters():
        p.requires_grad_(False)
    _warm_up(ckpt)
    return ckpt


def _warm_up(ckpt: Checkpoint) -> None:
    """One short forward at load time, so one-off kernel/allocator setup is not billed to a user's first
    toggle (the page shows measured latency)."""
    from dld_core.audio import SAMPLE_RATE
    from dld_core.inference import recognize
    try:
        recognize(ckpt.model, [np.zeros(SAMPLE_RATE, dtype=np.float32)])
    except (RuntimeError, ValueError):
        pass


def get_checkpoint(path: Path) -> Checkpoint:
    """The shared, cached model. Raises CheckpointError (one-line message) if it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path.name}: checkpoint folder not found ({path})")
    return _load_checkpoint(str(path.resolve()), checkpoint_stamp(path))


def checkpoint_summary(ckpt: Checkpoint) -> dict[str, Any]:
    from dld_core.model import count_parameters
    metrics = read_metrics(ckpt.path) or {}
    cfg = ckpt.config
    return {"recipe": RECIPE_NAMES.get(ckpt.recipe, ckpt.recipe), "family": cfg.family, "layers": cfg.num_modules,
            "d_model": cfg.d_model, "params_m": count_parameters(ckpt.model) / 1e6,
            "valid_wer": metrics_valid_wer(metrics), "protected": list(ckpt.protected.kept_names)}


# ------------------------------------------------------------------------------------------------ audio
@dataclass(frozen=True)
class Clip:
    samples: np.ndarray          # float32, 16 kHz mono
    duration: float
    silent: bool
    digest: str                  # content hash: the audio part of every result cache key
    name: str
    warning: str = ""            # dld_core.audio's note on a suspicious file (shown, not fatal)


def _clip_from(audio_clip, name: str) -> Clip:
    samples = np.ascontiguousarray(audio_clip.samples, dtype=np.float32)
    digest = hashlib.sha1(samples.tobytes()).hexdigest()[:16]
    return Clip(samples, float(audio_clip.duration), bool(audio_clip.silent), digest, name, audio_clip.warning)


@st.cache_data(max_entries=32, show_spinner=False)
def load_clip_bytes(data: bytes, name: str) -> Clip:
    """Decode uploaded/recorded bytes. Raises dld_core.audio.AudioError with a one-line message."""
    from dld_core.audio import load_audio
    return _clip_from(load_audio(data), name)


@st.cache_data(max_entries=64, show_spinner=False)
def _load_clip_file(path: str, stamp: float) -> Clip:
    from dld_core.audio import load_audio
    return _clip_from(load_audio(path), Path(path).name)


def load_clip_file(path: Path) -> Clip:
    path = Path(path)
    return _load_clip_file(str(path), path.stat().st_mtime)


def load_samples() -> list[dict]:
    """data_samples/manifest.jsonl rows (absolute audio_filepath, text, duration); [] if there is none."""
    return _load_samples(str(samples_manifest()))


@st.cache_data(ttl=10, show_spinner=False)
def _load_samples(manifest_path: str) -> list[dict]:
    """load_samples, cached per manifest path (the samples folder can be moved with DLD_SAMPLES_DIR)."""
    manifest = Path(manifest_path)
    if not manifest.is_file():
        return []
    from dld_core.audio import load_manifest
    rows = load_manifest(str(manifest))
    return [r for r in rows if Path(r["audio_filepath"]).is_file()]


_ENGINES = {"flite": "Flite", "festival": "Festival", "espeak": "eSpeak", "piper": "Piper"}
_EFFECTS = {"pink_noise": "with background noise", "white_noise": "with background noise", "noise": "with noise",
            "reverb": "in a reverberant room", "telephone": "over a telephone line"}


_ARCTIC_SPEAKERS = {"awb", "bdl", "clb", "jmk", "ksp", "rms", "slt"}      # CMU ARCTIC speakers go by initials
_LANGUAGES = {"en-gb": "British English", "en-gb-x-rp": "British English", "en-us": "American English",
              "en-029": "Caribbean English", "en-sc": "Scottish English", "en": "English"}


def _voice_name(voice: str) -> str:
    """A synthesizer voice id as a name: cmu_us_slt_arctic_hts -> SLT, kal16 / kal_diphone -> Kal,
    awb -> AWB, en-gb-x-rp+f3 -> British English, female."""
    import re
    voice = voice.strip()
    if "-" in voice or "+" in voice:                                  # eSpeak: language[+variant]
        lang, _, variant = voice.partition("+")
        sex = {"f": "female", "m": "male"}.get(variant[:1].lower(), "")
        return ", ".join(x for x in (_LANGUAGES.get(lang.lower(), lang), sex) if x)
    v = re.sub(r"^cmu_[a-z]+_|_arctic.*$|_diphone$|_hts$|\d+$", "", voice)
    return v.upper() if v.lower() in _ARCTIC_SPEAKERS else v.capitalize()


def sample_title(row: dict) -> str:
    """A human name for a sample clip: the manifest's "title" when it has one, else one made from its
    "source" ("Synthetic voice (Flite, Kal)", "Recorded digit: zero (speaker Nicolas)"); never a file name,
    voice id or licence text."""
    title = str(row.get("title") or "").strip()
    if title:
        return title
    src, text = str(row.get("source") or "").strip(), str(row.get("text", "")).strip()
    if src.upper().startswith("FSDD"):
        parts = src.split()
        speaker = parts[1].strip("(;,").capitalize() if len(parts) > 1 else ""
        return f"Recorded digit: {text}" + (f" (speaker {speaker})" if speaker else "")
    engine, sep, rest = src.partition(":")
    if sep and engine.lower() in _ENGINES:
        voice, _, aug = rest.partition(", augmented:")
        held_out = "held-out" in voice
        name = _voice_name(voice.split("(")[0])
        effect = next((e for k, e in _EFFECTS.items() if k in aug), "with effects" if aug.strip() else "")
        return (f"Synthetic voice ({_ENGINES[engine.lower()]}, {name}{'; not heard in training' if held_out else ''})"
                + (f", {effect}" if effect else ""))
    return "Sample clip"


def sample_label(row: dict) -> str:
    """What the sample picker shows: the clip's human name, the whole sentence (never cut) and its length."""
    title, text = sample_title(row), str(row.get("text", "")).strip()
    said = "" if not text or text.lower() in title.lower() else f" — “{text}”"
    dur = row.get("duration")
    return f"{title}{said}" + (f" · {dur:.1f} s" if isinstance(dur, (int, float)) else "")


# ---------------------------------------------------------------------------------------------- results
def _mask_list(mask: Sequence[bool]) -> list[bool]:
    return [bool(m) for m in mask]


@st.cache_data(max_entries=32, show_spinner=False)
def _cached_features(front_end: str, audio_digest: str, _model, _samples: np.ndarray):
    from dld_core.inference import featurize
    return featurize(_model, [_samples])


def _features(model, samples: np.ndarray, audio_digest: Optional[str] = None):
    """Model input for one clip, computed once per (front end, clip)."""
    from dld_core.config import to_dict
    digest = audio_digest or hashlib.sha1(np.ascontiguousarray(samples).tobytes()).hexdigest()[:16]
    front_end = json.dumps({k: v for k, v in to_dict(model.config).items() if k != "vocab"}, sort_keys=True)
    return _cached_features(front_end, digest, model, samples)


@st.cache_data(max_entries=128, show_spinner=False)
def teacher_result(teacher_key: str, audio_digest: str, _teacher: Checkpoint, _samples: np.ndarray) -> dict:
    """Teacher transcript and full-depth log-probs [T', V] (the reference of the KL views), once per clip."""
    from dld_core.inference import recognize
    model = _teacher.model
    t0 = time.perf_counter()
    result = recognize(model, features=_features(model, _samples, audio_digest))
    return {"text": result.texts[0], "latency_ms": (time.perf_counter() - t0) * 1000,
            "log_probs": result.log_probs().float().numpy()}


def gflops_for(ckpt: Checkpoint, seconds_or_samples, mask: Sequence[bool]) -> float:
    """dld_core.flops.gflops of a mask (counted once per clip length; any mask is then a cache lookup)."""
    from dld_core.flops import gflops
    return float(gflops(ckpt.model, seconds_or_samples, _mask_list(mask)))


LATENCY_REPEATS = 5     # timed forward runs per (clip, mask): Inspect shows their median


@st.cache_data(max_entries=512, show_spinner=False)
def student_result(ckpt_key: str, audio_digest: str, mask: tuple[bool, ...], teacher_key: Optional[str],
                   _ckpt: Checkpoint, _samples: np.ndarray, _teacher_lp: Optional[np.ndarray] = None
                   ) -> dict[str, Any]:
    """Everything that changes on a toggle: transcript, GFLOPs, latency, posteriorgram and the depth
    (logit-lens) KL view. Cached by (checkpoint, audio hash, mask, teacher).

    latency_ms: the median of LATENCY_REPEATS forward runs + the greedy decode (dld_core.inference.recognize);
    rtf: that compute over the clip's duration (dld_core.inference.real_time_factor)."""
    from dld_core.inference import frame_seconds, real_time_factor, recognize
    from dld_core.layers import depth_kl, reference_log_probs

    model = _ckpt.model
    active = _mask_list(mask)
    feats, lengths = _features(model, _samples, audio_digest)
    result = recognize(model, features=(feats, lengths), active=active, return_hidden=True,   # hidden: depth view
                       repeats=LATENCY_REPEATS)
    latency_ms = result.compute_ms
    log_probs = result.log_probs().float().numpy()
    n_frames = log_probs.shape[0]
    ref_lp, ref_name = reference_log_probs(_teacher_lp, log_probs, n_frames)
    depth = depth_kl(model, ref_lp, feats, lengths, output=result.output)
    num_samples = len(_samples)
    return {"text": result.texts[0], "latency_ms": latency_ms, "latency_runs": LATENCY_REPEATS,
            "rtf": real_time_factor(latency_ms, num_samples),
            "gflops": gflops_for(_ckpt, num_samples, active),
            "gflops_full": gflops_for(_ckpt, num_samples, [True] * len(active)),
            "posteriors": np.exp(log_probs).astype(np.float16), "log_probs": log_probs,
            "frame_sec": frame_seconds(num_samples, n_frames), "depth_kl": np.asarray(depth, dtype=np.float32),
            "reference": ref_name}


@st.cache_resource(ttl=30, show_spinner="Loading the beam decoder (lexicon + word LM)…")
def beam_ready(vocab: tuple[str, ...]) -> tuple[bool, str]:
    """(usable, why not): dld_core.decode.beam_status, once per vocabulary and server (it builds and caches
    the shared decoder, ~2 s)."""
    from dld_core.decode import beam_status
    return beam_status(list(vocab))


@st.cache_data(max_entries=512, show_spinner=False)
def beam_text(ckpt_key: str, audio_digest: str, mask: Sequence[bool], _ckpt: Checkpoint,
              _log_probs: np.ndarray) -> str:
    """The beam decoder's transcript of an already computed result (student or teacher log-probs); `mask`,
    the mask they were computed with (the layer strip's tuple or a dld_core.masks.Mask), keys the cache."""
    from dld_core.inference import decoder_for
    return decoder_for(_ckpt.model, "beam")(torch.from_numpy(np.asarray(_log_probs, dtype=np.float32))[None], None)[0]


@st.cache_data(max_entries=256, show_spinner=False)
def drop_one_result(ckpt_key: str, audio_digest: str, mask: tuple[bool, ...], teacher_key: Optional[str],
                    _ckpt: Checkpoint, _samples: np.ndarray, _reference_lp: np.ndarray) -> np.ndarray:
    """Drop-one view for the current mask: row i = KL(reference || current mask without module i) per
    frame; rows of modules that are already off hold NaN (drawn blank)."""
    from dld_core.layers import drop_one_kl
    feats, lengths = _features(_ckpt.model, _samples, audio_digest)
    ref = torch.from_numpy(np.asarray(_reference_lp, dtype=np.float32))
    return np.asarray(drop_one_kl(_ckpt.model, ref, feats, lengths, base_active=_mask_list(mask), dropped="nan"),
                      dtype=np.float32)


@st.cache_data(max_entries=128, show_spinner=False)
def best_mask(ckpt_key: str, audio_digest: str, kept: int, teacher_key: Optional[str], reference_text: str,
              _ckpt: Checkpoint, _samples: np.ndarray, _reference_lp: np.ndarray) -> Optional[tuple[bool, ...]]:
    """The best `kept`-module mask for this clip (dld_core.layers.best_mask_for_budget, KL to the reference)."""
    from dld_core.layers import best_mask_for_budget
    ref = torch.from_numpy(np.asarray(_reference_lp, dtype=np.float32))
    clips = [(_samples, reference_text)] if reference_text.strip() else [_samples]
    best = best_mask_for_budget(_ckpt.model, ref, clips, kept=int(kept))
    from dld_core.masks import as_bools
    return tuple(as_bools(best["active"], _ckpt.model.num_modules))


@st.cache_data(max_entries=16, show_spinner=False)
def logmel(audio_digest: str, _samples: np.ndarray) -> np.ndarray:
    """Display spectrogram (dld_core.features.display_logmel), [T, 80]."""
    from dld_core.features import display_logmel
    return display_logmel(_samples).numpy().astype(np.float16)


def score(reference: str, hypothesis: str) -> Optional[dict]:
    """WER/CER and the word diff against an optional reference (None when there is no reference)."""
    from dld_core.metrics import cer, wer, word_diff
    from dld_core.text import normalize_text
    ref = normalize_text(reference or "")
    if not ref:
        return None
    hyp = normalize_text(hypothesis or "")
    return {"wer": float(wer([ref], [hyp])), "cer": float(cer([ref], [hyp])), "diff": word_diff(ref, hyp)}


# -------------------------------------------------------------------------------------- evaluate results
# Results name their evaluation set by the manifest's file name (the sample clips by their folder); the
# names people read come from dld_core.eval_sets.
SAMPLES_NAME = "Sample clips"
EVAL_SET_ORDER = tuple(Path(s.manifest).name for s in EVAL_SETS) + ("samples",)


def eval_set_key(manifest) -> str:
    """The evaluation set a result was made on: the manifest's file name, or "samples" for the sample clips."""
    path = Path(str(manifest or ""))
    if path.name == samples_manifest().name and (
            path.parent.name in ("data_samples", samples_dir().name) or path.resolve() == samples_manifest().resolve()):
        return "samples"
    return path.name or "unknown"


def eval_set_name(key: str) -> str:
    if key == "samples":
        return SAMPLES_NAME
    found = by_manifest_name(key)
    return found.name if found else key


def _eval_results(checkpoint: Path) -> list[tuple[float, dict]]:
    """(mtime, data) of every evaluation JSON of this checkpoint."""
    checkpoint = Path(checkpoint)
    found = []
    for path in dict.fromkeys(eval_result_paths(checkpoint) + [background_eval_path(checkpoint)]):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("levels"), list):
            continue
        if path.parent != checkpoint and not _names(data, checkpoint):
            continue
        found.append((path.stat().st_mtime, data))
    return found


def _names(data: dict, checkpoint: Path) -> bool:
    """Whether a result JSON's "checkpoint" field names this checkpoint folder."""
    named = data.get("checkpoint")
    if not named:
        return False
    named_path = Path(str(named))
    if not named_path.is_absolute():
        named_path = REPO_ROOT / named_path
    # results made on another machine: the same <parent>/<name> tail (e.g. checkpoints/dld)
    return named_path.resolve() == Path(checkpoint).resolve() or (
        named_path.name == Path(checkpoint).name and named_path.parent.name == Path(checkpoint).parent.name)


# ------------------------------------------------------------------------------- the budget recommendation
BUDGET_REPORT = "budget_masks.json"      # in a checkpoint folder; or results/budget_masks/<name>.json


def read_budget_report(checkpoint: Path) -> Optional[dict]:
    """dld_core.recommend's report of a checkpoint (masks chosen on its validation set, evaluated on test
    sets): the newest of <checkpoint>/budget_masks.json and results/budget_masks/*.json naming it; None if none."""
    checkpoint = Path(checkpoint)
    paths = [checkpoint / BUDGET_REPORT]
    for folder in dict.fromkeys((results_dir(), app_results_dir())):
        paths += sorted((folder / "budget_masks").glob("*.json")) if (folder / "budget_masks").is_dir() else []
    best, best_mtime = None, -1.0
    for path in paths:
        try:
            data, mtime = json.loads(path.read_text()), path.stat().st_mtime
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("masks"), list) and mtime > best_mtime and (
                path.parent == checkpoint or _names(data, checkpoint)):
            best, best_mtime = data, mtime
    return best


def resolve_manifest(manifest: str) -> Path:
    """A manifest path as results record it (often relative to the repository)."""
    path = Path(str(manifest))
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


@st.cache_data(max_entries=16, show_spinner=False)
def validated_masks(ckpt_key: str, valid_manifest: str, _ckpt: Checkpoint) -> list[dict]:
    """dld_core.recommend.validated_masks on the first clips of a validation manifest (once per model)."""
    from dld_core.recommend import validation_clips
    from dld_core.recommend import DEFAULT_CLIPS, validated_masks as score
    clips, _ = validation_clips(_ckpt, valid_manifest, DEFAULT_CLIPS)
    return score(_ckpt.model, clips)


@st.cache_data(max_entries=64, show_spinner=False)
def mask_evaluation(ckpt_key: str, manifest: str, active: tuple[int, ...], decoder: str, _ckpt: Checkpoint) -> dict:
    """dld_core.recommend.evaluate_mask: one mask on a test set with one decoder ({"wer", "cer", "gflops", ...})."""
    from dld_core.recommend import evaluate_mask
    return evaluate_mask(_ckpt, str(resolve_manifest(manifest)), list(active), [decoder])[decoder]


def eval_sets(checkpoint: Path) -> set[tuple[str, str]]:
    """(test set key, decoder) of every evaluation result of this checkpoint."""
    return {(eval_set_key(d.get("manifest")), str(d.get("decoder") or "greedy")) for _, d in _eval_results(checkpoint)}


def read_eval_results(checkpoint: Path, test_set: Optional[str] = None, decoder: Optional[str] = None
                      ) -> Optional[dict]:
    """The newest evaluation JSON for this checkpoint, or None; optionally only those made on a test set
    (an eval_set_key) and with a decoder ("greedy" when the JSON names none)."""
    best, best_mtime = None, -1.0
    for mtime, data in _eval_results(checkpoint):
        if test_set is not None and eval_set_key(data.get("manifest")) != test_set:
            continue
        if decoder is not None and str(data.get("decoder") or "greedy") != decoder:
            continue
        if mtime > best_mtime:
            best, best_mtime = data, mtime
    return best


def read_bench(num_layers: int, full_gflops: float) -> Optional[dict]:
    """Measured latency of an architecture (`python -m dld_core bench` JSONs: results/bench.json and
    results/*/bench.json), matched by its module count and full-depth GFLOPs (within 1%):
    {"seconds", "threads", "latency_ms": {kept: ms}}, or None."""
    for path in [results_dir() / "bench.json", *sorted(results_dir().glob("*/bench.json"))]:
        try:
            data = json.loads(path.read_text())
            levels = {int(lv["kept"]): lv for lv in data["levels"]}
            full = float(levels[int(num_layers)]["gflops"])
            seconds = float(data.get("seconds", 10.0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if max(levels) == int(num_layers) and abs(full - float(full_gflops)) <= 0.01 * max(full, 1e-9):
            return {"seconds": seconds, "threads": data.get("threads"),
                    "latency_ms": {k: float(lv["latency_ms"]) for k, lv in levels.items() if "latency_ms" in lv}}
    return None


# ------------------------------------------------------------------------------------ layer importance
def samples_key(rows: Sequence[dict]) -> str:
    """Changes when the sample set (paths, texts, files) changes."""
    parts = []
    for r in rows:
        p = Path(r["audio_filepath"])
        try:
            stamp = p.stat().st_mtime_ns
        except OSError:
            stamp = 0
        parts.append(f"{p}|{stamp}|{r.get('text', '')}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


@st.cache_resource
def computed_registry() -> set:
    """Keys of the expensive results already computed (shared by sessions): pages show them at once."""
    return set()


IMPORTANCE_RESAMPLES = 1000     # bootstrap resamples over utterances for the ΔWER intervals (seed 0)


@st.cache_data(max_entries=16, show_spinner=False)
def importance_over_samples(ckpt_key: str, teacher_key: Optional[str], samples_key_: str, criterion: str,
                            _ckpt: Checkpoint, _teacher: Optional[Checkpoint], _rows: Sequence[dict],
                            base_mask: Optional[tuple[bool, ...]] = None,
                            resamples: int = IMPORTANCE_RESAMPLES) -> dict:
    """dld_core.layers.importance_report over the rows' clips: drop-one from `base_mask` (None: full depth)
    with bootstrap intervals of ΔWER, and the greedy drop path from the same mask."""
    from dld_core.audio import load_audio
    from dld_core.layers import importance_report

    clips = [(load_audio(r["audio_filepath"]).samples, str(r.get("text", ""))) for r in _rows]
    teacher = _teacher.model if _teacher is not None else None
    return importance_report(_ckpt.model, teacher, clips, base_active=None if base_mask is None else list(base_mask),
                             criterion=criterion, resamples=resamples, seed=0)


def corpus_dir() -> Path:
    """The built-in corpora (DLD_CORPUS_DIR overrides <repo>/corpus)."""
    return _env_path("DLD_CORPUS_DIR", REPO_ROOT / "corpus")


def importance_sets(present_only: bool = True) -> dict[str, tuple[str, Path]]:
    """Evaluation sets the Layer importance page offers, {key: (label, manifest)}: the sample clips, then the
    test sets of dld_core.eval_sets; only those present on this server unless present_only is False."""
    candidates = {"samples": (SAMPLES_NAME, samples_manifest()),
                  **{s.key: (s.name, s.path(corpus_dir())) for s in EVAL_SETS}}
    return {k: (label, path) for k, (label, path) in candidates.items() if path.is_file() or not present_only}


# How to build each evaluation set that is not on this server (the commands of scripts/make_checkpoints.sh).
EVAL_SET_BUILD = {"synthetic_test": "python -m dld_core synth --out corpus/whisper --hours 5.5 --seed 1",
                  "fsdd_test": "python -m dld_core synth --out corpus/whisper --hours 5.5 --seed 1",
                  "real_dev": "python -m dld_core real-dev --out corpus/real_dev"}


@st.cache_data(max_entries=16, show_spinner=False)
def _manifest_rows(path: str, stamp: int) -> list[dict]:
    from dld_core.audio import load_manifest
    return [r for r in load_manifest(path) if Path(r["audio_filepath"]).is_file()]


def manifest_rows(path: Path) -> list[dict]:
    """A manifest's rows whose audio file exists (absolute paths). Raises OSError / ValueError (one line)."""
    path = Path(path)
    return _manifest_rows(str(path.resolve()), path.stat().st_mtime_ns)
