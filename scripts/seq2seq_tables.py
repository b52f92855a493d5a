"""The README's encoder-decoder tables from evaluate JSONs: the real dev set at every kept level (the DLD and LD
students with each text decoder found, and the shipped CTC DLD student's beam decoder on the same set), and the
synthetic and FSDD subsets. WER % (CER %), the mean over the random masks of a level.

    .venv/bin/python scripts/seq2seq_tables.py --results results/seq2seq --dld s2s_dld --ld s2s_ld --ctc results/dld
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DECODERS = {"whisper": "greedy", "whisper-beam": "beam", "whisper-joint": "joint"}


def levels(path: Path) -> dict[int, dict]:
    return {lv["kept"]: lv for lv in json.loads(path.read_text())["levels"]} if path.is_file() else {}


def cell(lv) -> str:
    return "-" if lv is None else f"{100 * lv['wer']:.1f} ({100 * lv['cer']:.1f})"


def table(folder: Path, test_set: str, students: dict[str, str], ctc: str | None) -> str:
    columns = [(f"{label} {short}", levels(folder / f"{name}.{test_set}.{dec}.json"))
               for label, name in students.items() for dec, short in DECODERS.items()]
    columns = [(h, c) for h, c in columns if c]
    if ctc:
        columns.append(("CTC DLD beam", levels(Path(f"{ctc}.{test_set}.beam.json"))))
    kept = sorted({k for _, c in columns[:-1 if ctc else None] for k in c}, reverse=True)
    rows = ["| kept | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows += [f"| {k} | " + " | ".join(cell(c.get(k)) for _, c in columns) + " |" for k in kept]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--dld", default="s2s_dld")
    ap.add_argument("--ld", default="s2s_ld")
    ap.add_argument("--ctc", default="results/dld", help="the CTC student's results prefix (<prefix>.<set>.beam.json)")
    args = ap.parse_args()
    for test_set in ("real_dev", "synthetic_test", "fsdd_test"):
        print(f"\n{test_set}\n")
        print(table(Path(args.results), test_set, {"DLD": args.dld, "LD": args.ld}, args.ctc))


if __name__ == "__main__":
    main()
