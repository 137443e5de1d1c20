"""The small protocol every index engine implements (flat, PLAID, IVFPQ, sparse, inverted, BM25).

An engine stores arrays, never a model (see DESIGN.md). It is built from document ids plus what its family
indexes (token-vector matrices for ColBERT, a :class:`~latelex.types.SparseBatch` for SPLADE, texts for BM25),
opened from its directory, and searched with one encoded query per row. Mutable engines (``updates ==
"native"`` in :mod:`latelex.index.registry`) also add and delete in place and reclaim space with ``compact``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, runtime_checkable

from ..types import Hit


@runtime_checkable
class Engine(Protocol):
    """Build, open, search, size and describe."""

    @classmethod
    def build(cls, path: str | os.PathLike, doc_ids: Sequence[str], items: Any, **options: Any) -> "Engine":
        """Write an index of ``items`` (one per id, in order) to ``path``, published atomically."""

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "Engine":
        """Open the index at ``path`` (arrays memory-mapped)."""

    def search(self, queries: Any, k: int = 10, subset: Sequence[str] | None = None, **options: Any) -> list[list[Hit]]:
        """The top ``k`` live documents per query, best first; ``subset`` restricts them to these ids."""

    @property
    def doc_ids(self) -> list[str]:
        """The live document ids, in index order."""

    def __len__(self) -> int:
        """The number of live documents."""

    def info(self) -> dict[str, Any]:
        """Kind, counts, sizes and configuration, as ``latelex info`` prints them."""


@runtime_checkable
class MutableEngine(Engine, Protocol):
    """An engine that changes in place: each change is committed atomically by the engine's manifest."""

    def add(self, doc_ids: Sequence[str], items: Any) -> Any:
        """Append documents (ids not live in the index)."""

    def delete(self, doc_ids: Sequence[str]) -> Any:
        """Remove live documents from search results."""
