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

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import DuplicateIdError, IndexFormatError, InputError
from ..scoring.maxsim import SIMILARITIES, maxsim_packed
from ..scoring.topk import topk_rows
from ..types import Hit
from .storage import (
    MANIFEST,
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
VECTOR_DTYPE = np.dtype("<f2")

#: Bound, in bytes, on the token vectors a subset search copies out of the memory map at once.
GATHER_BYTES = 64 * 2**20


def _as_matrix(value: Any, what: str) -> np.ndarray:
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


class _NpyRowWriter:
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


def _check_doc_ids(doc_ids: Sequence[str]) -> list[str]:
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


def _check_overwrite_target(path: Path) -> None:
    """Refuse to replace an existing directory that is neither empty nor a latelex index."""
    if not path.exists():
        return
    if not path.is_dir():
        raise IndexFormatError(f"{path} exists and is not a directory; refusing to replace it with an index")
    if (path / MANIFEST).exists():
        return
    if any(path.iterdir()):
        raise IndexFormatError(
            f"{path} is a non-empty directory without a {MANIFEST}; refusing to overwrite what is not an index"
        )


class FlatIndex:
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
        ids = _check_doc_ids(doc_ids)
        final = Path(path).expanduser().resolve()
        if overwrite:
            _check_overwrite_target(final)

        with staged_directory(final, overwrite=overwrite) as tmp:
            lengths, entry, dim = cls._write_vectors(tmp, ids, embeddings)
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

    @staticmethod
    def _write_vectors(directory: Path, ids: list[str], embeddings: Iterable) -> tuple[np.ndarray, dict, int]:
        """Stream the documents' vectors into ``vectors.npy``; return per-document lengths, its entry and dim."""
        n = len(ids)
        lengths = np.zeros(n, dtype=np.int64)
        writer: _NpyRowWriter | None = None
        dim = 0
        count = 0
        try:
            for i, embedding in enumerate(embeddings):
                if i >= n:
                    raise InputError(f"more embeddings than document ids ({n}); give one matrix per document")
                doc = ids[i]
                matrix = _as_matrix(embedding, f"the embedding of document {doc!r}")
                if matrix.shape[0] == 0:
                    raise InputError(f"document {doc!r} has no token vectors; an encoder gives every text at least one")
                if writer is None:
                    dim = int(matrix.shape[1])
                    if dim == 0:
                        raise InputError(f"document {doc!r} has vectors of dimension 0")
                    writer = _NpyRowWriter(directory / "vectors.npy", dim, VECTOR_DTYPE)
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
        matrix = _as_matrix(query, f"query {i}")
        if matrix.shape[1] != self.dim:
            raise InputError(
                f"query {i} has vectors of dimension {matrix.shape[1]}, but the index has dimension {self.dim}"
            )
        if matrix.shape[0] == 0:
            raise InputError(f"query {i} has no token vectors")
        tensor = torch.from_numpy(np.array(matrix, dtype=np.float32))
        if not torch.isfinite(tensor).all():
            raise InputError(f"query {i} has NaN or infinite values")
        return tensor

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

    def info(self) -> dict[str, Any]:
        """Kind, path, sizes and similarity of this index, for people and for ``latelex info``."""
        total = sum(f.stat().st_size for f in self._path.rglob("*") if f.is_file())
        tokens = int(self._vectors.shape[0])
        return {
            "kind": KIND,
            "path": str(self._path),
            "documents": len(self),
            "token_vectors": tokens,
            "dim": self.dim,
            "similarity": self.similarity,
            "bytes_on_disk": total,
            "bytes_per_token_vector": total / tokens if tokens else 0.0,
        }

    def __repr__(self) -> str:
        return (
            f"FlatIndex({str(self._path)!r}, documents={len(self)}, "
            f"token_vectors={self._vectors.shape[0]}, dim={self.dim})"
        )
