"""Dynamic CTC speech models: front end -> N gated encoder modules -> CTC head.

Every encoder module i is behind a gate:  y_{i+1} = y_i + g_i * f_i(y_i). What a module is depends on
the family (dld_core/families: a conformer layer, a WavLM layer, a Whisper attention or MLP sub-block).
`active` (one bool per module, or kept indices; see dld_core/masks.py) is an argument of `forward`,
never state on the model, so one cached model can serve many users with different masks. A dropped
module is skipped, not multiplied by zero: it costs no compute.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import nn

from .config import ModelConfig
from .families import get_family
from .masks import as_bools


class ModelOutput(NamedTuple):
    log_probs: torch.Tensor                    # [B, T', V] CTC log-posteriors
    lengths: torch.Tensor                      # [B] valid output frames
    hidden: Optional[list[torch.Tensor]]       # [B, T', D] after every module (dropped ones pass through)


class CTCModel(nn.Module):
    """What featurize, recognize and the decoders use of a model: its config, its module names and
    forward(features, lengths, active=mask) -> ModelOutput. DynamicCTCModel and deploy's OnnxCTCModel."""
    config: ModelConfig

    @property
    def module_names(self) -> list[str]:
        return self.config.module_names

    @property
    def num_modules(self) -> int:
        return self.config.num_modules


class DynamicCTCModel(CTCModel):
    """The gated encoder and its CTC head; an encoder-decoder student (cfg.decoder, whisper family) also holds
    Whisper's text decoder as `decoder` (None otherwise), run by dld_core/seq2seq.py on the encoder's output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = get_family(cfg.family).Encoder(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.decoder: Optional[nn.Module] = None
        if cfg.decoder:
            from .families.whisper_decoder import decoder_from_config
            self.decoder = decoder_from_config(cfg)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, active=None,
                return_hidden: bool = False) -> ModelOutput:
        """features/lengths: the family's Features output (dld_core.features.feature_extractor)."""
        hidden: Optional[list[torch.Tensor]] = [] if return_hidden else None

        def keep(i, on, before, after):             # the hidden state after every module
            hidden.append(after)
            return after
        x, out_lengths = encode(self.encoder, features, lengths, as_bools(active, self.num_modules),
                                keep if return_hidden else None)
        return ModelOutput(self.log_probs(x), out_lengths, hidden)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """The CTC head on any hidden state (also used for the logit-lens view)."""
        return self.head(hidden).float().log_softmax(dim=-1)


# step(i, on, before, after) -> x: sees module i's input and output and returns the state the loop goes on with
Step = Callable[[int, bool, torch.Tensor, torch.Tensor], torch.Tensor]


def run_modules(encoder: nn.Module, x: torch.Tensor, context, mask: Sequence[bool],
                step: Optional[Step] = None) -> torch.Tensor:
    """The gate loop, y_{i+1} = y_i + g_i * f_i(y_i), over an encoder's gated-module API (dld_core/families):
    module i runs where mask[i] is true and is skipped, costing no compute, where it is false. `step`, when
    given, is called after every module (the hidden states of forward, the drop-one rows of dld_core/layers,
    the per-module FLOPs of dld_core/flops)."""
    for i, on in enumerate(mask):
        after = encoder.layer(i, x, context) if on else x
        x = after if step is None else step(i, on, x, after)
    return x


def encode(encoder: nn.Module, features: torch.Tensor, lengths: torch.Tensor, mask: Sequence[bool],
           step: Optional[Step] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """embed -> the gate loop (run_modules) -> finish: (x [B, T', D] before the CTC head, out_lengths [B])."""
    x, out_lengths, context = encoder.embed(features, lengths)
    return encoder.finish(run_modules(encoder, x, context, mask, step)), out_lengths


def count_parameters(model: nn.Module) -> int:
    """The model's weights: its parameters and a text decoder's pinned (frozen, not stored) token embedding."""
    pinned = sum(m.token_embedding.weight.numel() for m in model.modules() if getattr(m, "embedding_pinned", False))
    return sum(p.numel() for p in model.parameters()) + pinned
