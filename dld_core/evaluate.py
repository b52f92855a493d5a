"""WER / CER / GFLOPs at several depths (numbers of kept modules) over a manifest.

Protocol (random policy): for each level k, M distinct random masks with k kept modules, seeded per
(seed, k); WER and CER are corpus-level per mask (total edits / total reference units over the
manifest), then averaged over the masks. gflops is for a 10 s clip (comparable across test sets),
averaged over the masks. latency_ms is the batched model-forward wall time per utterance (features
excluded), averaged over the masks: a throughput figure; `dld_core.bench` gives single-clip latency.

An encoder-decoder student (dld_core/seq2seq.py) is also evaluated with its text decoder (decoders "whisper",
greedy, "whisper-beam" and "whisper-joint", beam search rescored with the CTC head; seq2seq.TextRunner): the same masks, one encoder pass in the input mode per mask;
latency_ms is then the encoder pass and that decoder's search, and gflops still the encoder and CTC head's.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import masks as M
from .checkpoint import Checkpoint, load_checkpoint
from .data import length_batches
from .flops import gflops_for_seconds
from .inference import decoder_for, featurize, recognize
from .metrics import error_counts, error_rate
from .model import DynamicCTCModel
from .seq2seq import TEXT_DECODERS, TextRunner, decode_options, input_mode_of

FLOPS_SECONDS = 10.0


class CTCRunner:
    """The per-batch step of the evaluation loop for CTC decoders: features once per batch; per mask one forward,
    decoded by each decoder ("greedy", "beam"); the seconds are the forward's (the same for every decoder)."""
    max_clips = 0                      # batches: batch_seconds of padded audio, whatever the number of clips

    def __init__(self, model: DynamicCTCModel, decoders: Sequence[str]):
        self.model, self.decoders = model, list(decoders)
        self.extra = {d: decoder_for(model, d) for d in self.decoders[1:]}

    def prepare(self, waveforms: Sequence):
        return featurize(self.model, waveforms)

    def run(self, features, mask) -> tuple[dict[str, list[str]], dict[str, float]]:
        result = recognize(self.model, features=features, active=mask, decoder=self.decoders[0])
        texts = {self.decoders[0]: result.texts,
                 **{d: fn(result.output.log_probs, result.output.lengths) for d, fn in self.extra.items()}}
        return texts, {d: result.forward_ms / 1000 for d in self.decoders}


def runner_for(model: DynamicCTCModel, decoders: Sequence[str], input_mode: str = "padded", beam_size: int = 5):
    """CTCRunner, or seq2seq.TextRunner for the text decoder's names (TEXT_DECODERS); the two kinds run apart."""
    text = [d in TEXT_DECODERS for d in decoders]
    if any(text) and not all(text):
        raise ValueError(f"CTC decoders and text decoders ({', '.join(TEXT_DECODERS)}) are evaluated in separate runs")
    return TextRunner(model, decoders, input_mode, beam_size) if all(text) else CTCRunner(model, decoders)


def evaluate_items(model: DynamicCTCModel, items: Sequence[dict], load, keep: Optional[Sequence[int]] = None,
                   num_masks: int = 4, policy: str = "random", seed: int = 0, batch_seconds: float = 120.0,
                   custom=None, progress: bool = True, decoder="greedy", protected=(), input_mode: str = "padded",
                   beam_size: int = 5):
    """The evaluation loop over manifest-like rows; `load(row)` returns the 16 kHz waveform, or None for a
    row to leave out (an unreadable clip): such rows count in no level. `decoder` is a name, or a list of
    names decoded from the same forward passes; then the result is {decoder: levels}. `protected`: the
    modules random masks always keep (a masks.Mask, e.g. Checkpoint.protected, or indices). Text decoders
    (an encoder-decoder student) run with `input_mode` and, for beam search, `beam_size`."""
    decoders = [decoder] if isinstance(decoder, str) else list(decoder)
    runner = runner_for(model, decoders, input_mode, beam_size)
    n = model.num_modules
    plan = [(k, M.level_masks(n, k, policy, num_masks, seed, custom, protected))
            for k in M.levels(n, keep, policy, custom, protected)]
    jobs = [(li, mask) for li, (_, masks) in enumerate(plan) for mask in masks]
    hyps = {(d, li, tuple(mask)): [""] * len(items) for d in decoders for li, mask in jobs}
    seconds = {(d, li, tuple(mask)): 0.0 for d in decoders for li, mask in jobs}
    used: set[int] = set()
    durations = [float(row.get("duration") or batch_seconds) for row in items]   # unknown: a batch of its own
    batches = length_batches(durations, batch_seconds, runner.max_clips)
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
            prepared = runner.prepare([wavs[i] for i in batch])
            used.update(batch)
            for li, mask in jobs:
                texts, spent = runner.run(prepared, mask)
                for d, decoded in texts.items():
                    seconds[(d, li, tuple(mask))] += spent[d]
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
            "latency_ms": float(np.mean([seconds[(d, li, tuple(m))] for m in masks]) * 1000 / len(rows)),
        })
    return by_decoder[decoder] if isinstance(decoder, str) else by_decoder


def evaluate(checkpoint, manifest_path, keep: Optional[Sequence[int]] = None, num_masks: int = 4,
             policy: str = "random", seed: int = 0, batch_seconds: float = 120.0, custom=None,
             progress: bool = True, decoder="greedy", input_mode: Optional[str] = None, beam_size: int = 5) -> dict:
    """Evaluate a checkpoint (folder or loaded Checkpoint) on a JSONL manifest. `decoder`: a name, or a list
    of names decoded from the same forward passes (then the result is {decoder: result}).

    keep: kept-module levels, e.g. [12, 9, 6, 3]; None = every level N..1 (or the custom masks' sizes).
    A student trained with protected modules (never dropped) is evaluated on random masks that keep them.
    Text decoders ("whisper", "whisper-beam", "whisper-joint") read `input_mode` (None: the one the student was trained with).
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

    input_mode = input_mode or input_mode_of(ckpt.info)
    levels = evaluate_items(ckpt.model, items, load,
                            keep=keep, num_masks=num_masks, policy=policy, seed=seed,
                            batch_seconds=batch_seconds, custom=custom, progress=progress, decoder=decoder,
                            protected=ckpt.protected, input_mode=input_mode, beam_size=beam_size)
    def result(name: str, by_level: list) -> dict:
        search = decode_options(name, beam_size) if name in TEXT_DECODERS else None
        return {"checkpoint": str(ckpt.path), "num_layers": ckpt.model.num_modules,
                "module_names": ckpt.model.module_names, "manifest": str(Path(manifest_path)),
                "protected": list(ckpt.protected.kept_names),
                "policy": policy, "decoder": name, "utterances": len(items) - len(skipped), "skipped": skipped,
                **({"input_mode": input_mode, "beam_size": search.beam_size, "ctc_weight": search.ctc_weight}
                   if search else {}),
                "levels": by_level}
    if isinstance(decoder, str):
        return result(decoder, levels)
    return {name: result(name, by_level) for name, by_level in levels.items()}
