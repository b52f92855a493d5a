"""The teaching story of the app's "How DLD works" page, chosen from the models themselves.

Three runs on one clip: (1) the static teacher at full depth, (2) the same teacher with half of its modules
skipped, (3) the DLD student with the same half skipped. The point to make is graceful degradation: run (3)
is visibly and measurably better than run (2). The search over clips and half masks is one (`_search`): the given
clips (multi-word ones only: a one-word clip cannot show a transcript degrading gracefully) and the half masks of
`masks.candidate_masks` (every second module, the first half, whole blocks, a few random ones; with `protected`,
only those that keep the modules the student was trained never to drop), for the pair where the student beats the
teacher by the widest margin in both WER and CER, preferring clips the teacher gets right at full depth.

Two stories, one per kind of student:

* `choose_story` (a CTC student): the teacher is its CTC teacher checkpoint; every run is the CTC head's greedy
  transcript (dld_core.inference).
* `choose_text_story` (an encoder-decoder student, dld_core.seq2seq): the teacher is the unchanged pretrained Whisper
  the student was distilled from (`pretrained_whisper`: its encoder and text decoder); every run is the text
  decoder's greedy transcript in the student's own input mode (seq2seq.decode_options / text_model), scored on its
  spoken form (numbers as words) like every text-decoder result.

None when no pair shows it: a checkpoint that breaks the story fails the test that calls this on the shipped models
(tests/test_shipped_models.py), not a classroom.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import masks as M
from .inference import featurize, recognize
from .metrics import cer, wer
from .model import DynamicCTCModel
from .text import normalize_text

MIN_WORDS = 3


def _score(reference: str, text: str, scored: Optional[str] = None) -> dict:
    """{"text", "wer", "cer"}: `text` as shown, WER / CER of `scored` (default: the text itself)."""
    scored = text if scored is None else scored
    return {"text": text, "wer": float(wer([reference], [scored])), "cer": float(cer([reference], [scored]))}


def half_masks(n: int, kept: Optional[int] = None, blocks=None, protected=None, num_random: int = 2,
               seed: int = 0) -> list[list[int]]:
    """The story's candidate half masks (kept-index lists): masks.candidate_masks with `kept` modules (default
    half), those keeping every `protected` module (any masks.as_bools mask; None: no constraint) when some do."""
    k = n // 2 if kept is None else int(kept)
    candidates = M.candidate_masks(n, k, blocks, num_random, seed)
    need = set(M.kept(protected, n)) if protected is not None and any(M.as_bools(protected, n)) else set()
    keeping = [c for c in candidates if need <= set(c)]
    return keeping or candidates


def _search(clips: Sequence, candidates: Sequence[Sequence[int]], min_words: int, prepare: Callable,
            teacher_full: Callable, teacher_half: Callable, student_half: Callable,
            fallback: bool = False) -> Optional[dict]:
    """The story's pair. For each multi-word clip (its reference normalised), prepare(waveform) once (e.g. the
    models' features), then the three runs, each a score dict (_score): teacher_full(prepared, reference),
    teacher_half / student_half(prepared, reference, kept indices) for every candidate. Returns the best pair where
    the student beats the teacher in both WER and CER (fallback: the best pair even when none does)."""
    best, best_rank = None, None
    for index, (wav, text) in enumerate(clips):
        reference = normalize_text(str(text or ""))
        if len(reference.split()) < min_words:
            continue
        prepared = prepare(np.asarray(getattr(wav, "samples", wav), dtype=np.float32))
        t_full = teacher_full(prepared, reference)
        for active in candidates:
            t_half = teacher_half(prepared, reference, active)
            s_half = student_half(prepared, reference, active)
            ahead = s_half["wer"] < t_half["wer"] and s_half["cer"] < t_half["cer"]
            if not (ahead or fallback):
                continue
            # the student ahead first, then the widest margin in WER and CER, then the teacher's full-depth
            # transcript (step 1 should be right), then the longer sentence
            rank = (not ahead, (s_half["wer"] - t_half["wer"]) + (s_half["cer"] - t_half["cer"]) + t_full["wer"],
                    -len(reference.split()), index)
            if best_rank is None or rank < best_rank:
                best_rank = rank
                best = {"clip": index, "active": list(active), "reference": reference, "teacher_full": t_full,
                        "teacher_half": t_half, "student_half": s_half, "candidates": len(candidates),
                        "student_ahead": ahead}
    return best


def choose_story(teacher: DynamicCTCModel, student: DynamicCTCModel, clips: Sequence, kept: Optional[int] = None,
                 num_random: int = 2, seed: int = 0, min_words: int = MIN_WORDS, protected=None) -> Optional[dict]:
    """The clip and half mask of the CTC story. clips: (waveform, reference text) pairs (16 kHz float).

    kept: modules in the half mask (default half of them); protected: the modules every candidate keeps (see
    half_masks). Returns None when no multi-word clip and mask show the student better than the teacher in both
    WER and CER, else
    {"clip": index into clips, "active": kept indices, "reference": normalised text,
     "teacher_full" / "teacher_half" / "student_half": {"text", "wer", "cer"}, "candidates": masks tried,
     "student_ahead": True}.
    Raises ValueError when the two models do not have the same gated modules."""
    if teacher.module_names != student.module_names:
        raise ValueError(f"the teacher's modules ({' '.join(teacher.module_names)}) are not the student's "
                         f"({' '.join(student.module_names)}): the story runs one mask on both")
    candidates = half_masks(student.num_modules, kept, student.config.module_blocks, protected, num_random, seed)
    ctc = lambda model, feats, active=None: recognize(model, features=feats, active=active).texts[0]  # noqa: E731
    return _search(clips, candidates, min_words, lambda wav: (featurize(teacher, [wav]), featurize(student, [wav])),
                   lambda f, ref: _score(ref, ctc(teacher, f[0])),
                   lambda f, ref, active: _score(ref, ctc(teacher, f[0], active)),
                   lambda f, ref, active: _score(ref, ctc(student, f[1], active)))


# ------------------------------------------------------------------------------- an encoder-decoder student

def pretrained_source(info: dict) -> str:
    """The pretrained Whisper an encoder-decoder student started from and was distilled from: its config.json's
    train.pretrained ("default", the pinned tiny.en, when it records none)."""
    return str((info.get("train") or {}).get("pretrained") or "default")


def pretrained_name(source: str) -> str:
    """How people call that Whisper: "Whisper tiny.en" for the pinned default, else "Whisper (<folder name>)"."""
    from .pretrained import is_default_source
    return "Whisper tiny.en" if is_default_source(source) else f"Whisper ({Path(str(source)).name})"


def pretrained_whisper(source: str):
    """That Whisper unchanged (encoder, text decoder, tokenizer; a WhisperSeq2Seq in eval mode, `source` as
    pretrained_source gives it): the text story's teacher. Raises CheckpointError / OSError / ValueError when its
    weights cannot be read here."""
    from .families.whisper_decoding import WhisperSeq2Seq
    return WhisperSeq2Seq.from_pretrained(source).requires_grad_(False)


def _text_score(reference: str, text: str) -> dict:
    """A text decoder's run: Whisper's text as shown, WER / CER of its spoken form (spoken_text), "spoken"."""
    from .families.whisper_decoding import spoken_text
    spoken = spoken_text(text)
    return {**_score(reference, text, spoken), "spoken": spoken}


@torch.inference_mode()
def choose_text_story(student: DynamicCTCModel, pretrained, clips: Sequence, mode: str = "padded",
                      kept: Optional[int] = None, num_random: int = 2, seed: int = 0, min_words: int = MIN_WORDS,
                      protected=None, fallback: bool = False) -> Optional[dict]:
    """The clip and half mask of the story of an encoder-decoder student (seq2seq.has_text_decoder): the three runs
    are the text decoder's greedy transcripts (seq2seq.decode_options("whisper"), the length guard and repetition
    stop on) in input `mode` (the student's own: seq2seq.input_mode_of), (1) of `pretrained` (the unchanged Whisper
    it was distilled from, pretrained_whisper) at full depth, (2) of `pretrained` with the half mask, (3) of the
    student with the same mask. clips, kept, protected: as choose_story.

    Returns choose_story's dict, each run with "spoken" (the text WER / CER are counted on), and "mode"; None when
    no pair shows the student ahead, unless `fallback` (then the pair where it comes closest, "student_ahead"
    False). Raises ValueError when the student has no text decoder or other gated modules than `pretrained`."""
    from .seq2seq import decode_options, text_model
    text = text_model(student)                 # ValueError without a text decoder
    if list(text.encoder.modules_at) != list(pretrained.encoder.modules_at):
        raise ValueError(f"the pretrained Whisper has {pretrained.num_modules} gated modules, the student "
                         f"{student.num_modules} ({' '.join(student.module_names)}): the story runs one mask on both")
    student.eval()
    options = decode_options("whisper")
    run = lambda model, wav, active=None: model.transcribe([wav], active, mode, options)[0].text  # noqa: E731
    candidates = half_masks(student.num_modules, kept, student.config.module_blocks, protected, num_random, seed)
    found = _search(clips, candidates, min_words, lambda wav: wav,
                    lambda wav, ref: _text_score(ref, run(pretrained, wav)),
                    lambda wav, ref, active: _text_score(ref, run(pretrained, wav, active)),
                    lambda wav, ref, active: _text_score(ref, run(text, wav, active)), fallback=fallback)
    return None if found is None else {**found, "mode": mode}
