"""Budgets: WER vs GFLOPs (and measured latency) for teacher, LD and DLD from `evaluate` results (computed in
the background when missing) on a chosen test set and decoder, the Pareto front, the best model at a budget,
a table with CSV download, and a recommended mask for a GFLOPs budget: the best on the model's validation set
within the budget (dld_core.recommend), with its own WER / CER on the chosen test set and its own GFLOPs."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

import time

from app import jobs
from app.state.checkpoints import checkpoint_key, find_checkpoints
from app.state.importance import importance_sets
from app.state.paths import app_results_dir, checkpoints_dir, jobs_dir, resolve_manifest, results_dir, samples_manifest
from app.state.result_files import (BUDGET_REPORT, EVAL_SET_ORDER, background_eval_path, eval_set_key, eval_set_name,
                                    eval_sets, read_bench, read_budget_report, read_eval_results)
from app.state.results import computed_registry, mask_evaluation, validated_masks
from app.views import layer_strip, pickers, plots
from app.views.download import download_control
from app.views.messages import one_line
from dld_core.config import RECIPE_LABELS
from dld_core.flops import gflops_for_seconds
from dld_core.recommend import DEFAULT_CLIPS, FLOPS_SECONDS, USABLE_WER, find_evaluation, recommend
from dld_core.seq2seq import TEXT_DECODERS, has_text_decoder

DECODER_NAMES = {"greedy": "Greedy", "beam": "Beam search + word LM",       # CTC heads
                 # an encoder-decoder student's text decoder (dld_core.seq2seq.TEXT_DECODERS)
                 "whisper": "Text decoder, greedy", "whisper-beam": "Text decoder, beam",
                 "whisper-joint": "Text decoder, beam + CTC rescoring"}
RECIPE_ORDER = {"dld": 0, "ld": 1, "teacher": 2}

st.title("Budgets")
st.caption("Word error rate against compute at every depth, for the test set chosen below. GFLOPs are for a "
           "10 s clip; in the chart and the table, WER is the mean over random masks with that many modules kept "
           "(the `evaluate` protocol); the recommendation card measures the one mask it recommends.")

entries = find_checkpoints()
if not entries:
    st.error(f"No checkpoints found under {checkpoints_dir()} or {jobs_dir()} — "
             "add a checkpoint folder or train one on the Train page.", icon=":material/error:")
    st.stop()

by_path = {str(e.path): e for e in entries}
# The shipped set by default: checkpoints/{teacher,ld,dld} (the other shipped families are one click away)
main_set = {(checkpoints_dir() / name).resolve() for name in ("teacher", "ld", "dld")}
defaults = [str(e.path) for e in entries if e.path.resolve() in main_set] or \
    [str(e.path) for e in entries if e.origin == "shipped" and e.recipe in ("teacher", "ld", "dld")]
chosen = st.multiselect("Models", list(by_path), default=defaults or [str(entries[0].path)],
                        format_func=lambda p: by_path[p].label, key="budget_models")

# Which results: the test set (by the manifest the results were made on) and the decoder.
available = {p: eval_sets(by_path[p].path) for p in chosen}
found = set().union(*available.values()) if available else set()
set_keys = sorted({s for s, _ in found}, key=lambda s: (EVAL_SET_ORDER.index(s) if s in EVAL_SET_ORDER
                                                        else len(EVAL_SET_ORDER), s))
test_set, decoder = None, None
if set_keys:
    c_set, c_dec = st.columns([2, 1], vertical_alignment="bottom")
    test_set = c_set.selectbox("Test set", set_keys,
                               index=set_keys.index("test.jsonl") if "test.jsonl" in set_keys else 0,
                               format_func=eval_set_name, key="budget_set",
                               help="The recordings the models were scored on. Results of different sets do not "
                                    "compare: synthetic speech is easy, real read speech is hard.")
    decoders = sorted({d for s, d in found if s == test_set})
    if len(decoders) > 1:
        decoder = c_dec.radio("Decoder", decoders, index=decoders.index("beam") if "beam" in decoders else 0,
                              format_func=lambda d: DECODER_NAMES.get(d, d), horizontal=True, key="budget_decoder",
                              help="Greedy takes the most likely token per frame; beam search also weighs whole "
                                   "words with a word language model (slower, usually fewer errors). Text decoder: "
                                   "an encoder-decoder student's Whisper text decoder (greedy, beam search, or beam "
                                   "search rescored with its CTC head); only such students have these results.")
    else:
        decoder = decoders[0]
        c_dec.caption(f"Decoder: {DECODER_NAMES.get(decoder, decoder)} (the only one with results)")
set_name = eval_set_name(test_set) if test_set else ""


def model_name(entry) -> str:
    """"DLD (dld)", "LD (scratch/ld)", "DLD (trained/models/dld-x)": the recipe and where the model lives."""
    recipe = RECIPE_LABELS.get(entry.recipe, entry.recipe)
    for root, prefix in ((checkpoints_dir(), ""), (jobs_dir(), "trained/")):
        try:
            return f"{recipe} ({prefix}{entry.path.relative_to(root).as_posix()})"
        except ValueError:
            continue
    return f"{recipe} ({entry.path.name})"


rows, missing, absent, manifests, manifests_by_model = [], [], [], {}, {}
for path_s in chosen:
    entry = by_path[path_s]
    if not available[path_s]:
        missing.append(entry)                  # no results at all: computed in the background below
        continue
    result = read_eval_results(entry.path, test_set=test_set, decoder=decoder)
    if result is None:
        absent.append(entry)                   # results, but not on this test set / with this decoder
        continue
    manifests[str(result.get("manifest", ""))] = result.get("utterances")
    name = model_name(entry)
    manifests_by_model[name] = str(result.get("manifest", ""))
    levels = [lv for lv in result.get("levels", []) if isinstance(lv, dict)]
    try:
        n_layers = int(result.get("num_layers") or max(int(lv["kept"]) for lv in levels))
        full = next(float(lv["gflops"]) for lv in levels if int(lv["kept"]) == n_layers)
    except (KeyError, TypeError, ValueError, StopIteration):
        n_layers, full = 0, None
    # results/bench.json times the CTC forward: not a text decoder's search (its latency is not shown)
    bench = read_bench(n_layers, full) if full and decoder not in TEXT_DECODERS else None
    names = result.get("module_names") or []
    for level in levels:
        try:
            kept = int(level["kept"])
            ms = (bench or {}).get("latency_ms", {}).get(kept)
            rows.append({"model": name, "recipe": entry.recipe, "path": path_s, "kept": kept,
                         "gflops": float(level["gflops"]), "wer": float(level["wer"]),
                         "cer": float(level.get("cer", float("nan"))), "masks": level.get("masks") or [],
                         "num_layers": n_layers, "module_names": list(names),
                         "latency_ms": ms, "rtf": ms / (1000 * bench["seconds"]) if ms is not None else None})
        except (KeyError, TypeError, ValueError):
            continue


def start_eval(checkpoint: Path, manifest: Path) -> None:
    out = background_eval_path(checkpoint)
    jobs.start("evaluate", jobs.EvalSpec(str(checkpoint), str(manifest), str(out)), jobs_dir(), exclusive=False)


def eval_status(checkpoint: Path) -> dict:
    """{"state": none | running | done | failed, "elapsed", "message"} of the app's evaluation of a model."""
    job = jobs.latest_for(jobs_dir(), "evaluate", str(background_eval_path(checkpoint)))
    if job is None:
        return {"state": "none", "elapsed": 0.0, "message": ""}
    st_ = jobs.status(job)
    state_ = {"running": "running", "finished": "done"}.get(st_["state"], "failed")
    return {"state": state_, "elapsed": time.time() - job.started, "message": st_["message"]}


def background_manifest() -> Path:
    """The set a model without results is evaluated on: the first test set of dld_core/eval_sets.py on this
    server (the shipped models' results cover it, so a new model compares side by side), else the samples."""
    sets = importance_sets()
    return next((path for key, (_, path) in sets.items() if key != "samples"), samples_manifest())


@st.fragment(run_every=2)
def background_panel(missing_entries):
    """Evaluation results that are missing: start them in the background and watch them finish."""
    manifest = background_manifest()
    statuses = {str(e.path): eval_status(e.path) for e in missing_entries}
    any_running = any(s["state"] == "running" for s in statuses.values())
    for entry in missing_entries:
        status = statuses[str(entry.path)]
        if status["state"] == "none" and manifest.is_file() and not any_running:
            # Missing results are computed in the background on a test set, one model at a time
            # (the others queue); a failed attempt waits for the retry button.
            start_eval(entry.path, manifest)
            status = eval_status(entry.path)
            any_running = True
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        if status["state"] == "running":
            any_running = True
            c1.info(f"Evaluating **{entry.label}** in the background… ({status['elapsed']:.0f} s)",
                    icon=":material/hourglass_top:")
        elif status["state"] == "done" and read_eval_results(entry.path) is not None:
            st.rerun()
        elif status["state"] == "none" and manifest.is_file():
            c1.info(f"Queued: **{entry.label}** is evaluated after the one running now.",
                    icon=":material/schedule:")
        else:
            msg = f" — last attempt failed: {status['message']}" if status["state"] == "failed" else ""
            c1.warning(f"No evaluation results for **{entry.label}**{msg}", icon=":material/warning:")
            if c2.button("Compute in background", key=f"eval_{entry.path}", width="stretch"):
                if not manifest.is_file():
                    st.error(f"Cannot evaluate: no test set or sample manifest at {manifest}.", icon=":material/error:")
                else:
                    start_eval(entry.path, manifest)
                    st.rerun()
    if not any_running:
        st.caption(f"Results are read from <checkpoint>/eval_*.json, {results_dir()}/*.json and "
                   f"{app_results_dir()}/*.json.")


if missing:
    background_panel(missing)
if absent:
    st.caption(f"No {set_name} results ({DECODER_NAMES.get(decoder, decoder)}) for: "
               f"{', '.join(model_name(e) for e in absent)} — pick another test set or decoder to see them.")

if not rows:
    st.info("No evaluation results to plot yet.", icon=":material/info:")
    st.stop()

df = pd.DataFrame(rows)
sources = "; ".join(f"`{m}`" + (f", {n} utterances" if isinstance(n, int) else "") for m, n in manifests.items())
st.caption(f"Test set: **{set_name}** · decoder: {DECODER_NAMES.get(decoder, decoder)} · {sources}")


def model_order(model: str) -> tuple:
    return (RECIPE_ORDER.get(str(df[df["model"] == model]["recipe"].iloc[0]), 9), model)


# The headline: every shown model at the depth nearest half of its full-depth compute.
half = []
for model in sorted(df["model"].unique(), key=model_order):
    part = df[df["model"] == model]
    row = part.loc[(part["gflops"] - part["gflops"].max() / 2).abs().idxmin()]
    n_all = int(row["num_layers"]) or int(part["kept"].max())
    half.append(f"{model} **WER {100 * row['wer']:.1f}%** ({int(row['kept'])}/{n_all} modules)")
st.markdown("#### At 50% compute: " + " · ".join(half))
st.caption("Word error rate (WER, lower is better) of each model at the depth whose GFLOPs are nearest half of its "
           "full-depth GFLOPs: the mean over the random masks evaluated at that depth.")

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

# The best model at this budget, whichever it is (not only the one chosen in "Recommend for").
fits = df[df["gflops"] <= budget + 1e-9]
best_any = fits.sort_values(["wer", "gflops"]).iloc[0] if not fits.empty else None
if best_any is not None and best_any["wer"] < USABLE_WER:
    n_any = int(best_any["num_layers"]) or int(df[df["model"] == best_any["model"]]["kept"].max())
    st.metric("Best at this budget (any model)", str(best_any["model"]),
              delta=f"WER {100 * best_any['wer']:.1f}% · {int(best_any['kept'])}/{n_any} modules · "
                    f"{best_any['gflops']:.3f} GFLOPs", delta_color="off", delta_arrow="off",
              help="The lowest WER among every shown model and depth that fits in the budget (the mean over the "
                   "random masks evaluated at that depth).")
elif best_any is not None:
    st.metric("Best at this budget (any model)", "None usable",
              delta=f"every depth that fits scores WER ≥ {100 * USABLE_WER:.0f}%", delta_color="off",
              delta_arrow="off",
              help="Every shown model and depth that fits in the budget gets (nearly) every word wrong here.")


def recommendation(path: Path, budget: float, test_set: str, decoder: str, manifest) -> dict:
    """The card's mask for a budget and its own numbers: {"mask", "n", "names", "gflops", "valid_wer",
    "selection", "evaluation"}; or {"message", "level"} when there is nothing to recommend (yet)."""
    name = model_name(by_path[str(path)])
    ckpt = pickers.load_or_error(path, name)
    if ckpt is None:
        return {}
    ckpt_key = checkpoint_key(path)
    report = read_budget_report(path)
    if report is not None:
        table, sel = report["masks"], report.get("selection") or {}
        selection = f"{sel.get('clips', '?')} clips of {sel.get('manifest', 'its validation set')}"
    else:
        valid = ckpt.info.get("valid_manifest")
        if not isinstance(valid, str) or not resolve_manifest(valid).is_file():
            return {"level": "info", "message": (
                f"No mask of {name} has been chosen on a validation set, and it names no validation set on this "
                f"server: `python -m dld_core.recommend --checkpoint {path} --valid MANIFEST --test MANIFEST "
                f"--json {path / BUDGET_REPORT}` makes the recommendation card's data.")}
        job = (ckpt_key, valid)
        if job not in computed_registry():
            if not st.button(f"Choose {name}'s masks on its validation set ({DEFAULT_CLIPS} clips)",
                             icon=":material/play_arrow:", key="budget_validate"):
                return {"level": "info", "message": (
                    f"No mask of {name} has been chosen on its validation set yet: press the button (a few minutes "
                    f"on a CPU; shared by every session) to get a recommendation.")}
        try:
            with st.spinner(f"Scoring {name}'s candidate masks on {DEFAULT_CLIPS} clips of {valid}…"):
                table = validated_masks(ckpt_key, str(resolve_manifest(valid)), ckpt)
        except (OSError, RuntimeError, ValueError) as exc:
            return {"level": "warning", "message": f"Cannot choose {name}'s masks on {valid} — {one_line(exc)}"}
        computed_registry().add(job)
        selection = f"{DEFAULT_CLIPS} clips of {valid}"
    best = recommend(table, budget)
    if best is None:
        return {"level": "warning", "message": f"No mask of {name} fits in {budget:.3f} GFLOPs; raise the budget."}
    evaluation = find_evaluation(report, best["active"], test_set, decoder, key=eval_set_key) if report else None
    if evaluation is None:
        if not manifest:
            return {"level": "info", "message": f"The recommended mask of {name} has no {set_name} result."}
        try:
            with st.spinner(f"Measuring the recommended mask on {set_name}…"):
                evaluation = mask_evaluation(ckpt_key, manifest, tuple(best["active"]), decoder, ckpt)
        except (OSError, RuntimeError, ValueError) as exc:
            return {"level": "warning", "message": f"Cannot measure the recommended mask of {name} on {set_name} — "
                                                   f"{one_line(exc)}"}
    names = list(ckpt.model.module_names)
    return {"mask": [i in set(best["active"]) for i in range(len(names))], "n": len(names), "names": names,
            "gflops": gflops_for_seconds(ckpt.config, FLOPS_SECONDS, best["active"]), "valid_wer": best["wer"],
            "selection": selection, "evaluation": evaluation,
            "chosen_by": "its CTC head's greedy WER" if has_text_decoder(ckpt.model) else "greedy WER"}


# The recommendation card: one mask, and every number on the card is that mask's own. The mask is the best on
# the model's validation set among those within the budget (dld_core.recommend, the chooser of `deploy
# --budget`); its WER / CER are measured on the chosen test set, its GFLOPs counted by dld_core.flops.
target_row = df[df["model"] == target].iloc[0]
target_path = Path(str(target_row["path"]))
recommended = None
card = recommendation(target_path, budget, test_set, decoder, manifests_by_model.get(target))
if card.get("message"):
    getattr(st, card.get("level", "info"))(card["message"], icon=":material/info:" if card.get("level") == "info"
                                           else ":material/warning:")
if card.get("mask") is not None:
    n, names, mask, ev = card["n"], card["names"], card["mask"], card["evaluation"]
    usable = ev["wer"] < USABLE_WER
    recommended = (card["gflops"], ev["wer"]) if usable else None
    strip = " ".join(f"<span style='display:inline-block;min-width:30px;text-align:center;margin:1px;"
                     f"border-radius:4px;padding:2px 4px;font-size:0.8rem;"
                     f"background:{'#4f46e5' if on else '#e2e8f0'};color:{'white' if on else '#64748b'}'>"
                     f"{name}</span>" for name, on in zip(names, mask))
    with st.container(border=True, key="budget_card"):
        if usable:
            st.markdown(f"**Recommended for {target}**")
        else:
            st.warning(f"No usable model of {target} fits in {budget:.3f} GFLOPs: its best mask on the validation "
                       f"set within the budget scores WER {100 * ev['wer']:.1f}% on {set_name} (≥ "
                       f"{100 * USABLE_WER:.0f}%: nearly every word wrong). Raise the budget.",
                       icon=":material/warning:")
        a, b, c, d = st.columns(4)
        a.metric("Recommended depth" if usable else "Best depth that fits", f"{sum(mask)}/{n} modules",
                 help="How many of the model's gated modules this mask runs.")
        b.metric("Expected WER", f"WER {100 * ev['wer']:.1f}%",
                 help=f"Word error rate of this mask on {set_name} ({DECODER_NAMES.get(decoder, decoder).lower()}, "
                      f"{ev.get('utterances', '?')} utterances); it can exceed 100% when a model inserts words.")
        c.metric("Expected CER", f"CER {100 * ev['cer']:.1f}%",
                 help="Character error rate of this mask on the same test set.")
        d.metric("GFLOPs", f"{card['gflops']:.3f}",
                 help="Billions of operations of this mask for one pass over a 10 s clip (dld_core.flops).",
                 delta=f"{100 * (1 - card['gflops'] / budget):.0f}% under the budget" if budget else None,
                 delta_color="off", delta_arrow="off")
        st.markdown(f"Mask: {strip}", unsafe_allow_html=True)
        st.caption(f"Chosen on the validation set ({card['selection']}): {card['chosen_by']} "
                   f"{100 * card['valid_wer']:.1f}% there, "
                   f"the lowest of the masks within the budget; WER and CER above are measured on {set_name}.")
        if st.button("Open this mask in Inspect", icon=":material/graphic_eq:", key="use_mask"):
            st.session_state["_student_ckpt_choice"] = str(target_path)
            st.session_state[layer_strip.MASK_KEY] = tuple(mask)
            st.session_state["_mask_model"] = None        # make the strip take the new mask
            st.switch_page(str(Path(__file__).resolve().parent / "inspect.py"))
        download_control(target_path, names, mask, key="budget_download")

title = f"WER vs compute — {set_name}, {DECODER_NAMES.get(decoder, decoder).lower()}"
st.plotly_chart(plots.wer_vs_gflops(df, budget=budget, recommended=recommended, title=title), key="budget_chart",
                config={"displaylogo": False})
if (df["wer"] > 1).any():
    st.caption(plots.WER_CAP_NOTE)

pareto = plots.pareto_front(df)
front = set(zip(pareto["model"], pareto["kept"]))


def dash(value, fmt: str) -> str:
    return "—" if value is None or value != value else format(value, fmt)


best_key = (best_any["model"], int(best_any["kept"])) if best_any is not None else None
table = pd.DataFrame({
    "model": df["model"], "modules kept": df["kept"], "GFLOPs": df["gflops"].round(4),
    "latency (ms per 10 s)": [dash(v, ".0f") for v in df["latency_ms"]],
    "RTF": [dash(v, ".4f") for v in df["rtf"]],
    "WER %": (df["wer"] * 100).round(2), "CER %": (df["cer"] * 100).round(2),
    "on Pareto front": ["✓ Pareto" if (m, k) in front else "" for m, k in zip(df["model"], df["kept"])],
    "at this budget": ["★ best" if (m, k) == best_key else "fits" if g <= budget + 1e-9 else ""
                       for m, k, g in zip(df["model"], df["kept"], df["gflops"])],
}).sort_values(["model", "modules kept"], ascending=[True, False])
st.dataframe(table, hide_index=True, width="stretch", key="budget_table")
st.caption("Latency: median CPU time of the model forward for a 10 s clip on one thread (`results/bench.json`, "
           "masks keeping the first modules); RTF = latency ÷ audio duration (0.01 = 100× faster than real time). "
           "“—”: no latency measured for this model's architecture"
           + (" or for a text decoder (the benchmark times the CTC forward, not the text decoder's search; "
              "`python -m dld_core bench` measures it)" if decoder in TEXT_DECODERS else "")
           + ". Pareto: no other row has both lower WER and lower GFLOPs.")
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="dld_budgets.csv",
                   mime="text/csv", icon=":material/download:", key="budget_csv")
