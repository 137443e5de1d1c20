"""Index directories: arrays as .npy files, a manifest.json written last, atomic publication.

A build writes into a temporary sibling directory; the manifest (kind, format version, library version,
config, counts, and the size and SHA-256 of every array) is written last, and the directory is moved into
place with :func:`os.replace`. A directory without a manifest is therefore never mistaken for an index, and a
failed build leaves whatever was at the destination untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import IndexFormatError, InputError
from ..fsio import file_sha256, replace_folder, staged_folder

MANIFEST = "manifest.json"


def _library_version() -> str:
    from .. import __version__

    return __version__


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block ends without error.

    Raises :class:`IndexFormatError` up front if ``final`` exists and ``overwrite`` is false. On error the
    temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final).expanduser().resolve()
    if final.exists() and not overwrite:
        raise IndexFormatError(f"{final} already exists; pass overwrite=True (--overwrite) or choose another path")
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / MANIFEST).exists())):
        raise IndexFormatError(f"{final} exists and is not an index; refusing to replace it, choose another path")
    with staged_folder(final, tag="building") as tmp:
        yield tmp
        if not (tmp / MANIFEST).exists():
            raise IndexFormatError(f"internal error: build of {final} finished without a manifest")


def publish(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing ``final`` if it exists."""
    replace_folder(tmp, final)


def save_array(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as ``directory/name.npy`` (no pickles) and return its manifest entry."""
    path = directory / f"{name}.npy"
    array = np.ascontiguousarray(array)
    if array.dtype == object:
        raise TypeError(f"array {name} has dtype object; indexes store plain arrays only")
    np.save(path, array, allow_pickle=False)
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
    with open(tmp, "w", encoding="utf-8") as f:
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
    return manifest


def load_array(directory: Path, manifest: dict[str, Any], name: str, mmap: bool = True, verify: bool = False) -> np.ndarray:
    """Open array ``name`` of an index, memory-mapped by default, checking its size (and checksum if ``verify``)."""
    entry = manifest["arrays"].get(name)
    if entry is None:
        raise IndexFormatError(f"{directory}: manifest lists no array {name!r}; rebuild the index")
    path = Path(directory) / entry["file"]
    if not path.exists() or path.stat().st_size != entry["bytes"]:
        raise IndexFormatError(f"{path} is missing or truncated; rebuild the index")
    if verify and file_sha256(path) != entry["sha256"]:
        raise IndexFormatError(f"{path} does not match its checksum; the index is corrupt, rebuild it")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IndexFormatError(f"{path} is not a valid array ({exc}); rebuild the index") from None
    if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
        raise IndexFormatError(f"{path} does not match the manifest; rebuild the index")
    return array


def verify_index(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every array's size and SHA-256 against the manifest; raise :class:`IndexFormatError` on a mismatch."""
    for name in manifest["arrays"]:
        load_array(Path(directory), manifest, name, verify=True)
    for entry in manifest.get("files", {}).values():  # non-array files an engine keeps (e.g. a faiss index)
        path = Path(directory) / entry["file"]
        if not path.exists() or path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            raise IndexFormatError(f"{path} is missing, truncated or does not match its checksum; rebuild the index")


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
