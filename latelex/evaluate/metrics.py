"""Retrieval metrics through ir-measures (which runs pytrec_eval, the trec_eval implementation), never hand-written.

Metric names are ir-measures names (``nDCG@10``, ``RR@10``, ``R@100``, ``AP``, ``P@10``, ``Judged@10``...);
the names researchers also use (``MRR@10``, ``Recall@100``, ``MAP``, ``NDCG@10``) are accepted as aliases.
Scores are averaged over every judged query, a query missing from the run counting as 0 (as ``trec_eval -c``).
nDCG uses trec_eval's convention (gain = grade, log2 discount), the one BEIR's published figures use.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

from ..errors import InputError
from ..types import Qrels, Run

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100")

_ALIASES = [
    (re.compile(r"^MRR(?=@|$|\()", re.I), "RR"),
    (re.compile(r"^Recall(?=@|$|\()", re.I), "R"),
    (re.compile(r"^MAP(?=@|$|\()", re.I), "AP"),
    (re.compile(r"^NDCG(?=@|$|\()", re.I), "nDCG"),
    (re.compile(r"^Precision(?=@|$|\()", re.I), "P"),
]


def parse_metric(name: str):
    """The ir-measures measure for ``name`` (aliases such as MRR@10 and Recall@100 accepted)."""
    import ir_measures

    canonical = name.strip()
    for pattern, replacement in _ALIASES:
        canonical = pattern.sub(replacement, canonical)
    try:
        return ir_measures.parse_measure(canonical)
    except Exception:
        raise InputError(
            f"unknown metric {name!r}; use ir-measures names such as nDCG@10, RR@10 (MRR@10), R@100 (Recall@100), AP, P@10"
        ) from None


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    per_query: bool = False,
    ignore_identical_ids: bool = False,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Score ``run`` against ``qrels``.

    Returns ``{metric name: mean over judged queries}``, or with ``per_query`` ``{metric: {qid: value}}``.
    ``ignore_identical_ids`` drops hits whose document id equals the query id (BEIR does this for
    ArguAna and Quora, where a query is also a document).
    """
    import ir_measures

    if not qrels:
        raise InputError("the qrels are empty; nothing to evaluate against")
    measures = {name: parse_metric(name) for name in metrics}
    if not measures:
        raise InputError("no metrics asked for")
    scored = list(_scored_docs(run, ignore_identical_ids))
    judged = [ir_measures.Qrel(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()]
    values: dict[str, dict[str, float]] = {name: {} for name in measures}
    by_measure = {m: name for name, m in measures.items()}
    for metric in ir_measures.iter_calc(list(measures.values()), judged, scored):
        name = by_measure.get(metric.measure)
        if name is not None:
            values[name][metric.query_id] = float(metric.value)
    missing = [q for q in qrels if q not in run]
    if missing:
        logger.warning("%d of %d judged queries have no results in the run; they count as 0", len(missing), len(qrels))
    for name in values:
        for q in qrels:
            values[name].setdefault(q, 0.0)
    if per_query:
        return values
    return {name: sum(v.values()) / len(v) for name, v in values.items()}


def _scored_docs(run: Run, ignore_identical_ids: bool) -> Iterable:
    import ir_measures

    for qid, hits in run.items():
        for hit in hits:
            if ignore_identical_ids and hit.doc_id == qid:
                continue
            yield ir_measures.ScoredDoc(qid, hit.doc_id, float(hit.score))


def format_table(results: dict[str, float]) -> str:
    """A two-column text table of metric values."""
    width = max(len(k) for k in results)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in results.items())
