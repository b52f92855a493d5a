"""Waveform -> model input. Conformer: 80-dim log-mel, normalised per utterance. WavLM: the waveform, normalised."""
from __future__ import annotations

import torch
import torchaudio

SAMPLE_RATE = 16000
HOP_LENGTH = 160      # 10 ms frames
WIN_LENGTH = 400      # 25 ms windows


class LogMel(torch.nn.Module):
    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=WIN_LENGTH, win_length=WIN_LENGTH,
            hop_length=HOP_LENGTH, n_mels=n_mels)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wavs [B, S] float, wav_lengths [B] -> features [B, T, n_mels], frame lengths [B]."""
        feats = (self.mel(wavs.float()) + 1e-6).log().transpose(1, 2)           # [B, T, F]
        lengths = torch.div(wav_lengths, HOP_LENGTH, rounding_mode="floor") + 1
        lengths = lengths.clamp(max=feats.shape[1])
        valid = (torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None])[..., None]
        count = (lengths[:, None, None] * feats.shape[2]).clamp(min=1)
        mean = (feats * valid).sum(dim=(1, 2), keepdim=True) / count
        var = (((feats - mean) * valid) ** 2).sum(dim=(1, 2), keepdim=True) / count
        feats = (feats - mean) / (var.sqrt() + 1e-5) * valid
        return feats, lengths


def normalize_waveform(wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean, unit-variance per utterance over the valid samples (the WavLM convention)."""
    valid = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < wav_lengths[:, None]
    count = wav_lengths[:, None].clamp(min=1)
    mean = (wavs * valid).sum(1, keepdim=True) / count
    var = (((wavs - mean) * valid) ** 2).sum(1, keepdim=True) / count
    return (wavs - mean) / (var.sqrt() + 1e-5) * valid, wav_lengths


class FeatureExtractor(torch.nn.Module):
    """The input step for a model family: call it on a padded batch of 16 kHz waveforms."""

    def __init__(self, family: str, n_mels: int = 80):
        super().__init__()
        self.family = family
        self.log_mel = LogMel(n_mels) if family == "conformer" else None

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.log_mel is not None:
            return self.log_mel(wavs, wav_lengths)
        return normalize_waveform(wavs.float(), wav_lengths)


MIN_SECONDS = 0.1      # the front ends need a few frames (conformer ~60 ms, wavlm 25 ms)
MIN_SAMPLES = int(MIN_SECONDS * SAMPLE_RATE)   # shorter clips are padded with silence


def pad_waveforms(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch [B, S] and the lengths; every clip counts as at least MIN_SAMPLES long."""
    lengths = torch.tensor([max(w.shape[-1], MIN_SAMPLES) for w in wavs], dtype=torch.long)
    batch = torch.zeros(len(wavs), int(lengths.max()) if len(wavs) else 0)
    for i, w in enumerate(wavs):
        batch[i, : w.shape[-1]] = torch.as_tensor(w, dtype=torch.float32)
    return batch, lengths
