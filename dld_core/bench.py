"""CPU latency of the model forward at every depth on a random clip, next to its GFLOPs.

Median over `repeats` timed runs after `warmup` runs, under torch.inference_mode, with a fixed number
of intra-op threads (1 by default: stable numbers on a shared machine). Features are computed once,
outside the timing: the numbers are for the model forward (front end + kept modules + CTC head).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .evaluate import make_masks
from .features import SAMPLE_RATE
from .flops import active_mask, gflops
from .inference import featurize


@torch.inference_mode()
def _median_ms(model, feats, lengths, mask, repeats: int, warmup: int) -> float:
    active = active_mask(mask, model.num_layers)
    for _ in range(warmup):
        model(feats, lengths, active=active)
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        model(feats, lengths, active=active)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def bench(checkpoint, seconds: float = 10.0, repeats: int = 5, warmup: int = 2, threads: int = 1,
          policy: str = "first_k", levels=None, seed: int = 0) -> dict:
    """{"seconds", "threads", "policy", "levels": [{"kept", "mask", "latency_ms", "gflops",
    "latency_ratio", "flops_ratio"}]} for kept = N..1 (or `levels`); ratios are to full depth."""
    if policy not in ("first_k", "every_other"):
        raise ValueError("bench policy must be 'first_k' or 'every_other'")
    model = checkpoint.model if isinstance(checkpoint, Checkpoint) else (
        checkpoint if isinstance(checkpoint, torch.nn.Module) else load_checkpoint(checkpoint).model)
    model.eval()
    n = model.num_layers
    levels = list(range(n, 0, -1)) if levels is None else [int(k) for k in levels]
    wav = (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    feats, lengths = featurize(model, [wav])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        full_ms = _median_ms(model, feats, lengths, None, repeats, warmup)
        rows = []
        for k in levels:
            mask = make_masks(n, k, policy)[0]
            ms = full_ms if k == n else _median_ms(model, feats, lengths, mask, repeats, warmup)
            rows.append({"kept": k, "mask": mask, "latency_ms": ms, "gflops": gflops(model, float(seconds), mask)})
    finally:
        torch.set_num_threads(old_threads)
    full_gf = gflops(model, float(seconds), None)
    for r in rows:
        r["latency_ratio"] = r["latency_ms"] / full_ms
        r["flops_ratio"] = r["gflops"] / full_gf
    return {"seconds": seconds, "threads": threads, "policy": policy, "levels": rows}
