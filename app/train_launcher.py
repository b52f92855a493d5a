"""Build a synthetic corpus, then start the training job — in one detached process, so the sequence
survives reruns, reloads and closed tabs just like the training itself.

    python -m app.train_launcher JOBS_DIR CORPUS_DIR HOURS -- TRAIN_ARGS...

TODO(lead): this is glue only. If dld_core.jobs.start_job learns a "build the synthetic corpus first"
step, the Train page can call it directly and this module can go.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dld_core.checkpoint import atomic_write_json  # noqa: E402
from dld_core.jobs import process_alive  # noqa: E402

PREPARING = "preparing.json"
PREPARING_LOG = "preparing.log"


def corpus_ready(corpus: Path) -> bool:
    corpus = Path(corpus)
    return all((corpus / name).is_file() for name in ("corpus.json", "train.jsonl", "valid.jsonl"))


def preparing(jobs_dir: Path) -> Optional[dict]:
    """The corpus-building step: {"state": running|failed, "hours", "corpus", "message", ...} or None."""
    path = Path(jobs_dir) / PREPARING
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    pid = int(data.get("pid") or 0)
    starting = pid <= 0 and time.time() - float(data.get("started", 0)) < 60
    if data.get("state") == "running" and not starting and not (pid > 0 and process_alive(pid)):
        data["state"] = "failed"
        data.setdefault("message", "corpus building ended unexpectedly")
    return data


def clear_preparing(jobs_dir: Path) -> None:
    (Path(jobs_dir) / PREPARING).unlink(missing_ok=True)


def launch(jobs_dir: Path, corpus: Path, hours: float, train_args: list[str]) -> int:
    """Start the detached launcher; returns its pid."""
    jobs_dir = Path(jobs_dir)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    # Written before the process starts (the process rewrites it with its pid): no window for a double start.
    atomic_write_json(jobs_dir / PREPARING, {"state": "running", "pid": 0, "hours": hours, "corpus": str(corpus),
                                             "started": time.time(), "args": train_args})
    log = open(jobs_dir / PREPARING_LOG, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.train_launcher", str(jobs_dir), str(corpus), str(hours),
                             "--", *train_args], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    return proc.pid


def _main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 3:
        print("usage: python -m app.train_launcher JOBS_DIR CORPUS_DIR HOURS -- TRAIN_ARGS...", file=sys.stderr)
        return 2
    jobs_dir, corpus, hours = Path(argv[0]), Path(argv[1]), float(argv[2])
    train_args = argv[4:]
    status_path = jobs_dir / PREPARING
    status = {"state": "running", "pid": os.getpid(), "hours": hours, "corpus": str(corpus),
              "started": time.time(), "args": train_args}
    atomic_write_json(status_path, status)
    if not corpus_ready(corpus):
        code = subprocess.call([sys.executable, "-m", "dld_core", "synth", "--out", str(corpus),
                                "--hours", str(hours)], cwd=REPO_ROOT)
        if code != 0 or not corpus_ready(corpus):
            atomic_write_json(status_path, {**status, "state": "failed",
                                            "message": f"building the synthetic corpus failed (exit code {code}); see the log"})
            return 1
    from dld_core.jobs import JobBusyError, JobError, start_job
    try:
        start_job([*train_args, "--train", str(corpus / "train.jsonl"), "--valid", str(corpus / "valid.jsonl")],
                  jobs_dir)
    except (JobBusyError, JobError, OSError) as exc:
        atomic_write_json(status_path, {**status, "state": "failed", "message": str(exc).splitlines()[0]})
        return 1
    status_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
