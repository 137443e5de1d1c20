"""Reading ``.npy`` files: never a pickle, and safe from many threads at once.

numpy parses an ``.npy`` header with :func:`ast.literal_eval`. On CPython 3.11 the AST constructor keeps its
recursion depth per interpreter, not per thread (CPython gh-106905), so two threads that open arrays at the same
moment (the shards of a sharded index, the server's worker threads) can fail with ``SystemError: AST constructor
recursion depth mismatch``. Every ``.npy`` read in latelex goes through :func:`load_npy`, which parses headers one
at a time under a lock and reads the data outside it.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Union

import numpy as np

_HEADER_LOCK = threading.RLock()  # re-entrant: a finalizer run inside the lock may read an array too

NpySource = Union[str, os.PathLike, bytes, bytearray, memoryview]


def load_npy(source: NpySource, mmap: bool = False) -> np.ndarray:
    """The array in an ``.npy`` file (a path) or in its bytes, as ``np.load(..., allow_pickle=False)`` returns it.

    ``mmap`` maps a file read-only (``mmap_mode="r"``) instead of reading it; it needs a path. An array read from
    a path is writable; one read from bytes shares their memory, so it is writable only over a ``bytearray``.
    Raises ``ValueError`` for a file that is not a valid ``.npy`` file or holds objects, ``OSError`` for one that
    cannot be read; an ``.npz`` archive under a path comes back as numpy's ``NpzFile`` (callers reject it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(memoryview(source))
    if mmap:
        with _HEADER_LOCK:  # a mapped load reads only the header: holding the lock over all of it costs nothing
            return np.load(source, mmap_mode="r", allow_pickle=False)
    with open(source, "rb") as f:
        shape, fortran, dtype = _read_header(f)
        count = _count(shape)
        array = np.fromfile(f, dtype=dtype, count=count) if count else np.empty(0, dtype=dtype)
        if array.size != count:
            raise ValueError(f"the file holds {array.size} of the {count} values its header declares")
        return _shaped(array, shape, fortran)


def _from_bytes(data: memoryview) -> np.ndarray:
    stream = io.BytesIO(data)
    shape, fortran, dtype = _read_header(stream)
    count = _count(shape)
    offset = stream.tell()
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"the data holds fewer than the {count} values its header declares")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset) if count else np.empty(0, dtype=dtype)
    return _shaped(array, shape, fortran)


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    with _HEADER_LOCK:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:  # 3.0 (utf-8 field names) has no public reader; numpy's private one takes the same arguments
            shape, fortran, dtype = fmt._read_array_header(f, version)
    if dtype.hasobject:
        raise ValueError("the array holds Python objects, which are never unpickled")
    return tuple(shape), bool(fortran), dtype


def _count(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _shaped(array: np.ndarray, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
