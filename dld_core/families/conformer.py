"""The conformer family: 80-dim log-mel (normalised per utterance) -> Conv2d subsampling (4x or 2x) ->
torchaudio ConformerLayers, one gated module each (L1 .. LN).

front_end "whisper" feeds Whisper's log-mel instead (normalised per utterance, WHISPER_PAD zero frames
on each side): with 2x subsampling the encoder then has exactly a Whisper encoder's frames, so a
conformer student can be distilled from a Whisper teacher frame by frame."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torchaudio
from torch import nn
from torchaudio.models.conformer import ConformerLayer

from ..audio import SAMPLE_RATE
from ..frames import HOP_LENGTH, WIN_LENGTH, padding_mask
from ..safe_io import CheckpointError
from . import GateChoice, frames_line_up, get_family

INPUT = "log-mel"          # SpecAugment applies to this family's features
WHISPER_PAD = 3            # zero frames on each side of the Whisper log-mel (front_end "whisper")


def normalize(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid frames; padded frames zero. [B, T, F]."""
    valid = (~padding_mask(lengths, feats.shape[1]))[..., None]
    count = (lengths[:, None, None] * feats.shape[2]).clamp(min=1)
    mean = (feats * valid).sum(dim=(1, 2), keepdim=True) / count
    var = (((feats - mean) * valid) ** 2).sum(dim=(1, 2), keepdim=True) / count
    return (feats - mean) / (var.sqrt() + 1e-5) * valid


class Features(nn.Module):
    """80-dim log-mel of 25 ms windows every 10 ms (or Whisper's, see the module docstring), normalised per
    utterance over its valid frames."""

    def __init__(self, cfg=None, n_mels: int = 80):
        super().__init__()
        self.front_end = getattr(cfg, "front_end", "logmel")
        if self.front_end == "whisper":
            self.whisper = get_family("whisper").Features(cfg)
        else:
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=SAMPLE_RATE, n_fft=WIN_LENGTH, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
                n_mels=cfg.n_mels if cfg is not None else n_mels)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs [B, S] float, wav_lengths [B] -> features [B, T, n_mels], frame lengths [B]."""
        if self.front_end == "whisper":
            feats, lengths = self.whisper(wavs, wav_lengths)
            feats = torch.nn.functional.pad(normalize(feats, lengths), (0, 0, WHISPER_PAD, WHISPER_PAD))
            return feats, lengths + 2 * WHISPER_PAD
        feats = (self.mel(wavs.float()) + 1e-6).log().transpose(1, 2)           # [B, T, F]
        lengths = (torch.div(wav_lengths, HOP_LENGTH, rounding_mode="floor") + 1).clamp(max=feats.shape[1])
        return normalize(feats, lengths), lengths


class Conv2dSubsampling(nn.Module):
    """Two 3x3 convolutions (stride 2 then stride 2, or 2 then 1: 4x or 2x fewer frames), then a linear
    map to d_model."""

    def __init__(self, n_mels: int, d_model: int, factor: int = 4, channels: int = 32):
        super().__init__()
        self.second_stride = 2 if factor == 4 else 1
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=self.second_stride), nn.ReLU())
        freq = ((n_mels - 1) // 2 - 3) // self.second_stride + 1
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        first = torch.div(lengths - 1, 2, rounding_mode="floor")
        return torch.div(first - 3, self.second_stride, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))                              # [B, C, T', F']
        x = self.out(x.transpose(1, 2).flatten(2))                 # [B, T', D]
        return x, self.output_lengths(lengths).clamp(min=1, max=x.shape[1])


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """The Transformer's absolute position encoding, [length, dim]."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class Encoder(nn.Module):
    """Conv2d subsampling, then torchaudio ConformerLayers (gated module i = layer i)."""

    def __init__(self, cfg):
        super().__init__()
        self.subsampling = Conv2dSubsampling(cfg.n_mels, cfg.d_model, cfg.subsampling)
        self.pos_enc = cfg.pos_enc
        self.layers = nn.ModuleList(
            ConformerLayer(cfg.d_model, cfg.ffn_dim, cfg.n_heads, cfg.conv_kernel, dropout=cfg.dropout)
            for _ in range(cfg.n_layers))

    def embed(self, feats, lengths):
        x, lengths = self.subsampling(feats, lengths)
        if self.pos_enc == "sinusoidal":
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        return x, lengths, padding_mask(lengths, x.shape[1])

    def layer(self, i: int, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        pad = pad.expand(x.shape[0], -1)                           # one utterance may run as several rows
        return self.layers[i](x.transpose(0, 1), pad).transpose(0, 1)   # ConformerLayer wants [T, B, D]

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x


def module_names(cfg) -> list[str]:
    return [f"L{i + 1}" for i in range(cfg.n_layers)]


def module_roles(cfg) -> list[tuple[int, str]]:
    """Every gated module is a whole block."""
    return [(i, "block") for i in range(cfg.n_layers)]


def feature_frames(cfg, num_samples: int) -> int:
    if getattr(cfg, "front_end", "logmel") == "whisper":
        return num_samples // HOP_LENGTH + 2 * WHISPER_PAD    # Whisper's frames, padded
    return num_samples // HOP_LENGTH + 1                      # centred STFT frames


def dummy_features(cfg, num_samples: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    frames = feature_frames(cfg, num_samples)
    return torch.zeros(1, frames, cfg.n_mels, device=device), torch.tensor([frames], device=device)


def encoder_frames(cfg, num_samples: int) -> int:
    """Encoder output frames for a clip (10 ms log-mel, then 4x or 2x subsampling)."""
    t = feature_frames(cfg, num_samples)
    return ((t - 1) // 2 - 3) // (2 if cfg.subsampling == 4 else 1) + 1


def frame_rate(cfg) -> float:
    return SAMPLE_RATE / HOP_LENGTH / cfg.subsampling


def validate(cfg) -> None:
    for name in ("n_mels", "conv_kernel"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"model config field {name} must be a positive integer, got {value!r}")
    if cfg.subsampling not in (2, 4):
        raise ValueError(f"subsampling must be 2 or 4, got {cfg.subsampling!r}")
    if cfg.pos_enc not in ("none", "sinusoidal"):
        raise ValueError(f"unknown pos_enc {cfg.pos_enc!r} (expected none or sinusoidal)")
    if cfg.front_end not in ("logmel", "whisper"):
        raise ValueError(f"unknown front_end {cfg.front_end!r} (expected logmel or whisper)")
    if cfg.front_end == "whisper" and cfg.n_mels != 80:
        raise ValueError("front_end whisper has 80 mel bins")


def config_from_pretrained(path=None, **overrides):
    raise ValueError("--pretrained is not supported for the conformer family")


def load_pretrained(model, source=None) -> str:
    raise CheckpointError("the conformer family has no pretrained weights: it trains from scratch")


def compatible_teacher(student_config, teacher_config) -> bool:
    """Any teacher whose frames line up with this conformer's (a Whisper teacher for front_end "whisper"
    with 2x subsampling)."""
    return frames_line_up(student_config, teacher_config)


def gate_choice(cfg) -> Optional[GateChoice]:
    return None                                  # one gate per ConformerLayer


def analytic_layer_flops(d_model: int, ffn_dim: int, n_heads: int, conv_kernel: int, frames: int) -> int:
    """FLOPs of one torchaudio ConformerLayer on `frames` frames (batch 1), 2 FLOPs per MAC.

    Two half-step FFNs (d->ffn->d), MHSA (QKV and output projections, QK^T, AV), conv module
    (pointwise d->2d, GLU, depthwise k, batch norm, pointwise d->d). Norms/activations/GLU/softmax are
    elementwise and not counted, as in FlopCounterMode. n_heads does not change the count.
    """
    t, d, f, k = frames, d_model, ffn_dim, conv_kernel
    ffn = 2 * (2 * t * d * f + 2 * t * f * d)
    mhsa = 2 * t * d * (3 * d) + 2 * t * d * d + 2 * t * t * d + 2 * t * t * d
    conv = 2 * t * d * (2 * d) + 2 * t * d * k + 2 * t * d * d
    return ffn + mhsa + conv
