"""WER / CER / GFLOPs at several depths (numbers of kept modules) over a manifest.

Protocol (random policy): for each level k, M distinct random masks with k kept modules, seeded per
(seed, k); WER and CER are corpus-level per mask (total edits / total reference units over the
manifest), then averaged over the masks. gflops is for a 10 s clip (comparable across test sets),
averaged over the masks. latency_ms is the batched model-forward wall time per utterance (features
excluded), averaged over the masks: a throughput figure; `dld_core.bench` gives single-clip latency.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import masks as M
from .checkpoint import Checkpoint, load_checkpoint
from .flops import gflops_for_seconds
from .inference import decoder_for, featurize, recognize
from .metrics import error_counts, error_rate
from .model import DynamicCTCModel

FLOPS_SECONDS = 10.0


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


def evaluate_items(model: DynamicCTCModel, items: Sequence[dict], load, keep: Optional[Sequence[int]] = None,
                   num_masks: int = 4, policy: str = "random", seed: int = 0, batch_seconds: float = 120.0,
                   custom=None, progress: bool = True, decoder="greedy", protected=()):
    """The evaluation loop over manifest-like rows; `load(row)` returns the 16 kHz waveform, or None for a
    row to leave out (an unreadable clip): such rows count in no level. `decoder` is a name, or a list of
    names decoded from the same forward passes; then the result is {decoder: levels}. `protected`: the
    modules random masks always keep (a masks.Mask, e.g. Checkpoint.protected, or indices)."""
    decoders = [decoder] if isinstance(decoder, str) else list(decoder)
    extra = {d: decoder_for(model, d) for d in decoders[1:]}
    n = model.num_modules
    plan = [(k, M.level_masks(n, k, policy, num_masks, seed, custom, protected))
            for k in M.levels(n, keep, policy, custom, protected)]
    jobs = [(li, mask) for li, (_, masks) in enumerate(plan) for mask in masks]
    hyps = {(d, li, tuple(mask)): [""] * len(items) for d in decoders for li, mask in jobs}
    seconds = {(li, tuple(mask)): 0.0 for li, mask in jobs}
    used: set[int] = set()
    durations = [float(row.get("duration") or batch_seconds) for row in items]   # unknown: a batch of its own
    batches = length_batches(durations, batch_seconds)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(batches) * len(jobs), desc="evaluate", unit="pass")
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            wavs = {i: load(items[i]) for i in batch}
            batch = [i for i in batch if wavs[i] is not None]
            if not batch:
                if bar is not None:
                    bar.update(len(jobs))
                continue
            feats, lengths = featurize(model, [wavs[i] for i in batch])
            used.update(batch)
            for li, mask in jobs:
                result = recognize(model, features=(feats, lengths), active=mask, decoder=decoders[0])
                seconds[(li, tuple(mask))] += result.forward_ms / 1000
                texts = {decoders[0]: result.texts,
                         **{d: fn(result.output.log_probs, result.output.lengths) for d, fn in extra.items()}}
                for d, decoded in texts.items():
                    for i, text in zip(batch, decoded):
                        hyps[(d, li, tuple(mask))][i] = text
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    if not used:
        raise ValueError("no clip of the manifest could be read")
    rows = sorted(used)
    refs = [items[i]["text"] for i in rows]

    def rate(key, unit: str) -> float:
        return error_rate(error_counts(refs, [hyps[key][i] for i in rows], unit))

    by_decoder = {d: [] for d in decoders}
    for (d, results), (li, (k, masks)) in ((dr, lp) for dr in by_decoder.items() for lp in enumerate(plan)):
        w = [rate((d, li, tuple(m)), "word") for m in masks]
        c = [rate((d, li, tuple(m)), "char") for m in masks]
        results.append({
            "kept": k,
            "wer": float(np.mean(w)),
            "cer": float(np.mean(c)),
            "gflops": float(np.mean([gflops_for_seconds(model.config, FLOPS_SECONDS, m) for m in masks])),
            "masks": [list(m) for m in masks],
            "latency_ms": float(np.mean([seconds[(li, tuple(m))] for m in masks]) * 1000 / len(rows)),
        })
    return by_decoder[decoder] if isinstance(decoder, str) else by_decoder


def evaluate(checkpoint, manifest_path, keep: Optional[Sequence[int]] = None, num_masks: int = 4,
             policy: str = "random", seed: int = 0, batch_seconds: float = 120.0, custom=None,
             progress: bool = True, decoder="greedy") -> dict:
    """Evaluate a checkpoint (folder or loaded Checkpoint) on a JSONL manifest. `decoder`: a name, or a list
    of names decoded from the same forward passes (then the result is {decoder: result}).

    keep: kept-module levels, e.g. [12, 9, 6, 3]; None = every level N..1 (or the custom masks' sizes).
    A student trained with protected modules (never dropped) is evaluated on random masks that keep them.
    """
    from .audio import AudioError, load_audio, load_manifest

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    items = load_manifest(manifest_path)
    if not items:
        raise ValueError(f"{manifest_path}: the manifest is empty")
    skipped = []

    def load(row):
        """The clip, or None after one line on stderr (not inside the progress bar) naming the row."""
        try:
            return load_audio(row["audio_filepath"]).samples
        except (AudioError, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            skipped.append({"line": row.get("line"), "audio_filepath": row["audio_filepath"], "error": message})
            from tqdm import tqdm
            tqdm.write(f"{manifest_path}:{row.get('line')}: skipped: {message}", file=sys.stderr)
            return None

    levels = evaluate_items(ckpt.model, items, load,
                            keep=keep, num_masks=num_masks, policy=policy, seed=seed,
                            batch_seconds=batch_seconds, custom=custom, progress=progress, decoder=decoder,
                            protected=ckpt.protected)
    def result(name: str, by_level: list) -> dict:
        return {"checkpoint": str(ckpt.path), "num_layers": ckpt.model.num_modules,
                "module_names": ckpt.model.module_names, "manifest": str(Path(manifest_path)),
                "protected": list(ckpt.protected.kept_names),
                "policy": policy, "decoder": name, "utterances": len(items) - len(skipped), "skipped": skipped,
                "levels": by_level}
    if isinstance(decoder, str):
        return result(decoder, levels)
    return {name: result(name, by_level) for name, by_level in levels.items()}
