"""Waveforms -> transcripts for one layer mask (used by the CLI, the evaluator and the app)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .decode import greedy_decode
from .features import FeatureExtractor, pad_waveforms
from .model import DynamicCTCModel, ModelOutput
from .tokenizer import CharTokenizer

_EXTRACTORS: dict[tuple[str, int], FeatureExtractor] = {}


def feature_extractor(model: DynamicCTCModel) -> FeatureExtractor:
    """One stateless extractor per (family, n_mels), shared by every caller."""
    key = (model.config.family, model.config.n_mels)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = FeatureExtractor(*key).eval()
    return _EXTRACTORS[key]


@torch.inference_mode()
def featurize(model: DynamicCTCModel, waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    wavs, lengths = pad_waveforms([torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waveforms])
    device = next(model.parameters()).device
    return feature_extractor(model).to(device)(wavs.to(device), lengths.to(device))


@torch.inference_mode()
def run(model: DynamicCTCModel, waveforms: Sequence[np.ndarray], active: Optional[Sequence[bool]] = None,
        return_hidden: bool = False) -> ModelOutput:
    feats, lengths = featurize(model, waveforms)
    return model(feats, lengths, active=active, return_hidden=return_hidden)


def transcribe_clips(model: DynamicCTCModel, waveforms: Sequence[np.ndarray],
                     active: Optional[Sequence[bool]] = None) -> list[str]:
    out = run(model, waveforms, active)
    return greedy_decode(out.log_probs, out.lengths, CharTokenizer(model.config.vocab))
