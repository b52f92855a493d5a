"""Manifests -> waveforms in memory -> length-bucketed batches (by total seconds of padded audio)."""
from __future__ import annotations

import random
from dataclasses import dataclass

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


def bucket_batches(durations: list[float], batch_seconds: float, seed: int, epoch: int,
                   rank: int = 0, world_size: int = 1, max_items: int = 0) -> list[list[int]]:
    """Sort by length, cut into batches whose padded size (n * longest) stays under batch_seconds (and, when
    max_items is set, that hold at most max_items utterances), shuffle the batch order with a seed that depends
    on the epoch, and give each rank its share."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches, current = [], []
    for i in order:
        if current and ((len(current) + 1) * durations[i] > batch_seconds or len(current) == max_items):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    random.Random(seed * 1000003 + epoch).shuffle(batches)
    usable = len(batches) - len(batches) % world_size if len(batches) >= world_size else len(batches)
    return batches[:usable][rank::world_size]
