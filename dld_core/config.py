"""Configuration dataclasses, serialised to JSON next to the weights."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .families import FAMILIES, get_family


RECIPES = ("teacher", "ld", "dld")
OBJECTIVES = ("ctc", "seq2seq")
STUDENT_INPUT_MODES = ("padded", "clip")   # a seq2seq student's encoder input (dld_core/families/whisper_decoding.py)
RECIPE_LABELS = {"teacher": "Teacher", "ld": "LD", "dld": "DLD"}       # how the app and reports name them


def option(default, help: str, flag: Optional[str] = None, choices=None, cli: bool = True):
    """A config field that is also a command-line option of `train` (dld_core/cli.py generates them):
    the default lives here and nowhere else."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, "flag": flag, "choices": choices, "cli": cli})


@dataclass
class ModelConfig:
    family: str = option("conformer", "model family (see dld_core/families)", choices=FAMILIES)
    n_mels: int = option(80, "log-mel bins", cli=False)
    d_model: int = option(144, "model width")
    n_layers: int = option(12, "encoder layers (whisper: blocks)", flag="--layers")
    n_heads: int = option(4, "attention heads", flag="--heads")
    ffn_dim: int = option(0, "feed-forward width (0 = 4 x d-model)", flag="--ffn")
    conv_kernel: int = option(15, "conformer depthwise kernel", flag="--kernel")
    dropout: float = option(0.1, "dropout")
    subsampling: int = option(4, "conformer: 4 (40 ms frames) or 2 (20 ms; for dense character CTC)", choices=(2, 4))
    pos_enc: str = option("none", "conformer: absolute position encoding after subsampling",
                          choices=("none", "sinusoidal"))
    front_end: str = option("logmel", "conformer: its own log-mel, or Whisper's (normalised, 3 zero frames each "
                            "side: with 2x subsampling its frames line up with a Whisper teacher's)",
                            choices=("logmel", "whisper"))
    vocab: list[str] = option(lambda: list(CHAR_VOCAB), "CTC tokens, blank first", cli=False)
    # wavlm family only: CNN feature extractor (channels, kernel, stride) and relative position buckets
    extractor_layers: list[list[int]] = option(
        lambda: [[64, 10, 5], [64, 3, 2], [64, 3, 2], [64, 3, 2], [64, 3, 2], [64, 2, 2], [64, 2, 2]],
        "wavlm: CNN layers (channels, kernel, stride); 20 ms frames", cli=False)
    num_buckets: int = option(320, "wavlm: relative position buckets", cli=False)
    max_distance: int = option(800, "wavlm: relative position distance", cli=False)
    pos_conv_kernel: int = option(32, "wavlm: positional convolution kernel", cli=False)
    pos_conv_groups: int = option(4, "wavlm: positional convolution groups", cli=False)
    gate_unit: str = option("sub_block", "whisper: gate attention and MLP sub-blocks separately (A1 M1 ..) "
                            "or whole blocks (B1 ..)", choices=("sub_block", "block"))
    max_frames: int = option(1500, "whisper: length of the position table (1500 frames = 30 s)", cli=False)
    sub_blocks: list[str] = option(list, "whisper: the sub-blocks each block holds, 'AM', 'A', 'M' or '' (a static "
                                   "sub-network from dld_core/deploy.py); empty = every block whole", cli=False)
    decoder: dict = option(dict, "whisper: Whisper's text decoder on the encoder output (an encoder-decoder student, "
                           "TrainConfig.objective seq2seq): its dims n_vocab, n_ctx, n_layers, n_heads, ffn_dim (its "
                           "width is d_model); empty = a CTC model", cli=False)
    pinned_embedding: bool = option(False, "seq2seq: the text decoder's token embedding (tied to its output "
                                    "projection: 19.9 M of tiny.en's parameters) stays the pinned tiny.en's, frozen "
                                    "and not stored in the checkpoint (read from the package when loaded)")

    def __post_init__(self):
        if self.ffn_dim == 0 and isinstance(self.d_model, int):
            self.ffn_dim = 4 * self.d_model

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def validate(self) -> None:
        family = get_family(self.family)          # raises on an unknown family
        for name in ("d_model", "n_layers", "n_heads", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model config field {name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if len(self.vocab) < 2 or self.vocab[0] != "<blank>" or len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab must start with '<blank>' and hold unique tokens")
        for name, empty in (("sub_blocks", []), ("decoder", {}), ("pinned_embedding", False)):
            if getattr(self, name) != empty and self.family != "whisper":
                raise ValueError(f"{name} is a whisper-family field (this model is {self.family!r})")
        family.validate(self)

    @property
    def module_names(self) -> list[str]:
        """One display name per gated module; their number is the length of every layer mask."""
        return get_family(self.family).module_names(self)

    @property
    def num_modules(self) -> int:
        return len(self.module_names)

    @property
    def module_roles(self) -> list[tuple[int, str]]:
        """(block index, "attention" | "mlp" | "block") per gated module (the family's module_roles)."""
        return get_family(self.family).module_roles(self)

    @property
    def module_blocks(self) -> list[int]:
        """The block each gated module belongs to (an attention and an MLP sub-block share one)."""
        return [b for b, _ in self.module_roles]


# ModelConfig fields that change no weight: a student may differ from its teacher in these and still start
# from the teacher's weights (dropout; which residual branches share a gate).
NON_WEIGHT_FIELDS = ("dropout", "gate_unit")


def same_weights(a: ModelConfig, b: ModelConfig) -> bool:
    """True when models of the two configs have the same parameters (names and shapes)."""
    return a == dataclasses.replace(b, **{f: getattr(a, f) for f in NON_WEIGHT_FIELDS})


CHAR_VOCAB = ("<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz")


@dataclass
class TrainConfig:
    recipe: str = option("teacher", "teacher (static), ld (layer dropping) or dld (ld + distillation)",
                         choices=RECIPES)
    epochs: int = option(10, "epochs")
    lr: float = option(2e-3, "peak learning rate (the CTC head; the encoder too unless --encoder-lr)")
    weight_decay: float = option(1e-2, "AdamW weight decay")
    warmup_steps: int = option(200, "linear warm-up steps, then cosine decay", flag="--warmup")
    grad_clip: float = option(5.0, "gradient norm clip")
    batch_seconds: float = option(120.0, "audio seconds per batch (length-bucketed)")
    batch_clips: int = option(0, "at most this many clips per batch (0 = no limit; seq2seq: 0 = 32, since every clip "
                              "costs the text decoder 1500 encoder frames however short it is)")
    keep_prob: float = option(0.5, "ld / dld: Bernoulli probability that a module runs")
    keep_probs: str = option("", "ld / dld: per-module keep probabilities, NAME=P pairs (e.g. A2=0.6,M3=0.9); "
                             "modules not named use --keep-prob")
    keep_prob_start: float = option(0.0, "ld / dld: keep-probability schedule: every keep probability starts here "
                                    "and moves linearly to its own value by half of training (0 = constant)")
    kd_lambda: float = option(1.0, "dld: weight of KL(teacher || student)", flag="--lambda")
    kd_tau: float = option(1.0, "dld: distillation temperature", flag="--tau")
    init_from_teacher: bool = option(False, "start the student from the teacher's weights")
    pretrained: str = option("", "initialise the encoder from pretrained weights: 'default' (the family's "
                             "bundled model) or a folder (whisper: CTranslate2 or Hugging Face; seq2seq: a "
                             "CTranslate2 folder, 'default' unless given)")
    encoder_lr: float = option(0.0, "encoder learning rate when fine-tuning (0 = --lr)")
    protected: str = option("", "ld / dld: modules that are never dropped (names or 0-based indices, e.g. A1)")
    spec_augment: bool = option(True, "SpecAugment on log-mel input")
    freq_masks: int = option(2, "SpecAugment frequency masks")
    freq_mask_width: int = option(15, "SpecAugment frequency mask width")
    time_masks: int = option(4, "SpecAugment time masks")
    time_mask_width: int = option(20, "SpecAugment time mask width")
    objective: str = option("ctc", "ctc: the CTC head; seq2seq (whisper family, ld / dld): Whisper's text decoder too, "
                            "--ce-weight x cross-entropy on the reference's Whisper tokens + --ctc-weight x CTC (+ for "
                            "dld --lambda x tau^2 x KL to the unchanged pretrained Whisper's token posteriors, on "
                            "--teacher-input-mode input, and --kd-states x the distance to its encoder's output); the decoder, its tokenizer and that teacher come from --pretrained "
                            "(default: the bundled tiny.en)", choices=OBJECTIVES)
    ctc_weight: float = option(0.3, "seq2seq: weight of the encoder's CTC loss next to the decoder's cross-entropy")
    ce_weight: float = option(1.0, "seq2seq: weight of the decoder's cross-entropy on the reference tokens (with it and "
                              "the token KL at 0, training runs no text decoder)")
    kd_states: float = option(0.0, "seq2seq dld: weight of encoder-state distillation: the mean squared distance of the "
                              "student's encoder output under its mask from the unchanged teacher encoder's, on the "
                              "same clean input in the student's input mode (clip: the clip's frames and the padding "
                              "tail, each averaged)")
    input_mode: str = option("padded", "seq2seq: the student's encoder input: padded (30 s, as Whisper was trained) or "
                             "clip (the clip, then the encoder output of zero frames up to 30 s)",
                             choices=STUDENT_INPUT_MODES)
    teacher_input_mode: str = option("padded", "seq2seq dld: the token teacher's input: padded (30 s, as Whisper was "
                                     "trained) or clip (the clip, then the output of zero frames: its encoder runs "
                                     "on the clip alone, several times cheaper for short clips)",
                                     choices=STUDENT_INPUT_MODES)
    freeze_decoder: bool = option(False, "seq2seq: keep the text decoder's pretrained weights (train encoder and CTC "
                                  "head only)")
    decoder_lr: float = option(0.0, "seq2seq: the text decoder's learning rate (0 = the encoder's)")
    kd_top_k: int = option(0, "seq2seq dld: 0 = KL over the whole vocabulary, the teacher run every step; K > 0 = "
                           "the teacher's K most likely tokens (at --tau) and the rest's mass, cached per batch after "
                           "the first epoch (no teacher pass after it)")
    sandwich: bool = option(False, "ld / dld: every step also trains the full-depth network on the same batch (the "
                            "sandwich rule of slimmable networks: its loss is added to the gated one; one process only)")
    seed: int = option(0, "random seed (batches, gates, init)")
    max_steps: int = option(0, "stop after this many steps (0 = no limit; smoke runs)")

    def __post_init__(self):
        if self.objective == "seq2seq":
            self.pretrained = self.pretrained or "default"   # the text decoder and the seq2seq teacher come from it
            self.batch_clips = self.batch_clips or 32

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r} (expected teacher, ld or dld)")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError("keep_prob must be in (0, 1]")
        if not 0.0 <= self.keep_prob_start <= 1.0:
            raise ValueError("keep_prob_start must be in [0, 1] (0 = no schedule)")
        if self.kd_tau <= 0:
            raise ValueError("kd_tau must be positive")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r} (expected {' or '.join(OBJECTIVES)})")
        for mode in (self.input_mode, self.teacher_input_mode):
            if mode not in STUDENT_INPUT_MODES:
                raise ValueError(f"unknown input mode {mode!r} (expected {' or '.join(STUDENT_INPUT_MODES)})")
        if self.objective == "seq2seq" and self.recipe == "teacher":
            raise ValueError("the seq2seq objective trains students (--recipe ld or dld); their teacher is the "
                             "unchanged pretrained Whisper")
        if min(self.ctc_weight, self.ce_weight, self.kd_states, self.decoder_lr, self.kd_top_k, self.batch_clips) < 0:
            raise ValueError("ctc_weight, ce_weight, kd_states, decoder_lr, kd_top_k and batch_clips must not be negative")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def from_dict(cls, data: dict):
    """Build a dataclass from a dict, refusing unknown keys (a wrong or foreign config)."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    obj = cls(**data)
    obj.validate()
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2)
