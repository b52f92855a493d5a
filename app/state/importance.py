"""The Layer importance page's data: the evaluation sets it offers (and how to build a missing one), the
cached importance report (dld_core.layers.importance_report) over a set's clips and, for an encoder-decoder
student, the cached token-level drop-one KL of its text decoder (dld_core.seq2seq.token_drop_one_kl)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import streamlit as st

from app.state.paths import corpus_dir, samples_manifest
from app.state.result_files import SAMPLES_NAME
from dld_core.checkpoint import Checkpoint
from dld_core.eval_sets import EVAL_SETS

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


@st.cache_data(max_entries=16, show_spinner=False)
def token_kl_over_samples(ckpt_key: str, samples_key_: str, base_mask: Optional[tuple[bool, ...]],
                          _ckpt: Checkpoint, _rows: Sequence[dict]) -> dict:
    """An encoder-decoder student's token-level drop-one KL (dld_core.seq2seq.token_drop_one_kl) over the rows'
    clips from `base_mask` (None: full depth), teacher-forced on its greedy hypotheses, in the checkpoint's own
    input mode (input_mode_of)."""
    from dld_core.audio import load_audio
    from dld_core.seq2seq import input_mode_of, token_drop_one_kl

    waveforms = [load_audio(r["audio_filepath"]).samples for r in _rows]
    return token_drop_one_kl(_ckpt.model, waveforms, None if base_mask is None else list(base_mask),
                             input_mode_of(_ckpt.info))


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
