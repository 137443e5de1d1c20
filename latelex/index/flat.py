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

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import IndexFormatError, InputError
from ..scoring.maxsim import SIMILARITIES, maxsim_packed
from ..scoring.topk import topk_rows
from ..types import Hit
from .token_vectors import VECTOR_DTYPE, StoredTokenVectors, check_doc_ids, write_vectors
from .storage import (
    decode_strings,
    encode_strings,
    load_array,
    read_manifest,
    save_array,
    staged_directory,
    write_manifest,
)

KIND = "flat"
FORMAT_VERSION = 1

#: Bound, in bytes, on the token vectors a subset search copies out of the memory map at once.
GATHER_BYTES = 64 * 2**20


class FlatIndex(StoredTokenVectors):
    """Exact late-interaction search over float16 token vectors. Build with :meth:`build`, reopen with :meth:`open`."""

    def __init__(
        self, path: Path, manifest: dict[str, Any], vectors: np.ndarray, offsets: np.ndarray, doc_ids: list[str]
    ):
        self._path = path
        self._manifest = manifest
        self._vectors = vectors
        self._offsets = offsets
        self._doc_ids = doc_ids
        self._positions: dict[str, int] | None = None

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
        if similarity not in SIMILARITIES:
            raise InputError(f"similarity must be 'cosine' or 'l2', not {similarity!r}")
        if encoder is not None:
            if not isinstance(encoder, dict):
                raise InputError(f"encoder must be a dict or None, not {type(encoder).__name__}")
            try:
                json.dumps(encoder, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InputError(f"encoder must be JSON-serialisable ({exc})") from None
        ids = check_doc_ids(doc_ids)
        final = Path(path).expanduser().resolve()
        with staged_directory(final, overwrite=overwrite) as tmp:
            lengths, entry, dim = write_vectors(tmp, ids, embeddings)
            offsets = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            blob, id_offsets = encode_strings(ids)
            arrays = {
                "vectors": entry,
                "offsets": save_array(tmp, "offsets", offsets),
                "doc_ids_bytes": save_array(tmp, "doc_ids_bytes", blob),
                "doc_ids_offsets": save_array(tmp, "doc_ids_offsets", id_offsets),
            }
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
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "FlatIndex":
        """Open the index at ``path``, vectors memory-mapped; ``verify`` also checks every array's checksum."""
        directory = Path(path).expanduser()
        manifest = read_manifest(directory, (KIND,), FORMAT_VERSION)
        if not isinstance(manifest.get("arrays"), dict) or not isinstance(manifest.get("counts"), dict):
            raise IndexFormatError(f"{directory}: the manifest lacks its arrays or counts; rebuild the index")
        vectors = load_array(directory, manifest, "vectors", mmap=True, verify=verify)
        offsets = np.array(load_array(directory, manifest, "offsets", mmap=False, verify=verify))
        blob = load_array(directory, manifest, "doc_ids_bytes", mmap=False, verify=verify)
        id_offsets = load_array(directory, manifest, "doc_ids_offsets", mmap=False, verify=verify)

        def broken(what: str) -> IndexFormatError:
            return IndexFormatError(f"{directory}: {what}; rebuild the index")

        counts = manifest.get("counts", {})
        dim = manifest.get("dim")
        if manifest.get("similarity") not in SIMILARITIES:
            raise broken(f"unknown similarity {manifest.get('similarity')!r} in the manifest")
        if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.dtype != VECTOR_DTYPE:
            raise broken(f"vectors have shape {vectors.shape} and dtype {vectors.dtype}, not (T, {dim}) float16")
        n = counts.get("documents")
        if offsets.ndim != 1 or offsets.shape[0] != (n or 0) + 1 or id_offsets.shape != offsets.shape:
            raise broken("the offsets do not match the number of documents")
        if offsets[0] != 0 or offsets[-1] != vectors.shape[0] or (np.diff(offsets) <= 0).any():
            raise broken("the document offsets are inconsistent with the vectors")
        if int(id_offsets[0]) != 0 or int(id_offsets[-1]) != blob.shape[0] or (np.diff(id_offsets) < 0).any():
            raise broken("the document id offsets are inconsistent")
        try:
            doc_ids = decode_strings(blob, id_offsets)
        except UnicodeDecodeError:
            raise broken("the document ids are not valid UTF-8") from None
        return cls(directory, manifest, vectors, offsets, doc_ids)

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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
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
            f"token_vectors={self._vectors.shape[0]}, dim={self.dim})"
        )
