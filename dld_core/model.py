"""Dynamic CTC speech models: front end -> N gated encoder modules -> CTC head.

Every encoder module i is behind a gate:  y_{i+1} = y_i + g_i * f_i(y_i),  with f_i(y) = layer_i(y) - y.
`active` (one bool per module) is an argument of `forward`, never state on the model, so one cached
model can serve many users with different masks. A dropped module is skipped, not multiplied by zero:
it costs no compute.
"""
from __future__ import annotations

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
    """Two 3x3 stride-2 convolutions (4x fewer frames), then a linear map to d_model."""

    def __init__(self, n_mels: int, d_model: int, channels: int = 32):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        freq = ((n_mels - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))                              # [B, C, T', F']
        x = self.out(x.transpose(1, 2).flatten(2))                 # [B, T', D]
        lengths = torch.div(torch.div(lengths - 1, 2, rounding_mode="floor") - 1, 2, rounding_mode="floor")
        return x, lengths.clamp(min=1, max=x.shape[1])


class ConformerEncoder(nn.Module):
    """torchaudio ConformerLayers behind gates. Works on [B, T, D]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(cfg.n_mels, cfg.d_model)
        self.layers = nn.ModuleList(
            ConformerLayer(cfg.d_model, cfg.ffn_dim, cfg.n_heads, cfg.conv_kernel, dropout=cfg.dropout)
            for _ in range(cfg.n_layers))

    def forward(self, feats, lengths, active, hidden):
        x, lengths = self.subsampling(feats, lengths)
        pad = padding_mask(lengths, x.shape[1])
        x = x.transpose(0, 1)                                      # ConformerLayer wants [T, B, D]
        for layer, on in zip(self.layers, active):
            if on:
                x = layer(x, pad)
            if hidden is not None:
                hidden.append(x.transpose(0, 1))
        return x.transpose(0, 1), lengths


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

    def forward(self, wavs, lengths, active, hidden):
        x, lengths = self.feature_extractor(wavs, lengths)
        x = self.encoder.feature_projection(x)
        transformer = self.encoder.transformer
        x = transformer._preprocess(x)
        pad = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
        pad = pad.masked_fill(padding_mask(lengths, x.shape[1]), float("-inf"))  # additive, as WavLM expects
        attention = self.layers[0].attention
        bsz, seq = x.shape[:2]
        bias = attention.compute_bias(seq, seq).unsqueeze(0).expand(bsz, -1, -1, -1)   # [B, H, T, T]
        for layer, on in zip(self.layers, active):
            if on:
                x, _ = layer(x, key_padding_mask=pad, position_bias=bias)
            if hidden is not None:
                hidden.append(x)
        if transformer.layer_norm_first:
            x = transformer.layer_norm(x)
        return x, lengths


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
        hidden: Optional[list[torch.Tensor]] = [] if return_hidden else None
        x, out_lengths = self.encoder(features, lengths, mask, hidden)
        return ModelOutput(self.log_probs(x), out_lengths, hidden)

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
