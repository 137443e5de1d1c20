"""The flat late-interaction index: every token vector kept as float16, every search exact.

For collections of a few thousand to about 100k documents, where scoring all token vectors is fast
enough and no approximation is wanted (it is also the reference the compressed PLAID index is tested
against). On disk, one directory:

* ``vectors.npy``: float16 (T, dim), the token vectors of all documents one after another;
* ``offsets.npy``: int64 (N + 1,), document n owns rows ``offsets[n]:offsets[n + 1]``;
* ``doc_ids_bytes.npy`` / ``doc_ids_offsets.npy``: the document ids, UTF-8 bytes plus offsets;
* ``manifest.json``, written last: kind ``"flat"``, format version, similarity, dim, counts, the spec of
  the encoder that made the vectors (stored only: an index holds arrays, never a model) and a checksum
  per array.

Vectors are memory-mapped when the index is opened; a search streams through them in bounded chunks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import IndexFormatError, InputError
from ..scoring.maxsim import maxsim_packed
from ..scoring.topk import topk_rows
from ..types import Hit
from .token_vectors import (
    VECTOR_DTYPE,
    StoredTokenVectors,
    check_build_options,
    check_doc_ids,
    load_token_vectors,
    positive_int,
    save_doc_arrays,
    write_vectors,
)
from .commit import retry_open
from .storage import LazyChecks, read_manifest, staged_directory, write_manifest

KIND = "flat"
FORMAT_VERSION = 1

#: Bound, in bytes, on the token vectors a subset search copies out of the memory map at once.
GATHER_BYTES = 64 * 2**20


class FlatIndex(StoredTokenVectors):
    """Exact late-interaction search over float16 token vectors. Build with :meth:`build`, reopen with :meth:`open`."""

    # --- building and opening ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        doc_ids: Sequence[str],
        embeddings: Iterable[torch.Tensor | np.ndarray],
        *,
        similarity: str = "cosine",
        encoder: dict | None = None,
        overwrite: bool = False,
    ) -> "FlatIndex":
        """Write an index of ``embeddings`` (one (L_i, dim) matrix per document, in ``doc_ids`` order) to ``path``.

        ``embeddings`` may be a generator: each matrix is converted to float16 and written out as it arrives.
        ``encoder`` is a JSON-serialisable description of the model that produced the vectors, stored in the
        manifest for higher layers. The build goes to a temporary directory that replaces ``path`` only once
        complete; an existing index at ``path`` is replaced only with ``overwrite=True``.
        """
        check_build_options(similarity, encoder)
        ids = check_doc_ids(doc_ids)
        final = Path(path).expanduser().resolve()
        with staged_directory(final, overwrite=overwrite) as tmp:
            lengths, entry, dim = write_vectors(tmp, ids, embeddings)
            offsets = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            arrays = save_doc_arrays(tmp, ids, offsets, entry)
            write_manifest(
                tmp,
                kind=KIND,
                format_version=FORMAT_VERSION,
                arrays=arrays,
                encoder=encoder,
                similarity=similarity,
                dim=dim,
                counts={"documents": len(ids), "token_vectors": int(offsets[-1])},
            )
        return cls.open(final)

    @classmethod
    @retry_open
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "FlatIndex":
        """Open the index at ``path``, vectors memory-mapped; ``verify`` also checks every array's checksum."""
        directory = Path(path).expanduser()
        manifest = read_manifest(directory, (KIND,), FORMAT_VERSION)
        if not isinstance(manifest.get("arrays"), dict) or not isinstance(manifest.get("counts"), dict):
            raise IndexFormatError(f"{directory}: the manifest lacks its arrays or counts; rebuild the index")
        lazy = LazyChecks()
        vectors, offsets, doc_ids = load_token_vectors(directory, manifest, verify, lazy)
        return cls(directory, manifest, vectors, offsets, doc_ids, lazy)

    # --- searching -----------------------------------------------------------------------------------

    def search(
        self,
        queries: Sequence[torch.Tensor | np.ndarray],
        k: int = 10,
        subset: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> list[list[Hit]]:
        """The ``k`` best documents for each query by exact MaxSim, best first (ties: earlier document first).

        ``queries``: one (Lq_i, dim) matrix per query; lengths may differ. ``subset``: restrict the search
        to these document ids (an unknown id is an error; an empty subset gives empty results).
        ``batch_size`` queries are scored together in one pass over the vectors.
        """
        positive_int(k, "k")
        positive_int(batch_size, "batch_size")
        if isinstance(queries, (torch.Tensor, np.ndarray)):
            raise InputError("queries must be a sequence of (tokens, dim) matrices, one per query, not one tensor")
        matrices = [self._query_matrix(q, i) for i, q in enumerate(queries)]
        positions = None if subset is None else self._subset_positions(subset)
        if positions is not None and positions.size == 0:
            return [[] for _ in matrices]
        results: list[list[Hit]] = []
        for start in range(0, len(matrices), batch_size):
            batch = matrices[start : start + batch_size]
            longest = max(m.shape[0] for m in batch)
            Q = torch.zeros((len(batch), longest, self.dim), dtype=torch.float32)
            q_mask = torch.zeros((len(batch), longest), dtype=torch.bool)
            for row, matrix in enumerate(batch):
                Q[row, : matrix.shape[0]] = matrix
                q_mask[row, : matrix.shape[0]] = True
            scores = self._score(Q, q_mask, positions)
            indices, values = topk_rows(scores, k)
            if positions is not None:
                indices = torch.from_numpy(positions)[indices]
            for row_indices, row_values in zip(indices.tolist(), values.tolist()):
                results.append([Hit(self._doc_ids[j], float(v)) for j, v in zip(row_indices, row_values)])
        return results

    def _query_matrix(self, query: Any, i: int) -> torch.Tensor:
        return torch.from_numpy(self._checked_query(query, i))

    def _score(self, Q: torch.Tensor, q_mask: torch.Tensor, positions: np.ndarray | None) -> torch.Tensor:
        """(B, N) scores against every document, or (B, len(positions)) against those documents."""
        similarity = self.similarity
        if positions is None:
            return maxsim_packed(Q, self._vectors, self._offsets, q_mask=q_mask, similarity=similarity)
        starts = self._offsets[positions]
        lengths = self._offsets[positions + 1] - starts
        budget = max(1, GATHER_BYTES // (self.dim * VECTOR_DTYPE.itemsize))
        # Group consecutive subset documents so that each group holds about `budget` rows.
        group = (np.cumsum(lengths) - 1) // budget
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [positions.size]])
        parts = []
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            docs = positions[a:b]
            offsets = np.zeros(b - a + 1, dtype=np.int64)
            np.cumsum(lengths[a:b], out=offsets[1:])
            if docs[-1] - docs[0] == b - a - 1:  # consecutive documents: a view of the memory map
                rows = self._vectors[starts[a] : starts[a] + offsets[-1]]
            else:  # copy the runs of consecutive documents out of the memory map
                breaks = np.flatnonzero(np.diff(docs) != 1) + 1
                run_first = np.concatenate([[0], breaks])
                run_last = np.concatenate([breaks, [b - a]]) - 1
                rows = np.concatenate(
                    [
                        self._vectors[self._offsets[docs[f]] : self._offsets[docs[l] + 1]]
                        for f, l in zip(run_first.tolist(), run_last.tolist())
                    ]
                )
            parts.append(maxsim_packed(Q, rows, offsets, q_mask=q_mask, similarity=similarity))
        return torch.cat(parts, dim=1)

    # --- description ---------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Kind, path, sizes and similarity of this index, for people and for ``latelex info``."""
        return {"kind": KIND, **self._sizes()}

    def __repr__(self) -> str:
        return (
            f"FlatIndex({str(self._path)!r}, documents={len(self)}, "
            f"token_vectors={self._stored_vectors.shape[0]}, dim={self.dim})"
        )
