"""Waveforms -> model input: the padded batch, and the feature extractor of a model's family
(dld_core/families: log-mel for conformer and whisper, the normalised waveform for WavLM)."""
from __future__ import annotations

import functools
import json

import torch

from .audio import SAMPLE_RATE
from .config import ModelConfig, to_dict
from .families import get_family

MIN_SECONDS = 0.1     # the front ends need a few frames (conformer ~60 ms, wavlm 25 ms)
MIN_SAMPLES = int(MIN_SECONDS * SAMPLE_RATE)   # shorter clips are padded with silence


def pad_waveforms(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch [B, S] and the lengths; every clip counts as at least MIN_SAMPLES long."""
    lengths = torch.tensor([max(w.shape[-1], MIN_SAMPLES) for w in wavs], dtype=torch.long)
    batch = torch.zeros(len(wavs), int(lengths.max()) if len(wavs) else 0)
    for i, w in enumerate(wavs):
        batch[i, : w.shape[-1]] = torch.as_tensor(w, dtype=torch.float32)
    return batch, lengths


def feature_extractor(cfg) -> torch.nn.Module:
    """The (stateless) feature extractor of a model config's family; one shared instance per front end."""
    return _extractor(cfg.family, json.dumps(to_dict(cfg), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _extractor(family: str, config_json: str) -> torch.nn.Module:
    cfg = ModelConfig(**json.loads(config_json))
    return get_family(family).Features(cfg).eval()


def display_logmel(samples) -> torch.Tensor:
    """The log-mel picture of a clip for display (the conformer front end), [T, 80]."""
    wavs, lengths = pad_waveforms([torch.as_tensor(samples)])
    feats, flen = _display_features()(wavs, lengths)
    return feats[0, : int(flen[0])]


@functools.lru_cache(maxsize=1)
def _display_features() -> torch.nn.Module:
    return get_family("conformer").Features().eval()
