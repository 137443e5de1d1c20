"""Format detection, so that a command line can take whatever documents, queries, qrels and runs a user has.

Detection looks at the path (a folder, a ``.jsonl`` suffix) and at the first non-blank line only; the chosen
reader then checks every line. When no format fits, a :class:`~latelex.errors.FormatError` lists the accepted
formats.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from latelex.data.beir import (
    BeirDataset,
    is_beir_folder,
    iter_jsonl_documents,
    iter_jsonl_texts,
    metadata_fields,
    read_beir_corpus,
    read_beir_documents,
    read_beir_qrels,
    read_beir_qrels_file,
    read_beir_queries,
)
from latelex.data.colbert import iter_top1000_numbered, read_collection, read_queries, read_ranking, read_topk
from latelex.data.folder import TEXT_EXTENSIONS, is_text_folder, read_folder_documents
from latelex.data.lines import PathLike, check_file, first_record, is_float, is_int, iter_records, split_fields
from latelex.data.trec import read_trec_qrels, read_trec_run, read_trec_topics
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Document, Qrels, Run

__all__ = [
    "Candidates",
    "read_documents",
    "read_collection_documents",
    "read_metadata_file",
    "read_queries_any",
    "read_qrels_any",
    "read_run_any",
    "read_candidates",
]

_DOCUMENT_FORMATS = (
    "a BEIR folder (with corpus.jsonl), a .jsonl file of objects with _id/id/docid/pid and text/contents "
    "(optional title), or a ColBERT collection TSV pid<TAB>text[<TAB>title]"
)
_COLLECTION_FORMATS = (
    "a BEIR folder (with corpus.jsonl), a folder of " + "/".join(TEXT_EXTENSIONS) + " files, a .jsonl file of "
    "objects with _id/id/docid/pid and text/contents (optional title), or a ColBERT collection TSV "
    "pid<TAB>text[<TAB>title]"
)
_DOC_ID_KEYS = ("_id", "id", "docid", "pid", "doc_id")
_DOC_TEXT_KEYS = ("text", "contents")
_METADATA_ID_KEYS = ("_id", "id", "doc_id", "docid", "pid")
_QUERY_FORMATS = (
    "a BEIR folder (with queries.jsonl), a .jsonl file of objects with _id/id/qid/query_id and text/query, "
    "TREC SGML topics (<top> ... </top>), or a TSV qid<TAB>text"
)
_QRELS_FORMATS = (
    "a BEIR folder with a split, a BEIR qrels TSV (query-id<TAB>corpus-id<TAB>score), "
    "or 4-column TREC / ColBERT qrels (qid iter docid rel)"
)
_RUN_FORMATS = "a TREC run (qid Q0 docid rank score tag) or a ColBERT ranking TSV (qid<TAB>pid<TAB>rank[<TAB>score])"
_CANDIDATE_FORMATS = (
    "a ColBERT top-k TSV (qid<TAB>pid[<TAB>rank[<TAB>score]]), a TREC run (qid Q0 docid rank score tag), "
    "or an MS MARCO top1000 TSV (qid<TAB>pid<TAB>query<TAB>passage)"
)


@dataclass(frozen=True)
class Candidates:
    """Candidate documents to re-rank, per query, best first where the file ranks them.

    ``queries`` and ``passages`` are the texts an MS MARCO top1000 file carries (query id -> text, passage id ->
    text); they are None for formats that carry ids only.
    """

    pids_by_query: dict[str, list[str]]
    queries: dict[str, str] | None
    passages: dict[str, str] | None


def _first_line(path: PathLike) -> tuple[int, str]:
    check_file(path)
    first = first_record(path)
    if first is None:
        raise InputError(f"{os.fspath(path)} is empty")
    return first


def _looks_jsonl(path: PathLike, first_line: str) -> bool:
    return Path(path).suffix.lower() == ".jsonl" or first_line.lstrip().startswith("{")


def _undetected(path: PathLike, line: int, accepted: str) -> FormatError:
    return FormatError(f"cannot tell the format of this file; accepted: {accepted}", os.fspath(path), line)


def _is_trec_run_line(line: str) -> bool:
    fields = line.split()
    return len(fields) == 6 and is_int(fields[3]) and is_float(fields[4])


def _is_ranking_line(line: str) -> bool:
    fields = split_fields(line)
    return 2 <= len(fields) <= 4 and (len(fields) < 3 or is_int(fields[2])) and (len(fields) < 4 or is_float(fields[3]))


def _document_format(path: PathLike, *, text_folders: bool) -> str:
    """Which document reader ``path`` needs: ``"beir"``, ``"folder"`` (only with ``text_folders``), ``"jsonl"`` or
    ``"tsv"``; the one place where document collections are told apart."""
    p = Path(path).expanduser()
    if p.is_dir():
        if is_beir_folder(p):
            return "beir"
        if text_folders:
            if is_text_folder(p):
                return "folder"
            raise FormatError(
                f"folder without corpus.jsonl or text files; accepted: {_COLLECTION_FORMATS}", os.fspath(path)
            )
        raise FormatError(f"folder without corpus.jsonl; accepted: {_DOCUMENT_FORMATS}", os.fspath(path))
    number, line = _first_line(path)
    if _looks_jsonl(path, line):
        return "jsonl"
    if not 2 <= len(line.split("\t")) <= 3:
        raise _undetected(path, number, _COLLECTION_FORMATS if text_folders else _DOCUMENT_FORMATS)
    return "tsv"


def read_documents(path: PathLike) -> Iterator[tuple[str, str]]:
    """Stream ``(doc id, text)`` from whatever document collection ``path`` names.

    * a folder with ``corpus.jsonl``: a BEIR corpus (:func:`latelex.data.beir.read_beir_corpus`);
    * a ``.jsonl`` file (or one whose first line starts with ``{``): one JSON object per line with an id under
      ``_id``, ``id``, ``docid``, ``pid`` or ``doc_id`` (first found) and a text under ``text`` or ``contents``,
      plus an optional ``title`` joined as in BEIR (``title + " " + text``);
    * any other file: a ColBERT collection TSV ``pid<TAB>text[<TAB>title]``
      (:func:`latelex.data.colbert.read_collection`).

    :func:`read_collection_documents` reads the same formats (and folders of text files) with metadata.

    Raises:
        InputError: a missing path or an empty file.
        FormatError: a folder that is not a BEIR folder, a first line that fits no format (the message lists the
            accepted ones), or any malformed line of the chosen format.
    """
    kind = _document_format(path, text_folders=False)
    if kind == "beir":
        return read_beir_corpus(Path(path).expanduser())
    if kind == "jsonl":
        return iter_jsonl_texts(path, id_keys=_DOC_ID_KEYS, text_keys=_DOC_TEXT_KEYS, title_key="title", what="document")
    return read_collection(path)


def read_collection_documents(path: PathLike) -> Iterator[Document]:
    """Stream :class:`~latelex.types.Document` objects (id, text, metadata) from whatever ``path`` names.

    The formats, ids and texts are those of :func:`read_documents`, plus plain folders of text files:

    * a folder with ``corpus.jsonl`` (BEIR) or a ``.jsonl`` file: ``metadata`` holds the title (``"title"``, when
      non-blank; it also stays part of the text) and every key other than the id, text and title keys; the fields
      of a nested ``"metadata"`` object (BEIR's own key) are merged in, a top-level key winning a clash
      (:func:`latelex.data.beir.metadata_fields`). A document with none of these has ``metadata`` None;
    * a folder without ``corpus.jsonl`` holding ``.txt``, ``.md``, ``.markdown`` or ``.rst`` files: one document
      per file, id = relative POSIX path, metadata ``path``, ``size``, ``modified``
      (:func:`latelex.data.folder.read_folder_documents`);
    * a ColBERT collection TSV: ``metadata`` is ``{"title": title}`` for a line with a non-empty title column,
      else None.

    Raises:
        InputError: a missing path, an empty file, a folder of empty text files.
        FormatError: a folder with neither corpus.jsonl nor text files, a first line that fits no format (the
            message lists the accepted ones), or any malformed line or file of the chosen format.
    """
    kind = _document_format(path, text_folders=True)
    if kind == "beir":
        return read_beir_documents(Path(path).expanduser())
    if kind == "folder":
        return read_folder_documents(path)
    if kind == "jsonl":
        return iter_jsonl_documents(
            path, id_keys=_DOC_ID_KEYS, text_keys=_DOC_TEXT_KEYS, title_key="title", what="document"
        )
    return _collection_documents(path)


def _collection_documents(path: PathLike) -> Iterator[Document]:
    """Documents of a ColBERT collection TSV with the title column as metadata.

    :func:`read_collection` parses and checks every line; the raw lines are read alongside only to take the title
    column, which the parsed text holds joined to the text.
    """
    pairs = read_collection(path)
    lines = iter_records(path)

    def gen() -> Iterator[Document]:
        for doc_id, text in pairs:
            for _, line in lines:  # the line ``pairs`` just parsed (a header line before it is passed over)
                fields = line.split("\t")
                if fields[0].strip() == doc_id:
                    break
            title = fields[2].strip() if len(fields) == 3 else ""
            yield Document(doc_id, text, {"title": title} if title else None)

    return gen()


def read_metadata_file(path: PathLike) -> dict[str, dict]:
    """Metadata per document id from a JSONL file (the ``--metadata FILE`` of the command line).

    One JSON object per line with the document id under ``_id``, ``id``, ``doc_id``, ``docid`` or ``pid`` (first
    found; a string or an integer) and any other fields, which become the document's metadata as in
    :func:`read_collection_documents` (a nested ``"metadata"`` object is merged in). Returns ``{doc id: fields}``
    in file order.

    Raises:
        InputError: a missing or empty file.
        FormatError: invalid JSON, a line that is not a JSON object (``file:line: metadata must be a JSON
            object``), an object without an id, a blank line inside the file.
        DuplicateIdError: the same id on two lines.
    """
    shown = os.fspath(path)
    out: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for number, line in iter_records(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"invalid JSON ({e.msg} at column {e.colno})", shown, number) from None
        if not isinstance(obj, dict):
            raise FormatError("metadata must be a JSON object", shown, number)
        id_key = next((k for k in _METADATA_ID_KEYS if obj.get(k) is not None), None)
        if id_key is None:
            raise FormatError(f"metadata object has no {' / '.join(_METADATA_ID_KEYS)} field", shown, number)
        raw_id = obj[id_key]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
            raise FormatError(f"document id must be a non-empty string or an integer, found {json.dumps(raw_id)}",
                              shown, number)
        doc_id = str(raw_id).strip()
        if doc_id in out:
            raise DuplicateIdError(f"duplicate document id {doc_id!r} (first seen on line {lines[doc_id]})", shown, number)
        lines[doc_id] = number
        out[doc_id] = metadata_fields(obj, (id_key,))
    if not out:
        raise InputError(f"{shown} is empty: expected JSON objects with a document id and metadata fields, one per line")
    return out


def read_queries_any(path: PathLike, split: str | None = None) -> Iterator[tuple[str, str]]:
    """Stream ``(query id, text)`` from whatever query file or folder ``path`` names.

    * a folder with ``queries.jsonl``: BEIR queries; with ``split``, only the queries judged in
      ``qrels/<split>.tsv`` (in file order), without it every query;
    * a ``.jsonl`` file (or one whose first line starts with ``{``): objects with an id under ``_id``, ``id``,
      ``qid`` or ``query_id`` and a text under ``text`` or ``query``;
    * a file whose first non-blank text is ``<top>``: classic TREC topics, title field;
    * any other file: ``qid<TAB>text`` lines (:func:`latelex.data.colbert.read_queries`).

    Raises:
        InputError: a missing path, an empty file, or ``split`` given for a file (splits exist only in BEIR
            folders).
        FormatError: a folder without queries.jsonl, a first line that fits no format (the message lists the
            accepted ones), or any malformed line of the chosen format.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "queries.jsonl").is_file():
            raise FormatError(f"folder without queries.jsonl; accepted: {_QUERY_FORMATS}", os.fspath(path))
        if split is not None:
            return BeirDataset(p, split).queries()
        return read_beir_queries(p)
    if split is not None:
        check_file(path)
        raise InputError(f"{os.fspath(path)} is a file: a split ({split!r}) applies only to a BEIR folder")
    number, line = _first_line(path)
    if _looks_jsonl(path, line):
        return iter_jsonl_texts(
            path, id_keys=("_id", "id", "qid", "query_id"), text_keys=("text", "query"), title_key=None, what="query"
        )
    if line.lstrip().lower().startswith("<top>"):
        return read_trec_topics(path)
    if len(line.split("\t")) != 2:
        raise _undetected(path, number, _QUERY_FORMATS)
    return read_queries(path)


def read_qrels_any(path: PathLike, split: str | None = None) -> Qrels:
    """Relevance judgements from whatever qrels ``path`` names.

    * a folder: a BEIR folder's ``qrels/<split>.tsv`` (``split`` is then required);
    * a file whose first line starts with ``query-id``, or that has 3 columns: a BEIR qrels TSV
      ``query-id<TAB>corpus-id<TAB>score``;
    * a file with 4 columns: TREC / ColBERT / MS MARCO qrels ``qid iter docid rel``.

    Raises:
        InputError: a missing path or empty file, a folder without ``split`` (the message lists the splits),
            ``split`` given for a file, or a split the folder lacks.
        FormatError: a first line that fits no format (the message lists the accepted ones), or any malformed
            line of the chosen format.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if split is None:
            splits = sorted(f.stem for f in (p / "qrels").glob("*.tsv")) if (p / "qrels").is_dir() else []
            have = f"its splits are: {', '.join(splits)}" if splits else "it has no qrels/<split>.tsv files"
            raise InputError(f"{os.fspath(path)} is a folder: name a split; {have}")
        return read_beir_qrels(p, split)
    if split is not None:
        check_file(path)
        raise InputError(f"{os.fspath(path)} is a file: a split ({split!r}) applies only to a BEIR folder")
    number, line = _first_line(path)
    fields = split_fields(line)
    if fields[0] == "query-id" or len(fields) == 3:
        return read_beir_qrels_file(path)
    if len(fields) == 4:
        return read_trec_qrels(path)
    raise _undetected(path, number, _QRELS_FORMATS)


def read_run_any(path: PathLike) -> Run:
    """A run from a TREC run file or a ColBERT ranking TSV, told apart by the first non-blank line.

    * 6 whitespace-separated columns with an integer rank and a numeric score: TREC ``qid Q0 docid rank score tag``
      (:func:`latelex.data.trec.read_trec_run`);
    * 2 to 4 columns, the third an integer: ColBERT ``qid<TAB>pid<TAB>rank[<TAB>score]``
      (:func:`latelex.data.colbert.read_ranking`; without a score column a hit's score is ``-rank``).

    Raises:
        InputError: a missing or empty file.
        FormatError: a first line that fits neither (the message lists both), or any malformed line.
    """
    number, line = _first_line(path)
    if _is_trec_run_line(line):
        return read_trec_run(path)
    if _is_ranking_line(line):
        return read_ranking(path)
    raise _undetected(path, number, _RUN_FORMATS)


def _read_top1000_candidates(path: PathLike) -> Candidates:
    shown = os.fspath(path)
    pids: dict[str, list[str]] = {}
    queries: dict[str, str] = {}
    passages: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for number, qid, pid, query, passage in iter_top1000_numbered(path):
        if (qid, pid) in seen:
            raise DuplicateIdError(f"query {qid!r} lists pid {pid!r} twice", shown, number)
        seen.add((qid, pid))
        if queries.setdefault(qid, query) != query:
            raise FormatError(f"query {qid!r} has a different text than on its earlier lines", shown, number)
        if passages.setdefault(pid, passage) != passage:
            raise FormatError(f"pid {pid!r} has a different text than on its earlier lines", shown, number)
        pids.setdefault(qid, []).append(pid)
    return Candidates(pids, queries, passages)


def read_candidates(path: PathLike) -> Candidates:
    """Candidate pids per query for re-ranking, from whichever candidate file ``path`` names.

    * ``qid<TAB>pid<TAB>query<TAB>passage`` (MS MARCO top1000, told apart from a ranking because its third column
      is not an integer rank or its fourth not a number): pids in file order, and the query and passage texts
      it carries (a query or passage must have the same text on every line; a (qid, pid) pair appears once);
    * 6 whitespace-separated columns: a TREC run, pids by descending score;
    * 2 to 4 columns: a ColBERT top-k / ranking TSV ``qid<TAB>pid[<TAB>rank[<TAB>score]]``, pids by rank.

    Raises:
        InputError: a missing or empty file.
        FormatError: a first line that fits no format (the message lists them), or any malformed line.
        DuplicateIdError: a pid listed twice for one query.
    """
    number, line = _first_line(path)
    tab_fields = [field.strip() for field in line.split("\t")]
    if len(tab_fields) == 4 and not (is_int(tab_fields[2]) and is_float(tab_fields[3])):
        return _read_top1000_candidates(path)
    if _is_trec_run_line(line):
        run = read_trec_run(path)
        return Candidates({qid: [hit.doc_id for hit in hits] for qid, hits in run.items()}, None, None)
    if _is_ranking_line(line):
        return Candidates(read_topk(path), None, None)
    raise _undetected(path, number, _CANDIDATE_FORMATS)
