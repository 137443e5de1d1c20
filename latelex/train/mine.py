"""Hard-negative mining: the ColBERTv2 loop of retrieve, (optionally) re-score with a teacher, write n-way tuples.

Any retriever with ``search_queries(queries, k) -> Run`` serves: :class:`latelex.search.retriever.Retriever`
(ColBERT or SPLADE over the training collection) or :class:`BM25Retriever` here. For every query with a judged
positive, :func:`mine_hard_negatives` forms ``examples_per_query`` tuples of one positive and ``nway - 1``
negatives sampled from the retrieved ranks ``[a, b]`` (judged positives excluded), and writes them as JSONL
``[qid, pid+, pid-, ...]``, or with a teacher (a cross-encoder, a ColBERT model or a latelex index)
``[qid, [pid, score], ...]``, ready for
:meth:`latelex.train.TrainingData.from_id_triples`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError, ModelError
from ..fsio import atomic_write
from ..types import Hit, Qrels, Run

logger = logging.getLogger("latelex.train")


@dataclass(frozen=True)
class MiningResult:
    """What :func:`mine_hard_negatives` wrote: the file, the number of tuples and of queries they cover, and the
    queries skipped for want of a positive among the queries or of enough negatives in the rank window."""

    path: Path
    examples: int
    queries: int
    skipped_without_positive: int
    skipped_few_negatives: int
    scored: bool


class BM25Retriever:
    """BM25 over an in-memory collection (through ``bm25s``), with the ``search_queries`` shape of
    :class:`latelex.search.retriever.Retriever`. Build with :meth:`build`."""

    def __init__(self, doc_ids: list[str], model: Any, stopwords: str | None) -> None:
        self.doc_ids = doc_ids
        self.model = model
        self.stopwords = stopwords

    @classmethod
    def build(cls, collection: Mapping[str, str] | Iterable[tuple[str, str]], *, k1: float = 1.5, b: float = 0.75,
              stopwords: str | None = "en") -> "BM25Retriever":
        """Index ``(doc_id, text)`` pairs (or ``{doc_id: text}``)."""
        try:
            import bm25s
        except ImportError:
            raise ModelError("BM25 mining needs the bm25s package: pip install 'bm25s>=0.2'") from None
        pairs = list(collection.items()) if isinstance(collection, Mapping) else list(collection)
        if not pairs:
            raise InputError("the collection is empty; give at least one document")
        model = bm25s.BM25(k1=k1, b=b)
        model.index(bm25s.tokenize([t for _, t in pairs], stopwords=stopwords, show_progress=False), show_progress=False)
        return cls([d for d, _ in pairs], model, stopwords)

    def search_queries(self, queries: Mapping[str, str] | Iterable[tuple[str, str]], k: int = 10, **_: Any) -> Run:
        """``{qid: hits}`` with the ``k`` best documents of each query; documents sharing no term are left out."""
        import bm25s

        pairs = list(queries.items()) if isinstance(queries, Mapping) else list(queries)
        if not pairs:
            raise InputError("no queries to search")
        k = min(k, len(self.doc_ids))
        tokens = bm25s.tokenize([t for _, t in pairs], stopwords=self.stopwords, show_progress=False)
        docs, scores = self.model.retrieve(tokens, k=k, show_progress=False)
        return {
            qid: [Hit(self.doc_ids[int(d)], float(s)) for d, s in zip(docs[row], scores[row]) if s > 0]
            for row, (qid, _) in enumerate(pairs)
        }


class CrossEncoderTeacher:
    """A cross-encoder that scores (query, passage) pairs: any transformers sequence-classification checkpoint.

    One output label: its logit is the score; two labels: ``logit[1] - logit[0]`` (the log-odds of relevance).
    Build with :meth:`from_pretrained`.
    """

    def __init__(self, model: Any, tokenizer: Any, device: Any, batch_size: int, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, device: Any = None, batch_size: int = 32,
                        max_length: int = 512) -> "CrossEncoderTeacher":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..encoders.loading import pick_device, quiet_transformers, resolve_model_dir

        directory = resolve_model_dir(name_or_path)
        try:
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(str(directory))
                tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{name_or_path} is not a sequence-classification checkpoint ({str(exc).splitlines()[0][:120]})") from None
        labels = int(model.config.num_labels)
        if labels not in (1, 2):
            raise ModelError(f"{name_or_path} has {labels} output labels; a cross-encoder teacher needs 1 or 2")
        device = pick_device(device)
        model.to(device).eval()
        return cls(model, tokenizer, device, batch_size, max_length)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(N,) float32 scores of the pairs ``(queries[i], passages[i])``."""
        import torch

        if len(queries) != len(passages):
            raise InputError(f"{len(queries)} queries but {len(passages)} passages; pass one passage per query")
        out = np.zeros(len(queries), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(queries), self.batch_size):
                stop = start + self.batch_size
                tokens = self.tokenizer(list(queries[start:stop]), list(passages[start:stop]), truncation=True,
                                        max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(**{k: v.to(self.device) for k, v in tokens.items()}).logits.float()
                values = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
                out[start:stop] = values.cpu().numpy()
        return out


def mine_hard_negatives(
    retriever: Any,
    queries: Mapping[str, str] | Iterable[tuple[str, str]],
    qrels: Qrels,
    output: str | os.PathLike,
    *,
    nway: int = 2,
    ranks: tuple[int, int] = (1, 100),
    examples_per_query: int = 1,
    min_grade: int = 1,
    seed: int = 0,
    teacher: CrossEncoderTeacher | None = None,
    documents: Mapping[str, str] | None = None,
    batch_size: int = 64,
) -> MiningResult:
    """Retrieve for every judged query, sample hard negatives and write n-way training tuples to ``output`` (JSONL).

    ``retriever``: anything with ``search_queries(queries, k) -> Run`` over the training collection;
    ``nway``: passages per tuple (1 positive + ``nway - 1`` negatives); ``ranks``: the 1-based, inclusive window
    of retrieved ranks negatives are drawn from (documents judged ``>= min_grade`` are never negatives);
    ``examples_per_query``: tuples per query, cycling over its positives; ``teacher``: re-scores every pair of a
    tuple, which then is written as ``[qid, [pid, score], ...]``: a :class:`CrossEncoderTeacher` or a
    :class:`latelex.train.teachers.MaxSimTeacher` (both need ``documents``, the collection texts) or an
    :class:`latelex.train.teachers.IndexTeacher` (scores by document id; see :func:`latelex.train.teachers.load_teacher`).
    Queries without a positive, or with fewer than ``nway - 1`` candidates in the window, are skipped and counted.
    The file is written atomically. Sampling is seeded: the same inputs give the same file.
    """
    if isinstance(nway, bool) or not isinstance(nway, int) or nway < 2:
        raise InputError(f"nway must be an integer >= 2 (a positive and at least one negative), not {nway!r}")
    a, b = ranks
    if not (isinstance(a, int) and isinstance(b, int) and 1 <= a <= b):
        raise InputError(f"ranks must be a window 1 <= a <= b of retrieved ranks, not {ranks!r}")
    if examples_per_query < 1:
        raise InputError(f"examples_per_query must be at least 1, not {examples_per_query}")
    by_id = teacher is not None and hasattr(teacher, "score_ids")  # an index teacher holds the documents itself
    if teacher is not None and documents is None and not by_id:
        raise InputError("re-scoring with a teacher needs the collection texts; pass documents={pid: text}")
    pairs = list(queries.items()) if isinstance(queries, Mapping) else list(queries)
    if not pairs:
        raise InputError("no queries to mine; give the training queries")
    texts = dict(pairs)
    positives = {
        qid: sorted(pid for pid, grade in judged.items() if grade >= min_grade)
        for qid, judged in qrels.items()
        if qid in texts
    }
    positives = {q: p for q, p in positives.items() if p}
    without_positive = len(texts) - len(positives)
    if not positives:
        raise InputError(f"no query has a judged positive (grade >= {min_grade}); give the qrels of these queries")
    todo = [(q, texts[q]) for q in texts if q in positives]
    run = retriever.search_queries(todo, k=b, batch_size=batch_size) if _takes_batch_size(retriever) else \
        retriever.search_queries(todo, k=b)
    rng = np.random.default_rng(seed)
    tuples: list[tuple[str, list[str]]] = []
    few = 0
    for qid, _ in todo:
        judged = set(positives[qid])
        pool = [h.doc_id for h in run.get(qid, [])[a - 1 : b] if h.doc_id not in judged]
        if len(pool) < nway - 1:
            few += 1
            continue
        order = list(positives[qid])
        rng.shuffle(order)
        for j in range(examples_per_query):
            chosen = rng.choice(len(pool), size=nway - 1, replace=False)
            tuples.append((qid, [order[j % len(order)], *(pool[int(i)] for i in chosen)]))
    if not tuples:
        raise InputError(
            f"no tuple could be formed: every judged query has fewer than {nway - 1} unjudged documents in ranks "
            f"{a}-{b}; widen the rank window or lower nway"
        )
    scores: list[np.ndarray] | None = None
    if teacher is not None:
        flat_q = [texts[q] for q, ps in tuples for _ in ps]
        if by_id:
            flat = teacher.score_ids(flat_q, [p for _, ps in tuples for p in ps])
        else:
            missing = next((p for _, ps in tuples for p in ps if p not in documents), None)  # type: ignore[operator]
            if missing is not None:
                raise InputError(f"passage {missing!r} was retrieved but is not in the documents given for the teacher")
            flat = teacher.score(flat_q, [documents[p] for _, ps in tuples for p in ps])  # type: ignore[index]
        scores = list(flat.reshape(len(tuples), nway))
    path = Path(output).expanduser()
    with atomic_write(path) as f:
        for i, (qid, pids) in enumerate(tuples):
            if scores is None:
                row: list[Any] = [qid, *pids]
            else:
                row = [qid, *([p, round(float(s), 6)] for p, s in zip(pids, scores[i]))]
            f.write(json.dumps(row) + "\n")
    result = MiningResult(path.resolve(), len(tuples), len({q for q, _ in tuples}), without_positive, few,
                          teacher is not None)
    logger.info("mined %d tuples for %d queries into %s (%d without positive, %d with too few negatives)",
                result.examples, result.queries, path, without_positive, few)
    return result


def _takes_batch_size(retriever: Any) -> bool:
    import inspect

    try:
        return "batch_size" in inspect.signature(retriever.search_queries).parameters
    except (TypeError, ValueError):
        return False


__all__ = ["BM25Retriever", "CrossEncoderTeacher", "MiningResult", "mine_hard_negatives"]
