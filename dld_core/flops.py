"""Forward FLOPs of a model for an input length and layer mask, measured with FlopCounterMode.

Convention (same as torch.utils.flop_counter): 2 FLOPs per multiply-accumulate of matmuls,
convolutions and attention (QK^T, AV); elementwise work (norms, activations, softmax, GLU, adds) is
not counted. The count covers the model forward (front end + kept modules + CTC head) for one
utterance of the given length, not feature extraction (log-mel / waveform normalisation).

On CPU, PyTorch dispatches attention to `_scaled_dot_product_flash_attention_for_cpu`, which has no
formula in FlopCounterMode (it would count 0): we register one, and disable nn.MultiheadAttention's
fused fast path while counting so its projections are counted too. Counting runs on the meta device
(no arithmetic is done), and results are cached: they depend only on (config, length, mask).
"""
from __future__ import annotations

import functools
import json
from typing import Union

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .config import ModelConfig, to_dict
from .features import HOP_LENGTH, SAMPLE_RATE, WIN_LENGTH
from .model import DynamicCTCModel, resolve_active

aten = torch.ops.aten


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flop(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None, **kwargs) -> int:
    """torch._native_multi_head_attention (MHA fast path): in/out projections + attention."""
    b, t_q, d = query_shape
    t_k = key_shape[1]
    return 2 * b * (t_q * d * d + 2 * t_k * d * d + t_q * d * d) + 4 * b * t_q * t_k * d


EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    aten._native_multi_head_attention: _native_mha_flop,
}


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs of fn(*args, **kwargs), attention on CPU included."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # no_grad, not inference_mode: FlopCounterMode's module tracker breaks weight-norm
        # parametrisations (WavLM's positional conv) under inference_mode.
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS) as counter:
            fn(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def _num_samples(num_samples_or_seconds: Union[int, float]) -> int:
    """An int is a number of samples, a float a duration in seconds (16 kHz)."""
    if isinstance(num_samples_or_seconds, float):
        return int(round(num_samples_or_seconds * SAMPLE_RATE))
    n = int(num_samples_or_seconds)
    if n < WIN_LENGTH:
        raise ValueError(f"{n} samples is shorter than one 25 ms window; pass a float to give seconds (e.g. 10.0)")
    return n


@functools.lru_cache(maxsize=8)
def _meta_model(config_json: str) -> DynamicCTCModel:
    cfg = ModelConfig(**json.loads(config_json))
    with torch.device("meta"):
        model = DynamicCTCModel(cfg)
    return model.eval()


def _dummy_input(cfg: ModelConfig, samples: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.family == "conformer":
        frames = samples // HOP_LENGTH + 1                # LogMel: centred STFT frames
        return torch.zeros(1, frames, cfg.n_mels, device=device), torch.tensor([frames], device=device)
    return torch.zeros(1, samples, device=device), torch.tensor([samples], device=device)


@functools.lru_cache(maxsize=4096)
def _cached_flops(config_json: str, samples: int, mask: tuple[bool, ...]) -> int:
    model = _meta_model(config_json)
    try:
        feats, lengths = _dummy_input(model.config, samples, "meta")
        return count_flops(model, feats, lengths, list(mask))
    except (NotImplementedError, RuntimeError):        # an op without a meta kernel: count on CPU
        model = DynamicCTCModel(model.config).eval()
        feats, lengths = _dummy_input(model.config, samples, "cpu")
        return count_flops(model, feats, lengths, list(mask))


def _config(model_or_config) -> ModelConfig:
    if isinstance(model_or_config, ModelConfig):
        return model_or_config
    if isinstance(model_or_config, DynamicCTCModel):
        return model_or_config.config
    config = getattr(model_or_config, "config", None)         # a Checkpoint
    if isinstance(config, ModelConfig):
        return config
    raise TypeError(f"expected a model, a ModelConfig or a Checkpoint, got {type(model_or_config).__name__}")


def active_mask(active, n_layers: int) -> list[bool]:
    """None, one bool per module, or a list of kept module indices -> one bool per module."""
    if active is None:
        return [True] * n_layers
    active = list(torch.as_tensor(active).tolist()) if isinstance(active, torch.Tensor) else list(active)
    if len(active) == n_layers and all(isinstance(a, (bool, np.bool_)) for a in active):
        return resolve_active(active, n_layers)
    idx = [int(i) for i in active]
    if any(i < 0 or i >= n_layers for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"kept module indices {idx} are not distinct indices in 0..{n_layers - 1}")
    return [i in idx for i in range(n_layers)]


def flops(model_or_config, num_samples_or_seconds: Union[int, float], active=None) -> int:
    cfg = _config(model_or_config)
    mask = tuple(active_mask(active, cfg.n_layers))
    return _cached_flops(json.dumps(to_dict(cfg), sort_keys=True), _num_samples(num_samples_or_seconds), mask)


def gflops(model_or_config, num_samples_or_seconds: Union[int, float], active=None) -> float:
    """GFLOPs of one forward. Length: int = samples, float = seconds. active: bools, kept indices or None."""
    return flops(model_or_config, num_samples_or_seconds, active) / 1e9


def gflops_for_seconds(model_or_config, seconds: float = 10.0, active=None) -> float:
    return gflops(model_or_config, float(seconds), active)


def conformer_frames(samples: int) -> int:
    """Encoder frames of the conformer family for a clip (10 ms log-mel, then 4x subsampling)."""
    t = samples // HOP_LENGTH + 1
    return ((t - 1) // 2 - 1) // 2


def analytic_conformer_layer_flops(d_model: int, ffn_dim: int, n_heads: int, conv_kernel: int, frames: int) -> int:
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
