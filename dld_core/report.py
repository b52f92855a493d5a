"""Results from `evaluate` JSON files -> markdown tables and a WER-vs-GFLOPs figure (PNG).

Files are named <model>.<set>.<decoder>.json (e.g. dld.synthetic_test.beam.json; a name without a
decoder part is greedy, as older results were). One table per test set and decoder, one column per model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from dld_core.checkpoint import read_config
from dld_core.decode import DECODERS as CTC_DECODERS
from dld_core.eval_sets import EVAL_SETS
from dld_core.safe_io import CheckpointError
from dld_core.seq2seq import TEXT_DECODERS

# display order and names; any other model name found is shown after these, as it is
MODELS = {"teacher": "teacher", "ld": "LD", "dld": "DLD", "conformer_ld": "conformer LD",
          "conformer_dld": "conformer DLD", "scratch_teacher": "scratch teacher", "scratch_ld": "scratch LD",
          "scratch_dld": "scratch DLD"}
SETS = {s.key: s.name for s in EVAL_SETS}
DECODERS = CTC_DECODERS + TEXT_DECODERS     # the CTC head's decoders, then an encoder-decoder student's text decoder
COLORS = {"teacher": "#7f7f7f", "ld": "#1f77b4", "dld": "#d62728", "conformer_ld": "#17becf",
          "conformer_dld": "#ff7f0e", "scratch_teacher": "#8c564b", "scratch_ld": "#9467bd", "scratch_dld": "#2ca02c"}


def load_results(folder: str | Path, test_set: str | None = None) -> dict[tuple[str, str], dict[str, dict]]:
    """{(set, decoder): {model: evaluate-json}} for every results file in the folder (of one test set if given)."""
    found: dict[tuple[str, str], dict[str, dict]] = {}
    for path in sorted(Path(folder).glob(f"*.{test_set}*.json" if test_set else "*.json")):
        parts = path.stem.split(".")
        if len(parts) not in (2, 3) or parts[1] not in SETS or (len(parts) == 3 and parts[2] not in DECODERS):
            continue
        model, test_set, decoder = parts[0], parts[1], parts[2] if len(parts) == 3 else "greedy"
        found.setdefault((test_set, decoder), {})[model] = json.loads(path.read_text())
    return found


def ordered(models) -> list[str]:
    return sorted(models, key=lambda m: (list(MODELS).index(m) if m in MODELS else len(MODELS), m))


def markdown_table(results: dict[str, dict]) -> str:
    models = ordered(results)
    levels = sorted({lv["kept"] for r in results.values() for lv in r["levels"]}, reverse=True)
    by = {m: {lv["kept"]: lv for lv in results[m]["levels"]} for m in models}
    head = "| kept | " + " | ".join(f"{MODELS.get(m, m)} WER % (CER %) | GFLOPs" for m in models) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(models))]
    for k in levels:
        cells = [f"{100 * by[m][k]['wer']:.1f} ({100 * by[m][k]['cer']:.1f}) | {by[m][k]['gflops']:.2f}"
                 if k in by[m] else "- | -" for m in models]
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_wer_vs_gflops(panels: dict[str, dict[str, dict]], out_png: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, results) in zip(axes[0], panels.items()):
        for model in ordered(results):
            levels = sorted(results[model]["levels"], key=lambda lv: lv["gflops"])
            ax.plot([lv["gflops"] for lv in levels], [100 * lv["wer"] for lv in levels],
                    "o--" if model.startswith("scratch_") else "o-", color=COLORS.get(model), label=MODELS.get(model, model) + (" (static)" if model == "teacher" else ""))
        ax.set_xlabel("GFLOPs for a 10 s clip")
        ax.set_ylabel("WER (%)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 105)                       # WER can pass 100%: such points sit on the top edge
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def importance_table(results_dir: str | Path) -> str:
    """Layer importance (`importance` JSONs, importance.<model>.json): per module, the drop-one change of WER
    from the start mask with its bootstrap interval and the change of KL to the teacher, one column per model;
    then each model's greedy drop order. "" when there are none."""
    found = {p.stem.split(".", 1)[1]: json.loads(p.read_text())
             for p in sorted(Path(results_dir).glob("importance.*.json"))}
    if not found:
        return ""
    models = ordered(found)
    names = found[models[0]]["module_names"]
    rows = ["| dropped | " + " | ".join(f"{MODELS.get(m, m)} ΔWER pts [95% CI] · ΔKL" for m in models) + " |",
            "|" + "---|" * (1 + len(models))]
    for i, name in enumerate(names):
        cells = []
        for m in models:
            imp = found[m]["importance"]
            d, ci, kl = imp["delta_wer"][i], (imp.get("delta_wer_ci") or [None] * len(names))[i], imp["delta_kl"][i]
            cells.append("-" if d is None else f"{100 * d:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")
                         + (f" · {kl:+.2f}" if kl is not None else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    rows.append("| start WER % | " + " | ".join(f"{100 * found[m]['importance']['base_wer']:.1f}" for m in models) + " |")
    for m in models:
        path = found[m]["path"]
        steps = ", ".join(f"-{names[s['dropped']]} {100 * s['wer']:.1f}" for s in path if s["dropped"] is not None)
        rows.append(f"\n{MODELS.get(m, m)} greedy drop path (WER % after each drop): {steps}")
    first = found[models[0]]
    return (f"Decoder: {first['decoder']}; {first['utterances']} utterances of {first['manifest']}.\n\n"
            + "\n".join(rows) + "\n")


# LD and DLD checkpoint folders trained as a pair (same data, steps and gate draws)
PAIRS = (("ld", "dld"), ("conformer_ld", "conformer_dld"))


def time_to_quality(ld_metrics: dict, dld_metrics: dict) -> dict:
    """The paper's training-time claim, measured on our runs: how many steps and seconds DLD needed to reach
    LD's best full-depth validation WER, from each trainer's metrics.json history (one entry per epoch).
    {"target", "ld": entry, "dld": entry or None} (None: DLD never got there)."""
    ld_hist, dld_hist = ld_metrics.get("history") or [], dld_metrics.get("history") or []
    if not ld_hist or not dld_hist:
        raise ValueError("both metrics need a per-epoch history")
    best = min(ld_hist, key=lambda e: (e["valid_wer"], e["step"]))
    reached = next((e for e in dld_hist if e["valid_wer"] <= best["valid_wer"]), None)
    return {"target": best["valid_wer"], "ld": best, "dld": reached}


def training_table(checkpoints_dir: str | Path) -> str:
    """One row per LD/DLD pair in PAIRS found under checkpoints_dir: total steps and seconds of each, then
    the steps and seconds each needed to reach LD's best full-depth validation WER. "" when none."""
    rows = []
    for ld, dld in PAIRS:
        paths = [Path(checkpoints_dir) / n / "metrics.json" for n in (ld, dld)]
        if not all(p.is_file() for p in paths):
            continue
        ld_m, dld_m = (json.loads(p.read_text()) for p in paths)
        t = time_to_quality(ld_m, dld_m)
        got = t["dld"]
        dld_cell = "not reached" if got is None else (
            f"{got['step']:,} steps, {got['train_seconds']:,.0f} s ({got['step'] / t['ld']['step'] - 1:+.0%} steps, "
            f"{got['train_seconds'] / t['ld']['train_seconds'] - 1:+.0%} time)")
        rows.append(f"| {MODELS.get(ld, ld)} / {MODELS.get(dld, dld)} | {ld_m['steps']:,} / {dld_m['steps']:,} | "
                    f"{ld_m['train_seconds']:,.0f} / {dld_m['train_seconds']:,.0f} | {100 * t['target']:.1f} | "
                    f"{t['ld']['step']:,} steps, {t['ld']['train_seconds']:,.0f} s | {dld_cell} |")
    if not rows:
        return ""
    return ("| pair (LD / DLD) | steps | train seconds | LD's best valid WER % (full depth, greedy) | LD reached it at "
            "| DLD reached it at |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def write_report(results_dir: str | Path, out_dir: str | Path,
                 checkpoints_dir: str | Path | None = None) -> dict[str, Path]:
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_results(results_dir)
    if not loaded:
        raise FileNotFoundError(f"no <model>.<set>[.<decoder>].json evaluate results in {results_dir}")
    md = [f"### {SETS[s]}, {d} decoding\n\n{markdown_table(res)}\n"
          for (s, d), res in sorted(loaded.items(), key=lambda kv: (list(SETS).index(kv[0][0]), DECODERS.index(kv[0][1])))]
    importance = importance_table(results_dir)
    if importance:
        md.append(f"### Layer importance (drop one module from full depth)\n\n{importance}")
    training = training_table(checkpoints_dir) if checkpoints_dir else ""
    if training:
        md.append(f"### Training time (from each student's metrics.json)\n\n{training}")
    (out_dir / "results.md").write_text("\n".join(md))
    best = {}                                     # one panel per set: beam when there is one
    for (s, d), res in loaded.items():
        if d == "beam" or s not in best:
            best[s] = (d, res)
    panels = {f"{SETS[s]}\n({d} decoding)": res for s, (d, res) in
              sorted(best.items(), key=lambda kv: list(SETS).index(kv[0]))}
    png = plot_wer_vs_gflops(panels, out_dir / "wer_vs_gflops.png")
    return {"markdown": out_dir / "results.md", "figure": png}


def ablation_runs(results_dir: str | Path) -> dict[str, dict]:
    """{run name: evaluate JSON} for every <name>.json in the folder, sorted by name."""
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("*.json"))}
    if not runs:
        raise FileNotFoundError(f"no evaluate results in {results_dir}")
    return runs


def ablation_table(results_dir: str | Path) -> str:
    """One row per ablation run (<name>.json from evaluate): WER / CER and GFLOPs at each share of modules
    kept (runs with 8 sub-block gates and 4 block gates line up: 4 of 4 blocks is 8 of 8 sub-blocks), and
    the means over each run's levels."""
    from fractions import Fraction
    rows = [(name, {Fraction(lv["kept"], res["num_layers"]): lv for lv in res["levels"]})
            for name, res in ablation_runs(results_dir).items()]
    shares = sorted({f for _, by in rows for f in by}, reverse=True)
    out = ["| run | " + " | ".join(f"{100 * float(f):.3g}% kept: WER / CER % · GFLOPs" for f in shares)
           + " | mean WER / CER % |", "|" + "---|" * (len(shares) + 2)]
    for name, by in rows:
        cells = [f"{100 * by[f]['wer']:.1f} / {100 * by[f]['cer']:.1f} · {by[f]['gflops']:.2f}" if f in by else "-"
                 for f in shares]
        mean_w = 100 * sum(lv["wer"] for lv in by.values()) / len(by)
        mean_c = 100 * sum(lv["cer"] for lv in by.values()) / len(by)
        out.append(f"| {name} | " + " | ".join(cells) + f" | {mean_w:.1f} / {mean_c:.1f} |")
    return "\n".join(out)


def ablation_figure(results_dir: str | Path, out_png: str | Path) -> Path:
    """WER against GFLOPs of every ablation run: the fronts the recipe is chosen on."""
    runs = ablation_runs(results_dir)
    first = next(iter(runs.values()))
    title = (f"{Path(results_dir).name}: {Path(str(first.get('manifest', '?'))).name}, "
             f"{first.get('decoder', 'greedy')} decoding")
    return plot_wer_vs_gflops({title: runs}, out_png)


# ------------------------------------------------------------------------------------------ the default student
DEFAULT_SET = "real_dev"                  # the default student is chosen on real speech
FALLBACK_STUDENTS = ("dld", "teacher")    # without results: the Whisper DLD student, else the teacher


def half_compute_level(result: dict) -> dict:
    """The level (random masks) of an evaluate result whose GFLOPs are closest to half of full depth's."""
    full = max(lv["gflops"] for lv in result["levels"])
    return min(result["levels"], key=lambda lv: (abs(lv["gflops"] - full / 2), -lv["kept"]))


def default_student(checkpoints_dir: str | Path, results_dir: str | Path) -> Path:
    """The student the app and the CLI open by default: of the DLD students under checkpoints_dir with results on
    the real dev set (<folder>.real_dev.<decoder>.json, any decoder, the better one counts: in results_dir itself,
    or in a folder below it when the file records that checkpoint, e.g. results/seq2seq/s2s_dld.real_dev.whisper-joint
    .json measured on checkpoints/s2s_dld; a run's results there do not count), the one with the lowest WER at half
    compute (half_compute_level); ties go to the first name. Without such results: FALLBACK_STUDENTS, the first that
    exists."""
    checkpoints_dir, results_dir = Path(checkpoints_dir), Path(results_dir)
    best: dict[str, float] = {}
    folders = [results_dir] + (sorted(p for p in results_dir.iterdir() if p.is_dir()) if results_dir.is_dir() else [])
    for folder in folders:
        for by_model in load_results(folder, DEFAULT_SET).values():
            for model, result in by_model.items():
                measured_on = Path(str(result.get("checkpoint", "")))
                if folder != results_dir and (measured_on.name, measured_on.parent.name) != (model, checkpoints_dir.name):
                    continue
                if _recipe(checkpoints_dir / model) == "dld":
                    best[model] = min(best.get(model, math.inf), half_compute_level(result)["wer"])
    if best:
        return checkpoints_dir / min(sorted(best), key=best.get)
    return next((checkpoints_dir / n for n in FALLBACK_STUDENTS if (checkpoints_dir / n).is_dir()),
                checkpoints_dir / FALLBACK_STUDENTS[0])


def _recipe(folder: Path):
    try:
        return read_config(folder).get("recipe")
    except CheckpointError:
        return None
