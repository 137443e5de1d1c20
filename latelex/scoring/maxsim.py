"""Exact MaxSim (late interaction) scores: padded batches, query/document pairs and packed collections.

The score of a query ``q`` (Lq token vectors) against a document ``d`` (Ld token vectors) is

    score(q, d) = sum over query tokens i of  max over document tokens j of  sim(q_i, d_j)

with ``sim`` one of

* ``"cosine"``: the dot product ``q_i . d_j`` (ColBERT vectors are L2-normalised, so this is the cosine);
* ``"l2"``: the negative squared Euclidean distance ``-||q_i - d_j||^2`` (ColBERT v1's other similarity),
  computed as ``2 q_i . d_j - ||q_i||^2 - ||d_j||^2``.

Conventions shared by every function here:

* A masked query position (``q_mask`` False) contributes 0, so a query with no unmasked position scores 0
  against every document.
* A masked document position (``d_mask`` False) never wins a max.
* A document with no (unmasked) token vector has nothing to match: each unmasked query token's max is
  ``-inf``, so its score is ``-inf`` and it ranks below every other document under both similarities
  (and 0 for a query with no unmasked position). Indexes refuse empty documents at build time, so this
  only concerns callers that pass such documents in directly.
* Half-precision inputs are upcast to float32 on the CPU (float16 matrix products are slow there); on CUDA
  the products run in the inputs' dtype. Scores come back as float32, except from :func:`maxsim_padded`
  and :func:`maxsim_pairwise`, which keep the (promoted) input dtype so that they can serve training
  under autocast, and stay differentiable.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import InputError

SIMILARITIES = ("cosine", "l2")

#: Bound, in bytes, on the similarity matrix one step of :func:`maxsim_padded` materialises.
PADDED_CHUNK_BYTES = 64 * 2**20
#: The same bound for one chunk of :func:`maxsim_packed` on the CPU (its matrix plus its float32 copy of the
#: vectors), per torch thread. Small on purpose: a chunk that stays in cache is faster to reduce (with one
#: thread, bench/bench_maxsim.py measured 4 MB 1.2x to 1.7x faster than 64 MB on an AMD EPYC); scaled by the
#: thread count so that many threads share out large enough pieces of work.
PACKED_CHUNK_BYTES_PER_THREAD = 4 * 2**20
#: ... and on an accelerator, where fewer, larger kernels are faster.
PACKED_CHUNK_BYTES_DEVICE = 256 * 2**20


def _check_similarity(similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity must be 'cosine' or 'l2', not {similarity!r}")


def _cpu_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if it is a half-precision CPU tensor (or not floating point at all), else unchanged."""
    if not x.is_floating_point() or (x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16)):
        return x.float()
    return x


def _check_mask(mask: torch.Tensor | None, shape: tuple[int, ...], name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    if tuple(mask.shape) != shape:
        raise InputError(f"{name} has shape {tuple(mask.shape)}; expected {shape}")
    return mask.bool()


def _token_max_padded(
    Q: torch.Tensor, D: torch.Tensor, d_mask: torch.Tensor | None, similarity: str
) -> torch.Tensor:
    """(B, Lq, N): for every query token, its best similarity over each document's unmasked tokens."""
    B, Lq, dim = Q.shape
    N, Ld, _ = D.shape
    # (B * Lq, N * Ld) similarity matrix, seen as (B, Lq, N, Ld).
    S = (Q.reshape(B * Lq, dim) @ D.reshape(N * Ld, dim).T).view(B, Lq, N, Ld)
    if similarity == "l2":
        S = 2 * S - (D * D).sum(-1).view(1, 1, N, Ld)
    if d_mask is not None:
        S = S.masked_fill(~d_mask.view(1, 1, N, Ld), float("-inf"))
    best = S.amax(dim=-1) if Ld > 0 else S.new_full((B, Lq, N), float("-inf"))
    if similarity == "l2":
        best = best - (Q * Q).sum(-1).unsqueeze(-1)
    return best


def _sum_over_query(best: torch.Tensor, q_mask: torch.Tensor | None) -> torch.Tensor:
    """Sum (B, Lq, ...) per-token maxima over the query axis, masked positions counting 0."""
    if q_mask is not None:
        mask = q_mask.view(*q_mask.shape, *([1] * (best.dim() - 2)))
        best = torch.where(mask, best, torch.zeros((), dtype=best.dtype, device=best.device))
    return best.sum(dim=1)


def maxsim_padded(
    Q: torch.Tensor,
    D: torch.Tensor,
    d_mask: torch.Tensor | None = None,
    q_mask: torch.Tensor | None = None,
    similarity: str = "cosine",
) -> torch.Tensor:
    """MaxSim of every query against every document of a padded batch.

    ``Q``: (B, Lq, dim) query token vectors; ``D``: (N, Ld, dim) document token vectors;
    ``d_mask``: (N, Ld) bool, True for real document tokens (None: all real);
    ``q_mask``: (B, Lq) bool, True for query tokens that count (None: all count).
    Returns (B, N) scores. Differentiable; documents are processed in groups so that no intermediate
    similarity matrix exceeds :data:`PADDED_CHUNK_BYTES`.
    """
    _check_similarity(similarity)
    if Q.dim() != 3 or D.dim() != 3:
        raise InputError(f"Q must be (B, Lq, dim) and D (N, Ld, dim); got {tuple(Q.shape)} and {tuple(D.shape)}")
    if Q.shape[2] != D.shape[2]:
        raise InputError(f"query vectors have dim {Q.shape[2]} but document vectors have dim {D.shape[2]}")
    B, Lq, _ = Q.shape
    N, Ld, _ = D.shape
    d_mask = _check_mask(d_mask, (N, Ld), "d_mask")
    q_mask = _check_mask(q_mask, (B, Lq), "q_mask")
    Q, D = _cpu_float(Q), _cpu_float(D)
    dtype = torch.promote_types(Q.dtype, D.dtype)
    Q, D = Q.to(dtype), D.to(dtype)
    per_doc = max(1, B * Lq * Ld * Q.element_size())
    step = max(1, PADDED_CHUNK_BYTES // per_doc)
    parts = []
    for start in range(0, N, step):
        stop = min(N, start + step)
        mask = None if d_mask is None else d_mask[start:stop]
        best = _token_max_padded(Q, D[start:stop], mask, similarity)
        parts.append(_sum_over_query(best, q_mask))
    if not parts:
        return Q.new_zeros((B, 0))
    return torch.cat(parts, dim=1)


def maxsim_pairwise(
    Q: torch.Tensor,
    D: torch.Tensor,
    d_mask: torch.Tensor | None = None,
    q_mask: torch.Tensor | None = None,
    similarity: str = "cosine",
) -> torch.Tensor:
    """MaxSim of query i with document i, for every i.

    ``Q``: (B, Lq, dim); ``D``: (B, Ld, dim); ``d_mask``: (B, Ld) bool; ``q_mask``: (B, Lq) bool.
    Returns (B,) scores. Differentiable.
    """
    _check_similarity(similarity)
    if Q.dim() != 3 or D.dim() != 3 or Q.shape[0] != D.shape[0] or Q.shape[2] != D.shape[2]:
        raise InputError(
            f"Q must be (B, Lq, dim) and D (B, Ld, dim) with the same B and dim; "
            f"got {tuple(Q.shape)} and {tuple(D.shape)}"
        )
    B, Lq, _ = Q.shape
    Ld = D.shape[1]
    d_mask = _check_mask(d_mask, (B, Ld), "d_mask")
    q_mask = _check_mask(q_mask, (B, Lq), "q_mask")
    Q, D = _cpu_float(Q), _cpu_float(D)
    dtype = torch.promote_types(Q.dtype, D.dtype)
    Q, D = Q.to(dtype), D.to(dtype)
    S = torch.bmm(Q, D.transpose(1, 2))  # (B, Lq, Ld)
    if similarity == "l2":
        S = 2 * S - (D * D).sum(-1).unsqueeze(1)
    if d_mask is not None:
        S = S.masked_fill(~d_mask.unsqueeze(1), float("-inf"))
    best = S.amax(dim=-1) if Ld > 0 else S.new_full((B, Lq), float("-inf"))  # (B, Lq)
    if similarity == "l2":
        best = best - (Q * Q).sum(-1)
    return _sum_over_query(best, q_mask)


# --- packed collections -------------------------------------------------------------------------------
#
# A segment-max strategy takes a chunk of document token vectors X (C, dim), the packed query tokens
# Qm (M, dim), an optional per-row bias (C,) added to every similarity of that row, and the lengths (n,)
# of the n non-empty document segments that tile the chunk; it returns (n, M): for each segment and query
# token, the best similarity. They are interchangeable; bench/bench_maxsim.py compares them.

SegmentMax = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", np.ndarray], torch.Tensor]


def _rows_by_queries(X: torch.Tensor, Qm: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    S = X @ Qm.T  # (C, M)
    if bias is not None:
        S += bias.unsqueeze(1)
    return S


def _segmax_scatter(X, Qm, bias, lengths):
    S = _rows_by_queries(X, Qm, bias)
    seg = torch.repeat_interleave(
        torch.arange(len(lengths), device=X.device), torch.from_numpy(lengths).to(X.device)
    )
    out = S.new_full((len(lengths), S.shape[1]), float("-inf"))
    return out.scatter_reduce_(0, seg.unsqueeze(1).expand_as(S), S, reduce="amax", include_self=True)


def _segmax_segment_reduce(X, Qm, bias, lengths):
    S = _rows_by_queries(X, Qm, bias)
    return torch.segment_reduce(S, "max", lengths=torch.from_numpy(lengths).to(X.device), axis=0)


def _segmax_loop(X, Qm, bias, lengths):
    S = _rows_by_queries(X, Qm, bias)
    return torch.stack([part.amax(dim=0) for part in torch.split(S, lengths.tolist(), dim=0)])


def _segmax_reduceat(X, Qm, bias, lengths):
    # numpy's reduceat is fast along the contiguous axis only, so build the (M, C) product.
    if X.device.type != "cpu":
        raise InputError("segment-max strategy 'reduceat' runs on the CPU only; use 'scatter' on other devices")
    S = Qm @ X.T  # (M, C)
    if bias is not None:
        S += bias.unsqueeze(0)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return torch.from_numpy(np.maximum.reduceat(S.numpy(), starts, axis=1)).T


SEGMENT_MAX: dict[str, SegmentMax] = {
    "scatter": _segmax_scatter,
    "reduceat": _segmax_reduceat,
    "segment_reduce": _segmax_segment_reduce,
    "loop": _segmax_loop,
}

#: Strategy ``"auto"`` picks per device; chosen with bench/bench_maxsim.py.
AUTO_STRATEGY = {"cpu": "scatter", "other": "scatter"}


def _as_offsets(offsets: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.detach().cpu().numpy()
    offs = np.asarray(offsets)
    if offs.ndim != 1 or offs.shape[0] < 1 or not np.issubdtype(offs.dtype, np.integer):
        raise InputError(f"offsets must be a 1-D integer array of length N + 1, not {offs.dtype} {offs.shape}")
    return offs.astype(np.int64, copy=False)


def _chunk_to(vectors: torch.Tensor | np.ndarray, a: int, b: int, device: torch.device, dtype: torch.dtype):
    """Rows a:b of ``vectors`` as a tensor of ``dtype`` on ``device`` (numpy arrays: float32 on the CPU)."""
    if isinstance(vectors, np.ndarray):
        rows = np.asarray(vectors[a:b], dtype=np.float32)
        if not rows.flags.writeable:  # a float32 memory map: torch wants writable memory
            rows = rows.copy()
        return torch.from_numpy(rows)
    return vectors[a:b].to(device=device, dtype=dtype)


@torch.no_grad()
def maxsim_packed(
    Q: torch.Tensor,
    vectors: torch.Tensor | np.ndarray,
    offsets: torch.Tensor | np.ndarray,
    q_mask: torch.Tensor | None = None,
    similarity: str = "cosine",
    chunk_tokens: int | None = None,
    strategy: str = "auto",
) -> torch.Tensor:
    """MaxSim of one or more queries against N packed variable-length documents, without padding.

    ``Q``: (Lq, dim) for one query, or (B, Lq, dim) for a batch whose shorter queries are padded and
    masked by ``q_mask`` (B, Lq) bool (or (Lq,) for a single query). Masked query tokens are dropped
    before any arithmetic, so padding costs nothing.
    ``vectors``: (T, dim) token vectors of all documents one after another, a tensor or a (possibly
    memory-mapped) numpy array, any float dtype; ``offsets``: (N + 1,) int64 with ``offsets[0] == 0`` and
    ``offsets[-1] == T``; document n owns rows ``offsets[n]:offsets[n + 1]``.
    Returns (N,) float32 scores for a 2-D ``Q``, else (B, N).

    The T rows are processed ``chunk_tokens`` at a time (default: as many as keep one chunk's similarity
    matrix and its copy of the vectors under :data:`PACKED_CHUNK_BYTES_PER_THREAD` times the torch thread
    count, or :data:`PACKED_CHUNK_BYTES_DEVICE` off the CPU); chunk boundaries may split a
    document, whose partial maxima are then carried into the next chunk. On the CPU each chunk is upcast to
    float32 for the matrix product; on another device the product runs in the vectors' dtype there.
    ``strategy`` names the segment-max method (a key of :data:`SEGMENT_MAX`, or ``"auto"``); all give the
    same scores. A document with no rows scores ``-inf`` (see the module notes). Not differentiable: it
    serves search; training uses :func:`maxsim_padded` or :func:`maxsim_pairwise`.
    """
    _check_similarity(similarity)
    if strategy != "auto" and strategy not in SEGMENT_MAX:
        raise InputError(f"unknown segment-max strategy {strategy!r}; choose from auto, {', '.join(SEGMENT_MAX)}")
    single = Q.dim() == 2
    if single:
        Q = Q.unsqueeze(0)
        if q_mask is not None:
            q_mask = q_mask.reshape(1, -1)
    if Q.dim() != 3:
        raise InputError(f"Q must be (Lq, dim) or (B, Lq, dim), not {tuple(Q.shape)}")
    B, Lq, dim = Q.shape
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise InputError(f"vectors must be (T, {dim}) to match the queries, not {tuple(vectors.shape)}")
    q_mask = _check_mask(q_mask, (B, Lq), "q_mask")
    offs = _as_offsets(offsets)
    T = int(vectors.shape[0])
    N = offs.shape[0] - 1
    lengths = np.diff(offs)
    if offs[0] != 0 or offs[-1] != T or (lengths < 0).any():
        raise InputError(f"offsets must rise from 0 to the number of vector rows ({T}) without decreasing")

    if isinstance(vectors, torch.Tensor) and vectors.device.type != "cpu":
        device = vectors.device
        dtype = vectors.dtype if vectors.is_floating_point() else torch.float32
    else:
        device, dtype = torch.device("cpu"), torch.float32
    if strategy == "auto":
        strategy = AUTO_STRATEGY["cpu" if device.type == "cpu" else "other"]
    segment_max = SEGMENT_MAX[strategy]

    # Pack the unmasked query tokens: Qm (M, dim), and which query each belongs to.
    if q_mask is None:
        q_mask = torch.ones((B, Lq), dtype=torch.bool, device=Q.device)
    q_owner = torch.arange(B, device=Q.device).unsqueeze(1).expand(B, Lq)[q_mask].to(device)
    Qm = Q[q_mask].detach().to(device=device, dtype=dtype)
    valid_per_query = q_mask.sum(dim=1).to(device)
    M = int(Qm.shape[0])

    scores = torch.zeros((N, B), dtype=torch.float32, device=device)
    empty = lengths == 0
    if empty.any():
        empty_rows = torch.from_numpy(np.flatnonzero(empty)).to(device)
        scores[empty_rows] = torch.where(valid_per_query > 0, float("-inf"), 0.0).to(torch.float32)
    if M == 0 or T == 0:
        return scores[:, 0] if single else scores.T

    if similarity == "l2":
        q_sq = (Qm.float() * Qm.float()).sum(-1)  # (M,), subtracted after the max
        Qm = 2 * Qm
    if chunk_tokens is None:
        budget = (
            PACKED_CHUNK_BYTES_PER_THREAD * torch.get_num_threads()
            if device.type == "cpu"
            else PACKED_CHUNK_BYTES_DEVICE
        )
        chunk_tokens = budget // (4 * (M + dim))
    chunk_tokens = max(1, int(chunk_tokens))

    # Work on the non-empty documents only: their segments tile the T rows without gaps.
    docs = np.flatnonzero(~empty)
    seg_start, seg_end = offs[:-1][docs], offs[1:][docs]
    docs_t = torch.from_numpy(docs).to(device)
    pending: torch.Tensor | None = None  # (M,) running maxima of a document split by a chunk boundary
    for a in range(0, T, chunk_tokens):
        b = min(T, a + chunk_tokens)
        first = int(np.searchsorted(seg_end, a, side="right"))  # first segment ending after a
        last = int(np.searchsorted(seg_start, b, side="left")) - 1  # last segment starting before b
        starts = np.maximum(seg_start[first : last + 1], a)
        ends = np.minimum(seg_end[first : last + 1], b)
        X = _chunk_to(vectors, a, b, device, dtype)
        bias = -(X * X).sum(-1) if similarity == "l2" else None
        best = segment_max(X, Qm, bias, ends - starts)  # (n, M)
        if pending is not None:
            best[0] = torch.maximum(best[0], pending)
        if seg_end[last] > b:  # the last document goes on in the next chunk
            pending = best[-1].clone()
            best = best[:-1]
            last -= 1
        else:
            pending = None
        if best.shape[0] == 0:
            continue
        best = best.float()
        if similarity == "l2":
            best = best - q_sq
        per_query = torch.zeros((best.shape[0], B), dtype=torch.float32, device=device)
        per_query.index_add_(1, q_owner, best)
        scores[docs_t[first : last + 1]] = per_query
    return scores[:, 0] if single else scores.T
