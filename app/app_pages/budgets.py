"""Budgets: WER vs GFLOPs for teacher, LD and DLD from `evaluate` results (computed in the background
when missing), the Pareto front, a table with CSV download, and a recommended mask for a GFLOPs budget."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

import time

from app import jobs, state
from app.views import layer_strip, plots

st.title("Budgets")
st.caption("Word error rate against compute at every depth. GFLOPs are for a 10 s clip; WER is the mean "
           "over random masks with that many modules kept (the `evaluate` protocol).")

entries = state.find_checkpoints()
if not entries:
    st.error(f"No checkpoints found under {state.checkpoints_dir()} or {state.jobs_dir()} — "
             "add a checkpoint folder or train one on the Train page.", icon=":material/error:")
    st.stop()

by_path = {str(e.path): e for e in entries}
defaults = [str(e.path) for e in entries if e.origin == "shipped" and e.recipe in ("teacher", "ld", "dld")]
chosen = st.multiselect("Models", list(by_path), default=defaults or [str(entries[0].path)],
                        format_func=lambda p: by_path[p].label, key="budget_models")

rows, missing = [], []
for path_s in chosen:
    entry = by_path[path_s]
    result = state.read_eval_results(entry.path)
    if result is None:
        missing.append(entry)
        continue
    name = f"{plots.RECIPE_NAMES.get(entry.recipe, entry.recipe)} ({entry.path.name})"
    for level in result.get("levels", []):
        try:
            rows.append({"model": name, "recipe": entry.recipe, "path": path_s, "kept": int(level["kept"]),
                         "gflops": float(level["gflops"]), "wer": float(level["wer"]),
                         "cer": float(level.get("cer", float("nan"))), "masks": level.get("masks") or [],
                         "num_layers": int(result.get("num_layers", 0))})
        except (KeyError, TypeError, ValueError):
            continue


def start_eval(checkpoint: Path, manifest: Path) -> None:
    out = state.background_eval_path(checkpoint)
    jobs.start("evaluate", jobs.EvalSpec(str(checkpoint), str(manifest), str(out)), state.jobs_dir(), exclusive=False)


def eval_status(checkpoint: Path) -> dict:
    """{"state": none | running | done | failed, "elapsed", "message"} of the app's evaluation of a model."""
    job = jobs.latest_for(state.jobs_dir(), "evaluate", str(state.background_eval_path(checkpoint)))
    if job is None:
        return {"state": "none", "elapsed": 0.0, "message": ""}
    st_ = jobs.status(job)
    state_ = {"running": "running", "finished": "done"}.get(st_["state"], "failed")
    return {"state": state_, "elapsed": time.time() - job.started, "message": st_["message"]}


@st.fragment(run_every=2)
def background_panel(missing_entries):
    """Evaluation results that are missing: start them in the background and watch them finish."""
    manifest = state.samples_manifest()
    statuses = {str(e.path): eval_status(e.path) for e in missing_entries}
    any_running = any(s["state"] == "running" for s in statuses.values())
    for entry in missing_entries:
        status = statuses[str(entry.path)]
        if status["state"] == "none" and manifest.is_file() and not any_running:
            # Missing results are computed in the background on the sample set, one model at a time
            # (the others queue); a failed attempt waits for the retry button.
            start_eval(entry.path, manifest)
            status = eval_status(entry.path)
            any_running = True
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        if status["state"] == "running":
            any_running = True
            c1.info(f"Evaluating **{entry.label}** in the background… ({status['elapsed']:.0f} s)",
                    icon=":material/hourglass_top:")
        elif status["state"] == "done" and state.read_eval_results(entry.path) is not None:
            st.rerun()
        elif status["state"] == "none" and manifest.is_file():
            c1.info(f"Queued: **{entry.label}** is evaluated after the one running now.",
                    icon=":material/schedule:")
        else:
            msg = f" — last attempt failed: {status['message']}" if status["state"] == "failed" else ""
            c1.warning(f"No evaluation results for **{entry.label}**{msg}", icon=":material/warning:")
            if c2.button("Compute in background", key=f"eval_{entry.path}", width="stretch"):
                if not manifest.is_file():
                    st.error(f"Cannot evaluate: no sample manifest at {manifest}.", icon=":material/error:")
                else:
                    start_eval(entry.path, manifest)
                    st.rerun()
    if not any_running:
        st.caption(f"Results are read from <checkpoint>/eval_*.json, {state.results_dir()}/*.json and "
                   f"{state.app_results_dir()}/*.json.")


if missing:
    background_panel(missing)

if not rows:
    st.info("No evaluation results to plot yet.", icon=":material/info:")
    st.stop()

df = pd.DataFrame(rows)
lo, hi = float(df["gflops"].min()), float(df["gflops"].max())
students = [m for m in df["model"].unique() if not df[df["model"] == m]["recipe"].eq("teacher").all()]
target_models = students or list(df["model"].unique())

c_budget, c_model = st.columns([2, 1])
with c_model:
    target = st.selectbox("Recommend for", target_models, key="budget_target")
with c_budget:
    if hi > lo:
        s_lo, s_hi = math.ceil(lo * 1000) / 1000, math.ceil(hi * 1000) / 1000
        budget = st.slider("GFLOPs budget (per 10 s clip)", min_value=s_lo, max_value=s_hi,
                           value=round(s_lo + 0.6 * (s_hi - s_lo), 3), step=max(0.001, round((s_hi - s_lo) / 200, 3)),
                           key="budget_gflops")
    else:
        budget = hi
        st.caption(f"All results cost {hi:.3f} GFLOPs.")

part = df[(df["model"] == target) & (df["gflops"] <= budget + 1e-9)]
recommended = None
if part.empty:
    st.warning(f"No depth of {target} fits in {budget:.3f} GFLOPs; raise the budget.", icon=":material/warning:")
else:
    best = part.sort_values(["wer", "gflops"]).iloc[0]
    n = int(best["num_layers"]) or int(df[df["model"] == target]["kept"].max())
    masks = best["masks"]
    if len(masks) == 1:
        kept_idx, how = list(masks[0]), "the evaluated mask"
    else:
        from dld_core.masks import every_other
        kept_idx, how = every_other(n, int(best["kept"])), "modules spread evenly"
    mask = [i in set(kept_idx) for i in range(n)]
    recommended = (float(best["gflops"]), float(best["wer"]))
    strip = " ".join(f"<span style='display:inline-block;width:30px;text-align:center;margin:1px;"
                     f"border-radius:4px;padding:2px 0;font-size:0.8rem;"
                     f"background:{'#4f46e5' if on else '#e2e8f0'};color:{'white' if on else '#64748b'}'>"
                     f"L{i + 1}</span>" for i, on in enumerate(mask))
    with st.container(border=True):
        a, b, c = st.columns(3)
        a.metric("Recommended depth", f"{int(best['kept'])}/{n} modules")
        b.metric("Expected WER", f"{100 * best['wer']:.1f}%")
        c.metric("GFLOPs", f"{best['gflops']:.3f}",
                 delta=f"{100 * (1 - best['gflops'] / budget):.0f}% under the budget" if budget else None,
                 delta_color="off", delta_arrow="off")
        st.markdown(f"Mask ({how}): {strip}", unsafe_allow_html=True)
        if st.button("Open this mask in Inspect", icon=":material/graphic_eq:", key="use_mask"):
            path_s = str(best["path"])
            st.session_state["_student_ckpt_choice"] = path_s
            st.session_state[layer_strip.MASK_KEY] = tuple(mask)
            st.session_state["_mask_model"] = None        # make the strip take the new mask
            st.switch_page(str(Path(__file__).resolve().parent / "inspect.py"))

st.plotly_chart(plots.wer_vs_gflops(df, budget=budget, recommended=recommended), key="budget_chart",
                config={"displaylogo": False})

front = plots.pareto_front(df)
table = df.assign(pareto=[(m, k) in set(zip(front["model"], front["kept"])) for m, k in zip(df["model"], df["kept"])])
table = table[["model", "kept", "gflops", "wer", "cer", "pareto"]].sort_values(["model", "kept"], ascending=[True, False])
table = table.assign(wer=(table["wer"] * 100).round(2), cer=(table["cer"] * 100).round(2), gflops=table["gflops"].round(4))
table = table.rename(columns={"kept": "modules kept", "gflops": "GFLOPs", "wer": "WER %", "cer": "CER %",
                              "pareto": "on Pareto front"})
st.dataframe(table, hide_index=True, width="stretch", key="budget_table")
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="dld_budgets.csv",
                   mime="text/csv", icon=":material/download:", key="budget_csv")
