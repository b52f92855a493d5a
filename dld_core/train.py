"""Training recipes: teacher (static), ld (layer dropping), dld (layer dropping + distillation).

One readable loop (`Trainer.run`): per step, draw the gates, augment, forward the student with its
mask, CTC (+ KL to the frozen teacher's posteriors for dld), backward, step. At the end of every epoch:
validate, keep the best model (config.json + model.safetensors, fp16), write the resume state.
OUT holds the best model, metrics.json, train_log.jsonl (the events the app reads) and resume/ (see
dld_core/resume.py). Every file is written atomically.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from . import masks as M
from .audio import SAMPLE_RATE
from .checkpoint import LOG_FILE, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig, from_dict, same_weights, to_dict
from .data import SpeechDataset, bucket_batches
from .families import get_family
from .features import feature_extractor
from .inference import recognize
from .losses import ctc_loss, distillation_kl
from .metrics import wer
from .model import DynamicCTCModel
from .resume import (RESUME_DIR, OutputLock, TrainingBusyError, TrainState, load_resume,  # noqa: F401
                     recover_output_folder, restore, save_resume)
from .safe_io import CheckpointError, atomic_write_json
from .tokenizer import CharTokenizer


class Interrupted(Exception):
    """SIGINT/SIGTERM during training: a resumable checkpoint was written."""


def spec_augment(feats: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Frequency and time masks, per utterance, on the features' own device. feats: [B, T, F]."""
    from torchaudio.functional import mask_along_axis_iid
    x = feats.transpose(1, 2).unsqueeze(1)                      # [B, 1, F, T]
    for _ in range(cfg.freq_masks):
        x = mask_along_axis_iid(x, cfg.freq_mask_width, 0.0, axis=2)
    for _ in range(cfg.time_masks):
        x = mask_along_axis_iid(x, min(cfg.time_mask_width, max(1, x.shape[-1] // 5)), 0.0, axis=3)
    return x.squeeze(1).transpose(1, 2)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def validation_masks(recipe: str, n_modules: int) -> list:
    """Teacher: full depth. Students: full depth and every other module (masks.every_other)."""
    return [None] if recipe == "teacher" else [None, M.every_other(n_modules)]


def model_config(teacher_cfg: Optional[ModelConfig], overrides: dict, pretrained: str = "") -> ModelConfig:
    """The model to train, with the options given explicitly on top of: the teacher's architecture (a
    student never repeats architecture flags; a student of another family starts from that family's
    defaults and keeps the teacher's vocabulary), else the pretrained encoder's dims, else the defaults."""
    if teacher_cfg is None:
        if pretrained:
            family = get_family(overrides.get("family", ModelConfig.family))
            if not hasattr(family, "config_from_pretrained"):
                raise ValueError(f"--pretrained is not supported for the {overrides.get('family', 'conformer')} family")
            return family.config_from_pretrained(pretrained, **{k: v for k, v in overrides.items() if k != "family"})
        return ModelConfig(**overrides)
    if overrides.get("family", teacher_cfg.family) == teacher_cfg.family:
        return dataclasses.replace(teacher_cfg, **overrides)
    return ModelConfig(**{"vocab": list(teacher_cfg.vocab), **overrides})


@torch.inference_mode()
def validate(model, dataset: SpeechDataset, device, masks: list, batch_seconds: float = 200.0) -> list[float]:
    """Greedy WER on the dataset for each mask (None = all modules)."""
    model.eval()
    extractor = feature_extractor(model.config).to(device)
    hyps: list[list[str]] = [[] for _ in masks]
    refs: list[str] = []
    for indices in bucket_batches(dataset.durations, batch_seconds, seed=0, epoch=0):
        batch = dataset.collate(indices).to(device)
        features = extractor(batch.wavs, batch.wav_lengths)
        refs.extend(batch.texts)
        for m, mask in enumerate(masks):
            hyps[m].extend(recognize(model, features=features, active=mask).texts)
    model.train()
    return [wer(refs, h) for h in hyps]


class Teacher:
    """The frozen teacher of the dld recipe: CTC log-posteriors on the clean (un-augmented) batch, through
    its own front end. Batches hold the same utterances every epoch (only their order changes), so each
    is computed once and kept in fp16: after the first epoch distillation costs no teacher forward."""

    def __init__(self, path: str, device):
        self.model = load_checkpoint(path, device=device).model.eval().requires_grad_(False)
        self.extractor = feature_extractor(self.model.config).to(device)
        self.cache: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def log_probs(self, key: tuple, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> torch.Tensor:
        if key not in self.cache:
            self.cache[key] = self.model(*self.extractor(wavs, wav_lengths)).log_probs.half().cpu()
        return self.cache[key].to(wavs.device).float()


class Trainer:
    def __init__(self, train_manifest: str, valid_manifest: str, out_dir: Path, train_cfg: TrainConfig,
                 model_overrides: dict, teacher: Optional[str], resume: bool, device: str,
                 progress: bool, log_every: int):
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.out_dir, self.device, self.log_every = out_dir, device, log_every
        self.progress = progress and self.rank == 0

        # configs: a resumed run continues with its own (only the number of epochs may change)
        meta, tensors = load_resume(out_dir / RESUME_DIR) if resume else (None, None)
        if meta is not None:
            epochs = train_cfg.epochs
            train_cfg = from_dict(TrainConfig, meta["train"])
            train_cfg.epochs = epochs or train_cfg.epochs
            teacher = teacher or meta.get("teacher")
        train_cfg.validate()
        self.cfg = train_cfg
        random.seed(train_cfg.seed)
        np.random.seed(train_cfg.seed)
        torch.manual_seed(train_cfg.seed + self.rank)

        self.teacher = None
        teacher_cfg = None
        if train_cfg.recipe == "dld" or (train_cfg.init_from_teacher and meta is None):
            if not teacher:
                raise CheckpointError(f"the {train_cfg.recipe} recipe{' with --init-from-teacher' if train_cfg.recipe != 'dld' else ''} "
                                      "needs --teacher CKPT")
            self.teacher = Teacher(teacher, device)
            teacher_cfg = self.teacher.model.config
        elif teacher and train_cfg.recipe != "teacher":
            teacher_cfg = load_checkpoint(teacher).config
        model_cfg = (from_dict(ModelConfig, meta["model"]) if meta is not None
                     else model_config(teacher_cfg, model_overrides, train_cfg.pretrained))
        model_cfg.validate()
        if teacher_cfg is not None and teacher_cfg.vocab != model_cfg.vocab:
            raise CheckpointError("the teacher's vocabulary differs from the student's")
        self.model_cfg = model_cfg
        self.model = DynamicCTCModel(model_cfg).to(device)
        pretrained_source = meta.get("pretrained") if meta is not None else None
        if meta is None and train_cfg.init_from_teacher:
            if not same_weights(model_cfg, teacher_cfg):
                raise CheckpointError("--init-from-teacher needs the same architecture as the teacher")
            self.model.load_state_dict(self.teacher.model.state_dict())
        elif meta is None and train_cfg.pretrained:
            pretrained_source = get_family(model_cfg.family).load_pretrained(self.model, train_cfg.pretrained)
        if train_cfg.recipe != "dld":
            self.teacher = None                  # only needed for its weights
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        self.state = restore(meta, tensors, self.model, self.optimizer) if meta is not None else TrainState()
        self.resumed_at = self.state.step
        self.ddp_model = self.model
        if self.world > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, find_unused_parameters=train_cfg.recipe != "teacher")

        tokenizer = CharTokenizer(model_cfg.vocab)
        self.train_set = SpeechDataset(train_manifest, tokenizer, progress=self.progress)
        self.valid_set = SpeechDataset(valid_manifest, tokenizer, progress=self.progress) if self.rank == 0 else None
        self.extractor = feature_extractor(model_cfg).to(device)
        self.augment = train_cfg.spec_augment and get_family(model_cfg.family).INPUT == "log-mel"
        self.protected = M.parse_modules(train_cfg.protected, model_cfg.module_names) if train_cfg.protected else []
        self.keep_probs = M.keep_probabilities(model_cfg.module_names, train_cfg.keep_prob, train_cfg.keep_probs)
        self.valid_masks = validation_masks(train_cfg.recipe, model_cfg.num_modules)
        steps_per_epoch = len(self.batches(0))
        self.total_steps = steps_per_epoch * train_cfg.epochs
        if train_cfg.max_steps:
            self.total_steps = min(self.total_steps, train_cfg.max_steps)
        self.info = {"teacher": str(teacher) if teacher else None, "pretrained": pretrained_source,
                     "train_manifest": str(train_manifest), "valid_manifest": str(valid_manifest)}
        self.log_path = out_dir / LOG_FILE
        if self.rank == 0 and meta is None:
            self.log_path.unlink(missing_ok=True)

    def param_groups(self) -> list[dict]:
        """The CTC head at the learning rate; the encoder at encoder_lr when set (fine-tuning a
        pretrained encoder gently)."""
        head = list(self.model.head.parameters())
        encoder = list(self.model.encoder.parameters())
        scale = self.cfg.encoder_lr / self.cfg.lr if self.cfg.encoder_lr else 1.0
        return [{"params": head, "lr_scale": 1.0}, {"params": encoder, "lr_scale": scale}]

    def batches(self, epoch: int) -> list[list[int]]:
        return bucket_batches(self.train_set.durations, self.cfg.batch_seconds, self.cfg.seed, epoch,
                              self.rank, self.world)

    def log(self, event: dict) -> None:
        if self.rank == 0:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps({"time": time.time(), **event}) + "\n")

    # ----------------------------------------------------------------------------------- one step
    def step(self, indices: list[int], key: tuple) -> dict:
        cfg, state = self.cfg, self.state
        batch = self.train_set.collate(indices).to(self.device)
        active = None if cfg.recipe == "teacher" else M.training_gates(
            M.scheduled_keep_probabilities(self.keep_probs, cfg.keep_prob_start, state.step / self.total_steps),
            cfg.seed, state.step, self.protected)
        lr = lr_at(state.step, self.total_steps, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        feats, lengths = self.extractor(batch.wavs, batch.wav_lengths)
        if self.augment:
            feats = spec_augment(feats, cfg)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(self.device).startswith("cuda")):
            out = self.ddp_model(feats, lengths, active=active)
            loss_ctc = ctc_loss(out.log_probs, out.lengths, batch.targets, batch.target_lengths)
            loss_kl = torch.zeros((), device=feats.device)
            if self.teacher is not None:
                teacher_lp = self.teacher.log_probs(key, batch.wavs, batch.wav_lengths)
                loss_kl = distillation_kl(teacher_lp, out.log_probs, out.lengths, cfg.kd_tau)
            loss = loss_ctc + cfg.kd_lambda * loss_kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item(), "ctc": loss_ctc.item(), "kl": loss_kl.item(), "lr": lr,
                "audio_s": float(batch.wav_lengths.sum()) / SAMPLE_RATE * self.world}

    # ----------------------------------------------------------------------------- the loop
    def run(self, stop_after_epochs: Optional[int] = None) -> dict:
        cfg, state = self.cfg, self.state
        stop = {"signal": None}
        handlers = {}
        if self.rank == 0 or self.world == 1:
            handlers = {s: signal.signal(s, lambda signum, _: stop.update(signal=signum))
                        for s in (signal.SIGINT, signal.SIGTERM)}
        self.log({"event": "start", "recipe": cfg.recipe, "step": state.step, "epoch": state.epoch,
                  "total_steps": self.total_steps, "train_hours": round(self.train_set.hours, 4),
                  "world_size": self.world, "params": sum(p.numel() for p in self.model.parameters())})
        self.ddp_model.train()
        bar = tqdm(total=self.total_steps, initial=state.step, disable=not self.progress, desc=cfg.recipe, unit="step")
        run_start, epochs_this_run = time.time(), 0
        try:
            while state.epoch < cfg.epochs and state.step < self.total_steps:
                batches = self.batches(state.epoch)
                for b in range(state.batch_in_epoch, len(batches)):
                    if state.step >= self.total_steps:
                        break
                    t0 = time.time()
                    stats = self.step(batches[b], tuple(batches[b]))
                    state.step, state.batch_in_epoch = state.step + 1, b + 1
                    dt = time.time() - t0
                    state.train_seconds += dt
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", kl=f"{stats['kl']:.3f}")
                    if state.step % self.log_every == 0 or state.step == 1:
                        done = max(1, state.step - self.resumed_at)
                        self.log({"event": "step", "step": state.step, "epoch": state.epoch,
                                  **{k: stats[k] for k in ("loss", "ctc", "kl", "lr")},
                                  "audio_sec_per_sec": stats["audio_s"] / max(dt, 1e-9),
                                  "eta_s": (self.total_steps - state.step) * (time.time() - run_start) / done,
                                  "total_steps": self.total_steps})
                    if stop["signal"] is not None:
                        raise Interrupted()
                else:                                # the epoch is complete
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                    epochs_this_run += 1
                    if self.world > 1:               # BatchNorm statistics are per rank: take rank 0's
                        for buf in self.model.buffers():
                            dist.broadcast(buf, 0)
                    self.end_of_epoch()
                    if stop_after_epochs is not None and epochs_this_run >= stop_after_epochs:
                        break
                    continue
                break                                # max_steps reached mid-epoch
        except Interrupted:
            if self.rank == 0:
                self.save_resume()
                self.log({"event": "interrupted", "step": state.step, "epoch": state.epoch, "signal": stop["signal"]})
            raise
        except Exception as exc:      # e.g. a failing checkpoint write (disk full): say so in the log the app reads
            try:
                self.log({"event": "error", "step": state.step, "epoch": state.epoch,
                          "message": (str(exc).splitlines() or [type(exc).__name__])[0][:300]})
            except OSError:
                pass
            raise
        finally:
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)
        if state.batch_in_epoch:                     # stopped by max_steps mid-epoch: still leave a model
            self.end_of_epoch()
        return self.finish()

    def end_of_epoch(self) -> None:
        """Validate, keep the best model, and write a resumable checkpoint (rank 0 only)."""
        if self.rank != 0:
            return
        state = self.state
        wers = validate(self.model, self.valid_set, self.device, self.valid_masks)
        score = float(np.mean(wers))
        improved = score < state.best_valid_wer or not (self.out_dir / "model.safetensors").exists()
        state.history.append({"epoch": state.epoch, "step": state.step, "valid_wer": wers[0],
                              "valid_wer_masks": wers, "train_seconds": round(state.train_seconds, 2)})
        if improved:
            state.best_valid_wer = score
            save_checkpoint(self.out_dir, self.model, recipe=self.cfg.recipe, metadata={
                "train": to_dict(self.cfg), "teacher": self.info["teacher"], "pretrained": self.info["pretrained"],
                "step": state.step,
                "epoch": state.epoch, "valid_wer": wers[0], "valid_wer_masks": wers,
                "train_manifest": self.info["train_manifest"], "valid_manifest": self.info["valid_manifest"]})
        self.save_resume()
        self.log({"event": "epoch", "step": state.step, "epoch": state.epoch, "valid_wer": wers[0],
                  "valid_wer_masks": wers, "best": improved, "train_seconds": round(state.train_seconds, 2)})

    def save_resume(self) -> None:
        save_resume(self.out_dir / RESUME_DIR, self.model, self.optimizer, self.state, self.model_cfg, self.cfg, self.info)

    def finish(self) -> dict:
        state = self.state
        metrics = {"recipe": self.cfg.recipe, "steps": state.step, "epochs": state.epoch,
                   "best_valid_wer": state.best_valid_wer, "train_seconds": round(state.train_seconds, 2),
                   "train_hours_of_audio": round(self.train_set.hours, 4), "world_size": self.world,
                   "history": state.history,
                   "finished": state.epoch >= self.cfg.epochs or state.step >= self.total_steps}
        if self.rank == 0:
            atomic_write_json(self.out_dir / "metrics.json", metrics)
            self.log({"event": "done" if metrics["finished"] else "paused", "step": state.step,
                      "epoch": state.epoch, "best_valid_wer": state.best_valid_wer})
        return metrics


def train(train_manifest: str, valid_manifest: str, out: str, *, train_cfg: TrainConfig,
          model_cfg: Optional[ModelConfig] = None, model_overrides: Optional[dict] = None,
          teacher: Optional[str] = None, resume: bool = False, device: str = "cpu",
          stop_after_epochs: Optional[int] = None, progress: bool = True, log_every: int = 5) -> dict:
    """Train one recipe. Returns the metrics dict (also written to OUT/metrics.json).

    The architecture: `model_cfg` as given, else the teacher's (students) updated with `model_overrides`,
    else ModelConfig(**model_overrides)."""
    out_dir = Path(out)
    overrides = to_dict(model_cfg) if model_cfg is not None else dict(model_overrides or {})
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    lock = OutputLock(out_dir) if rank == 0 else None
    try:
        if rank == 0:
            recover_output_folder(out_dir)
        trainer = Trainer(train_manifest, valid_manifest, out_dir, train_cfg, overrides, teacher, resume,
                          device, progress, log_every)
        return trainer.run(stop_after_epochs)
    finally:
        if lock is not None:
            lock.release()
