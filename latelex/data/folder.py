"""A plain folder of text files as a document collection: every ``.txt``, ``.md``, ``.markdown`` and ``.rst`` file.

A document's id is its path relative to the folder (POSIX separators, so ids are the same on every system), its
text the file's content, and its metadata ``{"path": id, "size": bytes, "modified": "YYYY-MM-DDTHH:MM:SSZ"}``
(the file's modification time in UTC).

Choices, so that the same folder always gives the same collection and nothing outside it is read:

* files are read in the order of their relative paths (sorted as strings); the extension is matched without
  regard to case;
* hidden files and folders (a name starting with ``.``) are skipped;
* a symbolic link to a file is read only when its target lies inside the folder; symbolic links to folders are
  not followed (they could lead outside the folder or loop);
* files are decoded as strict UTF-8 (a UTF-8 byte order mark is dropped): a file that is not UTF-8 is a
  FormatError naming the file and the byte, not a text silently mangled by replacement characters;
* empty and whitespace-only files are skipped (there is nothing to encode), with one logged warning that counts
  them.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from latelex.data.lines import PathLike
from latelex.errors import FormatError, InputError
from latelex.types import Document

__all__ = ["TEXT_EXTENSIONS", "is_text_folder", "list_text_files", "read_folder_documents"]

logger = logging.getLogger(__name__)

#: The file extensions read as documents (compared in lower case).
TEXT_EXTENSIONS: tuple[str, ...] = (".txt", ".md", ".markdown", ".rst")

_BOM = b"\xef\xbb\xbf"
_ACCEPTED = ", ".join(TEXT_EXTENSIONS[:-1]) + " or " + TEXT_EXTENSIONS[-1]


def _is_text_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in TEXT_EXTENSIONS


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative POSIX path, path)`` of every text file under ``root`` (unsorted), per the module's rules."""
    real_root = root.resolve()
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if not _is_text_file(name):
                continue
            path = Path(directory, name)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_file() or not target.is_relative_to(real_root):
                    logger.warning("skipping %s: a symbolic link to a file outside %s", path, root)
                    continue
            elif not path.is_file():
                continue
            yield path.relative_to(root).as_posix(), path


def _check_folder(path: PathLike) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"{os.fspath(path)}: no such folder")
    if not root.is_dir():
        raise InputError(f"{os.fspath(path)} is a file, expected a folder of text files")
    return root


def list_text_files(path: PathLike) -> list[tuple[str, Path]]:
    """``(relative POSIX path, path)`` of every text file :func:`read_folder_documents` reads, in its order.

    Raises:
        InputError: ``path`` is not an existing folder.
    """
    return sorted(_walk(_check_folder(path)))


def is_text_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one file :func:`read_folder_documents` would read."""
    root = Path(path).expanduser()
    return root.is_dir() and next(_walk(root), None) is not None


def _modified(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decode(raw: bytes, shown: str) -> str:
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise FormatError(
            f"not valid UTF-8 (byte 0x{raw[e.start:e.start + 1].hex()} at byte {e.start + 1}); "
            "re-encode the file as UTF-8 or move it out of the folder",
            shown,
            line,
        ) from None


def read_folder_documents(path: PathLike) -> Iterator[Document]:
    """Stream a :class:`~latelex.types.Document` for every text file under the folder ``path``, recursively.

    See the module notes for which files are read, in which order, and how. ``id`` is the relative POSIX path,
    ``text`` the whole content, ``metadata`` ``{"path", "size" (bytes), "modified" (ISO-8601 UTC)}``.

    Raises:
        InputError: ``path`` is not a folder, holds no text file (raised when this function is called), or holds
            only empty ones (raised at the end of the iteration).
        FormatError: a file that is not UTF-8 (names the file, line and byte) or cannot be read.
    """
    files = list_text_files(path)
    if not files:
        raise InputError(f"{os.fspath(path)} holds no text files; documents are read from {_ACCEPTED} files")

    def gen() -> Iterator[Document]:
        empty = 0
        for rel, file in files:
            shown = os.fspath(file)
            try:
                raw = file.read_bytes()
                stat = file.stat()
            except OSError as e:
                raise FormatError(f"cannot read ({e.strerror or e})", shown) from None
            text = _decode(raw, shown)
            if not text.strip():
                empty += 1
                continue
            yield Document(rel, text, {"path": rel, "size": stat.st_size, "modified": _modified(stat.st_mtime)})
        if empty:
            logger.warning("skipped %d empty text file(s) in %s", empty, os.fspath(path))
        if empty == len(files):
            raise InputError(f"{os.fspath(path)}: all {empty} text files are empty")

    return gen()
