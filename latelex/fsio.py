"""Atomic file and folder writes: a reader sees the old file or folder or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator


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
            os.chmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give the file an ordinary open's mode
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def user_cache_dir() -> Path:
    """latelex's per-user cache folder: ``$LATELEX_CACHE``, else ``$XDG_CACHE_HOME/latelex``, else
    ``~/.cache/latelex`` (not created here)."""
    if os.environ.get("LATELEX_CACHE"):
        return Path(os.environ["LATELEX_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "latelex"
    return Path.home() / ".cache" / "latelex"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB pieces (raises OSError as ``open`` does)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(8 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def fsync_path(path: Path) -> None:
    """Make a file's bytes, or a folder's entries (new, renamed or removed files), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``; an existing ``final`` is replaced in one atomic step (the two
    are exchanged, then the old one, now at ``tmp``, is removed), so a reader or a crash sees the old folder or the
    new one, never no folder. Where the system cannot exchange, the old folder is moved aside first and
    :func:`recover_folder` puts it back if the process dies in between. Both must be on one file system."""
    if final.exists():
        if _exchange(tmp, final):
            fsync_path(final.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        fsync_path(final.parent)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
        fsync_path(final.parent)


def recover_folder(final: Path, keep_resumable: bool = False) -> list[str]:
    """Clean what a crashed :func:`staged_folder` left beside ``final`` (call it holding :func:`build_lock`):
    an old folder moved aside when ``final`` is missing is put back; staging folders and moved-aside copies are
    removed. Returns what was done, one line each."""
    done: list[str] = []
    parent = final.parent
    if not parent.is_dir():
        return done
    for aside in sorted(parent.glob(f".{final.name}.old-*")):
        if not final.exists() and (aside / "old").is_dir():
            os.replace(aside / "old", final)
            done.append(f"restored {final} from {aside.name} (a replacement died half way)")
        shutil.rmtree(aside, ignore_errors=True)
    for staging in parent.glob(f".{final.name}.*-*"):
        tag = staging.name[len(final.name) + 2 :].split("-", 1)[0]
        if keep_resumable and staging.name.endswith(RESUMABLE_SUFFIX):
            continue
        if tag in STAGING_TAGS and staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"removed {staging.name}, left by a build that did not finish")
    return done


#: The tags of :func:`staged_folder`'s temporary folders (``.<name>.<tag>-*``), removed by the next build.
STAGING_TAGS = ("building", "saving")
#: The name ending of a resumable staging folder (``.<name>.<tag>-resume``): kept when a build fails, reused by
#: the next resumable build of the same path, removed by any other.
RESUMABLE_SUFFIX = "-resume"


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, busy: Callable[[], BaseException] | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock (``flock``) on the file ``path`` for the block, waiting up to ``timeout`` seconds
    (then raising ``busy()``, or the OSError). The OS releases the lock if the process dies; the file is removed when
    the block ends (a waiter that then holds a removed file's lock takes the new file's instead)."""
    import errno
    import fcntl
    import time

    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                if busy is not None:
                    raise busy() from None
                raise
            time.sleep(0.05)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def build_lock(final: Path, timeout: float = 3600.0) -> Iterator[None]:
    """Hold the lock ``.<name>.lock`` beside ``final`` for a build that publishes there: a second build of the same
    path waits (up to ``timeout`` seconds) instead of racing it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock", timeout):
        yield


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
def staged_folder(final: Path, tag: str = "saving", resumable: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside ``final`` (``.<name>.<tag>-*``); when the block ends without error it
    replaces ``final`` atomically (see :func:`replace_folder`), on error it is removed and ``final`` is left as it
    was. The block holds :func:`build_lock`, and first clears what an earlier build of ``final`` that died left
    behind (:func:`recover_folder`).

    ``resumable``: the folder has a fixed name (``.<name>.<tag>-resume``), is reused if a failed build left it, and
    is kept when the block fails, so that work staged inside it (a PLAID build's chunks) resumes.

    ``final`` is used as given (resolve it first); its parent is created. Checks on an existing ``final``
    (refusing to overwrite it) are the caller's, made before entering the block.
    """
    import logging

    if tag not in STAGING_TAGS:
        raise ValueError(f"unknown staging tag {tag!r}")
    with build_lock(final):
        for line in recover_folder(final, keep_resumable=resumable):
            logging.getLogger(__name__).warning("%s", line)
        if resumable:
            tmp = final.parent / f".{final.name}.{tag}{RESUMABLE_SUFFIX}"
            tmp.mkdir(exist_ok=True)
        else:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))
        try:
            yield tmp
            _publishable(tmp)
            replace_folder(tmp, final)
        except BaseException:
            if not resumable:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
