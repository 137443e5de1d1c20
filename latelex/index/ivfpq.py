"""ColBERT v1 end-to-end retrieval: a FAISS IVFPQ index over all token vectors, then exact MaxSim.

This is how the first ColBERT paper retrieved from a whole collection (``colbert.index_faiss`` followed by
``colbert.retrieve``). Building:

1. every document's token vectors are stored as float16, exactly as in the flat index;
2. an IVFPQ index (``partitions`` k-means cells, product quantisation with ``m`` sub-quantisers of ``nbits``
   bits, 16 x 8 bits in ColBERT v1) is trained on a random ``sample`` fraction of the token vectors;
3. every token vector is added to it, labelled with the number of the document it belongs to.

Searching a query of Lq token vectors:

1. each query token fetches its ``faiss_depth`` approximate nearest token vectors from ``nprobe`` cells;
2. the documents owning those vectors (at most Lq * faiss_depth, usually far fewer) form the candidate set;
3. the candidates are re-ranked by exact MaxSim over their stored float16 vectors.

With ``nprobe`` = ``partitions`` and ``faiss_depth`` >= the number of token vectors every document is a
candidate and the ranking equals the flat index's. The IVF cells and PQ codes use the inner product for the
``"cosine"`` similarity and the L2 distance for ``"l2"``, so that candidate generation agrees with the re-ranking.

On disk, one directory:

* ``vectors.npy``: float16 (T, dim); ``offsets.npy``: int64 (N + 1,); document n owns rows
  ``offsets[n]:offsets[n + 1]`` (the flat index's layout);
* ``doc_ids_bytes.npy`` / ``doc_ids_offsets.npy``: the document ids, UTF-8 bytes plus offsets;
* ``ivfpq.faiss``: the trained IVFPQ index written by ``faiss.write_index`` (a FAISS binary, never a pickle);
  its labels are document numbers, so it doubles as the token -> document map;
* ``manifest.json``, written last: kind ``"ivfpq"``, similarity, dim, counts, the resolved configuration,
  the encoder spec, a checksum per array and the size and checksum of the FAISS file (under ``files``).

Requires ``faiss-cpu`` (imported when an index is built or opened, not when this module is imported).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..config import config_from_dict, config_to_dict
from ..errors import ConfigError, IndexFormatError, InputError
from ..fsio import file_sha256
from ..npyio import load_npy
from ..scoring.maxsim import maxsim_packed
from ..scoring.topk import topk
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
from .storage import LazyChecks, read_checked, read_manifest, staged_directory, write_manifest

KIND = "ivfpq"
FORMAT_VERSION = 1
FAISS_FILE = "ivfpq.faiss"

#: Fewest training vectors per IVF cell the default ``partitions`` allows (FAISS warns below 39).
MIN_POINTS_PER_PARTITION = 40
#: Token vectors converted to float32 and added to FAISS at once while building.
ADD_BLOCK_ROWS = 1 << 16
#: Bound, in bytes, on the float16 vectors of candidate documents gathered for one exact re-ranking step.
GATHER_BYTES = 64 * 2**20
#: Bound on (query tokens x faiss_depth) neighbour entries one FAISS call returns (about 12 bytes each).
SEARCH_ENTRIES = 1 << 22
#: Documents at which the build shows a progress bar when ``show_progress`` is None.
PROGRESS_MIN_DOCUMENTS = 10_000


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("the ivfpq index needs FAISS: pip install faiss-cpu") from None
    return faiss


def default_partitions(token_vectors: int, training_vectors: int) -> int:
    """ColBERT v1's rule, ``2 ** ceil(log2(8 * sqrt(T)))`` cells, lowered to the largest power of two that
    leaves each cell at least :data:`MIN_POINTS_PER_PARTITION` training vectors (at least 1 cell)."""
    wanted = 1 << math.ceil(math.log2(8 * math.sqrt(max(1, token_vectors))))
    cap = max(1, training_vectors // MIN_POINTS_PER_PARTITION)
    cap = 1 << (cap.bit_length() - 1)
    return max(1, min(wanted, cap))


def default_subquantizers(dim: int) -> int:
    """16 sub-quantisers (ColBERT v1's choice for dim 128) when 16 divides ``dim``, else the largest divisor
    of ``dim`` below 16."""
    return max(m for m in range(1, 17) if dim % m == 0)


@dataclass(frozen=True)
class IvfPqConfig:
    """How an :class:`IvfPqIndex` is trained and searched (ColBERT v1's ``index_faiss`` / ``retrieve`` flags).

    ``partitions``: IVF cells (``--partitions``); None picks :func:`default_partitions` at build time.
    ``sample``: fraction of all token vectors the cells and codebooks are trained on (``--sample``).
    ``m``: PQ sub-quantisers, a divisor of dim; None picks :func:`default_subquantizers`.
    ``nbits``: bits per sub-quantiser code (8: 256 centroids per sub-space).
    ``nprobe``: cells visited per query token (``--nprobe``); ``faiss_depth``: nearest token vectors fetched
    per query token (``--faiss_depth``). Both are search defaults that :meth:`IvfPqIndex.search` can override.
    ``kmeans_niters``: k-means iterations for the IVF cells and the PQ codebooks. FAISS's default (and so
    ColBERT v1's) is 25; 10 is the default here because training the cells dominates the build on a CPU
    (T * sample * partitions * dim multiply-adds per iteration) and the cells only pick candidates.
    ``seed``: seeds the training sample and the k-means runs.
    """

    partitions: int | None = None
    sample: float = 0.3
    m: int | None = None
    nbits: int = 8
    nprobe: int = 32
    faiss_depth: int = 1024
    kmeans_niters: int = 10
    seed: int = 12345

    def __post_init__(self) -> None:
        for name in ("partitions", "m"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, not {value!r}")
        for name in ("nprobe", "faiss_depth", "kmeans_niters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        if isinstance(self.nbits, bool) or not isinstance(self.nbits, int) or not 1 <= self.nbits <= 16:
            raise ConfigError(f"nbits must be an integer from 1 to 16, not {self.nbits!r}")
        if isinstance(self.sample, bool) or not isinstance(self.sample, (int, float)) or not 0 < self.sample <= 1:
            raise ConfigError(f"sample must be a fraction in (0, 1], not {self.sample!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, not {self.seed!r}")


def _training_size(config: IvfPqConfig, token_vectors: int) -> int:
    return max(1, min(token_vectors, int(round(token_vectors * config.sample))))


def _resolve(config: IvfPqConfig, token_vectors: int, dim: int) -> IvfPqConfig:
    """``config`` with ``partitions`` and ``m`` filled in for a collection, after checking it can be trained."""
    n_train = _training_size(config, token_vectors)
    m = config.m if config.m is not None else default_subquantizers(dim)
    if dim % m:
        raise InputError(f"m={m} sub-quantisers do not divide the vector dimension {dim}; choose a divisor of {dim}")
    partitions = config.partitions if config.partitions is not None else default_partitions(token_vectors, n_train)
    if partitions > n_train:
        raise InputError(
            f"partitions={partitions} needs at least that many training vectors, but sample={config.sample} of "
            f"{token_vectors} token vectors gives {n_train}; lower partitions or raise sample"
        )
    if n_train < (1 << config.nbits):
        raise InputError(
            f"{n_train} training vectors cannot train {1 << config.nbits} PQ centroids (nbits={config.nbits}); "
            f"raise sample, lower nbits, or use a flat index for so small a collection"
        )
    return dataclasses.replace(config, partitions=partitions, m=m)


def _progress(total: int, desc: str, show: bool | None, unit: str):
    from tqdm.auto import tqdm

    if show is None:
        show = total >= PROGRESS_MIN_DOCUMENTS
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False)


def _counted(items: Iterable, bar) -> Iterator:
    for item in items:
        yield item
        bar.update(1)


class IvfPqIndex(StoredTokenVectors):
    """ColBERT v1 end-to-end retrieval: IVFPQ candidate generation, exact MaxSim re-ranking.

    Build with :meth:`build`, reopen with :meth:`open`, query with :meth:`search`. The interface is
    :class:`~latelex.index.flat.FlatIndex`'s, plus the ``nprobe`` and ``faiss_depth`` search knobs.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], config: IvfPqConfig, faiss_index: Any,
                 vectors: np.ndarray, offsets: np.ndarray, doc_ids: list[str], lazy: LazyChecks | None = None):
        super().__init__(path, manifest, vectors, offsets, doc_ids, lazy)
        self._config = config
        self._faiss_index = faiss_index

    # --- building and opening ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        doc_ids: Sequence[str],
        embeddings: Iterable[torch.Tensor | np.ndarray],
        *,
        config: IvfPqConfig | None = None,
        similarity: str = "cosine",
        encoder: dict | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> "IvfPqIndex":
        """Write an index of ``embeddings`` (one (L_i, dim) matrix per document, in ``doc_ids`` order) to ``path``.

        ``embeddings`` may be a generator; its vectors are stored as float16 as they arrive, then the IVFPQ
        index is trained on a ``config.sample`` fraction of them and every vector is added to it.
        ``encoder`` is a JSON-serialisable description of the model that made the vectors (stored only).
        The build goes to a temporary directory that replaces ``path`` only once complete; an existing index
        at ``path`` is replaced only with ``overwrite=True``.
        """
        faiss = _faiss()
        config = IvfPqConfig() if config is None else config
        if not isinstance(config, IvfPqConfig):
            raise InputError(f"config must be an IvfPqConfig, not {type(config).__name__}")
        check_build_options(similarity, encoder)
        ids = check_doc_ids(doc_ids)
        final = Path(path).expanduser().resolve()
        with staged_directory(final, overwrite=overwrite) as tmp:
            with _progress(len(ids), "Storing vectors", show_progress, "doc") as bar:
                lengths, vectors_entry, dim = write_vectors(tmp, ids, _counted(embeddings, bar))
            offsets = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            vectors = load_npy(tmp / "vectors.npy", mmap=True)
            total = int(offsets[-1])
            resolved = _resolve(config, total, dim)

            index = cls._train(faiss, vectors, resolved, similarity)
            show = show_progress if show_progress is not None else len(ids) >= PROGRESS_MIN_DOCUMENTS
            with _progress(total, "Adding to IVFPQ", show, "vec") as bar:
                for a in range(0, total, ADD_BLOCK_ROWS):
                    b = min(total, a + ADD_BLOCK_ROWS)
                    rows = np.arange(a, b, dtype=np.int64)
                    labels = np.searchsorted(offsets, rows, side="right") - 1
                    index.add_with_ids(np.ascontiguousarray(vectors[a:b], dtype=np.float32), labels)
                    bar.update(b - a)
            faiss_path = tmp / FAISS_FILE
            faiss.write_index(index, str(faiss_path))
            del vectors  # release the memory map before the directory is moved

            arrays = save_doc_arrays(tmp, ids, offsets, vectors_entry)
            files = {"faiss": {"file": FAISS_FILE, "bytes": faiss_path.stat().st_size, "sha256": file_sha256(faiss_path)}}
            write_manifest(
                tmp,
                kind=KIND,
                format_version=FORMAT_VERSION,
                arrays=arrays,
                files=files,
                encoder=encoder,
                similarity=similarity,
                dim=dim,
                config=config_to_dict(resolved),
                counts={"documents": len(ids), "token_vectors": total},
            )
        return cls.open(final)

    @staticmethod
    def _train(faiss: Any, vectors: np.ndarray, config: IvfPqConfig, similarity: str) -> Any:
        """An untrained-then-trained ``faiss.IndexIVFPQ`` for (T, dim) ``vectors`` (nothing added yet)."""
        total, dim = vectors.shape
        metric = faiss.METRIC_INNER_PRODUCT if similarity == "cosine" else faiss.METRIC_L2
        quantizer = faiss.IndexFlatIP(dim) if similarity == "cosine" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, config.partitions, config.m, config.nbits, metric)
        index.cp.seed = index.pq.cp.seed = config.seed
        index.cp.niter = index.pq.cp.niter = config.kmeans_niters
        rng = np.random.default_rng(config.seed)
        chosen = np.sort(rng.choice(total, size=_training_size(config, total), replace=False))
        sample = np.ascontiguousarray(vectors[chosen], dtype=np.float32)
        try:
            index.train(sample)
        except RuntimeError as exc:  # FAISS reports its own preconditions this way
            raise InputError(f"FAISS could not train the IVFPQ index: {str(exc).splitlines()[-1]}") from None
        return index

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "IvfPqIndex":
        """Open the index at ``path``: vectors memory-mapped, the FAISS index read into memory.

        The FAISS file and the small arrays are always checked against their SHA-256; ``verify`` also checks the
        (memory-mapped) vectors.
        """
        directory = Path(path).expanduser()
        manifest = read_manifest(directory, (KIND,), FORMAT_VERSION)

        def broken(what: str) -> IndexFormatError:
            return IndexFormatError(f"{directory}: {what}; rebuild the index")

        for field in ("arrays", "counts", "files", "config"):
            if not isinstance(manifest.get(field), dict):
                raise broken(f"the manifest lacks its {field}")
        try:
            config = config_from_dict(IvfPqConfig, manifest["config"])
        except (ConfigError, TypeError) as exc:
            raise broken(f"the manifest's configuration is invalid ({exc})") from None
        if config.partitions is None or config.m is None:
            raise broken("the manifest's configuration is not resolved")
        lazy = LazyChecks()
        vectors, offsets, doc_ids = load_token_vectors(directory, manifest, verify, lazy)
        dim = manifest.get("dim")
        similarity = manifest.get("similarity")

        faiss_index = cls._read_faiss(directory, manifest)
        faiss = _faiss()
        metric = faiss.METRIC_INNER_PRODUCT if similarity == "cosine" else faiss.METRIC_L2
        if (
            faiss_index.d != dim
            or faiss_index.ntotal != vectors.shape[0]
            or faiss_index.nlist != config.partitions
            or faiss_index.pq.M != config.m
            or faiss_index.pq.nbits != config.nbits
            or faiss_index.metric_type != metric
        ):
            raise broken(f"{FAISS_FILE} does not match the manifest")
        return cls(directory, manifest, config, faiss_index, vectors, offsets, doc_ids, lazy)

    @staticmethod
    def _read_faiss(directory: Path, manifest: dict[str, Any]) -> Any:
        """The FAISS index of ``manifest["files"]["faiss"]``, read whole into memory and checked against its size and
        SHA-256 before FAISS parses a byte of it (``verify`` or not: it is read fully anyway), so that a damaged file
        is one :class:`IndexFormatError`, never a crash or a silently wrong index."""
        faiss = _faiss()
        entry = manifest["files"].get("faiss")
        if not isinstance(entry, dict) or "file" not in entry or "bytes" not in entry:
            raise IndexFormatError(f"{directory}: the manifest lists no FAISS file; rebuild the index")
        data = read_checked(directory, manifest, "faiss", what="FAISS index")
        path = directory / entry["file"]
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError (and SWIG errors) for input it cannot parse
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise IndexFormatError(f"{path} is not a readable FAISS index ({reason}); rebuild the index") from None
        if not isinstance(index, faiss.IndexIVFPQ):
            raise IndexFormatError(f"{path} holds a {type(index).__name__}, not an IVFPQ index; rebuild the index")
        return index

    # --- searching -----------------------------------------------------------------------------------

    def search(
        self,
        queries: Sequence[torch.Tensor | np.ndarray],
        k: int = 10,
        subset: Sequence[str] | None = None,
        *,
        nprobe: int | None = None,
        faiss_depth: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best candidate documents for each query by exact MaxSim, best first (ties: earlier document).

        ``queries``: one (Lq_i, dim) matrix per query. Candidates are the documents owning the
        ``faiss_depth`` nearest token vectors (from ``nprobe`` cells) of any query token; a query gets fewer
        than ``k`` hits when it has fewer candidates. ``subset`` restricts candidate generation to these
        document ids (an unknown id is an error; an empty subset gives empty results). ``nprobe`` and
        ``faiss_depth`` default to the values in the index's configuration.
        """
        faiss = _faiss()
        k = positive_int(k, "k")
        nprobe = self._config.nprobe if nprobe is None else positive_int(nprobe, "nprobe")
        depth = self._config.faiss_depth if faiss_depth is None else positive_int(faiss_depth, "faiss_depth")
        depth = min(depth, len(self._stored_vectors))
        if isinstance(queries, (torch.Tensor, np.ndarray)):
            raise InputError("queries must be a sequence of (tokens, dim) matrices, one per query, not one tensor")
        matrices = [self._checked_query(q, i) for i, q in enumerate(queries)]
        selector = None
        if subset is not None:
            positions = self._subset_positions(subset)
            if positions.size == 0:
                return [[] for _ in matrices]
            selector = faiss.IDSelectorBatch(positions)
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)

        results: list[list[Hit]] = []
        # Query tokens are sent to FAISS in groups of whole queries, bounded by SEARCH_ENTRIES neighbours.
        start = 0
        while start < len(matrices):
            stop, rows = start, 0
            while stop < len(matrices) and (stop == start or (rows + matrices[stop].shape[0]) * depth <= SEARCH_ENTRIES):
                rows += matrices[stop].shape[0]
                stop += 1
            group = matrices[start:stop]
            _, labels = self._faiss_index.search(np.concatenate(group), depth, params=params)
            row = 0
            for matrix in group:
                found = labels[row : row + matrix.shape[0]]
                row += matrix.shape[0]
                candidates = np.unique(found[found >= 0])
                results.append(self._rerank(matrix, candidates, k))
            start = stop
        return results

    def _rerank(self, query: np.ndarray, candidates: np.ndarray, k: int) -> list[Hit]:
        """Exact MaxSim of one (Lq, dim) query against the sorted ``candidates``; the top ``k`` as hits."""
        if candidates.size == 0:
            return []
        Q = torch.from_numpy(query)
        similarity = self.similarity
        if candidates.size == len(self._doc_ids):  # every document: score the memory map in place
            scores = maxsim_packed(Q, self._vectors, self._offsets, similarity=similarity)
        else:
            parts = [
                maxsim_packed(Q, rows, offsets, similarity=similarity)
                for rows, offsets in self._gather(candidates)
            ]
            scores = torch.cat(parts)
        indices, values = topk(scores, k)
        return [Hit(self._doc_ids[int(candidates[i])], float(v)) for i, v in zip(indices.tolist(), values.tolist())]

    def _gather(self, positions: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The float16 rows (R, dim) and offsets (n + 1,) of sorted document ``positions``, in groups of
        about :data:`GATHER_BYTES`."""
        starts = self._offsets[positions]
        lengths = self._offsets[positions + 1] - starts
        budget = max(1, GATHER_BYTES // (self.dim * VECTOR_DTYPE.itemsize))
        group = (np.cumsum(lengths) - 1) // budget
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [positions.size]])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            offsets = np.zeros(b - a + 1, dtype=np.int64)
            np.cumsum(lengths[a:b], out=offsets[1:])
            if positions[b - 1] - positions[a] == b - a - 1:  # consecutive documents: one slice of the map
                rows = self._vectors[starts[a] : starts[a] + offsets[-1]]
            else:  # row numbers of every token of every document, read in one fancy index
                shift = np.repeat(starts[a:b] - offsets[:-1], lengths[a:b])
                rows = self._vectors[np.arange(offsets[-1], dtype=np.int64) + shift]
            yield rows, offsets

    # --- description ---------------------------------------------------------------------------------

    @property
    def config(self) -> IvfPqConfig:
        """The configuration the index was built with, ``partitions`` and ``m`` resolved."""
        return self._config

    def info(self) -> dict[str, Any]:
        """Kind, path, sizes (all files counted), similarity and configuration, for people and ``latelex info``."""
        sizes = self._sizes()
        tokens = sizes["token_vectors"]
        faiss_bytes = (self._path / FAISS_FILE).stat().st_size
        return {"kind": KIND, **sizes, "faiss_bytes_per_token_vector": faiss_bytes / tokens if tokens else 0.0,
                "config": config_to_dict(self._config)}

    def __repr__(self) -> str:
        return (f"IvfPqIndex({str(self._path)!r}, documents={len(self)}, token_vectors={self._stored_vectors.shape[0]}, "
                f"dim={self.dim}, partitions={self._config.partitions})")
