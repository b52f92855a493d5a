"""The WavLM family: the normalised waveform -> torchaudio's WavLM components (CNN feature extractor +
transformer layers), one gated module per transformer layer (L1 .. LN).

Module names match torchaudio's `wavlm_model`, so a torchaudio-format WavLM state dict loads directly
(`load_pretrained`). The relative position bias that WavLM computes in its first layer is computed up
front, so it exists even when module 0 is dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..audio import SAMPLE_RATE
from ..frames import padding_mask
from ..safe_io import CheckpointError, parse_safetensors, read_regular_file
from . import GateChoice, frames_line_up

INPUT = "waveform"


class Features(nn.Module):
    """Zero-mean, unit-variance waveform per utterance over its valid samples (the WavLM convention)."""

    def __init__(self, cfg=None):
        super().__init__()

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wavs = wavs.float()
        valid = ~padding_mask(wav_lengths, wavs.shape[1])
        count = wav_lengths[:, None].clamp(min=1)
        mean = (wavs * valid).sum(1, keepdim=True) / count
        var = (((wavs - mean) * valid) ** 2).sum(1, keepdim=True) / count
        return (wavs - mean) / (var.sqrt() + 1e-5) * valid, wav_lengths


class Encoder(nn.Module):
    def __init__(self, cfg):
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


def module_names(cfg) -> list[str]:
    return [f"L{i + 1}" for i in range(cfg.n_layers)]


def module_roles(cfg) -> list[tuple[int, str]]:
    """Every gated module is a whole block."""
    return [(i, "block") for i in range(cfg.n_layers)]


def dummy_features(cfg, num_samples: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, num_samples, device=device), torch.tensor([num_samples], device=device)


def frame_rate(cfg) -> float:
    stride = 1
    for _, _, s in cfg.extractor_layers:
        stride *= s
    return SAMPLE_RATE / stride


def validate(cfg) -> None:
    if not cfg.extractor_layers or any(len(s) != 3 or min(s) <= 0 for s in cfg.extractor_layers):
        raise ValueError("extractor_layers must be a list of positive [channels, kernel, stride] triples")


def encoder_frames(cfg, num_samples: int) -> int:
    """Frames after the CNN feature extractor (each layer: floor((L - kernel) / stride) + 1, at least 0)."""
    frames = int(num_samples)
    for _, kernel, stride in cfg.extractor_layers:
        frames = max(0, (frames - kernel) // stride + 1)
    return frames


MAX_STATE_DICT_BYTES = 1 << 30


def config_from_pretrained(path=None, **overrides):
    raise ValueError("--pretrained is not supported for the wavlm family")


def load_pretrained(model, source=None) -> str:
    """Load a torchaudio-format WavLM state dict (feature_extractor.* and encoder.*; an `aux` head is ignored)
    from `source`: a safetensors file, or a folder holding model.safetensors (read as untrusted input: no
    links, size-limited, header checked). There are no bundled WavLM weights: None / "default" is refused."""
    if getattr(getattr(model, "config", None), "family", None) != "wavlm":
        raise CheckpointError("a WavLM state dict can only be loaded into a model of family 'wavlm'")
    if source is None or str(source) == "default":
        raise CheckpointError("the wavlm family has no bundled weights: give a torchaudio-format WavLM state dict "
                              "(a .safetensors file)")
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    state_dict = parse_safetensors(read_regular_file(path, MAX_STATE_DICT_BYTES, path.name), path.name)
    wanted = {k: v for k, v in state_dict.items() if not k.startswith("aux.")}
    missing, unexpected = model.encoder.load_state_dict(wanted, strict=False)
    if unexpected or missing:
        raise CheckpointError(f"WavLM state dict does not match the config: missing={missing[:3]} "
                              f"unexpected={unexpected[:3]}")
    return f"WavLM state dict {path}"


def compatible_teacher(student_config, teacher_config) -> bool:
    return frames_line_up(student_config, teacher_config)


def gate_choice(cfg) -> Optional[GateChoice]:
    return None                                  # one gate per transformer layer
