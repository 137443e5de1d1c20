"""An exact sparse index: documents' learned sparse vectors stored term-major, searched by dot product.

On disk (kind ``"sparse"``, format 1) the index is the transposed document matrix, one posting list per term:

- ``indptr.npy``: int64 (V + 1,); term t owns postings ``indptr[t]:indptr[t + 1]``;
- ``indices.npy``: int32 (nnz,), the document numbers of the postings, ascending within a term;
- ``values.npy``: float32 (nnz,), the document's weight for that term;
- ``doc_ids_blob.npy`` / ``doc_ids_offsets.npy``: the document ids as UTF-8 bytes plus N + 1 offsets;

and ``manifest.json`` (written last) with the vocabulary size, counts, the encoder spec and a checksum per array.
A search multiplies a batch of queries (Q, V) by this (V, N) matrix with scipy, which only reads the posting
lists of the query's terms, so the arrays stay memory-mapped and cold terms are never paged in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import IndexFormatError, InputError
from ..scoring.sparse import check_same_vocabulary, check_sparse_batch
from ..scoring.topk import topk
from ..types import Hit, SparseBatch
from . import storage
from .commit import retry_open
from .ids import check_doc_ids, subset_positions

KIND = "sparse"
FORMAT_VERSION = 1
#: Bound on the entries of one (query batch x documents) score matrix: about 16M, i.e. a few hundred MB at most.
_SCORE_ENTRIES = 1 << 24
_MAX_QUERY_BATCH = 256


class SparseIndex:
    """Exact top-k search over N sparse document vectors (a few thousand to about a million documents).

    Build with :meth:`build`, reopen with :meth:`open`, query with :meth:`search`. Scores are exact dot
    products between query and document vectors; nothing is pruned.
    """

    #: checksums of large memory-mapped arrays still to check, set by open() and checked at the first search
    _lazy: storage.LazyChecks | None = None

    def __init__(self, path: Path, manifest: dict[str, Any], indptr: np.ndarray, indices: np.ndarray,
                 values: np.ndarray, ids_blob: np.ndarray, ids_offsets: np.ndarray):
        self.path = path
        self._manifest = manifest
        self._indptr = indptr
        self._indices = indices
        self._values = values
        self._ids_blob = ids_blob
        self._ids_offsets = ids_offsets
        self._doc_ids: list[str] | None = None
        self._positions: dict[str, int] | None = None
        self._matrix = None

    # ------------------------------------------------------------------ building and opening

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        doc_ids: Sequence[str],
        vectors: SparseBatch,
        *,
        encoder: dict | None = None,
        overwrite: bool = False,
    ) -> "SparseIndex":
        """Write an index of ``vectors`` (N documents over V terms) named by ``doc_ids`` into ``path``.

        ``encoder`` is the spec of the encoder that made the vectors (stored as given, for reopening it later).
        The directory is built beside ``path`` and moved into place only when complete; an existing ``path``
        is an error unless ``overwrite``, and is left untouched if the build fails.
        """
        doc_ids = check_doc_ids(doc_ids)
        check_sparse_batch(vectors, what="document vectors", nonnegative=True)
        if len(vectors) != len(doc_ids):
            raise InputError(f"{len(doc_ids)} document ids but {len(vectors)} vectors; pass one id per vector")
        if not doc_ids:
            raise InputError("empty corpus: an index needs at least one document")
        storage.check_encoder_spec(encoder)

        n, vocab = len(vectors), int(vectors.vocab_size)
        postings = _transpose(vectors)
        indptr = np.asarray(postings.indptr, dtype=np.int64)
        postings_docs = np.asarray(postings.indices, dtype=np.int32)
        postings_values = np.asarray(postings.data, dtype=np.float32)
        blob, offsets = storage.encode_strings(doc_ids)

        with storage.staged_directory(path, overwrite=overwrite) as tmp:
            arrays = {
                "indptr": storage.save_array(tmp, "indptr", indptr),
                "indices": storage.save_array(tmp, "indices", postings_docs),
                "values": storage.save_array(tmp, "values", postings_values),
                "doc_ids_blob": storage.save_array(tmp, "doc_ids_blob", blob),
                "doc_ids_offsets": storage.save_array(tmp, "doc_ids_offsets", offsets),
            }
            storage.write_manifest(
                tmp,
                kind=KIND,
                format_version=FORMAT_VERSION,
                arrays=arrays,
                encoder=encoder,
                counts={"documents": n, "nnz": int(postings_docs.shape[0])},
                vocab_size=vocab,
                layout="term-major",
            )
        return cls.open(path)

    @classmethod
    @retry_open
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "SparseIndex":
        """Open the index in ``path`` with its arrays memory-mapped; ``verify`` also checks every checksum."""
        path = Path(path).expanduser().resolve()
        manifest = storage.read_manifest(path, (KIND,), max_version=FORMAT_VERSION)
        lazy = storage.LazyChecks()  # the large arrays: checked at the first search
        arrays = {
            name: storage.load_array(path, manifest, name, verify=verify, lazy=lazy)
            for name in ("indptr", "indices", "values", "doc_ids_blob", "doc_ids_offsets")
        }
        try:
            vocab = int(manifest["vocab_size"])
            n = int(manifest["counts"]["documents"])
            nnz = int(manifest["counts"]["nnz"])
        except (KeyError, TypeError, ValueError):
            raise IndexFormatError(f"{path}/manifest.json lacks vocab_size or counts; rebuild the index") from None
        indptr = arrays["indptr"]
        consistent = (
            indptr.shape == (vocab + 1,)
            and arrays["indices"].shape == (nnz,)
            and arrays["values"].shape == (nnz,)
            and arrays["doc_ids_offsets"].shape == (n + 1,)
            and int(indptr[0]) == 0
            and int(indptr[-1]) == nnz
            and int(arrays["doc_ids_offsets"][-1]) == arrays["doc_ids_blob"].shape[0]
        )
        if not consistent:
            raise IndexFormatError(f"{path}: the arrays do not agree with the manifest's counts; rebuild the index")
        index = cls(path, manifest, indptr, arrays["indices"], arrays["values"],
                    arrays["doc_ids_blob"], arrays["doc_ids_offsets"])
        index._lazy = lazy
        return index

    # ------------------------------------------------------------------ properties

    @property
    def manifest(self) -> dict[str, Any]:
        """The index's manifest (kind, format version, counts, vocabulary size, encoder spec, array checksums)."""
        return self._manifest

    @property
    def encoder(self) -> dict | None:
        """The spec of the encoder that built the index, as given to :meth:`build`, or None."""
        return self._manifest.get("encoder")

    @property
    def vocab_size(self) -> int:
        return int(self._manifest["vocab_size"])

    @property
    def nnz(self) -> int:
        """Number of stored (document, term) weights."""
        return int(self._indices.shape[0])

    @property
    def doc_ids(self) -> list[str]:
        """The document ids, in index order (decoded on first use)."""
        if self._doc_ids is None:
            self._doc_ids = storage.decode_strings(self._ids_blob, self._ids_offsets)
        return self._doc_ids

    def __len__(self) -> int:
        return int(self._ids_offsets.shape[0]) - 1

    def __repr__(self) -> str:
        return f"SparseIndex({str(self.path)!r}, documents={len(self)}, nnz={self.nnz}, vocab_size={self.vocab_size})"

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary: kind, documents, nnz, average terms per document, vocabulary size, bytes on disk."""
        n = len(self)
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return {
            "kind": KIND,
            "format_version": int(self._manifest.get("format_version", FORMAT_VERSION)),
            "documents": n,
            "nnz": self.nnz,
            "avg_terms_per_doc": self.nnz / n if n else 0.0,
            "vocab_size": self.vocab_size,
            "bytes_on_disk": size,
        }

    # ------------------------------------------------------------------ search

    def search(self, queries: SparseBatch, k: int = 10, subset: Sequence[str] | None = None) -> list[list[Hit]]:
        """The ``k`` best documents of each query by exact dot product, best first.

        ``queries``: Q sparse vectors over this index's vocabulary. ``subset``: if given, only these document
        ids are ranked (an unknown id raises :class:`InputError`). Returns Q lists of :class:`Hit`; each holds
        min(k, N) hits (N = documents, or the subset's size), sorted by score descending with ties broken by
        lower index position. Documents sharing no term with the query score 0 and fill the list after every
        matching document, like any other exact ranking. A query without any non-zero weight gets an empty list.
        """
        if self._lazy is not None:
            self._lazy.ensure_all()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        check_sparse_batch(queries, what="query vectors")
        check_same_vocabulary(queries, self.vocab_size, against="this index was built")
        positions = self._subset_positions(subset)
        pool = len(self) if positions is None else positions.shape[0]
        mask = None
        if positions is not None:
            mask = np.zeros(len(self), dtype=bool)
            mask[positions] = True
        k = min(int(k), pool)
        results: list[list[Hit]] = []
        if len(queries) == 0:
            return results
        ids = self.doc_ids
        matrix = self._postings()
        query_matrix = queries.to_scipy()
        step = max(1, min(_MAX_QUERY_BATCH, _SCORE_ENTRIES // max(1, len(self))))
        lengths = np.diff(np.asarray(queries.indptr))
        for start in range(0, len(queries), step):
            scores = query_matrix[start : start + step] @ matrix  # (q, N) sparse, only matching documents
            scores.sort_indices()
            for row in range(scores.shape[0]):
                if lengths[start + row] == 0 or k == 0:
                    results.append([])
                    continue
                a, b = scores.indptr[row], scores.indptr[row + 1]
                docs, values = scores.indices[a:b], scores.data[a:b]
                chosen, best = self._best(docs, values, k, mask, positions)
                results.append([Hit(ids[i], float(s)) for i, s in zip(chosen.tolist(), best.tolist())])
        return results

    def _best(self, docs: np.ndarray, values: np.ndarray, k: int, mask: np.ndarray | None,
              positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of one query given its matching documents ``docs`` (ascending) and their scores."""
        if mask is not None:
            keep = mask[docs]
            docs, values = docs[keep], values[keep]
        positive = values > 0
        if int(positive.sum()) >= k:
            # k documents score above 0: nothing outside the matches (score 0) can enter the top k.
            docs, values = docs[positive], values[positive]
            chosen, best = topk(values, k)
            return docs[chosen].astype(np.int64), best
        # Fewer than k positive matches: rank every candidate, the non-matching ones at score 0.
        dense = np.zeros(len(self), dtype=np.float32)
        dense[docs] = values
        if positions is None:
            return topk(dense, k)
        chosen, best = topk(dense[positions], k)
        return positions[chosen], best

    def _postings(self):
        """The (V, N) term-major matrix as scipy CSR over the memory-mapped arrays (built once)."""
        if self._matrix is None:
            from scipy.sparse import csr_matrix

            self._matrix = csr_matrix(
                (self._values, self._indices, self._indptr), shape=(self.vocab_size, len(self)), copy=False
            )
        return self._matrix

    def _subset_positions(self, subset: Sequence[str] | None) -> np.ndarray | None:
        """Ascending unique index positions of the ``subset`` ids, or None for no restriction."""
        if subset is None:
            return None
        if self._positions is None:
            self._positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        return subset_positions(subset, self._positions)


def _transpose(vectors: SparseBatch):
    """The (N, V) document matrix in CSC layout, i.e. term-major posting lists, without explicit zeros.

    scipy's CSR -> CSC conversion is a linear counting sort that keeps documents ascending within each term.
    """
    from scipy.sparse import csr_matrix

    matrix = csr_matrix(
        (np.asarray(vectors.values, dtype=np.float32), np.asarray(vectors.indices), np.asarray(vectors.indptr)),
        shape=(len(vectors), int(vectors.vocab_size)),
    )
    postings = matrix.tocsc()  # new arrays: removing zeros below never touches the caller's batch
    postings.eliminate_zeros()  # explicit zeros never change a score: do not store them
    return postings


__all__ = ["SparseIndex"]
