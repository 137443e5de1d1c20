"""Training examples: text triples or id tuples resolved against a collection and queries, checked before step 0.

Every id of every example is looked up before training starts, so a triples file from another dataset, a
teacher-score file that does not match, or an empty file fails with one line instead of at step 40,000.

Example order is a seeded permutation per epoch (``numpy.random.default_rng([seed, epoch])``), so the example
at any position of the stream is known from the seed alone: resuming needs only the step.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from ..data.colbert import IdExample, read_text_triples
from ..data.lines import iter_records
from ..errors import FormatError, InputError
from ..types import Qrels

PathLike = Union[str, "os.PathLike[str]"]
#: Texts given directly (``{id: text}``) or as a file / folder that :mod:`latelex.data.auto` reads.
TextSource = Union[Mapping[str, str], PathLike]

_LAYOUT = "[qid, pid+, pid-, ...], [qid, [pid, score], ...] or [qid, [[pid, score], ...]]"


# ---------------------------------------------------------------------- reading id files


def _id(value: object, what: str, shown: str, number: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise FormatError(f"{what} must be a non-empty integer or string, found {json.dumps(value)}", shown, number)
    return str(value).strip()


def _score(value: object, shown: str, number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormatError(f"score must be a finite number, found {json.dumps(value)}", shown, number)
    return float(value)


def _pairs(items: list, shown: str, number: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    pids, scores = [], []
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise FormatError(f"expected [pid, score] pairs, found {json.dumps(item)}; expected {_LAYOUT}", shown, number)
        pids.append(_id(item[0], "pid", shown, number))
        scores.append(_score(item[1], shown, number))
    return tuple(pids), tuple(scores)


def parse_example_line(line: str, shown: str, number: int) -> IdExample:
    """One JSONL training line in any of the three ColBERT shapes (see :func:`read_examples`)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON ({e.msg} at column {e.colno}); expected {_LAYOUT}", shown, number) from None
    if not isinstance(value, list) or len(value) < 2:
        raise FormatError(f"expected a JSON list {_LAYOUT}", shown, number)
    qid = _id(value[0], "qid", shown, number)
    rest = value[1:]
    if len(rest) == 1 and isinstance(rest[0], list) and rest[0] and all(isinstance(x, list) for x in rest[0]):
        pids, scores = _pairs(rest[0], shown, number)  # nested: [qid, [[pid, score], ...]]
        return IdExample(qid, pids, scores)
    if all(isinstance(item, list) for item in rest):
        pids, scores = _pairs(rest, shown, number)  # flat: [qid, [pid, score], ...]
        return IdExample(qid, pids, scores)
    if any(isinstance(item, list) for item in rest):
        raise FormatError(f"mixes bare pids and [pid, score] pairs; expected {_LAYOUT}", shown, number)
    return IdExample(qid, tuple(_id(item, "pid", shown, number) for item in rest), None)


def read_examples(path: PathLike) -> Iterator[tuple[int, IdExample]]:
    """Stream ``(line number, example)`` from a JSONL file of ColBERT training examples.

    Accepted per line: ``[qid, pid+, pid-, ...]`` (n-way; ``scores`` None), ``[qid, [pid, score], ...]`` and
    ``[qid, [[pid, score], ...]]`` (ColBERTv2 distillation; one teacher score per pid). Ids may be JSON integers
    or strings. (:func:`latelex.data.read_id_triples` reads the first two shapes, not the nested one.)

    Raises:
        InputError: the file is missing or has no example.
        FormatError: a line that is not one of the shapes above.
    """
    shown = os.fspath(path)
    records = iter_records(path)

    def gen() -> Iterator[tuple[int, IdExample]]:
        count = 0
        for number, line in records:
            count += 1
            yield number, parse_example_line(line, shown, number)
        if count == 0:
            raise InputError(f"{shown} is empty: expected training examples {_LAYOUT}, one per line")

    return gen()


def read_teacher_scores(path: PathLike) -> dict[str, dict[str, float]]:
    """Teacher scores ``{qid: {pid: score}}`` from a JSONL file of ``[qid, [[pid, score], ...]]`` (or the flat
    ``[qid, [pid, score], ...]``) lines; lines of the same query are merged.

    Raises:
        InputError: an empty file, or a line without scores.
        FormatError: a malformed line.
    """
    shown = os.fspath(path)
    out: dict[str, dict[str, float]] = {}
    for number, example in read_examples(path):
        if example.scores is None:
            raise FormatError("line has no scores; a teacher-score file holds [qid, [[pid, score], ...]]", shown, number)
        out.setdefault(example.qid, {}).update(zip(example.pids, example.scores))
    return out


def _texts(source: TextSource, kind: str) -> Mapping[str, str]:
    if isinstance(source, Mapping):
        return source
    from ..data.auto import read_documents, read_queries_any

    reader = read_queries_any if kind == "queries" else read_documents
    return dict(reader(source))


# ---------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class TrainBatch:
    """One (micro-)batch: ``queries`` (B texts), ``passages`` (B * W texts, example by example, positive first),
    ``scores`` (B, W) float32 teacher scores or None."""

    queries: list[str]
    passages: list[str]
    scores: np.ndarray | None

    @property
    def nway(self) -> int:
        return len(self.passages) // max(1, len(self.queries))


@dataclass(frozen=True)
class TrainingData:
    """N training examples of ``nway`` passages each, resolved to texts.

    ``qids`` (N,) and ``pids`` (N, nway) index ``queries`` and ``documents``; ``scores`` is an (N, nway) float32
    array of teacher scores or None. Build with :meth:`from_id_triples`, :meth:`from_examples` or
    :meth:`from_text_triples`; all of them check every id before returning.
    """

    qids: tuple[str, ...]
    pids: tuple[tuple[str, ...], ...]
    scores: np.ndarray | None
    queries: Mapping[str, str] = field(repr=False)
    documents: Mapping[str, str] = field(repr=False)
    nway: int = 2
    source: str = ""

    def __len__(self) -> int:
        return len(self.qids)

    @classmethod
    def from_examples(
        cls,
        examples: Iterable[IdExample] | Iterable[tuple[int, IdExample]],
        queries: TextSource,
        documents: TextSource,
        *,
        nway: int = 2,
        teacher_scores: Mapping[str, Mapping[str, float]] | PathLike | None = None,
        source: str = "examples",
    ) -> "TrainingData":
        """Resolve id examples against ``queries`` and ``documents`` (mappings, or paths read with
        :mod:`latelex.data.auto`), keeping the first ``nway`` passages of each example.

        ``teacher_scores`` (``{qid: {pid: score}}`` or a JSONL path) replaces or supplies each example's scores.
        Raises :class:`InputError` for an example whose query or a passage is unknown, an example with fewer than
        ``nway`` passages, a teacher file without a score for one of the example's pairs, or no example at all.
        """
        if isinstance(nway, bool) or not isinstance(nway, int) or nway < 1:
            raise InputError(f"nway must be a positive integer, not {nway!r}")
        teacher_name = None
        if teacher_scores is not None and not isinstance(teacher_scores, Mapping):
            teacher_name = os.fspath(teacher_scores)
            teacher_scores = read_teacher_scores(teacher_scores)
        query_texts = _texts(queries, "queries")
        doc_texts = _texts(documents, "documents")
        qids: list[str] = []
        pids: list[tuple[str, ...]] = []
        rows: list[tuple[float, ...]] = []
        all_scored = True
        for position, item in enumerate(examples, start=1):
            number, example = item if isinstance(item, tuple) else (position, item)
            where = f"{source}:{number}"
            if example.qid not in query_texts:
                raise InputError(
                    f"{where}: query {example.qid!r} is not among the queries; give the queries of the same dataset"
                )
            if len(example.pids) < nway:
                raise InputError(
                    f"{where}: query {example.qid!r} has {len(example.pids)} passage(s) but nway={nway} needs {nway}; "
                    "lower nway or mine more negatives"
                )
            chosen = tuple(example.pids[:nway])
            for pid in chosen:
                if pid not in doc_texts:
                    raise InputError(
                        f"{where}: passage {pid!r} is not in the collection; give the collection the examples were made from"
                    )
            if teacher_scores is not None:
                known = teacher_scores.get(example.qid)
                missing = [p for p in chosen if known is None or p not in known]
                if missing:
                    raise InputError(
                        f"{where}: the teacher scores{' in ' + teacher_name if teacher_name else ''} have no score for "
                        f"query {example.qid!r} and passage {missing[0]!r}; the teacher file does not match the examples"
                    )
                rows.append(tuple(float(known[p]) for p in chosen))  # type: ignore[index]
            elif example.scores is not None:
                rows.append(tuple(example.scores[:nway]))
            else:
                all_scored = False
            qids.append(example.qid)
            pids.append(chosen)
        if not qids:
            raise InputError(f"{source} holds no training example; give a non-empty training file")
        if rows and not all_scored:
            raise InputError(f"{source}: some examples have teacher scores and some do not; use one shape throughout")
        scores = np.asarray(rows, dtype=np.float32) if rows else None
        return cls(tuple(qids), tuple(pids), scores, query_texts, doc_texts, nway, source)

    @classmethod
    def from_id_triples(
        cls,
        path: PathLike,
        queries: TextSource,
        documents: TextSource,
        *,
        nway: int = 2,
        teacher_scores: Mapping[str, Mapping[str, float]] | PathLike | None = None,
    ) -> "TrainingData":
        """Read a JSONL file of id examples (any shape of :func:`read_examples`) and resolve it."""
        return cls.from_examples(read_examples(path), queries, documents, nway=nway, teacher_scores=teacher_scores,
                                 source=os.fspath(path))

    @classmethod
    def from_text_triples(cls, path: PathLike) -> "TrainingData":
        """Read ``query<TAB>positive<TAB>negative`` lines (nway = 2); each text is its own id."""
        texts: dict[str, str] = {}
        qids: list[str] = []
        pids: list[tuple[str, ...]] = []
        for query, positive, negative in read_text_triples(path):
            for t in (query, positive, negative):
                texts.setdefault(t, t)
            qids.append(query)
            pids.append((positive, negative))
        return cls(tuple(qids), tuple(pids), None, texts, texts, 2, os.fspath(path))

    # ------------------------------------------------------------------ order and batches

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """(N,) int64: the permutation of examples for ``epoch``."""
        return np.random.default_rng([int(seed), int(epoch)]).permutation(len(self))

    def positions(self, seed: int, start: int, count: int) -> list[int]:
        """Example numbers at stream positions ``start .. start + count - 1`` (epochs follow one another)."""
        n = len(self)
        out: list[int] = []
        cached: tuple[int, np.ndarray] | None = None
        for p in range(start, start + count):
            epoch = p // n
            if cached is None or cached[0] != epoch:
                cached = (epoch, self.order(seed, epoch))
            out.append(int(cached[1][p % n]))
        return out

    def batch(self, indices: Sequence[int]) -> TrainBatch:
        """The texts (and scores) of the examples numbered ``indices``."""
        queries = [self.queries[self.qids[i]] for i in indices]
        passages = [self.documents[p] for i in indices for p in self.pids[i]]
        scores = None if self.scores is None else self.scores[np.asarray(indices, dtype=np.int64)]
        return TrainBatch(queries, passages, scores)


@dataclass(frozen=True)
class DevSet:
    """A development set evaluated during training.

    ``queries`` ``{qid: text}``; ``qrels``; ``documents`` ``{pid: text}``; ``candidates`` ``{qid: [pid, ...]}`` to
    re-rank, or None to rank every document (small dev collections only). Build with :meth:`create`, which checks
    that every judged query has a text and every candidate a document.
    """

    queries: Mapping[str, str] = field(repr=False)
    qrels: Qrels = field(repr=False)
    documents: Mapping[str, str] = field(repr=False)
    candidates: Mapping[str, Sequence[str]] | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        queries: TextSource,
        qrels: Qrels,
        documents: TextSource,
        candidates: Mapping[str, Sequence[str]] | None = None,
    ) -> "DevSet":
        query_texts = {q: t for q, t in _texts(queries, "queries").items() if q in qrels}
        if not query_texts:
            raise InputError("no dev query has relevance judgements; give the dev queries and their qrels")
        doc_texts = _texts(documents, "documents")
        if not doc_texts:
            raise InputError("the dev collection is empty")
        if candidates is not None:
            for qid, pids in candidates.items():
                for pid in pids:
                    if pid not in doc_texts:
                        raise InputError(f"dev candidate {pid!r} of query {qid!r} is not in the dev collection")
        qrels = {q: dict(d) for q, d in qrels.items() if q in query_texts}
        return cls(query_texts, qrels, doc_texts, candidates)


__all__ = [
    "DevSet",
    "TrainBatch",
    "TrainingData",
    "parse_example_line",
    "read_examples",
    "read_teacher_scores",
]
