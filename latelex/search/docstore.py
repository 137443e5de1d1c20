"""The document store of a retriever: ids, texts, metadata and passages in an embedded SQLite database.

One file, ``documents.sqlite``, inside the retriever directory (stdlib :mod:`sqlite3`, as next-plaid keeps its
metadata). Every row carries the generation that added it and the one that deleted it, so a reader pinned to
generation G sees exactly the documents of G (``added <= G and (deleted is null or deleted > G)``) while a writer
prepares G + 1 beside it; the retriever's ``manifest.json`` names the committed generation. A writer that dies
before committing leaves rows of a generation the manifest never named; :meth:`DocStore.recover` removes them.

Tables::

    documents(row, doc_id, text, metadata, passages, added, deleted)
    passages(doc_row, number, start, end)      -- character spans of a chunked document's passages
    fields(name, type)                         -- the JSON type of every metadata field seen (for filters)

Every value reaches SQL as a parameter; filters come compiled from :mod:`latelex.search.filters`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..errors import IndexFormatError, InputError

DB_FILE = "documents.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    text TEXT,
    metadata TEXT,
    passages INTEGER NOT NULL DEFAULT 1,
    added INTEGER NOT NULL,
    deleted INTEGER
);
CREATE INDEX IF NOT EXISTS documents_by_id ON documents(doc_id);
CREATE INDEX IF NOT EXISTS documents_by_deleted ON documents(deleted);
CREATE TABLE IF NOT EXISTS passages (
    doc_row INTEGER NOT NULL,
    number INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    PRIMARY KEY (doc_row, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY, type TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

_VISIBLE = "added <= ? AND (deleted IS NULL OR deleted > ?)"


def check_metadata(value: Any, doc_id: str) -> dict | None:
    """``value`` as a JSON-ready dict (or None), else an :class:`InputError` naming the document."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"metadata of document {doc_id!r} must be a JSON object (a dict), not {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata of document {doc_id!r} is not JSON: {exc}") from None
    return value


class DocStore:
    """Rows of documents by generation. Open with :meth:`open`; every method is thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False) -> "DocStore":
        """Open ``path`` (creating the schema when ``create``)."""
        path = Path(path)
        if not create and not path.exists():
            raise IndexFormatError(f"{path} is missing: the index's document store is gone; rebuild the index")
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")
            if create:
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = db.execute("SELECT value FROM info WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{path} is not a readable document store ({exc}); rebuild the index") from None
        if version is None or int(version[0]) > SCHEMA_VERSION:
            raise IndexFormatError(f"{path} has document-store schema {version and version[0]}; this latelex reads "
                                   f"up to {SCHEMA_VERSION}: upgrade latelex")
        return cls(path, db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ reads (pinned to a generation)

    def count(self, generation: int) -> int:
        with self._lock:
            return int(self._db.execute(f"SELECT count(*) FROM documents WHERE {_VISIBLE}",
                                        (generation, generation)).fetchone()[0])

    def live_ids(self, generation: int) -> list[str]:
        """Ids of the documents of ``generation`` in insertion order."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT doc_id FROM documents WHERE {_VISIBLE} ORDER BY row", (generation, generation))]

    def iter_live(self, generation: int, batch: int = 1024) -> Iterator[tuple[str, str | None, dict | None]]:
        """``(doc_id, text, metadata)`` of every document of ``generation``, in insertion order, streamed."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT row, doc_id, text, metadata FROM documents WHERE {_VISIBLE} AND row > ? ORDER BY row LIMIT ?",
                    (generation, generation, last, batch)).fetchall()
            if not rows:
                return
            for row, doc_id, text, meta in rows:
                yield doc_id, text, None if meta is None else json.loads(meta)
            last = rows[-1][0]

    def rows(self, doc_ids: Sequence[str], generation: int) -> dict[str, tuple[int, str | None, dict | None, int]]:
        """``{doc_id: (row, text, metadata, passages)}`` for those of ``doc_ids`` live in ``generation``."""
        out: dict[str, tuple[int, str | None, dict | None, int]] = {}
        ids = list(dict.fromkeys(doc_ids))
        with self._lock:
            for a in range(0, len(ids), 500):
                part = ids[a : a + 500]
                marks = ",".join("?" * len(part))
                for row, doc_id, text, meta, passages in self._db.execute(
                        f"SELECT row, doc_id, text, metadata, passages FROM documents "
                        f"WHERE doc_id IN ({marks}) AND {_VISIBLE}", (*part, generation, generation)):
                    out[doc_id] = (row, text, None if meta is None else json.loads(meta), passages)
        return out

    def metadata(self, doc_ids: Sequence[str], generation: int) -> dict[str, dict | None]:
        """``{doc_id: metadata}`` (without texts) for the live ones of ``doc_ids``."""
        out: dict[str, dict | None] = {}
        ids = list(dict.fromkeys(doc_ids))
        with self._lock:
            for a in range(0, len(ids), 500):
                part = ids[a : a + 500]
                marks = ",".join("?" * len(part))
                for doc_id, meta in self._db.execute(
                        f"SELECT doc_id, metadata FROM documents WHERE doc_id IN ({marks}) AND {_VISIBLE}",
                        (*part, generation, generation)):
                    out[doc_id] = None if meta is None else json.loads(meta)
        return out

    def texts(self, doc_ids: Sequence[str], generation: int) -> dict[str, str | None]:
        return {d: r[1] for d, r in self.rows(doc_ids, generation).items()}

    def spans(self, doc_rows: Sequence[int]) -> dict[tuple[int, int], tuple[int, int]]:
        """``{(doc_row, passage number): (start, end)}`` of the chunked documents among ``doc_rows``."""
        out: dict[tuple[int, int], tuple[int, int]] = {}
        rows = list(dict.fromkeys(doc_rows))
        with self._lock:
            for a in range(0, len(rows), 500):
                part = rows[a : a + 500]
                marks = ",".join("?" * len(part))
                for doc_row, number, start, end in self._db.execute(
                        f"SELECT doc_row, number, start, end FROM passages WHERE doc_row IN ({marks})", part):
                    out[(doc_row, number)] = (start, end)
        return out

    def passage_counts(self, generation: int) -> dict[str, int]:
        with self._lock:
            return {d: n for d, n in self._db.execute(
                f"SELECT doc_id, passages FROM documents WHERE {_VISIBLE}", (generation, generation))}

    def matching(self, sql: str, params: Sequence[Any], generation: int) -> list[tuple[str, int]]:
        """``(doc_id, passages)`` of the documents of ``generation`` for which the compiled filter ``sql`` holds."""
        with self._lock:
            try:
                return self._db.execute(
                    f"SELECT doc_id, passages FROM documents WHERE {_VISIBLE} AND ({sql}) ORDER BY row",
                    (generation, generation, *params)).fetchall()
            except sqlite3.OperationalError as exc:
                raise InputError(f"the filter could not be evaluated: {exc}") from None

    def field_types(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT name, type FROM fields"))

    # ------------------------------------------------------------------ writes (one transaction each)

    def stage(self, generation: int, docs: Iterable[tuple[str, str | None, dict | None, list[tuple[int, int]] | None]],
              deleted: Sequence[str], field_types: dict[str, str]) -> None:
        """In one transaction: mark ``deleted`` (live ids) deleted at ``generation`` and insert ``docs``
        (``(doc_id, text or None, metadata or None, passage spans or None)``) as added at ``generation``.

        Invisible to readers of earlier generations; the retriever's manifest commits them.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = list(deleted)
                for a in range(0, len(ids), 500):
                    part = ids[a : a + 500]
                    marks = ",".join("?" * len(part))
                    db.execute(f"UPDATE documents SET deleted = ? WHERE doc_id IN ({marks}) AND deleted IS NULL",
                               (generation, *part))
                for doc_id, text, meta, spans in docs:
                    cur = db.execute(
                        "INSERT INTO documents (doc_id, text, metadata, passages, added) VALUES (?, ?, ?, ?, ?)",
                        (doc_id, text, None if meta is None else json.dumps(meta, ensure_ascii=False),
                         len(spans) if spans else 1, generation))
                    if spans:
                        db.executemany("INSERT INTO passages VALUES (?, ?, ?, ?)",
                                       [(cur.lastrowid, n, s, e) for n, (s, e) in enumerate(spans)])
                db.executemany("INSERT OR REPLACE INTO fields VALUES (?, ?)", sorted(field_types.items()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def recover(self, committed: int) -> int:
        """Undo every change of a generation later than ``committed`` (a writer that died before its commit);
        returns the number of rows touched."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = [r[0] for r in db.execute("SELECT row FROM documents WHERE added > ?", (committed,))]
                for a in range(0, len(gone), 500):
                    part = gone[a : a + 500]
                    db.execute(f"DELETE FROM passages WHERE doc_row IN ({','.join('?' * len(part))})", part)
                db.execute("DELETE FROM documents WHERE added > ?", (committed,))
                revived = db.execute("UPDATE documents SET deleted = NULL WHERE deleted > ?", (committed,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(gone) + revived

    def purge(self, before: int) -> None:
        """Forget documents deleted at generation ``before`` or earlier (no reader can still see them)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM passages WHERE doc_row IN (SELECT row FROM documents WHERE deleted <= ?)", (before,))
                db.execute("DELETE FROM documents WHERE deleted <= ?", (before,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
