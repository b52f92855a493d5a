"""Layer importance: drop-one ΔWER (with bootstrap intervals) and ΔKL per module, from a chosen mask, for one
or two students side by side, on a chosen evaluation set; for an encoder-decoder student, its text decoder's
token-level drop-one KL too (dld_core.seq2seq.token_drop_one_kl); the greedy drop path; CSV / JSON export; and a
button that opens a mask of the path in Inspect."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from app.state.access import manifest_problem
from app.state.checkpoints import CheckpointEntry, checkpoint_key, find_checkpoints
from app.state.clips import load_samples, manifest_rows, samples_key
from app.state.importance import (EVAL_SET_BUILD, IMPORTANCE_RESAMPLES, importance_over_samples, importance_sets,
                                  token_kl_over_samples)
from app.state.paths import checkpoints_dir
from app.state.results import computed_registry
from app.views import layer_strip, pickers, plots
from app.views.messages import one_line
from dld_core import masks
from dld_core.config import RECIPE_LABELS
from dld_core.families import compatible_teacher
from dld_core.seq2seq import has_text_decoder

st.title("Layer importance")
st.caption("What removing each module alone does to WER and to the KL from the teacher (drop-one), starting "
           "from the mask you choose, and the greedy path — which module to drop next. A *module* is one "
           "gated sub-block of the encoder (A = attention, M = MLP, L = a whole layer).")

sidebar_student, teacher = pickers.load_models(need_teacher=True)

# ---------------------------------------------------------------------------------------------- students
entries = find_checkpoints()
students = [e for e in entries if e.recipe != "teacher"] or entries
by_path = {str(e.path): e for e in students}


def preferred(recipe: str):
    """The student of a recipe to compare by default: checkpoints/<recipe>, else a shipped one, else any."""
    found = [e for e in students if e.recipe == recipe]
    found.sort(key=lambda e: (e.path.resolve() != (checkpoints_dir() / recipe).resolve(), e.origin != "shipped"))
    return str(found[0].path) if found else None


defaults = [p for p in (preferred("ld"), preferred("dld")) if p] or [str(sidebar_student.path)]
defaults = [p for p in defaults if p in by_path] or list(by_path)[:1]
chosen = st.multiselect("Students to compare (up to two)", list(by_path), default=defaults, max_selections=2,
                        format_func=lambda p: by_path[p].label, key="imp_students",
                        help="LD: trained with random module dropping (CTC only). DLD: the same dropping plus "
                             "distillation from the teacher. Their bars are drawn side by side on one axis.")
if not chosen:
    st.info("Pick one or two students.", icon=":material/info:")
    st.stop()


def display_name(entry: CheckpointEntry) -> str:
    return f"{RECIPE_LABELS.get(entry.recipe, entry.recipe)} · {entry.path.name}"


models = []                                     # (name, entry, checkpoint)
for path_s in chosen:
    ckpt = pickers.load_or_error(Path(path_s), "Student")
    if ckpt is not None:
        models.append((display_name(by_path[path_s]), by_path[path_s], ckpt))
if not models:
    st.stop()
names = list(models[0][2].model.module_names)
n = len(names)
other = [m for m in models[1:] if list(m[2].model.module_names) != names]
if other:
    st.warning(f"{other[0][0]} has other modules ({' '.join(other[0][2].model.module_names)}) than "
               f"{models[0][0]}: showing {models[0][0]} only. Pick students of the same family to compare.",
               icon=":material/warning:")
    models = [m for m in models if m not in other]
colors = {name: plots.RECIPE_COLORS.get(entry.recipe, "#64748b") for name, entry, _ in models}
if len(set(colors.values())) < len(colors):
    colors = {}


def usable_teacher(ckpt):
    """The teacher when its CTC frames line up with this student's (dld_core.families.compatible_teacher)."""
    if teacher is None:
        return None
    return teacher if compatible_teacher(ckpt.config, teacher.config) else None


teachers = {name: usable_teacher(ckpt) for name, _, ckpt in models}
if teacher is not None and any(t is None for t in teachers.values()):
    st.warning("The teacher's output frames do not line up with a student's (another front end or frame rate): "
               "KL views are off for it, WER only.", icon=":material/warning:")

# ------------------------------------------------------------------------------------------ evaluation set
sets = importance_sets(present_only=False)        # the sample clips and every set of eval_sets.py
present = importance_sets()
set_options = list(sets) + ["custom"]
c_set, c_path = st.columns([1, 1.3], vertical_alignment="bottom")
set_key = c_set.selectbox("Evaluation set", set_options, key="imp_set",
                          format_func=lambda k: "Another manifest (path)…" if k == "custom" else
                          sets[k][0] + ("" if k in present else " — not built here"),
                          help="The clips every module is measured on: the sample clips or a test set of the "
                               "project (dld_core/eval_sets.py), or any manifest.")
if set_key not in present and set_key != "custom":
    build = EVAL_SET_BUILD.get(set_key)
    st.info(f"{sets[set_key][0]} is not on this server ({sets[set_key][1]})"
            + (f": build it with `{build}`." if build else "."), icon=":material/info:")
    st.stop()
try:
    if set_key == "samples":
        rows, set_label = load_samples(), sets["samples"][0]
    elif set_key == "custom":
        typed = c_path.text_input("Manifest path (JSONL)", key="imp_manifest", placeholder="/path/to/test.jsonl")
        if not typed.strip():
            st.info("Type the path of a manifest (JSONL with audio_filepath and text).", icon=":material/info:")
            st.stop()
        problem = manifest_problem(typed, "manifest")
        if problem:
            st.error(problem, icon=":material/error:")
            st.stop()
        rows, set_label = manifest_rows(Path(typed.strip()).expanduser()), typed.strip()
    else:
        set_label = sets[set_key][0]
        rows = manifest_rows(sets[set_key][1])
except (OSError, ValueError) as exc:
    st.error(f"The evaluation set cannot be read — {(str(exc).splitlines() or [type(exc).__name__])[0]}",
             icon=":material/error:")
    st.stop()
if not rows:
    st.info("This set has no clips whose audio file exists.", icon=":material/info:")
    st.stop()
if len(rows) > 20:
    limit = c_path.number_input(f"Clips to use (the first N of {len(rows)})", min_value=1, max_value=len(rows),
                                value=min(50, len(rows)), step=10, key=f"imp_limit_{set_key}",
                                help="Each clip costs a few forward passes per module: start small on a CPU.")
    rows = rows[: int(limit)]

# ------------------------------------------------------------------------------------------ start mask
KEPT_KEY = "imp_kept"
inspect_mask = st.session_state.get(layer_strip.MASK_KEY)
inspect_fits = inspect_mask is not None and len(inspect_mask) == n and any(inspect_mask)


def set_kept(mask) -> None:
    st.session_state[KEPT_KEY] = [names[i] for i in masks.kept(mask, n)]


if st.session_state.get("_imp_names") != names or not set(st.session_state.get(KEPT_KEY) or []) <= set(names):
    st.session_state["_imp_names"] = names
    set_kept(list(inspect_mask) if inspect_fits else None)

# The start mask on a row of its own: every chip (A1 … M4, L1 … L12) stays whole at 1400 px; presets under it.
blocks = models[0][2].config.module_blocks
kept_names = st.multiselect("Start mask: the modules kept", names, key=KEPT_KEY,
                            help="Drop-one removes each kept module in turn from this mask; the greedy path "
                                 "starts here. Default: the mask you set on the Inspect page.")
with st.container(horizontal=True, gap="small", key="imp_mask_presets"):
    st.button("All", key="imp_mask_all", on_click=set_kept, args=(None,), width="content")
    st.button(masks.preset_label("every_other", blocks), key="imp_mask_every_other", on_click=set_kept,
              args=(masks.preset("every_other", n, n // 2, blocks=blocks, protected=models[0][2].protected),), width="content")
    st.button("Inspect mask", key="imp_mask_inspect", on_click=set_kept, width="content",
              args=(list(inspect_mask) if inspect_fits else None,), disabled=not inspect_fits,
              help="The mask of the Inspect page's layer strip" if inspect_fits else
                   "The Inspect page has no mask for a model with these modules")
base = tuple(name in kept_names for name in names)
if not any(base):
    st.error("Keep at least one module in the start mask.", icon=":material/error:")
    st.stop()
base_arg = None if all(base) else base

criterion = st.segmented_control("Greedy path criterion", ["kl", "wer"], default="kl", required=True,
                                 format_func=lambda c: {"kl": "KL to teacher", "wer": "WER"}[c],
                                 key="importance_criterion",
                                 help="Which module to drop next: the one whose removal raises this least.")
if criterion == "kl" and any(t is None for t in teachers.values()):
    criterion = "wer"
    st.caption("No usable teacher for every student: the path follows WER.")

# ------------------------------------------------------------------------------------------------ compute
rows_key = samples_key(rows)
jobs = {name: (checkpoint_key(ckpt.path),
               checkpoint_key(teachers[name].path) if teachers[name] is not None else None,
               rows_key, criterion, base_arg)
        for name, _, ckpt in models}
# An encoder-decoder student's token-level drop-one KL (its text decoder), computed with the rest.
token_jobs = {name: ("token_kl", checkpoint_key(ckpt.path), rows_key, base_arg)
              for name, _, ckpt in models if has_text_decoder(ckpt.model)}
done = computed_registry()
seconds = sum(float(r.get("duration") or 0) for r in rows)
what = f"{len(rows)} clips ({seconds:.0f} s of audio) of {set_label}, {len(models)} model{'s' if len(models) > 1 else ''}"
slot = st.empty()
go = False
all_jobs = [*jobs.values(), *token_jobs.values()]
if all(a in done for a in all_jobs):
    slot.caption(f"Computed over {what}; cached for every session.")
else:
    go = slot.button(f"Compute over {len(rows)} clips ({seconds:.0f} s of audio)", type="primary",
                     icon=":material/play_arrow:", key="importance_go")
if not go and not all(a in done for a in all_jobs):
    st.info("Press the button to measure every module (a few seconds per clip and model on a CPU). "
            "Results are cached and shared by every session.", icon=":material/info:")
    st.stop()

results = {}
for name, entry, ckpt in models:
    ckpt_key, teacher_key, s_key, crit, mask_arg = jobs[name]
    with st.spinner(f"{name}: dropping modules one at a time…"):
        try:
            results[name] = importance_over_samples(ckpt_key, teacher_key, s_key, crit, ckpt, teachers[name],
                                                    rows, base_mask=mask_arg)
        except (ValueError, RuntimeError, OSError) as exc:
            st.error(f"Cannot compute layer importance for {name} — {(str(exc).splitlines() or [type(exc).__name__])[0]}",
                     icon=":material/error:")
            st.stop()
    done.add(jobs[name])
token_kl = {}
for name, entry, ckpt in models:
    if name not in token_jobs:
        continue
    with st.spinner(f"{name}: dropping modules one at a time under the text decoder…"):
        try:
            token_kl[name] = token_kl_over_samples(token_jobs[name][1], rows_key, base_arg, ckpt, rows)
        except (ValueError, RuntimeError, OSError) as exc:
            st.error(f"Cannot compute the token-level KL for {name} — {one_line(exc)}", icon=":material/error:")
            st.stop()
    done.add(token_jobs[name])
slot.caption(f"Computed over {what}; cached for every session.")

# -------------------------------------------------------------------------------------------------- views
cols = st.columns(len(results))
ckpt_of = {name: ckpt for name, _, ckpt in models}
for col, (name, res) in zip(cols, results.items()):
    imp, path = res["importance"], res["path"]
    bw, bk = imp.get("base_wer"), imp.get("base_kl")
    order = [names[s["dropped"]] for s in path if s["dropped"] is not None]
    ctc_of = " CTC head's" if has_text_decoder(ckpt_of[name].model) else ""    # not its text decoder's
    col.metric(f"{name} —{ctc_of} WER at the start mask", f"{100 * bw:.1f}%" if bw is not None else "—",
               help="Word error rate over the chosen clips with the start mask (can exceed 100% when the model "
                    "inserts words)." + (" An encoder-decoder student's CTC head: every view of this page but the "
                                         "token-level KL is about the CTC head." if ctc_of else ""))
    col.caption((f"KL to the teacher {bk:.3f} nats/frame · " if bk is not None else "")
                + (f"drop first: **{order[0]}**" if order else ""))

pts = {name: [None if v is None else 100 * v for v in r["importance"]["delta_wer"]] for name, r in results.items()}
cis = {name: [None if c is None else (100 * c[0], 100 * c[1]) for c in r["importance"].get("delta_wer_ci") or [None] * n]
       for name, r in results.items()}
kls = {name: r["importance"]["delta_kl"] for name, r in results.items()}
series_name = (lambda name: name) if len(results) > 1 else (lambda name: "")
b1, b2 = st.columns(2, gap="large")
with b1:
    if any(v is not None for vals in pts.values() for v in vals):
        st.plotly_chart(plots.importance_bars({series_name(k): v for k, v in pts.items()}, names,
                                              "Drop-one ΔWER (points, 95% interval)", "ΔWER (pts)",
                                              intervals={series_name(k): v for k, v in cis.items()},
                                              colors={series_name(k): c for k, c in colors.items()}),
                        key="imp_wer", config={"displaylogo": False})
    else:
        st.info("No reference texts: ΔWER is unavailable.")
with b2:
    if any(v is not None for vals in kls.values() for v in vals):
        st.plotly_chart(plots.importance_bars({series_name(k): v for k, v in kls.items()}, names,
                                              "Drop-one ΔKL (nats / frame)", "ΔKL (nats)", "#f59e0b",
                                              colors={series_name(k): c for k, c in colors.items()}),
                        key="imp_kl", config={"displaylogo": False})
    else:
        st.info("No teacher: ΔKL is unavailable.")
resamples = next(iter(results.values()))["importance"].get("resamples", IMPORTANCE_RESAMPLES)
st.caption(f"Each bar: the change when that module alone is removed from the start mask. **A bar below zero "
           f"means dropping the module helped** — WER or KL went down on these clips: the module hurts here, or "
           f"the difference is noise. Error bars: 95% bootstrap interval over the {len(rows)} utterances "
           f"({resamples} resamples, seed 0); an interval that crosses zero means this set cannot tell. "
           f"Modules already off in the start mask have no bar.")

if token_kl:
    token_vals = {name: [None] * n for name in token_kl}
    for name, report in token_kl.items():
        for m in report["modules"]:
            token_vals[name][m["index"]] = m["kl"]
    token_series = (lambda name: name) if len(token_kl) > 1 else (lambda name: "")
    t1, t2 = st.columns(2, gap="large")
    with t1:
        st.plotly_chart(plots.importance_bars({token_series(k): v for k, v in token_vals.items()}, names,
                                              "Token-level drop-one KL (text decoder)", "KL (nats per token)",
                                              "#10b981", colors={token_series(k): colors[k] for k in token_kl
                                                                 if k in colors}),
                        key="imp_token_kl", config={"displaylogo": False})
    with t2:
        counts = ", ".join(f"{r['tokens']} tokens in {r['mode']} input" + (f" ({k})" if len(token_kl) > 1 else "")
                           for k, r in token_kl.items())
        st.caption("The text decoder's drop-one view (encoder-decoder students): each bar is the mean per-token "
                   "KL(posteriors with the start mask ‖ without that module) of Whisper's text decoder, "
                   f"teacher-forced on the greedy transcripts with the start mask, over these clips ({counts}; the "
                   "student's training input mode). The ΔWER and ΔKL bars above are frame-level: the CTC head's.")

steps = []
for name, res in results.items():
    for i, s in enumerate(res["path"]):
        steps.append({"model": name, "step": i, "kept": s["kept"],
                      "dropped": "start" if s["dropped"] is None else names[s["dropped"]],
                      "metric": (s["kl"] if criterion == "kl" else (100 * s["wer"] if s["wer"] is not None else None)),
                      "wer": s["wer"], "kl": s["kl"], "active": s["active"]})
steps = pd.DataFrame(steps)
if len(results) == 1:
    steps = steps.drop(columns="model")
steps.attrs["metric_name"] = "KL to teacher (nats)" if criterion == "kl" else "WER (%)"
g1, g2 = st.columns([2, 1], gap="large")
with g1:
    st.plotly_chart(plots.greedy_path_chart(steps, colors=colors), key="imp_path", config={"displaylogo": False})
def pick_row(j: int) -> None:
    """A clicked row of model j's path table picks that mask for its "Open in Inspect"."""
    rows = (st.session_state.get(f"imp_table_{j}") or {}).get("selection", {}).get("rows") or []
    if rows:
        st.session_state[f"imp_open_step_{j}"] = int(rows[0])


def open_in_inspect(j: int, name: str, path: list) -> None:
    """Under model j's path: open one of its masks (the clicked row, or the one picked here) in Inspect with
    that model, the one whose table this is."""
    step = st.selectbox("Mask to open", list(range(len(path))), index=min(1, len(path) - 1), key=f"imp_open_step_{j}",
                        format_func=lambda i: ("start mask: " if i == 0 else
                                               f"step {i}, without {names[path[i]['dropped']]}: ")
                        + masks.describe(path[i]["active"], names),
                        help="Click a row of the table, or pick here. Step 1 is the start mask minus its least "
                             "important module (by the path criterion).")
    if st.button("Open in Inspect", icon=":material/graphic_eq:", key=f"imp_open_{j}", width="content",
                 help=f"Inspect {name} with this mask"):
        entry = next(e for n_, e, _ in models if n_ == name)
        st.session_state["_student_ckpt_choice"] = str(entry.path)
        st.session_state[layer_strip.MASK_KEY] = tuple(masks.as_bools(path[step]["active"], n))
        st.session_state["_mask_model"] = None        # make the strip take the new mask
        st.switch_page(str(Path(__file__).resolve().parent / "inspect.py"))


with g2:
    st.caption("Click a row to open its mask in Inspect, with the model of that table.")
    tabs = st.tabs(list(results)) if len(results) > 1 else [st.container()]
    for j, (tab, (name, res)) in enumerate(zip(tabs, results.items())):
        with tab:
            part = steps[steps["model"] == name] if "model" in steps else steps
            st.markdown("**Drop order** " + (" → ".join(f"`{o}`" for o in part["dropped"][1:]) or "—"))
            table = part.assign(wer=lambda d: (d["wer"] * 100).round(2), kl=lambda d: d["kl"].round(4))
            table = table[["kept", "dropped", "wer", "kl"]].rename(columns={"wer": "WER %", "kl": "KL (nats)"})
            st.dataframe(table, hide_index=True, width="stretch", key=f"imp_table_{j}",
                         height=35 * (len(table) + 1) + 3, on_select=lambda j=j: pick_row(j),
                         selection_mode="single-row")
            open_in_inspect(j, name, res["path"])

# ------------------------------------------------------------------------------------------------- export
export, paths = [], {name: str(entry.path) for name, entry, _ in models}
for name, res in results.items():
    imp = res["importance"]
    for i, module in enumerate(names):
        ci = (imp.get("delta_wer_ci") or [None] * n)[i]
        export.append({"model": name, "checkpoint": paths[name],
                       "module": module, "in_start_mask": bool(base[i]),
                       "delta_wer_pts": None if imp["delta_wer"][i] is None else round(100 * imp["delta_wer"][i], 4),
                       "ci_low_pts": None if ci is None else round(100 * ci[0], 4),
                       "ci_high_pts": None if ci is None else round(100 * ci[1], 4),
                       "delta_kl": None if imp["delta_kl"][i] is None else round(imp["delta_kl"][i], 6)})
        if token_kl:                                # an encoder-decoder student's text decoder (nats per token)
            value = (token_vals.get(name) or [None] * n)[i]
            export[-1]["token_kl"] = None if value is None else round(value, 6)
export = pd.DataFrame(export)
with st.expander("Table and export", expanded=False, icon=":material/table:"):
    st.dataframe(export.drop(columns="checkpoint"), hide_index=True, width="stretch", key="imp_export_table")
    meta = {"evaluation_set": set_label, "clips": len(rows), "start_mask": [names[i] for i in range(n) if base[i]],
            "criterion": criterion, "bootstrap": {"level": 0.95, "resamples": resamples, "seed": 0}}
    d1, d2, _ = st.columns([1, 1, 2])
    d1.download_button("Download CSV", export.to_csv(index=False).encode(), file_name="dld_layer_importance.csv",
                       mime="text/csv", icon=":material/download:", key="imp_csv", width="stretch")
    d2.download_button("Download JSON", json.dumps({**meta, "rows": export.to_dict(orient="records")}, indent=1),
                       file_name="dld_layer_importance.json", mime="application/json", icon=":material/download:",
                       key="imp_json", width="stretch")
