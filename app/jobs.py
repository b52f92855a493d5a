"""Background jobs of the app: the one mechanism for every long task a page starts.

A job is a folder JOBS_DIR/<id>/ with job.json (its kind, its spec — a config object, not argv strings —
and the identity of its process), output.log, and result.json (exit code and the last error line, written
by the job itself when it ends). The process is `python -m app.jobs run JOB_DIR` in a session of its own,
so it outlives reruns, closed tabs and app restarts; every status is read back from disk.

Kinds:
  train     build the synthetic corpus first if the spec asks for one, then dld_core.train.train
  evaluate  dld_core.evaluate.evaluate on a manifest -> a results JSON (the Budgets page)

One training at a time: the check and the start happen under an exclusive lock (two tabs pressing Start
together get one training and one refusal). A job's process is trusted only while its pid runs our runner
for that job folder and has the start time recorded at launch, so a pid reused after a kill -9 or a
reboot neither blocks new trainings nor receives our signals. Children are reaped as soon as they end.

This module imports no Streamlit: the runner loads only what its job needs.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dld_core.checkpoint import LOG_FILE  # noqa: E402
from dld_core.safe_io import atomic_write_json  # noqa: E402

JOB_FILE, RESULT_FILE, OUTPUT_FILE, START_LOCK = "job.json", "result.json", "output.log", ".start.lock"
STOPPED_CODES = (130, 143, -signal.SIGTERM)


class JobBusyError(RuntimeError):
    """A training is already running."""


class JobError(RuntimeError):
    """A job that cannot be started (bad spec, no folder, ...)."""


@dataclass
class TrainSpec:
    """What a training job runs: the same configs as `python -m dld_core train`."""
    out: str
    train: dict                                  # TrainConfig fields (recipe, epochs, ...)
    model: dict = field(default_factory=dict)    # ModelConfig fields given explicitly (a student inherits the rest)
    teacher: Optional[str] = None
    train_manifest: str = ""
    valid_manifest: str = ""
    corpus: str = ""                             # build a synthetic corpus here first (when it is not ready)
    corpus_hours: float = 0.0
    threads: int = 1
    resume: bool = False


@dataclass
class EvalSpec:
    checkpoint: str
    manifest: str
    out: str
    masks: int = 4
    threads: int = 1


SPECS = {"train": TrainSpec, "evaluate": EvalSpec}


@dataclass
class Job:
    id: str
    kind: str
    spec: dict
    dir: str
    pid: int = 0
    proc_start: int = 0          # the process's start time (clock ticks after boot), with pid = its identity
    started: float = 0.0

    @property
    def log_path(self) -> Path:
        return Path(self.dir) / OUTPUT_FILE

    @property
    def events_path(self) -> Path:
        """A training's event log (train_log.jsonl in its output folder)."""
        return Path(self.spec.get("out", self.dir)) / LOG_FILE

    @property
    def out(self) -> str:
        return self.spec.get("out", "")


# ------------------------------------------------------------------------------ process identity
def _proc_start(pid: int) -> int:
    """The start time of a live, non-zombie process in clock ticks after boot, or 0."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return 0 if fields[0] in ("Z", "X") else int(fields[19])


def _runs_job(pid: int, job_dir: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"app.jobs" in argv and os.fsencode(job_dir) in argv


def alive(job: Job) -> bool:
    """True while the job's own process runs (not a zombie, not a stranger that reuses its pid)."""
    return job.pid > 0 and _proc_start(job.pid) == job.proc_start != 0 and _runs_job(job.pid, job.dir)


# ------------------------------------------------------------------------------------ job files
def _read(job_dir: Path) -> Optional[Job]:
    try:
        data = json.loads((job_dir / JOB_FILE).read_text())
        return Job(**data) if data.get("kind") in SPECS else None
    except (OSError, ValueError, TypeError):
        return None


def list_jobs(jobs_dir, kind: Optional[str] = None) -> list[Job]:
    root = Path(jobs_dir)
    found = [j for d in root.iterdir() if d.is_dir() and (j := _read(d))] if root.is_dir() else []
    return sorted((j for j in found if kind is None or j.kind == kind), key=lambda j: j.started)


def latest(jobs_dir, kind: Optional[str] = None) -> Optional[Job]:
    found = list_jobs(jobs_dir, kind)
    return found[-1] if found else None


def running(jobs_dir, kind: Optional[str] = None) -> Optional[Job]:
    return next((j for j in list_jobs(jobs_dir, kind) if alive(j)), None)


def latest_for(jobs_dir, kind: str, out: str) -> Optional[Job]:
    """The newest job of a kind that writes to `out`."""
    found = [j for j in list_jobs(jobs_dir, kind) if j.spec.get("out") == str(out)]
    return found[-1] if found else None


def screen_lines(text: str) -> list[str]:
    """The non-empty lines of a log as a terminal shows them: a progress bar redraws its line with carriage
    returns ("\\r 40%|...") and only its last state stays on screen."""
    lines = (ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in text.split("\n"))
    return [ln for ln in lines if ln.strip()]


def last_error_line(text: str) -> str:
    """The line that says what went wrong: the last "error:" line, else the last line of a traceback."""
    lines = [ln.strip() for ln in screen_lines(text)]
    errors = [ln for ln in lines if ln.startswith("error:") or ln.split(":", 1)[0].endswith(("Error", "Exception"))]
    return (errors or lines or [""])[-1][:300]


# dld_core speaks to the command line ("--resume", "--teacher CKPT"); the app's pages say what its buttons and
# fields say. Longer phrases first.
UI_WORDS = (
    ("continue with --resume", "press Continue"),
    ("nothing to resume in", "nothing to continue from in"),
    ("no complete resume/ state", "no complete saved state to continue from"),
    ("a resumable checkpoint", "a checkpoint to continue from"),
    ("--resume", "Continue"),
    ("needs --teacher CKPT", "needs a teacher"),
    ("--teacher CKPT", "a teacher"),
    ("--teacher", "a teacher"),
    (" with --init-from-teacher", " (starting from the teacher's weights)"),
    ("--init-from-teacher", "Starting from the teacher's weights"),
    ("--pretrained is not supported", "Pretrained weights are not supported"),
    ("--pretrained", "Pretrained weights"),
    ("--stop-after-epochs", "the epoch limit"),
    ("--epochs", "Epochs"),
    ("--max-steps", "Max steps"),
    ("--batch-seconds", "Batch size"),
    ("--threads", "CPU threads"),
)


def ui_message(text: str) -> str:
    """A job's message in the app's words: no command-line options."""
    for cli, ui in UI_WORDS:
        text = text.replace(cli, ui)
    return re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", " "), text)


def status(job: Job) -> dict:
    """{"state": running | finished | stopped | failed, "returncode", "message"} (message: the reason a
    job failed, in one line, in the app's words)."""
    if alive(job):
        return {"state": "running", "returncode": None, "message": ""}
    try:
        result = json.loads((Path(job.dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        reason = last_error_line(tail(job.log_path, 40)) or "the process ended without a result (killed?)"
        return {"state": "failed", "returncode": None, "message": ui_message(reason)}
    code = result.get("returncode")
    state = "finished" if code == 0 else "stopped" if code in STOPPED_CODES else "failed"
    return {"state": state, "returncode": code, "message": ui_message(str(result.get("message", "")))}


# ------------------------------------------------------------------------------------- start / stop
def _reap(proc: subprocess.Popen) -> None:
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def start(kind: str, spec, jobs_dir, exclusive: bool = True) -> Job:
    """Start a job; with `exclusive`, refuse (JobBusyError) while another job of its kind runs. The check
    and the start are one step under an exclusive lock on JOBS_DIR/.start.lock."""
    if kind not in SPECS or not isinstance(spec, SPECS[kind]):
        raise JobError(f"a {kind!r} job needs a {SPECS.get(kind, TrainSpec).__name__}")
    root = Path(jobs_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / START_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = running(root, kind) if exclusive else None
        if busy is not None:
            raise JobBusyError(f"a {'training' if kind == 'train' else kind} is already running "
                               f"(job {busy.id}, pid {busy.pid}); stop it or wait for it to finish")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        job_dir = root / job_id
        job_dir.mkdir()
        job = Job(id=job_id, kind=kind, spec=dataclasses.asdict(spec), dir=str(job_dir), started=time.time())
        atomic_write_json(job_dir / JOB_FILE, dataclasses.asdict(job))
        with open(job.log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "app.jobs", "run", str(job_dir)], cwd=REPO_ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                                 "OMP_NUM_THREADS": str(getattr(spec, "threads", 1))})
        _reap(proc)
        job.pid, job.proc_start = proc.pid, _proc_start(proc.pid)
        atomic_write_json(job_dir / JOB_FILE, dataclasses.asdict(job))
    return job


def stop(job: Job, timeout: float = 30.0) -> dict:
    """SIGTERM to the job's process group (a training writes a resumable checkpoint first)."""
    if alive(job):
        try:
            os.killpg(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while alive(job) and time.time() < deadline:
            time.sleep(0.1)
    return status(job)


def resume(job: Job, jobs_dir) -> Job:
    """A new training job that continues the given one from its OUT/resume: the same spec (data, output
    folder, configs) with resume on. A synthetic corpus that is ready is not rebuilt."""
    return start("train", TrainSpec(**{**job.spec, "resume": True}), jobs_dir)


# ------------------------------------------------------------------------------------ reading logs
def read_events(path) -> list[dict]:
    """A JSONL event log, skipping a half-written last line."""
    events = []
    try:
        with open(path) as fh:
            for line in fh:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except OSError:
        pass
    return events


def tail(path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(screen_lines(text)[-lines:])


# ------------------------------------------------------------------------------------- the runner
def corpus_ready(corpus) -> bool:
    return all((Path(corpus) / name).is_file() for name in ("corpus.json", "train.jsonl", "valid.jsonl"))


def _run_train(spec: TrainSpec) -> None:
    from dld_core.config import TrainConfig
    from dld_core.train import train

    train_m, valid_m = spec.train_manifest, spec.valid_manifest
    if spec.corpus:
        if not corpus_ready(spec.corpus):
            from dld_core.synth import build_corpus
            print(f"Building the {spec.corpus_hours:g} h synthetic corpus in {spec.corpus}", flush=True)
            build_corpus(spec.corpus, hours=spec.corpus_hours, seed=0)
        train_m, valid_m = str(Path(spec.corpus) / "train.jsonl"), str(Path(spec.corpus) / "valid.jsonl")
    print("Training", flush=True)
    train(train_m, valid_m or train_m, spec.out, train_cfg=TrainConfig(**spec.train), model_overrides=spec.model,
          teacher=spec.teacher, resume=spec.resume, progress=False)


def _run_evaluate(spec: EvalSpec) -> None:
    from dld_core.evaluate import evaluate
    result = evaluate(spec.checkpoint, spec.manifest, num_masks=spec.masks, progress=False)
    Path(spec.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(spec.out), result)


def run(job_dir: Path) -> int:
    """The job process: run the spec, then write result.json (exit code and the last error line)."""
    job = _read(job_dir)
    if job is None:
        print(f"error: no readable {JOB_FILE} in {job_dir}", file=sys.stderr)
        return 2
    import torch
    from dld_core.cli import describe_error
    from dld_core.train import Interrupted

    spec = SPECS[job.kind](**job.spec)
    torch.set_num_threads(max(1, int(spec.threads)))
    if job.kind == "evaluate":
        os.nice(10)                             # the app's interactive requests come first

    def on_sigterm(signum, _frame):             # Stop before the training runs (the trainer has its own handler)
        raise Interrupted()
    signal.signal(signal.SIGTERM, on_sigterm)
    code, message = 0, ""
    try:
        (_run_train if job.kind == "train" else _run_evaluate)(spec)
    except Interrupted:
        code, message = 130, "stopped; a checkpoint to continue from was written"
    except (ValueError, OSError, RuntimeError) as exc:      # user errors and failed writes: one line
        code, message = 2, describe_error(exc)
        print(f"error: {message}", file=sys.stderr, flush=True)
    except BaseException as exc:                            # a bug: the traceback goes to output.log
        code, message = 1, f"unexpected {type(exc).__name__}: {describe_error(exc)}"
        atomic_write_json(job_dir / RESULT_FILE, {"returncode": code, "message": message, "ended": time.time()})
        raise
    atomic_write_json(job_dir / RESULT_FILE, {"returncode": code, "message": message, "ended": time.time()})
    return code


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        raise SystemExit("usage: python -m app.jobs run JOB_DIR")
    sys.exit(run(Path(sys.argv[2])))
