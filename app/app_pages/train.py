"""Train: start a background training (its own process, via dld_core.jobs), watch it live, stop/resume.
The job outlives reruns, reloads, closed tabs and app restarts: everything is read back from disk."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from app import state, train_launcher
from app.views import plots
from dld_core import jobs

SIZES = {
    "tiny": {"layers": 4, "d_model": 64, "heads": 2, "label": "Tiny 4×64"},
    "small": {"layers": 6, "d_model": 96, "heads": 4, "label": "Small 6×96"},
    "base": {"layers": 12, "d_model": 144, "heads": 4, "label": "Base 12×144"},
}
HOURS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0]
RECIPES = {"teacher": "Teacher", "ld": "LD", "dld": "DLD"}

root = state.jobs_dir()
st.title("Train")
st.caption(f"Background training of a small model. Jobs live in {root}; finished models appear in the "
           "Inspect picker. One training at a time.")


def busy_reason() -> str | None:
    running = jobs.running_job(root)
    if running is not None:
        return f"a training is already running (job {running.id}, pid {running.pid}) — stop it or wait for it to finish"
    prep = train_launcher.preparing(root)
    if prep and prep.get("state") == "running":
        return "a synthetic corpus is being built for a training that is about to start — wait for it or stop it"
    return None


def corpus_path(hours: float) -> Path:
    return root / "corpus" / f"synth_{hours:g}h"


def fmt_eta(seconds) -> str:
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------ new training
def start(args: list[str], data: str, hours: float, train_m: str, valid_m: str) -> None:
    reason = busy_reason()
    if reason:
        st.error(f"Refused: {reason}.", icon=":material/block:")
        return
    try:
        if data == "manifest":
            jobs.start_job([*args, "--train", train_m, "--valid", valid_m], root)
            st.session_state["_train_msg"] = "Training started."
        else:
            corpus = corpus_path(hours)
            if train_launcher.corpus_ready(corpus):
                jobs.start_job([*args, "--train", str(corpus / "train.jsonl"), "--valid", str(corpus / "valid.jsonl")], root)
                st.session_state["_train_msg"] = "Training started."
            else:
                train_launcher.launch(root, corpus, hours, args)
                st.session_state["_train_msg"] = f"Building the {hours:g} h synthetic corpus; training starts right after."
    except jobs.JobBusyError as exc:
        st.error(f"Refused: {str(exc).splitlines()[0]}.", icon=":material/block:")
        return
    except (jobs.JobError, OSError, ValueError) as exc:
        st.error(f"Cannot start the training — {str(exc).splitlines()[0]}", icon=":material/error:")
        return
    st.rerun()


left, right = st.columns([1, 1.5], gap="large")
with left, st.container(border=True):
    st.markdown("**New training**")
    recipe = st.segmented_control("Recipe", list(RECIPES), format_func=RECIPES.get, default="dld", required=True,
                                  key="train_recipe",
                                  help="Teacher: plain CTC. LD: random layer dropping. DLD: layer dropping + "
                                       "distillation from a teacher.")
    teacher_path = None
    if recipe == "dld":
        teachers = [e for e in state.find_checkpoints() if e.recipe == "teacher"]
        if teachers:
            paths = [str(e.path) for e in teachers]
            default = str(state.default_teacher())
            teacher_path = st.selectbox("Teacher", paths, index=paths.index(default) if default in paths else 0,
                                        format_func=lambda p: next(e.label for e in teachers if str(e.path) == p),
                                        key="train_teacher")
        else:
            st.error("DLD needs a teacher checkpoint: train a Teacher first (or add checkpoints/teacher).",
                     icon=":material/error:")
    data = st.radio("Data", ["synthetic", "manifest"], horizontal=True, key="train_data",
                    format_func={"synthetic": "Built-in synthetic corpus", "manifest": "Manifest path"}.get)
    hours, train_m, valid_m = HOURS[1], "", ""
    if data == "synthetic":
        hours = st.select_slider("Corpus size (hours of audio)", HOURS, value=HOURS[1], key="train_hours",
                                 format_func=lambda h: f"{h:g} h")
        ready = train_launcher.corpus_ready(corpus_path(hours))
        st.caption("Corpus ready." if ready else "The corpus is built first (offline TTS + augmentation), "
                   "then the training starts — in the same background job.")
    else:
        train_m = st.text_input("Training manifest (JSONL)", key="train_manifest",
                                placeholder="/path/to/train.jsonl")
        valid_m = st.text_input("Validation manifest (optional: defaults to the training one)", key="valid_manifest")
    size = st.segmented_control("Model size", list(SIZES), format_func=lambda s: SIZES[s]["label"], default="tiny",
                                required=True, key="train_size",
                                help="Modules × width. Base is the size of the shipped models.")
    epochs = st.number_input("Epochs", min_value=1, max_value=500, value=3, step=1, key="train_epochs")
    with st.expander("Advanced"):
        max_steps = st.number_input("Max steps (0 = no limit)", min_value=0, value=0, step=50, key="train_max_steps")
        threads = st.number_input("CPU threads for training", min_value=1, max_value=max(1, os.cpu_count() or 1),
                                  value=max(1, (os.cpu_count() or 2) - 1), key="train_threads",
                                  help="Leave a core for the app.")
        batch_seconds = st.number_input("Batch size (seconds of audio)", min_value=5.0, max_value=2000.0,
                                        value=60.0, step=5.0, key="train_batch_seconds")
        seed = st.number_input("Seed", min_value=0, value=0, step=1, key="train_seed")

    problem = None
    if recipe == "dld" and teacher_path is None:
        problem = "DLD needs a teacher."
    if data == "manifest":
        if not train_m.strip():
            problem = "Give a training manifest path."
        elif not Path(train_m.strip()).expanduser().is_file():
            problem = f"Training manifest not found: {train_m.strip()}"
        elif valid_m.strip() and not Path(valid_m.strip()).expanduser().is_file():
            problem = f"Validation manifest not found: {valid_m.strip()}"
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start",
                 disabled=problem is not None, width="stretch"):
        cfg = SIZES[size]
        out = root / "models" / f"{recipe}-{size}-{time.strftime('%Y%m%d-%H%M%S')}"
        args = ["--recipe", recipe, "--out", str(out), "--epochs", str(int(epochs)),
                "--layers", str(cfg["layers"]), "--d-model", str(cfg["d_model"]), "--heads", str(cfg["heads"]),
                "--batch-seconds", str(float(batch_seconds)), "--threads", str(int(threads)),
                "--seed", str(int(seed))]
        if max_steps:
            args += ["--max-steps", str(int(max_steps))]
        if teacher_path:
            args += ["--teacher", str(teacher_path)]
        tm = str(Path(train_m.strip()).expanduser()) if train_m.strip() else ""
        vm = str(Path(valid_m.strip()).expanduser()) if valid_m.strip() else tm
        start(args, data, hours, tm, vm)
    if problem:
        st.caption(problem)
    if st.session_state.get("_train_msg"):
        st.success(st.session_state.pop("_train_msg"), icon=":material/check_circle:")


# --------------------------------------------------------------------------------------------- live view
STATE_ICONS = {"running": ":material/progress_activity:", "finished": ":material/check_circle:",
               "stopped": ":material/pause_circle:", "failed": ":material/error:"}


def live_body(was_busy: bool) -> None:
    prep = train_launcher.preparing(root)
    job = jobs.latest_job(root)
    now_busy = busy_reason() is not None
    if prep is not None:
        if prep.get("state") == "running":
            st.info(f"Building the {prep.get('hours', 0):g} h synthetic corpus… "
                    f"({time.time() - float(prep.get('started', time.time())):.0f} s)", icon=":material/hourglass_top:")
            st.code(jobs.tail(root / train_launcher.PREPARING_LOG, 8) or "starting…", language=None)
            if st.button("Cancel", key="prep_cancel", icon=":material/stop:"):
                pid = int(prep.get("pid") or 0)
                if pid > 0:
                    try:
                        os.killpg(pid, 15)
                    except (ProcessLookupError, PermissionError):
                        pass
                train_launcher.clear_preparing(root)
                st.rerun()
        else:
            c1, c2 = st.columns([4, 1], vertical_alignment="center")
            c1.error(f"Could not start: {prep.get('message', 'corpus building failed')}", icon=":material/error:")
            if c2.button("Dismiss", key="prep_dismiss"):
                train_launcher.clear_preparing(root)
                st.rerun()
    if job is None:
        if prep is None:
            st.info("No training yet. Start one on the left.", icon=":material/info:")
    else:
        job_view(job)
    if was_busy != now_busy:
        st.rerun()            # the whole page: buttons and the refresh rate follow the new state


def job_view(job: jobs.JobInfo) -> None:
    status = jobs.job_status(job)
    events = jobs.read_events(job.events_path)
    steps = [e for e in events if e.get("event") == "step"]
    epochs = [e for e in events if e.get("event") == "epoch"]
    start_ev = next((e for e in events if e.get("event") == "start"), {})
    last_ev = events[-1] if events else {}
    recipe = start_ev.get("recipe") or (job.args[job.args.index("--recipe") + 1] if "--recipe" in job.args else "?")
    label = {"running": "Running", "finished": "Finished", "stopped": "Stopped", "failed": "Failed"}[status["state"]]
    if status["state"] == "finished" and last_ev.get("event") == "paused":
        label = "Paused"
    with st.container(border=True):
        st.markdown(f"{STATE_ICONS[status['state']]} **{label}** · {RECIPES.get(recipe, recipe)} · job `{job.id}`")
        st.caption(f"Output: {job.out}")
        total = next((e.get("total_steps") for e in reversed(events) if e.get("total_steps")), None)
        step = last_ev.get("step", 0) or 0
        if total:
            st.progress(min(1.0, step / total), text=f"step {step} / {total}")
        m1, m2, m3, m4 = st.columns(4)
        last_step = steps[-1] if steps else {}
        m1.metric("Loss", f"{last_step['loss']:.3f}" if "loss" in last_step else "—")
        m2.metric("Valid WER", f"{100 * epochs[-1]['valid_wer']:.1f}%" if epochs and epochs[-1].get("valid_wer") is not None else "—")
        m3.metric("Epoch", f"{last_ev.get('epoch', 0)}")
        m4.metric("ETA", fmt_eta(last_step.get("eta_s")) if status["state"] == "running" else "—",
                  help=(f"{last_step['audio_sec_per_sec']:.0f} s of audio per second"
                        if "audio_sec_per_sec" in last_step else None))
        if status["state"] == "failed" and status.get("message"):
            st.error(f"The training failed — {status['message'].splitlines()[0]}", icon=":material/error:")
        b1, b2, _ = st.columns([1, 1, 2])
        if status["state"] == "running":
            if b1.button("Stop", icon=":material/stop:", key="job_stop", width="stretch"):
                with st.spinner("Stopping (writing a resumable checkpoint)…"):
                    jobs.stop_job(job)
                st.rerun()
        elif (Path(job.out) / "resume").is_dir() and not (status["state"] == "finished" and last_ev.get("event") == "done"):
            if b2.button("Resume", icon=":material/play_arrow:", key="job_resume", width="stretch"):
                try:
                    jobs.resume_job(job, root)
                except jobs.JobBusyError as exc:
                    st.error(f"Refused: {str(exc).splitlines()[0]}.", icon=":material/block:")
                else:
                    st.rerun()
    if steps:
        st.plotly_chart(plots.training_curves(pd.DataFrame(steps), pd.DataFrame(epochs)), key="train_curves",
                        config={"displaylogo": False})
    st.markdown("**Log**")
    st.code(jobs.tail(job.log_path, 14) or "(no output yet)", language=None, wrap_lines=True)


busy_now = busy_reason() is not None
with right:
    if busy_now:
        st.fragment(run_every=2)(live_body)(True)
    else:
        st.fragment(live_body)(False)
