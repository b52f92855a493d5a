"""Model families: one module per family says how its encoder is fed and built.

Every family module (``conformer``, ``wavlm``, ``whisper``) is a :class:`Family`: the Protocol below lists
its hooks, each with one signature for every family (tests/test_model.py checks every module against it).
In short: ``Features(cfg)`` (16 kHz waveforms -> the encoder's input), ``Encoder(cfg)`` (the gated-module
API: embed, layer(i), finish), ``module_names`` / ``module_roles`` (one name and role per gated module),
``dummy_features`` / ``encoder_frames`` / ``frame_rate`` (shapes for FLOPs counting and teacher checks),
``validate``, ``config_from_pretrained`` / ``load_pretrained`` (external weights, or a one-line refusal),
``compatible_teacher`` (whether a teacher's CTC posteriors line up with a student's, frame by frame: KL
views and distillation) and ``gate_choice`` (the gate units a student may be trained with: the Train page).

The whisper family also has Whisper's own text decoder (``whisper_decoder.py``: the model and tokenizer;
``whisper_decoding.py``: ``WhisperSeq2Seq(encoder, decoder, tokenizer).transcribe(wavs, active=mask)``, greedy
and beam search): it attends to the gated encoder's output, so the same layer mask drives it.

Adding a family means adding one module here and its name to ``FAMILIES``. Families share the frame grid
of ``dld_core/frames.py`` and reach one another only through :func:`get_family` (the conformer's
``front_end="whisper"`` borrows the whisper family's ``Features``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

FAMILIES = ("conformer", "wavlm", "whisper")


ROLE_TEXT = {"attention": "self-attention of block {b}", "mlp": "MLP (feed-forward) of block {b}",
             "block": "encoder block {b}"}


def describe_role(block: int, role: str) -> str:
    """What a gated module is, in words: "self-attention of block 2" (block: 0-based)."""
    return ROLE_TEXT.get(role, "gated module").format(b=block + 1)


@dataclass(frozen=True)
class GateChoice:
    """The gate units a student of a family may be trained with (ModelConfig.gate_unit values, each with a
    label) and what the choice means: the Train page offers it."""
    labels: dict[str, str]
    help: str


@runtime_checkable
class Family(Protocol):
    """The interface of a family module (``cfg``: a dld_core.config.ModelConfig of that family)."""

    INPUT: str
    """"log-mel" or "waveform" (SpecAugment applies to log-mel input)."""

    def Features(self, cfg: Any) -> Any:
        """nn.Module: (wavs [B, S] 16 kHz float, wav_lengths [B]) -> (features, lengths); stateless, run without
        grad (log-mel, normalised waveform, ...)."""

    def Encoder(self, cfg: Any) -> Any:
        """nn.Module with the gated-module API the model and the layer views use:
        embed(features, lengths) -> (x [B, T', D], out_lengths [B], context); layer(i, x, context) -> x, gated
        module i, the whole residual update y + f_i(y) (skipping it = not calling it); finish(x) -> x, after
        the last module (e.g. a final norm)."""

    def module_names(self, cfg: Any) -> list[str]:
        """One short display name per gated module (L1..L12, A1 M1 .. A4 M4); their number is the mask length
        everywhere."""

    def module_roles(self, cfg: Any) -> list[tuple[int, str]]:
        """(block index, role) per gated module, role "attention" | "mlp" (a sub-block: only an attention + MLP
        pair makes a block) or "block" (a whole block). Mask presets keep whole blocks (dld_core.masks.preset);
        the app says what a module is."""

    def dummy_features(self, cfg: Any, num_samples: int, device=None) -> tuple[Any, Any]:
        """(features [1, ...], lengths [1]) shaped like Features' output for a clip of num_samples samples
        (zeros; used to count FLOPs on the meta device)."""

    def encoder_frames(self, cfg: Any, num_samples: int) -> int:
        """The encoder's output frames (= CTC frames) for a clip of num_samples samples."""

    def frame_rate(self, cfg: Any) -> float:
        """Encoder output frames per second."""

    def validate(self, cfg: Any) -> None:
        """Family-specific config checks (raise ValueError with one line)."""

    def config_from_pretrained(self, path=None, **overrides) -> Any:
        """A ModelConfig with the dims of pretrained weights at `path` (None / "default": the family's bundled
        model), overrides on top; ValueError where the family has none."""

    def load_pretrained(self, model: Any, source=None) -> str:
        """Initialise the encoder of `model` (a DynamicCTCModel of this family) from pretrained weights at
        `source` (a file or folder; None / "default": the family's bundled model). Returns a one-line
        description of the source; raises dld_core.safe_io.CheckpointError (a ValueError)."""

    def compatible_teacher(self, student_config: Any, teacher_config: Any) -> bool:
        """Whether a teacher of `teacher_config` can teach a student of `student_config` (this family): its
        CTC posteriors line up with the student's frame by frame, so KL(teacher || student) is defined."""

    def gate_choice(self, cfg: Any) -> Optional[GateChoice]:
        """The gate units a student of a `cfg` teacher may choose from; None: one fixed gate per block."""


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (expected one of {', '.join(FAMILIES)})")
    return importlib.import_module(f"{__name__}.{name}")


PROBE_SAMPLES = range(1600, 30 * 16000 + 1, 101)    # clip lengths from 0.1 s to 30 s, in odd steps


def frames_line_up(student_config: Any, teacher_config: Any) -> bool:
    """The default `compatible_teacher`: the two models have the same CTC tokens and the same number of
    output frames for every clip length from 0.1 s to 30 s (e.g. a conformer on Whisper's log-mel with 2x
    subsampling and a Whisper teacher), whatever their families and front ends."""
    if list(student_config.vocab) != list(teacher_config.vocab):
        return False
    student, teacher = get_family(student_config.family), get_family(teacher_config.family)
    return all(student.encoder_frames(student_config, n) == teacher.encoder_frames(teacher_config, n)
               for n in PROBE_SAMPLES)


def compatible_teacher(student_config: Any, teacher_config: Any) -> bool:
    """The student family's `compatible_teacher` hook: whether a teacher can serve this student for KL views
    and distillation (the Importance page, dld_core.layers, dld_core.train)."""
    return get_family(student_config.family).compatible_teacher(student_config, teacher_config)
