"""Deterministic top-k: the k best scores, best first, equal scores in ascending index order.

``torch.topk`` leaves the order of tied scores unspecified (it differs between devices and sizes), and a
ranking that changes from run to run breaks evaluation and tests. These functions take ``torch.topk``'s
k-th value as a threshold, keep every score above it and the lowest-index scores equal to it, and sort that
short list stably.

Both accept a torch tensor or a numpy array and return the same kind: ``(indices, values)`` with int64
indices. Scores must not be NaN; ``-inf`` and ``inf`` are fine.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


def _as_tensor(scores: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    if isinstance(scores, torch.Tensor):
        return scores.detach(), False
    if isinstance(scores, np.ndarray):
        array = scores if scores.flags.writeable else scores.copy()
        return torch.from_numpy(np.ascontiguousarray(array)), True
    raise InputError(f"scores must be a torch tensor or a numpy array, not {type(scores).__name__}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InputError(f"k must be a non-negative integer, not {k!r}")
    return int(k)


def _topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, N = scores.shape
    k = min(k, N)
    if k == 0 or B == 0:
        return (
            torch.zeros((B, 0), dtype=torch.int64, device=scores.device),
            scores.new_zeros((B, 0)),
        )
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise InputError("scores contain NaN; cannot rank them")
    threshold = torch.topk(scores, k, dim=1, largest=True, sorted=False).values.amin(dim=1, keepdim=True)
    above = scores > threshold
    tied = scores == threshold
    room = k - above.sum(dim=1, keepdim=True)  # how many tied scores still fit, per row
    keep = above | (tied & (torch.cumsum(tied, dim=1) <= room))
    # Exactly k per row; nonzero lists them row by row in ascending index order.
    indices = keep.nonzero()[:, 1].view(B, k)
    values = scores.gather(1, indices)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return indices.gather(1, order), values.gather(1, order)


#: ``(indices, values)``: torch tensors for torch input, numpy arrays for numpy input.
Pair = tuple[torch.Tensor, torch.Tensor] | tuple[np.ndarray, np.ndarray]


def topk_rows(scores: torch.Tensor | np.ndarray, k: int) -> Pair:
    """Top-k of each row of (B, N) ``scores``: ``(indices (B, min(k, N)), values (B, min(k, N)))``.

    Rows are sorted by descending score; equal scores come in ascending index order.
    """
    k = _check_k(k)
    tensor, from_numpy = _as_tensor(scores)
    if tensor.dim() != 2:
        raise InputError(f"topk_rows expects (B, N) scores, not shape {tuple(tensor.shape)}")
    indices, values = _topk_rows(tensor, k)
    if from_numpy:
        return indices.numpy(), values.numpy()
    return indices, values


def topk(scores: torch.Tensor | np.ndarray, k: int) -> Pair:
    """Top-k of (N,) ``scores``: ``(indices (min(k, N),), values (min(k, N),))``, best first, ties by lower index."""
    k = _check_k(k)
    tensor, from_numpy = _as_tensor(scores)
    if tensor.dim() != 1:
        raise InputError(f"topk expects (N,) scores, not shape {tuple(tensor.shape)}")
    indices, values = _topk_rows(tensor.unsqueeze(0), k)
    if from_numpy:
        return indices[0].numpy(), values[0].numpy()
    return indices[0], values[0]
