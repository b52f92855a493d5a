"""WER / CER (jiwer, after the one text normaliser on both sides) and a word diff for display.

Corpus-level rates: total edits / total reference units. Empty references are allowed: an empty
reference with an empty hypothesis is 0 errors; with a non-empty hypothesis every hypothesis unit is
an insertion. If *all* references are empty the rate is 0.0 when there are no edits and 1.0 otherwise.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import jiwer

from .text import normalize_text

Texts = Union[str, Sequence[str]]


def _pairs(refs: Texts, hyps: Texts) -> tuple[list[str], list[str]]:
    refs = [refs] if isinstance(refs, str) else list(refs)
    hyps = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    return [normalize_text(r) for r in refs], [normalize_text(h) for h in hyps]


def error_counts(refs: Texts, hyps: Texts, unit: str = "word") -> dict[str, int]:
    """{"errors", "substitutions", "deletions", "insertions", "hits", "n"} summed over the pairs."""
    refs, hyps = _pairs(refs, hyps)
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    counts = dict(substitutions=0, deletions=0, insertions=0, hits=0, n=0)
    if refs:
        out = process(refs, hyps)
        counts.update(substitutions=out.substitutions, deletions=out.deletions,
                      insertions=out.insertions, hits=out.hits)
        counts["n"] = out.substitutions + out.deletions + out.hits
    counts["errors"] = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return counts


def error_rate(counts: dict[str, int]) -> float:
    """errors / n from `error_counts` (see the module docstring for empty references)."""
    if counts["n"] == 0:
        return 0.0 if counts["errors"] == 0 else 1.0
    return counts["errors"] / counts["n"]


def wer(refs: Texts, hyps: Texts) -> float:
    """Word error rate as a fraction (0.25 = 25 %)."""
    return error_rate(error_counts(refs, hyps, "word"))


def cer(refs: Texts, hyps: Texts) -> float:
    """Character error rate as a fraction (spaces count as characters)."""
    return error_rate(error_counts(refs, hyps, "char"))


def word_diff(ref: str, hyp: str) -> list[tuple[str, Optional[str], Optional[str]]]:
    """Aligned word pairs (op, ref_word, hyp_word), op in equal/substitute/insert/delete.

    ref_word is None for insertions and hyp_word is None for deletions."""
    ref, hyp = normalize_text(ref), normalize_text(hyp)
    if not ref and not hyp:
        return []
    out = jiwer.process_words(ref, hyp)
    ref_words, hyp_words = out.references[0], out.hypotheses[0]
    diff: list[tuple[str, Optional[str], Optional[str]]] = []
    for chunk in out.alignments[0]:
        r = ref_words[chunk.ref_start_idx:chunk.ref_end_idx]
        h = hyp_words[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "insert":
            diff += [("insert", None, w) for w in h]
        elif chunk.type == "delete":
            diff += [("delete", w, None) for w in r]
        else:
            diff += [(chunk.type, a, b) for a, b in zip(r, h)]
    return diff


# ------------------------------------------------------------------------ per utterance, bootstrap intervals

def utterance_errors(refs: Texts, hyps: Texts, unit: str = "word") -> tuple["np.ndarray", "np.ndarray"]:
    """Per-utterance (errors, reference units) as two int arrays: the pieces of the corpus-level rate
    (errors.sum() / units.sum() is `error_rate(error_counts(refs, hyps))` when units.sum() > 0)."""
    import numpy as np
    refs, hyps = _pairs(refs, hyps)
    errors, units = np.zeros(len(refs), dtype=np.int64), np.zeros(len(refs), dtype=np.int64)
    for i, (r, h) in enumerate(zip(refs, hyps)):
        c = error_counts(r, h, unit)
        errors[i], units[i] = c["errors"], c["n"]
    return errors, units


def bootstrap_delta_rate(base_errors, variant_errors, units, resamples: int = 1000, seed: int = 0,
                         level: float = 0.95) -> list[tuple[float, float]]:
    """Paired percentile-bootstrap intervals over utterances for the change of the corpus-level error rate.

    base_errors [U] and units [U] from `utterance_errors` of the base system; variant_errors [R, U] (or [U])
    for R variants on the same utterances. Each resample draws U utterances with replacement (the same draws
    for every variant, from a generator seeded by `seed`) and computes
    (sum variant errors - sum base errors) / sum units. Returns one (low, high) per variant: the
    (1 - level) / 2 and (1 + level) / 2 quantiles."""
    import numpy as np
    base = np.asarray(base_errors, dtype=np.float64)
    var = np.atleast_2d(np.asarray(variant_errors, dtype=np.float64))
    units = np.asarray(units, dtype=np.float64)
    if base.ndim != 1 or var.shape[1] != base.shape[0] or units.shape != base.shape:
        raise ValueError("bootstrap needs base errors, variant errors and units over the same utterances")
    if base.size == 0:
        raise ValueError("bootstrap needs at least one utterance")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError("bootstrap needs resamples >= 1 and 0 < level < 1")
    idx = np.random.default_rng(seed).integers(0, base.size, size=(resamples, base.size))
    n = units[idx].sum(axis=1)                                            # [B]

    def rate(errors):                                                     # error_rate, per resample
        e = errors[idx].sum(axis=1)
        return np.where(n > 0, e / np.maximum(n, 1), (e > 0).astype(np.float64))

    base_rate, out = rate(base), []
    for row in var:
        lo, hi = np.quantile(rate(row) - base_rate, [(1 - level) / 2, (1 + level) / 2])
        out.append((float(lo), float(hi)))
    return out
