"""The mask to recommend for a GFLOPs budget, and what it scores: the Budgets page's recommendation card.

Selection and report are kept apart, as everywhere in this project:

* `validated_masks` scores the candidate masks of every depth on validation clips, once per model
  (`layers.best_mask_for_budget` at each depth, criterion WER then KL to the full-depth model), with each
  mask's GFLOPs for a 10 s clip (`mask_gflops`);
* `recommend` picks, for a budget, the mask with the lowest validation WER among those that fit.
  These two are the one budget chooser: the Budgets card and `python -m dld_core deploy --budget` (which
  scores only the candidates within its budget: the same pick for less work) both call them;
* `evaluate_mask` measures that one mask on a test set (dld_core.evaluate, one custom mask), which is the
  only WER/CER the card shows next to the mask.

`budget_report` does all of it for the masks some budget can pick (the front of `validated_masks`) and the
test sets and decoders asked for; `python -m dld_core.recommend` writes it to results/budget_masks/ (see
scripts/budget_masks.sh), where the app reads it. A usable model is one under USABLE_WER.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import masks as M
from .checkpoint import Checkpoint, load_checkpoint
from .flops import gflops_for_seconds
from .paths import repo_path

FLOPS_SECONDS = 10.0         # GFLOPs are per 10 s clip, as in the evaluate results
USABLE_WER = 0.95            # at or above: the transcript is (nearly) all wrong; no model to recommend
DEFAULT_CLIPS = 32           # validation clips that choose the masks (deploy --budget's default)
NUM_CANDIDATES = 8           # random candidates per depth (besides every_other, first_k, whole blocks)
REPORT_FOLDER = "budget_masks"
CRITERION = "validation WER (greedy), then KL to the full-depth model"
CHOOSER = "dld_core.recommend (validated_masks: layers.best_mask_for_budget candidates of every depth; recommend)"


def mask_gflops(cfg, active) -> float:
    """GFLOPs of a mask for a FLOPS_SECONDS clip: what a budget is counted in."""
    return gflops_for_seconds(cfg, FLOPS_SECONDS, list(active))


def fits(gflops: float, limit_gflops: float) -> bool:
    return gflops <= limit_gflops * (1 + 1e-9)


def validated_masks(model, clips, num_candidates: int = NUM_CANDIDATES, seed: int = 0,
                    limit_gflops: Optional[float] = None) -> list[dict]:
    """Every candidate mask of every depth scored on `clips` ((waveform, text) pairs of a validation set):
    [{"kept", "active", "wer", "kl", "gflops"}], deepest first. The cheapest mask of each depth is always a
    candidate, so every budget from the cheapest single module up has one. limit_gflops: only the
    candidates within it are scored (those `recommend` can pick for that budget)."""
    from .layers import best_mask_for_budget

    cfg = model.config
    n = cfg.num_modules
    single = [mask_gflops(cfg, [i]) for i in range(n)]
    order = sorted(range(n), key=lambda i: (single[i], i))
    within = None if limit_gflops is None else (lambda mask: fits(mask_gflops(cfg, mask), limit_gflops))
    table = []
    for k in range(n, 0, -1):
        cheapest = sorted(order[:k])
        if within is not None and not within(cheapest):
            continue                                   # no mask of this depth fits
        best = best_mask_for_budget(model, model, clips, kept=k, num_candidates=num_candidates, seed=seed,
                                    criterion="wer", path=[{"kept": k, "active": cheapest}], fits=within)
        for c in best["candidates"]:
            table.append({"kept": k, "active": list(c["active"]), "wer": c["wer"], "kl": c["kl"],
                          "gflops": mask_gflops(cfg, c["active"])})
    return table


def _rank(entry: dict) -> tuple:
    inf = float("inf")
    return (entry["wer"] if entry.get("wer") is not None else inf,
            entry["kl"] if entry.get("kl") is not None else inf, -entry["kept"], entry["gflops"])


def recommend(table: Sequence[dict], limit_gflops: float) -> Optional[dict]:
    """The validated mask for a budget: the lowest validation WER (then KL, then more modules) among the
    masks of `table` within `limit_gflops`; None when none fits."""
    within = [e for e in table if fits(e["gflops"], limit_gflops)]
    return min(within, key=_rank) if within else None


def front(table: Sequence[dict]) -> list[dict]:
    """The masks some budget recommends: walking up the budget, each mask that beats every cheaper one."""
    out, best = [], None
    for e in sorted(table, key=lambda e: (e["gflops"],) + _rank(e)):
        if best is None or _rank(e) < _rank(best):
            out.append(e)
            best = e
    return out


def evaluate_mask(checkpoint, manifest, active: Sequence[int], decoders: Sequence[str] = ("greedy",),
                  progress: bool = False) -> dict[str, dict]:
    """One mask on a test set: {decoder: {"wer", "cer", "gflops", "utterances", "manifest"}} (the evaluate
    protocol with one custom mask, GFLOPs for a 10 s clip)."""
    from .evaluate import evaluate

    results = evaluate(checkpoint, manifest, policy="custom", custom=[list(active)], progress=progress,
                       decoder=list(decoders))
    out = {}
    for decoder, result in results.items():
        level = result["levels"][0]
        out[decoder] = {"wer": level["wer"], "cer": level["cer"], "gflops": level["gflops"],
                        "utterances": result["utterances"], "manifest": result["manifest"]}
    return out


def validation_clips(ckpt: Checkpoint, manifest: Optional[str] = None, limit: int = DEFAULT_CLIPS) -> tuple[list, str]:
    """The first `limit` (waveform, text) pairs of the model's validation set (config.json's valid_manifest,
    or `manifest`), and the manifest's path. A missing or empty set is a one-line ValueError."""
    from .audio import load_audio, load_manifest
    path = manifest or ckpt.info.get("valid_manifest")
    if not path or not isinstance(path, str):
        raise ValueError("a budget's mask is chosen on a validation set and this checkpoint records none: "
                         "pass --valid MANIFEST")
    p = repo_path(path)
    if not p.is_file():
        raise ValueError(f"a budget's mask is chosen on the validation set {path}, which is not here: "
                         "pass --valid MANIFEST")
    if limit < 1:
        raise ValueError(f"--clips must be at least 1, got {limit}")
    rows = load_manifest(p)[:limit]
    if not rows:
        raise ValueError(f"the validation set {path} is empty")
    return [(load_audio(r["audio_filepath"]).samples, r["text"]) for r in rows], str(path)


def budget_report(checkpoint, valid_manifest: Optional[str] = None, test_manifests: Sequence[str] = (),
                  decoders: Sequence[str] = ("greedy", "beam"), clips: int = DEFAULT_CLIPS,
                  num_candidates: int = NUM_CANDIDATES, seed: int = 0, log=print, on_update=None) -> dict:
    """validated_masks on the model's validation set (its first `clips` clips), and every mask of its front
    evaluated on each test manifest (in the order given) with each decoder: the JSON the Budgets page reads.
    on_update(report) is called after the scoring and after each evaluation (e.g. to save what is done: the
    app measures a missing evaluation itself)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    clip_list, valid = validation_clips(ckpt, valid_manifest, clips)
    log(f"{ckpt.path}: scoring the candidate masks of every depth on {len(clip_list)} clips of {valid}")
    table = validated_masks(ckpt.model, clip_list, num_candidates, seed)
    report = {"checkpoint": str(ckpt.path), "module_names": ckpt.model.module_names,
              "num_layers": ckpt.model.num_modules, "flops_seconds": FLOPS_SECONDS,
              "selection": {"manifest": valid, "clips": len(clip_list), "num_candidates": num_candidates,
                            "seed": seed, "criterion": CRITERION, "chooser": CHOOSER},
              "masks": table, "evaluations": []}
    if on_update is not None:
        on_update(report)
    for manifest in test_manifests:
        for entry in front(table):
            log(f"  {M.describe(entry['active'], ckpt.model.module_names)} on {manifest}")
            for decoder, res in evaluate_mask(ckpt, manifest, entry["active"], decoders).items():
                report["evaluations"].append({"active": entry["active"], "decoder": decoder, **res})
            if on_update is not None:
                on_update(report)
    return report


def find_evaluation(report: dict, active: Sequence[int], test_set: str, decoder: str, key=None) -> Optional[dict]:
    """The report's evaluation of mask `active` on a test set (key(manifest) == test_set; default: the
    manifest's file name) with a decoder; None when it was not evaluated there."""
    key = key or (lambda m: Path(str(m)).name)
    for e in report.get("evaluations", []):
        if (list(e.get("active", [])) == list(active) and e.get("decoder") == decoder
                and key(e.get("manifest")) == test_set):
            return e
    return None


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dld_core.recommend",
                                description="Choose the best mask of every budget on a model's validation set and "
                                            "evaluate those masks on test sets (the Budgets page's card).")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--valid", default=None, help="validation manifest (default: the one the checkpoint records)")
    p.add_argument("--test", action="append", default=[], help="test manifest (repeatable)")
    p.add_argument("--decoders", default="greedy,beam")
    p.add_argument("--clips", type=int, default=DEFAULT_CLIPS)
    p.add_argument("--json", required=True, help="where to write the report")
    args = p.parse_args(argv)
    from .safe_io import atomic_write_json
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = budget_report(args.checkpoint, args.valid, args.test, [d for d in args.decoders.split(",") if d],
                           args.clips, log=lambda s: print(s, file=sys.stderr, flush=True),
                           on_update=lambda r: atomic_write_json(Path(args.json), r))      # saved as it goes
    print(json.dumps({"checkpoint": report["checkpoint"], "masks": len(report["masks"]),
                      "evaluations": len(report["evaluations"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
