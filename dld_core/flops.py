"""Forward FLOPs of a model for an input length and layer mask, measured with FlopCounterMode.

Convention (same as torch.utils.flop_counter): 2 FLOPs per multiply-accumulate of matmuls,
convolutions and attention (QK^T, AV); elementwise work (norms, activations, softmax, GLU, adds) is
not counted. The count covers the model forward (front end + kept modules + CTC head) for one
utterance of the given length, not feature extraction (log-mel / waveform normalisation).

On CPU, PyTorch dispatches attention to `_scaled_dot_product_flash_attention_for_cpu`, which has no
formula in FlopCounterMode (it would count 0): we register one, and disable nn.MultiheadAttention's
fused fast path while counting so its projections are counted too. Counting runs on the meta device
(no arithmetic is done). The front end + CTC head and each encoder module are counted once per (config,
length), separately, through the encoder API (embed / layer / finish); a mask's count is then the front
end + head plus the sum over kept modules, so any mask is a cache lookup. The first count in a process
still pays ~1 s of torch setup: any TorchDispatchMode imports torch._dynamo on first use.
"""
from __future__ import annotations

import contextlib
import functools
import json
from typing import Union

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .audio import SAMPLE_RATE
from .config import ModelConfig, to_dict
from .families import get_family
from .frames import WIN_LENGTH
from .masks import as_bools
from .model import DynamicCTCModel, run_modules

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


@contextlib.contextmanager
def _flop_counter():
    """FlopCounterMode with the CPU attention formulas and MHA's fast path off (see the module docstring)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # no_grad, not inference_mode: FlopCounterMode's module tracker breaks weight-norm
        # parametrisations (WavLM's positional conv) under inference_mode.
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs of fn(*args, **kwargs), attention on CPU included."""
    with _flop_counter() as counter:
        fn(*args, **kwargs)
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


def _count_parts(model: DynamicCTCModel, samples: int, device) -> tuple[int, tuple[int, ...]]:
    """FLOPs of (front end + finish + CTC head, (module 0, ..., module N-1)): one full-depth forward
    through the encoder API, the running total read before and after each module."""
    enc = model.encoder
    feats, lengths = get_family(model.config.family).dummy_features(model.config, samples, device)
    with _flop_counter() as counter:
        def mark(i, on, before, after):
            marks.append(counter.get_total_flops())
            return after
        x, _, context = enc.embed(feats, lengths)
        marks = [counter.get_total_flops()]
        x = run_modules(enc, x, context, [True] * model.num_modules, mark)
        model.log_probs(enc.finish(x))
        total = counter.get_total_flops()
    return total - (marks[-1] - marks[0]), tuple(b - a for a, b in zip(marks, marks[1:]))


@functools.lru_cache(maxsize=256)
def _parts(config_json: str, samples: int) -> tuple[int, tuple[int, ...]]:
    model = _meta_model(config_json)
    try:
        return _count_parts(model, samples, "meta")
    except (NotImplementedError, RuntimeError):        # an op without a meta kernel: count on CPU
        return _count_parts(DynamicCTCModel(model.config).eval(), samples, "cpu")


def _config(model_or_config) -> ModelConfig:
    if isinstance(model_or_config, ModelConfig):
        return model_or_config
    if isinstance(model_or_config, DynamicCTCModel):
        return model_or_config.config
    config = getattr(model_or_config, "config", None)         # a Checkpoint
    if isinstance(config, ModelConfig):
        return config
    raise TypeError(f"expected a model, a ModelConfig or a Checkpoint, got {type(model_or_config).__name__}")


def flops(model_or_config, num_samples_or_seconds: Union[int, float], active=None) -> int:
    cfg = _config(model_or_config)
    mask = as_bools(active, cfg.num_modules)
    front, modules = _parts(json.dumps(to_dict(cfg), sort_keys=True), _num_samples(num_samples_or_seconds))
    return front + sum(m for m, on in zip(modules, mask) if on)


def gflops(model_or_config, num_samples_or_seconds: Union[int, float], active=None) -> float:
    """GFLOPs of one forward. Length: int = samples, float = seconds. active: bools, kept indices or None."""
    return flops(model_or_config, num_samples_or_seconds, active) / 1e9


def gflops_for_seconds(model_or_config, seconds: float = 10.0, active=None) -> float:
    return gflops(model_or_config, float(seconds), active)
