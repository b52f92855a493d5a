"""Training recipes: teacher (static), ld (layer dropping), dld (layer dropping + distillation).

One readable loop. The output folder holds the best model by validation (config.json +
model.safetensors, fp16), metrics.json, train_log.jsonl (events the app reads), and resume/ with
full-precision weights, optimizer, scheduler and RNG state. Every file is written atomically.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm import tqdm

from .checkpoint import (CheckpointError, atomic_write_json, clean_interrupted_writes,
                         commit_tensors_and_json, finish_commit, load_checkpoint, pending_path,
                         read_regular_file, recover_checkpoint_folder, save_checkpoint, sha256_file)
from .config import ModelConfig, TrainConfig, from_dict, to_dict
from .data import SpeechDataset, bucket_batches
from .decode import greedy_decode
from .features import FeatureExtractor
from .losses import ctc_loss, distillation_kl
from .metrics import wer
from .model import DynamicCTCModel
from .tokenizer import CharTokenizer

RESUME_DIR = "resume"
RESUME_TENSORS = "state.safetensors"
RESUME_META = "state.json"
LOCK_FILE = ".train.lock"


class TrainingBusyError(RuntimeError):
    """Another training already writes into this output folder."""


class Interrupted(Exception):
    pass


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0                 # epochs completed
    batch_in_epoch: int = 0        # batches of the current epoch already done (mid-epoch resume)
    best_valid_wer: float = math.inf
    train_seconds: float = 0.0     # wall time spent training, summed over resumed runs
    history: list = field(default_factory=list)


def sample_gates(n_layers: int, keep_prob: float, seed: int, step: int) -> list[bool]:
    """One Bernoulli(keep_prob) gate per module, at least one kept. Seeded by step, so every DDP rank
    and every resumed run draws the same mask."""
    gen = torch.Generator().manual_seed(seed * 1000003 + step)
    gates = torch.rand(n_layers, generator=gen) < keep_prob
    if not gates.any():
        gates[torch.randint(n_layers, (1,), generator=gen)] = True
    return gates.tolist()


def spec_augment(feats: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Frequency and time masks, per utterance, on the features' own device. feats: [B, T, F]."""
    from torchaudio.functional import mask_along_axis_iid
    x = feats.transpose(1, 2).unsqueeze(1)                      # [B, 1, F, T]
    for _ in range(cfg.freq_masks):
        x = mask_along_axis_iid(x, cfg.freq_mask_width, 0.0, axis=2)
    for _ in range(cfg.time_masks):
        x = mask_along_axis_iid(x, min(cfg.time_mask_width, max(1, x.shape[-1] // 5)), 0.0, axis=3)
    return x.squeeze(1).transpose(1, 2)


@torch.no_grad()
def teacher_posteriors(teacher, cache: dict, key: tuple, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's CTC log-posteriors on the clean (un-augmented) batch. Batches hold the same
    utterances every epoch (only their order changes), so each is computed once and kept in fp16:
    after the first epoch distillation costs no teacher forward at all."""
    if key not in cache:
        cache[key] = teacher(feats, lengths).log_probs.half().cpu()
    return cache[key].to(feats.device).float()


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


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
    log_path = out_dir / "train_log.jsonl"
    if log_path.is_file() and not log_path.is_symlink():
        data = log_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(log_path, "r+b") as fh:        # drop the partial last line a kill left
                fh.truncate(data.rfind(b"\n") + 1)


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


# --------------------------------------------------------------------------- validation

@torch.inference_mode()
def validate(model, extractor, dataset: SpeechDataset, tokenizer, device, masks: list[Optional[list[bool]]],
             batch_seconds: float = 200.0) -> list[float]:
    """Greedy WER on the dataset for each mask (None = all modules)."""
    model.eval()
    hyps: list[list[str]] = [[] for _ in masks]
    refs: list[str] = []
    for indices in bucket_batches(dataset.durations, batch_seconds, seed=0, epoch=0):
        batch = dataset.collate(indices).to(device)
        feats, lengths = extractor(batch.wavs, batch.wav_lengths)
        refs.extend(batch.texts)
        for m, mask in enumerate(masks):
            out = model(feats, lengths, active=mask)
            hyps[m].extend(greedy_decode(out.log_probs, out.lengths, tokenizer))
    model.train()
    return [wer(refs, h) for h in hyps]


# --------------------------------------------------------------------------- the loop

def train(train_manifest: str, valid_manifest: str, out: str, *, train_cfg: TrainConfig,
          model_cfg: Optional[ModelConfig] = None, teacher: Optional[str] = None, resume: bool = False,
          device: str = "cpu", stop_after_epochs: Optional[int] = None, progress: bool = True,
          log_every: int = 5) -> dict:
    """Train one recipe. Returns the metrics dict (also written to OUT/metrics.json)."""
    out_dir = Path(out)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    lock = OutputLock(out_dir) if rank == 0 else None
    try:
        if rank == 0:
            recover_output_folder(out_dir)
        return _train(train_manifest, valid_manifest, out_dir, train_cfg, model_cfg, teacher, resume,
                      device, stop_after_epochs, progress and rank == 0, log_every, rank, world)
    finally:
        if lock is not None:
            lock.release()


def _train(train_manifest, valid_manifest, out_dir: Path, train_cfg: TrainConfig, model_cfg, teacher_path,
           resume, device, stop_after_epochs, progress, log_every, rank, world):
    resume_dir = out_dir / RESUME_DIR
    meta, tensors = (load_resume(resume_dir) if resume else (None, None))
    if meta is not None:
        model_cfg = from_dict(ModelConfig, meta["model"])
        saved_cfg = from_dict(TrainConfig, meta["train"])
        saved_cfg.epochs = train_cfg.epochs if train_cfg.epochs else saved_cfg.epochs
        train_cfg = saved_cfg
        teacher_path = teacher_path or meta.get("teacher")
    model_cfg = model_cfg or ModelConfig()
    train_cfg.validate()
    model_cfg.validate()
    random.seed(train_cfg.seed)
    np.random.seed(train_cfg.seed)
    torch.manual_seed(train_cfg.seed + rank)

    tokenizer = CharTokenizer(model_cfg.vocab)
    teacher = None
    if train_cfg.recipe == "dld":
        if not teacher_path:
            raise CheckpointError("the dld recipe needs --teacher CKPT")
        teacher = load_checkpoint(teacher_path, device=device).model
        if teacher.config.vocab != model_cfg.vocab:
            raise CheckpointError("the teacher's vocabulary differs from the student's")
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()

    model = DynamicCTCModel(model_cfg).to(device)
    if meta is None and train_cfg.init_from_teacher:
        if teacher_path is None:
            raise CheckpointError("--init-from-teacher needs --teacher CKPT")
        source = teacher if teacher is not None else load_checkpoint(teacher_path).model
        if source.config != model_cfg:
            raise CheckpointError("--init-from-teacher needs the same architecture as the teacher")
        model.load_state_dict(source.state_dict())
    extractor = FeatureExtractor(model_cfg.family, model_cfg.n_mels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    state = TrainState()
    if meta is not None:
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(optimizer, meta, tensors)
        state = TrainState(**meta["train_state"])
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=train_cfg.recipe != "teacher")

    train_set = SpeechDataset(train_manifest, tokenizer, progress=progress)
    valid_set = SpeechDataset(valid_manifest, tokenizer, progress=progress) if rank == 0 else None
    steps_per_epoch = len(bucket_batches(train_set.durations, train_cfg.batch_seconds, train_cfg.seed, 0, rank, world))
    total_steps = steps_per_epoch * train_cfg.epochs
    if train_cfg.max_steps:
        total_steps = min(total_steps, train_cfg.max_steps)
    if meta is not None:
        restore_rng(meta, tensors)

    teacher_cache: dict[tuple, torch.Tensor] = {}
    n = model_cfg.n_layers
    valid_masks = [None] if train_cfg.recipe == "teacher" else [None, [i % 2 == 0 for i in range(n)]]
    log_path = out_dir / "train_log.jsonl"
    extra = {"teacher": str(teacher_path) if teacher_path else None,
             "train_manifest": str(train_manifest), "valid_manifest": str(valid_manifest)}

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if rank == 0 or world == 1 else {}

    def log_event(event: dict) -> None:
        if rank == 0:
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"time": time.time(), **event}) + "\n")

    if rank == 0 and meta is None:
        log_path.unlink(missing_ok=True)
    log_event({"event": "start", "recipe": train_cfg.recipe, "step": state.step, "epoch": state.epoch,
               "total_steps": total_steps, "train_hours": round(train_set.hours, 4), "world_size": world,
               "params": sum(p.numel() for p in model.parameters())})
    ddp_model.train()
    bar = tqdm(total=total_steps, initial=state.step, disable=not progress, desc=train_cfg.recipe, unit="step")
    run_start = time.time()
    epochs_this_run = 0
    try:
        while state.epoch < train_cfg.epochs and state.step < total_steps:
            batches = bucket_batches(train_set.durations, train_cfg.batch_seconds, train_cfg.seed, state.epoch, rank, world)
            for b_idx in range(state.batch_in_epoch, len(batches)):
                if state.step >= total_steps:
                    break
                t0 = time.time()
                batch = train_set.collate(batches[b_idx]).to(device)
                active = None if train_cfg.recipe == "teacher" else sample_gates(n, train_cfg.keep_prob, train_cfg.seed, state.step)
                lr = lr_at(state.step, total_steps, train_cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                feats, lengths = extractor(batch.wavs, batch.wav_lengths)
                clean_feats = feats
                if train_cfg.spec_augment and model_cfg.family == "conformer":
                    feats = spec_augment(feats, train_cfg)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                    outp = ddp_model(feats, lengths, active=active)
                    loss_ctc = ctc_loss(outp.log_probs, outp.lengths, batch.targets, batch.target_lengths)
                    loss_kl = torch.zeros((), device=feats.device)
                    if teacher is not None:
                        teacher_log_probs = teacher_posteriors(teacher, teacher_cache, tuple(batches[b_idx]), clean_feats, lengths)
                        loss_kl = distillation_kl(teacher_log_probs, outp.log_probs, outp.lengths, train_cfg.kd_tau)
                    loss = loss_ctc + train_cfg.kd_lambda * loss_kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                optimizer.step()
                state.step += 1
                state.batch_in_epoch = b_idx + 1
                dt = time.time() - t0
                state.train_seconds += dt
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", kl=f"{loss_kl.item():.3f}")
                if state.step % log_every == 0 or state.step == 1:
                    audio_s = float(batch.wav_lengths.sum()) / 16000 * world
                    eta = (total_steps - state.step) * (time.time() - run_start) / max(1, state.step - (meta["train_state"]["step"] if meta else 0))
                    log_event({"event": "step", "step": state.step, "epoch": state.epoch, "loss": loss.item(),
                               "ctc": loss_ctc.item(), "kl": loss_kl.item(), "lr": lr,
                               "audio_sec_per_sec": audio_s / max(dt, 1e-9), "eta_s": eta,
                               "total_steps": total_steps})
                if stop["signal"] is not None:
                    raise Interrupted()
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                epochs_this_run += 1
                if world > 1:      # BatchNorm statistics are per rank: take rank 0's, so all ranks agree
                    for buf in model.buffers():
                        dist.broadcast(buf, 0)
                end_of_epoch(rank, model, extractor, valid_set, tokenizer, device, valid_masks, state, out_dir,
                             optimizer, model_cfg, train_cfg, extra, log_event)
                if stop_after_epochs is not None and epochs_this_run >= stop_after_epochs:
                    break
                continue
            break      # max_steps reached mid-epoch
    except Interrupted:
        if rank == 0:
            save_resume(out_dir / RESUME_DIR, model, optimizer, state, model_cfg, train_cfg, extra)
            log_event({"event": "interrupted", "step": state.step, "epoch": state.epoch,
                       "signal": stop["signal"]})
        bar.close()
        raise
    except Exception as exc:      # e.g. a failing checkpoint write (disk full): say so in the log the app reads
        bar.close()
        try:
            log_event({"event": "error", "step": state.step, "epoch": state.epoch,
                       "message": (str(exc).splitlines() or [type(exc).__name__])[0][:300]})
        except OSError:
            pass
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    bar.close()
    if state.batch_in_epoch and rank == 0:       # stopped by max_steps mid-epoch: still leave a model
        end_of_epoch(rank, model, extractor, valid_set, tokenizer, device, valid_masks, state, out_dir,
                     optimizer, model_cfg, train_cfg, extra, log_event)
    metrics = {"recipe": train_cfg.recipe, "steps": state.step, "epochs": state.epoch,
               "best_valid_wer": state.best_valid_wer, "train_seconds": round(state.train_seconds, 2),
               "train_hours_of_audio": round(train_set.hours, 4), "world_size": world,
               "history": state.history, "finished": state.epoch >= train_cfg.epochs or state.step >= total_steps}
    if rank == 0:
        atomic_write_json(out_dir / "metrics.json", metrics)
        log_event({"event": "done" if metrics["finished"] else "paused", "step": state.step,
                   "epoch": state.epoch, "best_valid_wer": state.best_valid_wer})
    return metrics


def end_of_epoch(rank, model, extractor, valid_set, tokenizer, device, valid_masks, state: TrainState, out_dir: Path,
                 optimizer, model_cfg, train_cfg, extra, log_event) -> None:
    """Validate, keep the best model, and write a resumable checkpoint (rank 0 only)."""
    if rank != 0:
        return
    wers = validate(model, extractor, valid_set, tokenizer, device, valid_masks)
    score = float(np.mean(wers))
    improved = score < state.best_valid_wer or not (out_dir / "model.safetensors").exists()
    state.history.append({"epoch": state.epoch, "step": state.step, "valid_wer": wers[0],
                          "valid_wer_masks": wers, "train_seconds": round(state.train_seconds, 2)})
    if improved:
        state.best_valid_wer = score
        save_checkpoint(out_dir, model, recipe=train_cfg.recipe, metadata={
            "train": to_dict(train_cfg), "teacher": extra.get("teacher"), "step": state.step,
            "epoch": state.epoch, "valid_wer": wers[0], "valid_wer_masks": wers,
            "train_manifest": extra.get("train_manifest"), "valid_manifest": extra.get("valid_manifest")})
    save_resume(out_dir / RESUME_DIR, model, optimizer, state, model_cfg, train_cfg, extra)
    log_event({"event": "epoch", "step": state.step, "epoch": state.epoch, "valid_wer": wers[0],
               "valid_wer_masks": wers, "best": improved, "train_seconds": round(state.train_seconds, 2)})
