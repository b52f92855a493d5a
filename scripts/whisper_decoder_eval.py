"""WER and latency of Whisper tiny.en with its own decoder (dld_core/families/whisper_decoding.py), unchanged
(at full depth, or with the encoder modules --keep names), on the sample clips and the real dev set, for each
input mode, padding and decoder.

    nice -n 10 .venv/bin/python scripts/whisper_decoder_eval.py [--sets samples,real_dev] [--modes padded,clip]
        [--paddings zero,silence] [--beams 1,5] [--guard-off] [--fp32-logits] [--latency] [--threads 1]
        [--keep A1,M1,A3,M3]

WER is after spoken_text (digits as words, "Mr." -> mister) and the project's normalize_text; each line also
gives the mean decoding time per clip (wall and CPU; the encoder pass is timed apart, once per clip) and the mean
number of tokens. --guard-off adds each decoder without the length guard and the repetition stop. --latency
times transcribe() of a 10.0 s real clip (two LibriVox clips of the real dev set joined) on --threads threads:
median of 5 runs after a warm-up (the clip mode's padding tail is cached by then).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dld_core.families import whisper as W  # noqa: E402
from dld_core.families.whisper_decoding import DecodeOptions, WhisperSeq2Seq, spoken_text  # noqa: E402
from dld_core.masks import Mask  # noqa: E402
from dld_core.metrics import wer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETS = {"samples": REPO / "data_samples" / "manifest.jsonl", "real_dev": REPO / "corpus" / "real_dev" / "real_dev.jsonl",
        "valid": REPO / "corpus" / "whisper" / "valid.jsonl"}            # the seq2seq students' validation set
NO_GUARD = dict(tokens_per_second=1e6, max_repeats=None)


def load(manifest: Path):
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return rows, [sf.read(manifest.parent / r["audio_filepath"], dtype="float32")[0] for r in rows]


def ten_second_clip() -> np.ndarray:
    rows, wavs = load(SETS["real_dev"])
    librivox = [w for r, w in zip(rows, wavs) if r["audio_filepath"].startswith("audio/librivox")]
    return np.concatenate(librivox)[: 10 * 16000]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="samples,real_dev")
    ap.add_argument("--modes", default="padded,clip")
    ap.add_argument("--paddings", default="zero")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--guard-off", action="store_true", help="also decode without the length guard and repetition stop")
    ap.add_argument("--fp32-logits", action="store_true",
                    help="also decode greedily with the float32 output projection (the default is float16)")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", default="", help="encoder modules to keep, e.g. A1,M1,A3,M3 (default: all)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = WhisperSeq2Seq.from_pretrained()
    active = Mask.parse(args.keep, W.module_names(W.config_from_pretrained())) if args.keep else None
    print(f"encoder modules: {active.describe() if active is not None else 'all'}", flush=True)
    combos = [(m, p) for m in args.modes.split(",") for p in (args.paddings.split(",") if m != "clip_bare" else ["-"])]
    if args.latency:
        clip = ten_second_clip()
        for mode, padding in combos:
            for half in (True, False) if args.fp32_logits else (True,):
                options = DecodeOptions(half_logits=half)
                model.transcribe([clip], active, mode=mode, padding=padding.strip("-") or "zero",
                                 options=options)  # warm-up
                runs = []
                for _ in range(5):
                    w0, c0 = time.perf_counter(), time.process_time()
                    memory = model.encode([clip], active, mode=mode, padding=padding.strip("-") or "zero")
                    w1, c1 = time.perf_counter(), time.process_time()
                    hyp = model.decode(memory, options)[0]
                    runs.append((w1 - w0, time.perf_counter() - w1, c1 - c0, time.process_time() - c1))
                enc, dec, enc_cpu, dec_cpu = np.median(runs, axis=0) * 1000
                print(f"latency 10.0 s clip, {args.threads} thread(s), {mode}/{padding}, greedy"
                      f"{'' if half else ', fp32 logits'}: {enc + dec:.0f} ms wall (encode {enc:.0f}, decode {dec:.0f}), "
                      f"{enc_cpu + dec_cpu:.0f} ms CPU (encode {enc_cpu:.0f}, decode {dec_cpu:.0f}); "
                      f"{len(hyp.tokens)} tokens: {hyp.text!r}", flush=True)
    for name in [s for s in args.sets.split(",") if s]:
        rows, wavs = load(SETS[name])
        subsets = {name: list(range(len(rows)))}
        if name == "samples":
            subsets = {"samples": list(range(len(rows))),
                       "samples/synthetic": [i for i, r in enumerate(rows) if r["audio_filepath"].startswith("synth")],
                       "samples/fsdd": [i for i, r in enumerate(rows) if r["audio_filepath"].startswith("fsdd")]}
        for mode, padding in combos:
            model.encode(wavs[:1], active, mode=mode, padding=padding.strip("-") or "zero")    # the padding tail
            t0, c0 = time.perf_counter(), time.process_time()
            memory = [model.encode([w], active, mode=mode, padding=padding.strip("-") or "zero") for w in wavs]
            wall_ms, cpu_ms = 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
            print(f"{name:18s} {mode:6s} {padding:7s} encode {wall_ms / len(wavs):.0f} ms wall, "
                  f"{cpu_ms / len(wavs):.0f} ms CPU per clip", flush=True)
            variants = [(f"beam {b}" if int(b) > 1 else "greedy", DecodeOptions(beam_size=int(b)))
                        for b in args.beams.split(",")]
            if args.fp32_logits:
                variants += [("greedy, fp32 logits", DecodeOptions(half_logits=False))]
            if args.guard_off:
                variants += [(f"{label}, no guard", DecodeOptions(beam_size=o.beam_size, **NO_GUARD))
                             for label, o in list(variants) if o.half_logits]
            for label, options in variants:
                t0, c0 = time.perf_counter(), time.process_time()
                hyps = [model.decode(m, options)[0] for m in memory]
                wall_ms, cpu_ms = 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
                for subset, idx in subsets.items():
                    rate = wer([rows[i]["text"] for i in idx], [spoken_text(hyps[i].text) for i in idx])
                    stops = [hyps[i].stop for i in idx]
                    print(f"{subset:18s} {mode:6s} {padding:7s} {label:18s} WER {100 * rate:5.1f}%  "
                          f"({len(idx)} clips; stops: {', '.join(f'{s} {stops.count(s)}' for s in sorted(set(stops)))}; "
                          f"{np.mean([len(hyps[i].tokens) for i in idx]):.1f} tokens per clip)", flush=True)
                print(f"{name:18s} {mode:6s} {padding:7s} {label:18s} decode {wall_ms / len(wavs):.0f} ms wall, "
                      f"{cpu_ms / len(wavs):.0f} ms CPU per clip", flush=True)
                if args.verbose:
                    for r, h in zip(rows, hyps):
                        print(f"    {h.text!r} | {r['text']}")


if __name__ == "__main__":
    main()
