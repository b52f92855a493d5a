"""Training losses: CTC, and the distillation term KL(teacher || student) on the CTC posteriors; for encoder-decoder
students (dld_core/seq2seq.py) the cross-entropy of reference tokens and the same KL on the token posteriors, whole
or over the teacher's K most likely tokens."""
from __future__ import annotations

from typing import Optional

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


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """-log p(target) averaged over the valid positions (the first lengths[b] of row b), no label smoothing.
    logits [B, L, V], targets [B, L]."""
    mask = valid_frames(lengths, logits.shape[1])
    return F.cross_entropy(logits[mask].float(), targets[mask])


def distillation_kl_top_k(teacher_top: torch.Tensor, teacher_ids: torch.Tensor, student_logits: torch.Tensor,
                          lengths: torch.Tensor, tau: float = 1.0,
                          teacher_rest: Optional[torch.Tensor] = None) -> torch.Tensor:
    """tau^2 * KL(teacher || student) at temperature tau over K + 1 outcomes: the teacher's K most likely tokens
    and one for all the others (exact when the teacher's K tokens hold all its mass at tau, a lower bound of the
    whole KL otherwise), averaged over valid positions. teacher_top [B, L, K]: the teacher's log-probabilities
    at temperature tau of tokens teacher_ids [B, L, K]; teacher_rest [B, L]: the log of the others' mass at tau
    (default: from teacher_top); student_logits [B, L, V]."""
    s = F.log_softmax(student_logits.float() / tau, dim=-1)
    t_top = teacher_top.float()
    kl = kl_per_frame(t_top, s.gather(-1, teacher_ids))
    if teacher_ids.shape[-1] < s.shape[-1]:
        if teacher_rest is None:
            teacher_rest = (1.0 - t_top.exp().sum(-1)).clamp(min=0.0).log()
        s_rest = s.scatter(-1, teacher_ids, float("-inf")).logsumexp(-1)
        kl = kl + kl_per_frame(teacher_rest.float().clamp(min=-1e4)[..., None], s_rest[..., None])
    mask = valid_frames(lengths, s.shape[1]).float()
    return tau * tau * (kl * mask).sum() / mask.sum().clamp(min=1.0)


def state_distance(student: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Encoder-state distillation: the mean squared distance of `student` from `teacher` [B, S, D] over each row's
    first lengths[b] frames (the clip), plus the same over the frames after them (the padding, if any row has it):
    each part averaged on its own, so a short clip's few frames are not outweighed by its long padding."""
    valid = valid_frames(lengths, student.shape[1])
    squared = (student.float() - teacher.float()).pow(2).mean(-1)
    loss = squared[valid].mean()
    if not bool(valid.all()):
        loss = loss + squared[~valid].mean()
    return loss
