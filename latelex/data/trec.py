"""TREC formats: runs, qrels and topics.

* run: ``qid Q0 docid rank score tag`` per line, whitespace separated;
* qrels: ``qid iter docid rel`` per line, whitespace separated;
* topics: classic SGML (``<top> <num> Number: 301 <title> ... <desc> ... <narr> ... </top>``) or ``qid<TAB>text``.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from latelex.data.colbert import iter_id_text_tsv
from latelex.data.lines import (
    PathLike,
    check_id,
    first_record,
    format_score,
    iter_lines,
    iter_nonblank,
    parse_int,
    parse_score,
    ranked_rows,
    read_judgments,
)
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.fsio import atomic_write
from latelex.types import Hit, Qrels, Run

__all__ = ["read_trec_run", "write_trec_run", "read_trec_qrels", "read_trec_topics", "is_sgml_topics"]

_RUN_LAYOUT = "qid Q0 docid rank score tag"


def read_trec_run(path: PathLike) -> Run:
    """A run from a TREC run file: ``qid Q0 docid rank score tag`` per line, whitespace separated.

    Each query's hits are ordered by score, highest first; equal scores keep rank order (then file order), so a
    file written by :func:`write_trec_run` reads back in its written order. The second and sixth columns are
    not checked. Blank lines are skipped. Queries appear in the order of their first line.

    Raises:
        InputError: the file is missing or has no lines.
        FormatError: a line without 6 columns, a rank that is not an integer, a score that is not a number.
        DuplicateIdError: the same docid twice for one query.
    """
    shown = os.fspath(path)
    rows: dict[str, list[tuple[float, int, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, line in iter_nonblank(path):
        fields = line.split()
        if len(fields) != 6:
            raise FormatError(f"expected 6 columns ({_RUN_LAYOUT}), found {len(fields)}", shown, number)
        qid = check_id(fields[0], "query id", path, number)
        doc = check_id(fields[2], "document id", path, number)
        rank = parse_int(fields[3], "rank", path, number)
        score = parse_score(fields[4], "score", path, number)
        if (qid, doc) in seen:
            raise DuplicateIdError(
                f"query {qid!r} retrieves document {doc!r} twice (first on line {seen[qid, doc]})", shown, number
            )
        seen[qid, doc] = number
        rows.setdefault(qid, []).append((-score, rank, number, doc))
    if not rows:
        raise InputError(f"{shown} is empty: expected lines of {_RUN_LAYOUT}")
    run: Run = {}
    for qid, hits in rows.items():
        hits.sort()
        run[qid] = [Hit(doc, -neg) for neg, _, _, doc in hits]
    return run


def write_trec_run(path: PathLike, run: Run, tag: str = "latelex") -> None:
    """Write a run as a TREC run file: ``qid Q0 docid rank score tag``, space separated, ranks from 1.

    Queries are written in the run's order and each list in its order, which must be best first. Scores are
    written with the shortest text that reads back exactly, so ties stay ties and the order survives. The file
    is replaced atomically: on any failure the previous file is left untouched.

    Raises:
        InputError: an empty tag or one with whitespace, an id that is not a non-empty string without
            whitespace, a score that is not a number or is NaN, or a list whose scores increase.
    """
    if not isinstance(tag, str) or not tag or any(c.isspace() for c in tag):
        raise InputError(f"run tag {tag!r} must be a non-empty string without whitespace")
    with atomic_write(path) as f:
        for qid, rank, doc, score in ranked_rows(run):
            f.write(f"{qid} Q0 {doc} {rank} {format_score(score)} {tag}\n")


def read_trec_qrels(path: PathLike) -> Qrels:
    """Relevance judgements from a TREC qrels file: ``qid iter docid rel`` per line, whitespace separated.

    ``iter`` is ignored; ``rel`` is an integer grade (0 judged non-relevant, negative grades are kept as they
    are). Blank lines are skipped.

    Raises:
        InputError: the file is missing or has no judgements.
        FormatError: a line without 4 columns, or a grade that is not an integer.
        DuplicateIdError: the same (qid, docid) judged twice.
    """
    return read_judgments(path, columns=4, qid_col=0, doc_col=2, grade_col=3, layout="qid iter docid rel")


_FIELD_TAGS = {"title": "title", "description": "desc", "narrative": "narr"}
_PREFIXES = {
    "num": re.compile(r"^number\s*:\s*", re.IGNORECASE),
    "title": re.compile(r"^topic\s*:\s*", re.IGNORECASE),
    "desc": re.compile(r"^description\s*:\s*", re.IGNORECASE),
    "narr": re.compile(r"^narrative\s*:\s*", re.IGNORECASE),
}
_TAG = re.compile(r"<(/?)([A-Za-z]+)\s*>")


def is_sgml_topics(path: PathLike) -> bool:
    """Whether the first non-blank text of the file starts with ``<top>`` (classic TREC topics)."""
    first = first_record(path)
    return first is not None and first[1].lstrip().lower().startswith("<top>")


def _field_text(tag: str, pieces: list[str]) -> str:
    text = " ".join(" ".join(pieces).split())
    prefix = _PREFIXES.get(tag)
    return prefix.sub("", text, count=1).strip() if prefix else text


def _iter_sgml_topics(path: PathLike, tag: str) -> Iterator[tuple[str, str]]:
    shown = os.fspath(path)
    lines = iter_lines(path)

    def gen() -> Iterator[tuple[str, str]]:
        start: int | None = None  # line of the open <top>, None outside a topic
        fields: dict[str, list[str]] = {}
        current: str | None = None
        seen: dict[str, int] = {}
        for number, line in lines:
            pos = 0
            tokens: list[tuple[str, str | None]] = []  # (text, None) or (closing slash, tag name)
            for m in _TAG.finditer(line):
                tokens.append((line[pos : m.start()], None))
                tokens.append((m.group(1), m.group(2).lower()))
                pos = m.end()
            tokens.append((line[pos:], None))
            for value, name in tokens:
                if name is None:
                    if start is None:
                        if value.strip():
                            raise FormatError(f"text outside <top> ... </top>: {value.strip()[:40]!r}", shown, number)
                    elif current is not None:
                        fields[current].append(value)
                    continue
                closing = value == "/"
                if name == "top" and not closing:
                    if start is not None:
                        raise FormatError(
                            f"<top> inside the topic opened on line {start}; missing </top>", shown, number
                        )
                    start, fields, current = number, {}, None
                elif name == "top":
                    if start is None:
                        raise FormatError("</top> without a matching <top>", shown, number)
                    qid = _field_text("num", fields.get("num", []))
                    if not qid:
                        raise FormatError("topic without a <num> number", shown, start)
                    check_id(qid, "topic number", path, start)
                    text = _field_text(tag, fields.get(tag, []))
                    if not text:
                        raise FormatError(f"topic {qid} has no text in its <{tag}> field", shown, start)
                    if qid in seen:
                        raise DuplicateIdError(
                            f"duplicate topic number {qid!r} (first on line {seen[qid]})", shown, start
                        )
                    seen[qid] = start
                    start, fields, current = None, {}, None
                    yield qid, text
                elif start is None:
                    raise FormatError(f"<{'/' if closing else ''}{name}> outside <top> ... </top>", shown, number)
                elif closing:
                    current = None
                else:
                    current = name
                    fields.setdefault(name, [])
        if start is not None:
            raise FormatError("<top> is never closed by </top>", shown, start)
        if not seen:
            raise InputError(f"{shown} is empty: expected TREC topics")

    return gen()


def read_trec_topics(path: PathLike, field: str = "title") -> Iterator[tuple[str, str]]:
    """Stream ``(topic number, text)`` from TREC topics.

    Two layouts are accepted, told apart by the first non-blank text:

    * classic SGML topics, starting with ``<top>``::

        <top>
        <num> Number: 301
        <title> International Organized Crime
        <desc> Description:
        Identify organizations that participate in international criminal activity ...
        <narr> Narrative:
        A relevant document must as a minimum identify the organization ...
        </top>

      Field tags may be left open (as in the classic files) or closed (``</title>``); a field runs until the next
      tag and may span lines, whose whitespace is collapsed. The ``Number:``, ``Topic:``, ``Description:`` and
      ``Narrative:`` prefixes are removed. ``field`` picks ``"title"`` (default), ``"description"`` or
      ``"narrative"``. Topic numbers are kept as written (``051`` stays ``051``).
    * ``qid<TAB>text`` lines (see :func:`latelex.data.colbert.read_queries`); these have one text, so only
      ``field="title"`` is allowed.

    Raises:
        InputError: an unknown ``field``, a missing or empty file, or ``field`` other than title for TSV topics.
        FormatError: a topic without a number or with an empty chosen field, an unclosed ``<top>``, text outside
            a topic, or a malformed TSV line.
        DuplicateIdError: a topic number appears twice.
    """
    if field not in _FIELD_TAGS:
        raise InputError(f"unknown topic field {field!r}; choose one of: {', '.join(_FIELD_TAGS)}")
    first = first_record(path)
    if first is None:
        raise InputError(f"{os.fspath(path)} is empty: expected TREC topics")
    if first[1].lstrip().lower().startswith("<top>"):
        return _iter_sgml_topics(path, _FIELD_TAGS[field])
    if field != "title":
        raise InputError(f"{os.fspath(path)} holds qid<TAB>text topics, which have no {field} field; use field='title'")
    return iter_id_text_tsv(
        path, id_name="qid", text_name="text", header_ids=frozenset({"id", "qid"}), allow_title=False
    )
