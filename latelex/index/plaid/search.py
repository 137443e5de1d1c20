"""PLAID search, one query at a time (queries run in parallel threads; the kernels release the GIL).

For a query Q (Lq, dim) and centroids C (n_centroids, dim):

1. *candidates*: S = C Q^T (n_centroids, Lq); the ``ncells`` best centroids of each query token; the union of
   their inverted lists (documents with a token vector assigned to one of them). Where it measures faster
   (:mod:`.cpu_paths`: a sixth of the float32 time with AVX-512 VNNI, under half with AVX2's u8s8 kernels)
   S is an 8-bit integer product of centroids and query tokens quantised row by row, as it only ranks
   candidates; the rows the exact stage reads are recomputed in float32 first, so final scores are float32 MaxSim;
2. *pruned centroid interaction*: each candidate scores sum_q max over its token vectors of S[code, q],
   counting only token vectors whose centroid scores at least ``centroid_score_threshold`` for some query
   token (read through those few centroids' inverted lists where that is the shorter read); the best ``ndocs``
   go on. These passes read S as int16, in units of each query token's largest
   reachable score / 32767 (half the bytes per row read at random);
3. *centroid interaction*: the same without pruning; the best ``max(k, ndocs // 4)`` go on;
4. *exact*: those documents' vectors are scored by MaxSim as if decompressed (to unit length for format-2
   indexes): centroid scores plus sums of per-byte residual scores, gathered by torch's ``embedding_bag``; the
   best ``k`` are returned.

Ties are broken by document position (earlier first) at every stage, so results do not depend on thread
count or batch composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np
import torch

from .codec import SCALE_TABLE
from .cpu_paths import FULL_LEVELS, u8s8_product

#: LLVM fast-math flags of the scoring kernels: reassociation and fused multiply-add let the loops over query
#: tokens vectorise; no-NaN / no-infinity are left out because the kernels start maxima at -inf.
FAST = {"reassoc", "contract", "nsz", "arcp"}


#: Largest magnitude of the int16 centroid scores that the candidate stages compare (:func:`best_cells`).
CELL_MAX = 32767


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def best_cells(raw, row_scale, col_scale, lq, threshold, cell_scale, cells):  # pragma: no cover - compiled
    """One pass over the centroid scores ``raw[c, q] * row_scale[c] * col_scale[q]`` (``raw`` (C, Lqp), float32
    scores or integer products; ``row_scale`` (C,), ``col_scale`` (Lqp,) float32).

    Returns the best centroid of each of the first ``lq`` query tokens (lq,) int64 and which centroids score
    at least ``threshold`` with one of them (C,) bool (the pruning mask); columns from ``lq`` on are padding.
    Writes ``cells`` (C, Lqp) int16: each score divided by ``cell_scale[q]`` (Lqp,) and rounded, clipped to
    +-:data:`CELL_MAX`, which the centroid-interaction passes compare (half the bytes of float32 rows).
    """
    n, lqp = raw.shape
    lim = np.float32(CELL_MAX)
    inv = np.empty(lqp, dtype=np.float32)
    for q in range(lqp):
        inv[q] = col_scale[q] / cell_scale[q]
    best = np.zeros(lq, dtype=np.int64)
    top = np.full(lq, -np.inf, dtype=np.float32)
    keep = np.zeros(n, dtype=np.bool_)
    for c in range(n):
        f = row_scale[c]
        for q in range(lqp):
            x = np.rint(np.float32(raw[c, q]) * f * inv[q])
            cells[c, q] = np.int16(min(max(x, -lim), lim))
        high = -np.inf
        for q in range(lq):
            v = np.float32(raw[c, q]) * f * col_scale[q]
            if v > top[q]:
                top[q] = v
                best[q] = c
            if v > high:
                high = v
        keep[c] = high >= threshold
    return best, keep


@numba.njit(nogil=True, cache=True)
def gather_candidates(cells, ivf_offsets, ivf_docs, allowed):  # pragma: no cover - compiled
    """Sorted unique documents of the inverted lists of ``cells`` that ``allowed`` (N,) bool lets through."""
    total = 0
    for c in cells:
        total += ivf_offsets[c + 1] - ivf_offsets[c]
    buf = np.empty(total, dtype=np.int64)
    j = 0
    for c in cells:
        for e in range(ivf_offsets[c], ivf_offsets[c + 1]):
            buf[j] = ivf_docs[e]
            j += 1
    buf.sort()
    out = np.empty(total, dtype=np.int64)
    n = 0
    last = -1
    for i in range(total):
        d = buf[i]
        if d != last and allowed[d]:
            out[n] = d
            n += 1
        last = d
    return out[:n]


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def centroid_interaction(cells, cell_scale, lq, codes, doc_offsets, docs, keep):  # pragma: no cover - compiled
    """(len(docs),) float32: sum over the ``lq`` query tokens of the best centroid score among each document's
    token vectors whose centroid ``keep`` (n_centroids,) bool lets through. ``cells`` (n_centroids, Lqp)
    int16 and ``cell_scale`` (Lqp,): the scores as :func:`best_cells` writes them; Lqp >= lq is a multiple of
    the vector width (padding columns are compared but not summed)."""
    lqp = cells.shape[1]
    out = np.empty(docs.shape[0], dtype=np.float32)
    best = np.empty(lqp, dtype=np.int16)
    for i in range(docs.shape[0]):
        d = docs[i]
        for q in range(lqp):
            best[q] = -CELL_MAX - 1
        for t in range(doc_offsets[d], doc_offsets[d + 1]):
            c = codes[t]
            if keep[c]:
                for q in range(lqp):
                    v = cells[c, q]
                    best[q] = v if v > best[q] else best[q]
        s = np.float32(0.0)
        for q in range(lq):
            if best[q] > -CELL_MAX - 1:
                s += np.float32(best[q]) * cell_scale[q]
        out[i] = s
    return out


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def interaction_by_lists(cells, cell_scale, lq, keep, ivf_offsets, ivf_docs, docs, n_documents):  # pragma: no cover - compiled
    """:func:`centroid_interaction` of ``docs`` (sorted, unique) with the centroids ``keep`` lets through, read
    through those centroids' inverted lists (``ivf_offsets`` (C + 1,), ``ivf_docs`` (E,) global positions of
    the ``n_documents``) instead of through the documents' token vectors: a document has a token vector of
    centroid c exactly when it is on c's list, and a maximum does not depend on the order it is taken in, so
    the scores are the same. It reads one list entry per (kept centroid, document) pair, against one code per
    token vector of every candidate."""
    lqp = cells.shape[1]
    slot = np.full(n_documents, -1, dtype=np.int32)
    for i in range(docs.shape[0]):
        slot[docs[i]] = i
    best = np.full((docs.shape[0], lqp), -CELL_MAX - 1, dtype=np.int16)
    for c in range(keep.shape[0]):
        if keep[c]:
            for e in range(ivf_offsets[c], ivf_offsets[c + 1]):
                i = slot[ivf_docs[e]]
                if i >= 0:
                    for q in range(lqp):
                        v = cells[c, q]
                        best[i, q] = v if v > best[i, q] else best[i, q]
    out = np.empty(docs.shape[0], dtype=np.float32)
    for i in range(docs.shape[0]):
        s = np.float32(0.0)
        for q in range(lq):
            if best[i, q] > -CELL_MAX - 1:
                s += np.float32(best[i, q]) * cell_scale[q]
        out[i] = s
    return out


@numba.njit(nogil=True, cache=True)
def lists_are_shorter(doc_offsets, docs, keep, ivf_offsets):  # pragma: no cover - compiled
    """Whether the inverted lists of the centroids ``keep`` lets through hold fewer entries than ``docs`` have
    token vectors, counting the slot :func:`interaction_by_lists` fills for each document as an eighth of an
    entry: the read :func:`pruned_interaction` picks."""
    tokens = 0
    for i in range(docs.shape[0]):
        tokens += doc_offsets[docs[i] + 1] - doc_offsets[docs[i]]
    pairs = 0
    for c in range(keep.shape[0]):
        if keep[c]:
            pairs += ivf_offsets[c + 1] - ivf_offsets[c]
    return pairs + (doc_offsets.shape[0] - 1) // 8 < tokens


@numba.njit(nogil=True, cache=True)
def pruned_interaction(cells, cell_scale, lq, codes, doc_offsets, docs, keep, ivf_offsets, ivf_docs):  # pragma: no cover - compiled
    """:func:`centroid_interaction` of ``docs`` with the centroids ``keep`` lets through (the pruned pass), by
    whichever of two computations of the same scores reads fewer entries (:func:`lists_are_shorter`): the
    candidates' token codes, or the kept centroids' inverted lists (:func:`interaction_by_lists`). On SciFact
    with ColBERT's threshold of 0.5, about 7 % of the candidates' token vectors have a kept centroid, and the
    lists are the shorter read by 11 times (``scripts/plaid_stage_profile.py``)."""
    if lists_are_shorter(doc_offsets, docs, keep, ivf_offsets):
        return interaction_by_lists(cells, cell_scale, lq, keep, ivf_offsets, ivf_docs, docs, doc_offsets.shape[0] - 1)
    return centroid_interaction(cells, cell_scale, lq, codes, doc_offsets, docs, keep)


@numba.njit(nogil=True, cache=True)
def used_centroids(codes, doc_offsets, docs, n_centroids):  # pragma: no cover - compiled
    """The distinct centroids that the token vectors of ``docs`` are assigned to, in order of first use:
    ``(used (u,) int64, row (n_centroids,) int32)`` with ``row[used[i]] == i`` and -1 for unused centroids."""
    row = np.full(n_centroids, -1, dtype=np.int32)
    out = np.empty(n_centroids, dtype=np.int64)
    n = 0
    for i in range(docs.shape[0]):
        d = docs[i]
        for t in range(doc_offsets[d], doc_offsets[d + 1]):
            c = codes[t]
            if row[c] < 0:
                row[c] = n
                out[n] = c
                n += 1
    return out[:n], row


@numba.njit(nogil=True, cache=True)
def decompress_rows(codes, packed, centroids, byte_weights, out, scales):  # pragma: no cover - compiled
    """Fill ``out`` (n, dim) float32 with centroids[codes] plus the residual each packed byte decodes to,
    times ``scales`` (n,) float32 (ones, or each vector's unit-length scale).

    ``byte_weights``: (W, 256, per_byte) float32, the residual values of the dimensions held by byte j when
    it has a given value.
    """
    n, width = packed.shape
    per_byte = byte_weights.shape[2]
    for i in range(n):
        c = codes[i]
        f = scales[i]
        for j in range(width):
            b = packed[i, j]
            base = j * per_byte
            for p in range(per_byte):
                out[i, base + p] = (centroids[c, base + p] + byte_weights[j, b, p]) * f


@numba.njit(nogil=True, cache=True)
def residual_lookups(packed, row_base, doc_offsets, docs, out):  # pragma: no cover - compiled
    """Fill ``out`` (t, W) (int32, or any integer type) with, for each token vector of ``docs`` in turn, the row
    ``j * 256 + byte`` of the flattened query table (W * 256, Lqp) that its packed byte j selects; t is the number
    of those token vectors. ``packed``: the residual rows (W bytes each) of one chunk, whose first row is global
    token ``row_base``; every document in ``docs`` lies in that chunk. Returns ``out``."""
    width = packed.shape[1]
    k = 0
    for i in range(docs.shape[0]):
        d = docs[i]
        for t in range(doc_offsets[d], doc_offsets[d + 1]):
            r = t - row_base
            for j in range(width):
                out[k, j] = j * 256 + packed[r, j]
            k += 1
    return out


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def document_maxsim(residual, scores_t, score_row, lq, codes, doc_offsets, docs, scales, scale_table):  # pragma: no cover - compiled
    """(len(docs),) float32: the sum over the ``lq`` query tokens of each document's best token score, a token's
    score being ``(scores_t[score_row[code], q] + residual[k, q]) * scale_table[scales[t]]`` (no scaling when
    ``scales`` is empty), with ``residual`` (t, Lqp) the residual parts of the documents' tokens one after another
    (:func:`residual_lookups`' order) and ``scores_t`` (u, Lqp) the centroids' scores (see :func:`exact_interaction`)."""
    lqp = scores_t.shape[1]
    scaled = scales.shape[0] > 0
    out = np.empty(docs.shape[0], dtype=np.float32)
    best = np.empty(lqp, dtype=np.float32)
    k = 0
    for i in range(docs.shape[0]):
        d = docs[i]
        for q in range(lqp):
            best[q] = -np.inf
        for t in range(doc_offsets[d], doc_offsets[d + 1]):
            c = score_row[codes[t]]
            f = scale_table[scales[t]] if scaled else np.float32(1.0)
            for q in range(lqp):
                v = (scores_t[c, q] + residual[k, q]) * f
                best[q] = v if v > best[q] else best[q]
            k += 1
        s = np.float32(0.0)
        for q in range(lq):
            s += best[q]
        out[i] = s
    return out


#: Residual-byte lookups gathered per ``embedding_bag`` call in the exact stage (4 bytes each: 1 MiB).
LOOKUP_BLOCK = 1 << 18


def runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal consecutive values in ``labels`` (n,), in order (none when empty)."""
    bounds = (np.flatnonzero(np.diff(labels)) + 1).tolist()
    return list(zip([0, *bounds], [*bounds, labels.shape[0]])) if labels.shape[0] else []


def exact_interaction(scores_t: np.ndarray, score_row: np.ndarray, lq: int, table: torch.Tensor, codes: np.ndarray,
                      packed: np.ndarray, row_base: int, doc_offsets: np.ndarray, docs: np.ndarray,
                      scales: np.ndarray, scale_table: np.ndarray, index_dtype: type = np.int32) -> np.ndarray:
    """(len(docs),) float32 MaxSim of a query of ``lq`` tokens with documents, without decompressing their vectors.

    A decompressed vector is centroid + residual, so its similarity with query token q is
    ``scores_t[score_row[code], q]`` (``score_row`` (C,) int32: the row of ``scores_t`` that holds each
    centroid's scores) plus the sum over its packed bytes j of ``table[j, byte, q]`` (the dot product of q
    with the residual values that byte decodes to), times the vector's scale ``scale_table[scales[t]]`` when
    ``scales`` (T,) uint8 is not empty (unit-length decoding). ``scores_t`` (u, Lqp) and ``table``
    (W, 256, Lqp) are padded to Lqp >= lq columns; the padding is not summed. ``packed``: the residual rows of
    one chunk, whose first row is global token ``row_base``; every document in ``docs`` lies in that chunk.

    The sums over bytes are ``embedding_bag`` calls on the flattened table, in blocks of documents of about
    :data:`LOOKUP_BLOCK` lookups (torch's sum kernel keeps each token's Lqp sums in registers; a numba loop over
    the bytes, which kept them in memory, took 1.4 times as long on SciFact on a quiet machine, and as long when
    other work loaded its memory: ``scripts/plaid_stage_profile.py``); :func:`document_maxsim` adds the centroid
    scores and takes the maxima. The lookups are ``index_dtype``, int32 by default, half the bytes of int64 ones: the
    same sums, and the stage about 6 % faster (p50 1.57 ms against 1.67 ms over the 300 SciFact test queries, run
    again in alternating order, on an AVX-512 EPYC: the profile script's A/B lines, which pass int64).
    """
    flat = table.reshape(-1, table.shape[2])
    out = np.empty(docs.shape[0], dtype=np.float32)
    if docs.shape[0] == 0:
        return out
    # Documents in blocks of about LOOKUP_BLOCK lookups, so that a search that sends many documents to this
    # stage (a large ndocs) does not hold 4 bytes per residual byte of all of them at once.
    lengths = doc_offsets[docs + 1] - doc_offsets[docs]
    block = (np.cumsum(lengths) - lengths) // max(1, LOOKUP_BLOCK // packed.shape[1])
    for a, b in runs(block):
        part = docs[a:b]
        out_rows = int(lengths[a:b].sum())
        lookups = residual_lookups(packed, row_base, doc_offsets, part,
                                   np.empty((out_rows, packed.shape[1]), dtype=index_dtype))
        residual = torch.nn.functional.embedding_bag(torch.from_numpy(lookups), flat, mode="sum").numpy()
        out[a:b] = document_maxsim(residual, scores_t, score_row, lq, codes, doc_offsets, part, scales, scale_table)
    return out


#: Query matrices are zero-padded to a multiple of this many tokens (one AVX2 register of float32) so that the
#: kernels' inner loops over query tokens vectorise without a scalar remainder. Against 16 (one AVX-512
#: register), 8 made ``PlaidIndex.search`` 1.8 % faster on an AVX-512 EPYC and 4.6 % under the emulated AVX2 caps,
#: with the same top 10 for all 300 SciFact test queries of the built-in model, whose median query has 21 tokens
#: (24 columns instead of 32): ``scripts/plaid_pad_ab.py``, medians of per-query ratios.
PAD_TOKENS = 8


def pad_query(Q: torch.Tensor) -> torch.Tensor:
    """(Lqp, dim) float32: ``Q`` (Lq, dim) followed by zero rows up to a multiple of :data:`PAD_TOKENS`."""
    lq = Q.shape[0]
    lqp = -(-lq // PAD_TOKENS) * PAD_TOKENS
    if lqp == lq:
        return Q.contiguous()
    out = Q.new_zeros((lqp, Q.shape[1]))
    out[:lq] = Q
    return out


def quantize_rows(x: np.ndarray, levels: int = FULL_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (n, dim) int8, scales (n,) float32)`` with ``x`` (n, dim) float32 ~ codes * scales[:, None]:
    each row scaled so that its largest magnitude is ``levels`` (at most 127; 63 where the CPU's int8 product
    is exact only within that range, :func:`.cpu_paths.int8_levels`; an all-zero row gets scale 1). In numpy,
    because a query's few rows would spend longer in torch's per-operation overhead than in the arithmetic."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    scales = np.where(amax > 0, amax / np.float32(levels), np.float32(1)).astype(np.float32)
    return np.rint(x / scales[:, None]).astype(np.int8), scales


def exact_float16(x: np.ndarray) -> np.ndarray | None:
    """``x`` (n, dim) float32 as float16 when every value converts exactly (PLAID stores its centroids as float16,
    so those of its own builds do), else None. Converted by torch: numpy's float16 conversions took 2.7 times as
    long (10 ms for SciFact's 16,384 x 128 centroids)."""
    wide = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    half = wide.half()
    return half.numpy() if torch.equal(half.float(), wide) else None


@dataclass
class CentroidScores:
    """The centroid scores of one query: what the candidate stages read and the exact stage starts from."""

    exact: np.ndarray | None  # (C, Lqp) float32 scores; None with integer products (exact_rows computes the rows needed)
    cells: np.ndarray  # (C, Lqp) int16 scores in units of cell_scale, for the candidate stages
    cell_scale: np.ndarray  # (Lqp,) float32
    best: np.ndarray  # (lq,) int64 best centroid of each query token
    keep: np.ndarray  # (C,) bool centroids scoring at least the pruning threshold with some query token


def centroid_scores(data: "SearchData", Qp: torch.Tensor, lq: int, threshold: float) -> CentroidScores:
    """The scores of every centroid with every (padded) query token ``Qp`` (Lqp, dim) and :func:`best_cells` of
    them. With ``data.centroids_i8`` or ``data.centroids_u8`` set they come from an 8-bit integer product of
    row-quantised centroids and query tokens (``torch._int_mm`` or oneDNN's u8s8 matmul, :mod:`.cpu_paths`; for
    ranking candidates only: the exact stage's rows come from :func:`exact_rows`), otherwise from a float32 one.
    The int16 ``cells`` unit is the largest score a query token can reach, over CELL_MAX."""
    Qn = Qp.numpy()
    # |c . q| <= max ||c|| * ||q||; the 1 % margin covers the int8 products' error (clipped beyond it anyway).
    bound = np.linalg.norm(Qn, axis=1) * np.float32(data.centroid_norm * 1.01)
    cell_scale = (np.maximum(bound, np.float32(1e-30)) / np.float32(CELL_MAX)).astype(np.float32)
    cells = np.empty((data.centroids.shape[0], Qn.shape[0]), dtype=np.int16)
    threshold = np.float32(threshold)
    if data.centroids_u8 is not None:
        q8, q_scales = quantize_rows(Qn, FULL_LEVELS)
        raw = u8s8_product(data.centroids_u8, torch.from_numpy(q8)).numpy()  # (C, Lqp) float32, exact integers
    elif data.centroids_i8 is not None:
        q8, q_scales = quantize_rows(Qn, data.int8_levels)
        raw = torch._int_mm(data.centroids_i8, torch.from_numpy(q8).T).numpy()  # (C, Lqp) int32, exact at these levels
    else:
        exact = torch.mm(data.centroids, Qp.T).numpy()
        best, keep = best_cells(exact, data.centroid_scales, np.ones(Qn.shape[0], np.float32), lq, threshold, cell_scale, cells)
        return CentroidScores(exact, cells, cell_scale, best, keep)
    best, keep = best_cells(raw, data.centroid_scales, q_scales, lq, threshold, cell_scale, cells)
    return CentroidScores(None, cells, cell_scale, best, keep)


def exact_rows(data: "SearchData", Qp: torch.Tensor, scores: CentroidScores, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 centroid scores the exact stage starts from: ``(rows (u, Lqp) float32, row (C,) int32)``,
    the scores of centroid c with every query token being ``rows[row[c]]``. With integer products only the u
    centroids that ``docs``' token vectors use are scored (in first-use order, so that the rows read together
    lie together, gathered from ``data.centroids_f16`` where it is set); otherwise they are ``scores.exact`` itself."""
    n_centroids = data.centroids_np.shape[0]
    if scores.exact is not None:
        return scores.exact, np.arange(n_centroids, dtype=np.int32)
    used, row = used_centroids(data.codes, data.doc_offsets, docs, n_centroids)
    if data.centroids_f16 is not None:  # the same values, half the bytes gathered; torch widens them exactly
        gathered = torch.from_numpy(np.take(data.centroids_f16, used, axis=0)).float()
    else:
        gathered = torch.from_numpy(np.take(data.centroids_np, used, axis=0))
    return torch.mm(gathered, Qp.T).numpy(), row


def query_table(Q: torch.Tensor, byte_weights: torch.Tensor) -> torch.Tensor:
    """(W, 256, Lq) float32, contiguous: for packed byte j holding value b, the dot product of each query token
    with the residual values b decodes to. ``Q``: (Lq, dim); ``byte_weights``: (W, 256, per_byte)."""
    width, _, per_byte = byte_weights.shape
    q = Q.reshape(Q.shape[0], width, per_byte).permute(1, 2, 0)  # (W, per_byte, Lq)
    return torch.bmm(byte_weights, q)


def byte_weight_table(weights: np.ndarray, nbits: int) -> np.ndarray:
    """(dim * nbits / 8, 256, 8 / nbits) float32: the residual values each byte value decodes to, per byte."""
    from .codec import unpack_table

    dim = weights.shape[0]
    per_byte = 8 // nbits
    table = unpack_table(nbits)  # (256, per_byte)
    dims = np.arange(dim).reshape(dim // per_byte, per_byte)  # (W, per_byte)
    return np.ascontiguousarray(weights[dims[:, None, :], table[None, :, :]], dtype=np.float32)


def order_by_score(scores: np.ndarray, docs: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the ``limit`` best scores, best first, ties by ascending ``docs``."""
    if scores.shape[0] <= limit:
        return np.lexsort((docs, -scores))
    part = np.argpartition(-scores, limit - 1)[:limit]
    threshold = scores[part].min()
    part = np.flatnonzero(scores >= threshold)  # all tied with the cut-off value, then cut stably
    order = part[np.lexsort((docs[part], -scores[part]))]
    return order[:limit]


@dataclass
class SearchData:
    """What a search reads: arrays shared by all queries (read-only)."""

    centroids: torch.Tensor  # (C, dim) float32
    codes: np.ndarray  # (T,) int32, all stored token vectors
    doc_offsets: np.ndarray  # (N + 1,) int64 global token offsets
    ivf_offsets: np.ndarray  # (C + 1,) int64
    ivf_docs: np.ndarray  # (E,) int32
    residual_parts: list  # per chunk (t_c, W) uint8 (memory-mapped)
    part_starts: np.ndarray  # (n_chunks + 1,) int64 first global token of each chunk
    byte_weights: np.ndarray  # (W, 256, per_byte) float32
    byte_weights_t: torch.Tensor  # the same, as a tensor
    part_first_doc: np.ndarray  # (n_chunks,) int64 first document of each chunk
    centroids_np: np.ndarray  # (C, dim) float32
    scales: np.ndarray  # (T,) uint8 unit-length scale bytes of all stored token vectors (empty: no rescaling)
    centroid_scales: np.ndarray  # (C,) float32 row scales of centroids_i8 or centroids_u8 (ones without them)
    centroid_norm: float  # largest centroid norm
    centroids_i8: torch.Tensor | None = None  # (C, dim) int8 row-quantised centroids: the int8 path (.cpu_paths)
    int8_levels: int = FULL_LEVELS  # largest magnitude of centroids_i8 and of the quantised queries (.cpu_paths.int8_levels)
    centroids_u8: torch.Tensor | None = None  # (C, dim) uint8 codes within +-63 offset by 64: the u8s8 path (.cpu_paths)
    centroids_f16: np.ndarray | None = None  # (C, dim) float16 equal to centroids_np (as stored), on integer paths
    check_part: Callable[[int], None] = lambda c: None  # called before chunk c's residuals are first read


def gather_vectors(data: SearchData, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decompressed vectors (t, dim) of ``docs`` one after another, and their (len(docs),) lengths."""
    starts = data.doc_offsets[docs]
    ends = data.doc_offsets[docs + 1]
    lengths = ends - starts
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist())]) if len(docs) else np.zeros(0, np.int64)
    width = data.byte_weights.shape[0]
    packed = np.empty((rows.shape[0], width), dtype=np.uint8)
    chunk_of = np.searchsorted(data.part_starts, rows, side="right") - 1
    for c in np.unique(chunk_of):
        data.check_part(int(c))
        sel = chunk_of == c
        packed[sel] = data.residual_parts[c][rows[sel] - data.part_starts[c]]
    out = np.empty((rows.shape[0], data.centroids_np.shape[1]), dtype=np.float32)
    factors = SCALE_TABLE[data.scales[rows]] if data.scales.size else np.ones(rows.shape[0], dtype=np.float32)
    decompress_rows(data.codes[rows], packed, data.centroids_np, data.byte_weights, out, factors)
    return out, lengths


@numba.njit(nogil=True, cache=True)
def top_cells(cells, lq, r):  # pragma: no cover - compiled
    """(lq, r) int64: the ``r`` best centroids of each of the first ``lq`` query tokens by their int16 ``cells``
    scores (C, Lqp), best first, ties to the lower centroid id. One pass over the rows in memory order (numpy's
    argpartition down the columns of ``cells`` took 6 ms for 16,384 centroids, longer than the rest of a query)."""
    n = cells.shape[0]
    r = min(r, n)
    idx = np.zeros((lq, r), dtype=np.int64)
    val = np.full((lq, r), -(CELL_MAX + 2), dtype=np.int32)
    for c in range(n):
        for q in range(lq):
            v = np.int32(cells[c, q])
            if v > val[q, r - 1]:
                j = r - 1
                while j > 0 and val[q, j - 1] < v:
                    val[q, j] = val[q, j - 1]
                    idx[q, j] = idx[q, j - 1]
                    j -= 1
                val[q, j] = v
                idx[q, j] = c
    return idx


def probe_cells(scores: CentroidScores, lq: int, ncells: int) -> np.ndarray:
    """Sorted unique centroids among the ``ncells`` best of each of the ``lq`` query tokens (on the int16 scores;
    the best one from :func:`best_cells` when ``ncells`` is 1)."""
    n_centroids = scores.cells.shape[0]
    if ncells >= n_centroids:
        return np.arange(n_centroids, dtype=np.int64)
    if ncells == 1:
        return np.unique(scores.best)
    return np.unique(top_cells(scores.cells, lq, ncells))


def search_one(data: SearchData, Q: torch.Tensor, k: int, ncells: int, threshold: float, ndocs: int,
               allowed: np.ndarray, direct: np.ndarray | None, need: int = 0, min_candidates: int = 0,
               max_ncells: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(documents, scores)`` of the best ``k`` for one query Q (Lq, dim) float32, best first.

    ``allowed``: (N,) bool, the documents that may be returned; ``direct``: when given, score these candidate
    documents instead of generating candidates from the inverted lists (small subsets).

    Widening: while the inverted lists of ``ncells`` cells per query token yield fewer than
    max(``need``, ``min_candidates``) allowed documents, ``ncells`` doubles, up to ``max_ncells`` (default: every
    centroid); if they still yield fewer than ``need``, every allowed document is a candidate. With ``need`` =
    min(k, allowed documents) the search never returns fewer hits than that.
    """
    lq = Q.shape[0]
    Qp = pad_query(Q)  # (Lqp, dim)
    scores = centroid_scores(data, Qp, lq, threshold)  # (C, Lqp); columns from lq on are padding
    if direct is None:
        n_centroids = scores.cells.shape[0]
        limit = n_centroids if max_ncells is None else min(n_centroids, max(ncells, max_ncells))
        target = max(need, min_candidates)
        candidates = gather_candidates(probe_cells(scores, lq, ncells), data.ivf_offsets, data.ivf_docs, allowed)
        while candidates.shape[0] < target and ncells < limit:
            ncells = min(limit, 2 * ncells)
            candidates = gather_candidates(probe_cells(scores, lq, ncells), data.ivf_offsets, data.ivf_docs, allowed)
        if candidates.shape[0] < need:
            candidates = np.flatnonzero(allowed)  # what every cell would give, without reading the lists
    else:
        candidates = direct
    if candidates.shape[0] == 0:
        return candidates, np.zeros(0, dtype=np.float32)
    n_exact = max(k, ndocs // 4)
    if candidates.shape[0] > n_exact:
        approx = pruned_interaction(scores.cells, scores.cell_scale, lq, data.codes, data.doc_offsets, candidates, scores.keep,
                                    data.ivf_offsets, data.ivf_docs)
        candidates = candidates[order_by_score(approx, candidates, max(ndocs, n_exact))]
        if candidates.shape[0] > n_exact:
            full = np.ones(scores.keep.shape[0], dtype=np.bool_)
            approx = centroid_interaction(scores.cells, scores.cell_scale, lq, data.codes, data.doc_offsets, candidates, full)
            candidates = candidates[order_by_score(approx, candidates, n_exact)]
        candidates = np.sort(candidates)
    exact = np.empty(candidates.shape[0], dtype=np.float32)
    rows, row_of = exact_rows(data, Qp, scores, candidates)
    table = query_table(Qp, data.byte_weights_t)
    # Candidates are sorted, so each chunk's documents form one run.
    doc_chunk = np.searchsorted(data.part_first_doc, candidates, side="right") - 1
    for a, b in runs(doc_chunk):
        c = int(doc_chunk[a])
        data.check_part(c)
        exact[a:b] = exact_interaction(rows, row_of, lq, table, data.codes, data.residual_parts[c], int(data.part_starts[c]),
                                       data.doc_offsets, candidates[a:b], data.scales, SCALE_TABLE)
    best = order_by_score(exact, candidates, k)
    return candidates[best], exact[best]
