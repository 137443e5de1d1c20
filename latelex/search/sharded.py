"""A sharded index: N ordinary retriever directories searched as one, with one encoder, usable without Ray.

:class:`ShardedRetriever` has the :class:`~latelex.search.retriever.Retriever`'s API (build, open, search, add,
upsert, delete, compact, explain, get, info, refresh). Each document lives in one shard (its hash shard, or the
shard a given partition put it in; :mod:`latelex.search.shard_manifest`). A search encodes its queries once, in
this process, sends them encoded to every shard in parallel threads, and merges each query's hits by score
(ties: lower shard, then the shard's own order). For the exact kinds (flat, sparse, inverted in exact mode, bm25)
the merged top k is the top k one index over the whole collection gives, scores included: flat, sparse and
inverted scores belong to a document alone, and the shards of a BM25 index score with the whole collection's
statistics (document count, average length, document frequencies; :class:`~latelex.index.bm25.CollectionStatistics`),
which every change recomputes, rewriting every shard (BM25 changes rewrite the index anyway: no model runs).

Shards are reached only through a :class:`~latelex.search.shard_handle.ShardHandle` (``read`` / ``write`` /
``close``), so another backend can serve them (``shard_opener``; Ray actors in :mod:`latelex.distributed`);
by default each is a :class:`~latelex.search.shard_handle.LocalShard` in this process.

:func:`open_any` opens a plain or a sharded index, whichever ``path`` holds (the CLI verbs use it).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import DuplicateIdError, InputError
from ..index import registry
from ..index.commit import WriterLock
from ..types import Document, Hit
from . import engines
from . import shard_manifest as layout
from .documents import as_documents, as_ids
from .retriever import (INDEX_KINDS, ChangeResult, Retriever, check_search, check_subset_known,
                        require_query_encoder)
from .shard_build import build_shards
from .shard_handle import READ_METHODS, WRITE_METHODS, LocalShard, ShardHandle, ShardOpener, ShardPool

__all__ = ["ShardedRetriever", "ShardHandle", "LocalShard", "ShardOpener", "READ_METHODS", "WRITE_METHODS",
           "open_any", "inspect_any", "is_sharded"]

is_sharded = layout.is_sharded


class ShardedRetriever:
    """Encoder + N shard retrievers, searched and changed as one index. Build with :meth:`build`, reopen with
    :meth:`open`; the rest mirrors :class:`~latelex.search.retriever.Retriever`. Thread-safe as a Retriever is:
    searches run in parallel, one change at a time (per directory, across processes)."""

    def __init__(self, path: Path, manifest: dict[str, Any], encoder: Any, shards: Sequence[ShardHandle] = (),
                 max_workers: int | None = None) -> None:
        self.path = path
        self.encoder = encoder
        self._manifest = manifest
        self._shards = list(shards)
        self._pool = ShardPool(max_workers, manifest["shards"])  # its threads start on first use
        self._map = self._pool.map
        self._write_lock = threading.RLock()
        self._encoder_lock = threading.Lock()  # shared with the LocalShards: one encoder call at a time

    # ------------------------------------------------------------------ build / open

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        encoder: Any,
        collection: Iterable[Any],
        *,
        shards: int,
        partition: str | Mapping[str, int] = "hash",
        kind: str | None = None,
        overwrite: bool = False,
        store_text: bool = True,
        batch_size: int = 32,
        show_progress: bool | None = None,
        engine_config: Any = None,
        chunking: Any = None,
        metadata: Mapping[str, dict] | None = None,
        pool_factor: int = 1,
        shard_opener: ShardOpener | None = None,
        max_workers: int | None = None,
    ) -> "ShardedRetriever":
        """Split ``collection`` into ``shards`` parts and build each as a Retriever of ``kind`` in ``path/shard-NNN``
        (the other arguments as :meth:`Retriever.build <latelex.search.retriever.Retriever.build>` takes them);
        returns the open sharded retriever (``shard_opener``, ``max_workers``: as :meth:`open`).

        ``partition``: ``"hash"`` (each document in shard blake2b-64(id) mod ``shards``) or ``{id: shard number}``
        for every document (later documents go to the shard holding their id, else their hash shard). Every shard
        must receive a document. A bm25 index's shards are scored with the whole collection's statistics. The whole
        directory is built beside ``path`` and moved into place when complete: a failed build leaves nothing (or
        the index that was there); an existing index, plain or sharded, is replaced only with ``overwrite``.
        """
        count = layout.check_shard_count(shards)
        given = layout.check_partition(partition, count)
        ShardPool(max_workers, count)  # checks max_workers before any work (starts no thread)
        docs = as_documents(collection, metadata)
        if not docs:
            raise InputError("the collection is empty; give at least one document")
        family = engines.encoder_family(encoder)
        kind = kind or registry.default_kind(family)
        spec = registry.kind(kind)
        if spec.family != family:
            what = "no encoder" if family == "text" else f"a {family} encoder"
            raise InputError(f"{what} cannot build a {kind!r} index; use one of {', '.join(INDEX_KINDS[family])}")
        final = Path(path).expanduser().resolve()
        build_shards(final, encoder, docs, shards=count, given=given, spec=spec, overwrite=overwrite,
                     store_text=store_text, batch_size=batch_size, show_progress=show_progress,
                     engine_config=engine_config, chunking=chunking, pool_factor=pool_factor)
        return cls.open(final, encoder=encoder, shard_opener=shard_opener, max_workers=max_workers)

    @classmethod
    def open(cls, path: str | os.PathLike, *, encoder: Any = None, shard_opener: ShardOpener | None = None,
             allow_network: bool = False, max_workers: int | None = None, device: Any = None,
             load_encoder: bool = True) -> "ShardedRetriever":
        """Open the sharded index at ``path``: every shard is checked (present, of this build, built with the
        recorded encoder) and opened with ``shard_opener(number, path, encoder)`` (default: a
        :class:`~latelex.search.shard_handle.LocalShard`), in parallel. The encoder is loaded once, from the
        manifest (local files only unless ``allow_network``) unless given, and shared by every shard; with
        ``load_encoder=False`` none is (enough to read, delete and change a BM25 index). ``max_workers``: threads
        that reach the shards (default: one per shard, at most 32)."""
        path = Path(path).expanduser().resolve()
        manifest = layout.read_shards_manifest(path)
        directories = layout.check_shards(path, manifest)
        spec = manifest.get("encoder")
        if encoder is None and spec is not None and load_encoder:
            from ..encoders import encoder_from_spec

            encoder = encoder_from_spec(spec, device=device, allow_network=allow_network)
        elif encoder is not None and (spec or {}).get("family") != encoder.spec()["family"]:
            raise InputError(f"{path} was built with a {(spec or {}).get('family', 'text (BM25)')} encoder, "
                             f"not {encoder.spec()['family']}")
        self = cls(path, manifest, encoder, (), max_workers)  # checks max_workers
        if shard_opener is None:
            lock = self._encoder_lock

            def shard_opener(number: int, directory: Path, enc: Any) -> ShardHandle:
                return LocalShard.open(number, directory, enc, encoder_lock=lock)

        opened = self._pool.gather(lambda n: shard_opener(n, directories[n], encoder), range(len(directories)))
        failed = [exc for _, exc in opened if exc is not None]
        if failed:
            for handle, exc in opened:
                if exc is None:
                    handle.close()
            self._pool.shutdown()
            raise failed[0]
        self._shards = [handle for handle, _ in opened]
        return self

    @staticmethod
    def inspect(path: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
        """What ``latelex info`` prints of a sharded index, read without loading the encoder; ``verify`` checks
        every checksum of every shard."""
        path = Path(path).expanduser().resolve()
        manifest = layout.read_shards_manifest(path)
        infos = [Retriever.inspect(d, verify=verify) for d in layout.check_shards(path, manifest)]
        return layout.describe(path, manifest, infos)

    def info(self) -> dict[str, Any]:
        """Totals (documents, segments, tombstones, bytes) and each shard's own info (``shard_info``)."""
        return layout.describe(self.path, self._manifest, self._map(lambda s: s.read("info"), self._shards))

    def refresh(self) -> bool:
        """Move every shard to its newest committed generation; returns whether any moved."""
        return any(self._map(lambda s: s.read("refresh"), self._shards))

    def close(self) -> None:
        """Close every shard and the threads (the object is unusable afterwards)."""
        shards, self._shards = self._shards, []
        try:
            for shard in shards:
                shard.close()
        finally:
            self._pool.shutdown()

    def __enter__(self) -> "ShardedRetriever":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def manifest(self) -> dict[str, Any]:
        """The contents of ``shards.json``."""
        return self._manifest

    @property
    def kind(self) -> str:
        return self._manifest["kind"]

    @property
    def spec(self) -> registry.KindSpec:
        return registry.kind(self.kind)

    @property
    def shards(self) -> tuple[ShardHandle, ...]:
        return tuple(self._shards)

    @property
    def partition(self) -> str:
        """``"hash"`` or ``"given"`` (see :meth:`build`)."""
        return self._manifest["partition"]["scheme"]

    @property
    def has_texts(self) -> bool:
        return bool(self._manifest.get("store_text", True))

    def __len__(self) -> int:
        return sum(self._map(lambda s: s.read("__len__"), self._shards))

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and doc_id in self._holders([doc_id])

    @property
    def doc_ids(self) -> list[str]:
        """The live document ids, shard by shard, each shard's in insertion order."""
        return [d for ids in self._map(lambda s: s.read("doc_ids"), self._shards) for d in ids]

    def get(self, doc_id: str) -> Document:
        """The document ``doc_id`` with its text and metadata (from the shard that holds it)."""
        return self._shards[self._holder(doc_id)].read("get", doc_id)

    def document(self, doc_id: str) -> str:
        """The stored text of ``doc_id``."""
        return self._shards[self._holder(doc_id)].read("document", doc_id)

    def owner(self, doc_id: str) -> int:
        """The shard a new document with this id goes to: the one holding the id, else its hash shard."""
        return self._holders([doc_id]).get(doc_id, layout.hash_shard(doc_id, len(self._shards)))

    def __repr__(self) -> str:
        return (f"ShardedRetriever(path={str(self.path)!r}, shards={len(self._shards)}, index={self.kind}, "
                f"encoder={self.encoder!r})")

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        where: Any = None,
        subset: Sequence[str] | None = None,
        with_text: bool = True,
        passages: bool = False,
        batch_size: int = 64,
        show_progress: bool | None = None,
        encoded: Any = None,
        **engine_options: Any,
    ) -> Any:
        """:meth:`Retriever.search <latelex.search.retriever.Retriever.search>` over every shard: the queries are
        encoded once (unless ``encoded``), searched by every shard in parallel (``where`` by each; ``subset`` split
        by the shard holding each id), and each query's hits merged by score into its top ``k``."""
        single, texts = check_search(queries, k, self.spec, engine_options)
        if not texts:
            return []
        parts = self._split_subset(subset)
        targets = [n for n in range(len(self._shards)) if parts is None or parts[n]]
        if not targets:
            found: list[list[Hit]] = [[] for _ in texts]
        else:
            if encoded is None:
                encoded = self.encode_queries(texts, batch_size=batch_size, show_progress=show_progress)
            elif engines.encoded_count(encoded) != len(texts):
                raise InputError(f"encoded holds {engines.encoded_count(encoded)} queries for {len(texts)} texts")

            def one(n: int) -> list[list[Hit]]:
                return self._shards[n].read("search", texts, k, where=where,
                                            subset=None if parts is None else parts[n], with_text=with_text,
                                            passages=passages, batch_size=batch_size, show_progress=False,
                                            encoded=encoded, **engine_options)

            found = _merge(list(zip(targets, self._map(one, targets))), len(texts), k)
        return found[0] if single else found

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None) -> Any:
        """``texts`` encoded once with the shared encoder, as :meth:`search` takes them in ``encoded``."""
        require_query_encoder(self.encoder, self.spec, self.path)
        with self._encoder_lock:
            return engines.encode_queries(self.encoder, list(texts), batch_size=batch_size,
                                          show_progress=show_progress)

    #: ``{qid: text}`` (or pairs) searched as one batch, returned as a run: the Retriever's verb over :meth:`search`
    search_queries = Retriever.search_queries

    def explain(self, query: str, doc_id: str) -> Any:
        """:meth:`Retriever.explain <latelex.search.retriever.Retriever.explain>`, by the shard holding ``doc_id``."""
        return self._shards[self._holder(doc_id)].read("explain", query, doc_id)

    def explain_many(self, query: str, doc_ids: Sequence[str]) -> list[Any]:
        """:meth:`explain` for each of ``doc_ids``, in order (each shard explains its own, in parallel)."""
        if isinstance(doc_ids, str):
            raise InputError("doc_ids must be a list of document ids, not a single string")
        ids = list(doc_ids)
        holders = self._holders(as_ids(ids))
        missing = [d for d in ids if d not in holders]
        if missing:
            raise InputError(f"no document {missing[0]!r} in {self.path}")
        groups: dict[int, list[str]] = {}
        for d in dict.fromkeys(ids):
            groups.setdefault(holders[d], []).append(d)

        def one(n: int) -> dict[str, Any]:
            return dict(zip(groups[n], self._shards[n].read("explain_many", query, groups[n])))

        found: dict[str, Any] = {}
        for part in self._map(one, sorted(groups)):
            found.update(part)
        return [found[d] for d in ids]

    # ------------------------------------------------------------------ changes

    def add(self, docs: Iterable[Any], *, metadata: Mapping[str, dict] | None = None, batch_size: int = 32,
            show_progress: bool | None = None) -> ChangeResult:
        """Add documents, each to its shard (the hash shard; with a given partition, the hash shard too, since a
        new id is in none). An id already in any shard is a :class:`DuplicateIdError` and nothing is added.

        A change spanning shards commits shard by shard, in parallel: each shard's part is atomic, the whole is not
        (a crash part way leaves some shards changed). For bm25 every shard is rewritten with the new collection
        statistics; after a failure part way, :meth:`compact` makes them agree again."""
        return self._change(as_documents(docs, metadata), (), replace=False, batch_size=batch_size,
                            show_progress=show_progress)

    def upsert(self, docs: Iterable[Any], *, metadata: Mapping[str, dict] | None = None, batch_size: int = 32,
               show_progress: bool | None = None) -> ChangeResult:
        """Add documents, replacing those whose id is already in a shard (in that shard); shard by shard, as
        :meth:`add`."""
        return self._change(as_documents(docs, metadata), (), replace=True, batch_size=batch_size,
                            show_progress=show_progress)

    def delete(self, doc_ids: Iterable[str]) -> ChangeResult:
        """Delete documents by id from the shards holding them; ids in no shard are counted in ``not_found``.
        Shard by shard, as :meth:`add`."""
        return self._change([], as_ids(doc_ids), replace=False)

    def compact(self, *, batch_size: int = 32, show_progress: bool | None = None) -> "ShardedRetriever":
        """Compact every shard (see :meth:`Retriever.compact <latelex.search.retriever.Retriever.compact>`), in
        parallel, each atomically; a bm25 index is rewritten with statistics recomputed from every shard."""
        with self._write_lock, WriterLock(self.path):
            extra = {}
            if self.spec.updates == "rewrite":
                parts = self._map(lambda s: s.read("collection_statistics"), self._shards)
                extra["statistics"] = _total(parts)
            self._map(lambda s: s.write("compact", batch_size=batch_size, show_progress=show_progress, **extra),
                      self._shards)
        return self

    rebuild = compact

    def _change(self, new: list[Document], delete_ids: Sequence[str], *, replace: bool, batch_size: int = 32,
                show_progress: bool | None = None) -> ChangeResult:
        if not new and not delete_ids:
            return ChangeResult()
        with self._write_lock, WriterLock(self.path):
            holders = self._holders([d.id for d in new] + list(delete_ids))
            if new and not replace:
                clash = [d.id for d in new if d.id in holders]
                if clash:
                    raise DuplicateIdError(f"document {clash[0]!r} is already in {self.path}"
                                           f"{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}; "
                                           f"use upsert to replace documents")
            count = len(self._shards)
            adds: dict[int, list[Document]] = {}
            for d in new:
                adds.setdefault(holders.get(d.id, layout.hash_shard(d.id, count)), []).append(d)
            deletes: dict[int, list[str]] = {}
            for d in delete_ids:
                if d in holders:
                    deletes.setdefault(holders[d], []).append(d)
            not_found = tuple(d for d in delete_ids if d not in holders)
            touched = sorted(set(adds) | set(deletes))
            if not touched:
                return ChangeResult(0, 0, not_found)
            extra: dict[str, Any] = {}
            targets = touched
            if self.spec.updates == "rewrite":  # bm25: new statistics, so every shard is rewritten
                extra["statistics"] = self._statistics_after(adds, deletes, replace)
                targets = list(range(count))

            def one(n: int) -> Any:
                shard = self._shards[n]
                if n in adds:
                    return shard.write("upsert" if replace else "add", adds[n], batch_size=batch_size,
                                       show_progress=show_progress, **extra)
                if n in deletes:
                    return shard.write("delete", deletes[n], **extra)
                return shard.write("compact", batch_size=batch_size, show_progress=show_progress, **extra)

            results = [r for r in self._map(one, targets) if isinstance(r, ChangeResult)]
            lost = tuple(d for r in results for d in r.not_found)  # deleted meanwhile by a writer of one shard
            return ChangeResult(sum(r.added for r in results), sum(r.deleted for r in results), not_found + lost,
                                sum(r.replaced for r in results))

    def _statistics_after(self, adds: dict[int, list[Document]], deletes: dict[int, list[str]], replace: bool) -> Any:
        """The BM25 collection statistics the shards will hold after a change: each shard's, less the documents it
        deletes or replaces, with the texts it adds, summed."""
        def one(n: int) -> Any:
            new = adds.get(n, [])
            gone = deletes.get(n, []) + ([d.id for d in new] if replace else [])
            return self._shards[n].read("collection_statistics", exclude=gone, extra=[d.text for d in new])

        parts = self._map(one, range(len(self._shards)))
        empty = [n for n, p in enumerate(parts) if p.documents == 0]
        if empty:
            raise InputError(f"this change would leave shard {empty[0]} of {self.path} empty, which a sharded bm25 "
                             f"index cannot score; keep a document there or rebuild with fewer shards")
        return _total(parts)

    # ------------------------------------------------------------------ where documents are

    def _holders(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """``{id: shard}`` for those of ``doc_ids`` in a shard: asked of their hash shard (hash partition) or of
        every shard (given partition)."""
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return {}
        count = len(self._shards)
        if self.partition == "hash":
            asks: dict[int, list[str]] = {}
            for d in ids:
                asks.setdefault(layout.hash_shard(d, count), []).append(d)
        else:
            asks = {n: ids for n in range(count)}
        numbers = sorted(asks)
        found = self._map(lambda n: self._shards[n].read("present", asks[n]), numbers)
        holders: dict[str, int] = {}
        for n, present in zip(numbers, found):
            for d in present:
                holders.setdefault(d, n)
        return holders

    def _holder(self, doc_id: str) -> int:
        if not isinstance(doc_id, str):
            raise InputError(f"a document id is a string, not {type(doc_id).__name__}")
        number = self._holders([doc_id]).get(doc_id)
        if number is None:
            raise InputError(f"no document {doc_id!r} in {self.path}")
        return number

    def _split_subset(self, subset: Sequence[str] | None) -> list[list[str]] | None:
        """``subset`` split by the shard holding each id (None: no subset); an id in no shard is an error."""
        if subset is None:
            return None
        if isinstance(subset, str):
            raise InputError("subset must be a list of document ids, not a single string")
        wanted = list(dict.fromkeys(subset))
        holders = self._holders(as_ids(wanted))
        check_subset_known(wanted, holders)
        parts: list[list[str]] = [[] for _ in self._shards]
        for d in wanted:
            parts[holders[d]].append(d)
        return parts


# ---------------------------------------------------------------------- helpers


def open_any(path: str | os.PathLike, *, encoder: Any = None, device: Any = None, allow_network: bool = False,
             load_encoder: bool = True, **sharded: Any) -> Retriever | ShardedRetriever:
    """The index at ``path``: a :class:`ShardedRetriever` where it holds ``shards.json``, else a :class:`Retriever`
    (``sharded``: :meth:`ShardedRetriever.open`'s own options, ``shard_opener`` and ``max_workers``)."""
    if layout.is_sharded(path):
        return ShardedRetriever.open(path, encoder=encoder, device=device, allow_network=allow_network,
                                     load_encoder=load_encoder, **sharded)
    return Retriever.open(path, encoder=encoder, device=device, allow_network=allow_network, load_encoder=load_encoder)


def inspect_any(path: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
    """``inspect`` of the plain or sharded index at ``path`` (what ``latelex info`` prints)."""
    if layout.is_sharded(path):
        return ShardedRetriever.inspect(path, verify=verify)
    return Retriever.inspect(path, verify=verify)


def _merge(results: list[tuple[int, list[list[Hit]]]], queries: int, k: int) -> list[list[Hit]]:
    """Each query's hits from every shard, best first (ties: lower shard, then the shard's order), cut at ``k``."""
    rows: list[list[tuple[float, int, int, Hit]]] = [[] for _ in range(queries)]
    for number, found in results:
        for qi, hits in enumerate(found):
            rows[qi].extend((-h.score, number, rank, h) for rank, h in enumerate(hits))
    return [[item[3] for item in sorted(row, key=lambda r: r[:3])][:k] for row in rows]


def _total(parts: list[Any]) -> Any:
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
