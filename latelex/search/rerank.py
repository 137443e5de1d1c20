"""Re-ranking another system's candidates with ColBERT, encoding documents on the fly."""

from __future__ import annotations

import logging
from typing import Mapping, Sequence


from ..errors import InputError
from ..scoring.maxsim import maxsim_packed
from ..scoring.topk import topk
from ..types import Hit, PackedEmbeddings, Run

logger = logging.getLogger(__name__)


def rerank(
    encoder,
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    documents: Mapping[str, str],
    *,
    k: int | None = None,
    batch_size: int = 32,
    group_docs: int = 2048,
    show_progress: bool | None = None,
) -> Run:
    """Score each query's candidate documents with exact MaxSim and return them re-ordered (best first).

    ``candidates``: ``{qid: [doc ids]}`` from a first stage (a ColBERT top-k TSV, an MS MARCO top1000 file or a
    TREC run). Queries are processed in groups whose candidates (up to ``group_docs`` distinct documents) are
    encoded once, so documents shared between queries are not encoded twice within a group. ``k`` keeps the
    top ``k`` per query (all candidates by default). A candidate id absent from ``documents`` is an error.
    """
    from ..encoders.batching import progress

    if k is not None and k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    qids = [q for q in candidates if candidates[q]]
    missing_queries = [q for q in qids if q not in queries]
    if missing_queries:
        raise InputError(f"{len(missing_queries)} candidate queries have no text, e.g. {missing_queries[0]!r}; check the queries file")
    for q in qids:
        for d in candidates[q]:
            if d not in documents:
                raise InputError(f"candidate document {d!r} of query {q!r} is not in the collection")
    if not qids:
        raise InputError("no candidates to re-rank")
    query_vectors = encoder.encode_queries([queries[q] for q in qids], batch_size=batch_size, show_progress=False)
    query_position = {q: i for i, q in enumerate(qids)}
    run: Run = {}
    with progress(len(qids), "Re-ranking", show_progress) as bar:
        for group in _groups(qids, candidates, group_docs):
            doc_ids = list(dict.fromkeys(d for q in group for d in candidates[q]))
            position = {d: i for i, d in enumerate(doc_ids)}
            vectors = encoder.encode_documents([documents[d] for d in doc_ids], batch_size=batch_size, show_progress=False)
            for q in group:
                cands = list(dict.fromkeys(candidates[q]))
                packed = PackedEmbeddings.from_list([vectors[position[d]] for d in cands])
                scores = maxsim_packed(query_vectors[query_position[q]], packed.vectors, packed.offsets,
                                       similarity=encoder.config.similarity)
                idx, vals = topk(scores, k or len(cands))
                run[q] = [Hit(cands[int(i)], float(v)) for i, v in zip(idx, vals)]
            bar.update(len(group))
    return run


def _groups(qids: list[str], candidates: Mapping[str, Sequence[str]], group_docs: int):
    group: list[str] = []
    seen: set[str] = set()
    for q in qids:
        new = set(candidates[q]) - seen
        if group and len(seen) + len(new) > group_docs:
            yield group
            group, seen = [], set()
            new = set(candidates[q])
        group.append(q)
        seen |= new
    if group:
        yield group
