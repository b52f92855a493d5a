"""Train page (issue 15): the form keeps its values across page switches, Start is off while a training runs,
messages speak the app's words (no command-line options), and the training chart has percent WER ticks and
no flat KL line for a teacher; Continue runs again what was stopped, the log shows a progress bar as one line and
the WER axis has round ticks (issue 22). Jobs here are mostly job folders written by hand (and one idle process
that looks like a running job); the few started ones are stopped at once."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import jobs
from app.views.plots import nice_ticks
from tests.app_fixtures.apptest import env, no_exceptions, run_app, world  # noqa: F401  (fixtures and helpers)
from tests.helpers import write_tiny_corpus


def make_job(jobs_dir: Path, recipe: str = "teacher", result: dict | None = None, events=(),
             resume_dir: bool = False, pid: int = 0, **spec_fields) -> jobs.Job:
    """A training job folder as app/jobs.py writes it (job.json, optional result.json and train_log.jsonl);
    spec_fields: more TrainSpec fields (corpus, model, ...)."""
    job_dir = jobs_dir / f"20260101-000000-{recipe}{len(list(jobs_dir.glob('*'))) if jobs_dir.is_dir() else 0}"
    out = jobs_dir / "models" / job_dir.name
    job_dir.mkdir(parents=True)
    out.mkdir(parents=True)
    if resume_dir:
        (out / "resume").mkdir()
    spec = dataclasses.asdict(jobs.TrainSpec(out=str(out), train={"recipe": recipe, "epochs": 3}, **spec_fields))
    job = jobs.Job(id=job_dir.name, kind="train", spec=spec, dir=str(job_dir), started=time.time(),
                   pid=pid, proc_start=jobs._proc_start(pid) if pid else 0)
    (job_dir / jobs.JOB_FILE).write_text(json.dumps(dataclasses.asdict(job)))
    if result is not None:
        (job_dir / jobs.RESULT_FILE).write_text(json.dumps(result))
    (out / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return job


def curve_events(kl: float, wers=(0.91, 0.62, 0.48)) -> list[dict]:
    steps = [{"event": "step", "step": s, "epoch": s // 10, "loss": 5.0 - 0.1 * s + kl, "ctc": 5.0 - 0.1 * s,
              "kl": kl, "total_steps": 30} for s in range(1, 31)]
    epochs = [{"event": "epoch", "step": 10 * e, "epoch": e, "valid_wer": w}
              for e, w in enumerate(wers, start=1)]
    return [{"event": "start", "recipe": "x", "step": 0, "epoch": 0, "total_steps": 30}, *steps, *epochs,
            {"event": "done", "step": 30, "epoch": 3}]


def chart(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


# ---------------------------------------------------------------------------- 7. the form keeps its values
def test_the_form_keeps_its_values_across_page_switches(env):
    at = run_app("train")
    at.segmented_control(key="train_recipe").set_value("teacher").run()
    at.segmented_control(key="train_size").set_value("small").run()
    at.radio(key="train_data").set_value("manifest").run()
    at.text_input(key="train_manifest").set_value(str(env["manifest"])).run()
    at.number_input(key="train_epochs").set_value(7).run()
    at.number_input(key="train_seed").set_value(5).run()
    no_exceptions(at)
    at.switch_page("app_pages/budgets.py").run()                          # another page: widget state is dropped
    no_exceptions(at)
    assert "train_epochs" not in at.session_state
    at.switch_page("app_pages/train.py").run()
    no_exceptions(at)
    assert at.segmented_control(key="train_recipe").value == "teacher"
    assert at.segmented_control(key="train_size").value == "small"
    assert at.radio(key="train_data").value == "manifest"
    assert at.text_input(key="train_manifest").value == str(env["manifest"])
    assert at.number_input(key="train_epochs").value == 7
    assert at.number_input(key="train_seed").value == 5
    assert not at.button(key="train_start").disabled                      # and the form is ready to start
    assert not at.warning                                                 # no "set via Session State" warning


# ---------------------------------------------------------------------- 8. Start is off while a job runs
def test_start_is_disabled_while_a_training_runs(env, tmp_path):
    jobs_dir = tmp_path / "jobs"
    at = run_app("train")
    assert not at.button(key="train_start").disabled
    job_dir = jobs_dir / "20260101-000000-running"
    job_dir.mkdir(parents=True)
    # An idle process whose command line is the job runner's for this folder: app/jobs.py sees a live job.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "app.jobs", str(job_dir)])
    try:
        deadline = time.time() + 10
        # until the child has exec'd: right after the fork its command line is still this test's
        while not (jobs._proc_start(proc.pid) and jobs._runs_job(proc.pid, str(job_dir))) and time.time() < deadline:
            time.sleep(0.05)
        job = jobs.Job(id=job_dir.name, kind="train", dir=str(job_dir), started=time.time(), pid=proc.pid,
                       proc_start=jobs._proc_start(proc.pid),
                       spec=dataclasses.asdict(jobs.TrainSpec(out=str(jobs_dir / "models" / "x"),
                                                              train={"recipe": "dld"})))
        (job_dir / jobs.JOB_FILE).write_text(json.dumps(dataclasses.asdict(job)))
        assert jobs.running(jobs_dir, "train") is not None
        at = run_app("train")
        no_exceptions(at)
        assert at.button(key="train_start").disabled
        assert any("A training is running" in c.value for c in at.caption)
        assert any(b.key == "job_stop" for b in at.button)
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------- 9. messages in UI words
def test_messages_speak_the_apps_words(env, tmp_path):
    jobs_dir = tmp_path / "jobs"
    make_job(jobs_dir, "ld", result={"returncode": 2,
                                     "message": "the ld recipe with --init-from-teacher needs --teacher CKPT"})
    at = run_app("train")
    no_exceptions(at)
    failed = [e.value for e in at.error if "The training failed" in e.value]
    assert failed and "needs a teacher" in failed[0] and "--" not in failed[0], failed

    make_job(jobs_dir, "dld", result={"returncode": 130, "message": "stopped; continue with --resume"},
             resume_dir=True)
    at = run_app("train")
    no_exceptions(at)
    assert any(b.key == "job_resume" for b in at.button)
    shown = [c.value for c in at.caption] + [e.value for e in at.error] + [m.value for m in at.markdown]
    assert any("press **Continue**" in text for text in shown)
    assert not any("--resume" in text or "--epochs" in text for text in shown)
    assert jobs.status(jobs.latest(jobs_dir, "train"))["message"] == "stopped; press Continue"


# ------------------------------------------------------------------------------------ 10. training chart
def test_training_chart_percent_ticks_and_no_flat_kl_for_a_teacher(env, tmp_path):
    jobs_dir = tmp_path / "jobs"
    make_job(jobs_dir, "teacher", result={"returncode": 0, "message": ""}, events=curve_events(kl=0.0))
    at = run_app("train")
    no_exceptions(at)
    spec = chart(at)
    names = [t.get("name") for t in spec["data"]]
    assert "kl" not in names and "loss" in names and "valid WER" in names
    wer_axis = spec["layout"]["yaxis2"]
    assert wer_axis["ticksuffix"] == "%" and len(wer_axis["tickvals"]) <= 8

    make_job(jobs_dir, "dld", result={"returncode": 0, "message": ""}, events=curve_events(kl=0.4))
    at = run_app("train")                                                  # a DLD run keeps its KL line
    no_exceptions(at)
    assert "kl" in [t.get("name") for t in chart(at)["data"]]


def start_one_step_on(at, manifest: Path, jobs_dir: Path) -> jobs.Job:
    """Train on a manifest for one step on one thread: press Start, return the job (the caller stops it)."""
    at.radio(key="train_data").set_value("manifest").run()
    at.text_input(key="train_manifest").set_value(str(manifest)).run()
    at.number_input(key="train_max_steps").set_value(1).run()
    at.number_input(key="train_threads").set_value(1).run()
    at.button(key="train_start").click().run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    return jobs.latest(jobs_dir, "train")


# ------------------------------------------------------------------- layer dropping settings of a student
def test_a_students_layer_dropping_settings_reach_the_training(env, tmp_path, monkeypatch):
    """LD / DLD of a Whisper teacher: keep probability, sub-block or whole-block gates, modules never dropped,
    λ and τ go into the job's training config, on top of the shipped student settings (the pretrained
    encoder fine-tuned gently, from the teacher)."""
    from dld_core.checkpoint import save_checkpoint
    from dld_core.config import ModelConfig
    from dld_core.shipped_recipe import settings as shipped_settings
    from dld_core.model import DynamicCTCModel
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts / "teacher", DynamicCTCModel(ModelConfig(family="whisper", d_model=32, n_layers=2, n_heads=2,
                                                                   ffn_dim=64, max_frames=400)), recipe="teacher")
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(ckpts))
    at = run_app("train")
    at.segmented_control(key="train_recipe").set_value("dld").run()
    no_exceptions(at)
    assert at.slider(key="train_keep_prob").value == 0.5                   # the paper's and the shipped value
    assert at.radio(key="train_gate_unit").value == "sub_block"
    assert at.multiselect(key="train_protected").options == ["A1", "M1", "A2", "M2"]
    assert (at.number_input(key="train_lambda").value, at.number_input(key="train_tau").value) == (1.0, 2.0)
    at.radio(key="train_gate_unit").set_value("block").run()
    assert at.multiselect(key="train_protected").options == ["B1", "B2"]
    at.slider(key="train_keep_prob").set_value(0.75).run()
    at.multiselect(key="train_protected").set_value(["B1"]).run()
    at.number_input(key="train_lambda").set_value(2.0).run()
    job = start_one_step_on(at, env["manifest"], tmp_path / "jobs")
    try:
        train = job.spec["train"]
        assert {k: train[k] for k in ("keep_prob", "protected", "kd_lambda", "kd_tau", "init_from_teacher")} == \
            {"keep_prob": 0.75, "protected": "B1", "kd_lambda": 2.0, "kd_tau": 2.0, "init_from_teacher": True}
        assert {k: train[k] for k in ("lr", "encoder_lr")} == {k: shipped_settings("dld", "whisper")[k]
                                                              for k in ("lr", "encoder_lr")}
        assert job.spec["model"] == {"gate_unit": "block"} and job.spec["teacher"] == str(ckpts / "teacher")
    finally:
        jobs.stop(job, timeout=30)


def test_a_teacher_has_no_layer_dropping_settings(env):
    at = run_app("train")
    at.segmented_control(key="train_recipe").set_value("teacher").run()
    no_exceptions(at)
    assert not any(s.key == "train_keep_prob" for s in at.slider)
    at.segmented_control(key="train_recipe").set_value("ld").run()         # a conformer teacher: no gate choice
    assert at.slider(key="train_keep_prob").value == 0.5 and not any(r.key == "train_gate_unit" for r in at.radio)
    assert not any(n.key == "train_lambda" for n in at.number_input)         # λ and τ are DLD's


def test_a_whisper_teacher_starts_from_the_pretrained_encoder(env, tmp_path):
    at = run_app("train")
    at.segmented_control(key="train_recipe").set_value("teacher").run()
    at.segmented_control(key="train_size").set_value("whisper").run()
    job = start_one_step_on(at, env["manifest"], tmp_path / "jobs")
    try:
        assert job.spec["model"] == {"family": "whisper"}
        assert {k: job.spec["train"][k] for k in ("pretrained", "lr", "encoder_lr", "warmup_steps")} == \
            {"pretrained": "default", "lr": 1e-3, "encoder_lr": 5e-5, "warmup_steps": 100}   # scripts/recipe.sh
    finally:
        jobs.stop(job, timeout=30)


# ------------------------------------------------------------------ issue 22: Continue, the log, the WER axis
def test_continue_runs_again_exactly_what_was_stopped(env, tmp_path):
    """Continue starts the stopped training's spec (its corpus, output folder and configs) with resume on. It
    used to drop the corpus, and the continued job failed with "Is a directory (.)" (no manifests)."""
    jobs_dir, corpus = tmp_path / "jobs", tmp_path / "corpus"
    write_tiny_corpus(corpus)
    (corpus / "corpus.json").write_text("{}")                          # built: the continued job builds nothing
    stopped = make_job(jobs_dir, "teacher", result={"returncode": 130, "message": "stopped"}, resume_dir=True,
                       corpus=str(corpus), corpus_hours=0.05, model={"d_model": 32, "n_layers": 2}, threads=1)
    at = run_app("train")
    at.button(key="job_resume").click().run()
    continued = jobs.latest(jobs_dir, "train")
    try:
        no_exceptions(at)
        assert not at.error, [e.value for e in at.error]
        assert continued.id != stopped.id
        assert continued.spec == {**stopped.spec, "resume": True}
    finally:
        jobs.stop(continued, timeout=30)


def test_the_log_shows_a_progress_bar_as_one_updating_line(env, tmp_path):
    """tqdm redraws its line with carriage returns: the log shows its last state once, not every redraw."""
    job = make_job(tmp_path / "jobs", "teacher", result={"returncode": 0, "message": ""})
    bar = "".join(f"\rsynth: {p:3d}%|{'#' * (p // 10):<10}| {p}/100 [00:{p // 10:02d}<00:10]" for p in range(0, 101, 5))
    job.log_path.write_text(f"Building the 0.05 h synthetic corpus\n{bar}\ncorpus ready\nTraining\n")
    at = run_app("train")
    no_exceptions(at)
    log = next(c.value for c in at.code if "Training" in c.value)
    assert log.splitlines() == ["Building the 0.05 h synthetic corpus",
                                "synth: 100%|##########| 100/100 [00:10<00:10]", "corpus ready", "Training"]


@pytest.mark.parametrize("wers", [(1.07, 0.62, 0.171), (0.2, 0.0525, 0.06), (0.0, 0.0, 0.0)])
def test_the_valid_wer_axis_has_round_ticks_above_every_point(env, tmp_path, wers):
    """The valid-WER axis had ticks at 5.25% and 17.1% and points above its top tick: its ticks are now
    0, d, 2d, ... (d = 1, 2, 2.5 or 5 times a power of ten) up to a tick at or above the worst epoch."""
    make_job(tmp_path / "jobs", "teacher", result={"returncode": 0, "message": ""}, events=curve_events(0.0, wers))
    at = run_app("train")
    no_exceptions(at)
    axis, worst = chart(at)["layout"]["yaxis2"], 100 * max(wers)
    ticks = axis["tickvals"]
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert ticks[0] == 0 and 3 <= len(ticks) <= 6 and any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    assert all(math.isclose(b - a, step) for a, b in zip(ticks, ticks[1:]))
    assert ticks[-2] < worst <= ticks[-1] or worst == 0
    assert axis["range"][0] <= 0 and axis["range"][1] >= ticks[-1] and axis["ticksuffix"] == "%"
    assert nice_ticks(17.1) == [0, 5, 10, 15, 20] and nice_ticks(5.25) == [0, 2, 4, 6]
