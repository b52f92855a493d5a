"""CPU latency of the model forward at every depth on a random clip, next to its GFLOPs.

Median over `repeats` timed runs after `warmup` runs, under torch.inference_mode, with a fixed number
of intra-op threads (1 by default: stable numbers on a shared machine). Features are computed once,
outside the timing: the numbers are for the model forward (front end + kept modules + CTC head).
`decode` adds the decoding time of the same length of real speech (the synthetic data_samples clips,
tiled) on the same threads: greedy and the lexicon + word LM beam search (median, decoder prebuilt).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from . import masks as M
from .audio import SAMPLE_RATE
from .flops import gflops
from .inference import emissions, featurize, timed
from .paths import SAMPLES, repo_path


def _latency(model, feats, lengths, mask, repeats: int, warmup: int):
    """(the forward's output, its median latency in ms over `repeats` runs after `warmup`)."""
    out, runs = timed(lambda: emissions(model, features=(feats, lengths), active=mask), repeats, warmup)
    return out, float(np.median(runs))




def _speech_clip(seconds: float) -> np.ndarray:
    """`seconds` of real speech: the synthetic data_samples clips in name order, 0.3 s apart, repeated."""
    from .audio import load_audio
    clips = [load_audio(p).samples for p in sorted(SAMPLES.glob("synth_*.wav"))]
    if not clips:
        raise FileNotFoundError(f"no synth_*.wav clips in {SAMPLES}")
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    parts, total, need = [], 0, int(seconds * SAMPLE_RATE)
    while total < need:
        for c in clips:
            parts += [c, gap]
            total += len(c) + len(gap)
    return np.concatenate(parts)[:need].astype(np.float32)


@torch.inference_mode()
def decode_ms(model, seconds: float = 10.0, repeats: int = 5) -> dict:
    """Median greedy and beam decoding time (ms) for `seconds` of speech on the current torch threads."""
    from .decode import make_decoder
    out = emissions(model, [_speech_clip(seconds)])
    result = {"clip": f"data_samples synth clips tiled to {seconds:g} s", "frames": int(out.lengths[0])}
    for kind in ("greedy", "beam"):
        try:
            dec = make_decoder(kind, model.config.vocab)
        except (ValueError, RuntimeError, OSError) as exc:      # no decoder files / flashlight: say why
            result[f"{kind}_error"] = " ".join(str(exc).split())
            continue
        _, runs = timed(lambda: dec(out.log_probs, out.lengths), repeats, warmup=1)
        result[f"{kind}_ms"] = float(np.median(runs))
    return result


def bench(checkpoint, seconds: float = 10.0, repeats: int = 5, warmup: int = 2, threads: int = 1,
          policy: str = "first_k", levels=None, seed: int = 0) -> dict:
    """{"seconds", "threads", "policy", "levels": [{"kept", "mask", "latency_ms", "gflops",
    "latency_ratio", "flops_ratio"}], "decode": {"greedy_ms", "beam_ms" (or "beam_error"), ...}} for
    kept = N..1 (or `levels`); ratios are to full depth; decode times are for full-depth log-probs."""
    if policy not in ("first_k", "every_other"):
        raise ValueError("bench policy must be 'first_k' or 'every_other'")
    model = checkpoint.model if isinstance(checkpoint, Checkpoint) else (
        checkpoint if isinstance(checkpoint, torch.nn.Module) else load_checkpoint(checkpoint).model)
    model.eval()
    n = model.num_modules
    levels = list(range(n, 0, -1)) if levels is None else [int(k) for k in levels]
    wav = (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    feats, lengths = featurize(model, [wav])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        full_ms = _latency(model, feats, lengths, None, repeats, warmup)[1]
        rows = []
        for k in levels:
            mask = M.level_masks(n, k, policy)[0]
            ms = full_ms if k == n else _latency(model, feats, lengths, mask, repeats, warmup)[1]
            rows.append({"kept": k, "mask": mask, "latency_ms": ms, "gflops": gflops(model, float(seconds), mask)})
        decode = decode_ms(model, seconds, repeats)
    finally:
        torch.set_num_threads(old_threads)
    full_gf = gflops(model, float(seconds), None)
    for r in rows:
        r["latency_ratio"] = r["latency_ms"] / full_ms
        r["flops_ratio"] = r["gflops"] / full_gf
    return {"seconds": seconds, "threads": threads, "policy": policy, "levels": rows, "decode": decode}


def bench_exported(folder, seconds: float = 10.0, repeats: int = 5, warmup: int = 2, threads: int = 1) -> dict:
    """A folder written by `python -m dld_core deploy` next to its source: median forward latency of
    `seconds` of speech (the data_samples clips, tiled) on `threads` threads, GFLOPs, parameters and size
    on disk, for the gated source model at full depth and with the mask, the static PyTorch model, and the
    exported model; plus the exported model's max |log-prob difference| to the gated one on that clip and
    whether their greedy transcripts agree. {"rows": [...], "max_abs_diff", "same_greedy_text", ...}"""
    from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from .deploy import folder_bytes, load_exported, read_info, static_subnetwork
    from .inference import decoder_for
    folder = Path(folder)
    info = read_info(folder)
    d = info["deployed"]
    source_path = repo_path(d["source_checkpoint"])          # as given, else relative to the repository
    source = load_checkpoint(source_path)
    if source.info.get("weights_sha256") != d["source_weights_sha256"]:
        raise ValueError(f"{source_path} is not the checkpoint {folder.name} was exported from (its weights' "
                         f"checksum differs)")
    kept = d["kept_indices"]
    exported = load_exported(folder, threads=threads)
    static = static_subnetwork(source.model, kept)
    wav = _speech_clip(seconds)
    label = f"exported {info.get('form', 'safetensors')}" + (f" {info.get('precision')}" if info.get("form") == "onnx" else "")
    source_bytes = sum((source_path / name).stat().st_size for name in (CONFIG_FILE, WEIGHTS_FILE))
    entries = [("gated, full depth (PyTorch)", source.model, None, None, source_bytes),     # name, model, mask,
               ("gated, with the mask (PyTorch)", source.model, kept, kept, source_bytes),  # its GFLOPs' mask, bytes
               ("static sub-network (PyTorch)", static, None, kept, None),
               (label, exported, None, kept, folder_bytes(folder))]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows, outputs = [], {}
        for name, model, mask, flops_mask, size in entries:
            feats, lengths = featurize(model, [wav])
            outputs[name], ms = _latency(model, feats, lengths, mask, repeats, warmup)
            params = d["parameters"] if model is exported else sum(p.numel() for p in model.parameters())
            rows.append({"model": name, "latency_ms": ms, "gflops": gflops(source.config, float(seconds), flops_mask),
                         "parameters": params, "bytes": size})
    finally:
        torch.set_num_threads(old_threads)
    gated, ours = outputs[entries[1][0]], outputs[label]
    n = int(gated.lengths[0])
    decode = decoder_for(source.model, "greedy")
    base = rows[0]
    for r in rows:
        r["latency_ratio"] = r["latency_ms"] / base["latency_ms"]
        r["size_ratio"] = r["bytes"] / base["bytes"] if r["bytes"] else None
    return {"exported": str(folder), "source": str(source_path), "kept": d["kept"], "seconds": seconds,
            "threads": threads, "rows": rows,
            "max_abs_diff": float((gated.log_probs[0, :n] - ours.log_probs[0, :n]).abs().max()),
            "same_greedy_text": decode(gated.log_probs, gated.lengths) == decode(ours.log_probs, ours.lengths)}
