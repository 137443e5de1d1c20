"""How a :class:`~latelex.search.sharded.ShardedRetriever` talks to its shards: the :class:`ShardHandle` protocol,
:class:`LocalShard` (the handle of a shard opened in this process) and :class:`ShardPool` (the threads that call
every shard at once).

Every call a sharded retriever makes to a shard is ``read(method, *args, **kwargs)`` or ``write(method, ...)``: the
named method of that shard's :class:`~latelex.search.retriever.Retriever`, with plain arguments and a plain,
picklable result (hits, documents, explanations, ``ChangeResult``, dicts, numbers). So another backend (Ray actors,
:mod:`latelex.distributed`) serves shards by implementing the same three methods; it receives queries already
encoded (``search(..., encoded=...)``), so only writes and explanations need a model where the shard lives.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from ..errors import InputError
from .retriever import Retriever

#: The Retriever methods (and properties: ``doc_ids``) a shard answers through ``read``.
READ_METHODS = frozenset({
    "search", "search_queries", "encode_queries", "get", "document", "explain", "explain_many", "info", "doc_ids",
    "__len__", "__contains__", "refresh", "present", "collection_statistics",
})
#: The Retriever methods a shard runs through ``write``: each commits atomically within the shard.
WRITE_METHODS = frozenset({"add", "upsert", "delete", "compact"})
#: Methods that run the shard's encoder (a search that is given ``encoded`` queries runs none).
MODEL_METHODS = frozenset({"encode_queries", "search_queries", "explain", "explain_many", "add", "upsert", "compact"})


@runtime_checkable
class ShardHandle(Protocol):
    """One shard as a sharded retriever sees it.

    ``number``: its position (0-based) among the shards; ``path``: its retriever directory. ``read(method, /,
    *args, **kwargs)`` calls one of :data:`READ_METHODS` of the shard's Retriever and returns the result (for a
    property, ``doc_ids``, its value); ``write(method, /, *args, **kwargs)`` calls one of :data:`WRITE_METHODS` and
    returns its result (``compact``'s is not used: it may be ``None``); ``close()`` releases the shard.
    """

    number: int
    path: Path

    def read(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def write(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


#: ``shard_opener(number, path, encoder) -> ShardHandle``: how a sharded retriever opens its shards.
ShardOpener = Callable[[int, Path, Any], ShardHandle]


class LocalShard:
    """A shard served by a :class:`Retriever` in this process. The shards of one sharded retriever share its
    encoder object; ``encoder_lock`` (shared by them) lets one call at a time run it (a Hugging Face fast tokenizer
    must not be used by two threads at once), while searches of encoded queries run in parallel."""

    def __init__(self, number: int, path: Path, retriever: Retriever,
                 encoder_lock: threading.Lock | None = None) -> None:
        self.number = number
        self.path = path
        self.retriever = retriever
        self._encoder_lock = encoder_lock

    @classmethod
    def open(cls, number: int, path: str | Path, encoder: Any, *,
             encoder_lock: threading.Lock | None = None) -> "LocalShard":
        """Open the retriever at ``path`` with ``encoder`` (``None``: without a model, as for BM25)."""
        path = Path(path)
        return cls(number, path, Retriever.open(path, encoder=encoder, load_encoder=False), encoder_lock)

    def read(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        if method not in READ_METHODS:
            raise InputError(f"a shard does not read with {method!r}; use one of {', '.join(sorted(READ_METHODS))}")
        uses_model = method in MODEL_METHODS or (method == "search" and kwargs.get("encoded") is None)
        with self._model(uses_model):
            value = getattr(self.retriever, method)
            return value(*args, **kwargs) if callable(value) else value

    def write(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        if method not in WRITE_METHODS:
            raise InputError(f"a shard does not write with {method!r}; use one of {', '.join(sorted(WRITE_METHODS))}")
        with self._model(method in MODEL_METHODS):
            result = getattr(self.retriever, method)(*args, **kwargs)
        return None if result is self.retriever else result

    def close(self) -> None:
        self.retriever.close()

    def _model(self, uses_model: bool) -> Any:
        if uses_model and self._encoder_lock is not None and self.retriever.encoder is not None:
            return self._encoder_lock
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"LocalShard({self.number}, {str(self.path)!r})"


class ShardPool:
    """The threads a sharded retriever calls its shards with: a ``ThreadPoolExecutor`` of ``max_workers`` threads
    (default ``default_workers``), made on first use and ended by :meth:`shutdown`."""

    def __init__(self, max_workers: int | None, default_workers: int) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                        or max_workers < 1):
            raise InputError(f"max_workers must be a positive integer or None, not {max_workers!r}")
        self.max_workers = max_workers or max(1, min(32, default_workers))
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def gather(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[tuple[Any, BaseException | None]]:
        """``(fn(item), None)`` or ``(None, error)`` for every item, called in parallel; every call has ended when
        this returns (so no change is still running when an error is reported)."""
        items = list(items)
        if len(items) <= 1 or self.max_workers == 1:
            out: list[tuple[Any, BaseException | None]] = []
            for item in items:
                try:
                    out.append((fn(item), None))
                except Exception as exc:  # reported by map, after the others ran, as in parallel
                    out.append((None, exc))
            return out
        futures = [self._pool().submit(fn, item) for item in items]
        wait(futures)
        return [(None, f.exception()) if f.exception() is not None else (f.result(), None) for f in futures]

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) ...]`` called in parallel; the first error (in item order) is raised once every call ended."""
        out = []
        for value, exc in self.gather(fn, items):
            if exc is not None:
                raise exc
            out.append(value)
        return out

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="latelex-shard")
            return self._executor
