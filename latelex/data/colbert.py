"""The tab-separated and JSONL formats of Stanford ColBERT and MS MARCO.

* collection ``pid<TAB>text[<TAB>title]`` and queries ``qid<TAB>text``;
* rankings / top-k ``qid<TAB>pid<TAB>rank[<TAB>score]`` and MS MARCO ``top1000`` ``qid<TAB>pid<TAB>query<TAB>passage``;
* qrels ``qid 0 pid rel``;
* training triples, as texts ``query<TAB>positive<TAB>negative`` or as JSONL id lists (n-way, or scored for
  distillation).

Readers stream their file line by line; every malformed line is one :class:`~latelex.errors.FormatError` that
names the file and the line.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator

from latelex.data.lines import (
    PathLike,
    check_id,
    format_score,
    iter_records,
    parse_int,
    parse_score,
    ranked_rows,
    read_judgments,
    split_fields,
)
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.fsio import atomic_write
from latelex.types import Hit, Qrels, Run

__all__ = [
    "IdExample",
    "read_collection",
    "read_queries",
    "read_topk",
    "read_ranking",
    "read_top1000",
    "read_qrels",
    "read_text_triples",
    "read_id_triples",
    "write_ranking",
]


@dataclass(frozen=True)
class IdExample:
    """One training example given by ids.

    ``pids``: the passages of the example; for plain (n-way) triples the first is the positive and the rest are
    negatives. ``scores``: one teacher score per pid for distillation examples, else None.
    """

    qid: str
    pids: tuple[str, ...]
    scores: tuple[float, ...] | None


def iter_id_text_tsv(
    path: PathLike, *, id_name: str, text_name: str, header_ids: frozenset[str], allow_title: bool
) -> Iterator[tuple[str, str]]:
    """``(id, text)`` pairs of a ``id<TAB>text[<TAB>title]`` file (the shared core of collections and queries).

    A first line whose id is in ``header_ids`` is a header and skipped. With ``allow_title`` a non-empty third
    column is a title and the text becomes ``title + " | " + text``. Ids must be unique and texts non-empty.
    """
    shown = os.fspath(path)
    layout = f"{id_name}<TAB>{text_name}" + ("[<TAB>title]" if allow_title else "")
    records = iter_records(path)

    def gen() -> Iterator[tuple[str, str]]:
        seen: dict[str, int] = {}
        first = True
        for number, line in records:
            fields = line.split("\t")
            if first and fields[0].strip() in header_ids:
                first = False
                continue
            first = False
            if len(fields) < 2 or len(fields) > (3 if allow_title else 2):
                raise FormatError(f"expected {layout}, found {len(fields)} tab-separated columns", shown, number)
            key = check_id(fields[0].strip(), id_name, path, number)
            text = fields[1].strip()
            if allow_title and len(fields) == 3 and fields[2].strip():
                text = f"{fields[2].strip()} | {text}" if text else ""
            if not text:
                raise FormatError(f"{id_name} {key!r} has an empty text", shown, number)
            if key in seen:
                raise DuplicateIdError(f"duplicate {id_name} {key!r} (first seen on line {seen[key]})", shown, number)
            seen[key] = number
            yield key, text
        if not seen:
            raise InputError(f"{shown} is empty: expected lines of {layout}")

    return gen()


def read_collection(path: PathLike) -> Iterator[tuple[str, str]]:
    """Stream ``(pid, text)`` from a ColBERT collection TSV.

    Format: one passage per line, ``pid<TAB>text`` or ``pid<TAB>text<TAB>title``. With a non-empty title the text
    is ``title + " | " + text``, as Stanford ColBERT builds it. A first line whose pid is literally ``id`` is a
    header and skipped; blank lines at the end are ignored. Pids are any non-empty strings without whitespace
    (they need not be 0..N-1).

    Raises:
        InputError: the file is missing, or has no passages.
        FormatError: a line with fewer than 2 or more than 3 columns, an empty pid or an empty text, a blank line
            before the end, or bytes that are not UTF-8.
        DuplicateIdError: a pid appears twice.
    """
    return iter_id_text_tsv(path, id_name="pid", text_name="text", header_ids=frozenset({"id"}), allow_title=True)


def read_queries(path: PathLike) -> Iterator[tuple[str, str]]:
    """Stream ``(qid, text)`` from a queries TSV: one query per line, ``qid<TAB>text``.

    A first line whose qid is literally ``id`` or ``qid`` is a header and skipped.

    Raises:
        InputError: the file is missing, or has no queries.
        FormatError: a line without exactly 2 columns, an empty qid or text, a blank line before the end.
        DuplicateIdError: a qid appears twice.
    """
    return iter_id_text_tsv(
        path, id_name="qid", text_name="text", header_ids=frozenset({"id", "qid"}), allow_title=False
    )


def _read_ranked(path: PathLike) -> dict[str, list[tuple[str, float]]]:
    """Each query's ``(pid, score)`` of a ``qid pid [rank [score]]`` file, by rank; the score is ``-rank`` if absent."""
    shown = os.fspath(path)
    rows: dict[str, list[tuple[int, int, str, float | None]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, line in iter_records(path):
        fields = split_fields(line)
        if not 2 <= len(fields) <= 4:
            raise FormatError(f"expected qid<TAB>pid<TAB>rank[<TAB>score], found {len(fields)} columns", shown, number)
        qid = check_id(fields[0], "qid", path, number)
        pid = check_id(fields[1], "pid", path, number)
        ranked = rows.setdefault(qid, [])
        rank = parse_int(fields[2], "rank", path, number) if len(fields) >= 3 else len(ranked) + 1
        score = parse_score(fields[3], "score", path, number) if len(fields) == 4 else None
        if (qid, pid) in seen:
            raise DuplicateIdError(
                f"query {qid!r} ranks pid {pid!r} twice (first on line {seen[qid, pid]})", shown, number
            )
        seen[qid, pid] = number
        ranked.append((rank, number, pid, score))
    if not rows:
        raise InputError(f"{shown} is empty: expected lines of qid<TAB>pid<TAB>rank[<TAB>score]")
    out: dict[str, list[tuple[str, float]]] = {}
    for qid, ranked in rows.items():
        ranked.sort(key=lambda row: (row[0], row[1]))
        out[qid] = [(pid, score if score is not None else float(-rank)) for rank, _, pid, score in ranked]
    return out


def read_topk(path: PathLike) -> dict[str, list[str]]:
    """Each query's pids, best first, from a ColBERT ranking / top-k TSV.

    Format: ``qid<TAB>pid<TAB>rank`` or ``qid<TAB>pid<TAB>rank<TAB>score`` (tabs or other whitespace); pids are
    ordered by the integer rank, ties in file order. A bare ``qid<TAB>pid`` list is accepted too and keeps file
    order. Queries appear in the order of their first line.

    Raises:
        InputError: the file is missing or empty.
        FormatError: a line with another number of columns, a rank that is not an integer, a bad score.
        DuplicateIdError: the same pid twice for one query.
    """
    return {qid: [pid for pid, _ in ranked] for qid, ranked in _read_ranked(path).items()}


def read_ranking(path: PathLike) -> Run:
    """A run from a ColBERT ranking TSV (``qid<TAB>pid<TAB>rank[<TAB>score]``), each list ordered by rank.

    The score column is kept when present; without it a hit's score is ``-rank``, so that higher is still
    better. Same checks as :func:`read_topk`.
    """
    return {qid: [Hit(pid, score) for pid, score in ranked] for qid, ranked in _read_ranked(path).items()}


def iter_top1000_numbered(path: PathLike) -> Iterator[tuple[int, str, str, str, str]]:
    """Like :func:`read_top1000`, with each row's line number first (for callers that check across lines)."""
    shown = os.fspath(path)
    records = iter_records(path)

    def gen() -> Iterator[tuple[int, str, str, str, str]]:
        count = 0
        for number, line in records:
            fields = line.split("\t")
            if len(fields) != 4:
                raise FormatError(
                    f"expected qid<TAB>pid<TAB>query<TAB>passage, found {len(fields)} tab-separated columns",
                    shown,
                    number,
                )
            qid = check_id(fields[0].strip(), "qid", path, number)
            pid = check_id(fields[1].strip(), "pid", path, number)
            query, passage = fields[2].strip(), fields[3].strip()
            if not query:
                raise FormatError(f"query {qid!r} has an empty text", shown, number)
            if not passage:
                raise FormatError(f"pid {pid!r} has an empty text", shown, number)
            count += 1
            yield number, qid, pid, query, passage
        if count == 0:
            raise InputError(f"{shown} is empty: expected lines of qid<TAB>pid<TAB>query<TAB>passage")

    return gen()


def read_top1000(path: PathLike) -> Iterator[tuple[str, str, str, str]]:
    """Stream ``(qid, pid, query, passage)`` from an MS MARCO ``top1000`` file.

    Format: ``qid<TAB>pid<TAB>query<TAB>passage``, exactly 4 tab-separated columns, none empty. Duplicates are not
    checked here (that would hold every pair in memory); :func:`latelex.data.auto.read_candidates` checks them.

    Raises:
        InputError: the file is missing or empty.
        FormatError: a line without 4 columns or with an empty field.
    """
    rows = iter_top1000_numbered(path)
    return ((qid, pid, query, passage) for _, qid, pid, query, passage in rows)


def read_qrels(path: PathLike) -> Qrels:
    """Relevance judgements from a ColBERT / MS MARCO qrels file: ``qid 0 pid rel`` per line.

    Four columns separated by tabs or whitespace; the second is ignored, ``rel`` is an integer grade (0 is judged
    non-relevant). Blank lines are skipped.

    Raises:
        InputError: the file is missing or has no judgements.
        FormatError: a line without 4 columns, or a grade that is not an integer.
        DuplicateIdError: the same (qid, pid) judged twice.
    """
    return read_judgments(path, columns=4, qid_col=0, doc_col=2, grade_col=3, layout="qid 0 pid rel")


def read_text_triples(path: PathLike) -> Iterator[tuple[str, str, str]]:
    """Stream ``(query, positive, negative)`` texts from ``query<TAB>positive<TAB>negative`` lines.

    Raises:
        InputError: the file is missing or empty.
        FormatError: a line without exactly 3 tab-separated columns, or with an empty one.
    """
    shown = os.fspath(path)
    records = iter_records(path)
    names = ("query", "positive", "negative")

    def gen() -> Iterator[tuple[str, str, str]]:
        count = 0
        for number, line in records:
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) != 3:
                raise FormatError(
                    f"expected query<TAB>positive<TAB>negative, found {len(fields)} tab-separated columns",
                    shown,
                    number,
                )
            for name, field in zip(names, fields, strict=True):
                if not field:
                    raise FormatError(f"empty {name} text", shown, number)
            count += 1
            yield fields[0], fields[1], fields[2]
        if count == 0:
            raise InputError(f"{shown} is empty: expected lines of query<TAB>positive<TAB>negative")

    return gen()


def _json_id(value: Any, what: str, shown: str, number: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FormatError(f"{what} must be an integer or a string, found {json.dumps(value)}", shown, number)
    text = str(value)
    return check_id(text, what, shown, number)


def _json_score(value: Any, shown: str, number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormatError(f"score must be a finite number, found {json.dumps(value)}", shown, number)
    return float(value)


def _parse_id_example(line: str, shown: str, number: int) -> IdExample:
    layout = "[qid, pid_pos, pid_neg, ...] or [qid, [pid, score], [pid, score], ...]"
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON ({e.msg} at column {e.colno}); expected {layout}", shown, number) from None
    if not isinstance(value, list) or len(value) < 2:
        raise FormatError(f"expected a JSON list {layout}", shown, number)
    qid = _json_id(value[0], "qid", shown, number)
    rest = value[1:]
    if all(isinstance(item, list) for item in rest):
        pids: list[str] = []
        scores: list[float] = []
        for item in rest:
            if len(item) != 2:
                raise FormatError(f"expected [pid, score] pairs, found {json.dumps(item)}", shown, number)
            pids.append(_json_id(item[0], "pid", shown, number))
            scores.append(_json_score(item[1], shown, number))
        return IdExample(qid, tuple(pids), tuple(scores))
    if any(isinstance(item, list) for item in rest):
        raise FormatError(f"mixes bare pids and [pid, score] pairs; expected {layout}", shown, number)
    return IdExample(qid, tuple(_json_id(item, "pid", shown, number) for item in rest), None)


def read_id_triples(path: PathLike) -> Iterator[IdExample]:
    """Stream training examples from a JSONL file of ColBERT id lists, one JSON list per line.

    Two shapes are accepted:

    * ``[qid, pid_pos, pid_neg, ...]``: a positive followed by any number of negatives (n-way; a bare
      ``[qid, pid]`` pair is allowed for training with in-batch negatives only); ``scores`` is None;
    * ``[qid, [pid, score], [pid, score], ...]``: the ColBERTv2 distillation form with one teacher score per pid.

    Ids may be JSON integers or strings and are returned as strings.

    Raises:
        InputError: the file is missing or empty.
        FormatError: a line that is not valid JSON or not one of the shapes above.
    """
    shown = os.fspath(path)
    records = iter_records(path)

    def gen() -> Iterator[IdExample]:
        count = 0
        for number, line in records:
            count += 1
            yield _parse_id_example(line, shown, number)
        if count == 0:
            raise InputError(f"{shown} is empty: expected JSON lists of ids, one per line")

    return gen()


def write_ranking(path: PathLike, run: Run) -> None:
    """Write a run as a ColBERT ranking TSV: ``qid<TAB>pid<TAB>rank<TAB>score``, ranks from 1.

    Queries are written in the run's order and each list in its order, which must be best first. Scores are
    written with the shortest text that reads back exactly. The file is replaced atomically: if anything fails
    (for example an invalid hit), the previous file is left untouched.

    Raises:
        InputError: an id that is not a non-empty string without whitespace, a score that is not a number or
            is NaN, or a list whose scores increase.
    """
    with atomic_write(path) as f:
        for qid, rank, pid, score in ranked_rows(run):
            f.write(f"{qid}\t{pid}\t{rank}\t{format_score(score)}\n")
