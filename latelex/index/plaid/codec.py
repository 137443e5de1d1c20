"""The ColBERTv2 residual codec: k-means centroids, residuals quantised to 1, 2 or 4 bits, bit packing.

A token vector v is stored as the id of its nearest centroid c (by inner product) and, for every dimension d,
the bucket of the residual v[d] - c[d] among 2^nbits buckets. Bucket cutoffs and the value each bucket decodes
to (its weight) are learned from held-out residuals. ColBERTv2 takes quantiles, one set for all dimensions.
This codec learns one set per dimension, which costs dim * 2^nbits floats and fits anisotropic encoders (a
plain MiniLM's dimensions differ in spread by an order of magnitude) much better, and refines the quantiles
with Lloyd-Max steps (each weight becomes its bucket's mean), which lowers the error for the same bits.

Packed layout: a vector's dim buckets, nbits bits each, first dimension in the most significant bits of the
first byte: (n, dim * nbits / 8) uint8.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ...errors import InputError

#: Vectors bucketised at once (bounds the (block, dim, 2^nbits - 1) comparison tensor).
BLOCK = 8192


def codes_dtype(n_centroids: int) -> np.dtype:
    """The smallest dtype holding centroid ids: uint16 up to 65,536 centroids, else int32."""
    return np.dtype("<u2") if n_centroids <= 2**16 else np.dtype("<i4")


#: Above this many centroids, k-means and assignment find nearest centroids through an HNSW graph over the
#: centroids instead of comparing with every one (exact assignment costs n * C * dim multiply-adds: 15 TFLOP
#: for 1.2M 384-dim vectors and 16k centroids). A vector occasionally gets its second-nearest centroid; the
#: residual then carries a little more, which the quantiles learned on the same assignment absorb.
EXACT_UP_TO = 4096
HNSW_M = 32
HNSW_EF = 64


def _centroid_index(centroids: np.ndarray, exact: bool):
    import faiss

    dim = centroids.shape[1]
    if exact or centroids.shape[0] <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = HNSW_EF
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a parallel HNSW insert builds a different graph from run to run
    try:
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    return index


#: The centroid search structures of the codecs used lately in this process, by a digest of their centroids:
#: building one takes about a second for 16k centroids, which every add to a reopened index would otherwise pay.
_INDEX_CACHE: "OrderedDict[bytes, object]" = OrderedDict()
_INDEX_CACHE_SIZE = 4
_INDEX_CACHE_LOCK = threading.Lock()


def _cached_centroid_index(centroids: np.ndarray):
    """:func:`_centroid_index` (approximate above EXACT_UP_TO) of ``centroids``, built once per process. The graph is
    built single-threaded, so a cached one is the one a fresh build would make: assignments do not depend on it."""
    data = np.ascontiguousarray(centroids, dtype=np.float32)
    key = hashlib.blake2b(data.tobytes(), digest_size=16).digest() + repr(data.shape).encode()
    with _INDEX_CACHE_LOCK:
        index = _INDEX_CACHE.get(key)
        if index is not None:
            _INDEX_CACHE.move_to_end(key)
            return index
    index = _centroid_index(data, exact=False)
    with _INDEX_CACHE_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


def train_centroids(sample: np.ndarray, n_centroids: int, niters: int, seed: int, exact: bool = False) -> np.ndarray:
    """(n_centroids, dim) float32 unit-norm k-means centroids of ``sample`` (n, dim) float32, n >= n_centroids.

    Spherical k-means (faiss): centroids are normalised after every step, as ColBERTv2 normalises them, and
    vectors go to the centroid of largest inner product (through an HNSW graph above :data:`EXACT_UP_TO`).
    """
    import faiss

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n, dim = sample.shape
    if n < n_centroids:
        raise InputError(f"k-means needs at least {n_centroids} sample vectors, got {n}; lower n_centroids")
    cp = faiss.ClusteringParameters()
    cp.niter = niters
    cp.seed = seed
    cp.spherical = True
    cp.max_points_per_centroid = n
    cp.min_points_per_centroid = 1
    cp.verbose = False
    clustering = faiss.Clustering(dim, n_centroids, cp)
    if exact or n_centroids <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = 32
    clustering.train(sample, index)
    centroids = faiss.vector_to_array(clustering.centroids).reshape(n_centroids, dim).astype(np.float32)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    return centroids / np.maximum(norms, 1e-12)


def assign(vectors: np.ndarray, centroids: np.ndarray, block: int = 65536, exact: bool = False) -> np.ndarray:
    """(n,) int64 id of the centroid with the largest inner product with each of ``vectors`` (n, dim)
    (found through an HNSW graph above :data:`EXACT_UP_TO` centroids unless ``exact``)."""
    index = _centroid_index(centroids, exact)
    out = np.empty(vectors.shape[0], dtype=np.int64)
    for a in range(0, vectors.shape[0], block):
        part = np.ascontiguousarray(vectors[a : a + block], dtype=np.float32)
        _, ids = index.search(part, 1)
        out[a : a + block] = ids[:, 0]
    if (out < 0).any():  # an HNSW search can come back empty-handed; fall back to exact for those
        bad = np.flatnonzero(out < 0)
        out[bad] = assign(vectors[bad], centroids, exact=True)
    return out


def unpack_table(nbits: int) -> np.ndarray:
    """(256, 8 // nbits) uint8: the buckets a packed byte holds, most significant first."""
    per_byte = 8 // nbits
    byte = np.arange(256, dtype=np.uint16)[:, None]
    shifts = (8 - nbits * (np.arange(per_byte) + 1)).astype(np.uint16)[None, :]
    return ((byte >> shifts) & ((1 << nbits) - 1)).astype(np.uint8)


def pack_buckets(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """Pack (n, dim) buckets in [0, 2^nbits) into (n, dim * nbits / 8) uint8."""
    n, dim = buckets.shape
    per_byte = 8 // nbits
    grouped = buckets.astype(np.uint8).reshape(n, dim // per_byte, per_byte)
    shifts = (8 - nbits * (np.arange(per_byte) + 1)).astype(np.uint8)
    return np.bitwise_or.reduce(grouped << shifts, axis=2).astype(np.uint8)


def unpack_buckets(packed: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_buckets`: (n, dim) uint8 buckets."""
    n = packed.shape[0]
    return unpack_table(nbits)[np.asarray(packed)].reshape(n, -1)


#: Unit-length decoding keeps one byte per vector: the scale 1 / ||decoded|| on a log2 grid of 256 steps over
#: [2^-0.5, 2^0.5] (steps of 0.27 %, so a rescaled vector's length is 1 within 0.14 %; lengths outside the grid
#: are clipped to its ends). Scoring then costs one table lookup instead of recomputing each vector's length.
SCALE_TABLE = (2.0 ** np.linspace(-0.5, 0.5, 256)).astype(np.float32)


def scale_bytes(decoded: np.ndarray) -> np.ndarray:
    """(n,) uint8: the :data:`SCALE_TABLE` entry nearest to 1 / ||row|| for each row of ``decoded`` (n, dim)."""
    length = np.maximum(np.linalg.norm(np.asarray(decoded, dtype=np.float32), axis=1), 1e-12)
    steps = np.rint((-np.log2(length) + 0.5) * 255)
    return np.clip(steps, 0, 255).astype(np.uint8)


#: Lloyd-Max refinement steps of the residual buckets (0: ColBERTv2's plain quantiles).
LLOYD_ITERS = 20


def lloyd_max(residuals: np.ndarray, levels: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cutoffs (dim, levels - 1), weights (dim, levels))`` float32 quantising each column of ``residuals``
    (h, dim) to ``levels`` values: quantile buckets refined by ``iters`` Lloyd-Max steps (weights are the
    means of their buckets, cutoffs the midpoints between neighbouring weights). Cutoffs ascend per row and
    every weight lies inside its bucket."""
    h, dim = residuals.shape
    cutoffs = np.quantile(residuals, np.arange(1, levels) / levels, axis=0).T.astype(np.float64)  # (dim, levels - 1)
    weights = np.quantile(residuals, (np.arange(levels) + 0.5) / levels, axis=0).T.astype(np.float64)  # (dim, levels)
    if iters:
        ordered = np.sort(residuals.astype(np.float64), axis=0)  # (h, dim)
        prefix = np.zeros((h + 1, dim))
        np.cumsum(ordered, axis=0, out=prefix[1:])
        columns = np.arange(dim)
        for step in range(iters + 1):
            # Bucket b of dimension d holds ordered[bounds[d, b] : bounds[d, b + 1], d].
            inner = np.stack([np.searchsorted(ordered[:, d], cutoffs[d], side="right") for d in range(dim)])
            bounds = np.concatenate([np.zeros((dim, 1), np.int64), inner, np.full((dim, 1), h)], axis=1)
            counts = np.diff(bounds, axis=1)
            sums = prefix[bounds[:, 1:], columns[:, None]] - prefix[bounds[:, :-1], columns[:, None]]
            weights = np.where(counts > 0, sums / np.maximum(counts, 1), weights)
            if step == iters:
                break
            cutoffs = (weights[:, :-1] + weights[:, 1:]) / 2
    return np.ascontiguousarray(cutoffs, dtype=np.float32), np.ascontiguousarray(weights, dtype=np.float32)


@dataclass(frozen=True)
class ResidualCodec:
    """Centroids plus per-dimension residual buckets.

    ``centroids``: (C, dim) float32 (values representable in float16, as stored);
    ``cutoffs``: (dim, 2^nbits - 1) float32, ascending per row; ``weights``: (dim, 2^nbits) float32.
    ``unit_norm``: decompressed vectors are scaled to unit length, as ColBERTv2 does for its cosine indexes
    (the stored vectors were unit vectors, so this removes the part of the error that changes their length).
    The scale is kept as one byte per vector (:meth:`scales`, :data:`SCALE_TABLE`).
    """

    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    nbits: int
    unit_norm: bool = False

    @classmethod
    def train(cls, sample: np.ndarray, heldout: np.ndarray, n_centroids: int, nbits: int, niters: int, seed: int) -> "ResidualCodec":
        """Centroids by k-means on ``sample`` (n, dim); bucket cutoffs and weights from ``heldout`` (h, dim)."""
        centroids = train_centroids(sample, n_centroids, niters, seed).astype(np.float16).astype(np.float32)
        return cls.fit_buckets(centroids, heldout, nbits)

    @classmethod
    def fit_buckets(cls, centroids: np.ndarray, heldout: np.ndarray, nbits: int, iters: int = LLOYD_ITERS) -> "ResidualCodec":
        """Learn the residual buckets of ``heldout`` (h, dim) vectors against fixed ``centroids`` (C, dim).

        Per dimension, the buckets start at the residuals' quantiles (ColBERTv2's choice) and are refined by
        ``iters`` Lloyd-Max steps: each weight becomes the mean of the residuals in its bucket, each cutoff the
        midpoint between neighbouring weights. On real ColBERT vectors this cuts the reconstruction error by
        about a third at nbits 2 for the same bytes (see the PLAID bench).
        """
        heldout = np.asarray(heldout, dtype=np.float32)
        if heldout.shape[0] == 0:
            raise InputError("the codec needs at least one held-out vector to learn its residual buckets")
        codec = cls(np.ascontiguousarray(centroids, dtype=np.float32), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), nbits)
        residuals = heldout - centroids[codec.assign(heldout)]
        cutoffs, weights = lloyd_max(residuals, 1 << nbits, iters)
        return cls(np.ascontiguousarray(centroids, dtype=np.float32), cutoffs, weights, nbits)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def packed_width(self) -> int:
        """Bytes of one packed residual: dim * nbits / 8."""
        return self.dim * self.nbits // 8

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """(n,) int64 nearest centroid of each of ``vectors`` (n, dim); the centroid search structure is cached
        (per process, by the centroids' bytes, so every reopening of an index for an add reuses it)."""
        index = self.__dict__.get("_index")
        if index is None:
            index = _cached_centroid_index(self.centroids)
            object.__setattr__(self, "_index", index)
        out = np.empty(vectors.shape[0], dtype=np.int64)
        for a in range(0, vectors.shape[0], 65536):
            _, ids = index.search(np.ascontiguousarray(vectors[a : a + 65536], dtype=np.float32), 1)
            out[a : a + 65536] = ids[:, 0]
        if (out < 0).any():
            bad = np.flatnonzero(out < 0)
            out[bad] = assign(vectors[bad], self.centroids, exact=True)
        return out

    def bucketize(self, residuals: np.ndarray) -> np.ndarray:
        """(n, dim) uint8 bucket of each residual value (``residuals`` (n, dim))."""
        out = np.empty(residuals.shape, dtype=np.uint8)
        for a in range(0, residuals.shape[0], BLOCK):
            part = residuals[a : a + BLOCK]
            out[a : a + BLOCK] = (part[:, :, None] > self.cutoffs[None, :, :]).sum(axis=2, dtype=np.uint8)
        return out

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes (n,), packed (n, dim * nbits / 8) uint8)`` of ``vectors`` (n, dim), any float dtype.

        Works through ``vectors`` in blocks, so a float16 chunk is never copied whole to float32.
        """
        n = vectors.shape[0]
        codes = np.empty(n, dtype=codes_dtype(self.n_centroids))
        packed = np.empty((n, self.packed_width), dtype=np.uint8)
        for a in range(0, n, 4 * BLOCK):
            part = np.asarray(vectors[a : a + 4 * BLOCK], dtype=np.float32)
            ids = self.assign(part)
            codes[a : a + 4 * BLOCK] = ids
            for b in range(0, part.shape[0], BLOCK):
                residual = part[b : b + BLOCK] - self.centroids[ids[b : b + BLOCK]]
                packed[a + b : a + b + residual.shape[0]] = pack_buckets(self.bucketize(residual), self.nbits)
        return codes, packed

    def decode_raw(self, codes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """(n, dim) float32 centroid plus decoded residual, before any rescaling."""
        buckets = unpack_buckets(packed, self.nbits)  # (n, dim)
        residual = self.weights[np.arange(self.dim)[None, :], buckets]
        return self.centroids[np.asarray(codes, dtype=np.intp)] + residual

    def scales(self, codes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """(n,) uint8 scale bytes (:data:`SCALE_TABLE`) that bring each decoded vector to unit length."""
        out = np.empty(len(codes), dtype=np.uint8)
        for a in range(0, len(codes), BLOCK):
            out[a : a + BLOCK] = scale_bytes(self.decode_raw(codes[a : a + BLOCK], packed[a : a + BLOCK]))
        return out

    def decompress(self, codes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """(n, dim) float32 vectors from ``codes`` (n,) and ``packed`` (n, dim * nbits / 8) uint8; with
        ``unit_norm``, rescaled by their scale bytes to unit length (within 0.14 %)."""
        out = self.decode_raw(codes, packed)
        if self.unit_norm:
            out *= SCALE_TABLE[scale_bytes(out)][:, None]
        return out
