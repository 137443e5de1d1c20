"""Sparse scoring: dot products between sparse vectors and exact top-k selection.

Pure functions over :class:`~latelex.types.SparseBatch` (CSR: ``indptr`` (N + 1,) int64, ``indices`` (nnz,)
int32 ascending within a row, ``values`` (nnz,) float32) and plain numpy score arrays.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..types import SparseBatch


def check_sparse_batch(batch: SparseBatch, *, what: str = "vectors", nonnegative: bool = False) -> None:
    """Raise :class:`InputError` unless ``batch`` is a well-formed :class:`SparseBatch`.

    Checks the CSR structure (``indptr`` starts at 0, never decreases and ends at nnz), that term ids lie in
    ``[0, vocab_size)`` and ascend strictly within each row, and that weights are finite (and, with
    ``nonnegative``, not below zero). The message names the first offending row of ``what``.
    """
    if not isinstance(batch, SparseBatch):
        raise InputError(f"{what} must be a SparseBatch, not {type(batch).__name__}")
    indptr = np.asarray(batch.indptr)
    indices = np.asarray(batch.indices)
    values = np.asarray(batch.values)
    n = len(batch)
    if indptr.ndim != 1 or n < 0 or indices.ndim != 1 or values.shape != indices.shape:
        raise InputError(f"{what}: indptr, indices and values must be 1-d, with as many values as indices")
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0] or (n and np.any(np.diff(indptr) < 0)):
        raise InputError(f"{what}: indptr must start at 0, never decrease and end at the number of non-zeros")
    if batch.vocab_size < 1:
        raise InputError(f"{what}: vocab_size must be positive, not {batch.vocab_size}")
    if indices.size == 0:
        return

    def row_of(position: int) -> int:
        return int(np.searchsorted(indptr, position, side="right")) - 1

    bad = np.flatnonzero((indices < 0) | (indices >= batch.vocab_size))
    if bad.size:
        raise InputError(
            f"{what}: row {row_of(int(bad[0]))} has term id {int(indices[bad[0]])} outside the vocabulary "
            f"of {batch.vocab_size} terms"
        )
    # Within a row ids must ascend strictly; a step that is not an increase is allowed only at a row start.
    steps = np.flatnonzero(np.diff(indices) <= 0) + 1
    if steps.size:
        row_starts = np.zeros(indices.shape[0], dtype=bool)
        row_starts[indptr[:-1][indptr[:-1] < indices.shape[0]]] = True
        steps = steps[~row_starts[steps]]
        if steps.size:
            raise InputError(f"{what}: row {row_of(int(steps[0]))} has term ids that are repeated or not ascending")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InputError(f"{what}: row {row_of(int(bad[0]))} has a NaN or infinite weight")
    if nonnegative:
        bad = np.flatnonzero(values < 0)
        if bad.size:
            raise InputError(
                f"{what}: row {row_of(int(bad[0]))} has a negative weight ({float(values[bad[0]])}); "
                "learned sparse weights are >= 0"
            )


def check_same_vocabulary(queries: SparseBatch, vocab_size: int, *, against: str = "the documents") -> None:
    """Raise :class:`InputError` if ``queries`` are over another vocabulary than ``vocab_size`` terms."""
    if queries.vocab_size != vocab_size:
        raise InputError(
            f"the queries are over a vocabulary of {queries.vocab_size} terms but {against} over {vocab_size}; "
            "encode both with the same model"
        )


def sparse_dot(queries: SparseBatch, docs: SparseBatch) -> np.ndarray:
    """Dot products of every query with every document.

    ``queries``: Q sparse vectors, ``docs``: N sparse vectors, over the same vocabulary.
    Returns a dense float32 array of shape (Q, N).
    """
    if not isinstance(queries, SparseBatch) or not isinstance(docs, SparseBatch):
        raise InputError("sparse_dot takes two SparseBatch objects")
    check_same_vocabulary(queries, docs.vocab_size)
    if len(queries) == 0 or len(docs) == 0:
        return np.zeros((len(queries), len(docs)), dtype=np.float32)
    product = queries.to_scipy() @ docs.to_scipy().T
    return np.asarray(product.toarray(), dtype=np.float32)


__all__ = ["check_sparse_batch", "check_same_vocabulary", "sparse_dot"]
