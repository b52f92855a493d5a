"""Training recipes: teacher (static), ld (layer dropping), dld (layer dropping + distillation).

One readable loop (`Trainer.run`): per step, draw the gates, augment, forward the student with its
mask, the objective's loss, backward, step. At the end of every epoch: validate, keep the best model
(config.json + model.safetensors, fp16), write the resume state. The objective (TrainConfig.objective) says
what the loss and the validation are: "ctc" (`CTCObjective`: CTC, + KL to the frozen teacher's CTC
posteriors for dld) or "seq2seq" (dld_core/seq2seq.py: an encoder-decoder student with Whisper's text decoder).
OUT holds the best model, metrics.json, train_log.jsonl (the events the app reads) and resume/ (see
dld_core/resume.py). Every file is written atomically.
"""
from __future__ import annotations

import contextlib
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
from . import seq2seq
from .audio import SAMPLE_RATE
from .checkpoint import LOG_FILE, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig, from_dict, same_weights, to_dict
from .data import SpeechDataset, bucket_batches, length_batches
from .families import compatible_teacher, get_family
from .features import feature_extractor
from .inference import emissions, recognize
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


def validation_masks(recipe: str, model_cfg, protected=()) -> list:
    """Teacher: full depth. Students: full depth and half of it in whole blocks that keeps the protected
    modules (masks.half_mask: A1 M1 A3 M3 for a Whisper student with A1 protected)."""
    return [None] if recipe == "teacher" else [None, M.half_mask(model_cfg.module_blocks, protected)]


def model_config(teacher_cfg: Optional[ModelConfig], overrides: dict, pretrained: str = "") -> ModelConfig:
    """The model to train, with the options given explicitly on top of: the teacher's architecture (a
    student never repeats architecture flags; a student of another family starts from that family's
    defaults and keeps the teacher's vocabulary), else the pretrained encoder's dims, else the defaults."""
    if teacher_cfg is None:
        if pretrained:
            family = get_family(overrides.get("family", ModelConfig.family))     # ValueError where it has none
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
    for indices in length_batches(dataset.durations, batch_seconds):
        batch = dataset.collate(indices).to(device)
        features = extractor(batch.wavs, batch.wav_lengths)
        refs.extend(batch.texts)
        for m, mask in enumerate(masks):
            hyps[m].extend(recognize(model, features=features, active=mask).texts)
    model.train()
    return [wer(refs, h) for h in hyps]


class CTCObjective:
    """The ctc objective: CTC on the student's posteriors, + KL(teacher || student) on the frozen teacher's
    (dld). The interface every objective has (seq2seq.Seq2SeqObjective too): network(model), the module the loop
    runs (and DDP wraps); losses(...) per step: {"loss", "ctc", "kl", ...} tensors; validate(...) per epoch."""

    def __init__(self, cfg: TrainConfig, teacher: Optional["Teacher"]):
        self.cfg, self.teacher = cfg, teacher

    def network(self, model: DynamicCTCModel) -> torch.nn.Module:
        return model

    def losses(self, net, batch, indices: list[int], feats, lengths, active) -> dict:
        out = net(feats, lengths, active=active)
        loss_ctc = ctc_loss(out.log_probs, out.lengths, batch.targets, batch.target_lengths)
        loss_kl = torch.zeros((), device=feats.device)
        if self.teacher is not None:
            teacher_lp = self.teacher.log_probs(tuple(indices), batch.wavs, batch.wav_lengths)
            loss_kl = distillation_kl(teacher_lp, out.log_probs, out.lengths, self.cfg.kd_tau)
        return {"loss": loss_ctc + self.cfg.kd_lambda * loss_kl, "ctc": loss_ctc, "kl": loss_kl}

    def validate(self, model, dataset: SpeechDataset, device, masks: list) -> list[float]:
        return validate(model, dataset, device, masks)


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
            out = emissions(self.model, features=self.extractor(wavs, wav_lengths))
            self.cache[key] = out.log_probs.half().cpu()
        return self.cache[key].to(wavs.device).float()


# ----------------------------------------------------------------------------------------- setup
def resumed_configs(train_cfg: TrainConfig, teacher: Optional[str], meta: Optional[dict]
                    ) -> tuple[TrainConfig, Optional[str]]:
    """The training config and teacher of the run: a resumed run (meta: its resume state) continues with its
    own; only the number of epochs may change (0 = keep)."""
    if meta is not None:
        epochs = train_cfg.epochs
        train_cfg = from_dict(TrainConfig, meta["train"])
        train_cfg.epochs = epochs or train_cfg.epochs
        teacher = teacher or meta.get("teacher")
    train_cfg.validate()
    return train_cfg, teacher


def seed_everything(seed: int, rank: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed + rank)


def load_teacher(cfg: TrainConfig, teacher: Optional[str], fresh: bool, device
                 ) -> tuple[Optional[Teacher], Optional[ModelConfig]]:
    """(the frozen teacher, its config). The teacher is loaded whole for dld and for a fresh run with
    --init-from-teacher; an ld student only reads its config (the architecture to take). (A seq2seq student's
    dld teacher is the pretrained Whisper, dld_core/seq2seq.py; --teacher only gives it architecture and weights.)"""
    if (cfg.recipe == "dld" and cfg.objective == "ctc") or (cfg.init_from_teacher and fresh):
        if not teacher:
            raise CheckpointError(f"the {cfg.recipe} recipe{' with --init-from-teacher' if cfg.recipe != 'dld' else ''} "
                                  "needs --teacher CKPT")
        loaded = Teacher(teacher, device)
        return loaded, loaded.model.config
    if teacher and cfg.recipe != "teacher":
        return None, load_checkpoint(teacher).config
    return None, None


def student_config(meta: Optional[dict], teacher_cfg: Optional[ModelConfig], overrides: dict,
                   cfg: TrainConfig) -> ModelConfig:
    """The model to train: a resumed run's own, else model_config(...) (seq2seq: whisper, with the pretrained
    text decoder's dims); its vocabulary must be the teacher's."""
    if meta is not None:
        model_cfg = from_dict(ModelConfig, meta["model"])
    elif cfg.objective == "seq2seq":
        model_cfg = model_config(teacher_cfg, seq2seq.student_overrides(teacher_cfg, overrides), cfg.pretrained)
        model_cfg = seq2seq.with_decoder(model_cfg, cfg.pretrained)
    else:
        model_cfg = model_config(teacher_cfg, overrides, cfg.pretrained)
    model_cfg.validate()
    if model_cfg.pinned_embedding and not model_cfg.decoder:
        raise ValueError("--pinned-embedding pins a text decoder's token embedding: it needs --objective seq2seq")
    if teacher_cfg is not None and teacher_cfg.vocab != model_cfg.vocab:
        raise CheckpointError("the teacher's vocabulary differs from the student's")
    if cfg.recipe == "dld" and cfg.objective == "ctc" and not compatible_teacher(model_cfg, teacher_cfg):
        raise CheckpointError(f"this {teacher_cfg.family} teacher cannot teach the {model_cfg.family} student: their "
                              "CTC frames do not line up (dld_core.families.compatible_teacher)")
    return model_cfg


def initial_weights(model: DynamicCTCModel, cfg: TrainConfig, teacher: Optional[Teacher],
                    teacher_cfg: Optional[ModelConfig]) -> Optional[str]:
    """A fresh run's starting weights: the teacher's (--init-from-teacher), pretrained ones (--pretrained;
    returns their source) or the seeded random initialisation. A text decoder comes from --pretrained."""
    source = None
    if cfg.init_from_teacher:
        if not same_weights(dataclasses.replace(model.config, decoder={}, pinned_embedding=False), teacher_cfg):
            raise CheckpointError("--init-from-teacher needs the same architecture as the teacher")
        model.load_state_dict(teacher.model.state_dict(), strict=model.decoder is None)   # the decoder: below
    elif cfg.pretrained:
        source = get_family(model.config.family).load_pretrained(model, cfg.pretrained)
    if model.decoder is not None:
        decoder_source = seq2seq.load_decoder(model, cfg.pretrained)
        source = f"{source}; text decoder: {decoder_source}" if source else f"text decoder: {decoder_source}"
    return source


class Trainer:
    """One training run: __init__ sets it up (resume, seeds, teacher, model, optimizer, data, gates,
    schedule) in that order, `run` is the loop."""

    def __init__(self, train_manifest: str, valid_manifest: str, out_dir: Path, train_cfg: TrainConfig,
                 model_overrides: dict, teacher: Optional[str], resume: bool, device: str,
                 progress: bool, log_every: int):
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.out_dir, self.device, self.log_every = out_dir, device, log_every
        self.progress = progress and self.rank == 0

        # resume: a resumed run continues with its own configs (only the number of epochs may change)
        meta, tensors = load_resume(out_dir / RESUME_DIR) if resume else (None, None)
        cfg, teacher = resumed_configs(train_cfg, teacher, meta)
        self.cfg = cfg
        seed_everything(cfg.seed, self.rank)                 # before any weight is drawn (the teacher's too)

        # teacher and model
        self.teacher, teacher_cfg = load_teacher(cfg, teacher, meta is None, device)
        self.model_cfg = model_cfg = student_config(meta, teacher_cfg, model_overrides, cfg)
        self.model = DynamicCTCModel(model_cfg).to(device)
        pretrained_source = (meta.get("pretrained") if meta is not None
                             else initial_weights(self.model, cfg, self.teacher, teacher_cfg))
        if cfg.recipe != "dld" or cfg.objective != "ctc":
            self.teacher = None                  # only needed for its weights
        self.objective = (seq2seq.Seq2SeqObjective(cfg, self.model, device, out_dir / seq2seq.TEACHER_CACHE) if cfg.objective == "seq2seq"
                          else CTCObjective(cfg, self.teacher))

        # optimizer and training state (a resumed run's own)
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.state = restore(meta, tensors, self.model, self.optimizer) if meta is not None else TrainState()
        self.resumed_at = self.state.step
        self.ddp_model = self.objective.network(self.model)
        if self.world > 1:
            if cfg.sandwich:
                raise ValueError("--sandwich runs two forward passes per step: train it in one process")
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.ddp_model, find_unused_parameters=cfg.recipe != "teacher")

        # data, gates, schedule
        tokenizer = CharTokenizer(model_cfg.vocab)
        self.train_set = SpeechDataset(train_manifest, tokenizer, progress=self.progress)
        self.valid_set = SpeechDataset(valid_manifest, tokenizer, progress=self.progress) if self.rank == 0 else None
        self.extractor = feature_extractor(model_cfg).to(device)
        self.augment = cfg.spec_augment and get_family(model_cfg.family).INPUT == "log-mel"
        self.protected = M.Mask.parse(cfg.protected, model_cfg.module_names)     # modules never dropped
        self.keep_probs = M.keep_probabilities(model_cfg.module_names, cfg.keep_prob, cfg.keep_probs)
        self.valid_masks = validation_masks(cfg.recipe, model_cfg, self.protected)
        self.total_steps = len(self.batches(0)) * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)

        # output
        self.info = {"teacher": str(teacher) if teacher else None, "pretrained": pretrained_source,
                     "train_manifest": str(train_manifest), "valid_manifest": str(valid_manifest)}
        self.log_path = out_dir / LOG_FILE
        if self.rank == 0 and meta is None:
            self.log_path.unlink(missing_ok=True)           # a fresh run starts a fresh log

    def param_groups(self) -> list[dict]:
        """The CTC head at the learning rate; the encoder at encoder_lr when set (fine-tuning a
        pretrained encoder gently); a text decoder (unless frozen) at decoder_lr, else as the encoder."""
        cfg = self.cfg
        head = list(self.model.head.parameters())
        encoder = list(self.model.encoder.parameters())
        scale = cfg.encoder_lr / cfg.lr if cfg.encoder_lr else 1.0
        groups = [{"params": head, "lr_scale": 1.0}, {"params": encoder, "lr_scale": scale}]
        if self.model.decoder is not None and not cfg.freeze_decoder:
            groups.append({"params": list(self.model.decoder.parameters()),
                           "lr_scale": cfg.decoder_lr / cfg.lr if cfg.decoder_lr else scale})
        return groups

    def batches(self, epoch: int) -> list[list[int]]:
        return bucket_batches(self.train_set.durations, self.cfg.batch_seconds, self.cfg.seed, epoch,
                              self.rank, self.world, self.cfg.batch_clips)

    # ----------------------------------------------------------------------------------- the loop
    def run(self, stop_after_epochs: Optional[int] = None) -> dict:
        """Train until the epochs (or max_steps, or `stop_after_epochs` epochs of this run) are done. Every
        completed epoch validates and checkpoints; SIGINT/SIGTERM end the current step, write a resumable
        checkpoint and raise Interrupted."""
        cfg, state = self.cfg, self.state
        with self.stop_signals() as stop:
            self.log({"event": "start", "recipe": cfg.recipe, "step": state.step, "epoch": state.epoch,
                      "total_steps": self.total_steps, "train_hours": round(self.train_set.hours, 4),
                      "world_size": self.world, "params": sum(p.numel() for p in self.model.parameters())})
            self.ddp_model.train()
            bar = tqdm(total=self.total_steps, initial=state.step, disable=not self.progress, desc=cfg.recipe, unit="step")
            with bar, self.failures_recorded(stop):
                run_start, epochs_this_run = time.time(), 0
                while state.epoch < cfg.epochs and state.step < self.total_steps:
                    batches = self.batches(state.epoch)
                    while state.batch_in_epoch < len(batches) and state.step < self.total_steps:
                        t0 = time.time()
                        stats = self.step(batches[state.batch_in_epoch])
                        state.step, state.batch_in_epoch = state.step + 1, state.batch_in_epoch + 1
                        dt = time.time() - t0
                        state.train_seconds += dt
                        bar.update(1)
                        bar.set_postfix(loss=f"{stats['loss']:.3f}", kl=f"{stats['kl']:.3f}")
                        self.log_step(stats, dt, run_start)
                        if stop["signal"] is not None:
                            raise Interrupted()
                    if state.batch_in_epoch < len(batches):
                        break                            # max_steps reached mid-epoch
                    self.complete_epoch()
                    epochs_this_run += 1
                    if stop_after_epochs is not None and epochs_this_run >= stop_after_epochs:
                        break
        if state.batch_in_epoch:                         # stopped by max_steps mid-epoch: still leave a model
            self.checkpoint()
        return self.finish()

    def step(self, indices: list[int]) -> dict:
        """One optimizer step on one batch: gates, learning rate, features (+ SpecAugment), forward with
        the gates and the objective's loss, backward, clip, step."""
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
            losses = self.objective.losses(self.ddp_model, batch, indices, feats, lengths, active)
            if cfg.sandwich and active is not None and not all(active):      # the sandwich rule: full depth too
                full = self.objective.losses(self.ddp_model, batch, indices, feats, lengths, None)
                losses = {**losses, "loss": losses["loss"] + full["loss"], "full": full["loss"]}
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return {**{k: v.item() for k, v in losses.items()}, "lr": lr,
                "audio_s": float(batch.wav_lengths.sum()) / SAMPLE_RATE * self.world}

    def complete_epoch(self) -> None:
        """The epoch's last batch is done: count the epoch, take rank 0's BatchNorm statistics (they are per
        rank), validate and checkpoint."""
        self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
        if self.world > 1:
            for buf in self.model.buffers():
                dist.broadcast(buf, 0)
        self.checkpoint()

    def checkpoint(self) -> None:
        """Validate, keep the best model, and write a resumable checkpoint (rank 0 only)."""
        if self.rank != 0:
            return
        state = self.state
        wers = self.objective.validate(self.model, self.valid_set, self.device, self.valid_masks)
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

    # ------------------------------------------------------------------------------- logging and signals
    def log(self, event: dict) -> None:
        if self.rank == 0:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps({"time": time.time(), **event}) + "\n")

    def log_step(self, stats: dict, dt: float, run_start: float) -> None:
        """Every log_every steps (and the first): losses, learning rate, throughput and ETA."""
        state = self.state
        if state.step % self.log_every == 0 or state.step == 1:
            done = max(1, state.step - self.resumed_at)
            self.log({"event": "step", "step": state.step, "epoch": state.epoch,
                      **{k: stats[k] for k in ("loss", "ce", "ctc", "kl", "states", "full", "lr") if k in stats},
                      "audio_sec_per_sec": stats["audio_s"] / max(dt, 1e-9),
                      "eta_s": (self.total_steps - state.step) * (time.time() - run_start) / done,
                      "total_steps": self.total_steps})

    @contextlib.contextmanager
    def stop_signals(self):
        """SIGINT/SIGTERM only set stop["signal"] (on rank 0, or a single process): the loop ends the step
        it is in first. The previous handlers come back on the way out."""
        stop = {"signal": None}
        handlers = {}
        if self.rank == 0 or self.world == 1:
            handlers = {s: signal.signal(s, lambda signum, _: stop.update(signal=signum))
                        for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield stop
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def failures_recorded(self, stop: dict):
        """Interrupted: write a resumable checkpoint first (rank 0). Any other error (e.g. a failing
        checkpoint write, disk full) is said in the log the app reads. Both are raised on."""
        state = self.state
        try:
            yield
        except Interrupted:
            if self.rank == 0:
                self.save_resume()
                self.log({"event": "interrupted", "step": state.step, "epoch": state.epoch, "signal": stop["signal"]})
            raise
        except Exception as exc:
            try:
                self.log({"event": "error", "step": state.step, "epoch": state.epoch,
                          "message": (str(exc).splitlines() or [type(exc).__name__])[0][:300]})
            except OSError:
                pass
            raise


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
