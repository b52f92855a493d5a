"""The one inference path: waveforms -> features -> forward(mask) -> decode.

Used by the CLI, the evaluator, training validation (and the dld teacher), the layer views, decoder tuning,
the benchmark and the app: nothing else runs a model on audio. `featurize` computes features (once, then
pass them on for many masks); `emissions` runs the forward (CTC log-probs, no decoding); `recognize` adds
the decoding and the timing (`timed`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TypeVar

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .decode import greedy_decode, make_decoder
from .features import feature_extractor, pad_waveforms
from .model import DynamicCTCModel, ModelOutput
from .tokenizer import CharTokenizer


@torch.inference_mode()
def featurize(model: DynamicCTCModel, waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz waveforms -> the padded batch through the model family's feature extractor, on the model's device."""
    wavs, lengths = pad_waveforms([torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waveforms])
    device = next(model.parameters(), torch.empty(0)).device      # no parameters: an ONNX model (deploy.py), CPU
    return feature_extractor(model.config).to(device)(wavs.to(device), lengths.to(device))


@torch.inference_mode()
def emissions(model: DynamicCTCModel, waveforms: Optional[Sequence[np.ndarray]] = None, *,
              features: Optional[tuple[torch.Tensor, torch.Tensor]] = None, active=None,
              return_hidden: bool = False) -> ModelOutput:
    """Waveforms (or precomputed `features`) -> forward with one layer mask -> the batch's CTC log-probs
    [B, T', V], valid lengths [B] and (return_hidden) hidden states; no decoding. utterance(out, i) is one
    utterance's valid log-probs."""
    feats, lengths = features if features is not None else featurize(model, waveforms)
    return model(feats, lengths, active=active, return_hidden=return_hidden)


def utterance(output: ModelOutput, i: int = 0) -> torch.Tensor:
    """Utterance i's valid log-probs [T', V] of a batch's output."""
    return output.log_probs[i, : int(output.lengths[i])]


T = TypeVar("T")


def timed(fn: Callable[[], T], repeats: int = 1, warmup: int = 0) -> tuple[T, list[float]]:
    """Run fn `warmup` times untimed, then `repeats` (at least 1) times timed: (the last result, each timed
    run in ms). The latency of the benchmark and of `recognize`."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - start) * 1000)
    return result, runs


def decoder_for(model: DynamicCTCModel, decoder: str = "greedy"):
    """A callable (log_probs, lengths) -> texts for the model's vocabulary: "greedy" or "beam"."""
    if decoder == "greedy":
        tokenizer = CharTokenizer(model.config.vocab)
        return lambda log_probs, lengths: greedy_decode(log_probs, lengths, tokenizer)
    return make_decoder(decoder, model.config.vocab)


@dataclass
class Recognition:
    texts: list[str]
    output: ModelOutput          # log-probs [B, T', V], lengths, hidden states (if asked for)
    forward_ms: float            # model forward only (features and decoding excluded): median of the timed runs
    forward_runs_ms: list[float] = field(default_factory=list)   # every timed forward run (`repeats` of them)
    decode_ms: float = 0.0       # decoding the batch once

    def log_probs(self, i: int = 0) -> torch.Tensor:
        """Utterance i's valid log-probs [T', V]."""
        return utterance(self.output, i)

    @property
    def compute_ms(self) -> float:
        """Median forward + decoding: the compute one transcript costs (features excluded)."""
        return self.forward_ms + self.decode_ms


def real_time_factor(compute_ms: float, num_samples: int) -> float:
    """RTF = compute seconds / audio seconds (below 1: faster than real time); inf for empty audio."""
    seconds = num_samples / SAMPLE_RATE
    return compute_ms / 1000 / seconds if seconds > 0 else float("inf")


@torch.inference_mode()
def recognize(model: DynamicCTCModel, waveforms: Optional[Sequence[np.ndarray]] = None, *,
              features: Optional[tuple[torch.Tensor, torch.Tensor]] = None, active=None,
              decoder: str = "greedy", return_hidden: bool = False, repeats: int = 1) -> Recognition:
    """Transcribe waveforms (or precomputed `features` from `featurize`) with one layer mask.

    repeats > 1 runs the (deterministic, eval-mode) forward that many times and reports the median time as
    forward_ms: a latency that one scheduler hiccup does not decide. The output is the last run's."""
    features = features if features is not None else featurize(model, waveforms)
    out, runs = timed(lambda: emissions(model, features=features, active=active, return_hidden=return_hidden),
                      repeats)
    decode = decoder_for(model, decoder)
    texts, (decode_ms,) = timed(lambda: decode(out.log_probs, out.lengths))
    return Recognition(texts, out, float(np.median(runs)), runs, decode_ms)


def transcribe(model: DynamicCTCModel, waveforms: Sequence[np.ndarray], active=None,
               decoder: str = "greedy") -> list[str]:
    return recognize(model, waveforms, active=active, decoder=decoder).texts


def frame_seconds(num_samples: int, frames: int) -> float:
    """Seconds of audio per output frame of one utterance."""
    return num_samples / SAMPLE_RATE / max(1, frames)
