"""Group commit: the adds and upserts that reach one index at the same time are committed together.

Every change of a retriever is one commit (a new generation, fsynced), so one writer committing requests one by one
makes concurrent adders queue: at 16 clients a one-document add waited seconds behind the others. Here a writer
thread per index takes every add or upsert waiting in its queue (up to ``max_documents``), checks each request on
its own (an add whose id already exists fails alone, with 409), and commits the rest in one
:meth:`~latelex.search.retriever.Retriever.add` or ``upsert``. Each request is answered only after the commit that
holds it, so an answered add is durable and all of a request's documents become visible at once. Deletes are
committed one request at a time, in queue order with the adds around them. Requests whose ids meet in one group
(two adds of one id) are committed in separate groups, in arrival order.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import DuplicateIdError

logger = logging.getLogger(__name__)

__all__ = ["GroupWriter"]

_STOP = object()  # queued by close(): stop once everything before it is committed


@dataclass
class _Write:
    op: str  # "add", "upsert" or "delete"
    docs: list = field(default_factory=list)  # Documents (add, upsert)
    ids: list = field(default_factory=list)  # ids (delete)
    future: Future = field(default_factory=Future)


class GroupWriter:
    """The one writer of one retriever. :meth:`submit` blocks until the request is committed (or refused) and
    returns its :class:`~latelex.search.retriever.ChangeResult`; ``stats`` counts requests and commits."""

    def __init__(self, retriever: Any, *, max_documents: int = 1000) -> None:
        self.retriever = retriever
        self.max_documents = max(1, int(max_documents))
        self.stats = {"requests": 0, "commits": 0}
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._held: _Write | None = None

    def start(self) -> "GroupWriter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="latelex-group-writer", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def submit(self, op: str, docs: list | None = None, ids: list | None = None) -> Any:
        write = _Write(op, list(docs or ()), list(ids or ()))
        if self._thread is None:  # not started (a library caller): commit in the caller's thread
            self.stats["requests"] += 1
            self._commit([write])
            return write.future.result()
        self._queue.put(write)
        return write.future.result()

    # ------------------------------------------------------------------ worker

    def _next(self, block: bool) -> Any:
        """The next queued item (a write or ``_STOP``), or ``None`` when nothing waits and ``block`` is false."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        try:
            return self._queue.get(block=block)
        except queue.Empty:
            return None

    def _run(self) -> None:
        while True:
            first = self._next(block=True)
            if first is _STOP:
                return
            group = [first]
            if first.op != "delete":
                ids = {d.id for d in first.docs}
                count = len(first.docs)
                while True:
                    item = self._next(block=False)
                    if item is None:
                        break
                    if item is _STOP or item.op != first.op or count + len(item.docs) > self.max_documents \
                            or any(d.id in ids for d in item.docs):
                        self._held = item  # the head of the next group (or the stop, after this group)
                        break
                    group.append(item)
                    ids.update(d.id for d in item.docs)
                    count += len(item.docs)
            self.stats["requests"] += len(group)
            self._commit(group)

    def _commit(self, group: list[_Write]) -> None:
        from ..search.retriever import ChangeResult

        op = group[0].op
        r = self.retriever
        try:
            if op == "delete":
                self.stats["commits"] += 1
                group[0].future.set_result(r.delete(group[0].ids))
                return
            ready: list[tuple[_Write, int]] = []
            for w in group:
                present = [d.id for d in w.docs if d.id in r]
                if op == "add" and present:
                    more = f" (and {len(present) - 1} more)" if len(present) > 1 else ""
                    w.future.set_exception(DuplicateIdError(
                        f"document {present[0]!r} is already in the index{more}; use upsert to replace documents"))
                else:
                    ready.append((w, len(present)))
            if not ready:
                return
            docs = [d for w, _ in ready for d in w.docs]
            try:
                self.stats["commits"] += 1
                (r.upsert if op == "upsert" else r.add)(docs)
            except Exception:
                if len(ready) == 1:
                    raise
                logger.info("a grouped commit of %d requests failed; committing them one by one", len(ready))
                for w, _ in ready:
                    self._commit([w])
                return
            for w, replaced in ready:
                w.future.set_result(ChangeResult(added=len(w.docs), replaced=replaced))
        except BaseException as exc:  # the request(s) learn of the failure; the writer lives on
            for w in group:
                if not w.future.done():
                    w.future.set_exception(exc)
