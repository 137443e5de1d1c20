"""Token vectors stored flat on disk, shared by the engines that keep them (flat, ivfpq).

``write_vectors`` streams per-document (L_i, dim) matrices into a float16 ``vectors.npy`` without knowing T in
advance; :class:`StoredTokenVectors` holds what such an index knows about itself (path, manifest, ids, dim) and
the checks its ``search`` shares (query matrices, subsets).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import DuplicateIdError, IndexFormatError, InputError

#: Token vectors are stored as little-endian float16.
VECTOR_DTYPE = np.dtype("<f2")


def as_matrix(value: Any, what: str) -> np.ndarray:
    """A 2-D numpy view of a tensor or array (CPU, detached); ``what`` names it in errors."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        value = value.numpy()
    elif not isinstance(value, np.ndarray):
        raise InputError(f"{what} is a {type(value).__name__}, not a torch tensor or numpy array")
    if value.ndim != 2:
        raise InputError(f"{what} has shape {tuple(value.shape)}; expected a (tokens, dim) matrix")
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise InputError(f"{what} has dtype {value.dtype}; expected floating point values")
    return value


class NpyRowWriter:
    """Writes a 2-D ``.npy`` file row block by row block, before its number of rows is known.

    numpy's header reserves room for the first axis to grow (that is what ``GROWTH_AXIS_MAX_DIGITS`` is for),
    so the header written for zero rows is rewritten in place, at the same length, with the final shape.
    """

    def __init__(self, path: Path, dim: int, dtype: np.dtype):
        self.path = path
        self.dim = dim
        self.dtype = dtype
        self.rows = 0
        self._sha = hashlib.sha256()
        self._file = open(path, "wb", buffering=1 << 20)
        self._header_bytes = self._write_header()

    def _write_header(self) -> int:
        start = self._file.tell()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, self.dim),
        }
        np.lib.format.write_array_header_1_0(self._file, header)
        return self._file.tell() - start

    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype=self.dtype)
        self._file.write(memoryview(data).cast("B"))
        self.rows += data.shape[0]

    def close(self) -> dict[str, Any]:
        """Finish the file and return its manifest entry (the same fields as ``storage.save_array``)."""
        self._file.seek(0)
        if self._write_header() != self._header_bytes:
            raise IndexFormatError(f"internal error: the .npy header of {self.path} changed length")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        return {
            "file": self.path.name,
            "dtype": self.dtype.str,
            "shape": [self.rows, self.dim],
            "bytes": self.path.stat().st_size,
            "sha256": sha.hexdigest(),
        }

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()


def check_doc_ids(doc_ids: Sequence[str]) -> list[str]:
    ids = list(doc_ids)
    if not ids:
        raise InputError("cannot build an index of an empty corpus: no document ids were given")
    seen: dict[str, int] = {}
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str):
            raise InputError(f"document id at position {i} is a {type(doc_id).__name__}, not a string")
        if doc_id in seen:
            raise DuplicateIdError(f"document id {doc_id!r} appears twice (positions {seen[doc_id]} and {i})")
        seen[doc_id] = i
    return ids


def write_vectors(directory: Path, ids: list[str], embeddings: Iterable) -> tuple[np.ndarray, dict, int]:
    """Stream the documents' vectors into ``vectors.npy``; return per-document lengths, its entry and dim."""
    n = len(ids)
    lengths = np.zeros(n, dtype=np.int64)
    writer: NpyRowWriter | None = None
    dim = 0
    count = 0
    try:
        for i, embedding in enumerate(embeddings):
            if i >= n:
                raise InputError(f"more embeddings than document ids ({n}); give one matrix per document")
            doc = ids[i]
            matrix = as_matrix(embedding, f"the embedding of document {doc!r}")
            if matrix.shape[0] == 0:
                raise InputError(f"document {doc!r} has no token vectors; an encoder gives every text at least one")
            if writer is None:
                dim = int(matrix.shape[1])
                if dim == 0:
                    raise InputError(f"document {doc!r} has vectors of dimension 0")
                writer = NpyRowWriter(directory / "vectors.npy", dim, VECTOR_DTYPE)
            elif matrix.shape[1] != dim:
                raise InputError(
                    f"document {doc!r} has vectors of dimension {matrix.shape[1]}, "
                    f"but earlier documents have dimension {dim}"
                )
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
                half = matrix.astype(VECTOR_DTYPE)
            if not np.isfinite(half).all():
                if np.issubdtype(matrix.dtype, np.floating) and not np.isfinite(matrix).all():
                    raise InputError(f"document {doc!r} has NaN or infinite values in its vectors")
                raise InputError(f"document {doc!r} has values beyond float16's range (+-65504)")
            writer.write(half)
            lengths[i] = matrix.shape[0]
            count = i + 1
        if count < n:
            raise InputError(f"{n} document ids but only {count} embeddings; give one matrix per document")
        if writer is None:  # unreachable: n >= 1 documents were written
            raise InputError("no embeddings were given")
        return lengths, writer.close(), dim
    finally:
        if writer is not None:
            writer.abort()


class StoredTokenVectors:
    """Base of indexes that keep every token vector (float16 (T, dim) ``_vectors``, (N + 1,) ``_offsets``).

    Subclasses set ``_path``, ``_manifest``, ``_vectors``, ``_offsets``, ``_doc_ids`` and ``_positions = None``.
    """

    _path: Path
    _manifest: dict[str, Any]
    _vectors: np.ndarray
    _offsets: np.ndarray
    _doc_ids: list[str]
    _positions: dict[str, int] | None

    def _checked_query(self, query: Any, i: int) -> np.ndarray:
        """Query ``i`` as a float32 (Lq, dim) array, after checking its shape, dimension and values."""
        matrix = as_matrix(query, f"query {i}")
        if matrix.shape[1] != self.dim:
            raise InputError(
                f"query {i} has vectors of dimension {matrix.shape[1]}, but the index has dimension {self.dim}"
            )
        if matrix.shape[0] == 0:
            raise InputError(f"query {i} has no token vectors")
        out = np.ascontiguousarray(matrix, dtype=np.float32)
        if not np.isfinite(out).all():
            raise InputError(f"query {i} has NaN or infinite values")
        return out

    def _subset_positions(self, subset: Sequence[str]) -> np.ndarray:
        """Sorted, de-duplicated positions of the ``subset`` ids."""
        if isinstance(subset, str):
            raise InputError("subset must be a sequence of document ids, not one string")
        if self._positions is None:
            self._positions = {doc_id: i for i, doc_id in enumerate(self._doc_ids)}
        positions = []
        unknown = []
        for doc_id in subset:
            position = self._positions.get(doc_id)
            if position is None:
                unknown.append(doc_id)
            else:
                positions.append(position)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:3])
            if len(unknown) > 3:
                shown += f" and {len(unknown) - 3} more"
            raise InputError(f"subset names documents that are not in the index: {shown}")
        return np.unique(np.asarray(positions, dtype=np.int64))

    # --- description ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def doc_ids(self) -> list[str]:
        """The document ids in index order (a copy)."""
        return list(self._doc_ids)

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def similarity(self) -> str:
        return str(self._manifest["similarity"])

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed ``manifest.json`` (a copy)."""
        return json.loads(json.dumps(self._manifest))

    @property
    def encoder(self) -> dict | None:
        """The encoder description given at build time, or None."""
        encoder = self._manifest.get("encoder")
        return None if encoder is None else json.loads(json.dumps(encoder))

    def _sizes(self) -> dict[str, Any]:
        """Counts and sizes every kind reports: documents, token vectors, dim, bytes on disk (all files)."""
        total = sum(f.stat().st_size for f in self._path.rglob("*") if f.is_file())
        tokens = int(self._vectors.shape[0])
        return {
            "path": str(self._path),
            "documents": len(self),
            "token_vectors": tokens,
            "dim": self.dim,
            "similarity": self.similarity,
            "bytes_on_disk": total,
            "bytes_per_token_vector": total / tokens if tokens else 0.0,
        }
