"""The teaching story of the app's "How DLD works" page, chosen from the models themselves.

Three runs on one clip: (1) the static teacher at full depth, (2) the same teacher with half of its modules
skipped, (3) the DLD student with the same half skipped. The point to make is graceful degradation: run (3)
is visibly and measurably better than run (2). `choose_story` searches the given clips (multi-word ones
only: a one-word clip cannot show a transcript degrading gracefully) and the half masks of
`masks.candidate_masks` (every second module, the first half, whole blocks, a few random ones) for the
pair where the student beats the teacher by the widest margin in both WER and CER, preferring clips the
teacher gets right at full depth. None when no pair shows it: a checkpoint that breaks the story fails the
test that calls this on the shipped models (tests/test_shipped_models.py), not a classroom.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import masks as M
from .inference import featurize, recognize
from .metrics import cer, wer
from .model import DynamicCTCModel
from .text import normalize_text

MIN_WORDS = 3


def _score(reference: str, text: str) -> dict:
    return {"text": text, "wer": float(wer([reference], [text])), "cer": float(cer([reference], [text]))}


def choose_story(teacher: DynamicCTCModel, student: DynamicCTCModel, clips: Sequence, kept: Optional[int] = None,
                 num_random: int = 2, seed: int = 0, min_words: int = MIN_WORDS) -> Optional[dict]:
    """The clip and half mask of the story. clips: (waveform, reference text) pairs (16 kHz float).

    kept: modules in the half mask (default half of them). Returns None when no multi-word clip and mask
    show the student better than the teacher in both WER and CER, else
    {"clip": index into clips, "active": kept indices, "reference": normalised text,
     "teacher_full" / "teacher_half" / "student_half": {"text", "wer", "cer"}, "candidates": masks tried}.
    Raises ValueError when the two models do not have the same gated modules."""
    if teacher.module_names != student.module_names:
        raise ValueError(f"the teacher's modules ({' '.join(teacher.module_names)}) are not the student's "
                         f"({' '.join(student.module_names)}): the story runs one mask on both")
    n = student.num_modules
    k = n // 2 if kept is None else int(kept)
    candidates = M.candidate_masks(n, k, student.config.module_blocks, num_random, seed)
    best, best_rank = None, None
    for index, (wav, text) in enumerate(clips):
        reference = normalize_text(str(text or ""))
        if len(reference.split()) < min_words:
            continue
        wav = np.asarray(getattr(wav, "samples", wav), dtype=np.float32)
        t_feats, s_feats = featurize(teacher, [wav]), featurize(student, [wav])
        t_full = _score(reference, recognize(teacher, features=t_feats).texts[0])
        for active in candidates:
            t_half = _score(reference, recognize(teacher, features=t_feats, active=active).texts[0])
            s_half = _score(reference, recognize(student, features=s_feats, active=active).texts[0])
            if not (s_half["wer"] < t_half["wer"] and s_half["cer"] < t_half["cer"]):
                continue
            # the widest margin in WER and CER, then the teacher's full-depth transcript (step 1 should be
            # right), then the longer sentence
            rank = ((s_half["wer"] - t_half["wer"]) + (s_half["cer"] - t_half["cer"]) + t_full["wer"],
                    -len(reference.split()), index)
            if best_rank is None or rank < best_rank:
                best_rank = rank
                best = {"clip": index, "active": list(active), "reference": reference, "teacher_full": t_full,
                        "teacher_half": t_half, "student_half": s_half, "candidates": len(candidates)}
    return best
