"""Training under faults: kill -9 (mid-epoch and inside every checkpoint-commit window), a failing disk
write, and two trainings racing for one output folder.

The killed runs are real `python -m dld_core train` processes (run through runpy, with a small hook that
parks the process at the chosen instant and announces it); the test then SIGKILLs them from outside, so
no handler, finally block or atexit code runs. After each kill: every JSON / safetensors file in the
folder parses, the best model loads with a valid checksum, and `--resume` finishes with exactly the step
count (and the weights) of an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dld_core import cli, safe_io
from dld_core.checkpoint import load_checkpoint
from tests.helpers import REPO

pytestmark = pytest.mark.slow           # training runs in subprocesses; see pyproject.toml

TINY = ["--recipe", "ld", "--layers", "3", "--d-model", "32", "--heads", "2", "--ffn", "64", "--kernel", "7",
        "--batch-seconds", "4", "--warmup", "3", "--lr", "3e-3", "--threads", "1", "--quiet"]
EPOCHS = 2
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

RUNNER = textwrap.dedent("""
    # python RUNNER MODE ARG MARKER -- <dld_core argv>: `python -m dld_core ...` that parks at one instant
    import os, runpy, sys, time
    mode, arg, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    argv = sys.argv[sys.argv.index("--") + 1:]

    def park():
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        while not os.path.exists(marker + ".release"):
            time.sleep(0.02)

    if mode == "step":                      # before the forward pass of global step ARG (ARG steps done)
        import dld_core.masks as M
        original = M.training_gates
        def training_gates(keep_probs, seed, step, *rest):
            if step == arg:
                park()
            return original(keep_probs, seed, step, *rest)
        M.training_gates = training_gates
    elif mode.startswith("replace:"):       # around the ARG-th os.replace(src, dst) with dst named PATTERN
        _, when, pattern = mode.split(":", 2)
        real_replace, seen = os.replace, [0]
        def replace(src, dst, *a, **k):
            if os.path.basename(str(dst)) == pattern:
                seen[0] += 1
                if seen[0] == arg:
                    if when == "after":
                        real_replace(src, dst, *a, **k)
                    park()
                    if when == "after":
                        return None
            return real_replace(src, dst, *a, **k)
        os.replace = replace
    sys.argv = ["dld_core", *argv]
    runpy.run_module("dld_core", run_name="__main__")
""")


# ----------------------------------------------------------------------------------------- helpers
def train_argv(corpus: dict, out: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(corpus["train"]), "--valid", str(corpus["valid"]), "--out", str(out),
            "--epochs", str(EPOCHS), *TINY, *extra]


def cli_in_process(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    torch.set_num_threads(threads)
    return rc, out.getvalue(), err.getvalue()


def start_parked(tmp_path: Path, mode: str, arg: int, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    marker = tmp_path / f"parked-{abs(hash((mode, arg)))}"
    proc = subprocess.Popen([sys.executable, str(runner), mode, str(arg), str(marker), "--", *argv],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before parking at {mode}/{arg} (rc {proc.returncode}): {err[-1500:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached {mode}/{arg}")
        time.sleep(0.02)
    return proc, marker


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def assert_folder_sane(out: Path) -> dict:
    """Every file a reader may open parses; the best model loads and its checksum holds."""
    for path in out.rglob("*"):
        if not path.is_file() or path.name.endswith(".tmp") or path.name.endswith(safe_io.PENDING_SUFFIX):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
    ckpt = load_checkpoint(out)                       # checksum verified inside
    assert ckpt.info["weights_sha256"]
    return json.loads((out / "resume" / "state.json").read_text())


def resume_model_weights(out: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(out / "resume" / "state.safetensors").items() if k.startswith("model.")}


def assert_same_as_reference(out: Path, reference: Path) -> None:
    got, want = (json.loads((p / "metrics.json").read_text()) for p in (out, reference))
    assert got["finished"] and got["steps"] == want["steps"] and got["epochs"] == want["epochs"] == EPOCHS
    a, b = resume_model_weights(out), resume_model_weights(reference)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert_folder_sane(out)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(f"*{safe_io.PENDING_SUFFIX}"))


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory) -> Path:
    """An uninterrupted run: what every interrupted-and-resumed run must end up equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    rc, stdout, stderr = cli_in_process(train_argv(tiny_corpus, out))
    assert rc == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    steps_per_epoch = metrics["steps"] // EPOCHS
    assert metrics["finished"] and steps_per_epoch >= 4, metrics      # room to stop inside epoch 2
    return out


# ----------------------------------------------------------------------------------------- (a) kill -9
def test_kill9_mid_epoch_then_resume_via_cli(tmp_path, tiny_corpus, reference):
    steps_per_epoch = json.loads((reference / "metrics.json").read_text())["steps"] // EPOCHS
    out = tmp_path / "run"
    proc, _ = start_parked(tmp_path, "step", steps_per_epoch + 2, train_argv(tiny_corpus, out))
    state = json.loads((out / "resume" / "state.json").read_text())
    assert state["train_state"]["epoch"] == 1                        # epoch 1's checkpoint exists ...
    kill9(proc)                                                       # ... and 2 steps of epoch 2 ran
    state = assert_folder_sane(out)
    assert state["train_state"]["step"] == steps_per_epoch
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] != "done"
    resumed = subprocess.run([sys.executable, "-m", "dld_core", *train_argv(tiny_corpus, out, "--resume")],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["steps"] == json.loads((reference / "metrics.json").read_text())["steps"]
    assert_same_as_reference(out, reference)


@pytest.mark.parametrize("mode,arg,expect_epoch", [
    # epoch 1's model commit: config.json committed, weights still pending (no model.safetensors yet)
    ("replace:before:model.safetensors", 1, None),
    # epoch 2's resume state: new tensors pending, state.json still epoch 1's
    ("replace:after:.state.safetensors.pending", 2, 1),
    # epoch 2's resume state: state.json committed (epoch 2), tensors not yet renamed into place
    ("replace:before:state.safetensors", 2, 2),
], ids=["model-commit", "resume-tensors-pending", "resume-json-committed"])
def test_kill9_inside_commit_windows(tmp_path, tiny_corpus, reference, mode, arg, expect_epoch):
    out = tmp_path / "run"
    proc, _ = start_parked(tmp_path, mode, arg, train_argv(tiny_corpus, out))
    kill9(proc)
    ckpt = load_checkpoint(out)                           # loads (from the pending file if need be)
    assert ckpt.info["epoch"] == 1
    if expect_epoch is None:
        assert not (out / "model.safetensors").exists() and safe_io.pending_path(out / "model.safetensors").exists()
    else:
        meta = json.loads((out / "resume" / "state.json").read_text())
        assert meta["train_state"]["epoch"] == expect_epoch
    rc, stdout, err = cli_in_process(train_argv(tiny_corpus, out, *(["--resume"] if expect_epoch else [])))
    assert rc == 0, err
    assert_same_as_reference(out, reference)


# ----------------------------------------------------------------------------------------- (b) failing writes
@pytest.mark.parametrize("fail_on_call", [2, 3], ids=["epoch1-resume-state", "epoch2-first-write"])
def test_disk_full_keeps_last_good_checkpoint(tmp_path, tiny_corpus, reference, monkeypatch, fail_on_call):
    """safetensors' writer fails with ENOSPC half-way through a file: the CLI says so in one line and exits
    non-zero, the previous checkpoint still loads with a valid checksum, nothing half-written is left, and
    once the disk has room again --resume (or a restart) ends exactly like an uninterrupted run."""
    out = tmp_path / "run"
    real_save_file = safe_io.save_file
    calls = {"n": 0}

    def flaky_save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            with open(filename, "wb") as fh:
                fh.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")      # the first bytes of a file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safe_io, "save_file", flaky_save_file)
    rc, stdout, stderr = cli_in_process(train_argv(tiny_corpus, out))
    assert rc != 0 and stdout == ""
    assert len(stderr.splitlines()) == 1 and "No space left on device" in stderr and "Traceback" not in stderr
    monkeypatch.setattr(safe_io, "save_file", real_save_file)

    ckpt = load_checkpoint(out)
    assert ckpt.info["weights_sha256"] == safe_io.sha256_file(out / "model.safetensors") and ckpt.info["epoch"] == 1
    assert not list(out.rglob("*.tmp"))
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "error" and "No space left" in log[-1]["message"]
    resumable = (out / "resume" / "state.json").exists()
    assert resumable == (fail_on_call == 3)
    if resumable:
        assert_folder_sane(out)
    rc, stdout, stderr = cli_in_process(train_argv(tiny_corpus, out, *(["--resume"] if resumable else [])))
    assert rc == 0, stderr
    assert_same_as_reference(out, reference)
    if not resumable:       # restarted from scratch: the same first epoch, bit for bit
        assert load_checkpoint(out).info["epoch"] >= 1


def test_failed_write_of_metrics_is_one_line(tmp_path, tiny_corpus, monkeypatch):
    """Any OSError while writing (here: metrics.json at the end) is one line and a non-zero exit."""
    out = tmp_path / "run"
    real = safe_io.atomic_write_bytes

    def failing(path, data):
        if Path(path).name == "metrics.json":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, data)
    monkeypatch.setattr(safe_io, "atomic_write_bytes", failing)
    rc, stdout, stderr = cli_in_process(train_argv(tiny_corpus, out, "--epochs", "1"))
    assert rc == 2 and len(stderr.splitlines()) == 1 and "Read-only file system" in stderr
    load_checkpoint(out)


# ----------------------------------------------------------------------------------------- (c) one folder, two runs
def test_second_training_into_same_folder_is_refused_via_cli(tmp_path, tiny_corpus):
    out = tmp_path / "run"
    first, marker = start_parked(tmp_path, "step", 1, train_argv(tiny_corpus, out))
    try:
        second = subprocess.run([sys.executable, "-m", "dld_core", *train_argv(tiny_corpus, out)], cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.splitlines() == [f"error: another training is already writing to {out}"], second.stderr
        assert second.stdout == ""
        # the first run is untouched and still stoppable the polite way: SIGTERM -> resumable checkpoint, exit 130
        os.kill(first.pid, signal.SIGTERM)
        (Path(str(marker) + ".release")).write_text("")
        _, err = first.communicate(timeout=60)
        assert first.returncode == 130, err[-1500:]
        assert err.strip().splitlines()[-1].startswith("interrupted: a resumable checkpoint was written")
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    meta = json.loads((out / "resume" / "state.json").read_text())
    assert meta["train_state"]["step"] == 2
    # the lock died with its process: the folder is free again
    from dld_core.train import OutputLock
    OutputLock(out).release()


# ----------------------------------------------------------------------------------------- resume state files
def _resume_state(folder: Path):
    from dld_core.config import TrainConfig
    from dld_core.model import DynamicCTCModel
    from dld_core.train import TrainState, save_resume
    from tests.helpers import tiny_config
    model = DynamicCTCModel(tiny_config(n_layers=2))
    optimizer = torch.optim.AdamW(model.parameters())
    save_resume(folder, model, optimizer, TrainState(step=7, epoch=1), model.config, TrainConfig(), {"teacher": None})


def test_resume_state_checksum_and_old_format(tmp_path):
    from dld_core.safe_io import CheckpointError
    from dld_core.train import load_resume
    folder = tmp_path / "resume"
    _resume_state(folder)
    meta, tensors = load_resume(folder)
    assert meta["train_state"]["step"] == 7
    assert meta["tensors_sha256"] == safe_io.sha256_file(folder / "state.safetensors")
    data = bytearray((folder / "state.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (folder / "state.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_resume(folder)
    _resume_state(folder)                       # states written before checksums existed still load
    meta = json.loads((folder / "state.json").read_text())
    del meta["tensors_sha256"]
    (folder / "state.json").write_text(json.dumps(meta))
    assert load_resume(folder)[0]["train_state"]["epoch"] == 1
    (folder / "state.json").write_text('{"train_state": ')
    with pytest.raises(CheckpointError, match="not a valid resume state"):
        load_resume(folder)


def test_recovery_drops_temp_files_and_a_partial_log_line(tmp_path):
    from dld_core.train import recover_output_folder
    out = tmp_path / "run"
    _resume_state(out / "resume")
    (out / "resume" / ".state.safetensors.abc123.tmp").write_bytes(b"half")
    (out / ".model.safetensors.xyz.tmp").write_bytes(b"half")
    (out / "resume" / ".state.safetensors.pending").write_bytes(b"stale")
    (out / "keep.tmp").write_bytes(b"not ours")
    (out / "train_log.jsonl").write_text('{"event": "start"}\n{"event": "st')
    recover_output_folder(out)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["keep.tmp", "state.json", "state.safetensors",
                                                                     "train_log.jsonl"]
    assert (out / "train_log.jsonl").read_text() == '{"event": "start"}\n'
