"""Training losses: CTC, and the distillation term KL(teacher || student) on the CTC posteriors."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """Mean over utterances of the CTC loss normalised by target length. log_probs: [B, T, V]."""
    return F.ctc_loss(log_probs.float().transpose(0, 1), targets, lengths, target_lengths,
                      blank=0, reduction="mean", zero_infinity=True)


def valid_frames(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def kl_per_frame(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student) for every frame: sum_v p_t (log p_t - log p_s). [..., V] -> [...]."""
    teacher_log_probs = teacher_log_probs.float()
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs.float())).sum(-1)


def distillation_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor,
                    lengths: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """tau^2 * KL(teacher || student) at temperature tau, averaged over valid frames.

    Inputs are log-posteriors; log_softmax(log_probs / tau) equals softmax(logits / tau) in log space,
    because log_probs differ from logits only by a per-frame constant.
    """
    t = F.log_softmax(teacher_log_probs.float() / tau, dim=-1)
    s = F.log_softmax(student_log_probs.float() / tau, dim=-1)
    mask = valid_frames(lengths, s.shape[1]).float()
    kl = kl_per_frame(t, s)
    return tau * tau * (kl * mask).sum() / mask.sum().clamp(min=1.0)
