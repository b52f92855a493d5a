"""Background training jobs for the app: one process per job, independent of any Streamlit thread.

A job lives in JOBS_DIR/<job-id>/ : job.json (the CLI arguments, pid, output folder), output.log
(stdout/stderr) and result.json (exit code, written by the runner when the process ends). The training
writes OUT/train_log.jsonl itself. Because everything is on disk, a reloaded page or a restarted app
re-attaches to a running job. One job runs at a time: a second start raises JobBusyError.

    python -m dld_core.jobs run JOB_DIR      # the runner (started by start_job, not by hand)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .checkpoint import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


class JobBusyError(RuntimeError):
    """A training job is already running."""


class JobError(RuntimeError):
    pass


@dataclass
class JobInfo:
    id: str
    args: list[str]
    out: str
    pid: int
    started: float
    dir: str

    @property
    def log_path(self) -> Path:
        return Path(self.dir) / "output.log"

    @property
    def events_path(self) -> Path:
        return Path(self.out) / "train_log.jsonl"


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (reaping it if it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _read_job(job_dir: Path) -> Optional[JobInfo]:
    try:
        return JobInfo(**json.loads((job_dir / "job.json").read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def list_jobs(jobs_dir: str | os.PathLike) -> list[JobInfo]:
    root = Path(jobs_dir)
    jobs = [j for d in root.iterdir() if d.is_dir() and (j := _read_job(d))] if root.is_dir() else []
    return sorted(jobs, key=lambda j: j.started)


def latest_job(jobs_dir: str | os.PathLike) -> Optional[JobInfo]:
    jobs = list_jobs(jobs_dir)
    return jobs[-1] if jobs else None


def job_status(job: JobInfo) -> dict:
    """state: running | finished | stopped | failed, plus exit code and the last error line."""
    result_path = Path(job.dir) / "result.json"
    if process_alive(job.pid) and not result_path.exists():
        return {"state": "running", "returncode": None, "message": ""}
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"state": "failed", "returncode": None, "message": "the training process ended without a result (killed?)"}
    code = result.get("returncode")
    state = "finished" if code == 0 else "stopped" if code in (130, -signal.SIGTERM, 143) else "failed"
    return {"state": state, "returncode": code, "message": result.get("message", "")}


def running_job(jobs_dir: str | os.PathLike) -> Optional[JobInfo]:
    for job in list_jobs(jobs_dir):
        if job_status(job)["state"] == "running":
            return job
    return None


def start_job(args: list[str], jobs_dir: str | os.PathLike) -> JobInfo:
    """Start `python -m dld_core train ARGS` in its own session (it outlives the app)."""
    if "--out" not in args:
        raise JobError("training arguments need --out")
    busy = running_job(jobs_dir)
    if busy is not None:
        raise JobBusyError(f"a training is already running (job {busy.id}, pid {busy.pid}); stop it or wait")
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    job_dir = Path(jobs_dir) / job_id
    job_dir.mkdir(parents=True)
    out = args[args.index("--out") + 1]
    log = open(job_dir / "output.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "dld_core.jobs", "run", str(job_dir)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    job = JobInfo(id=job_id, args=list(args), out=str(out), pid=proc.pid, started=time.time(), dir=str(job_dir))
    atomic_write_json(job_dir / "job.json", asdict(job))
    return job


def stop_job(job: JobInfo, timeout: float = 30.0) -> dict:
    """SIGTERM: the trainer writes a resumable checkpoint, then exits."""
    if process_alive(job.pid):
        os.killpg(job.pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while process_alive(job.pid) and time.time() < deadline:
            time.sleep(0.1)
    return job_status(job)


def resume_job(job: JobInfo, jobs_dir: str | os.PathLike) -> JobInfo:
    args = [a for a in job.args if a != "--resume"] + ["--resume"]
    return start_job(args, jobs_dir)


def read_events(path: str | os.PathLike) -> list[dict]:
    """The JSONL event log, skipping a half-written last line."""
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


def tail(path: str | os.PathLike, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    return "\n".join([l for l in text.splitlines() if l.strip()][-lines:])


def _run(job_dir: Path) -> int:
    """The runner: the training itself, then result.json with the exit code."""
    from .cli import main
    job = _read_job(job_dir)
    code, message = 1, ""
    try:
        code = main(["train", "--quiet", *job.args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        message = "" if isinstance(exc.code, int) else str(exc.code)
    except BaseException as exc:       # recorded for the app, then re-raised into the log
        message = f"{exc.__class__.__name__}: {exc}"
        atomic_write_json(job_dir / "result.json", {"returncode": 1, "message": message, "ended": time.time()})
        raise
    atomic_write_json(job_dir / "result.json", {"returncode": code, "message": message, "ended": time.time()})
    return code


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        raise SystemExit("usage: python -m dld_core.jobs run JOB_DIR")
    sys.exit(_run(Path(sys.argv[2])))
