"""Training curves of encoder-decoder runs from their train_log.jsonl: the masked cross-entropy per step (a moving
mean over 10 logged steps, 50 steps) and the validation WER (text decoder, greedy) at full depth and with the half mask after
every epoch.

    .venv/bin/python scripts/seq2seq_curves.py --run DLD=runs/s2s_dld_ctcinit --run LD=runs/s2s_ld_ctcinit \
        --png results/seq2seq/curves.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_FOLDER (repeatable)")
    ap.add_argument("--png", required=True)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, wer_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n, spec in enumerate(args.run):
        label, folder = spec.split("=", 1)
        events = [json.loads(line) for line in (Path(folder) / "train_log.jsonl").read_text().splitlines() if line]
        steps = [e for e in events if e["event"] == "step"]
        epochs = [e for e in events if e["event"] == "epoch"]
        color = f"C{n}"
        ce = np.array([e["ce"] for e in steps])
        window = min(10, len(ce))
        smooth = np.convolve(ce, np.ones(window) / window, mode="valid")
        loss_ax.plot([e["step"] for e in steps][window - 1:], smooth, color=color, label=label)
        for i, (name, style) in enumerate((("full depth", "o-"), ("half mask", "s--"))):
            wer_ax.plot([e["step"] for e in epochs], [100 * e["valid_wer_masks"][i] for e in epochs], style,
                        color=color, label=f"{label}, {name}")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("cross-entropy, nats per token (gated, moving mean)")
    wer_ax.set_xlabel("step")
    wer_ax.set_ylabel("validation WER % (text decoder, greedy)")
    for ax in (loss_ax, wer_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
