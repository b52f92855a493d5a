"""The frame grid the front ends share: 25 ms windows every 10 ms at 16 kHz, and the padding mask of a
padded batch. A leaf module: the model families and the feature code import it, it imports nothing of
the project."""
from __future__ import annotations

import torch

HOP_LENGTH = 160      # 10 ms frames
WIN_LENGTH = 400      # 25 ms windows


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions, [B, T]."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
