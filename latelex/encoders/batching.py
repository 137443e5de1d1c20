"""Length-sorted batching with dynamic padding, and the progress reporting every encoder shares.

Progress: an encoder draws its own tqdm bar (:func:`progress`) unless its caller reports progress itself. A caller
that runs several encoder calls as one stage (the Retriever encoding a collection in slices) opens one bar with
:func:`progress` and hands ``bar.update`` to each call as ``on_batch``: the encoder then calls it after every
batch with the number of texts that batch held, and draws no bar of its own unless asked to.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np

#: Show a progress bar by default when there are at least this many texts.
PROGRESS_MIN_TEXTS = 1000

#: A progress hook: called after each encoded batch with the number of texts in that batch.
BatchCallback = Callable[[int], None]


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


def progress(total: int, desc: str, show: bool | None, *, unit: str = "text"):
    """A tqdm bar over ``total`` items, shown when ``show`` is true, or by default (None) for long runs.

    With ``show=False`` the bar is disabled and writes nothing at all.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not bar_shown(total, show), leave=False)


def bar_shown(total: int, show: bool | None) -> bool:
    """Whether a progress bar over ``total`` items is drawn: ``show``, or by default (None) for long runs."""
    return total >= PROGRESS_MIN_TEXTS if show is None else bool(show)


@contextmanager
def batch_progress(
    total: int, desc: str, show: bool | None, on_batch: BatchCallback | None = None
) -> Iterator[BatchCallback]:
    """Yield ``advance(n)``, which an encoding loop calls after each batch of ``n`` texts.

    ``advance`` moves the encoder's own bar and calls ``on_batch(n)``. The own bar follows ``show`` as in
    :func:`progress`, except that by default (``show=None``) it is not drawn when an ``on_batch`` hook is given:
    the caller that passes a hook draws the bar.
    """
    if show is None and on_batch is not None:
        show = False
    if not bar_shown(total, show):
        # No bar to draw: skip tqdm altogether (building a disabled bar took 70 us, a tenth of a short query's
        # encoding overhead).
        yield on_batch or _ignore
        return
    with progress(total, desc, show) as bar:
        if on_batch is None:
            yield bar.update
            return

        def advance(n: int) -> None:
            bar.update(n)
            on_batch(n)

        yield advance


def _ignore(n: int) -> None:
    """The progress hook of an encoding call that reports progress to nobody."""
