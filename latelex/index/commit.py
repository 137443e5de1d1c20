"""The crash-safe commit protocol every mutable index uses, and the writer lock.

A change to an index directory follows one order, so that a crash at any instruction leaves a readable index:

1. write every new file under a name no manifest names yet, and fsync it;
2. replace ``manifest.json`` atomically (:func:`commit_manifest`: write a temporary file, fsync, ``os.replace``,
   fsync the directory). This is the commit point: before it the old manifest names only old, untouched files;
3. remove the files of this engine that the new manifest no longer names (:func:`remove_unnamed`), which also
   clears what a crashed change left behind.

One writer at a time: :class:`WriterLock` is an OS file lock (``fcntl.flock``) on ``.lock`` in the directory,
released by the OS when the process dies. Readers never take it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import LatelexError
from ..fsio import file_lock, fsync_path
from .storage import MANIFEST, write_manifest

LOCK_FILE = ".lock"


class IndexLockedError(LatelexError):
    """Another process is changing the index (it holds the writer lock)."""


#: Durable folder entries and file bytes: :func:`latelex.fsio.fsync_path` under the names the engines use.
fsync_dir = fsync_file = fsync_path


def commit_manifest(directory: Path, kind: str, format_version: int, arrays: dict[str, dict], **fields: Any) -> dict:
    """Step 2 of the protocol: atomically replace ``directory/manifest.json`` and make it durable."""
    manifest = write_manifest(directory, kind, format_version, arrays, **fields)
    fsync_dir(directory)
    return manifest


def named_files(manifest: dict[str, Any]) -> set[str]:
    """Every relative file path a manifest names (arrays and other files)."""
    names = {entry["file"] for entry in manifest.get("arrays", {}).values()}
    names.update(entry["file"] for entry in manifest.get("files", {}).values())
    return names


def remove_unnamed(directory: Path, manifest: dict[str, Any], owned: re.Pattern | Callable[[str], bool]) -> list[str]:
    """Step 3: remove the top-level entries of ``directory`` that match ``owned`` (this engine's file and folder
    names) but that ``manifest`` does not name, directly or as the folder of a named file; returns their names."""
    match = owned.match if isinstance(owned, re.Pattern) else owned
    named = named_files(manifest)
    tops = {name.split("/", 1)[0] for name in named}
    removed = []
    for path in directory.iterdir():
        if path.name in tops or not match(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def link_tree(source: Path, target: Path) -> None:
    """Recreate ``source``'s folder tree at ``target`` with hard links to its files (a cheap snapshot: later changes
    must write new files and replace, never modify a linked file in place, which every latelex engine does)."""
    target.mkdir(parents=True)
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        for d in dirs:
            (target / rel / d).mkdir()
        for f in files:
            if f == LOCK_FILE:
                continue
            if os.path.islink(Path(root) / f):
                from ..errors import IndexFormatError

                raise IndexFormatError(f"{Path(root) / f} is a symbolic link; an index holds plain files only, rebuild it")
            os.link(Path(root) / f, target / rel / f, follow_symlinks=False)


class WriterLock:
    """An exclusive, process-wide lock on an index directory for one change (or a series of them).

    ``timeout``: seconds to wait for another writer (0: fail at once). Raises :class:`IndexLockedError` with a
    one-line message when the lock stays held. Use as a context manager; re-entrant within one object.
    """

    def __init__(self, directory: Path, timeout: float = 10.0) -> None:
        self.directory = directory
        self.timeout = timeout
        self._held: contextlib.AbstractContextManager | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        held = file_lock(self.directory / LOCK_FILE, self.timeout, lambda: IndexLockedError(
            f"{self.directory} is being changed by another process (its writer lock is held); retry when that "
            f"change ends"))
        held.__enter__()
        self._held = held
        self._depth = 1

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._held is not None:
            held, self._held = self._held, None
            held.__exit__(None, None, None)

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def locked(directory: Path, timeout: float = 10.0) -> Iterator[WriterLock]:
    """``with locked(path):`` hold the writer lock of ``path`` for the block."""
    lock = WriterLock(directory, timeout)
    with lock:
        yield lock


def manifest_stamp(directory: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a directory's manifest, which every commit replaces; None when there is none."""
    try:
        st = (Path(directory) / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def retry_open(opener: Callable) -> Callable:
    """For an engine's ``open(cls, path, ...)``: a reader that opens while a writer commits may read the old manifest
    and then find its files replaced; it then opens again (the new manifest), up to 5 times, instead of reporting
    a damaged index. A failure while the manifest stays the same is reported as it is."""
    import functools

    from ..errors import IndexFormatError

    @functools.wraps(opener)
    def wrapper(cls, path, *args, **kwargs):
        for attempt in range(5):
            before = manifest_stamp(Path(path).expanduser())
            try:
                return opener(cls, path, *args, **kwargs)
            except IndexFormatError:
                if attempt == 4 or manifest_stamp(Path(path).expanduser()) == before:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


def locked_change(method: Callable) -> Callable:
    """For an engine method that changes its directory in place (add, delete, compact): hold the directory's writer
    lock for the change and, if another writer committed since this object was opened, start from that state
    (otherwise this change would be committed over theirs and lose it)."""
    import functools
    import json

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        directory = Path(self.path)
        with WriterLock(directory):
            try:
                on_disk = json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("generation")
            except (OSError, ValueError, AttributeError):
                on_disk = None
            if on_disk != self.manifest.get("generation"):
                fresh = type(self).open(directory)
                self.__dict__.update(fresh.__dict__)
            return method(self, *args, **kwargs)

    return wrapper
