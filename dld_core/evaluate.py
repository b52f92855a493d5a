"""WER / CER / GFLOPs at several depths (numbers of kept modules) over a manifest.

Protocol (random policy): for each level k, M distinct random masks with k kept modules, seeded per
(seed, k); WER and CER are corpus-level per mask (total edits / total reference units over the
manifest), then averaged over the masks. gflops is for a 10 s clip (comparable across test sets),
averaged over the masks. latency_ms is the batched model-forward wall time per utterance (features
excluded), averaged over the masks: a throughput figure; `dld_core.bench` gives single-clip latency.
"""
from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .decode import greedy_decode
from .flops import active_mask, gflops_for_seconds
from .inference import featurize
from .metrics import error_counts, error_rate
from .model import DynamicCTCModel
from .tokenizer import CharTokenizer

POLICIES = ("random", "every_other", "first_k", "custom")
FLOPS_SECONDS = 10.0


def _custom_list(custom) -> list:
    """custom: a list of masks, or one mask (a flat list of kept indices or bools)."""
    custom = list(custom or [])
    if custom and all(isinstance(x, (bool, int, np.integer, np.bool_)) for x in custom):
        return [custom]
    return custom


def make_masks(n_layers: int, kept: int, policy: str = "random", num_masks: int = 4, seed: int = 0,
               custom: Optional[Sequence] = None) -> list[list[int]]:
    """Masks as sorted lists of kept module indices, each with exactly `kept` modules.

    random: `num_masks` distinct masks drawn with a generator seeded by (seed, kept), or all
    C(n, kept) masks in lexicographic order when there are no more than `num_masks` of them.
    every_other: one mask, kept modules spread evenly, always keeping the last one
    (kept = n/2 keeps 1, 3, 5, ...). first_k: one mask, modules 0..k-1.
    custom: the masks in `custom` (index lists or one bool per module; a single flat mask is allowed)
    that keep exactly `kept`.
    """
    if not 0 <= kept <= n_layers:
        raise ValueError(f"cannot keep {kept} of {n_layers} modules")
    if policy == "random":
        if num_masks < 1:
            raise ValueError("num_masks must be at least 1")
        if math.comb(n_layers, kept) <= num_masks:
            return [list(c) for c in itertools.combinations(range(n_layers), kept)]
        rng = np.random.default_rng([seed, kept])
        masks: list[list[int]] = []
        while len(masks) < num_masks:
            mask = sorted(rng.choice(n_layers, kept, replace=False).tolist())
            if mask not in masks:
                masks.append(mask)
        return masks
    if policy == "every_other":
        return [sorted({(j + 1) * n_layers // kept - 1 for j in range(kept)})] if kept else [[]]
    if policy == "first_k":
        return [list(range(kept))]
    if policy == "custom":
        masks = []
        for mask in _custom_list(custom):
            bools = active_mask(mask, n_layers)
            idx = [i for i, on in enumerate(bools) if on]
            if len(idx) == kept and idx not in masks:
                masks.append(idx)
        if not masks:
            raise ValueError(f"no custom mask keeps exactly {kept} of {n_layers} modules")
        return masks
    raise ValueError(f"unknown mask policy {policy!r} (expected one of {', '.join(POLICIES)})")


@torch.inference_mode()
def transcribe_batch(model: DynamicCTCModel, wavs: Sequence[np.ndarray], active=None,
                     features: Optional[tuple[torch.Tensor, torch.Tensor]] = None, decoder=None) -> list[str]:
    """Transcribe 16 kHz waveforms with one mask (None, bools or kept indices).

    Pass `features` (from `inference.featurize`) to reuse them across masks; `decoder` is any callable
    (log_probs, lengths) -> texts, e.g. a BeamDecoder; greedy by default."""
    feats, lengths = features if features is not None else featurize(model, wavs)
    out = model(feats, lengths, active=active_mask(active, model.num_layers))
    if decoder is not None:
        return decoder(out.log_probs, out.lengths)
    return greedy_decode(out.log_probs, out.lengths, CharTokenizer(model.config.vocab))


def length_batches(durations: Sequence[float], batch_seconds: float) -> list[list[int]]:
    """Indices sorted by duration, cut so each batch's padded length (size x longest) <= batch_seconds."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * durations[i] <= batch_seconds:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _levels(n_layers: int, keep: Optional[Sequence[int]], policy: str, custom) -> list[int]:
    if keep is not None:
        levels = [int(k) for k in keep]
    elif policy == "custom":
        levels = sorted({sum(active_mask(m, n_layers)) for m in _custom_list(custom)}, reverse=True)
    else:
        levels = list(range(n_layers, 0, -1))
    bad = [k for k in levels if not 0 <= k <= n_layers]
    if bad:
        raise ValueError(f"kept levels {bad} are outside 0..{n_layers}")
    return levels


def evaluate_items(model: DynamicCTCModel, items: Sequence[dict], load, keep: Optional[Sequence[int]] = None,
                   num_masks: int = 4, policy: str = "random", seed: int = 0, batch_seconds: float = 120.0,
                   custom=None, progress: bool = True) -> list[dict]:
    """The evaluation loop over manifest-like rows; `load(row)` returns the 16 kHz waveform."""
    n = model.num_layers
    levels = _levels(n, keep, policy, custom)
    plan = [(k, make_masks(n, k, policy, num_masks, seed, custom)) for k in levels]
    jobs = [(li, mask) for li, (_, masks) in enumerate(plan) for mask in masks]
    hyps = {(li, tuple(mask)): [""] * len(items) for li, mask in jobs}
    seconds = {key: 0.0 for key in hyps}
    durations = [float(row.get("duration") or batch_seconds) for row in items]   # unknown: a batch of its own
    tokenizer = CharTokenizer(model.config.vocab)
    batches = length_batches(durations, batch_seconds)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(batches) * len(jobs), desc="evaluate", unit="pass")
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            feats, lengths = featurize(model, [load(items[i]) for i in batch])
            for li, mask in jobs:
                start = time.perf_counter()
                out = model(feats, lengths, active=active_mask(mask, n))
                seconds[(li, tuple(mask))] += time.perf_counter() - start
                for i, text in zip(batch, greedy_decode(out.log_probs, out.lengths, tokenizer)):
                    hyps[(li, tuple(mask))][i] = text
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    refs = [row["text"] for row in items]
    results = []
    for li, (k, masks) in enumerate(plan):
        w = [error_rate(error_counts(refs, hyps[(li, tuple(m))], "word")) for m in masks]
        c = [error_rate(error_counts(refs, hyps[(li, tuple(m))], "char")) for m in masks]
        results.append({
            "kept": k,
            "wer": float(np.mean(w)),
            "cer": float(np.mean(c)),
            "gflops": float(np.mean([gflops_for_seconds(model.config, FLOPS_SECONDS, m) for m in masks])),
            "masks": [list(m) for m in masks],
            "latency_ms": float(np.mean([seconds[(li, tuple(m))] for m in masks]) * 1000 / max(len(items), 1)),
        })
    return results


def evaluate(checkpoint, manifest_path, keep: Optional[Sequence[int]] = None, num_masks: int = 4,
             policy: str = "random", seed: int = 0, batch_seconds: float = 120.0, custom=None,
             progress: bool = True) -> dict:
    """Evaluate a checkpoint (folder or loaded Checkpoint) on a JSONL manifest.

    keep: kept-module levels, e.g. [12, 9, 6, 3]; None = every level N..1 (or the custom masks' sizes).
    """
    from .audio import load_audio, load_manifest

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    items = load_manifest(manifest_path)
    if not items:
        raise ValueError(f"{manifest_path}: the manifest is empty")
    levels = evaluate_items(ckpt.model, items, lambda row: load_audio(row["audio_filepath"]).samples,
                            keep=keep, num_masks=num_masks, policy=policy, seed=seed,
                            batch_seconds=batch_seconds, custom=custom, progress=progress)
    return {"checkpoint": str(ckpt.path), "num_layers": ckpt.model.num_layers, "manifest": str(Path(manifest_path)),
            "policy": policy, "levels": levels}
