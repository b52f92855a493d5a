"""Results from `evaluate` JSON files -> a markdown table and a WER-vs-GFLOPs figure (PNG)."""
from __future__ import annotations

import json
from pathlib import Path

MODELS = ("teacher", "ld", "dld")
COLORS = {"teacher": "#7f7f7f", "ld": "#1f77b4", "dld": "#d62728"}


def load_results(folder: str | Path, test_set: str) -> dict[str, dict]:
    """{model: evaluate-json} for files named <model>.<test_set>.json."""
    found = {}
    for model in MODELS:
        path = Path(folder) / f"{model}.{test_set}.json"
        if path.is_file():
            found[model] = json.loads(path.read_text())
    return found


def markdown_table(results: dict[str, dict]) -> str:
    models = [m for m in MODELS if m in results]
    levels = sorted({lv["kept"] for r in results.values() for lv in r["levels"]}, reverse=True)
    by = {m: {lv["kept"]: lv for lv in results[m]["levels"]} for m in models}
    head = "| kept | GFLOPs (10 s) | " + " | ".join(f"{m.upper() if m != 'teacher' else 'teacher'} WER % (CER %)" for m in models) + " |"
    rows = [head, "|" + "---|" * (2 + len(models))]
    for k in levels:
        gf = next((by[m][k]["gflops"] for m in models if k in by[m]), float("nan"))
        cells = [f"{100 * by[m][k]['wer']:.1f} ({100 * by[m][k]['cer']:.1f})" if k in by[m] else "-" for m in models]
        rows.append(f"| {k} | {gf:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_wer_vs_gflops(results_by_set: dict[str, dict[str, dict]], out_png: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results_by_set), figsize=(5.5 * len(results_by_set), 4.2), squeeze=False)
    for ax, (title, results) in zip(axes[0], results_by_set.items()):
        for model, res in results.items():
            levels = sorted(res["levels"], key=lambda lv: lv["gflops"])
            ax.plot([lv["gflops"] for lv in levels], [100 * lv["wer"] for lv in levels], "o-",
                    color=COLORS.get(model), label=model.upper() if model != "teacher" else "teacher (static)")
        ax.set_xlabel("GFLOPs for a 10 s clip")
        ax.set_ylabel("WER (%)")
        ax.set_title(title)
        top = max(100 * lv["wer"] for res in results.values() for lv in res["levels"])
        ax.set_ylim(0, max(105.0, top + 5))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def write_report(results_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = {"synthetic test (held-out sentences and voices)": "synthetic_test", "FSDD real speech (test speakers)": "fsdd_test"}
    loaded = {title: load_results(results_dir, key) for title, key in sets.items()}
    loaded = {t: r for t, r in loaded.items() if r}
    if not loaded:
        raise FileNotFoundError(f"no <model>.<set>.json evaluate results in {results_dir}")
    md = [f"### {title}\n\n{markdown_table(res)}\n" for title, res in loaded.items()]
    (out_dir / "results.md").write_text("\n".join(md))
    png = plot_wer_vs_gflops(loaded, out_dir / "wer_vs_gflops.png")
    return {"markdown": out_dir / "results.md", "figure": png}


def ablation_table(results_dir: str | Path) -> str:
    """One row per ablation run (<name>.json from evaluate): WER / CER at each kept level, and their means."""
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        res = json.loads(path.read_text())
        rows.append((path.stem, {lv["kept"]: (lv["wer"], lv["cer"]) for lv in res["levels"]}))
    if not rows:
        raise FileNotFoundError(f"no evaluate results in {results_dir}")
    levels = sorted({k for _, by in rows for k in by}, reverse=True)
    out = ["| run | " + " | ".join(f"kept={k} WER / CER %" for k in levels) + " | mean WER / CER % |",
           "|" + "---|" * (len(levels) + 2)]
    for name, by in rows:
        cells = [f"{100 * by[k][0]:.1f} / {100 * by[k][1]:.1f}" if k in by else "-" for k in levels]
        mean_w = 100 * sum(w for w, _ in by.values()) / len(by)
        mean_c = 100 * sum(c for _, c in by.values()) / len(by)
        out.append(f"| {name} | " + " | ".join(cells) + f" | {mean_w:.1f} / {mean_c:.1f} |")
    return "\n".join(out)
