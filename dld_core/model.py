"""Dynamic CTC speech models: front end -> N gated encoder modules -> CTC head.

Every encoder module i is behind a gate:  y_{i+1} = y_i + g_i * f_i(y_i). What a module is depends on
the family (dld_core/families: a conformer layer, a WavLM layer, a Whisper attention or MLP sub-block).
`active` (one bool per module, or kept indices; see dld_core/masks.py) is an argument of `forward`,
never state on the model, so one cached model can serve many users with different masks. A dropped
module is skipped, not multiplied by zero: it costs no compute.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from .config import ModelConfig
from .families import get_family
from .masks import as_bools


class ModelOutput(NamedTuple):
    log_probs: torch.Tensor                    # [B, T', V] CTC log-posteriors
    lengths: torch.Tensor                      # [B] valid output frames
    hidden: Optional[list[torch.Tensor]]       # [B, T', D] after every module (dropped ones pass through)


class DynamicCTCModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = get_family(cfg.family).Encoder(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    @property
    def module_names(self) -> list[str]:
        return self.config.module_names

    @property
    def num_modules(self) -> int:
        return self.config.num_modules

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, active=None,
                return_hidden: bool = False) -> ModelOutput:
        """features/lengths: the family's Features output (dld_core.features.feature_extractor)."""
        mask = as_bools(active, self.num_modules)
        x, out_lengths, context = self.encoder.embed(features, lengths)
        hidden: Optional[list[torch.Tensor]] = [] if return_hidden else None
        for i, on in enumerate(mask):
            if on:                                   # y_{i+1} = y_i + g_i * f_i(y_i): g_i = 0 skips module i
                x = self.encoder.layer(i, x, context)
            if hidden is not None:
                hidden.append(x)
        return ModelOutput(self.log_probs(self.encoder.finish(x)), out_lengths, hidden)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """The CTC head on any hidden state (also used for the logit-lens view)."""
        return self.head(hidden).float().log_softmax(dim=-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
