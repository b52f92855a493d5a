"""Per-module views of one utterance: drop-one KL, logit-lens depth KL, layer importance, greedy drop paths.

All KLs are KL(teacher || student) per output frame: sum_v p_t (log p_t - log p_s).
`teacher` is either a model (run at full depth on the same features) or its log-probs [T', V] / [1, T', V].
Single utterances: features [1, T, n_mels] / [1, S] (or without the batch dim), lengths [1] (or None).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import masks as M
from .families import compatible_teacher, get_family
from .inference import decoder_for, emissions, featurize, utterance
from .losses import kl_per_frame
from .metrics import bootstrap_delta_rate, error_counts, error_rate, utterance_errors
from .model import DynamicCTCModel, ModelOutput, encode


def _one(model: DynamicCTCModel, features: torch.Tensor, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    batched = get_family(model.config.family).dummy_features(model.config, 1600)[0].dim()
    if features.dim() == batched - 1:
        features = features.unsqueeze(0)
    if features.shape[0] != 1:
        raise ValueError("layer views take one utterance (batch size 1)")
    if lengths is None:
        lengths = torch.tensor([features.shape[1]])
    return features, torch.as_tensor(lengths, device=features.device).reshape(1)


def _teacher_log_probs(teacher, features, lengths, frames: Optional[int] = None) -> torch.Tensor:
    if isinstance(teacher, torch.nn.Module):
        lp = utterance(emissions(teacher, features=(features, lengths)))
    else:
        lp = torch.as_tensor(teacher)
        lp = lp[0] if lp.dim() == 3 else lp
    if frames is not None and lp.shape[0] != frames:
        raise ValueError(f"teacher has {lp.shape[0]} frames but the student {frames}: "
                         "they need the same front end (model family and frame rate)")
    return lp.float()


def reference_log_probs(teacher_lp, own_lp, frames: int) -> tuple[torch.Tensor, str]:
    """The reference of the KL views: the teacher's log-probs [T', V] when it has the student's frame
    rate (same number of frames), else the student's own full output. Returns (log-probs, "teacher" |
    "student")."""
    if teacher_lp is not None and np.asarray(teacher_lp).shape[0] == frames:
        return torch.as_tensor(np.asarray(teacher_lp, dtype=np.float32)), "teacher"
    return torch.as_tensor(np.asarray(own_lp, dtype=np.float32)), "student"


def drop_one_log_probs(student: DynamicCTCModel, features, lengths=None, base_active=None
                       ) -> tuple[torch.Tensor, list[int]]:
    """Log-probs of the base mask and of the base mask with each active module removed: [1 + A, T', V]
    and the A removed module indices (row 1 + r removes module removed[r]).

    The prefix is shared: at depth j every variant that has already skipped its module (plus the base
    path) runs module j together in one batch, and variant j starts as a copy of the base state before
    module j. Work is N + N(N-1)/2 module-rows instead of N^2, in N batched calls (the model's gate loop,
    model.encode, with one row more after every active module).
    """
    features, lengths = _one(student, features, lengths)
    removed = []

    def fork(j, on, before, after):              # row 0: the base path; a new last row: base without module j
        if not on:
            return after
        removed.append(j)
        return torch.cat([after, before[:1]])
    with torch.inference_mode():
        rows, out_lengths = encode(student.encoder, features, lengths,
                                   M.as_bools(base_active, student.num_modules), fork)
        return student.log_probs(rows)[:, : int(out_lengths[0])], removed             # [1 + A, T', V]


def drop_one_kl(student: DynamicCTCModel, teacher, features, lengths=None, base_active=None,
                dropped: str = "base") -> torch.Tensor:
    """[N, T'] KL(teacher || student with module i removed from base_active), one row per module.

    Rows of modules already dropped in base_active hold the KL of base_active itself (dropped="base")
    or NaN (dropped="nan")."""
    features, lengths = _one(student, features, lengths)
    lp, removed = drop_one_log_probs(student, features, lengths, base_active)
    with torch.inference_mode():
        kl = kl_per_frame(_teacher_log_probs(teacher, features, lengths, lp.shape[1]), lp)   # [1 + A, T']
    fill = kl[0] if dropped == "base" else torch.full_like(kl[0], math.nan)
    out = fill.expand(student.num_modules, -1).clone()
    out[removed] = kl[1:]
    return out


def depth_kl(student: DynamicCTCModel, teacher, features, lengths=None, active=None,
             output: Optional[ModelOutput] = None) -> torch.Tensor:
    """[N, T'] logit lens: KL(teacher || CTC head on the hidden state after module i) per frame.
    Dropped modules pass their input through, so their row repeats the previous one.
    output: this utterance's student(features, lengths, active, return_hidden=True), to reuse instead of
    running the student again (then `active` is not used)."""
    features, lengths = _one(student, features, lengths)
    with torch.inference_mode():
        if output is None:
            output = emissions(student, features=(features, lengths), active=active, return_hidden=True)
        elif output.hidden is None:
            raise ValueError("depth_kl needs an output computed with return_hidden=True")
        frames = int(output.lengths[0])
        lp = student.log_probs(torch.cat(output.hidden))[:, :frames]                 # [N, T', V]
        return kl_per_frame(_teacher_log_probs(teacher, features, lengths, frames), lp)


# --------------------------------------------------------------------------------------------
# many clips: layer importance, greedy drop path, best mask for a budget

def _clips(student: DynamicCTCModel, teacher, clips) -> list[tuple]:
    """(features, lengths, teacher log-probs or None, reference or None) per clip.
    A clip is a waveform, an (waveform, text) pair or an object with .samples (AudioClip)."""
    if isinstance(teacher, DynamicCTCModel) and not compatible_teacher(student.config, teacher.config):
        raise ValueError(f"this {teacher.config.family} teacher cannot teach the {student.config.family} student: "
                         "their CTC frames do not line up (dld_core.families.compatible_teacher)")
    prepared = []
    for clip in clips:
        wav, text = clip if isinstance(clip, (tuple, list)) and len(clip) == 2 else (clip, None)
        wav = getattr(wav, "samples", wav)
        wav = np.asarray(wav, dtype=np.float32)
        feats, lengths = featurize(student, [wav])
        if isinstance(teacher, torch.nn.Module):           # the teacher on its own front end
            t_lp = utterance(emissions(teacher, [wav])).float()
        else:
            t_lp = None if teacher is None else _teacher_log_probs(teacher, feats, lengths)
        prepared.append((feats, lengths, t_lp, text))
    if teacher is None and all(c[3] is None for c in prepared):
        raise ValueError("need a teacher (for KL) or reference texts (for WER)")
    return prepared


def _score(prepared, per_clip_log_probs, decode) -> tuple[list, list]:
    """WER and frame-weighted mean KL for each of R variants; per_clip_log_probs[c] is [R, T', V]."""
    wers, kls, _ = _score_detail(prepared, per_clip_log_probs, decode)
    return wers, kls


def _score_detail(prepared, per_clip_log_probs, decode, per_utterance: bool = False) -> tuple[list, list, Optional[tuple]]:
    """`_score`, plus (per_utterance=True) the per-utterance word errors [R, U] and reference words [U] of
    the clips with a reference (None without references)."""
    rows = per_clip_log_probs[0].shape[0]
    kl_sum, frames = torch.zeros(rows), 0
    refs, hyps = [], [[] for _ in range(rows)]
    for (_, _, t_lp, text), lp in zip(prepared, per_clip_log_probs):
        if t_lp is not None:
            if t_lp.shape[0] != lp.shape[1]:
                raise ValueError(f"teacher has {t_lp.shape[0]} frames but the student {lp.shape[1]}: "
                                 "they need the same front end (model family and frame rate)")
            kl_sum += kl_per_frame(t_lp, lp).sum(-1)
            frames += lp.shape[1]
        if text is not None:
            refs.append(text)
            for r, h in enumerate(decode(lp, None)):
                hyps[r].append(h)
    wers = [error_rate(error_counts(refs, h)) if refs else None for h in hyps]
    kls = [float(k) / frames if frames else None for k in kl_sum]
    detail = None
    if per_utterance and refs:
        counts = [utterance_errors(refs, h) for h in hyps]
        detail = (np.stack([c[0] for c in counts]), counts[0][1])
    return wers, kls, detail


def _importance(student, prepared, base, resamples: int = 0, seed: int = 0, level: float = 0.95,
                decoder: str = "greedy") -> dict:
    per_clip, removed = [], []
    for feats, lengths, _, _ in prepared:
        lp, removed = drop_one_log_probs(student, feats, lengths, base)
        per_clip.append(lp)
    wers, kls, detail = _score_detail(prepared, per_clip, decoder_for(student, decoder),
                                      per_utterance=resamples > 0)
    n = student.num_modules
    out = {"base_active": [i for i in range(n) if base[i]], "base_wer": wers[0], "base_kl": kls[0],
           "wer": [None] * n, "kl": [None] * n, "delta_wer": [None] * n, "delta_kl": [None] * n}
    for r, i in enumerate(removed, start=1):
        out["wer"][i], out["kl"][i] = wers[r], kls[r]
        out["delta_wer"][i] = None if wers[r] is None else wers[r] - wers[0]
        out["delta_kl"][i] = None if kls[r] is None else kls[r] - kls[0]
    if resamples > 0:
        out["delta_wer_ci"] = [None] * n
        out["ci_level"], out["resamples"] = level, int(resamples)
        if detail is not None and removed:
            errors, words = detail
            intervals = bootstrap_delta_rate(errors[0], errors[1:], words, resamples, seed, level)
            for i, ci in zip(removed, intervals):
                out["delta_wer_ci"][i] = ci
    return out


def layer_importance(student: DynamicCTCModel, teacher, clips, base_active=None, resamples: int = 0,
                     seed: int = 0, level: float = 0.95) -> dict:
    """Effect of removing each active module from base_active, over clips.

    Returns {"base_active": kept indices, "base_wer", "base_kl", "wer", "kl", "delta_wer", "delta_kl"}:
    per-module lists (None for modules already dropped, or when there is no teacher / no references).
    WER is corpus-level over the clips with a reference; KL is the mean over all frames.
    resamples > 0 adds "delta_wer_ci": per module a (low, high) `level` interval of ΔWER from a paired
    bootstrap over utterances (metrics.bootstrap_delta_rate, seeded by `seed`), None where ΔWER is None."""
    return _importance(student, _clips(student, teacher, clips), M.as_bools(base_active, student.num_modules),
                       resamples, seed, level)


def _key(result: dict, i: int, criterion: str):
    kl = result["kl"][i] if result["kl"][i] is not None else math.inf
    wer = result["wer"][i] if result["wer"][i] is not None else math.inf
    return (wer, kl) if criterion == "wer" else (kl, wer)


def greedy_drop_path(student: DynamicCTCModel, teacher, clips, start_active=None, criterion: str = "kl",
                     min_kept: int = 1) -> list[dict]:
    """Drop modules one at a time, each time the one whose removal gives the lowest KL (criterion="kl")
    or WER (criterion="wer", ties broken by KL). Returns the steps, the start mask first:
    [{"kept": k, "dropped": i or None, "active": kept indices, "wer": w, "kl": kl}, ...]."""
    if criterion not in ("kl", "wer"):
        raise ValueError("criterion must be 'kl' or 'wer'")
    prepared = _clips(student, teacher, clips)
    return _greedy(student, prepared, M.as_bools(start_active, student.num_modules), criterion, min_kept)


def _greedy(student, prepared, mask: list[bool], criterion: str, min_kept: int = 1,
            first: Optional[dict] = None, decoder: str = "greedy") -> list[dict]:
    """greedy_drop_path on prepared clips; `first` is the drop-one result of the start mask if known."""
    mask = list(mask)
    result = first if first is not None else _importance(student, prepared, mask, decoder=decoder)
    steps = [{"kept": sum(mask), "dropped": None, "active": result["base_active"],
              "wer": result["base_wer"], "kl": result["base_kl"]}]
    while sum(mask) > min_kept:
        i = min((j for j in range(len(mask)) if mask[j]), key=lambda j: _key(result, j, criterion))
        wer, kl = result["wer"][i], result["kl"][i]
        mask[i] = False
        steps.append({"kept": sum(mask), "dropped": i, "active": [j for j, on in enumerate(mask) if on],
                      "wer": wer, "kl": kl})
        if sum(mask) > min_kept:
            result = _importance(student, prepared, mask, decoder=decoder)
    return steps


def importance_report(student: DynamicCTCModel, teacher, clips, base_active=None, criterion: str = "kl",
                      resamples: int = 1000, seed: int = 0, level: float = 0.95, decoder: str = "greedy") -> dict:
    """layer_importance (with bootstrap intervals) and greedy_drop_path from the same mask, over clips
    prepared once: {"importance": ..., "path": ...}; WER from the given decoder ("greedy" or "beam")."""
    if criterion not in ("kl", "wer"):
        raise ValueError("criterion must be 'kl' or 'wer'")
    prepared = _clips(student, teacher, clips)
    mask = M.as_bools(base_active, student.num_modules)
    if not any(mask):
        raise ValueError("the mask keeps no module: keep at least one")
    importance = _importance(student, prepared, mask, resamples, seed, level, decoder)
    return {"importance": importance,
            "path": _greedy(student, prepared, mask, criterion, first=importance, decoder=decoder)}


def best_mask_for_budget(student: DynamicCTCModel, teacher, clips, kept: int, num_candidates: int = 8,
                         seed: int = 0, criterion: str = "kl", path: Optional[Sequence[dict]] = None,
                         fits: Optional[Callable[[list[int]], bool]] = None) -> Optional[dict]:
    """Best of a few candidate masks keeping `kept` modules: the greedy path's mask (if `path` is given) and
    masks.candidate_masks (every_other, first_k, whole blocks of the model's family, `num_candidates` random
    ones). Returns {"active", "wer", "kl", "candidates"}.
    fits: only candidates (kept indices) for which it is true compete, e.g. those within a GFLOPs budget
    (dld_core/deploy.py); None when no candidate fits."""
    candidates = M.candidate_masks(student.num_modules, kept, student.config.module_blocks, num_candidates, seed,
                                   first=[s["active"] for s in path or [] if s["kept"] == kept])
    if fits is not None:
        candidates = [c for c in candidates if fits(c)]
        if not candidates:
            return None
    prepared = _clips(student, teacher, clips)
    per_clip = []
    for feats, lengths, _, _ in prepared:
        per_clip.append(torch.stack([utterance(emissions(student, features=(feats, lengths), active=mask))
                                     for mask in candidates]))
    wers, kls = _score(prepared, per_clip, decoder_for(student))
    scored = [{"active": m, "wer": w, "kl": k} for m, w, k in zip(candidates, wers, kls)]
    return {**M.best_k(scored, criterion), "candidates": scored}
