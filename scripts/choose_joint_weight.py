"""Choose whisper-joint's CTC weight (dld_core.seq2seq.JOINT_CTC_WEIGHT) on the validation set: one beam search per
clip and mask, its finished hypotheses ranked with each weight of --weights (0: whisper-beam itself), WER per
weight and mask, as JSON.

    nice -n 10 .venv/bin/python scripts/choose_joint_weight.py --checkpoint runs/s2s_dld_ctcinit \
        --manifest corpus/whisper/valid.jsonl --limit 60 --masks all,A1,M1,A3,M3 --json results/interim/joint.json

Masks: "all", or kept module names (comma-separated), separated by ";". WER is after spoken_text and normalize_text.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dld_core.audio import load_audio, load_manifest  # noqa: E402
from dld_core.checkpoint import load_checkpoint  # noqa: E402
from dld_core.families.whisper_decoding import (DecodeOptions, best_hypothesis, finished_hypotheses,  # noqa: E402
                                                spoken_text)
from dld_core.masks import parse_modules  # noqa: E402
from dld_core.metrics import wer  # noqa: E402
from dld_core.seq2seq import input_mode_of, text_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--masks", default="all;A1,M1,A3,M3")
    ap.add_argument("--weights", default="0,0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model.eval()
    seq2seq, mode = text_model(model), input_mode_of(ckpt.info)
    rows = load_manifest(args.manifest)[: args.limit]
    wavs = [load_audio(r["audio_filepath"]).samples for r in rows]
    refs = [r["text"] for r in rows]
    weights = [float(w) for w in args.weights.split(",")]
    search = DecodeOptions(beam_size=args.beam_size)
    out = {"checkpoint": args.checkpoint, "manifest": args.manifest, "utterances": len(rows), "input_mode": mode,
           "beam_size": args.beam_size, "masks": {}}
    for spec in args.masks.split(";"):
        names = model.module_names
        kept = set(range(len(names))) if spec == "all" else set(parse_modules(spec, names))
        active = [i in kept for i in range(len(names))]
        hyps = {w: [] for w in weights}
        for wav in wavs:
            memory = seq2seq.encode([wav], active=active, mode=mode)
            finished = finished_hypotheses(seq2seq.decoder, seq2seq.tokenizer, memory, search)
            ctc = memory.ctc.log_likelihood([h.text for h in finished])
            for w in weights:
                best = best_hypothesis(finished, None, DecodeOptions(beam_size=args.beam_size, ctc_weight=w), ctc)
                hyps[w].append(spoken_text(best.text))
        out["masks"][spec] = {str(w): 100 * wer(refs, hyps[w]) for w in weights}
        print(spec, " ".join(f"w={w}: {out['masks'][spec][str(w)]:.1f}" for w in weights), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
