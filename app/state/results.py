"""Per-mask results, cached and shared by every session (st.cache_data): a checkpoint's key (app.state.checkpoints),
the clip's content hash and the mask key every entry; the model, clip and reference arguments (leading "_") are
not hashed. The mask is an argument of every call, never state on the shared model. The CTC head's results, and an
encoder-decoder student's text-decoder transcripts (text_decoder_result, keyed by the decoder too)."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Optional, Sequence

import numpy as np
import streamlit as st
import torch

from app.state.paths import resolve_manifest
from dld_core.checkpoint import Checkpoint


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


TEXT_LATENCY_REPEATS = 1     # timed text-decoder runs per (clip, mask, decoder), no warm-up: a toggle decodes once


@st.cache_data(max_entries=512, show_spinner=False)
def text_decoder_result(ckpt_key: str, audio_digest: str, mask: tuple[bool, ...], decoder: str,
                        _ckpt: Checkpoint, _samples: np.ndarray) -> dict[str, Any]:
    """An encoder-decoder student's text-decoder transcript of one clip with the mask (dld_core.seq2seq.
    timed_transcript: search `decoder`, "whisper" greedy or "whisper-beam", in the checkpoint's own input mode,
    input_mode_of) and its latency (the median of TEXT_LATENCY_REPEATS runs: encoder pass + search) with the real-time
    factor. Cached by (checkpoint, audio hash, mask, decoder)."""
    from dld_core.inference import real_time_factor
    from dld_core.seq2seq import input_mode_of, timed_transcript
    result = timed_transcript(_ckpt.model, _samples, _mask_list(mask), decoder, input_mode_of(_ckpt.info),
                              repeats=TEXT_LATENCY_REPEATS, warmup=0)
    return {**result, "latency_runs": TEXT_LATENCY_REPEATS,
            "rtf": real_time_factor(result["latency_ms"], len(_samples))}


def beam_ready(vocab: tuple[str, ...]) -> tuple[bool, str]:
    """(usable, why not): dld_core.decode.beam_status, once per vocabulary, decoder-files folder (the one the
    decoder reads: $DLD_DECODER_DIR or the committed recipe's) and server (it builds and caches the shared
    decoder, ~2 s)."""
    from dld_core.decoder_params import default_decoder_dir
    return _beam_ready(vocab, str(default_decoder_dir()))


@st.cache_resource(ttl=30, show_spinner="Loading the beam decoder (lexicon + word LM)…")
def _beam_ready(vocab: tuple[str, ...], decoder_dir: str) -> tuple[bool, str]:
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


@st.cache_resource
def computed_registry() -> set:
    """Keys of the expensive results already computed (shared by sessions): pages show them at once."""
    return set()


# ------------------------------------------------------- the Budgets card: masks chosen on a validation set
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
