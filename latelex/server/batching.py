"""Dynamic micro-batching of query encoding: concurrent requests' queries are encoded together.

Encoding dominates a search at SciFact scale, and a transformer encodes 16 queries in little more time than one;
so a request's queries wait at most ``wait_ms`` for others that use the same encoder, then one worker thread
encodes the whole batch and hands each request its part. Searching itself stays in the request's own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

__all__ = ["QueryBatcher"]

#: ``encode(texts) -> encoded`` and ``split(encoded, sizes) -> parts`` for one encoder.
Encode = Callable[[list[str]], Any]
Split = Callable[[Any, Sequence[int]], list[Any]]


@dataclass
class _Request:
    key: int
    texts: list[str]
    encode: Encode
    split: Split
    future: Future = field(default_factory=Future)


class QueryBatcher:
    """Encodes queries for many threads in shared batches. Start with :meth:`start`, stop with :meth:`close`.

    ``wait_ms``: how long the first request of a batch waits for others; ``max_queries``: queries per batch (a
    request larger than that is encoded alone). Requests for different encoders (``key``) never share a batch.
    ``stats`` counts batches and queries, so a test or a bench can see that batching happened.
    """

    def __init__(self, *, wait_ms: float = 2.0, max_queries: int = 32) -> None:
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_queries = max(1, int(max_queries))
        self.stats = {"batches": 0, "queries": 0, "largest": 0}
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pending: list[_Request] = []

    def start(self) -> "QueryBatcher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="latelex-query-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Finish what is queued, then stop the worker thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def encode(self, key: int, texts: Sequence[str], encode: Encode, split: Split, timeout: float | None = None) -> Any:
        """``texts`` encoded (in the form ``encode`` returns), possibly together with other threads' queries."""
        if self._thread is None:
            return encode(list(texts))
        request = _Request(key, list(texts), encode, split)
        self._queue.put(request)
        return request.future.result(timeout=timeout)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        stop = False
        while not stop or self._pending:
            if not self._pending:
                item = self._queue.get()
                if item is None:
                    stop = True
                    continue
                self._pending.append(item)
            first = self._pending[0]
            batch = [r for r in self._pending if r.key == first.key]
            deadline = time.monotonic() + self.wait_s
            while not stop and sum(len(r.texts) for r in batch) < self.max_queries:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                self._pending.append(item)
                if item.key == first.key:
                    batch.append(item)
            chosen, count = [], 0
            for r in batch:
                if chosen and count + len(r.texts) > self.max_queries:
                    break
                chosen.append(r)
                count += len(r.texts)
            for r in chosen:
                self._pending.remove(r)
            self._encode(chosen)

    def _encode(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        try:
            encoded = batch[0].encode(texts)
            parts = batch[0].split(encoded, [len(r.texts) for r in batch]) if len(batch) > 1 else [encoded]
        except BaseException as exc:  # every waiting request learns of the failure
            for r in batch:
                r.future.set_exception(exc)
            return
        self.stats["batches"] += 1
        self.stats["queries"] += len(texts)
        self.stats["largest"] = max(self.stats["largest"], len(texts))
        for r, part in zip(batch, parts):
            r.future.set_result(part)
