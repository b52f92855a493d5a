"""Configuration dataclasses, serialised to JSON next to the weights."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("conformer", "wavlm")


@dataclass
class ModelConfig:
    family: str = "conformer"          # "conformer" (log-mel input) or "wavlm" (raw waveform input)
    n_mels: int = 80
    d_model: int = 144
    n_layers: int = 12
    n_heads: int = 4
    ffn_dim: int = 576
    conv_kernel: int = 15               # conformer depthwise kernel
    dropout: float = 0.1
    subsampling: int = 4                # conformer: 4 (40 ms frames) or 2 (20 ms; for dense character CTC)
    pos_enc: str = "none"               # conformer: "none" or "sinusoidal" (absolute, added after subsampling)
    vocab: list[str] = field(default_factory=lambda: list(CHAR_VOCAB))
    # wavlm family only: CNN feature extractor (channels, kernel, stride) and relative position buckets
    extractor_layers: list[list[int]] = field(
        default_factory=lambda: [[64, 10, 5], [64, 3, 2], [64, 3, 2], [64, 3, 2], [64, 3, 2], [64, 2, 2], [64, 2, 2]])  # 20 ms frames
    num_buckets: int = 320
    max_distance: int = 800
    pos_conv_kernel: int = 32
    pos_conv_groups: int = 4

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r} (expected one of {FAMILIES})")
        for name in ("n_mels", "d_model", "n_layers", "n_heads", "ffn_dim", "conv_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model config field {name} must be a positive integer, got {value!r}")
        if self.subsampling not in (2, 4):
            raise ValueError(f"subsampling must be 2 or 4, got {self.subsampling!r}")
        if self.pos_enc not in ("none", "sinusoidal"):
            raise ValueError(f"unknown pos_enc {self.pos_enc!r} (expected none or sinusoidal)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if len(self.vocab) < 2 or self.vocab[0] != "<blank>" or len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab must start with '<blank>' and hold unique tokens")


CHAR_VOCAB = ("<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz")


@dataclass
class TrainConfig:
    recipe: str = "teacher"             # teacher | ld | dld
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    grad_clip: float = 5.0
    batch_seconds: float = 120.0        # total audio seconds per batch (length-bucketed)
    keep_prob: float = 0.5              # Bernoulli gate probability (ld / dld)
    kd_lambda: float = 1.0              # dld: weight of KL(teacher || student)
    kd_tau: float = 1.0                 # dld: temperature
    init_from_teacher: bool = False
    spec_augment: bool = True
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 4
    time_mask_width: int = 20
    seed: int = 0
    max_steps: int = 0                  # 0 = no limit (used by tests and smoke runs)

    def validate(self) -> None:
        if self.recipe not in ("teacher", "ld", "dld"):
            raise ValueError(f"unknown recipe {self.recipe!r} (expected teacher, ld or dld)")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError("keep_prob must be in (0, 1]")
        if self.kd_tau <= 0:
            raise ValueError("kd_tau must be positive")


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
