"""Train: start a background training (a job of app/jobs.py), watch it live, stop and continue it.
The job outlives reruns, reloads, closed tabs and app restarts: everything is read back from disk."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from app import jobs
from app.state.access import manifest_problem, training_enabled
from app.state.checkpoints import find_checkpoints, model_config_of
from app.state.paths import default_teacher, jobs_dir
from app.views import plots
from dld_core import masks
from dld_core.config import RECIPE_LABELS, TrainConfig
from dld_core.families import get_family
from dld_core.shipped_recipe import settings as shipped_settings

# Teacher architectures offered here: (label, ModelConfig fields); their training settings come from
# dld_core.shipped_recipe. Students (LD, DLD) always take their teacher's architecture and start from its weights.
SIZES = {
    "tiny": ("Tiny conformer 4×64", {"family": "conformer", "n_layers": 4, "d_model": 64, "n_heads": 2}),
    "small": ("Small conformer 6×96", {"family": "conformer", "n_layers": 6, "d_model": 96, "n_heads": 4}),
    "whisper": ("Whisper tiny.en, pretrained", {"family": "whisper"}),
}
HOURS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0]
RECIPES = RECIPE_LABELS
FORM_KEYS = ("train_recipe", "train_teacher", "train_data", "train_hours", "train_manifest", "valid_manifest",
             "train_size", "train_epochs", "train_max_steps", "train_threads", "train_batch_seconds", "train_seed",
             "train_keep_prob", "train_gate_unit", "train_protected", "train_lambda", "train_tau")

root = jobs_dir()


def saved(key: str, fallback):
    """The value a form field had when this page was last shown: Streamlit drops a widget's state while
    another page runs, so remember_form() keeps a copy under a non-widget key ("_<key>_choice", as the
    model pickers do) and each widget starts from it."""
    return st.session_state.get(f"_{key}_choice", fallback)


def remember_form() -> None:
    for key in FORM_KEYS:
        if key in st.session_state:
            st.session_state[f"_{key}_choice"] = st.session_state[key]


st.title("Train")
st.caption("Train a small teacher, or an LD / DLD student of a teacher, in the background. Finished models "
           f"appear in the model pickers. One training at a time; jobs live in {root}.")


def corpus_path(hours: float) -> Path:
    return root / "corpus" / f"synth_{hours:g}h"


def fmt_eta(seconds) -> str:
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"


def start(spec: jobs.TrainSpec) -> None:
    try:
        jobs.start("train", spec, root)
    except jobs.JobBusyError as exc:
        st.error(f"Refused: {jobs.ui_message(str(exc).splitlines()[0])}.", icon=":material/block:")
        return
    except (jobs.JobError, OSError, ValueError) as exc:
        st.error(f"Cannot start the training — {jobs.ui_message(str(exc).splitlines()[0])}", icon=":material/error:")
        return
    st.session_state["_train_msg"] = ("Training started." if not spec.corpus or jobs.corpus_ready(spec.corpus) else
                                      f"Building the {spec.corpus_hours:g} h synthetic corpus; training starts right after.")
    st.rerun()


busy = jobs.running(root, "train")
left, right = st.columns([1, 1.5], gap="large")
if not training_enabled():
    left.info("Training is turned off on this server (DLD_TRAINING=off); past trainings are shown on the right.",
              icon=":material/block:")
with left, st.container(border=True):
    st.markdown("**New training**")
    recipe = st.segmented_control("Recipe", list(RECIPES), format_func=RECIPES.get, required=True,
                                  default=saved("train_recipe", "dld"), key="train_recipe",
                                  help="Teacher: a static model, plain CTC. LD: a student trained with random layer "
                                       "dropping. DLD: layer dropping plus distillation from the teacher.")
    teacher_path = None
    if recipe in ("ld", "dld"):
        teachers = [e for e in find_checkpoints() if e.recipe == "teacher"]
        if teachers:
            paths = [str(e.path) for e in teachers]
            default = saved("train_teacher", str(default_teacher()))
            teacher_path = st.selectbox("Teacher", paths, index=paths.index(default) if default in paths else 0,
                                        format_func=lambda p: next(e.label for e in teachers if str(e.path) == p),
                                        key="train_teacher",
                                        help="The student gets the teacher's architecture and starts from its "
                                             "weights; DLD also learns from its outputs.")
        else:
            st.error("A student needs a teacher: train a Teacher first (or add checkpoints/teacher).",
                     icon=":material/error:")
    data = st.radio("Data", ["synthetic", "manifest"], horizontal=True, key="train_data",
                    index=["synthetic", "manifest"].index(saved("train_data", "synthetic")),
                    format_func={"synthetic": "Built-in synthetic corpus", "manifest": "Manifest path"}.get)
    hours, train_m, valid_m = HOURS[1], "", ""
    if data == "synthetic":
        hours = st.select_slider("Corpus size (hours of audio)", HOURS, value=saved("train_hours", HOURS[1]),
                                 key="train_hours", format_func=lambda h: f"{h:g} h")
        st.caption("Corpus ready." if jobs.corpus_ready(corpus_path(hours)) else
                   "The corpus is built first (offline speech synthesis + augmentation), then the training starts "
                   "— in the same background job.")
    else:
        train_m = st.text_input("Training manifest (JSONL)", value=saved("train_manifest", ""), key="train_manifest",
                                placeholder="/path/to/train.jsonl")
        valid_m = st.text_input("Validation manifest (optional: defaults to the training one)",
                                value=saved("valid_manifest", ""), key="valid_manifest")
    size = "tiny"
    if recipe == "teacher":
        size = st.segmented_control("Model", list(SIZES), format_func=lambda s: SIZES[s][0],
                                    default=saved("train_size", "tiny"), required=True, key="train_size",
                                    help="Conformers train from scratch (quick, weak); Whisper tiny.en starts from "
                                         "OpenAI's pretrained encoder (slower per step, far more accurate).")
    epochs = st.number_input("Epochs", min_value=1, max_value=500, value=saved("train_epochs", 3), step=1,
                             key="train_epochs")
    teacher_cfg = model_config_of(teacher_path) if teacher_path else None
    dropping = {}                                   # TrainConfig fields of layer dropping / distillation
    gate_unit = None
    if recipe in ("ld", "dld") and teacher_cfg is not None:
        shipped = shipped_settings(recipe, teacher_cfg.family)
        with st.expander("Layer dropping" + (" and distillation" if recipe == "dld" else "")):
            keep = st.slider("Keep probability", 0.05, 1.0, value=saved("train_keep_prob", TrainConfig.keep_prob),
                             step=0.05, key="train_keep_prob",
                             help="At every training step each module runs with this probability (at least one "
                                  "always runs). 0.5 is the paper's setting and the shipped models'; a higher value "
                                  "favours full depth, a lower one small compute budgets (README, gate ablation: "
                                  "0.75 was better down to 3/4 of the compute).")
            gates = get_family(teacher_cfg.family).gate_choice(teacher_cfg)       # None: one gate per block
            if gates is not None:
                gate_unit = st.radio("Gates", list(gates.labels), format_func=gates.labels.get, horizontal=True,
                                     index=list(gates.labels).index(saved("train_gate_unit", teacher_cfg.gate_unit)),
                                     key="train_gate_unit", help=gates.help)
            names = dataclasses.replace(teacher_cfg, gate_unit=gate_unit or teacher_cfg.gate_unit).module_names
            protected = st.multiselect("Never drop", names, default=[m for m in saved("train_protected", [])
                                                                      if m in names],
                                       key="train_protected",
                                       help="Modules that run at every step and in every mask the student is "
                                            "trained for (e.g. the first attention, A1, which no mask can lose "
                                            "cheaply in the shipped models).")
            dropping = {"keep_prob": float(keep), "protected": masks.Mask.parse(protected, names).format()}
            if recipe == "dld":
                c1, c2 = st.columns(2)
                lam = c1.number_input("Distillation weight λ", min_value=0.0, max_value=100.0, step=0.5,
                                      value=float(saved("train_lambda", shipped.get("kd_lambda", TrainConfig.kd_lambda))),
                                      key="train_lambda", help="Loss = CTC + λ · KL(teacher ‖ student).")
                tau = c2.number_input("Temperature τ", min_value=0.1, max_value=20.0, step=0.5,
                                      value=float(saved("train_tau", shipped.get("kd_tau", TrainConfig.kd_tau))),
                                      key="train_tau", help="Softens both posteriors before the KL "
                                                            "(1 = none; the shipped DLD used 2).")
                dropping.update(kd_lambda=float(lam), kd_tau=float(tau))
    with st.expander("Advanced"):
        max_steps = st.number_input("Max steps (0 = no limit)", min_value=0, value=saved("train_max_steps", 0), step=50,
                                    key="train_max_steps")
        threads = st.number_input("CPU threads for training", min_value=1, max_value=max(1, os.cpu_count() or 1),
                                  value=min(saved("train_threads", max(1, (os.cpu_count() or 2) - 1)),
                                            max(1, os.cpu_count() or 1)),
                                  key="train_threads",
                                  help="Leave a core for the app.")
        batch_seconds = st.number_input("Batch size (seconds of audio)", min_value=5.0, max_value=2000.0,
                                        value=saved("train_batch_seconds", 60.0), step=5.0,
                                        key="train_batch_seconds")
        seed = st.number_input("Seed", min_value=0, value=saved("train_seed", 0), step=1, key="train_seed")
    remember_form()

    problem = None
    if busy is not None:
        problem = "A training is running: stop it or wait for it to finish."
    elif recipe in ("ld", "dld") and teacher_path is None:
        problem = "A student needs a teacher."
    elif recipe in ("ld", "dld") and teacher_cfg is None:
        problem = "The teacher's config.json cannot be read: pick another teacher."
    elif not training_enabled():
        problem = "Training is turned off on this server."
    elif data == "manifest":
        if not train_m.strip():
            problem = "Give a training manifest path."
        else:
            problem = (manifest_problem(train_m, "training manifest")
                       or (manifest_problem(valid_m, "validation manifest") if valid_m.strip() else None))
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start",
                 disabled=problem is not None, width="stretch"):
        model = SIZES[size][1] if recipe == "teacher" else ({"gate_unit": gate_unit} if gate_unit else {})
        name = size if recipe == "teacher" else Path(teacher_path).name
        family = model["family"] if recipe == "teacher" else (teacher_cfg.family if teacher_cfg else "")
        train_cfg = {**shipped_settings(recipe, family), "recipe": recipe, "epochs": int(epochs),
                     "batch_seconds": float(batch_seconds), "seed": int(seed), "max_steps": int(max_steps),
                     **dropping}
        if recipe != "teacher":
            train_cfg["init_from_teacher"] = True
        spec = jobs.TrainSpec(out=str(root / "models" / f"{recipe}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"),
                              train=train_cfg, model=model, teacher=teacher_path, threads=int(threads))
        if data == "manifest":
            spec.train_manifest = str(Path(train_m.strip()).expanduser())
            spec.valid_manifest = str(Path(valid_m.strip()).expanduser()) if valid_m.strip() else spec.train_manifest
        else:
            spec.corpus, spec.corpus_hours = str(corpus_path(hours)), float(hours)
        start(spec)
    if problem:
        st.caption(problem)
    if st.session_state.get("_train_msg"):
        st.success(st.session_state.pop("_train_msg"), icon=":material/check_circle:")


# --------------------------------------------------------------------------------------------- live view
STATE_ICONS = {"running": ":material/progress_activity:", "finished": ":material/check_circle:",
               "stopped": ":material/pause_circle:", "failed": ":material/error:", "paused": ":material/pause_circle:"}


def live_body(was_busy: bool) -> None:
    job = jobs.latest(root, "train")
    if job is None:
        st.info("No training yet. Start one on the left.", icon=":material/info:")
    else:
        job_view(job)
    if was_busy != (jobs.running(root, "train") is not None):
        st.rerun()            # the whole page: buttons and the refresh rate follow the new state


def job_view(job: jobs.Job) -> None:
    status = jobs.status(job)
    events = jobs.read_events(job.events_path)
    steps = [e for e in events if e.get("event") == "step"]
    epochs = [e for e in events if e.get("event") == "epoch"]
    last_ev = events[-1] if events else {}
    recipe = job.spec.get("train", {}).get("recipe", "?")
    state_ = "paused" if status["state"] == "finished" and last_ev.get("event") == "paused" else status["state"]
    label = {"running": "Running", "finished": "Finished", "stopped": "Stopped", "failed": "Failed",
             "paused": "Paused"}[state_]
    if state_ == "running" and not events:
        label = "Building the corpus" if job.spec.get("corpus") and not jobs.corpus_ready(job.spec["corpus"]) else "Starting"
    with st.container(border=True):
        st.markdown(f"{STATE_ICONS[state_]} **{label}** · {RECIPES.get(recipe, recipe)} · job `{job.id}`")
        st.caption(f"Output: {job.out}")
        total = next((e.get("total_steps") for e in reversed(events) if e.get("total_steps")), None)
        step = last_ev.get("step", 0) or 0
        if total:
            st.progress(min(1.0, step / total), text=f"step {step} / {total}")
        m1, m2, m3, m4 = st.columns(4)
        last_step = steps[-1] if steps else {}
        m1.metric("Loss", f"{last_step['loss']:.3f}" if "loss" in last_step else "—")
        m2.metric("Valid WER", f"{100 * epochs[-1]['valid_wer']:.1f}%" if epochs and epochs[-1].get("valid_wer") is not None else "—",
                  help="Word error rate on the validation set after the last epoch (full depth).")
        m3.metric("Epoch", f"{last_ev.get('epoch', 0)}")
        m4.metric("Time left", fmt_eta(last_step.get("eta_s")) if state_ == "running" else "—",
                  help=(f"{last_step['audio_sec_per_sec']:.0f} s of audio per second"
                        if "audio_sec_per_sec" in last_step else None))
        if state_ == "failed":
            st.error(f"The training failed — {status['message'] or 'see the log below'}", icon=":material/error:")
        elif state_ in ("stopped", "paused") and (Path(job.out) / "resume").is_dir():
            st.caption("Stopped with a checkpoint to continue from: press **Continue** to train on where it stopped.")
        b1, b2, _ = st.columns([1, 1, 2])
        if state_ == "running":
            if b1.button("Stop", icon=":material/stop:", key="job_stop", width="stretch",
                         help="Stops after the current step and keeps a checkpoint to continue from."):
                with st.spinner("Stopping (saving a checkpoint to continue from)…"):
                    jobs.stop(job)
                st.rerun()
        elif (Path(job.out) / "resume").is_dir() and state_ != "finished":
            if b2.button("Continue", icon=":material/play_arrow:", key="job_resume", width="stretch",
                         help="Continue this training where it stopped."):
                try:
                    jobs.resume(job, root)
                except jobs.JobBusyError as exc:
                    st.error(f"Refused: {jobs.ui_message(str(exc).splitlines()[0])}.", icon=":material/block:")
                except (jobs.JobError, OSError, ValueError, TypeError) as exc:
                    st.error(f"Cannot continue the training — {jobs.ui_message(str(exc).splitlines()[0])}",
                             icon=":material/error:")
                else:
                    st.rerun()
    if steps:
        st.plotly_chart(plots.training_curves(pd.DataFrame(steps), pd.DataFrame(epochs), recipe=recipe),
                        key="train_curves", config={"displaylogo": False})
    st.markdown("**Log**")
    st.code(jobs.tail(job.log_path, 14) or "(no output yet)", language=None, wrap_lines=True)


with right:
    if busy is not None:
        st.fragment(run_every=2)(live_body)(True)
    else:
        st.fragment(live_body)(False)
