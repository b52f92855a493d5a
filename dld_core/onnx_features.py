"""A model family's front end as an ONNX graph: 16 kHz waveforms -> the features an exported model.onnx takes.

`python -m dld_core deploy --format onnx` writes it next to the model as features.onnx, so the deployed
folder runs with onnxruntime alone (README, "Run the exported model without DLD Studio"):

    inputs   audio [batch, samples] float32 (16 kHz mono, zero-padded), audio_lengths [batch] int64
    outputs  features [batch, frames, n_mels] float32, lengths [batch] int64  (model.onnx's inputs, by name)

The graph is the family's own feature extractor (`dld_core.features.feature_extractor(config)`) with one
change: its short-time Fourier transform (``torch.stft``, complex, which the ONNX exporter cannot take) is a
strided convolution with the windowed DFT basis, which gives the same power spectrum up to float rounding.
The conformer's log-mel (torchaudio's MelSpectrogram) takes that convolution as its spectrogram module;
the Whisper log-mel is `WhisperFeatures` below, the twin of ``families/whisper.py``'s ``Features``
(`deploy` checks every export against the PyTorch front end, and tests/test_deploy.py does too).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import SAMPLE_RATE
from .config import ModelConfig
from .features import feature_extractor, pad_waveforms
from .families import whisper
from .frames import HOP_LENGTH

FEATURES_FILE = "features.onnx"
INPUTS = {"audio": "float32 [batch, samples]: 16 kHz mono waveforms, zero-padded to the longest",
          "audio_lengths": "int64 [batch]: samples of each row"}
OUTPUTS = {"features": "float32 [batch, frames, n_mels]: model.onnx's input of that name",
           "lengths": "int64 [batch]: valid feature frames (model.onnx's input of that name)"}


class DftPower(nn.Module):
    """|STFT|^2 as a convolution: frames of n_fft samples every `hop`, times the window, against the real and
    imaginary DFT basis; [B, S] -> [B, n_fft // 2 + 1, frames]. center=True reflect-pads n_fft // 2 on both
    sides first (torch.stft's and torchaudio's default)."""

    def __init__(self, window: torch.Tensor, n_fft: int, hop: int, center: bool = False):
        super().__init__()
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)[:, None]
        w = np.zeros(n_fft)
        w[(n_fft - len(window)) // 2:][:len(window)] = window.double().cpu().numpy()   # centred, as torch.stft
        angle = 2 * np.pi * k * n[None, :] / n_fft
        basis = np.concatenate([np.cos(angle) * w, -np.sin(angle) * w])                 # [2 * bins, n_fft]
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.float32)[:, None, :], persistent=False)
        self.hop, self.pad, self.bins = hop, n_fft // 2 if center else 0, n_fft // 2 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :]
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        spec = F.conv1d(x, self.basis, stride=self.hop)                                   # [B, 2 * bins, T]
        return spec[:, :self.bins] ** 2 + spec[:, self.bins:] ** 2


class WhisperFeatures(nn.Module):
    """families/whisper.py's Features (Whisper's log-mel, per utterance) with the STFT as `DftPower`."""

    def __init__(self, source: nn.Module):
        super().__init__()
        self.power = DftPower(source.window, whisper.N_FFT, HOP_LENGTH)
        self.register_buffer("filters", source.filters.clone(), persistent=False)

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = wavs.shape[1]
        wav_lengths = wav_lengths.clamp(min=1, max=width)
        padded = wavs.gather(1, whisper.reflect_indices(wav_lengths, width, whisper.N_FFT // 2))
        power = self.power(padded)[..., :-1]
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()
        frames = log_spec.shape[-1]
        lengths = torch.div(wav_lengths, HOP_LENGTH, rounding_mode="floor").clamp(min=1, max=frames)
        valid = (torch.arange(frames)[None, :] < lengths[:, None])[:, None, :]
        peak = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        log_spec = ((log_spec + 4.0) / 4.0).masked_fill(~valid, 0.0)
        return log_spec.transpose(1, 2), lengths


def exportable_features(cfg: ModelConfig) -> nn.Module:
    """A copy of the config's feature extractor whose STFTs are convolutions (same inputs and outputs)."""
    from torchaudio.transforms import Spectrogram
    if cfg.family not in ("conformer", "whisper"):
        raise ValueError(f"cannot export the {cfg.family} family's front end to ONNX")
    extractor = copy.deepcopy(feature_extractor(cfg)).cpu().eval()
    if isinstance(extractor, whisper.Features):
        return WhisperFeatures(extractor)
    for module in list(extractor.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, whisper.Features):
                setattr(module, name, WhisperFeatures(child))
            elif isinstance(child, Spectrogram):                                           # torchaudio's
                if (child.power != 2.0 or child.normalized or not child.center or child.pad
                        or child.pad_mode != "reflect"):
                    raise ValueError("cannot export this spectrogram front end to ONNX (unsupported settings)")
                setattr(module, name, DftPower(child.window, child.n_fft, child.hop_length, center=True))
    return extractor


def export_features(cfg: ModelConfig, path: Path, opset: int = 17) -> None:
    """The config's front end as an ONNX graph (see the module docstring), batch and length axes dynamic;
    traced on a padded batch of two."""
    rng = np.random.default_rng(5)
    wavs, lengths = pad_waveforms([torch.tensor(rng.standard_normal(int(s * SAMPLE_RATE)) * 0.1, dtype=torch.float32)
                                   for s in (1.0, 0.6)])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(exportable_features(cfg), (wavs, lengths), str(path), dynamo=False,
                          input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes={"audio": {0: "batch", 1: "samples"}, "audio_lengths": {0: "batch"},
                                        "features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True)


def run_features(path: Path, waveforms) -> tuple[np.ndarray, np.ndarray]:
    """features.onnx on a list of 16 kHz waveforms (padded as dld_core pads a batch): (features, lengths)."""
    import onnxruntime as ort
    wavs, lengths = pad_waveforms([torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waveforms])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return tuple(session.run(None, {"audio": wavs.numpy(), "audio_lengths": lengths.numpy()}))
