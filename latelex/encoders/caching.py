"""An encoder wrapper that encodes each distinct document text once.

Experiments that build several indexes of one corpus (index kinds against each other, an updated index against a
rebuilt one, pooling factors) spend most of their time encoding the same texts again. :class:`CachingEncoder`
delegates everything to the encoder it wraps but remembers each document text's vectors (and, while
``cache_queries`` is set, each query's), so every text is encoded once. An index built through it records the
wrapped encoder's spec: it is the same index a build with the encoder itself gives.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

__all__ = ["CachingEncoder"]


class CachingEncoder:
    """``inner`` with memoised ``encode_documents`` (and ``encode_queries`` while ``cache_queries``).

    ``encoded``: how many document texts were really encoded; ``encode_seconds``: the time that took. Memory grows
    with the distinct texts seen (their vectors are kept as the encoder returned them).
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._docs: dict[str, Any] = {}
        self._queries: dict[str, Any] = {}
        self.cache_queries = False
        self.encode_seconds = 0.0
        self.encoded = 0

    @property
    def inner(self) -> Any:
        """The wrapped encoder."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (copy, unpickling): never recurse through __getattr__
            raise AttributeError(name)
        return getattr(self._inner, name)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool | None = None,
                         on_batch: Callable[[int], Any] | None = None) -> list:
        """The wrapped encoder's ``encode_documents(texts)`` (a list, one entry per text), new texts encoded in one
        call and the rest taken from the cache."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._docs]
        if missing:
            start = time.perf_counter()
            vectors = self._inner.encode_documents(missing, batch_size=batch_size, show_progress=show_progress)
            self.encode_seconds += time.perf_counter() - start
            self.encoded += len(missing)
            self._docs.update(zip(missing, vectors))
        if on_batch is not None:
            on_batch(len(texts))
        return [self._docs[t] for t in texts]

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None) -> Any:
        """The wrapped encoder's ``encode_queries``; memoised per text while ``cache_queries`` is set."""
        if not self.cache_queries:
            return self._inner.encode_queries(texts, batch_size=batch_size, show_progress=show_progress)
        missing = [t for t in dict.fromkeys(texts) if t not in self._queries]
        if missing:
            self._queries.update(zip(missing, self._inner.encode_queries(missing, batch_size=batch_size,
                                                                          show_progress=False)))
        return [self._queries[t] for t in texts]
