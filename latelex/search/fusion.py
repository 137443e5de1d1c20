"""Fusion of ranked lists: reciprocal-rank fusion and weighted score fusion, as pure functions over runs.

A run is ``{query id: [Hit, ...]}`` with each list best first (:data:`latelex.types.Run`). Both functions take
several runs of the same queries (from BM25, SPLADE, ColBERT, or a TREC file) and return one fused run that
holds, for every query found in any input run, every document found in any input list (after the ``depth`` cut),
best first.

Ties are broken deterministically: documents with equal fused scores keep the order in which they are first
met when the input lists are read one after another, run 0 from its top, then run 1 from its top, and so on.
So the first run acts as the primary one when fused scores are equal.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..types import Hit, Run

NORMALIZATIONS = ("minmax", "zscore", "none")


def reciprocal_rank_fusion(
    runs: Sequence[Run],
    k: float = 60,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> Run:
    """Reciprocal-rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

    The fused score of document d for query q is ``sum_i w_i / (k + rank_i(q, d))`` over the runs i that list d
    for q, where ``rank_i`` counts from 1 at the top of run i's list (the list's order is taken as given: best
    first) and a run that does not list d adds nothing. ``k`` (60 in the paper) damps the weight of the very
    top ranks; ``weights`` default to 1 for every run; ``depth`` keeps only the first ``depth`` hits of each list.

    Returns a run over the union of the queries, each list holding the union of the documents, sorted by fused
    score (ties as described in the module docstring). Raises :class:`InputError` for no runs, a negative or
    non-finite ``k``, weights that are negative, non-finite, all zero or not one per run, a ``depth`` below 1, and
    a list that names the same document twice.
    """
    runs = _check_runs(runs)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise InputError(f"the RRF constant k must be a finite number >= 0, not {k!r}")
    weights = _check_weights(weights, len(runs))
    depth = _check_depth(depth)
    fused: Run = {}
    for qid in _query_ids(runs):
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights):
            hits = _hits(run, qid, depth)
            for rank, hit in enumerate(hits, start=1):
                scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + weight / (k + rank)
        fused[qid] = _sorted_hits(scores)
    return fused


def score_fusion(
    runs: Sequence[Run],
    weights: Sequence[float] | None = None,
    normalization: str = "minmax",
    depth: int | None = None,
) -> Run:
    """Weighted sum of per-query normalised scores (CombSUM with weights).

    For each query and each run i, the scores of run i's list (its first ``depth`` hits) are normalised:

    - ``"minmax"``: ``(s - min) / (max - min)``, into [0, 1];
    - ``"zscore"``: ``(s - mean) / std`` (population standard deviation);
    - ``"none"``: the raw scores.

    A list whose scores are all equal normalises to 0 under ``"minmax"`` and ``"zscore"`` (it carries no score
    information). The fused score of document d is ``sum_i w_i * norm_i(d)``; **a document missing from run i's
    list gets run i's minimum normalised score for that query** (0 under ``"minmax"``), i.e. it is treated as
    no better than the worst document that run returned. A run with no list (or an empty list) for the query adds
    nothing. ``weights`` default to 1 for every run.

    Returns a run over the union of the queries, each list holding the union of the documents, sorted by fused
    score (ties as described in the module docstring). Raises :class:`InputError` for no runs, an unknown
    ``normalization``, bad weights or ``depth`` (as in :func:`reciprocal_rank_fusion`), a NaN or infinite score,
    and a list that names the same document twice.
    """
    runs = _check_runs(runs)
    if normalization not in NORMALIZATIONS:
        raise InputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}")
    weights = _check_weights(weights, len(runs))
    depth = _check_depth(depth)
    fused: Run = {}
    for qid in _query_ids(runs):
        members: list[tuple[dict[str, float], float, float]] = []  # (normalised scores, floor, weight)
        order: dict[str, None] = {}
        for i, (run, weight) in enumerate(zip(runs, weights)):
            hits = _hits(run, qid, depth)
            if not hits:
                continue
            raw = np.asarray([h.score for h in hits], dtype=np.float64)
            if not np.isfinite(raw).all():
                raise InputError(f"run {i} has a NaN or infinite score for query {qid!r}; scores must be finite")
            norm = _normalize(raw, normalization)
            members.append(({h.doc_id: float(v) for h, v in zip(hits, norm)}, float(norm.min()), weight))
            for h in hits:
                order.setdefault(h.doc_id, None)
        scores = {
            doc_id: sum(weight * normalized.get(doc_id, floor) for normalized, floor, weight in members)
            for doc_id in order
        }
        fused[qid] = _sorted_hits(scores)
    return fused


def _normalize(raw: np.ndarray, normalization: str) -> np.ndarray:
    """(M,) float64 normalised scores of one list."""
    if normalization == "none":
        return raw
    if normalization == "minmax":
        low, span = raw.min(), raw.max() - raw.min()
        return (raw - low) / span if span > 0 else np.zeros_like(raw)
    std = raw.std()
    return (raw - raw.mean()) / std if std > 0 else np.zeros_like(raw)


def _sorted_hits(scores: dict[str, float]) -> list[Hit]:
    """Hits by fused score descending; ``scores`` is in first-met order, which breaks ties (sorted is stable)."""
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return [Hit(doc_id, float(score)) for doc_id, score in ordered]


def _check_runs(runs: Sequence[Run]) -> list[Run]:
    if isinstance(runs, dict):
        raise InputError("runs must be a list of runs ({qid: hits} dicts), not a single run")
    runs = list(runs)
    if not runs:
        raise InputError("no runs to fuse; pass at least one run")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise InputError(f"run {i} is a {type(run).__name__}, not a {{query id: [Hit, ...]}} dict")
        for qid, hits in run.items():
            if not isinstance(hits, (list, tuple)):
                raise InputError(f"run {i} maps query {qid!r} to a {type(hits).__name__}, not a list of hits")
            seen: set[str] = set()
            for hit in hits:
                if not isinstance(hit, Hit):
                    raise InputError(f"run {i}, query {qid!r}: expected Hit objects, found {type(hit).__name__}")
                if hit.doc_id in seen:
                    raise InputError(f"run {i} lists document {hit.doc_id!r} twice for query {qid!r}; "
                                     "each list must name a document once")
                seen.add(hit.doc_id)
    return runs


def _check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    if isinstance(weights, (int, float, str)):
        raise InputError("weights must be a list with one number per run")
    weights = list(weights)
    if len(weights) != count:
        raise InputError(f"{len(weights)} weights for {count} runs; give one weight per run")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float, np.floating, np.integer)) or not math.isfinite(w) or w < 0:
            raise InputError(f"weights must be finite numbers >= 0, not {w!r}")
    if not any(w > 0 for w in weights):
        raise InputError("at least one weight must be positive")
    return [float(w) for w in weights]


def _check_depth(depth: int | None) -> int | None:
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise InputError(f"depth must be a positive integer or None, not {depth!r}")
    return int(depth)


def _query_ids(runs: list[Run]) -> list[str]:
    """Every query id of any run, in first-met order."""
    return list(dict.fromkeys(qid for run in runs for qid in run))


def _hits(run: Run, qid: str, depth: int | None) -> Sequence[Hit]:
    hits = run.get(qid, ())
    return hits if depth is None else hits[:depth]


__all__ = ["NORMALIZATIONS", "reciprocal_rank_fusion", "score_fusion"]
