"""Manifests -> waveforms in memory -> length-bucketed batches (by total seconds of padded audio)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .audio import SAMPLE_RATE, load_audio, load_manifest
from .features import pad_waveforms
from .tokenizer import CharTokenizer


@dataclass
class Batch:
    wavs: torch.Tensor            # [B, S] float32
    wav_lengths: torch.Tensor     # [B]
    targets: torch.Tensor         # [B, L] token ids (0-padded)
    target_lengths: torch.Tensor  # [B]
    texts: list[str]

    def to(self, device) -> "Batch":
        return Batch(self.wavs.to(device, non_blocking=True), self.wav_lengths.to(device),
                     self.targets.to(device), self.target_lengths.to(device), self.texts)


class SpeechDataset:
    """All utterances of a manifest, decoded once and held as int16 (1 h of audio = 115 MB)."""

    def __init__(self, manifest: str, tokenizer: CharTokenizer, max_seconds: float = 30.0, progress: bool = False):
        self.rows = load_manifest(manifest)
        self.tokenizer = tokenizer
        self.audio: list[np.ndarray] = []
        self.tokens: list[list[int]] = []
        for row in tqdm(self.rows, desc=f"loading {manifest}", disable=not progress, leave=False):
            clip = load_audio(row["audio_filepath"], max_seconds=max_seconds)
            self.audio.append((np.clip(clip.samples, -1, 1) * 32767).astype(np.int16))
            self.tokens.append(tokenizer.encode(row["text"]))
        self.durations = [len(a) / SAMPLE_RATE for a in self.audio]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def hours(self) -> float:
        return sum(self.durations) / 3600

    def waveform(self, i: int) -> np.ndarray:
        """Utterance i as float32 samples."""
        return self.audio[i].astype(np.float32) / 32767

    def collate(self, indices: list[int]) -> Batch:
        wavs, lengths = pad_waveforms([torch.from_numpy(self.waveform(i)) for i in indices])
        tok = [self.tokens[i] for i in indices]
        target_lengths = torch.tensor([len(t) for t in tok], dtype=torch.long)
        targets = torch.zeros(len(tok), max(1, int(target_lengths.max())), dtype=torch.long)
        for i, t in enumerate(tok):
            targets[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        return Batch(wavs, lengths, targets, target_lengths, [self.rows[i]["text"] for i in indices])


def length_batches(durations: Sequence[float], batch_seconds: float, max_items: int = 0) -> list[list[int]]:
    """Indices sorted by duration, cut so each batch's padded length (size x longest) <= batch_seconds (and
    each batch holds at most max_items, when set): validation and evaluation batches, in that order."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches: list[list[int]] = []
    for i in order:
        if (batches and (len(batches[-1]) + 1) * durations[i] <= batch_seconds
                and len(batches[-1]) != max_items):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def bucket_batches(durations: list[float], batch_seconds: float, seed: int, epoch: int,
                   rank: int = 0, world_size: int = 1, max_items: int = 0) -> list[list[int]]:
    """Training batches: `length_batches`, in an order shuffled with a seed that depends on the epoch, each rank
    given its share."""
    batches = length_batches(durations, batch_seconds, max_items)
    random.Random(seed * 1000003 + epoch).shuffle(batches)
    usable = len(batches) - len(batches) % world_size if len(batches) >= world_size else len(batches)
    return batches[:usable][rank::world_size]
