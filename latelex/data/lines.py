"""Line-level reading shared by every text format, and the small field parsers the readers have in common.

Every reader in :mod:`latelex.data` streams its file through :func:`iter_lines`: bytes are read in binary and
each line is decoded as strict UTF-8 on its own, so a bad byte is reported with its line number and a
multi-gigabyte collection is never held in memory. Only :func:`iter_lines` is part of the public API; the
other helpers here are shared by the format modules of this package.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Generator, Iterator, Union

from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Hit, Qrels, Run

__all__ = ["iter_lines"]

#: A file or folder path as the readers accept it.
PathLike = Union[str, "os.PathLike[str]"]

_BOM = b"\xef\xbb\xbf"


def check_file(path: PathLike) -> Path:
    """``path`` as a :class:`Path` when it names an existing regular file; otherwise a one-line InputError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{os.fspath(path)}: no such file")
    if p.is_dir():
        raise InputError(f"{os.fspath(path)} is a folder, expected a file")
    return p


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Stream ``(line number, line)`` pairs of a UTF-8 text file, line numbers counted from 1.

    The file is read in binary, one line at a time; the trailing ``\\n`` or ``\\r\\n`` is removed and the line is
    decoded as strict UTF-8. A UTF-8 byte order mark at the start of line 1 is tolerated and stripped. Only
    ``\\n`` ends a line (so ``\\x85`` or ``\\u2028`` inside a text do not split it).

    Raises:
        InputError: ``path`` does not exist or is a folder (raised when this function is called).
        FormatError: a line is not valid UTF-8; the message names the file and the line.
    """
    p = check_file(path)
    return _iter_lines(p, os.fspath(path))


def _iter_lines(p: Path, shown: str) -> Generator[tuple[int, str], None, None]:
    try:
        f = open(p, "rb")
    except OSError as e:
        raise InputError(f"{shown}: cannot open ({e.strerror or e})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start : e.start + 1].hex()
                raise FormatError(
                    f"line is not valid UTF-8 (byte 0x{bad} at byte {e.start + 1} of the line); "
                    "re-encode the file as UTF-8",
                    shown,
                    number,
                ) from None
            yield number, text


def iter_records(path: PathLike) -> Iterator[tuple[int, str]]:
    """Like :func:`iter_lines` but skipping blank lines at the end of the file.

    A blank (empty or whitespace-only) line followed by a non-blank one is an error: in positional formats such
    as ColBERT collections it would silently shift every later line.
    """
    shown = os.fspath(path)
    lines = iter_lines(path)

    def gen() -> Iterator[tuple[int, str]]:
        first_blank: int | None = None
        for number, line in lines:
            if not line.strip():
                if first_blank is None:
                    first_blank = number
                continue
            if first_blank is not None:
                raise FormatError("blank line inside the file; remove it", shown, first_blank)
            yield number, line

    return gen()


def iter_nonblank(path: PathLike) -> Iterator[tuple[int, str]]:
    """Like :func:`iter_lines` but skipping every blank line (for whitespace-separated TREC files)."""
    lines = iter_lines(path)
    return ((number, line) for number, line in lines if line.strip())


def first_record(path: PathLike) -> tuple[int, str] | None:
    """The first non-blank line of a file as ``(line number, line)``, or None for a file with none."""
    lines = _iter_lines(check_file(path), os.fspath(path))
    try:
        for number, line in lines:
            if line.strip():
                return number, line
        return None
    finally:
        lines.close()


def split_fields(line: str) -> list[str]:
    """Split a line on tabs when it has any, else on runs of whitespace; fields are stripped."""
    if "\t" in line:
        return [field.strip() for field in line.split("\t")]
    return line.split()


def is_int(text: str) -> bool:
    """Whether ``text`` is a (signed) decimal integer."""
    try:
        int(text)
    except ValueError:
        return False
    return True


def is_float(text: str) -> bool:
    """Whether ``text`` is a number ``float`` accepts (NaN excluded)."""
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


def parse_int(text: str, what: str, path: PathLike, line: int) -> int:
    """``text`` as an int, or a FormatError naming ``what`` and the place."""
    try:
        return int(text)
    except ValueError:
        raise FormatError(f"{what} must be an integer, found {text!r}", os.fspath(path), line) from None


def parse_score(text: str, what: str, path: PathLike, line: int) -> float:
    """``text`` as a float that is not NaN, or a FormatError naming ``what`` and the place."""
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"{what} must be a number, found {text!r}", os.fspath(path), line) from None
    if math.isnan(value):
        raise FormatError(f"{what} is NaN", os.fspath(path), line)
    return value


def check_id(value: str, what: str, path: PathLike, line: int) -> str:
    """A non-empty id without whitespace inside, or a FormatError."""
    if not value:
        raise FormatError(f"empty {what}", os.fspath(path), line)
    if any(c.isspace() for c in value):
        raise FormatError(f"{what} {value!r} contains whitespace", os.fspath(path), line)
    return value


def read_judgments(
    path: PathLike,
    *,
    columns: int,
    qid_col: int,
    doc_col: int,
    grade_col: int,
    layout: str,
    header: str | None = None,
) -> Qrels:
    """Relevance judgements from a file with ``columns`` tab- or whitespace-separated fields per line.

    ``layout`` describes the expected columns in error messages. When ``header`` is given, a first line whose
    first field equals it is skipped. The same (query, document) pair twice is a DuplicateIdError. A file
    without judgements is an InputError.
    """
    shown = os.fspath(path)
    qrels: Qrels = {}
    first = True
    for number, line in iter_nonblank(path):
        fields = split_fields(line)
        if first and header is not None and fields and fields[0] == header:
            first = False
            continue
        first = False
        if len(fields) != columns:
            raise FormatError(f"expected {columns} columns ({layout}), found {len(fields)}", shown, number)
        qid = check_id(fields[qid_col], "query id", path, number)
        doc = check_id(fields[doc_col], "document id", path, number)
        grade = parse_int(fields[grade_col], "relevance grade", path, number)
        judged = qrels.setdefault(qid, {})
        if doc in judged:
            raise DuplicateIdError(f"query {qid!r} judges document {doc!r} twice", shown, number)
        judged[doc] = grade
    if not qrels:
        raise InputError(f"{shown} is empty: expected relevance judgements ({layout})")
    return qrels


def ranked_rows(run: Run) -> Iterator[tuple[str, int, str, float]]:
    """Check a run before writing it and yield ``(query id, rank from 1, document id, score)`` rows.

    Ids must be non-empty strings without whitespace (they are written into whitespace-separated files), scores
    must be numbers that are not NaN, and each list must be best first (scores never increase), so that the
    written ranks and scores agree. A violation is an InputError raised when its row is reached.
    """
    for qid, hits in run.items():
        if not isinstance(qid, str) or not qid or any(c.isspace() for c in qid):
            raise InputError(f"query id {qid!r} must be a non-empty string without whitespace")
        previous = math.inf
        for rank, hit in enumerate(hits, start=1):
            if not isinstance(hit, Hit):
                raise InputError(f"query {qid!r}, rank {rank}: expected a Hit, found {type(hit).__name__}")
            doc = hit.doc_id
            if not isinstance(doc, str) or not doc or any(c.isspace() for c in doc):
                raise InputError(
                    f"query {qid!r}, rank {rank}: document id {doc!r} must be a non-empty string without whitespace"
                )
            try:
                score = float(hit.score)
            except (TypeError, ValueError):
                raise InputError(f"query {qid!r}, rank {rank}: score {hit.score!r} is not a number") from None
            if math.isnan(score):
                raise InputError(f"query {qid!r}, rank {rank}: score is NaN")
            if score > previous:
                raise InputError(
                    f"query {qid!r}: hits are not sorted best first (rank {rank} scores {score!r}, "
                    f"above rank {rank - 1}'s {previous!r}); sort each list by descending score"
                )
            previous = score
            yield qid, rank, doc, score


def format_score(score: float) -> str:
    """The shortest text that reads back as exactly ``score`` (so ties and order survive a round trip)."""
    return repr(float(score))
