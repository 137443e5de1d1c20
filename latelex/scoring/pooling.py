"""Token pooling: fewer vectors per document by merging similar tokens (Answer.AI's and PyLate's ``pool_factor``).

A document's token vectors are clustered hierarchically with Ward linkage (``scipy.cluster.hierarchy``, Euclidean
distance between the vectors: for unit vectors a monotone function of cosine) and the dendrogram is cut into
exactly ``min(L, ceil(L / pool_factor))`` clusters; each cluster becomes the mean of its vectors, re-normalised to
unit length for cosine models. The pooled rows keep document order (by each cluster's first token). A factor of 2
stores about half the vectors of an index, 3 about a third, at a small cost in quality ("A little pooling goes a
long way for multi-vector representations", Answer.AI, 2024).

Differences from PyLate's ``pool_embeddings_hierarchical``, on purpose: the cluster count is
``ceil(L / pool_factor)``, not ``max(L // pool_factor, 1)`` (a 3-token document pooled by 2 keeps 2 vectors, not
1: the bound errs towards quality); Ward runs on the vectors themselves, not on rows of a cosine-distance matrix
used as features (the same geometry for unit vectors, and ``dim`` features instead of ``L``); the dendrogram is cut
at an exact cluster count instead of ``fcluster(..., "maxclust")``, which may stop short on tied merge heights; no
token (PyLate's [CLS]) is protected from merging; the means are re-normalised.

Queries are never pooled: only documents are, at indexing time.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, InputError

__all__ = ["check_pool_factor", "pooled_count", "pool_tokens", "pool_documents"]


def check_pool_factor(pool_factor: object) -> int:
    """``pool_factor`` as an int, or a :class:`ConfigError` unless it is an integer of at least 1."""
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, (int, np.integer)) or pool_factor < 1:
        raise ConfigError(f"pool_factor must be an integer of at least 1 (1: no pooling; 2: half the vectors), "
                          f"not {pool_factor!r}")
    return int(pool_factor)


def pooled_count(n_tokens: int, pool_factor: int) -> int:
    """How many vectors :func:`pool_tokens` keeps of ``n_tokens``: ``min(n_tokens, ceil(n_tokens / pool_factor))``
    (0 for an empty matrix, otherwise at least 1)."""
    return min(n_tokens, math.ceil(n_tokens / check_pool_factor(pool_factor)))


def pool_tokens(matrix: torch.Tensor, pool_factor: int, *, normalize: bool = True) -> torch.Tensor:
    """Pool one document's token vectors.

    Args:
        matrix: (L, dim) float token vectors of one document.
        pool_factor: 1 returns ``matrix`` itself, unchanged; ``f >= 2`` keeps
            :func:`pooled_count` ``(L, f) = min(L, ceil(L / f))`` vectors, exactly.
        normalize: re-normalise each pooled vector to unit length (cosine models; pass ``False`` for models whose
            vectors are not normalised). Rows that stay alone in their cluster are returned as they were.

    Returns:
        (L', dim) tensor of ``matrix``'s dtype and device, L' = ``min(L, ceil(L / f))``; rows in the order of each
        cluster's first token. Deterministic. A matrix of 0 or 1 rows (or any L with ``ceil(L / f) == L``) is
        returned unchanged.

    Raises:
        ConfigError: ``pool_factor`` is not an integer of at least 1.
        InputError: ``matrix`` is not a 2-D tensor, or holds NaN or infinite values.
    """
    factor = check_pool_factor(pool_factor)
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
        what = f"a {matrix.ndim}-D tensor" if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise InputError(f"pool_tokens takes one document's (L, dim) tensor of token vectors, not {what}")
    n = int(matrix.shape[0])
    target = pooled_count(n, factor)
    if factor == 1 or target >= n:
        return matrix
    x = matrix.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(x).all():
        raise InputError("cannot pool token vectors holding NaN or infinite values; check the encoder's output")
    labels = _ward_labels(x, target)
    sums = np.zeros((target, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    pooled = sums / np.bincount(labels, minlength=target)[:, None]
    if normalize:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled = pooled / np.maximum(norms, 1e-12)
    return torch.from_numpy(pooled).to(device=matrix.device, dtype=matrix.dtype)


def pool_documents(matrices: Sequence[torch.Tensor], pool_factor: int, *,
                   normalize: bool = True) -> list[torch.Tensor]:
    """:func:`pool_tokens` of every (L_i, dim) matrix in ``matrices``; a list of (L'_i, dim) tensors, in order,
    with L'_i = ``min(L_i, ceil(L_i / pool_factor))``. Factor 1 returns the matrices themselves."""
    factor = check_pool_factor(pool_factor)
    if factor == 1:
        return list(matrices)
    return [pool_tokens(m, factor, normalize=normalize) for m in matrices]


def _ward_labels(x: np.ndarray, clusters: int) -> np.ndarray:
    """(L,) int64 cluster of each row of ``x`` (L, dim) float64, for the Ward dendrogram cut into exactly
    ``clusters`` clusters (1 <= clusters < L), numbered 0.. in order of their first row."""
    from scipy.cluster.hierarchy import linkage

    n = x.shape[0]
    merges = n - clusters
    Z = linkage(x, method="ward", metric="euclidean")
    # Apply the first `merges` merges: node n + i is the parent of the two nodes merged at step i.
    parent = np.arange(2 * n - 1, dtype=np.int64)
    steps = np.arange(n, n + merges, dtype=np.int64)
    parent[Z[:merges, 0].astype(np.int64)] = steps
    parent[Z[:merges, 1].astype(np.int64)] = steps
    root = parent[:n + merges]
    while True:  # pointer jumping: every leaf to the root of its subtree
        up = root[root]
        if np.array_equal(up, root):
            break
        root = up
    # Number the clusters by their first row, so that pooled rows keep document order.
    _, first, inverse = np.unique(root[:n], return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]
