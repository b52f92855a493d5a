"""Dynamic CTC speech models: front end -> N gated encoder modules -> CTC head.

Every encoder module i is behind a gate:  y_{i+1} = y_i + g_i * f_i(y_i),  with f_i(y) = layer_i(y) - y.
`active` (one bool per module) is an argument of `forward`, never state on the model, so one cached
model can serve many users with different masks. A dropped module is skipped, not multiplied by zero:
it costs no compute.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn
from torchaudio.models.conformer import ConformerLayer

from .config import ModelConfig


class ModelOutput(NamedTuple):
    log_probs: torch.Tensor                    # [B, T', V] CTC log-posteriors
    lengths: torch.Tensor                      # [B] valid output frames
    hidden: Optional[list[torch.Tensor]]       # [B, T', D] after every module (dropped ones pass through)


def resolve_active(active: Optional[Sequence[bool]], n_layers: int) -> list[bool]:
    """None means all modules; otherwise exactly one bool per module."""
    if active is None:
        return [True] * n_layers
    mask = [bool(a) for a in active]
    if len(mask) != n_layers:
        raise ValueError(f"layer mask has {len(mask)} entries but the model has {n_layers} modules")
    return mask


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions, [B, T]."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


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


class ConformerEncoder(nn.Module):
    """Conv2d subsampling, then torchaudio ConformerLayers. The encoder API shared by both families:
    embed() -> (x [B, T', D], lengths, context); layer(i, x, context) -> x; finish(x) -> x."""

    def __init__(self, cfg: ModelConfig):
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


class WavLMEncoder(nn.Module):
    """torchaudio's WavLM components (CNN feature extractor + transformer layers) behind the same gates.

    Module names match torchaudio's `wavlm_model`, so a torchaudio-format WavLM state dict loads directly
    (see `load_wavlm_state_dict`). The relative position bias that WavLM computes in its first layer is
    computed up front, so it exists even when module 0 is dropped.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from torchaudio.models.wav2vec2 import components

        shapes = [tuple(s) for s in cfg.extractor_layers]
        self.feature_extractor = components._get_feature_extractor("group_norm", shapes, False)
        self.encoder = components._get_wavlm_encoder(
            in_features=shapes[-1][0], embed_dim=cfg.d_model, dropout_input=cfg.dropout,
            pos_conv_kernel=cfg.pos_conv_kernel, pos_conv_groups=cfg.pos_conv_groups,
            num_layers=cfg.n_layers, num_heads=cfg.n_heads, num_buckets=cfg.num_buckets,
            max_distance=cfg.max_distance, attention_dropout=cfg.dropout, ff_interm_features=cfg.ffn_dim,
            ff_interm_dropout=cfg.dropout, dropout=cfg.dropout, layer_norm_first=False, layer_drop=0.0)

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.transformer.layers

    def embed(self, wavs, lengths):
        x, lengths = self.feature_extractor(wavs, lengths)
        x = self.encoder.transformer._preprocess(self.encoder.feature_projection(x))
        pad = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
        pad = pad.masked_fill(padding_mask(lengths, x.shape[1]), float("-inf"))  # additive, as WavLM expects
        bias = self.layers[0].attention.compute_bias(x.shape[1], x.shape[1]).unsqueeze(0)   # [1, H, T, T]
        return x, lengths, (pad, bias)

    def layer(self, i: int, x: torch.Tensor, context) -> torch.Tensor:
        pad, bias = context
        rows = x.shape[0]
        return self.layers[i](x, key_padding_mask=pad.expand(rows, -1),
                              position_bias=bias.expand(rows, -1, -1, -1))[0]

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        transformer = self.encoder.transformer
        return transformer.layer_norm(x) if transformer.layer_norm_first else x


class DynamicCTCModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = ConformerEncoder(cfg) if cfg.family == "conformer" else WavLMEncoder(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    @property
    def num_layers(self) -> int:
        return self.config.n_layers

    def forward(self, features: torch.Tensor, lengths: torch.Tensor,
                active: Optional[Sequence[bool]] = None, return_hidden: bool = False) -> ModelOutput:
        """features: [B, T, n_mels] log-mel (conformer) or [B, S] waveform (wavlm); lengths: [B]."""
        mask = resolve_active(active, self.config.n_layers)
        x, out_lengths, context = self.encoder.embed(features, lengths)
        hidden: Optional[list[torch.Tensor]] = [] if return_hidden else None
        for i, on in enumerate(mask):
            if on:                                   # y_{i+1} = y_i + g_i * f_i(y_i): g_i = 0 skips module i
                x = self.encoder.layer(i, x, context)
            if hidden is not None:
                hidden.append(x)
        return ModelOutput(self.log_probs(self.encoder.finish(x)), out_lengths, hidden)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """The CTC head on any hidden state (also used for the logit-lens view)."""
        return self.head(hidden).float().log_softmax(dim=-1)


def load_wavlm_state_dict(model: DynamicCTCModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchaudio-format WavLM state dict (feature_extractor.* and encoder.*; an `aux` head is ignored)."""
    if model.config.family != "wavlm":
        raise ValueError("a WavLM state dict can only be loaded into a model of family 'wavlm'")
    wanted = {k: v for k, v in state_dict.items() if not k.startswith("aux.")}
    missing, unexpected = model.encoder.load_state_dict(wanted, strict=False)
    if unexpected or missing:
        raise ValueError(f"WavLM state dict does not match the config: missing={missing[:3]} unexpected={unexpected[:3]}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
