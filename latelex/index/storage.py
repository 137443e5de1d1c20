"""Index directories: arrays as .npy files, a manifest.json written last, atomic publication.

A build writes into a temporary sibling directory; the manifest (kind, format version, library version,
config, counts, and the size and SHA-256 of every array) is written last, and the directory is moved into
place with :func:`os.replace`. A directory without a manifest is therefore never mistaken for an index, and a
failed build leaves whatever was at the destination untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from ..errors import IndexFormatError, InputError
from ..fsio import file_sha256, replace_folder, staged_folder
from ..npyio import load_npy

MANIFEST = "manifest.json"

#: Arrays (and other files) up to this size have their SHA-256 checked every time an index opens. Larger arrays read
#: whole at open are hashed as they are read; larger memory-mapped ones are checked on their first read through a
#: :class:`LazyChecks`, or all at once with ``verify=True`` (``--verify``). Checking every small array of a
#: 5,000-document PLAID index costs a few ms.
SMALL_FILE_BYTES = 4 << 20


def _library_version() -> str:
    from .. import __version__

    return __version__


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike, overwrite: bool = False, resumable: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block ends without error.

    Raises :class:`IndexFormatError` up front if ``final`` exists and ``overwrite`` is false. On error the
    temporary directory is removed (kept for the next build to resume, with ``resumable``) and ``final`` is left
    as it was.
    """
    final = Path(final).expanduser().resolve()
    if final.exists() and not overwrite:
        raise IndexFormatError(f"{final} already exists; pass overwrite=True (--overwrite) or choose another path")
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / MANIFEST).exists())):
        raise IndexFormatError(f"{final} exists and is not an index; refusing to replace it, choose another path")
    with staged_folder(final, tag="building", resumable=resumable) as tmp:
        yield tmp
        if not (tmp / MANIFEST).exists():
            raise IndexFormatError(f"internal error: build of {final} finished without a manifest")


def publish(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing ``final`` if it exists."""
    replace_folder(tmp, final)


def create_new(path: Path, mode: str = "wb") -> IO:
    """Open ``path`` as a new file for writing, replacing a file (or a symbolic link: never followed) left there.

    A name inside an index folder from elsewhere may be a planted link to a file outside it; ``open(path, "w")``
    would overwrite that file. The old entry is unlinked and the new file created with ``O_EXCL | O_NOFOLLOW``, so a
    write lands in a fresh file inside the folder or fails (this also leaves a hard-linked snapshot's inode alone).
    """
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def save_array(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as ``directory/name.npy`` (no pickles) and return its manifest entry."""
    path = directory / f"{name}.npy"
    array = np.ascontiguousarray(array)
    if array.dtype == object:
        raise TypeError(f"array {name} has dtype object; indexes store plain arrays only")
    with create_new(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return {
        "file": path.name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def write_manifest(directory: Path, kind: str, format_version: int, arrays: dict[str, dict], **fields: Any) -> dict:
    """Write ``manifest.json`` into ``directory``; call it last, once every array is on disk."""
    manifest = {
        "kind": kind,
        "format_version": format_version,
        "latelex_version": _library_version(),
        "arrays": arrays,
        **fields,
    }
    path = directory / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    with create_new(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return manifest


def check_encoder_spec(encoder: Any) -> None:
    """Check that the encoder spec a sparse or inverted index stores in its manifest is a JSON-ready dict (or None)."""
    if encoder is None:
        return
    if not isinstance(encoder, dict):
        raise InputError(f"encoder must be a dict (an encoder spec) or None, not {type(encoder).__name__}")
    try:
        json.dumps(encoder)
    except (TypeError, ValueError) as exc:
        raise InputError(f"the encoder spec is not JSON-serialisable: {exc}") from None


def read_manifest(directory: str | os.PathLike, kinds: tuple[str, ...], max_version: int) -> dict[str, Any]:
    """The manifest of an index directory, after checking that it is a complete index of a known kind."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise IndexFormatError(f"{directory} is not a directory; pass the folder an index was built into")
    path = directory / MANIFEST
    if not path.exists():
        raise IndexFormatError(
            f"{directory} has no {MANIFEST}: it is not a latelex index or its build did not finish; rebuild it"
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is unreadable ({exc}); rebuild the index") from None
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise IndexFormatError(f"{path} is not a latelex manifest; rebuild the index")
    kind = manifest["kind"]
    if kind not in kinds:
        raise IndexFormatError(f"{directory} holds a {kind!r} index; expected {' or '.join(repr(k) for k in kinds)}")
    version = int(manifest.get("format_version", 0))
    if version > max_version:
        raise IndexFormatError(
            f"{directory} was written by latelex {manifest.get('latelex_version', '?')} in format {version}; "
            f"this latelex reads up to format {max_version}: upgrade latelex"
        )
    _check_file_entries(directory, manifest)
    return manifest


def inside(directory: str | os.PathLike, relative: Any) -> Path:
    """``directory / relative`` for a file name read from ``directory``'s manifest, which must be data, never a way
    out: a relative POSIX path whose components are not empty, ``.`` or ``..``, without backslashes or NULs, that
    stays inside ``directory`` even through symbolic links. Raises :class:`IndexFormatError` otherwise."""
    directory = Path(directory)
    ok = (
        isinstance(relative, str)
        and relative != ""
        and not relative.startswith("/")
        and "\\" not in relative
        and "\0" not in relative
        and all(part not in ("", ".", "..") for part in relative.split("/"))
    )
    if ok:
        root = Path(os.path.realpath(directory))
        path = directory / relative
        ok = Path(os.path.realpath(path)).is_relative_to(root)
    if not ok:
        raise IndexFormatError(
            f"{directory}/{MANIFEST} names {relative!r}, which is not a file inside the index; "
            f"the index is damaged or not from latelex"
        )
    return path


def _check_file_entries(directory: Path, manifest: dict[str, Any]) -> None:
    """Every ``arrays[*].file`` and ``files[*].file`` of a manifest must name a file inside ``directory``."""
    for section in ("arrays", "files"):
        entries = manifest.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise IndexFormatError(f"{directory}/{MANIFEST} garbles its {section!r}; the index is damaged or not "
                                   f"from latelex")
        for entry in entries.values():
            inside(directory, entry.get("file"))


def _entry(directory: Path, manifest: dict[str, Any], name: str, array: bool) -> dict[str, Any]:
    """The manifest entry of array (or file) ``name``, with its fields checked for type."""
    section = manifest.get("arrays" if array else "files")
    entry = section.get(name) if isinstance(section, dict) else None
    if entry is None:
        what = "array" if array else "file"
        raise IndexFormatError(f"{directory}: manifest lists no {what} {name!r}; rebuild the index")
    fields: dict[str, tuple[type, ...]] = {"file": (str,), "bytes": (int,), "sha256": (str,)}
    if array:
        fields.update(shape=(list,), dtype=(str,))
    if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in fields.items()):
        raise IndexFormatError(f"{directory}/{MANIFEST} garbles the entry of {name!r}; the index is damaged or not "
                               f"from latelex")
    return entry


def read_checked(directory: str | os.PathLike, manifest: dict[str, Any], name: str, what: str = "file") -> bytes:
    """The bytes of the non-array file ``name`` (``manifest["files"][name]``), after checking its size and SHA-256:
    for a file that is read whole into memory anyway (a FAISS index), so that damage is one
    :class:`IndexFormatError`, never a crash in the reader. ``what`` names the file in messages ("FAISS index")."""
    directory = Path(directory)
    entry = _entry(directory, manifest, name, array=False)
    path = inside(directory, entry["file"])
    try:
        with open(path, "rb") as f:
            data = f.read(entry["bytes"] + 1)
    except OSError:
        raise IndexFormatError(f"the {what} {path} is missing or unreadable; rebuild the index") from None
    if len(data) != entry["bytes"]:
        raise IndexFormatError(f"the {what} {path} is missing or truncated; rebuild the index")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise IndexFormatError(f"the {what} {path} does not match its checksum; the index is corrupt, rebuild it")
    return data


def check_file(directory: str | os.PathLike, manifest: dict[str, Any], name: str, verify: bool = False) -> Path:
    """The path of the non-array file ``name``, after checking its size, and its SHA-256 if ``verify`` or if it is
    small (at most :data:`SMALL_FILE_BYTES`)."""
    directory = Path(directory)
    entry = _entry(directory, manifest, name, array=False)
    path = inside(directory, entry["file"])
    if not path.is_file() or path.stat().st_size != entry["bytes"]:
        raise IndexFormatError(f"{path} is missing or truncated; rebuild the index")
    if (verify or entry["bytes"] <= SMALL_FILE_BYTES) and file_sha256(path) != entry["sha256"]:
        raise IndexFormatError(f"{path} does not match its checksum; the index is corrupt, rebuild it")
    return path


def load_array(directory: Path, manifest: dict[str, Any], name: str, mmap: bool = True, verify: bool = False,
               verify_small: bool = True, lazy: "LazyChecks | None" = None) -> np.ndarray:
    """Open array ``name`` of an index, memory-mapped by default, checking its size, shape and dtype, and its SHA-256:

    - with ``verify`` (``--verify``), always;
    - with ``verify_small`` (the default), when the file is small (at most :data:`SMALL_FILE_BYTES`) or read whole
      (``mmap=False``: its bytes are hashed as they are read), so the offsets, ids and codes that a flipped byte
      would turn into wrong answers or crashes are checked on every open;
    - a large memory-mapped array is left to ``lazy``, which checks it on its first read (:meth:`LazyChecks.ensure`);
      without ``lazy``, only ``verify`` checks it."""
    directory = Path(directory)
    entry = _entry(directory, manifest, name, array=True)
    path = inside(directory, entry["file"])
    try:
        size = path.stat().st_size if path.is_file() else -1
    except OSError:
        size = -1
    if size != entry["bytes"]:
        raise IndexFormatError(f"{path} is missing or truncated; rebuild the index")
    checked = verify or (verify_small and (size <= SMALL_FILE_BYTES or not mmap))
    if not checked and verify_small and lazy is not None:
        lazy.add(name, path, entry["sha256"])
    try:
        if checked and not mmap:  # read once: hash the bytes, then parse them (a writable array over them)
            data = bytearray(size)
            with open(path, "rb") as f:
                whole = f.readinto(data) == size and not f.read(1)
            if not whole or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise IndexFormatError(f"{path} does not match its checksum; the index is corrupt, rebuild it")
            array = load_npy(data)
        else:
            if checked and file_sha256(path) != entry["sha256"]:
                raise IndexFormatError(f"{path} does not match its checksum; the index is corrupt, rebuild it")
            array = load_npy(path, mmap=mmap)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise IndexFormatError(f"{path} is not a valid array ({reason}); rebuild the index") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        with contextlib.suppress(AttributeError):
            array.close()
        raise IndexFormatError(f"{path} is not a valid array (not an .npy file); rebuild the index")
    if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
        raise IndexFormatError(f"{path} does not match the manifest; rebuild the index")
    return array


class LazyChecks:
    """The SHA-256 checks of an open index's large memory-mapped arrays, each done once, on the array's first read.

    An engine registers its arrays through :func:`load_array` (``lazy=``) and calls :meth:`ensure` with the names
    a search is about to read (PLAID: the residuals of each chunk it decompresses; the other kinds: their arrays
    at their first search). Opening stays cheap whatever the index's size, and a damaged array is reported as a
    one-line :class:`IndexFormatError` before a search uses its contents (opening reads only a few of its values,
    for consistency checks). Thread-safe.
    """

    def __init__(self) -> None:
        self._pending: dict[str, tuple[Path, str]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, path: Path, sha256: str) -> None:
        """Check file ``path`` (array ``name``) against ``sha256`` on its first :meth:`ensure`."""
        with self._lock:
            self._pending[name] = (path, sha256)

    @property
    def pending(self) -> list[str]:
        """The names not checked yet."""
        with self._lock:
            return sorted(self._pending)

    def ensure(self, *names: str) -> None:
        """Check each of ``names`` not checked yet (names never registered are ignored)."""
        for name in names:
            if name not in self._pending:  # the common case, without the lock
                continue
            with self._lock:
                found = self._pending.get(name)
                if found is None:
                    continue
                path, expected = found
                try:
                    actual = file_sha256(path)
                except OSError as exc:
                    raise IndexFormatError(f"{path} cannot be read ({exc.strerror}); rebuild the index") from None
                if actual != expected:
                    raise IndexFormatError(f"{path} does not match its checksum; the index is corrupt, rebuild it")
                del self._pending[name]

    def ensure_all(self) -> None:
        """Check every registered array not checked yet."""
        self.ensure(*self.pending)


def verify_index(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every array's and file's size and SHA-256 against the manifest; raise :class:`IndexFormatError` on a
    mismatch."""
    for name in manifest["arrays"]:
        load_array(Path(directory), manifest, name, verify=True)
    for name in manifest.get("files", {}):  # non-array files an engine keeps (e.g. a faiss index)
        check_file(directory, manifest, name, verify=True)


def encode_strings(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 ``(bytes (B,) uint8, offsets (N + 1,) int64)`` of a list of strings: ragged text without pickles."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, dtype=np.uint8)
    return blob, offsets


def decode_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Inverse of :func:`encode_strings`."""
    raw = bytes(np.asarray(blob))
    return [raw[int(offsets[i]) : int(offsets[i + 1])].decode("utf-8") for i in range(len(offsets) - 1)]
