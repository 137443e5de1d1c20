"""Atomic file and folder writes: a reader sees the old file or folder or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Open a temporary text file beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB pieces (raises OSError as ``open`` does)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(8 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def replace_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final`` with ``os.replace``; an existing ``final`` is moved aside
    first and removed afterwards (both must be on the same file system, e.g. ``tmp`` a sibling of ``final``)."""
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _umask() -> int:
    """The process umask, read from /proc where it can be (setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _publishable(folder: Path) -> None:
    """Give a staged folder and its files the modes an ordinary mkdir / open would have (mkdtemp makes 0700 and
    some writers 0600), so that a published index or model is readable by whoever may read its parent."""
    umask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def staged_folder(final: Path, tag: str = "saving") -> Iterator[Path]:
    """Yield a new temporary folder beside ``final`` (``.<name>.<tag>-*``); when the block ends without error it
    replaces ``final`` (see :func:`replace_folder`), on error it is removed and ``final`` is left as it was.

    ``final`` is used as given (resolve it first); its parent is created. Checks on an existing ``final``
    (refusing to overwrite it) are the caller's, made before entering the block.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))
    try:
        yield tmp
        _publishable(tmp)
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
