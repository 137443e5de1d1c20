"""BEIR dataset folders: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

* ``corpus.jsonl``: one JSON object per line with ``_id``, ``title`` (may be empty or absent) and ``text``;
* ``queries.jsonl``: one JSON object per line with ``_id`` and ``text``;
* ``qrels/<split>.tsv``: a header ``query-id<TAB>corpus-id<TAB>score`` then one judgement per line.

Ids may be JSON strings or integers and are returned as strings. :func:`read_beir_corpus` yields ``(id, text)``
pairs and ignores every other key; :func:`read_beir_documents` yields :class:`~latelex.types.Document` objects
whose metadata keeps them (see :func:`metadata_fields`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from latelex.data.lines import PathLike, check_id, iter_records, read_judgments
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Document, Qrels

__all__ = [
    "BeirDataset",
    "is_beir_folder",
    "metadata_fields",
    "read_beir_corpus",
    "read_beir_documents",
    "read_beir_queries",
    "read_beir_qrels",
    "read_beir_qrels_file",
]

_LAYOUT = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
_QRELS_LAYOUT = "query-id<TAB>corpus-id<TAB>score"


def _string_field(obj: dict[str, Any], key: str, what: str, shown: str, number: int) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormatError(f"{what} field {key!r} must be a string, found {json.dumps(value)[:40]}", shown, number)
    return value


def metadata_fields(obj: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    """The metadata of a JSON object: every key but those in ``skip`` (the id, text and title keys).

    A nested ``"metadata"`` object (BEIR's own key) is flattened: its fields join the top-level ones, and a
    top-level key of the same name wins. A ``"metadata"`` value that is not an object is kept under
    ``"metadata"``; a null or empty one is dropped.
    """
    out: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in obj.items():
        if key in skip:
            continue
        if key == "metadata" and (value is None or isinstance(value, dict)):
            nested = value or {}
            continue
        out[key] = value
    for key, value in nested.items():
        out.setdefault(key, value)
    return out


def iter_jsonl_records(
    path: PathLike,
    *,
    id_keys: tuple[str, ...],
    text_keys: tuple[str, ...],
    title_key: str | None,
    what: str,
    with_metadata: bool,
) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """``(id, text, metadata)`` of a JSONL file of objects: the one parser of BEIR corpora, queries and other JSONL.

    The id is the first of ``id_keys`` present in an object, the text the first of ``text_keys``. With a
    ``title_key`` whose value is non-blank the text is ``(title + " " + text).strip()``, else ``text.strip()``.
    An object whose text comes out empty is a FormatError; ids must be unique.

    With ``with_metadata``, ``metadata`` is ``{"title": title}`` (when the title is non-blank) plus
    :func:`metadata_fields` of the object without its id, text and title keys, or None when that is empty;
    without it, None.
    """
    shown = os.fspath(path)
    records = iter_records(path)
    expected = f"JSON objects with {'/'.join(id_keys)} and {'/'.join(text_keys)}"

    def gen() -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        seen: dict[str, int] = {}
        for number, line in records:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"invalid JSON ({e.msg} at column {e.colno})", shown, number) from None
            if not isinstance(obj, dict):
                raise FormatError(f"expected a JSON object, found {type(obj).__name__}", shown, number)
            id_key = next((k for k in id_keys if obj.get(k) is not None), None)
            if id_key is None:
                raise FormatError(f"{what} has no {' / '.join(repr(k) for k in id_keys)} field", shown, number)
            raw_id = obj[id_key]
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                raise FormatError(
                    f"{what} id must be a string or an integer, found {json.dumps(raw_id)}", shown, number
                )
            key = check_id(str(raw_id).strip(), f"{what} id", shown, number)
            text_key = next((k for k in text_keys if k in obj), None)
            if text_key is None:
                raise FormatError(
                    f"{what} {key!r} has no {' / '.join(repr(k) for k in text_keys)} field", shown, number
                )
            text = _string_field(obj, text_key, what, shown, number)
            title = _string_field(obj, title_key, what, shown, number) if title_key else ""
            text = (title + " " + text).strip() if title.strip() else text.strip()
            if not text:
                raise FormatError(f"{what} {key!r} has an empty text; remove it or give it a text", shown, number)
            if key in seen:
                raise DuplicateIdError(f"duplicate {what} id {key!r} (first seen on line {seen[key]})", shown, number)
            seen[key] = number
            metadata = None
            if with_metadata:
                metadata = {"title": title.strip()} if title.strip() else {}
                skip = (id_key, text_key, title_key) if title_key else (id_key, text_key)
                for field, value in metadata_fields(obj, skip).items():
                    metadata.setdefault(field, value)
                metadata = metadata or None
            yield key, text, metadata
        if not seen:
            raise InputError(f"{shown} is empty: expected {expected}, one per line")

    return gen()


def iter_jsonl_texts(
    path: PathLike,
    *,
    id_keys: tuple[str, ...],
    text_keys: tuple[str, ...],
    title_key: str | None,
    what: str,
) -> Iterator[tuple[str, str]]:
    """``(id, text)`` pairs of a JSONL file of objects (see :func:`iter_jsonl_records`; other keys are ignored)."""
    records = iter_jsonl_records(
        path, id_keys=id_keys, text_keys=text_keys, title_key=title_key, what=what, with_metadata=False
    )
    return ((key, text) for key, text, _ in records)


def iter_jsonl_documents(
    path: PathLike,
    *,
    id_keys: tuple[str, ...],
    text_keys: tuple[str, ...],
    title_key: str | None,
    what: str,
) -> Iterator[Document]:
    """:class:`~latelex.types.Document` objects of a JSONL file of objects, metadata included (see
    :func:`iter_jsonl_records`)."""
    records = iter_jsonl_records(
        path, id_keys=id_keys, text_keys=text_keys, title_key=title_key, what=what, with_metadata=True
    )
    return (Document(key, text, metadata) for key, text, metadata in records)


def is_beir_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding a ``corpus.jsonl`` (the mark of a BEIR dataset)."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / "corpus.jsonl").is_file()


def _folder_file(folder: PathLike, name: str) -> Path:
    p = Path(folder).expanduser()
    if not p.is_dir():
        what = "no such folder" if not p.exists() else "not a folder"
        raise InputError(f"{os.fspath(folder)}: {what}; {_LAYOUT}")
    f = p / name
    if not f.is_file():
        raise InputError(f"{os.fspath(folder)} has no {name}; {_LAYOUT}")
    return f


def read_beir_corpus(folder: PathLike) -> Iterator[tuple[str, str]]:
    """Stream ``(doc id, text)`` from ``folder/corpus.jsonl``.

    Each line is a JSON object with ``_id``, ``text`` and optionally ``title``. The text is
    ``(title + " " + text).strip()`` when the title is non-blank, else the stripped text (what the BEIR
    reference figures index).

    A document whose title and text are both empty is an error (FormatError with file and line) rather than
    being skipped or indexed as an empty document: skipping would silently change the corpus size and the ids
    the qrels point to, and an empty document cannot be encoded. Remove such lines first if that is intended.

    Raises:
        InputError: the folder or its corpus.jsonl is missing, or the corpus is empty.
        FormatError: invalid JSON, a missing ``_id`` or ``text``, a non-string field, an empty document.
        DuplicateIdError: an ``_id`` appears twice.
    """
    path = _folder_file(folder, "corpus.jsonl")
    return iter_jsonl_texts(path, id_keys=("_id",), text_keys=("text",), title_key="title", what="document")


def read_beir_documents(folder: PathLike) -> Iterator[Document]:
    """Stream the corpus of a BEIR folder as :class:`~latelex.types.Document` objects, metadata included.

    Ids and texts are those of :func:`read_beir_corpus` (the title stays part of the text). ``metadata`` holds
    the title (``"title"``, when non-blank) and every other key of the line; the fields of BEIR's nested
    ``"metadata"`` object are merged into it (a top-level key wins a clash), so a line
    ``{"_id": "1", "title": "T", "text": "x", "metadata": {"year": 2020}}`` gives ``{"title": "T", "year": 2020}``.
    A document with none of these has ``metadata`` None.

    Raises:
        InputError, FormatError, DuplicateIdError: as :func:`read_beir_corpus`.
    """
    path = _folder_file(folder, "corpus.jsonl")
    return iter_jsonl_documents(path, id_keys=("_id",), text_keys=("text",), title_key="title", what="document")


def read_beir_queries(folder: PathLike, ids: set[str] | None = None) -> Iterator[tuple[str, str]]:
    """Stream ``(query id, text)`` from ``folder/queries.jsonl`` (objects with ``_id`` and ``text``), in file order.

    With ``ids``, only those queries are yielded (every line is still checked), and an id of ``ids`` that the
    file lacks is an InputError raised at the end of the iteration.

    Raises:
        InputError: the folder or queries.jsonl is missing, the file is empty, or ``ids`` names absent queries.
        FormatError: invalid JSON, a missing ``_id`` or ``text``, an empty text.
        DuplicateIdError: an ``_id`` appears twice.
    """
    path = _folder_file(folder, "queries.jsonl")
    queries = iter_jsonl_texts(path, id_keys=("_id",), text_keys=("text",), title_key=None, what="query")
    if ids is None:
        return queries
    wanted = set(ids)

    def gen() -> Iterator[tuple[str, str]]:
        found: set[str] = set()
        for qid, text in queries:
            if qid in wanted:
                found.add(qid)
                yield qid, text
        missing = sorted(wanted - found)
        if missing:
            shown = ", ".join(repr(q) for q in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InputError(f"{os.fspath(path)} lacks {len(missing)} of the requested queries: {shown}")

    return gen()


def read_beir_qrels_file(path: PathLike) -> Qrels:
    """Relevance judgements from a BEIR qrels TSV: ``query-id<TAB>corpus-id<TAB>score``.

    A first line starting with ``query-id`` is the header and skipped (a file without it is read whole). Scores
    are integer grades; tabs or whitespace separate the columns.

    Raises:
        InputError: the file is missing or has no judgements.
        FormatError: a line without 3 columns or with a non-integer score.
        DuplicateIdError: the same (query, document) pair twice.
    """
    return read_judgments(path, columns=3, qid_col=0, doc_col=1, grade_col=2, layout=_QRELS_LAYOUT, header="query-id")


def _splits(folder: Path) -> list[str]:
    qrels = folder / "qrels"
    if not qrels.is_dir():
        return []
    return sorted(p.stem for p in qrels.glob("*.tsv") if p.is_file())


def read_beir_qrels(folder: PathLike, split: str) -> Qrels:
    """Relevance judgements of one split: ``folder/qrels/<split>.tsv`` (see :func:`read_beir_qrels_file`).

    Raises:
        InputError: the folder is missing, or the split has no file (the message lists the splits that exist).
    """
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise InputError(f"{os.fspath(folder)}: no such folder; {_LAYOUT}")
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise InputError(f"invalid split name {split!r}")
    path = p / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = _splits(p)
        have = f"its splits are: {', '.join(splits)}" if splits else "it has no qrels/<split>.tsv files"
        raise InputError(f"{os.fspath(folder)} has no split {split!r} (no qrels/{split}.tsv); {have}")
    return read_beir_qrels_file(path)


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR folder: the whole corpus, the queries judged in the split, and the split's qrels.

    The constructor only stores the fields; the files are read (and checked) by each method call.
    """

    folder: Path
    split: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder).expanduser())

    def corpus(self) -> Iterator[tuple[str, str]]:
        """Stream ``(doc id, text)`` of the whole corpus (see :func:`read_beir_corpus`)."""
        return read_beir_corpus(self.folder)

    def qrels(self) -> Qrels:
        """The split's judgements (see :func:`read_beir_qrels`)."""
        return read_beir_qrels(self.folder, self.split)

    def queries(self) -> Iterator[tuple[str, str]]:
        """Stream ``(query id, text)`` of the queries that have judgements in the split, in file order.

        Raises InputError when a judged query is missing from queries.jsonl.
        """
        return read_beir_queries(self.folder, set(self.qrels()))
