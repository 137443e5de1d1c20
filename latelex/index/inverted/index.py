"""The SPLADE inverted index: segments of quantised, block-max postings plus a forward index, searched exactly
(MaxScore or term-at-a-time, re-scored from the unquantised vectors) or approximately (impact-ordered heads).

On disk (kind ``"inverted"``, format 1) an index directory holds:

- one folder per segment (``seg-000000/``, ``seg-000001/``, ...; layout in :mod:`.build`), the first written by
  :meth:`InvertedIndex.build`, one more by each :meth:`InvertedIndex.add`;
- ``tombstones-<generation>.npy``: uint8 (stored documents,), 1 = deleted (absent while nothing was deleted; a
  shorter array than the stored documents means the later ones are alive);
- ``manifest.json``, written last by every change: the segments (documents, nnz, quantisation scale and largest
  error), the tombstone file, the counts, the encoder spec, the config, and a checksum of every array.

Every change writes new files only, fsyncs them, then swaps the manifest atomically (``os.replace``); files
the new manifest no longer names are removed afterwards. A crash at any point leaves the previous or the new
index, never a mix. One process should change an index at a time; readers that opened it earlier keep their view.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from ...config import config_from_dict, config_to_dict
from ...errors import ConfigError, DuplicateIdError, IndexFormatError, InputError
from ...scoring.sparse import check_same_vocabulary, check_sparse_batch
from ...types import Hit, SparseBatch
from .. import storage
from ..commit import fsync_dir, locked_change, remove_unnamed, retry_open
from ..ids import check_doc_ids, subset_positions
from .build import CODE_DTYPES, decode_table, slice_batch, write_segment
from .config import InvertedConfig

#: Every file or folder this engine writes at the top of its directory (what a crashed change may leave).
_OWN_FILE = re.compile(r"^(seg-\d{6}|tombstones-\d{6}\.npy|manifest\.json\.tmp)$")

KIND = "inverted"
FORMAT_VERSION = 1
_SEGMENT_ARRAYS = ("fwd_indptr", "fwd_indices", "fwd_values", "post_offsets", "post_docs", "post_impacts",
                   "block_offsets", "block_last", "block_max", "term_max", "doc_ids_blob", "doc_ids_offsets")
_IMPACT_ARRAYS = ("imp_offsets", "imp_docs", "imp_impacts")
_FLOAT16_MAX = 65504.0


@dataclass
class _Segment:
    """One opened segment: its manifest entry, its memory-mapped arrays and its first global document number."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    base: int
    table: np.ndarray

    @property
    def n(self) -> int:
        return int(self.meta["documents"])

    def codes(self, name: str) -> np.ndarray:
        return self.arrays[name].view(CODE_DTYPES[self.meta["impacts"]])


class _Scratch:
    """Per-chunk zeroed work arrays of the kernels (the kernels leave them zero again)."""

    def __init__(self, vocab: int, n_docs: int):
        self.vocab = vocab
        self.n_docs = n_docs
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def get(self, chunk: int, kind: str) -> np.ndarray:
        key = (chunk, kind)
        array = self._arrays.get(key)
        if array is None:
            if kind == "dense":
                array = np.zeros(self.vocab, dtype=np.float64)
            elif kind == "window":
                array = np.zeros(_WINDOW, dtype=np.float64)
            elif kind == "dense32":
                array = np.zeros(self.vocab, dtype=np.float32)
            elif kind == "val":
                array = np.zeros(self.n_docs, dtype=np.float32)
            elif kind == "seen":
                array = np.zeros(self.n_docs, dtype=np.uint8)
            elif kind == "touched":
                array = np.zeros(self.n_docs, dtype=np.int64)
            else:
                array = np.zeros(self.n_docs, dtype=np.float64)
            self._arrays[key] = array
        return array


_NONE_ALLOWED = np.zeros(0, dtype=np.uint8)
_NO_OFFSETS = np.zeros(0, dtype=np.int64)
_NO_DOCS = np.zeros(0, dtype=np.int32)
#: Documents accumulated at a time by MaxScore's walk over the document-ordered lists (when heads do not suffice).
_WINDOW = 2048
#: Exact MaxScore first scores the first max(_SEED_DEPTH, 2 k) impact-ordered postings of the _SEED_TERMS heaviest
#: query terms (a threshold from the start), then takes impact-ordered heads until the lists' tail bounds sum below
#: _HEAD_RATIO times that threshold (see :func:`.query.maxscore_search`); for k <= _HEAD_MAX_K (the heap is searched
#: for duplicates, O(k) per offer).
_SEED_TERMS = 4
_SEED_DEPTH = 32
_HEAD_RATIO = 0.5
_HEAD_MAX_K = 1024
#: Default postings per query term read by the approximate mode.
_DEPTH = 4096


class InvertedIndex:
    """Top-k search over learned sparse document vectors through an inverted index.

    Build with :meth:`build` (or :meth:`build_from_chunks`), reopen with :meth:`open`, query with :meth:`search`;
    :meth:`add` and :meth:`delete` change it in place, crash-safely. ``mode="exact"`` returns exactly the top k of
    the dot products of the unquantised vectors; ``mode="approximate"`` trades recall for speed.
    """

    #: checksums of large memory-mapped arrays still to check, set by open() and checked at the first search
    _lazy: storage.LazyChecks | None = None

    def __init__(self, path: Path, manifest: dict[str, Any], segments: list[_Segment], tombstones: np.ndarray):
        self.path = path
        self._manifest = manifest
        self._segments = segments
        self._tombstones = tombstones  # uint8 (stored,), 1 = deleted
        self._doc_ids: list[str] | None = None
        self._stored_ids: list[str] | None = None
        self._positions: dict[str, int] | None = None
        self._df: np.ndarray | None = None
        self._n_deleted: int | None = None
        self._scratch: _Scratch | None = None
        self._scratch_lock = threading.Lock()

    # ------------------------------------------------------------------ building and opening

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        doc_ids: Sequence[str],
        vectors: SparseBatch,
        *,
        config: InvertedConfig | None = None,
        encoder: dict | None = None,
        overwrite: bool = False,
    ) -> "InvertedIndex":
        """Write an index of ``vectors`` (N documents over V terms, CSR) named by ``doc_ids`` into ``path``.

        The directory is built beside ``path`` and moved into place only when complete; an existing ``path`` is an
        error unless ``overwrite``, and is left untouched if the build fails.
        """
        doc_ids = check_doc_ids(doc_ids)
        check_sparse_batch(vectors, what="document vectors", nonnegative=True)
        if len(vectors) != len(doc_ids):
            raise InputError(f"{len(doc_ids)} document ids but {len(vectors)} vectors; pass one id per vector")
        cfg = config or InvertedConfig()
        step = cfg.chunk_documents
        chunks = ((doc_ids[a : a + step], slice_batch(vectors, a, min(len(vectors), a + step)))
                  for a in range(0, len(vectors), step))
        return cls.build_from_chunks(path, chunks, int(vectors.vocab_size), config=cfg, encoder=encoder,
                                     overwrite=overwrite)

    @classmethod
    def build_from_chunks(
        cls,
        path: str | os.PathLike,
        chunks: Iterable[tuple[Sequence[str], SparseBatch]],
        vocab_size: int,
        *,
        config: InvertedConfig | None = None,
        encoder: dict | None = None,
        overwrite: bool = False,
    ) -> "InvertedIndex":
        """Build from a stream of ``(doc ids, vectors)`` chunks (e.g. straight from an encoder, batch by batch).

        Working memory is one chunk plus O(V); the vectors go to disk as they arrive.
        """
        cfg = _check_config(config)
        storage.check_encoder_spec(encoder)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise InputError(f"vocab_size must be a positive integer, not {vocab_size!r}")
        seen: set[str] = set()

        def checked():
            count = 0
            for ids, batch in chunks:
                ids = check_doc_ids(ids, offset=count)
                _check_vectors(batch, int(vocab_size), cfg, what="document vectors", against="the first chunk's")
                if len(ids) != len(batch):
                    raise InputError(f"a chunk has {len(ids)} document ids but {len(batch)} vectors; "
                                     "pass one id per vector")
                for doc_id in ids:
                    if doc_id in seen:
                        raise DuplicateIdError(f"document id {doc_id!r} appears twice; ids must be unique")
                    seen.add(doc_id)
                count += len(ids)
                yield ids, batch
            if count == 0:
                raise InputError("empty corpus: an index needs at least one document")

        with storage.staged_directory(path, overwrite=overwrite) as tmp:
            segment = write_segment(tmp / _segment_name(0), tmp, checked(), int(vocab_size), cfg)
            segment["base"] = 0
            _write_state(tmp, segments=[segment], tombstones=None, generation=0, encoder=encoder,
                         config=cfg, vocab_size=int(vocab_size), deleted=0)
        return cls.open(path)

    @classmethod
    @retry_open
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "InvertedIndex":
        """Open the index in ``path`` with its arrays memory-mapped; ``verify`` also checks every checksum."""
        path = Path(path).expanduser().resolve()
        manifest = storage.read_manifest(path, (KIND,), max_version=FORMAT_VERSION)
        try:
            vocab = int(manifest["vocab_size"])
            metas = list(manifest["segments"])
            config_from_dict(InvertedConfig, manifest["config"])
        except (KeyError, TypeError, ValueError, ConfigError):
            raise IndexFormatError(f"{path}/manifest.json lacks vocab_size, segments or config; rebuild the index") \
                from None
        segments, base = [], 0
        lazy = storage.LazyChecks()  # the large arrays: checked at the first search
        for meta in metas:
            names = _SEGMENT_ARRAYS + (_IMPACT_ARRAYS if int(meta.get("impact_ordered", 0)) > 0 else ())
            arrays = {n: storage.load_array(path, manifest, f"{meta['name']}/{n}", verify=verify, lazy=lazy)
                      for n in names}
            _check_segment(path, meta, arrays, vocab)
            segments.append(_Segment(meta, arrays, base, decode_table(meta["impacts"], float(meta["scale"]))))
            base += int(meta["documents"])
        tombstones = np.zeros(base, dtype=np.uint8)
        if manifest.get("tombstones"):
            stored = storage.load_array(path, manifest, "tombstones", verify=verify)
            if stored.ndim != 1 or stored.shape[0] > base:
                raise IndexFormatError(f"{path}: the tombstone array does not fit the segments; rebuild the index")
            tombstones[: stored.shape[0]] = stored
        index = cls(path, manifest, segments, tombstones)
        index._lazy = lazy
        return index

    # ------------------------------------------------------------------ properties

    @property
    def manifest(self) -> dict[str, Any]:
        """The index's manifest (kind, format version, segments, counts, vocabulary size, encoder, checksums)."""
        return self._manifest

    @property
    def encoder(self) -> dict | None:
        """The spec of the encoder that built the index, as given to :meth:`build`, or None."""
        return self._manifest.get("encoder")

    @property
    def config(self) -> InvertedConfig:
        return config_from_dict(InvertedConfig, self._manifest["config"])

    @property
    def vocab_size(self) -> int:
        return int(self._manifest["vocab_size"])

    @property
    def nnz(self) -> int:
        """Number of stored (document, term) weights, deleted documents included until :meth:`compact`."""
        return sum(int(s.meta["nnz"]) for s in self._segments)

    @property
    def doc_ids(self) -> list[str]:
        """The ids of the live (not deleted) documents, in index order."""
        if self._doc_ids is None:
            stored = self._all_ids()
            self._doc_ids = [stored[i] for i in np.flatnonzero(self._tombstones == 0).tolist()]
        return self._doc_ids

    def __len__(self) -> int:
        """Number of live documents."""
        return int(self._tombstones.shape[0] - int(self._tombstones.sum(dtype=np.int64)))

    def __repr__(self) -> str:
        return (f"InvertedIndex({str(self.path)!r}, documents={len(self)}, segments={len(self._segments)}, "
                f"vocab_size={self.vocab_size})")

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary, with document-side statistics.

        ``flops_docs`` is sum_j p_d(j)^2 (p_d(j): fraction of live documents with term j), the FLOPS of the
        documents against themselves; ``active_terms`` the terms with at least one live posting.
        """
        n = len(self)
        df = self._live_df()
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        live_nnz = int(df.sum())
        active = df > 0
        return {
            "kind": KIND,
            "format_version": int(self._manifest.get("format_version", FORMAT_VERSION)),
            "documents": n,
            "stored_documents": int(self._tombstones.shape[0]),
            "deleted": int(self._tombstones.sum(dtype=np.int64)),
            "segments": len(self._segments),
            "nnz": live_nnz,
            "avg_terms_per_doc": live_nnz / n if n else 0.0,
            "vocab_size": self.vocab_size,
            "active_terms": int(active.sum()),
            "avg_posting_length": float(df[active].mean()) if active.any() else 0.0,
            "max_posting_length": int(df.max()) if df.size else 0,
            "flops_docs": self.flops(None),
            "impacts": self.config.impacts,
            "max_quantisation_error": max((float(s.meta["max_error"]) for s in self._segments), default=0.0),
            "bytes_on_disk": size,
        }

    # ------------------------------------------------------------------ FLOPS

    def flops(self, queries: SparseBatch | None = None) -> float:
        """Expected multiplications per (query, document) pair: sum_j p_q(j) * p_d(j) (the SPLADE papers' FLOPS).

        p_d(j) is the fraction of live documents with a non-zero weight on term j; p_q(j) the same over
        ``queries`` (Q vectors over this index's vocabulary), or p_d itself when ``queries`` is None. Never NaN:
        0.0 when there are no live documents or no queries.
        """
        n = len(self)
        if queries is not None:
            check_sparse_batch(queries, what="query vectors")
            check_same_vocabulary(queries, self.vocab_size, against="this index was built")
        if n == 0:
            return 0.0
        p_d = self._live_df().astype(np.float64) / n
        if queries is None:
            return float(np.dot(p_d, p_d))
        if len(queries) == 0:
            return 0.0
        indices = np.asarray(queries.indices)[np.asarray(queries.values) != 0]
        p_q = np.bincount(indices, minlength=self.vocab_size).astype(np.float64) / len(queries)
        return float(np.dot(p_q, p_d))

    def _live_df(self) -> np.ndarray:
        """int64 (V,): live documents per term."""
        if self._df is None:
            df = np.zeros(self.vocab_size, dtype=np.int64)
            for seg in self._segments:
                df += np.diff(np.asarray(seg.arrays["post_offsets"]))
                dead = np.flatnonzero(self._tombstones[seg.base : seg.base + seg.n])
                if dead.size:
                    indptr, indices = seg.arrays["fwd_indptr"], seg.arrays["fwd_indices"]
                    terms = np.concatenate([indices[indptr[d] : indptr[d + 1]] for d in dead.tolist()])
                    df -= np.bincount(terms, minlength=self.vocab_size)
            self._df = df
        return self._df

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: SparseBatch,
        k: int = 10,
        subset: Sequence[str] | None = None,
        *,
        mode: Literal["exact", "approximate"] = "exact",
        algorithm: Literal["maxscore", "taat"] = "maxscore",
        query_terms: int = 12,
        depth: int | None = None,
        rerank: int | None = None,
        threshold_factor: float = 1.0,
        threads: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best live documents of each query, best first.

        ``queries``: Q sparse vectors over this index's vocabulary, weights >= 0, each with at least one non-zero.
        ``subset``: if given, only these document ids are ranked. Returns Q lists of min(k, pool) :class:`Hit`
        (pool: live documents, or the subset), scores descending, ties by lower index position; documents sharing
        no term with a query fill the list at score 0 after the matching ones.

        ``mode="exact"``: exactly the top k of the dot products of the unquantised vectors, with ``algorithm``
        ``"maxscore"`` (a seeded threshold and impact-ordered heads that bound every other document, else dynamic
        pruning with block-max bounds; see :func:`.query.maxscore_search`) or ``"taat"`` (term-at-a-time). Scores
        are exact.
        ``mode="approximate"``: the ``query_terms`` heaviest query terms, each term's ``depth`` largest postings
        (default: 4096, or as many as were kept at build if fewer, :attr:`InvertedConfig.impact_ordered`), the
        ``rerank`` best accumulated documents (default max(100, 10 k)) re-scored exactly. Larger knobs: higher
        recall, slower. Returned scores are still exact dot products. ``threshold_factor`` > 1 makes MaxScore prune
        more aggressively (approximate).
        Queries are spread over ``threads`` threads (default: every core).
        """
        from . import query as kernels

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        if mode not in ("exact", "approximate"):
            raise InputError(f"mode must be 'exact' or 'approximate', not {mode!r}")
        if algorithm not in ("maxscore", "taat"):
            raise InputError(f"algorithm must be 'maxscore' or 'taat', not {algorithm!r}")
        _check_queries(queries, self.vocab_size)
        if self._lazy is not None:
            self._lazy.ensure_all()
        if not (isinstance(threshold_factor, (int, float)) and threshold_factor >= 1.0):
            raise InputError(f"threshold_factor must be a number >= 1 (1 = exact), not {threshold_factor!r}")
        if threads is not None:
            threads = _positive("threads", threads)
        if mode == "approximate":
            if self.config.impact_ordered == 0:
                raise InputError("this index keeps no impact-ordered postings (impact_ordered=0); "
                                 "search with mode='exact' or rebuild with InvertedConfig(impact_ordered=4096)")
            query_terms = _positive("query_terms", query_terms)
            depth = min(self.config.impact_ordered, _DEPTH) if depth is None else _positive("depth", depth)
            rerank = max(100, 10 * int(k)) if rerank is None else _positive("rerank", rerank)
            rerank = max(rerank, int(k))
        positions = self._subset_positions(subset)
        pool = len(self) if positions is None else int(positions.shape[0])
        k = min(int(k), pool)
        n_q = len(queries)
        if n_q == 0:
            return []
        if k == 0:
            return [[] for _ in range(n_q)]

        q_indptr = np.ascontiguousarray(queries.indptr, dtype=np.int64)
        q_indices = np.ascontiguousarray(queries.indices, dtype=np.int32)
        q_values = np.ascontiguousarray(queries.values, dtype=np.float32)
        if positions is not None:
            allowed_all = np.zeros(self._tombstones.shape[0], dtype=bool)
            allowed_all[positions] = True
            use_allowed = True
        else:
            use_allowed = bool(self._deleted())
            allowed_all = self._tombstones == 0 if use_allowed else None
        small_subset = positions is not None and self._subset_is_small(positions, q_indices, n_q)

        best_docs = np.full((n_q, 0), -1, dtype=np.int64)
        best_scores = np.zeros((n_q, 0), dtype=np.float64)
        for seg in self._segments:
            if seg.n == 0:
                continue
            a = seg.arrays
            if use_allowed:
                allowed = np.ascontiguousarray(allowed_all[seg.base : seg.base + seg.n], dtype=np.uint8)
                if not allowed.any():
                    continue
            else:
                allowed = _NONE_ALLOWED
            init = np.full(n_q, -np.inf)
            full = best_docs.shape[1] == k
            if full:
                init = best_scores[:, k - 1].copy()
            out_docs = np.full((n_q, k), -1, dtype=np.int64)
            out_scores = np.zeros((n_q, k), dtype=np.float64)
            out_counts = np.zeros(n_q, dtype=np.int64)
            eps = float(seg.meta["max_error"])
            out = (out_docs, out_scores, out_counts)
            fwd = (a["fwd_indptr"], a["fwd_indices"], a["fwd_values"])
            query = (q_indptr, q_indices, q_values, k, init)
            if small_subset:
                local = np.flatnonzero(allowed).astype(np.int64)
                kernel, args, kinds = kernels.score_list, (*query, local, *fwd, *out), ("dense",)
            elif mode == "approximate":
                kernel = kernels.approximate_search
                args = (*query, query_terms, depth, rerank, a["imp_offsets"], a["imp_docs"], seg.codes("imp_impacts"),
                        seg.table, *fwd, allowed, use_allowed, *out)
                kinds = ("dense", "acc", "seen", "touched")
            elif algorithm == "taat":
                kernel = kernels.taat_search
                args = (*query, a["post_offsets"], a["post_docs"], seg.codes("post_impacts"), seg.table, eps, *fwd,
                        allowed, use_allowed, *out)
                kinds = ("dense", "acc", "acc_m", "touched", "lows")
            else:
                kernel = kernels.maxscore_search
                if "imp_offsets" in a and k <= _HEAD_MAX_K:
                    heads = (a["imp_offsets"], a["imp_docs"], seg.codes("imp_impacts"), _SEED_TERMS,
                             max(_SEED_DEPTH, 2 * k), _HEAD_RATIO)
                else:
                    heads = (_NO_OFFSETS, _NO_DOCS, seg.codes("post_impacts")[:0], 0, 0, 0.0)
                args = (*query, float(threshold_factor), a["post_offsets"], a["post_docs"], seg.codes("post_impacts"),
                        seg.table, eps, int(seg.meta["block_size"]), a["block_offsets"], a["block_last"],
                        seg.codes("block_max"), a["term_max"], *heads, *fwd, allowed, use_allowed, *out)
                kinds = ("dense32", "window", "val", "touched")
            with self._scratch_pool(seg.n) as pool:
                kernels.run_chunked(kernel, n_q, threads,
                                    lambda c: (*args, *(pool.get(c, kind) for kind in kinds)))
            valid = np.arange(k)[None, :] < out_counts[:, None]
            docs = np.where(valid, out_docs + seg.base, -1)
            scores = np.where(valid, out_scores, -np.inf)
            best_docs, best_scores = _merge(best_docs, best_scores, docs, scores, k)

        return self._hits(best_docs, best_scores, k, allowed_all)

    def _hits(self, best_docs: np.ndarray, best_scores: np.ndarray, k: int,
              allowed: np.ndarray | None) -> list[list[Hit]]:
        ids = self._all_ids()
        results = []
        filler: np.ndarray | None = None
        for row in range(best_docs.shape[0]):
            docs = best_docs[row]
            keep = docs >= 0
            docs, scores = docs[keep], best_scores[row][keep]
            hits = [Hit(ids[d], float(s)) for d, s in zip(docs.tolist(), scores.tolist())]
            if len(hits) < k:  # fewer than k matching documents: fill with the first others at score 0
                if filler is None:
                    filler = np.flatnonzero(self._tombstones == 0 if allowed is None else allowed)
                taken = set(docs.tolist())
                for d in filler.tolist():
                    if len(hits) == k:
                        break
                    if d not in taken:
                        hits.append(Hit(ids[d], 0.0))
            results.append(hits)
        return results

    def _deleted(self) -> int:
        if self._n_deleted is None:
            self._n_deleted = int(self._tombstones.sum(dtype=np.int64))
        return self._n_deleted

    @contextlib.contextmanager
    def _scratch_pool(self, n_docs: int):
        """Zeroed scratch arrays for the kernels, reused across calls (fresh ones while another search holds them)."""
        if self._scratch_lock.acquire(blocking=False):
            try:
                if self._scratch is None or self._scratch.n_docs < n_docs:
                    self._scratch = _Scratch(self.vocab_size, max(s.n for s in self._segments))
                yield self._scratch
            finally:
                self._scratch_lock.release()
        else:
            yield _Scratch(self.vocab_size, n_docs)

    def _subset_is_small(self, positions: np.ndarray, q_indices: np.ndarray, n_q: int) -> bool:
        """Is scoring every subset document cheaper than walking the query terms' postings?"""
        df = self._live_df()
        postings_per_query = float(df[q_indices].sum()) / max(1, n_q)
        avg_len = self.nnz / max(1, self._tombstones.shape[0])
        return positions.shape[0] * avg_len <= postings_per_query

    def _subset_positions(self, subset: Sequence[str] | None) -> np.ndarray | None:
        """Ascending unique global positions of the ``subset`` ids, or None for no restriction."""
        if subset is None:
            return None
        return subset_positions(subset, self._id_positions())

    def _all_ids(self) -> list[str]:
        """Ids of every stored document (deleted ones included), by global position."""
        if self._stored_ids is None:
            ids: list[str] = []
            for seg in self._segments:
                ids.extend(storage.decode_strings(seg.arrays["doc_ids_blob"], seg.arrays["doc_ids_offsets"]))
            self._stored_ids = ids
        return self._stored_ids

    def _id_positions(self) -> dict[str, int]:
        """Live id -> global position."""
        if self._positions is None:
            ids = self._all_ids()
            self._positions = {ids[i]: i for i in np.flatnonzero(self._tombstones == 0).tolist()}
        return self._positions

    # ------------------------------------------------------------------ changes

    @locked_change
    def add(self, doc_ids: Sequence[str], vectors: SparseBatch, *, encoder: dict | None = None) -> None:
        """Append documents as a new segment, visible to this object's searches at once and persisted atomically.

        An id may not name a live document (delete it first to replace it). ``encoder``: the spec of the encoder that
        made the vectors, which must equal the manifest's (required when the manifest records one).
        """
        from ..token_vectors import check_same_encoder

        check_same_encoder(self.encoder, encoder, self.path)
        doc_ids = check_doc_ids(doc_ids)
        cfg = self.config
        _check_vectors(vectors, self.vocab_size, cfg, what="document vectors", against="this index was built")
        if len(vectors) != len(doc_ids):
            raise InputError(f"{len(doc_ids)} document ids but {len(vectors)} vectors; pass one id per vector")
        if not doc_ids:
            return
        positions = self._id_positions()
        clash = [d for d in doc_ids if d in positions]
        if clash:
            raise DuplicateIdError(f"document id {clash[0]!r} is already in the index; delete it first to replace it")
        generation = int(self._manifest.get("generation", 0)) + 1
        name = _segment_name(generation)
        step = cfg.chunk_documents
        chunks = ((doc_ids[a : a + step], slice_batch(vectors, a, min(len(vectors), a + step)))
                  for a in range(0, len(vectors), step))
        target = self.path / name
        if target.is_symlink() or target.is_file():  # left over by a crashed change (or planted): never named
            target.unlink()
        elif target.exists():
            import shutil

            shutil.rmtree(target)
        segment = write_segment(target, self.path, chunks, self.vocab_size, cfg)
        segment["base"] = int(self._tombstones.shape[0])
        metas = [s.meta for s in self._segments] + [segment]
        self._commit(metas, self._tombstones if self._tombstones.any() else None, generation)

    @locked_change
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Mark documents deleted (persisted atomically, invisible to searches at once); returns how many.

        Unknown ids raise :class:`InputError` and delete nothing.
        """
        if isinstance(doc_ids, str):
            raise InputError("doc_ids must be a list of strings, not a single string")
        positions = self._id_positions()
        unknown = [d for d in doc_ids if d not in positions]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
            raise InputError(f"cannot delete {len(unknown)} id(s) not in the index: {shown}")
        chosen = np.unique(np.asarray([positions[d] for d in doc_ids], dtype=np.int64))
        if chosen.size == 0:
            return 0
        tombstones = self._tombstones.copy()
        tombstones[chosen] = 1
        generation = int(self._manifest.get("generation", 0)) + 1
        self._commit([s.meta for s in self._segments], tombstones, generation)
        return int(chosen.size)

    @locked_change
    def compact(self) -> None:
        """Rewrite the index as one segment of its live documents (drops deleted vectors, merges segments)."""
        ids = self.doc_ids
        if not ids:
            raise InputError("every document is deleted: nothing to compact; build a new index instead")
        idx_parts, val_parts, lengths = [], [], []
        for seg in self._segments:
            alive = np.flatnonzero(self._tombstones[seg.base : seg.base + seg.n] == 0)
            if alive.size == 0:
                continue
            ip = np.asarray(seg.arrays["fwd_indptr"])
            starts, ends = ip[alive], ip[alive + 1]
            take = np.concatenate([np.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())])
            idx_parts.append(np.asarray(seg.arrays["fwd_indices"])[take])
            val_parts.append(np.asarray(seg.arrays["fwd_values"])[take])
            lengths.append(ends - starts)
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=indptr[1:])
        batch = SparseBatch(indptr, np.concatenate(idx_parts), np.concatenate(val_parts), self.vocab_size)
        fresh = InvertedIndex.build(self.path, ids, batch, config=self.config, encoder=self.encoder, overwrite=True)
        self._reload(fresh)

    def _commit(self, metas: list[dict], tombstones: np.ndarray | None, generation: int) -> None:
        extra_arrays = {}
        name = None
        if tombstones is not None:
            name = f"tombstones-{generation:06d}"
            # save_array never writes through a link planted under the name
            extra_arrays["tombstones"] = storage.save_array(self.path, name, np.ascontiguousarray(tombstones, dtype=np.uint8))
            fsync_dir(self.path / f"{name}.npy")
        deleted = 0 if tombstones is None else int(tombstones.sum(dtype=np.int64))
        _write_state(self.path, segments=metas, tombstones=extra_arrays.get("tombstones"), generation=generation,
                     encoder=self.encoder, config=self.config, vocab_size=self.vocab_size, deleted=deleted)
        fsync_dir(self.path)
        self._reload(InvertedIndex.open(self.path))
        remove_unnamed(self.path, self._manifest, _OWN_FILE)

    def _reload(self, other: "InvertedIndex") -> None:
        self.path, self._manifest, self._segments, self._tombstones = (
            other.path, other._manifest, other._segments, other._tombstones)
        self._doc_ids = self._stored_ids = self._positions = self._df = self._n_deleted = None
        self._scratch = None


# ---------------------------------------------------------------------- helpers


def _segment_name(generation: int) -> str:
    return f"seg-{generation:06d}"


def _write_state(directory: Path, *, segments: list[dict], tombstones: dict | None, generation: int,
                 encoder: dict | None, config: InvertedConfig, vocab_size: int, deleted: int) -> None:
    arrays: dict[str, Any] = {}
    for seg in segments:
        for name, entry in seg["arrays"].items():
            arrays[f"{seg['name']}/{name}"] = entry
    if tombstones is not None:
        arrays["tombstones"] = tombstones
    stored = sum(int(s["documents"]) for s in segments)
    storage.write_manifest(
        directory,
        kind=KIND,
        format_version=FORMAT_VERSION,
        arrays=arrays,
        encoder=encoder,
        config=config_to_dict(config),
        vocab_size=vocab_size,
        counts={"documents": stored - deleted, "stored": stored, "deleted": deleted,
                "nnz": sum(int(s["nnz"]) for s in segments)},
        segments=segments,
        tombstones=None if tombstones is None else tombstones["file"],
        generation=generation,
        layout="segments of term-major quantised postings + forward index",
    )


def _merge(d1: np.ndarray, s1: np.ndarray, d2: np.ndarray, s2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise best k of two (Q, *) candidate sets; -1 documents (score -inf) are padding."""
    docs = np.concatenate([d1, d2], axis=1)
    scores = np.concatenate([s1, s2], axis=1)
    key_docs = np.where(docs < 0, np.iinfo(np.int64).max, docs)
    order = np.lexsort((key_docs, -scores), axis=1)[:, :k]
    return np.take_along_axis(docs, order, 1), np.take_along_axis(scores, order, 1)


def _check_segment(path: Path, meta: dict, arrays: dict[str, np.ndarray], vocab: int) -> None:
    n, nnz = int(meta["documents"]), int(meta["nnz"])
    ok = (
        arrays["fwd_indptr"].shape == (n + 1,)
        and arrays["fwd_indices"].shape == (nnz,)
        and arrays["fwd_values"].shape == (nnz,)
        and arrays["post_offsets"].shape == (vocab + 1,)
        and arrays["post_docs"].shape == (nnz,)
        and arrays["post_impacts"].shape == (nnz,)
        and arrays["term_max"].shape == (vocab,)
        and arrays["block_offsets"].shape == (vocab + 1,)
        and arrays["doc_ids_offsets"].shape == (n + 1,)
        and int(arrays["fwd_indptr"][-1]) == nnz
        and int(arrays["post_offsets"][-1]) == nnz
        and int(arrays["block_offsets"][-1]) == arrays["block_last"].shape[0]
        and int(arrays["doc_ids_offsets"][-1]) == arrays["doc_ids_blob"].shape[0]
    )
    if ok and "imp_offsets" in arrays:
        ok = arrays["imp_offsets"].shape == (vocab + 1,) and int(arrays["imp_offsets"][-1]) == \
            arrays["imp_docs"].shape[0]
    if not ok:
        raise IndexFormatError(f"{path}/{meta['name']}: the arrays do not agree with the manifest; rebuild the index")


def _check_config(config: InvertedConfig | None) -> InvertedConfig:
    if config is None:
        return InvertedConfig()
    if not isinstance(config, InvertedConfig):
        raise ConfigError(f"config must be an InvertedConfig, not {type(config).__name__}")
    return config


def _check_vectors(batch: SparseBatch, vocab: int, cfg: InvertedConfig, *, what: str, against: str) -> None:
    check_sparse_batch(batch, what=what, nonnegative=True)
    if int(batch.vocab_size) != vocab:
        raise InputError(f"the {what} are over a vocabulary of {batch.vocab_size} terms but {against} over "
                         f"{vocab}; encode everything with the same model")
    if cfg.impacts == "float16" and batch.nnz and float(np.max(batch.values)) > _FLOAT16_MAX:
        raise InputError(f"{what}: a weight exceeds {_FLOAT16_MAX}, the float16 range; "
                         "use InvertedConfig(impacts='uint8')")


def _check_queries(queries: SparseBatch, vocab: int) -> None:
    check_sparse_batch(queries, what="query vectors", nonnegative=True)
    check_same_vocabulary(queries, vocab, against="this index was built")
    lengths = np.diff(np.asarray(queries.indptr))
    rows = np.repeat(np.arange(len(queries)), lengths)
    nonzero = np.bincount(rows[np.asarray(queries.values) != 0], minlength=len(queries))
    empty = np.flatnonzero(nonzero == 0)
    if empty.size:
        raise InputError(f"query {int(empty[0])} has no non-zero weight, so it matches nothing; drop empty "
                         "queries before searching")


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


__all__ = ["InvertedIndex"]
