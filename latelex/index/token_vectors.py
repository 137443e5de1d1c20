"""Token vectors stored flat on disk, shared by the engines that keep them (flat, ivfpq).

``write_vectors`` streams per-document (L_i, dim) matrices into a float16 ``vectors.npy`` without knowing T in
advance; :func:`save_doc_arrays` and :func:`load_token_vectors` write and read back, checked, the arrays such an
index keeps beside it (offsets, document ids); :class:`StoredTokenVectors` holds what such an index knows about
itself (path, manifest, ids, dim) and the checks its ``search`` shares (query matrices, subsets).

The input checks of a late-interaction build (:func:`check_doc_ids`, :func:`check_new_ids`, :func:`check_encoder`,
and :func:`subset_positions` from :mod:`latelex.index.ids`, which every index shares) serve the PLAID index as well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..config import same_encoder
from ..errors import DuplicateIdError, IndexFormatError, InputError
from ..fsio import file_sha256
from ..scoring.maxsim import SIMILARITIES
from .ids import check_doc_ids as check_ids
from .ids import subset_positions
from .storage import LazyChecks, decode_strings, encode_strings, load_array, save_array

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
        return {
            "file": self.path.name,
            "dtype": self.dtype.str,
            "shape": [self.rows, self.dim],
            "bytes": self.path.stat().st_size,
            "sha256": file_sha256(self.path),
        }

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()


def check_doc_ids(doc_ids: Sequence[str]) -> list[str]:
    """The ids of a new index as a list, after checking there is at least one and they are unique strings."""
    ids = check_new_ids(doc_ids)
    if not ids:
        raise InputError("cannot build an index of an empty corpus: no document ids were given")
    return ids


def check_new_ids(doc_ids: Sequence[str], existing: set[str] | None = None) -> list[str]:
    """The ids as a list, after checking they are non-empty unique strings (:func:`latelex.index.ids.check_doc_ids`)
    and, when ``existing`` is given, that none is already in the index."""
    ids = check_ids(doc_ids)
    if existing:
        for doc_id in ids:
            if doc_id in existing:
                raise DuplicateIdError(f"document {doc_id!r} is already in the index; delete it first to replace it")
    return ids


def check_encoder(encoder: Any) -> dict | None:
    """A copy of the encoder description to store in a manifest, after checking it is a JSON-ready dict (or None)."""
    if encoder is None:
        return None
    if not isinstance(encoder, dict):
        raise InputError(f"encoder must be a dict or None, not {type(encoder).__name__}")
    try:
        json.dumps(encoder, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"encoder must be JSON-serialisable ({exc})") from None
    return json.loads(json.dumps(encoder))


def check_same_encoder(recorded: dict | None, given: Any, path: Any) -> None:
    """Refuse vectors for an index built by another encoder: ``given`` (the spec of the encoder that made the new
    vectors) must equal the ``recorded`` spec, except for the backend that ran it (torch or onnx, see
    :func:`latelex.config.same_encoder`); an index that records an encoder needs ``given``."""
    if recorded is None:
        return
    if given is None:
        raise InputError(f"{path} was built with {recorded.get('model', 'an encoder')}; pass encoder=<that encoder's "
                         f"spec()> with new vectors, so that another model's vectors cannot be mixed in")
    if not same_encoder(check_encoder(given), recorded):  # the backend that ran the model does not count
        raise InputError(f"these vectors come from a different encoder than {path} was built with; "
                         "encode them with the index's encoder or rebuild the index")


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int, after checking it is a positive integer (not a bool); ``name`` names it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def check_build_options(similarity: str, encoder: Any) -> None:
    """Check the ``similarity`` and ``encoder`` arguments of a flat or IVFPQ build."""
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity must be 'cosine' or 'l2', not {similarity!r}")
    check_encoder(encoder)


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


def save_doc_arrays(directory: Path, ids: list[str], offsets: np.ndarray, vectors_entry: dict) -> dict[str, dict]:
    """Write the (N + 1,) ``offsets`` and the document ids beside ``vectors.npy``; return the manifest's arrays."""
    blob, id_offsets = encode_strings(ids)
    return {
        "vectors": vectors_entry,
        "offsets": save_array(directory, "offsets", offsets),
        "doc_ids_bytes": save_array(directory, "doc_ids_bytes", blob),
        "doc_ids_offsets": save_array(directory, "doc_ids_offsets", id_offsets),
    }


def load_token_vectors(directory: Path, manifest: dict[str, Any], verify: bool,
                       lazy: LazyChecks | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The memory-mapped vectors, the offsets and the document ids of an index written with :func:`save_doc_arrays`,
    checked against the manifest (whose ``arrays`` and ``counts`` must already be known to be dicts). ``lazy``:
    where a large vector file's checksum is left for its first read (see :class:`StoredTokenVectors`)."""
    vectors = load_array(directory, manifest, "vectors", mmap=True, verify=verify, lazy=lazy)
    offsets = np.array(load_array(directory, manifest, "offsets", mmap=False, verify=verify))
    blob = load_array(directory, manifest, "doc_ids_bytes", mmap=False, verify=verify)
    id_offsets = load_array(directory, manifest, "doc_ids_offsets", mmap=False, verify=verify)

    def broken(what: str) -> IndexFormatError:
        return IndexFormatError(f"{directory}: {what}; rebuild the index")

    counts = manifest["counts"]
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
    return vectors, offsets, doc_ids


class DescribedIndex:
    """What a late-interaction index (flat, ivfpq, plaid) tells from its directory and manifest.

    Subclasses set ``_path`` and ``_manifest``.
    """

    _path: Path
    _manifest: dict[str, Any]

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed ``manifest.json`` (a copy)."""
        return json.loads(json.dumps(self._manifest))

    @property
    def encoder(self) -> dict | None:
        """The encoder description given at build time, or None."""
        encoder = self._manifest.get("encoder")
        return None if encoder is None else json.loads(json.dumps(encoder))


class StoredTokenVectors(DescribedIndex):
    """Base of indexes that keep every token vector (float16 (T, dim) ``_vectors``, (N + 1,) ``_offsets``).

    The constructor only stores what an ``open`` read; subclasses with more to keep extend it. ``lazy``: the
    checksum of a large vector file still to be checked; the first read of ``_vectors`` checks it
    (``_stored_vectors`` gives the array unchecked, for its shape).
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], vectors: np.ndarray, offsets: np.ndarray, doc_ids: list[str],
        lazy: LazyChecks | None = None,
    ):
        self._path = path
        self._manifest = manifest
        self._stored_vectors = vectors
        self._lazy = lazy
        self._offsets = offsets
        self._doc_ids = doc_ids
        self._positions: dict[str, int] | None = None

    @property
    def _vectors(self) -> np.ndarray:
        """The (T, dim) float16 vectors, checked against their checksum on the first read."""
        if self._lazy is not None:
            self._lazy.ensure("vectors")
        return self._stored_vectors

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
        if self._positions is None:
            self._positions = {doc_id: i for i, doc_id in enumerate(self._doc_ids)}
        return subset_positions(subset, self._positions)

    # --- description ---------------------------------------------------------------------------------

    @property
    def doc_ids(self) -> list[str]:
        """The document ids in index order (a copy)."""
        return list(self._doc_ids)

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def similarity(self) -> str:
        return str(self._manifest["similarity"])

    def _sizes(self) -> dict[str, Any]:
        """Counts and sizes every kind reports: documents, token vectors, dim, bytes on disk (all files)."""
        total = sum(f.stat().st_size for f in self._path.rglob("*") if f.is_file())
        tokens = int(self._stored_vectors.shape[0])
        return {
            "path": str(self._path),
            "documents": len(self),
            "token_vectors": tokens,
            "dim": self.dim,
            "similarity": self.similarity,
            "bytes_on_disk": total,
            "bytes_per_token_vector": total / tokens if tokens else 0.0,
        }
