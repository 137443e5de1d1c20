"""The object an application holds: an encoder bound to an index and a document store, reopened from a path alone.

A :class:`Retriever` owns the documents: their ids, texts and JSON metadata live in ``documents.sqlite`` beside
the engine, and every change goes through it (:meth:`~Retriever.add`, :meth:`~Retriever.delete`,
:meth:`~Retriever.upsert`, :meth:`~Retriever.compact`), so texts, metadata and vectors never drift apart. Search
takes a ``where`` filter over the metadata (:mod:`latelex.search.filters`) and returns hits with their texts and
metadata; long documents can be split into passages at build time (``chunking``).

Layout of a retriever directory (format 2)::

    manifest.json          kind "retriever": generation G, encoder spec, index kind, segments of G, chunking
    documents.sqlite       documents with the generation that added and deleted each (see docstore.py)
    g00000G/s0 ...         the engines (segments) of generation G, each an ordinary engine directory
    g00000F/ ...           the previous generation, kept until the next commit for readers still on it
    .lock                  the writer lock (fcntl)

**Commit protocol.** A change takes the writer lock, rolls back whatever a crashed writer left, then prepares
generation G + 1 beside G: engines that change are hard-linked into ``g(G+1)`` and changed there (every engine
writes new files and replaces its manifest, never modifying a linked file), new segments are built there, and the
document store receives the new rows marked G + 1 in one transaction. Replacing ``manifest.json`` is the commit
point. A kill -9 before it leaves G whole (the next writer removes the rows and folder of G + 1); after it, G + 1.
Readers never lock: they pin the generation they opened, and :meth:`~Retriever.refresh` (called by every search)
moves them to the newest one.

How each kind is updated (``updates`` in :mod:`latelex.index.registry`): PLAID and the inverted index add and
delete natively; flat, sparse and IVFPQ write a new segment per add (IVFPQ's added segments are flat, so added
documents are searched exactly) and keep deletions as tombstones until :meth:`~Retriever.compact`; BM25 is
rewritten from the stored texts, since its statistics span the collection. A BM25 index can also be scored with
another collection's statistics (``statistics=`` of :meth:`~Retriever.build` and every change, from
:meth:`~Retriever.collection_statistics`): the shards of a sharded index (:mod:`latelex.search.sharded`) are.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Container, Iterable, Mapping, Sequence

from ..config import config_from_dict, config_to_dict, same_encoder
from ..errors import DuplicateIdError, IndexFormatError, InputError, LatelexError
from ..index import registry, storage
from ..index.commit import WriterLock, commit_manifest, fsync_dir, link_tree
from ..index.ids import query_pairs
from ..types import Document, Hit, Run
from . import engines
from .docstore import DB_FILE, DocStore
from .documents import as_documents, as_ids

if TYPE_CHECKING:
    from .explain import Explanation

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
#: Index kinds each encoder family can be served from; the first is the default (derived from the registry).
INDEX_KINDS = {family: tuple(s.name for s in registry.kinds_for(family)) for family in registry.FAMILIES}
_PASSAGE_SEP = "#"
_SAME: Any = object()  # "keep what the manifest says" in Retriever._commit
_OPEN_RETRIES = 5


@dataclass(frozen=True)
class ChangeResult:
    """What a change did: documents ``added`` (``replaced`` of them took the place of a document with their id,
    by :meth:`Retriever.upsert`), ``deleted``, and the ids asked for that were ``not_found``."""

    added: int = 0
    deleted: int = 0
    not_found: tuple[str, ...] = ()
    replaced: int = 0


@dataclass
class _Segment:
    """One engine of a generation: its manifest entry, the open engine and its tombstoned engine ids."""

    entry: dict[str, Any]
    spec: registry.KindSpec
    engine: Any
    tombstones: frozenset[str]
    _live: set[str] | None = field(default=None, repr=False)

    def live_ids(self) -> set[str]:
        if self._live is None:
            self._live = set(self.engine.doc_ids) - self.tombstones
        return self._live

    @property
    def live_count(self) -> int:
        return len(self.engine) - len(self.tombstones)


@dataclass
class _State:
    """A consistent snapshot a search runs against: one generation's manifest and engines."""

    generation: int
    manifest: dict[str, Any]
    segments: list[_Segment]
    stamp: tuple[int, int]
    count: int | None = None


def _generation_dir(generation: int) -> str:
    return f"g{generation:06d}"


def _manifest_stamp(path: Path) -> tuple[int, int]:
    st = (path / storage.MANIFEST).stat()
    return st.st_ino, st.st_mtime_ns


class Retriever:
    """Encoder + index + documents. Build with :meth:`build`, reopen with :meth:`open`, query with :meth:`search`,
    change with :meth:`add` / :meth:`delete` / :meth:`upsert`. Thread-safe: searches run on a snapshot while one
    writer at a time (per directory, across processes) commits."""

    def __init__(self, path: Path, encoder: Any, store: DocStore, state: _State) -> None:
        self.path = path
        self.encoder = encoder
        self.store = store
        self._state = state
        self._write_lock = threading.RLock()
        self._truncation_warned = False

    # ------------------------------------------------------------------ build / open

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        encoder: Any,
        collection: Iterable[Any],
        *,
        kind: str | None = None,
        overwrite: bool = False,
        store_text: bool = True,
        batch_size: int = 32,
        show_progress: bool | None = None,
        engine_config: Any = None,
        chunking: Any = None,
        metadata: Mapping[str, dict] | None = None,
        pool_factor: int = 1,
        statistics: Any = None,
    ) -> "Retriever":
        """Encode ``collection`` and build an index of ``kind`` at ``path``; returns the open retriever.

        ``collection``: texts (ids generated), ``(id, text)`` or ``(id, text, metadata)`` tuples, dicts or
        :class:`~latelex.types.Document`; ``metadata``: ``{id: fields}`` merged over each document's own.
        ``encoder``: a ColBERT or Splade encoder, or ``None`` for BM25. ``kind`` defaults to flat (ColBERT),
        sparse (SPLADE) or bm25 (no encoder); ``engine_config`` is the engine's own configuration (``PlaidConfig``,
        ``IvfPqConfig``, ``InvertedConfig``, ``BM25Config``). ``chunking``: a
        :class:`~latelex.search.chunking.ChunkingConfig` (or ``(tokens, overlap)``) that splits documents into
        overlapping passages of the encoder's tokens; search returns documents (best passage) with the passage's
        character span. ``pool_factor``: token pooling of the documents (flat and PLAID only;
        :mod:`latelex.scoring.pooling`): each document (or passage) keeps ``min(L, ceil(L / pool_factor))`` of its L
        vectors, the means of clusters of similar tokens; 2 stores about half the vectors. Recorded in the manifest:
        every later add, upsert and compact pools with the same factor; queries are never pooled. Nothing is
        written at ``path`` unless the whole build succeeds; an existing index there is replaced (atomically, for a
        retriever of this format) only with ``overwrite``. ``statistics``: BM25 only, score with these
        :class:`~latelex.index.bm25.CollectionStatistics` of a larger collection (a shard's; see
        :meth:`collection_statistics`) instead of the documents' own. To encode on a Ray cluster, build
        with :func:`latelex.distributed.build_on_ray` (the same index, encoded in resumable chunks by Ray workers).
        """
        docs = as_documents(collection, metadata)
        if not docs:
            raise InputError("the collection is empty; give at least one document")
        family = engines.encoder_family(encoder)
        kind = kind or registry.default_kind(family)
        spec = registry.kind(kind)
        if spec.family != family:
            what = "no encoder" if family == "text" else f"a {family} encoder"
            raise InputError(f"{what} cannot build a {kind!r} index; use one of {', '.join(INDEX_KINDS[family])}")
        chunk_config = _chunking(chunking, encoder)
        pool_factor = _pool_factor(pool_factor, spec)
        engines.check_statistics(spec, statistics)
        if spec.family == "text" and not store_text:
            raise InputError("a bm25 index keeps its texts (they are what it indexes); drop store_text=False")
        final = Path(path).expanduser().resolve()
        if final.exists() and overwrite and _is_current_retriever(final):
            retriever = cls(final, encoder, DocStore.open(final / DB_FILE), _open_state(final))
            retriever._replace_all(docs, encoder, spec, engine_config, chunk_config, store_text, batch_size,
                                   show_progress, pool_factor, statistics)
            return retriever
        # A PLAID build stages its chunks inside: a build that died resumes where it stopped (same documents)
        with storage.staged_directory(final, overwrite=overwrite, resumable=spec.updates == "native") as tmp:
            generation = 1
            (tmp / DB_FILE).unlink(missing_ok=True)  # the document store is quick to write again
            (tmp / _generation_dir(generation)).mkdir(exist_ok=True)
            _remove_tree(tmp / _generation_dir(generation) / "s0")  # published by a build that died after it
            store = DocStore.open(tmp / DB_FILE, create=True)
            try:
                plan = _Plan(tmp / _generation_dir(generation), generation, spec, encoder, engine_config, chunk_config,
                             store_text, batch_size, show_progress, pool_factor, statistics)
                entry = plan.build_segment(0, docs)
                store.stage(generation, plan.rows(docs), (), plan.field_types({}, docs))
                _write_retriever_manifest(tmp, generation, None if encoder is None else encoder.spec(), spec, [entry],
                                          engine_config, chunk_config, store_text, pool_factor)
            finally:
                store.close()
        return cls.open(final, encoder=encoder)

    @classmethod
    def open(cls, path: str | os.PathLike, *, encoder: Any = None, device: Any = None,
             allow_network: bool = False, load_encoder: bool = True) -> "Retriever":
        """Reopen a retriever from its directory; the encoder is rebuilt from the manifest unless given, from local
        files only unless ``allow_network`` (an index never reaches for the network by itself). With
        ``load_encoder=False`` no model is loaded: enough to read documents, delete them or compact a BM25 index,
        not to search or add."""
        path = Path(path).expanduser().resolve()
        state = _open_state(path)
        spec = state.manifest.get("encoder")
        if encoder is None and spec is not None and load_encoder:
            from ..encoders import encoder_from_spec

            encoder = encoder_from_spec(spec, device=device, allow_network=allow_network)
        elif encoder is not None and (spec or {}).get("family") != encoder.spec()["family"]:
            raise InputError(f"{path} was built with a {(spec or {}).get('family', 'text (BM25)')} encoder, "
                             f"not {encoder.spec()['family']}")
        store = DocStore.open(path / DB_FILE)
        return cls(path, encoder, store, state)

    @staticmethod
    def inspect(path: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
        """What ``latelex info`` prints, read without loading the encoder; ``verify`` checks every checksum."""
        path = Path(path).expanduser().resolve()
        state = _open_state(path, verify=verify)
        return _describe(path, state, DocStore.open(path / DB_FILE))

    def info(self) -> dict[str, Any]:
        """Kind, counts, encoder, segments and sizes, as ``latelex info`` prints them."""
        return _describe(self.path, self._current(), self.store)

    def close(self) -> None:
        """Close the document store (the retriever is unusable afterwards)."""
        self.store.close()

    def refresh(self) -> bool:
        """Move to the newest committed generation if another writer committed one; returns whether it moved."""
        state = self._state
        try:
            stamp = _manifest_stamp(self.path)
        except OSError:
            return False
        if stamp == state.stamp:
            return False
        fresh = _open_state(self.path)
        if fresh.generation != state.generation:
            self._state = fresh
            return True
        self._state.stamp = fresh.stamp
        return False

    def _current(self) -> _State:
        self.refresh()
        return self._state

    # ------------------------------------------------------------------ properties

    @property
    def kind(self) -> str:
        return self._state.manifest["index"]["kind"]

    @property
    def spec(self) -> registry.KindSpec:
        return registry.kind(self.kind)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._state.manifest

    @property
    def generation(self) -> int:
        return self._state.generation

    @property
    def index(self) -> Any:
        """The engine of the first segment (for callers that need engine details; never change it directly)."""
        return self._state.segments[0].engine

    @property
    def has_texts(self) -> bool:
        """Whether the index keeps document texts (see :meth:`document`)."""
        return bool(self._state.manifest.get("store_text", True))

    @property
    def chunking(self) -> Any:
        data = self._state.manifest.get("chunking")
        if not data:
            return None
        from .chunking import ChunkingConfig

        return ChunkingConfig(int(data["tokens"]), int(data["overlap"]))

    @property
    def pool_factor(self) -> int:
        """The token pooling factor documents are indexed with (1: none); see :meth:`build`."""
        return _pool_factor_of(self._state.manifest)

    def __len__(self) -> int:
        state = self._current()
        if state.count is None:
            state.count = self.store.count(state.generation)
        return state.count

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str):
            return False
        state = self._current()
        return bool(self.store.rows([doc_id], state.generation))

    @property
    def doc_ids(self) -> list[str]:
        """The live document ids in insertion order."""
        state = self._current()
        return self.store.live_ids(state.generation)

    def get(self, doc_id: str) -> Document:
        """The document ``doc_id`` with its text (``None`` if texts are not stored) and metadata."""
        state = self._current()
        row = self.store.rows([doc_id], state.generation).get(doc_id)
        if row is None:
            raise InputError(f"no document {doc_id!r} in {self.path}")
        return Document(doc_id, row[1], row[2])

    def document(self, doc_id: str) -> str:
        """The stored text of ``doc_id`` (raises if the index was built without ``store_text``)."""
        if not self.has_texts:
            raise LatelexError(f"{self.path} was built without document texts (store_text=False)")
        return self.get(doc_id).text

    def present(self, doc_ids: Iterable[str]) -> list[str]:
        """Those of ``doc_ids`` that are in the index, in the order given (one look-up for many ids)."""
        ids = as_ids(doc_ids)
        state = self._current()
        found = self.store.metadata(ids, state.generation) if ids else {}
        return [d for d in ids if d in found]

    def collection_statistics(self, *, exclude: Iterable[str] = (), extra: Sequence[str] = ()) -> Any:
        """BM25 only: the :class:`~latelex.index.bm25.CollectionStatistics` (documents, total length in terms,
        document frequency of each term) of the live documents, less those of ``exclude`` and with the texts
        ``extra``, computed from the stored texts with the index's tokenisation: what this index would hold after
        a change. A sharded BM25 index adds up its shards' to score every shard with the whole collection's."""
        state = self._current()
        spec = registry.kind(state.manifest["index"]["kind"])
        if spec.updates != "rewrite":
            raise InputError(f"collection statistics are BM25's; {self.path} is a {spec.name} index")
        if isinstance(extra, str):
            raise InputError("extra must be a list of texts, not a single string")
        from ..index.bm25 import collection_statistics

        skip = set(as_ids(exclude))
        texts = [t for d, t, _ in self.store.iter_live(state.generation) if d not in skip]
        return collection_statistics(texts + list(extra), _engine_config_of(state.manifest, spec))

    def __repr__(self) -> str:
        return (f"Retriever(path={str(self.path)!r}, documents={len(self)}, index={self.kind}, "
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
        """The top ``k`` documents for one query (a string: returns ``list[Hit]``) or each of many (a list of
        strings: returns ``list[list[Hit]]``), best first.

        ``where``: a filter over the metadata (a string such as ``'year >= 2015 and source = "pubmed"'`` or a dict
        of equalities, see :mod:`latelex.search.filters`); ``subset``: document ids the results must come from.
        Hits carry ``metadata`` and, with ``with_text``, ``text``. For a chunked index each hit is a document scored
        by its best passage, with the passage's ``passage`` number and character ``span``; ``passages=True``
        returns passages instead (several per document). ``engine_options`` go to the engine's own search (for
        PLAID ``ncells``, ``ndocs``, ``centroid_score_threshold``; ``mode`` for the inverted index); an option
        the index's kind does not take is an error. ``encoded``: the queries already encoded by
        :meth:`encode_queries` (the server encodes many requests' queries in one batch); ``None`` encodes them here.
        """
        state = self._current()
        single, texts = check_search(queries, k, registry.kind(state.manifest["index"]["kind"]), engine_options)
        if not texts:
            return []
        allowed = self._allowed(state, where, subset)
        if allowed is not None and not allowed:
            found: list[list[Hit]] = [[] for _ in texts]
        else:
            if encoded is None:
                encoded = self.encode_queries(texts, batch_size=batch_size, show_progress=show_progress)
            elif engines.encoded_count(encoded) != len(texts):
                raise InputError(f"encoded holds {engines.encoded_count(encoded)} queries for {len(texts)} texts")
            found = self._search_state(state, encoded, texts, k, allowed, passages, engine_options)
        found = self._decorate(state, found, with_text)
        return found[0] if single else found

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None) -> Any:
        """``texts`` encoded as :meth:`search` takes them in ``encoded``: a list of (Lq, dim) tensors (ColBERT), a
        SparseBatch (SPLADE), or the texts themselves (BM25). Split a batch with :func:`engines.split_encoded`."""
        require_query_encoder(self.encoder, self.spec, self.path)
        return engines.encode_queries(self.encoder, list(texts), batch_size=batch_size, show_progress=show_progress)

    def search_queries(self, queries: Mapping[str, str] | Iterable[tuple[str, str]], k: int = 10, *,
                       where: Any = None, subset: Sequence[str] | None = None, batch_size: int = 64,
                       show_progress: bool | None = None, **engine_options: Any) -> Run:
        """Search many identified queries (``{qid: text}`` or ``(qid, text)`` pairs); returns a run ``{qid: hits}``
        (hits without texts)."""
        pairs = query_pairs(queries)
        hits = self.search([t for _, t in pairs], k=k, where=where, subset=subset, with_text=False,
                           batch_size=batch_size, show_progress=show_progress, **engine_options)
        return dict(zip([q for q, _ in pairs], hits))

    def explain(self, query: str, doc_id: str) -> Explanation:
        """Why ``doc_id`` scores what it does for ``query``: an :class:`~latelex.search.explain.Explanation` whose
        ``contributions`` (one per query token for ColBERT, in query order; one per shared term for SPLADE and BM25,
        largest first) sum to its ``score`` and point at character spans of the document text.

        The score is computed afresh from the stored text: ColBERT, the exact MaxSim of the query (as search encodes
        it, [MASK] augmentation included) against the re-encoded document, which is the flat index's score up to its
        float16 storage and differs slightly from a PLAID or IVFPQ hit's compressed score; SPLADE, the dot product of
        the two sparse vectors (the sparse and inverted indexes' score); BM25, the index's own score. For a chunked
        index the best passage is explained (``passage``, ``passage_span``), with spans in the whole text.

        Raises:
            InputError: an empty query, a ``doc_id`` not in the index, an index built without texts
                (``store_text=False``), or a retriever opened without its encoder.
        """
        from .explain import explain

        return explain(self, query, doc_id)

    def explain_many(self, query: str, doc_ids: Sequence[str]) -> list[Explanation]:
        """:meth:`explain` for each of ``doc_ids``, in order."""
        if isinstance(doc_ids, str):
            raise InputError("doc_ids must be a list of document ids, not a single string")
        return [self.explain(query, doc_id) for doc_id in doc_ids]

    def _allowed(self, state: _State, where: Any, subset: Sequence[str] | None) -> set[str] | None:
        """Engine ids a search may return (None: every live one)."""
        if where is None and subset is None:
            return None
        chunked = bool(state.manifest.get("chunking"))
        docs: dict[str, int] = {}
        if where is not None:
            from .filters import as_filter, compile_filter

            sql, params = compile_filter(as_filter(where), self.store.field_types())
            docs = dict(self.store.matching(sql, params, state.generation))
        if subset is not None:
            if isinstance(subset, str):
                raise InputError("subset must be a list of document ids, not a single string")
            wanted = list(dict.fromkeys(subset))
            rows = self.store.rows(wanted, state.generation)
            check_subset_known(wanted, rows)
            picked = {d: r[3] for d, r in rows.items()}
            docs = picked if where is None else {d: n for d, n in docs.items() if d in picked}
        if not chunked:
            return set(docs)
        return {_passage_id(d, n) for d, count in docs.items() for n in range(count)}

    def _search_state(self, state: _State, encoded: Any, texts: list[str], k: int, allowed: set[str] | None,
                      passages: bool, options: dict[str, Any]) -> list[list[Hit]]:
        chunked = bool(state.manifest.get("chunking"))
        fetch = k if (passages or not chunked) else 4 * k
        while True:
            merged, exhausted = self._search_segments(state, encoded, texts, fetch, allowed, options)
            if not chunked or passages:
                return [_passage_hits(row[:k]) if chunked else row[:k] for row in merged]
            documents = [_best_passages(row, k) for row in merged]
            if exhausted or all(len(d) >= k for d in documents):
                return documents
            fetch *= 4

    def _search_segments(self, state: _State, encoded: Any, texts: list[str], fetch: int, allowed: set[str] | None,
                         options: dict[str, Any]) -> tuple[list[list[Hit]], bool]:
        """Every segment's top ``fetch`` merged by score (ties: earlier segment, then engine order); also whether
        no segment had more to give."""
        n = len(texts)
        per_query: list[list[tuple[float, int, int, Hit]]] = [[] for _ in range(n)]
        exhausted = True
        for order, seg in enumerate(state.segments):
            if seg.live_count <= 0:
                continue
            subset = None
            want = fetch
            if allowed is not None:
                subset = sorted(allowed & seg.live_ids())
                if not subset:
                    continue
            elif seg.tombstones:
                want = fetch + len(seg.tombstones)
            available = len(subset) if subset is not None else seg.live_count
            want = min(want, len(seg.engine))
            results = engines.search_engine(seg.spec, seg.engine, encoded, texts, max(1, want), subset, options)
            for qi, hits in enumerate(results):
                kept = [h for h in hits if h.doc_id not in seg.tombstones] if seg.tombstones else hits
                if len(kept) >= fetch and available > fetch:
                    exhausted = False
                for rank, hit in enumerate(kept[:fetch]):
                    per_query[qi].append((-hit.score, order, rank, hit))
        merged = [[item[3] for item in sorted(rows, key=lambda r: r[:3])][:fetch] for rows in per_query]
        return merged, exhausted

    def _decorate(self, state: _State, found: list[list[Hit]], with_text: bool) -> list[list[Hit]]:
        ids = [h.doc_id for row in found for h in row]
        if not ids:
            return found
        chunked = bool(state.manifest.get("chunking"))
        if with_text or chunked:
            rows = self.store.rows(ids, state.generation)
        else:  # a run for evaluation: metadata only, no texts read
            rows = {d: (0, None, meta, 1) for d, meta in self.store.metadata(ids, state.generation).items()}
        spans = self.store.spans([rows[h.doc_id][0] for row in found for h in row if h.doc_id in rows]) if chunked else {}
        out = []
        for row in found:
            hits = []
            for h in row:
                r = rows.get(h.doc_id)
                if r is None:  # pragma: no cover - the store and the engines are committed together
                    raise IndexFormatError(f"{self.path}: document {h.doc_id!r} is in the index but not in the "
                                           f"document store; rebuild the index")
                span = spans.get((r[0], h.passage)) if chunked and h.passage is not None else None
                hits.append(Hit(h.doc_id, h.score, text=r[1] if with_text else None, metadata=r[2],
                                passage=h.passage, span=span))
            out.append(hits)
        return out

    # ------------------------------------------------------------------ changes

    def add(self, docs: Iterable[Any], *, metadata: Mapping[str, dict] | None = None, batch_size: int = 32,
            show_progress: bool | None = None, statistics: Any = None) -> ChangeResult:
        """Encode and add documents (texts, ``(id, text[, metadata])``, dicts or Documents); an id already in the
        index is an error (use :meth:`upsert`). Visible to this object's searches at once, to other processes on
        their next search; atomic: a crash leaves the index as it was before. ``statistics`` (BM25 only): the
        collection statistics to score with after the change (see :meth:`build`)."""
        new = as_documents(docs, metadata)
        return self._change(new, (), replace=False, batch_size=batch_size, show_progress=show_progress,
                            statistics=statistics)

    def upsert(self, docs: Iterable[Any], *, metadata: Mapping[str, dict] | None = None, batch_size: int = 32,
               show_progress: bool | None = None, statistics: Any = None) -> ChangeResult:
        """Add documents, replacing (text, metadata and vectors) those whose id is already in the index; atomic."""
        new = as_documents(docs, metadata)
        return self._change(new, (), replace=True, batch_size=batch_size, show_progress=show_progress,
                            statistics=statistics)

    def delete(self, doc_ids: Iterable[str], *, statistics: Any = None) -> ChangeResult:
        """Delete documents by id; ids not in the index are counted in ``not_found`` (not an error). Atomic.
        ``statistics`` (BM25 only): rewrite with these collection statistics even when nothing is deleted."""
        ids = as_ids(doc_ids)
        return self._change([], ids, replace=False, statistics=statistics)

    def compact(self, *, batch_size: int = 32, show_progress: bool | None = None,
                statistics: Any = None) -> "Retriever":
        """Rewrite the index as one fresh segment of its live documents: reclaims deleted space, merges segments
        and, for PLAID and IVFPQ, retrains the codec on today's collection (``info()["drift"]`` says when PLAID's
        centroids no longer fit the documents added since the build). Documents are re-encoded from their stored
        texts, so the result equals a fresh build of the same documents; without stored texts, PLAID and the
        inverted index compact their own vectors and the other kinds refuse. Atomic. ``statistics`` (BM25 only):
        rewrite the index scored with these collection statistics (see :meth:`build`)."""
        with self._write_lock, WriterLock(self.path):
            state = self._recover()
            spec = registry.kind(state.manifest["index"]["kind"])
            engines.check_statistics(spec, statistics)
            manifest = state.manifest
            generation = state.generation + 1
            gdir = self.path / _generation_dir(generation)
            _remove_tree(gdir)
            gdir.mkdir()
            config = _engine_config_of(manifest, spec)
            plan = _Plan(gdir, generation, spec, self.encoder, config, self.chunking, self.has_texts, batch_size,
                         show_progress, _pool_factor_of(manifest), statistics)
            if self.has_texts:
                docs = [Document(d, t, m) for d, t, m in self.store.iter_live(state.generation)]
                if not docs:
                    raise InputError(f"{self.path} holds no documents; build a new index instead of compacting")
                entry = plan.build_segment(0, docs)
                # The rows stay as they are: same ids, texts and metadata; only the engines change.
                segments = [entry]
            elif spec.updates == "native":
                seg = state.segments[0]
                target = gdir / "s0"
                link_tree(self.path / seg.entry["path"], target)
                engine = spec.engine().open(target)
                if spec.name == "plaid":
                    engine.rebuild(show_progress=show_progress)
                else:
                    engine.compact()
                segments = [_segment_entry(gdir, target, spec.name, len(engine), ())]
            else:
                raise InputError(f"{self.path} was built without texts (store_text=False): a {spec.name} index can only "
                                 f"be compacted by re-encoding them; rebuild it from the collection")
            fsync_dir(gdir)
            self._commit(state, generation, segments)
        return self

    rebuild = compact

    def _change(self, new: list[Document], delete_ids: Sequence[str], *, replace: bool, batch_size: int = 32,
                show_progress: bool | None = None, statistics: Any = None) -> ChangeResult:
        if not new and not delete_ids and statistics is None:
            return ChangeResult()
        with self._write_lock, WriterLock(self.path):
            state = self._recover()
            manifest = state.manifest
            spec = registry.kind(manifest["index"]["kind"])
            engines.check_statistics(spec, statistics)
            if new and self.encoder is None and spec.family != "text":
                raise InputError(f"{self.path} was opened without its encoder (load_encoder=False); reopen it with the "
                                 f"encoder to add documents")
            self._check_encoder(manifest)
            existing = self.store.rows([d.id for d in new] + list(delete_ids), state.generation)
            if new and not replace:
                clash = [d.id for d in new if d.id in existing]
                if clash:
                    raise DuplicateIdError(f"document {clash[0]!r} is already in {self.path}"
                                           f"{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}; "
                                           f"use upsert to replace documents")
            gone = [d for d in delete_ids if d in existing]
            not_found = tuple(d for d in delete_ids if d not in existing)
            replaced = [d.id for d in new if d.id in existing] if replace else []
            removed = list(dict.fromkeys(gone + replaced))
            if not new and not removed and statistics is None:
                return ChangeResult(0, 0, not_found)
            generation = state.generation + 1
            gdir = self.path / _generation_dir(generation)
            _remove_tree(gdir)
            gdir.mkdir()
            plan = _Plan(gdir, generation, spec, self.encoder, _engine_config_of(manifest, spec), self.chunking,
                         self.has_texts, batch_size, show_progress, _pool_factor_of(manifest), statistics)
            chunked = plan.chunking is not None
            removed_engine_ids = [
                eid for d in removed for eid in ([_passage_id(d, n) for n in range(existing[d][3])] if chunked else [d])
            ]
            if spec.updates == "rewrite":
                keep = [Document(d, t, m) for d, t, m in self.store.iter_live(state.generation) if d not in set(removed)]
                everything = keep + new
                if not everything:
                    raise InputError(f"this change would leave {self.path} empty; delete the index folder instead")
                segments = [plan.build_segment(0, everything)]
            elif spec.updates == "native":
                seg = state.segments[0]
                target = gdir / "s0"
                link_tree(self.path / seg.entry["path"], target)
                engine = spec.engine().open(target)
                if removed_engine_ids:
                    engine.delete(removed_engine_ids)
                if new:
                    ids, items = plan.encode(new)
                    engine.add(ids, items, encoder=self.encoder.spec())
                segments = [_segment_entry(gdir, target, spec.name, len(engine), ())]
            else:  # segments
                doomed = set(removed_engine_ids)
                segments = []
                for number, seg in enumerate(state.segments):
                    target = gdir / f"s{number}"
                    link_tree(self.path / seg.entry["path"], target)
                    dead = seg.tombstones | (doomed & seg.live_ids())
                    segments.append(_segment_entry(gdir, target, seg.entry["kind"], len(seg.engine), dead))
                if new:
                    segments.append(plan.build_segment(len(segments), new, kind=spec.segment_kind or spec.name))
            types = plan.field_types(self.store.field_types(), new)
            self.store.stage(generation, plan.rows(new), removed, types)
            fsync_dir(gdir)
            self._commit(state, generation, segments)
            return ChangeResult(len(new), len(gone), not_found, len(replaced))

    def _replace_all(self, docs: list[Document], encoder: Any, spec: registry.KindSpec, engine_config: Any,
                     chunk_config: Any, store_text: bool, batch_size: int, show_progress: bool | None,
                     pool_factor: int, statistics: Any = None) -> None:
        """``build(..., overwrite=True)`` over an existing retriever: one commit that replaces every document and
        engine, so a crash leaves the old index or the new one."""
        with self._write_lock, WriterLock(self.path):
            state = self._recover()
            generation = state.generation + 1
            gdir = self.path / _generation_dir(generation)
            _remove_tree(gdir)
            gdir.mkdir()
            plan = _Plan(gdir, generation, spec, encoder, engine_config, chunk_config, store_text, batch_size,
                         show_progress, pool_factor, statistics)
            entry = plan.build_segment(0, docs)
            self.store.stage(generation, plan.rows(docs), self.store.live_ids(state.generation),
                             plan.field_types({}, docs))
            fsync_dir(gdir)
            self.encoder = encoder
            self._commit(state, generation, [entry], encoder=encoder, spec=spec, engine_config=engine_config,
                         chunk_config=chunk_config, store_text=store_text, pool_factor=pool_factor)

    def _check_encoder(self, manifest: dict[str, Any]) -> None:
        stored = manifest.get("encoder")
        if self.encoder is not None and stored is not None and not same_encoder(self.encoder.spec(), stored):
            raise InputError(f"{self.path} was built with another encoder ({stored.get('model')}) than the one given "
                             f"({self.encoder.spec().get('model')}); open it without encoder= to add documents")

    def _recover(self) -> _State:
        """Under the writer lock: undo what a writer that died before its commit left, remove generations no
        reader can need, and return the newest committed state."""
        state = _open_state(self.path)
        undone = self.store.recover(state.generation)
        stray = _remove_stale_generations(self.path, state)
        if undone or stray:
            logger.warning("%s: rolled back an unfinished change (%d document rows, %d folders)", self.path, undone,
                           len(stray))
        self._state = state
        return state

    def _commit(self, state: _State, generation: int, segments: list[dict[str, Any]], *, encoder: Any = _SAME,
                spec: registry.KindSpec | None = None, engine_config: Any = _SAME, chunk_config: Any = _SAME,
                store_text: bool | None = None, pool_factor: int | None = None) -> None:
        manifest = state.manifest
        _write_retriever_manifest(
            self.path, generation,
            manifest.get("encoder") if encoder is _SAME else (None if encoder is None else encoder.spec()),
            spec or registry.kind(manifest["index"]["kind"]),
            segments,
            manifest.get("engine_config") if engine_config is _SAME else engine_config,
            manifest.get("chunking") if chunk_config is _SAME else chunk_config,
            manifest.get("store_text", True) if store_text is None else store_text,
            _pool_factor_of(manifest) if pool_factor is None else pool_factor,
        )
        # Committed. Readers of the previous generation keep it until the next commit.
        self._state = _open_state(self.path)
        _remove_stale_generations(self.path, self._state, keep_previous=state.generation)
        self.store.purge(state.generation)


# ---------------------------------------------------------------------- building a generation


class _Plan:
    """How the engines of one new generation are written: kind, encoder, configuration, chunking, token pooling."""

    def __init__(self, gdir: Path, generation: int, spec: registry.KindSpec, encoder: Any, engine_config: Any,
                 chunking: Any, store_text: bool, batch_size: int, show_progress: bool | None,
                 pool_factor: int = 1, statistics: Any = None) -> None:
        self.gdir = gdir
        self.generation = generation
        self.spec = spec
        self.encoder = encoder
        self.engine_config = engine_config
        self.chunking = chunking
        self.store_text = store_text
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.pool_factor = pool_factor
        self.statistics = statistics  # BM25's collection statistics, or None: the documents' own
        self._spans: dict[str, list[tuple[int, int]]] = {}

    def units(self, docs: list[Document]) -> tuple[list[str], list[str]]:
        """Engine ids and texts: one per document, or one per passage with chunking."""
        if self.chunking is None:
            self._warn_truncated(docs)
            return [d.id for d in docs], [d.text for d in docs]
        from .chunking import split_documents

        ids, texts = [], []
        spans: dict[str, list[tuple[int, int]]] = {}
        for p in split_documents(((d.id, d.text) for d in docs), self.encoder.tokenizer, self.chunking):
            ids.append(_passage_id(p.doc_id, p.number))
            texts.append(p.text)
            spans.setdefault(p.doc_id, []).append((p.start, p.end))
        self._spans.update(spans)
        return ids, texts

    def encode(self, docs: list[Document]) -> tuple[list[str], Any]:
        """Engine ids and what the engine indexes for them: every build, add, upsert and compact encodes here, so
        this is where documents (passages, with chunking) are token-pooled."""
        ids, texts = self.units(docs)
        from ..encoders.batching import progress

        what = "Indexing texts" if self.encoder is None else "Encoding documents"
        with progress(len(texts), what, self.show_progress) as bar:
            items = engines.encode_documents(self.encoder, texts, batch_size=self.batch_size, bar=bar)
        if self.pool_factor > 1:
            items = engines.pool_documents(self.encoder, items, self.pool_factor)
        return ids, items

    def build_segment(self, number: int, docs: list[Document], kind: str | None = None) -> dict[str, Any]:
        spec = registry.kind(kind or self.spec.name)
        ids, items = self.encode(docs)
        target = self.gdir / f"s{number}"
        config = self.engine_config if spec.name == self.spec.name else None
        engine = engines.build_engine(spec, target, ids, items, encoder=self.encoder, config=config,
                                      show_progress=self.show_progress,
                                      statistics=self.statistics if spec.name == self.spec.name else None)
        return _segment_entry(self.gdir, target, spec.name, len(engine), ())

    def rows(self, docs: list[Document]) -> list[tuple[str, str | None, dict | None, list[tuple[int, int]] | None]]:
        return [(d.id, d.text if self.store_text else None, d.metadata,
                 self._spans.get(d.id) if self.chunking is not None else None) for d in docs]

    def field_types(self, known: dict[str, str], docs: list[Document]) -> dict[str, str]:
        from .filters import field_types, merge_field_types

        return merge_field_types(known, field_types(d.metadata for d in docs))

    def _warn_truncated(self, docs: list[Document]) -> None:
        if self.encoder is None or not docs:
            return
        from .chunking import count_truncated, document_tokens

        budget = document_tokens(self.encoder)
        cut = count_truncated((d.text for d in docs), self.encoder.tokenizer, budget)
        if cut:
            logger.warning("%d of %d documents are longer than the encoder's %d document tokens and were truncated; "
                           "pass chunking=(tokens, overlap) (CLI: --chunk-tokens N --chunk-overlap M) to index all of "
                           "their text", cut, len(docs), budget)


# ---------------------------------------------------------------------- manifests and generations


def require_query_encoder(encoder: Any, spec: registry.KindSpec, path: Path) -> None:
    """A retriever opened without its model (``load_encoder=False``) cannot encode queries: say how to reopen it."""
    if encoder is None and spec.family != "text":
        raise LatelexError(f"{path} was opened without its encoder (load_encoder=False); reopen it to search")


def check_subset_known(wanted: Sequence[str], known: Container[str]) -> None:
    """Every id of a search's ``subset`` must be in the index: an :class:`InputError` naming the first three
    that are not."""
    unknown = [d for d in wanted if d not in known]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise InputError(f"subset names {len(unknown)} document id(s) not in the index: {shown}")


def check_search(queries: Any, k: Any, spec: registry.KindSpec, engine_options: Mapping[str, Any]
                 ) -> tuple[bool, list[str]]:
    """The checks every search makes before it runs (a Retriever's and a ShardedRetriever's alike): ``k`` a positive
    integer, every query a non-empty text, every engine option one that ``spec``'s kind takes. Returns whether
    ``queries`` was one string, and the query texts."""
    single = isinstance(queries, str)
    texts = [queries] if single else list(queries)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, not {k!r}")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"query {i} is {'empty' if isinstance(text, str) else type(text).__name__}; "
                             f"give non-empty query texts")
    unknown = sorted(set(engine_options) - set(spec.search_option_names))
    if unknown:
        takes = ", ".join(spec.search_option_names) or "none"
        raise InputError(f"a {spec.name} index takes no search option {unknown[0]!r} (it takes: {takes})")
    return single, texts


def _passage_id(doc_id: str, number: int) -> str:
    return f"{doc_id}{_PASSAGE_SEP}{number}"


def _split_passage_id(engine_id: str) -> tuple[str, int]:
    doc_id, _, number = engine_id.rpartition(_PASSAGE_SEP)
    return doc_id, int(number)


def _passage_hits(row: list[Hit]) -> list[Hit]:
    out = []
    for h in row:
        doc_id, number = _split_passage_id(h.doc_id)
        out.append(Hit(doc_id, h.score, passage=number))
    return out


def _best_passages(row: list[Hit], k: int) -> list[Hit]:
    """Documents ranked by their best passage (the hits are sorted, so the first passage seen is the best)."""
    seen: dict[str, Hit] = {}
    for h in row:
        doc_id, number = _split_passage_id(h.doc_id)
        if doc_id not in seen:
            seen[doc_id] = Hit(doc_id, h.score, passage=number)
            if len(seen) == k:
                break
    return list(seen.values())


def _chunking(chunking: Any, encoder: Any) -> Any:
    if chunking is None:
        return None
    from .chunking import ChunkingConfig

    if encoder is None:
        raise InputError("chunking splits documents into the encoder's tokens; a bm25 index has no encoder")
    if isinstance(chunking, ChunkingConfig):
        return chunking
    if isinstance(chunking, int) and not isinstance(chunking, bool):
        return ChunkingConfig(chunking)
    if isinstance(chunking, (tuple, list)) and len(chunking) == 2:
        return ChunkingConfig(*chunking)
    raise InputError(f"chunking must be a ChunkingConfig, a number of tokens or (tokens, overlap), not {chunking!r}")


def _segment_entry(gdir: Path, target: Path, kind: str, stored: int, tombstones: Iterable[str]) -> dict[str, Any]:
    dead = sorted(tombstones)
    entry: dict[str, Any] = {"path": f"{gdir.name}/{target.name}", "kind": kind, "documents": stored - len(dead)}
    if dead:
        name = f"{target.name}.tombstones.json"
        with open(gdir / name, "w", encoding="utf-8") as f:
            json.dump(dead, f)
            f.flush()
            os.fsync(f.fileno())
        entry["tombstones"] = f"{gdir.name}/{name}"
        entry["deleted"] = len(dead)
    return entry


def _pool_factor(pool_factor: Any, spec: registry.KindSpec) -> int:
    """The checked ``pool_factor`` of a build of ``spec`` (above 1 only for the kinds that pool)."""
    from ..scoring.pooling import check_pool_factor

    factor = check_pool_factor(pool_factor)
    if factor > 1 and not spec.pooling:
        kinds = registry.pooling_kinds()
        raise InputError(f"token pooling (pool_factor={factor}) applies to kinds {' and '.join(kinds)}, not "
                         f"{spec.name}; build a {' or '.join(kinds)} index or leave pool_factor at 1")
    return factor


def _pool_factor_of(manifest: dict[str, Any]) -> int:
    """The pooling factor a retriever manifest records (1 for indexes written before pooling existed)."""
    try:
        return max(1, int(manifest.get("pool_factor") or 1))
    except (TypeError, ValueError):
        raise IndexFormatError("the manifest's pool_factor is not an integer; rebuild the index") from None


def _engine_config_of(manifest: dict[str, Any], spec: registry.KindSpec) -> Any:
    data = manifest.get("engine_config")
    cls = spec.config_class()
    return None if data is None or cls is None else config_from_dict(cls, data)


def _write_retriever_manifest(directory: Path, generation: int, encoder: dict | None, spec: registry.KindSpec,
                              segments: list[dict[str, Any]], engine_config: Any, chunk_config: Any,
                              store_text: bool, pool_factor: int = 1) -> dict[str, Any]:
    if engine_config is not None and not isinstance(engine_config, dict):
        engine_config = config_to_dict(engine_config)
    if chunk_config is not None and not isinstance(chunk_config, dict):
        chunk_config = {"tokens": chunk_config.tokens, "overlap": chunk_config.overlap}
    return commit_manifest(
        directory, "retriever", FORMAT_VERSION, {},
        encoder=encoder,
        index={"kind": spec.name, "segments": segments},
        generation=generation,
        engine_config=engine_config,
        chunking=chunk_config,
        pool_factor=int(pool_factor),
        store_text=store_text,
        documents=DB_FILE,
        counts={"documents": sum(int(s["documents"]) for s in segments) if not chunk_config else None},
    )


def _is_current_retriever(path: Path) -> bool:
    try:
        manifest = json.loads((path / storage.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") == "retriever" and manifest.get("format_version") == FORMAT_VERSION


def _safe_relative(path: Path, relative: Any) -> Path:
    """``path / relative`` for a manifest entry that must name something inside ``path`` (symlinks included)."""
    return storage.inside(path, relative)


def _open_state(path: Path, verify: bool = False) -> _State:
    """The committed generation at ``path`` with its engines open (retrying when a commit lands meanwhile)."""
    for attempt in range(_OPEN_RETRIES):
        stamp = _manifest_stamp(path) if (path / storage.MANIFEST).exists() else (0, 0)
        manifest = storage.read_manifest(path, ("retriever",), FORMAT_VERSION)
        if int(manifest.get("format_version", 0)) < FORMAT_VERSION:
            raise IndexFormatError(f"{path} was written by latelex {manifest.get('latelex_version', '?')} in retriever "
                                   f"format {manifest.get('format_version')}; rebuild it (latelex index --overwrite)")
        try:
            generation = int(manifest["generation"])
            spec = registry.kind(manifest["index"]["kind"])
            entries = list(manifest["index"]["segments"])
        except (KeyError, TypeError, ValueError, InputError):
            raise IndexFormatError(f"{path}: the manifest lacks or garbles its generation, kind or segments; "
                                   f"rebuild the index") from None
        try:
            segments = []
            for entry in entries:
                seg_spec = registry.kind(entry["kind"])
                engine = seg_spec.engine().open(_safe_relative(path, entry["path"]), verify=verify)
                tombstones: frozenset[str] = frozenset()
                if entry.get("tombstones"):
                    with open(_safe_relative(path, entry["tombstones"]), encoding="utf-8") as f:
                        dead = json.load(f)
                    if not isinstance(dead, list) or not all(isinstance(d, str) for d in dead):
                        raise IndexFormatError(f"{path}: tombstones of {entry['path']} are not a list of ids")
                    tombstones = frozenset(dead)
                segments.append(_Segment(entry, seg_spec, engine, tombstones))
        except (IndexFormatError, OSError, ValueError, KeyError):
            if attempt + 1 < _OPEN_RETRIES and _manifest_stamp(path) != stamp:
                time.sleep(0.01 * (attempt + 1))
                continue  # a writer committed while we opened: read the new generation
            raise
        del spec
        return _State(generation, manifest, segments, stamp)
    raise IndexFormatError(f"{path} kept changing while it was opened; retry")  # pragma: no cover


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _remove_stale_generations(path: Path, state: _State, keep_previous: int | None = None) -> list[str]:
    """Remove generation folders other than the committed one (and ``keep_previous``), and stray temporary files."""
    keep = {_generation_dir(state.generation)}
    if keep_previous is not None:
        keep.add(_generation_dir(keep_previous))
    else:  # without a commit just made, keep the previous generation for readers still on it
        keep.add(_generation_dir(state.generation - 1))
    removed = []
    for child in path.iterdir():
        name = child.name
        if (name.startswith("g") and name[1:].isdigit() and name not in keep) or name == f"{storage.MANIFEST}.tmp":
            _remove_tree(child)
            removed.append(name)
    return removed


def _describe(path: Path, state: _State, store: DocStore) -> dict[str, Any]:
    manifest = state.manifest
    out: dict[str, Any] = {"path": str(path), "latelex_version": manifest.get("latelex_version")}
    first = state.segments[0].engine.info()
    out.update(first)
    out["path"] = str(path)
    out["kind"] = manifest["index"]["kind"]
    out["documents"] = store.count(state.generation)
    out["generation"] = state.generation
    out["segments"] = len(state.segments)
    out["tombstones"] = sum(len(s.tombstones) for s in state.segments)
    if len(state.segments) > 1:
        out["segment_documents"] = [s.live_count for s in state.segments]
        vectors = [s.engine.info().get("token_vectors") for s in state.segments]
        if all(v is not None for v in vectors):
            out["segment_token_vectors"] = vectors
    if registry.kind(out["kind"]).pooling:
        out["pool_factor"] = _pool_factor_of(manifest)
    if manifest.get("chunking"):
        out["chunking"] = manifest["chunking"]
        out["passages"] = sum(s.live_count for s in state.segments)
    out["metadata_fields"] = store.field_types()
    out["encoder"] = manifest.get("encoder")
    out["bytes_on_disk_with_texts"] = sum(
        p.stat().st_size for p in [path / DB_FILE, *(path / s.entry["path"] for s in state.segments)]
        for p in ([p] if p.is_file() else p.rglob("*")) if p.is_file())
    return out
