"""Background evaluation: `python -m dld_core evaluate ... --json OUT` in its own process (it outlives
reruns and closed tabs); a small status file next to OUT lets any session see it running or failed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app import state
from dld_core.jobs import process_alive


def _status_path(checkpoint: Path) -> Path:
    out = state.background_eval_path(checkpoint)
    return out.with_name(out.name + ".status")


def start_eval(checkpoint: Path, manifest: Path, masks: int = 4) -> int:
    out = state.background_eval_path(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    if eval_status(checkpoint)["state"] == "running":
        return -1
    log_path = out.with_name(out.name + ".log")
    log = open(log_path, "wb")
    # Low priority and one thread: the app's interactive requests come first.
    nice = [shutil.which("nice"), "-n", "10"] if shutil.which("nice") else []
    proc = subprocess.Popen([*nice, sys.executable, "-m", "dld_core", "evaluate", "--checkpoint", str(checkpoint),
                             "--manifest", str(manifest), "--masks", str(masks), "--json", str(out)],
                            cwd=state.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    log.close()
    _status_path(checkpoint).write_text(json.dumps({"pid": proc.pid, "started": time.time(), "log": str(log_path)}))
    return proc.pid


def eval_status(checkpoint: Path) -> dict:
    """{"state": none|running|done|failed, "elapsed", "message"}."""
    out = state.background_eval_path(checkpoint)
    try:
        info = json.loads(_status_path(checkpoint).read_text())
    except (OSError, json.JSONDecodeError):
        return {"state": "done" if out.is_file() else "none", "elapsed": 0.0, "message": ""}
    elapsed = time.time() - float(info.get("started", time.time()))
    if process_alive(int(info.get("pid", 0) or 0)):
        return {"state": "running", "elapsed": elapsed, "message": ""}
    if out.is_file() and out.stat().st_mtime >= float(info.get("started", 0)) - 1:
        _status_path(checkpoint).unlink(missing_ok=True)
        return {"state": "done", "elapsed": elapsed, "message": ""}
    message = "the evaluation process ended without results"
    try:
        lines = [ln for ln in Path(info["log"]).read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        if errors or lines:
            message = (errors or lines)[-1][:200]
    except (OSError, KeyError):
        pass
    return {"state": "failed", "elapsed": elapsed, "message": message}
