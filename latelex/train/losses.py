"""Training losses as pure functions of score and activation tensors.

Conventions: ``scores`` (B, W) holds each query's scores for its own W passages with the positive in column 0;
``all_scores`` (B, B * W) holds each query's scores for every passage of the batch, passages ordered example by
example, so that query i's positive is column ``i * W``. Every loss returns a scalar tensor (mean over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError


def _check_2d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise InputError(f"{name} must be a (B, W) tensor, got shape {tuple(x.shape)}")


def nway_cross_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of (B, W) scores with the positive in column 0 (pairwise softmax when W = 2)."""
    _check_2d("scores", scores)
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float(), target)


def in_batch_cross_entropy(all_scores: torch.Tensor, nway: int) -> torch.Tensor:
    """Softmax cross-entropy of (B, B * nway) scores where query i's positive is column ``i * nway``.

    Every other passage of the batch (the query's own negatives and all passages of other examples) is a negative.
    """
    _check_2d("all_scores", all_scores)
    B, N = all_scores.shape
    if N != B * nway:
        raise InputError(f"all_scores has {N} columns; expected B * nway = {B * nway}")
    target = torch.arange(B, device=all_scores.device) * nway
    return F.cross_entropy(all_scores.float(), target)


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) between the softmax distributions of (B, W) scores at ``temperature``.

    Multiplied by ``temperature ** 2`` so that its gradients keep their scale as the temperature changes
    (Hinton et al.); averaged over the B queries.
    """
    _check_2d("student", student)
    if student.shape != teacher.shape:
        raise InputError(f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} differ in shape")
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Margin-MSE (Hofstaetter et al.): mean over queries and negatives of
    ``((s_pos - s_neg) - (t_pos - t_neg))^2`` for (B, W) student and teacher scores, W >= 2, positive in column 0."""
    _check_2d("student", student)
    if student.shape != teacher.shape:
        raise InputError(f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} differ in shape")
    if student.shape[1] < 2:
        raise InputError("margin_mse needs at least one negative per query (W >= 2)")
    student, teacher = student.float(), teacher.float()
    s_margin = student[:, :1] - student[:, 1:]
    t_margin = teacher[:, :1] - teacher[:, 1:]
    return F.mse_loss(s_margin, t_margin)


def score_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Direct score matching: the mean squared difference of (B, N) student and teacher scores of the same pairs."""
    _check_2d("student", student)
    if student.shape != teacher.shape:
        raise InputError(f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} differ in shape")
    return F.mse_loss(student.float(), teacher.float())


def flops(activations: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al., SPLADE) of (B, V) non-negative activations: sum over the V terms of the
    squared mean activation over the batch."""
    _check_2d("activations", activations)
    return activations.float().abs().mean(dim=0).pow(2).sum()


def l1(activations: torch.Tensor) -> torch.Tensor:
    """L1 regulariser of (B, V) activations: the mean over the batch of each vector's L1 norm."""
    _check_2d("activations", activations)
    return activations.float().abs().sum(dim=1).mean()


def quadratic_warmup(value: float, step: int, warmup_steps: int) -> float:
    """SPLADE's regularisation warm-up: ``value * min(1, (step / warmup_steps) ** 2)`` (``value`` if warm-up is 0)."""
    if warmup_steps <= 0:
        return float(value)
    return float(value) * min(1.0, (step / warmup_steps) ** 2)


__all__ = [
    "nway_cross_entropy",
    "in_batch_cross_entropy",
    "kl_distillation",
    "margin_mse",
    "score_mse",
    "flops",
    "l1",
    "quadratic_warmup",
]
