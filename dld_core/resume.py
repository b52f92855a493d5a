"""Resumable training state: the half of the checkpoint layer that the trainer uses.

OUT/resume/ holds full-precision weights, optimizer state and RNG state (state.safetensors) and the
step counters and configs (state.json), committed as a pair so a kill at any instant leaves the old pair
or the new one. An exclusive lock keeps a second training out of the same folder; at start, what a killed
run left half-done is cleaned up.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .checkpoint import LOG_FILE, recover_checkpoint_folder
from .config import ModelConfig, TrainConfig, to_dict
from .safe_io import (CheckpointError, clean_interrupted_writes, commit_tensors_and_json, finish_commit, pending_path,
                      read_regular_file, sha256_file)

RESUME_DIR = "resume"
RESUME_TENSORS = "state.safetensors"
RESUME_META = "state.json"
LOCK_FILE = ".train.lock"


class TrainingBusyError(RuntimeError):
    """Another training already writes into this output folder."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0                 # epochs completed
    batch_in_epoch: int = 0        # batches of the current epoch already done (mid-epoch resume)
    best_valid_wer: float = math.inf
    train_seconds: float = 0.0     # wall time spent training, summed over resumed runs
    history: list = field(default_factory=list)


class OutputLock:
    """An exclusive flock on OUT/.train.lock: a second training into the same folder is refused."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.fh = open(folder / LOCK_FILE, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise TrainingBusyError(f"another training is already writing to {folder}") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


# --------------------------------------------------------------------------- resume state

def save_resume(folder: Path, model, optimizer, state: TrainState, model_cfg: ModelConfig,
                train_cfg: TrainConfig, extra: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    meta = {
        "train_state": to_dict(state), "model": to_dict(model_cfg), "train": to_dict(train_cfg),
        "param_groups": opt["param_groups"],
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        **extra,
    }
    # state.json records the tensors' sha256 and the pair is committed so that a kill at any instant
    # leaves the previous pair or the new one, never new tensors with old metadata
    commit_tensors_and_json(folder / RESUME_TENSORS, tensors, folder / RESUME_META,
                            lambda digest: {**meta, "tensors_sha256": digest})


def load_resume(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    meta_path, tensor_path = folder / RESUME_META, folder / RESUME_TENSORS
    if not meta_path.is_file() or not (tensor_path.is_file() or pending_path(tensor_path).is_file()):
        raise CheckpointError(f"nothing to resume in {folder.parent} (no complete {RESUME_DIR}/ state)")
    try:
        meta = json.loads(read_regular_file(meta_path, 64 << 20, f"{RESUME_DIR}/{RESUME_META}").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or not {"train_state", "model", "train", "param_groups"} <= set(meta):
        raise CheckpointError(f"{RESUME_DIR}/{RESUME_META} in {folder.parent} is not a valid resume state")
    expected = meta.get("tensors_sha256")     # absent in states written before checksums were recorded
    if expected is not None:
        finish_commit(tensor_path, expected)   # a kill between the two renames of a commit: complete it
        if not tensor_path.is_file() or sha256_file(tensor_path) != expected:
            raise CheckpointError(f"{RESUME_DIR}/{RESUME_TENSORS} in {folder.parent} does not match the checksum "
                                  f"in {RESUME_META} (corrupt or altered)")
    try:
        tensors = load_file(tensor_path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{RESUME_DIR}/{RESUME_TENSORS} in {folder.parent} is not a valid safetensors file "
                              f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    return meta, tensors


def recover_output_folder(out_dir: Path) -> None:
    """At training start, holding the lock: clear what a killed run may have left half-done (temp files,
    a commit interrupted between its two renames, a partial last line in train_log.jsonl). Never touches
    a complete file."""
    recover_checkpoint_folder(out_dir)
    resume_dir = out_dir / RESUME_DIR
    if resume_dir.is_dir():
        clean_interrupted_writes(resume_dir, (RESUME_TENSORS, RESUME_META))
        try:
            meta = json.loads((resume_dir / RESUME_META).read_text())
            expected = meta.get("tensors_sha256") if isinstance(meta, dict) else None
        except (OSError, UnicodeDecodeError, ValueError):
            expected = None
        finish_commit(resume_dir / RESUME_TENSORS, expected)
    log_path = out_dir / LOG_FILE
    if log_path.is_file() and not log_path.is_symlink():
        data = log_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(log_path, "r+b") as fh:        # drop the partial last line a kill left
                fh.truncate(data.rfind(b"\n") + 1)


def restore(meta: dict, tensors: dict[str, torch.Tensor], model, optimizer) -> TrainState:
    """Put a loaded resume state back: model weights, optimizer, RNGs; returns the step counters."""
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    restore_optimizer(optimizer, meta, tensors)
    restore_rng(meta, tensors)
    return TrainState(**meta["train_state"])


def restore_optimizer(optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def restore_rng(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
