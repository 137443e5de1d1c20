"""Plain data types shared by every layer: hits, runs, qrels, packed token embeddings, sparse vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so the data layer and the CLI start fast
    import torch

#: One ranked list per query id, best first.
Run = dict[str, list["Hit"]]
#: Relevance judgements: query id -> document id -> grade (0 = judged non-relevant).
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document: its id and its score (higher is better).

    Engines fill ``doc_id`` and ``score`` only. A :class:`~latelex.search.retriever.Retriever` also fills ``text``
    (when the index keeps texts and the caller asks for it), ``metadata`` (the document's JSON fields) and, for a
    chunked index, ``passage`` (the best passage's number within the document) and ``span`` (its
    ``(start, end)`` character offsets in the document text).
    """

    doc_id: str
    score: float
    text: str | None = None
    metadata: dict | None = None
    passage: int | None = None
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Document:
    """A document as an application hands it to a retriever: an id, a text and optional JSON metadata.

    ``metadata``: a JSON object (str keys; str, int, float, bool, None, lists or nested objects as values).
    """

    id: str
    text: str
    metadata: dict | None = None


@dataclass(frozen=True)
class PackedEmbeddings:
    """Variable-length token embeddings of N texts, stored without padding.

    ``vectors``: float tensor of shape (T, dim), the token vectors of all texts one after another.
    ``offsets``: int64 tensor of shape (N + 1,); text i owns rows ``offsets[i]:offsets[i + 1]``.
    """

    vectors: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_list(cls, matrices: Sequence[torch.Tensor], dim: int | None = None) -> "PackedEmbeddings":
        """Pack a list of (L_i, dim) matrices. ``dim`` is needed only when the list is empty."""
        import torch

        if len(matrices) == 0:
            return cls(torch.zeros((0, dim or 0)), torch.zeros(1, dtype=torch.int64))
        lengths = torch.tensor([m.shape[0] for m in matrices], dtype=torch.int64)
        offsets = torch.zeros(len(matrices) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return cls(torch.cat(list(matrices), dim=0), offsets)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        """The (L_i, dim) token matrix of text ``i``."""
        return self.vectors[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) number of token vectors of each text."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class SparseVector:
    """One sparse vector over a vocabulary: ``ids`` (K,) int32 ascending, ``weights`` (K,) float32."""

    ids: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def dot(self, other: "SparseVector") -> float:
        """Exact dot product with another sparse vector."""
        common, ia, ib = np.intersect1d(self.ids, other.ids, assume_unique=True, return_indices=True)
        if common.size == 0:
            return 0.0
        return float(np.dot(self.weights[ia].astype(np.float64), other.weights[ib].astype(np.float64)))


@dataclass(frozen=True)
class SparseBatch:
    """N sparse vectors in CSR layout over a vocabulary of ``vocab_size`` terms.

    ``indptr``: int64 (N + 1,); ``indices``: int32 (nnz,), ascending within a row; ``values``: float32 (nnz,).
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    @classmethod
    def from_vectors(cls, vectors: Sequence[SparseVector], vocab_size: int) -> "SparseBatch":
        indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
        if vectors:
            np.cumsum([len(v) for v in vectors], out=indptr[1:])
            indices = np.concatenate([v.ids for v in vectors]).astype(np.int32, copy=False)
            values = np.concatenate([v.weights for v in vectors]).astype(np.float32, copy=False)
        else:
            indices = np.zeros(0, dtype=np.int32)
            values = np.zeros(0, dtype=np.float32)
        return cls(indptr, indices, values, vocab_size)

    def __len__(self) -> int:
        return int(self.indptr.shape[0]) - 1

    def __getitem__(self, i: int) -> SparseVector:
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return SparseVector(self.indices[a:b], self.values[a:b])

    def __iter__(self) -> Iterator[SparseVector]:
        for i in range(len(self)):
            yield self[i]

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def to_scipy(self):
        """This batch as a ``scipy.sparse.csr_matrix`` of shape (N, vocab_size)."""
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.vocab_size))
