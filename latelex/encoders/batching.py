"""Length-sorted batching with dynamic padding, shared by every encoder."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

#: Show a progress bar by default when there are at least this many texts.
PROGRESS_MIN_TEXTS = 1000


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
    """Index arrays of batches of ``texts``, longest first, so that each batch pads to a similar length.

    Sorting by character length is a cheap proxy for token length; callers scatter results back by index.
    """
    return batches_by_length([len(t) for t in texts], batch_size)


def batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index arrays of batches, longest ``lengths`` first (stable), so that padding within a batch is minimal."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def progress(total: int, desc: str, show: bool | None):
    """A tqdm bar over ``total`` items, shown when ``show`` is true, or by default for long runs."""
    from tqdm.auto import tqdm

    if show is None:
        show = total >= PROGRESS_MIN_TEXTS
    return tqdm(total=total, desc=desc, unit="text", disable=not show, leave=False)
