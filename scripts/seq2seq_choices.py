"""Choices made on the validation set for an encoder-decoder student (dld_core/seq2seq.py), with its text decoder:

* ``joint-weight``: whisper-joint's CTC weight (dld_core.seq2seq.JOINT_CTC_WEIGHT): one beam search per clip and
  mask, its finished hypotheses ranked with each weight of --weights (0: whisper-beam itself); WER per weight and mask.
* ``masks``: the best mask of every depth in --keep (greedy WER, then fewer GFLOPs), then those masks evaluated on
  the --test sets: the seq2seq counterpart of dld_core.recommend's CTC chooser (scripts/budget_masks.sh), with the
  same candidates (masks.candidate_masks: every_other, first_k, whole blocks, random ones) that keep the student's
  protected modules.

    nice -n 10 .venv/bin/python scripts/seq2seq_choices.py joint-weight --checkpoint runs/s2s_dld_ctcinit \
        --valid corpus/whisper/valid.jsonl --clips 60 --masks "all;A1,M1,A3,M3" --json results/seq2seq/joint.json
    nice -n 10 .venv/bin/python scripts/seq2seq_choices.py masks --checkpoint runs/s2s_dld_ctcinit \
        --valid corpus/whisper/valid.jsonl --clips 32 --keep 6,4,2 --test corpus/real_dev/real_dev.jsonl \
        --decoders whisper,whisper-joint --json results/seq2seq/s2s_dld.masks.json

WER is after spoken_text and normalize_text; JSON is rewritten as results come.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dld_core import masks as M  # noqa: E402
from dld_core.checkpoint import load_checkpoint  # noqa: E402
from dld_core.families.whisper_decoding import (DecodeOptions, best_hypothesis, finished_hypotheses,  # noqa: E402
                                                spoken_text)
from dld_core.masks import parse_modules  # noqa: E402
from dld_core.metrics import wer  # noqa: E402
from dld_core.recommend import evaluate_mask, mask_gflops, validation_clips  # noqa: E402
from dld_core.seq2seq import input_mode_of, text_model  # noqa: E402


def joint_weight(args, ckpt, seq2seq, mode, wavs, refs) -> Iterator[dict]:
    names = ckpt.model.module_names
    weights = [float(w) for w in args.weights.split(",")]
    search = DecodeOptions(beam_size=args.beam_size)
    out = {"beam_size": args.beam_size, "wer_by_mask_and_weight": {}}
    for spec in args.masks.split(";"):
        kept = set(range(len(names))) if spec == "all" else set(parse_modules(spec, names))
        active = [i in kept for i in range(len(names))]
        hyps = {w: [] for w in weights}
        for wav in wavs:
            memory = seq2seq.encode([wav], active=active, mode=mode)
            finished = finished_hypotheses(seq2seq.decoder, seq2seq.tokenizer, memory, search)
            ctc = memory.ctc.log_likelihood([h.text for h in finished])
            for w in weights:
                best = best_hypothesis(finished, DecodeOptions(beam_size=args.beam_size, ctc_weight=w), ctc)
                hyps[w].append(spoken_text(best.text))
        out["wer_by_mask_and_weight"][spec] = row = {str(w): 100 * wer(refs, hyps[w]) for w in weights}
        print(spec, " ".join(f"w={w}: {row[str(w)]:.1f}" for w in weights), flush=True)
        yield out


def masks(args, ckpt, seq2seq, mode, wavs, refs) -> Iterator[dict]:
    model = ckpt.model
    n, protected = model.num_modules, set(ckpt.protected.kept)
    out = {"criterion": "validation WER (text decoder, greedy), then GFLOPs", "protected": sorted(protected),
           "masks": [], "evaluations": []}
    for k in (int(x) for x in args.keep.split(",")):
        candidates = [c for c in M.candidate_masks(n, k, model.config.module_blocks, args.candidates, seed=0)
                      if protected <= set(c)]
        scored = []
        for active in candidates:
            mask = [i in active for i in range(n)]
            hyps = [spoken_text(h.text) for h in seq2seq.transcribe(wavs, mask, mode, DecodeOptions())]
            scored.append({"kept": k, "active": active, "wer": wer(refs, hyps),
                           "gflops": mask_gflops(model.config, active)})
        best = min(scored, key=lambda e: (e["wer"], e["gflops"]))
        out["masks"] += [{**e, "chosen": e is best} for e in scored]
        print(f"kept {k}: {len(scored)} candidates, best {M.describe(best['active'], model.module_names)} "
              f"valid WER {100 * best['wer']:.1f}%", flush=True)
        yield out
        for manifest in args.test:
            for decoder, res in evaluate_mask(ckpt, manifest, best["active"], args.decoders.split(",")).items():
                out["evaluations"].append({"kept": k, "active": best["active"], "decoder": decoder, **res})
                print(f"  {Path(manifest).name} {decoder}: WER {100 * res['wer']:.1f}% CER {100 * res['cer']:.1f}%",
                      flush=True)
            yield out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("choice", choices=("joint-weight", "masks"))
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--clips", type=int, default=32, help="the first N clips of --valid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    ap.add_argument("--masks", default="all;A1,M1,A3,M3", help="joint-weight: \"all\" or kept module names, ';'-separated")
    ap.add_argument("--weights", default="0,0.1,0.3,0.5,0.7,0.9", help="joint-weight: CTC weights to compare")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--keep", default="6,4,2", help="masks: kept-module counts to choose a mask for")
    ap.add_argument("--candidates", type=int, default=12, help="masks: random candidates per depth")
    ap.add_argument("--test", action="append", default=[], help="masks: test manifests (repeatable)")
    ap.add_argument("--decoders", default="whisper,whisper-joint", help="masks: decoders on the test sets")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.model.eval()
    seq2seq, mode = text_model(ckpt.model), input_mode_of(ckpt.info)
    clips, valid = validation_clips(ckpt, args.valid, args.clips)
    wavs, refs = [w for w, _ in clips], [t for _, t in clips]
    head = {"checkpoint": args.checkpoint, "choice": args.choice,
            "selection": {"manifest": valid, "clips": len(clips), "input_mode": mode}}
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for out in {"joint-weight": joint_weight, "masks": masks}[args.choice](args, ckpt, seq2seq, mode, wavs, refs):
        json_path.write_text(json.dumps({**head, **out}, indent=1))


if __name__ == "__main__":
    main()
