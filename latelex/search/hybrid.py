"""Hybrid search: a first stage (BM25, SPLADE, ColBERT, or a fusion of them) and an optional ColBERT re-ranking.

- :func:`rerank_first_stage` re-scores each query's first-stage candidates with exact late interaction in one
  call, either with a ColBERT *encoder* (documents encoded on the fly by :func:`latelex.search.rerank.rerank`,
  texts needed) or with a *retriever* whose index already holds the documents' vectors (a
  :class:`~latelex.search.retriever.Retriever`: its index scores exactly the candidates, nothing is re-encoded).
- :class:`HybridSearcher` binds members (anything with ``search_queries(queries, k) -> Run``: a ``Retriever``,
  a :class:`~latelex.index.bm25.BM25Index`), a fusion (:mod:`latelex.search.fusion`) and that optional re-ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..config import config_from_dict, config_to_dict
from ..errors import ConfigError, InputError
from ..index.ids import query_pairs
from ..types import Hit, Run
from . import fusion as _fusion

FUSIONS = ("rrf", "score")


def rerank_first_stage(
    first_stage_run: Run,
    colbert_encoder: Any,
    queries: Mapping[str, str],
    documents: Mapping[str, str] | None = None,
    k: int | None = None,
    *,
    depth: int | None = None,
    batch_size: int = 32,
    show_progress: bool | None = None,
) -> Run:
    """Re-rank the first ``depth`` candidates of each query of ``first_stage_run`` by exact late interaction.

    ``colbert_encoder`` is either a ColBERT encoder (:class:`latelex.ColBERT`; the candidates' texts are looked up
    in ``documents`` and encoded on the fly) or a :class:`~latelex.search.retriever.Retriever` (anything with
    ``.encoder`` and ``.index``), whose index scores the candidates from its stored vectors (float16 for a flat
    index, so scores agree with on-the-fly encoding to float16 precision) and which then needs no ``documents``.
    ``queries``: ``{qid: text}`` for every query of the run. Returns ``{qid: hits}`` with the re-ranked top ``k``
    (all candidates by default) for every query of the run, best first; a query without candidates keeps an empty
    list. Raises :class:`InputError` for an empty run, a query without text, a candidate unknown to ``documents``
    (or to the retriever's index), or ``k`` / ``depth`` below 1.
    """
    if not isinstance(first_stage_run, dict) or not first_stage_run:
        raise InputError("the first-stage run is empty; give {qid: [Hit, ...]} for at least one query")
    for name, value in (("k", k), ("depth", depth)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{name} must be a positive integer or None, not {value!r}")
    candidates: dict[str, list[str]] = {}
    for qid, hits in first_stage_run.items():
        ids: list[str] = []
        for hit in hits if depth is None else hits[:depth]:
            if not isinstance(hit, Hit):
                raise InputError(f"the first-stage run maps query {qid!r} to {type(hit).__name__} values, not Hits")
            ids.append(hit.doc_id)
        candidates[qid] = list(dict.fromkeys(ids))
    missing = [q for q, c in candidates.items() if c and q not in queries]
    if missing:
        raise InputError(f"{len(missing)} first-stage queries have no text, e.g. {missing[0]!r}; pass every query's text")
    out: Run = {q: [] for q in candidates}
    if not any(candidates.values()):
        return out
    if _is_retriever(colbert_encoder):
        out.update(_rerank_with_index(colbert_encoder, candidates, queries, k, batch_size))
        return out
    if not hasattr(colbert_encoder, "encode_queries") or not hasattr(colbert_encoder, "encode_documents"):
        raise InputError(
            f"cannot re-rank with a {type(colbert_encoder).__name__}; pass a ColBERT encoder or a Retriever"
        )
    if documents is None:
        raise InputError("re-ranking with an encoder needs the documents' texts; pass documents={doc_id: text}")
    from .rerank import rerank

    out.update(rerank(colbert_encoder, queries, candidates, documents, k=k, batch_size=batch_size,
                      show_progress=show_progress))
    return out


def _is_retriever(obj: Any) -> bool:
    return hasattr(obj, "encoder") and hasattr(obj, "search") and hasattr(obj, "store")


def _rerank_with_index(retriever: Any, candidates: dict[str, list[str]], queries: Mapping[str, str],
                       k: int | None, batch_size: int) -> Run:
    """Exact scores of each query's candidates from the vectors stored in the retriever's index (every segment)."""
    run: Run = {}
    for qid, cands in candidates.items():
        if cands:
            run[qid] = retriever.search(queries[qid], k=k or len(cands), subset=cands, with_text=False,
                                        batch_size=batch_size)
    return run


@dataclass(frozen=True)
class HybridConfig:
    """How a :class:`HybridSearcher` combines its members.

    ``fusion``: ``"rrf"`` (:func:`~latelex.search.fusion.reciprocal_rank_fusion`, constant ``rrf_k``) or
    ``"score"`` (:func:`~latelex.search.fusion.score_fusion` with ``normalization``). ``weights``: one per member
    (default 1 each). ``depth``: hits asked of each member per query, and candidates handed to the re-ranker
    (``rerank_depth`` overrides the latter).
    """

    fusion: str = "rrf"
    weights: tuple[float, ...] | None = None
    depth: int = 100
    rrf_k: float = 60
    normalization: str = "minmax"
    rerank_depth: int | None = None

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be 'rrf' or 'score', not {self.fusion!r}")
        if self.normalization not in _fusion.NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {', '.join(_fusion.NORMALIZATIONS)}, not {self.normalization!r}")
        if self.weights is not None:
            if isinstance(self.weights, (str, int, float)):
                raise ConfigError("weights must be a list with one number per member")
            try:
                weights = tuple(float(w) for w in self.weights)
            except (TypeError, ValueError):
                raise ConfigError(f"weights must be numbers, not {self.weights!r}") from None
            if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
                raise ConfigError(f"weights must be finite numbers >= 0, at least one positive, not {list(weights)}")
            object.__setattr__(self, "weights", weights)
        for name in ("depth", "rerank_depth"):
            value = getattr(self, name)
            if value is None and name == "rerank_depth":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, (int, float)) or self.rrf_k < 0:
            raise ConfigError(f"rrf_k must be a number >= 0, not {self.rrf_k!r}")


class HybridSearcher:
    """Members searched one after another, their runs fused, the fused top optionally re-ranked by ColBERT.

    Build with :meth:`from_members`; the constructor only stores fields. With one member there is nothing to
    fuse: its run (cut at ``depth``) is the first stage as it is, scores included.
    """

    def __init__(self, members: Sequence[Any], config: HybridConfig, rerank_with: Any = None,
                 documents: Mapping[str, str] | None = None) -> None:
        self.members = tuple(members)
        self.config = config
        self.rerank_with = rerank_with
        self.documents = documents

    @classmethod
    def from_members(
        cls,
        members: Sequence[Any],
        *,
        fusion: str = "rrf",
        weights: Sequence[float] | None = None,
        rerank_with: Any = None,
        depth: int = 100,
        documents: Mapping[str, str] | Any = None,
        **options: Any,
    ) -> "HybridSearcher":
        """Bind ``members`` (each with ``search_queries(queries, k) -> Run``), a fusion and an optional re-ranker.

        ``rerank_with``: None, a ColBERT encoder (then ``documents`` is needed: ``{doc_id: text}``, or a
        ``Retriever`` built with texts) or a ColBERT ``Retriever`` (re-scores from its stored vectors).
        ``options``: the other :class:`HybridConfig` fields (``rrf_k``, ``normalization``, ``rerank_depth``);
        an unknown name raises :class:`ConfigError`.
        """
        members = list(members)
        if not members:
            raise InputError("a hybrid searcher needs at least one member")
        for i, member in enumerate(members):
            if not callable(getattr(member, "search_queries", None)):
                raise InputError(f"member {i} ({type(member).__name__}) has no search_queries(queries, k) method")
        config = config_from_dict(HybridConfig, {**config_to_dict(HybridConfig()), "fusion": fusion,
                                                 "weights": None if weights is None else tuple(weights),
                                                 "depth": depth, **options})
        if config.weights is not None and len(config.weights) != len(members):
            raise InputError(f"{len(config.weights)} weights for {len(members)} members; give one weight per member")
        if documents is not None and not isinstance(documents, Mapping):
            documents = _DocumentStore(documents)
        if rerank_with is not None and not _is_retriever(rerank_with) and documents is None:
            raise InputError("re-ranking with an encoder needs the documents' texts; pass documents=")
        return cls(members, config, rerank_with, documents)

    def search_queries(self, queries: Mapping[str, str] | Iterable[tuple[str, str]], k: int = 10) -> Run:
        """The fused (and, with a re-ranker, re-ranked) top ``k`` of each query: ``{qid: hits}``, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        queries = dict(query_pairs(queries))
        runs = [member.search_queries(queries, k=self.config.depth) for member in self.members]
        first = self.fuse(runs)
        if self.rerank_with is None:
            return {q: hits[:k] for q, hits in first.items()}
        depth = self.config.rerank_depth or self.config.depth
        return rerank_first_stage(first, self.rerank_with, queries, self.documents, k=k, depth=depth)

    def fuse(self, runs: Sequence[Run]) -> Run:
        """The first-stage run from the members' runs (one per member, in order), by this searcher's fusion."""
        c = self.config
        if len(runs) == 1:
            return {q: list(hits[: c.depth]) for q, hits in runs[0].items()}
        if c.fusion == "rrf":
            return _fusion.reciprocal_rank_fusion(runs, k=c.rrf_k, weights=c.weights, depth=c.depth)
        return _fusion.score_fusion(runs, weights=c.weights, normalization=c.normalization, depth=c.depth)

    def __repr__(self) -> str:
        names = ", ".join(type(m).__name__ for m in self.members)
        rerank = "" if self.rerank_with is None else f", rerank_with={type(self.rerank_with).__name__}"
        return f"HybridSearcher(members=[{names}], fusion={self.config.fusion!r}, depth={self.config.depth}{rerank})"


class _DocumentStore:
    """``{doc_id: text}`` lookups (``in`` and ``[]``, all that re-ranking uses) over an object with ``document(id)``."""

    def __init__(self, source: Any) -> None:
        if not callable(getattr(source, "document", None)):
            raise InputError(f"documents must be a {{doc_id: text}} mapping or a Retriever, not {type(source).__name__}")
        self.source = source

    def __contains__(self, doc_id: object) -> bool:
        try:
            self.source.document(doc_id)
        except InputError:
            return False
        return True

    def __getitem__(self, doc_id: str) -> str:
        return self.source.document(doc_id)


__all__ = ["FUSIONS", "HybridConfig", "HybridSearcher", "rerank_first_stage"]
