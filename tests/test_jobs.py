"""app/jobs.py: the one background-job mechanism (atomic one-training rule, process identity, failure
reasons, reaping)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import jobs
from dld_core.checkpoint import save_checkpoint
from dld_core.model import DynamicCTCModel
from tests.helpers import tiny_config, write_tiny_corpus

pytestmark = pytest.mark.slow


def long_training(tiny_corpus, out: Path) -> jobs.TrainSpec:
    return jobs.TrainSpec(out=str(out), train={"recipe": "teacher", "epochs": 500},
                          model={"d_model": 32, "n_layers": 2, "n_heads": 2, "ffn_dim": 64},
                          train_manifest=str(tiny_corpus["train"]), valid_manifest=str(tiny_corpus["valid"]))


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def test_two_starts_at_once_give_one_training(tmp_path, tiny_corpus):
    started, refused = [], []
    barrier = threading.Barrier(2)

    def press_start(i: int) -> None:
        barrier.wait()
        try:
            started.append(jobs.start("train", long_training(tiny_corpus, tmp_path / f"out{i}"), tmp_path / "jobs"))
        except jobs.JobBusyError:
            refused.append(i)

    threads = [threading.Thread(target=press_start, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(started) == 1 and len(refused) == 1
        assert jobs.running(tmp_path / "jobs", "train").id == started[0].id
        with pytest.raises(jobs.JobBusyError, match="already running"):
            jobs.start("train", long_training(tiny_corpus, tmp_path / "out3"), tmp_path / "jobs")
    finally:
        for job in jobs.list_jobs(tmp_path / "jobs"):
            jobs.stop(job, timeout=60)
    assert jobs.running(tmp_path / "jobs") is None


def fake_job(tmp_path: Path, pid: int, proc_start: int) -> jobs.Job:
    job_dir = tmp_path / "jobs" / "stale"
    job_dir.mkdir(parents=True)
    job = jobs.Job(id="stale", kind="train", spec={"out": str(tmp_path / "out")}, dir=str(job_dir), pid=pid,
                   proc_start=proc_start, started=time.time())
    (job_dir / jobs.JOB_FILE).write_text(json.dumps(job.__dict__))
    return job


@pytest.mark.parametrize("same_start_time", [True, False], ids=["other-command", "reused-pid"])
def test_a_stranger_with_the_jobs_pid_is_not_the_job(tmp_path, same_start_time):
    """After a kill -9 or a reboot the recorded pid may belong to another process: it neither blocks a new
    training nor receives the Stop signal."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        wait_for(lambda: jobs._proc_start(stranger.pid) != 0)
        start = jobs._proc_start(stranger.pid) + (0 if same_start_time else 7)
        job = fake_job(tmp_path, stranger.pid, start)
        assert not jobs.alive(job)
        assert jobs.running(tmp_path / "jobs") is None
        assert jobs.status(job)["state"] == "failed"
        jobs.stop(job, timeout=1)
        time.sleep(0.3)
        assert stranger.poll() is None                       # not signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_failed_job_says_why_and_is_reaped(tmp_path):
    spec = jobs.TrainSpec(out=str(tmp_path / "out"), train={"recipe": "teacher", "epochs": 1},
                          train_manifest=str(tmp_path / "missing.jsonl"), valid_manifest=str(tmp_path / "missing.jsonl"))
    job = jobs.start("train", spec, tmp_path / "jobs")
    wait_for(lambda: not jobs.alive(job))
    status = jobs.status(job)
    assert status["state"] == "failed" and status["returncode"] == 2
    assert "missing.jsonl" in status["message"] and "\n" not in status["message"]
    wait_for(lambda: not Path(f"/proc/{job.pid}").exists(), timeout=10)      # reaped: no zombie left


def test_evaluation_job_writes_its_results(tmp_path, tiny_corpus):
    ckpt = save_checkpoint(tmp_path / "ckpt", DynamicCTCModel(tiny_config()), recipe="dld")
    out = tmp_path / "eval.json"
    job = jobs.start("evaluate", jobs.EvalSpec(str(ckpt), str(tiny_corpus["test"]), str(out), masks=1),
                     tmp_path / "jobs", exclusive=False)
    wait_for(lambda: not jobs.alive(job), timeout=120)
    assert jobs.status(job)["state"] == "finished", jobs.tail(job.log_path)
    assert json.loads(out.read_text())["num_layers"] == 4
    assert jobs.latest_for(tmp_path / "jobs", "evaluate", str(out)).id == job.id
    assert os.path.isfile(job.log_path)


def ready_corpus(folder: Path) -> Path:
    """A synthetic-corpus folder the runner takes as built (no speech synthesis in a test)."""
    write_tiny_corpus(folder)
    (folder / "corpus.json").write_text(json.dumps({"complete": True}))
    assert jobs.corpus_ready(folder)
    return folder


def test_stop_then_continue_ends_like_an_uninterrupted_training(tmp_path):
    """Issue 22: Continue on a training of the built-in corpus failed ("Is a directory (.)": the continued job
    had no corpus and no manifests). Start, Stop after the first steps, Continue: the run finishes with the
    step count of an uninterrupted one, having resumed (not restarted) in the same output folder."""
    corpus = ready_corpus(tmp_path / "corpus")
    root = tmp_path / "jobs"

    def spec(out: str) -> jobs.TrainSpec:
        return jobs.TrainSpec(out=str(tmp_path / out), corpus=str(corpus), corpus_hours=0.05,
                              train={"recipe": "teacher", "epochs": 10, "batch_seconds": 4.0, "warmup_steps": 3},
                              model={"d_model": 32, "n_layers": 2, "n_heads": 2, "ffn_dim": 64})

    def steps_of(job: jobs.Job) -> list[dict]:
        return [e for e in jobs.read_events(job.events_path) if e.get("event") == "step"]

    first = jobs.start("train", spec("stopped"), root)
    try:
        wait_for(lambda: steps_of(first) or not jobs.alive(first), timeout=180)
    finally:
        stopped = jobs.stop(first, timeout=60)                          # what the Stop button does
    assert stopped["state"] == "stopped", jobs.tail(first.log_path)
    stopped_at = jobs.read_events(first.events_path)[-1]
    assert stopped_at["event"] == "interrupted" and (Path(first.out) / "resume").is_dir()

    second = jobs.resume(first, root)
    assert second.spec == {**first.spec, "resume": True}
    wait_for(lambda: not jobs.alive(second), timeout=300)
    assert jobs.status(second)["state"] == "finished", jobs.tail(second.log_path)
    starts = [e for e in jobs.read_events(second.events_path) if e.get("event") == "start"]
    assert starts[-1]["step"] == stopped_at["step"] > 0                  # continued where it stopped

    whole = jobs.start("train", spec("uninterrupted"), root)
    wait_for(lambda: not jobs.alive(whole), timeout=300)
    assert jobs.status(whole)["state"] == "finished", jobs.tail(whole.log_path)
    resumed, reference = (json.loads((Path(j.out) / "metrics.json").read_text()) for j in (second, whole))
    assert resumed["finished"] and stopped_at["step"] < resumed["steps"] == reference["steps"]
    assert resumed["epochs"] == reference["epochs"] == 10
