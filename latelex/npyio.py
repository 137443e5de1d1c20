"""Reading ``.npy`` files: never a pickle, and safe from many threads at once.

numpy parses an ``.npy`` header with :func:`ast.literal_eval`. On CPython 3.11 the AST constructor keeps its
recursion depth per interpreter, not per thread (CPython gh-106905), so a thread that parses a header while another
thread builds an AST (another header, another library's ``literal_eval`` or ``ast.parse``) can fail with
``SystemError: AST constructor recursion depth mismatch``. A lock around numpy's parser was not enough: a sharded
index's compact still failed once in a hermetic run, as other threads' parsing happens outside any lock of ours.
So :func:`load_npy`, through which every ``.npy`` read in latelex goes (bm25s's arrays included: see
:func:`latelex.index.bm25._load_bm25s_model`), parses the headers numpy writes for plain
dtypes (the only ones latelex writes) itself, with a regular expression and no AST; other headers (structured
dtypes) go to numpy's parser under a lock, as before.
"""

from __future__ import annotations

import io
import os
import re
import struct
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
    cannot be read (an ``.npz`` archive is a ``ValueError`` too)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(memoryview(source))
    if mmap:
        with open(source, "rb") as f:
            shape, fortran, dtype = _read_header(f)
            offset = f.tell()
        if not _count(shape) or not dtype.itemsize:  # nothing to map (mmap refuses a zero-length mapping)
            array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
            array.flags.writeable = False
            return array
        return np.memmap(source, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)
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


#: The header numpy writes for a plain dtype: its three keys in order, the shape a tuple of integers.
_PLAIN_HEADER = re.compile(r"\{'descr': '([<>|=][a-zA-Z][0-9]*)', 'fortran_order': (True|False), "
                           r"'shape': \(((?:[0-9]+, )*(?:[0-9]+,?)?)\), \} *\n?")


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    start = f.tell()
    version = fmt.read_magic(f)  # checks the magic string; no parsing
    if version in ((1, 0), (2, 0), (3, 0)):
        size_format = "<H" if version == (1, 0) else "<I"
        raw = f.read(struct.calcsize(size_format))
        if len(raw) == struct.calcsize(size_format):
            text = f.read(struct.unpack(size_format, raw)[0]).decode("utf-8" if version == (3, 0) else "latin1")
            plain = _PLAIN_HEADER.fullmatch(text)
            if plain:
                descr, fortran, dims = plain.groups()
                try:
                    dtype = np.dtype(descr)
                except TypeError:
                    raise ValueError(f"the header names an unknown dtype {descr!r}") from None
                if dtype.hasobject:
                    raise ValueError("the array holds Python objects, which are never unpickled")
                return tuple(int(d) for d in dims.replace(",", " ").split()), fortran == "True", dtype
    f.seek(start)
    with _HEADER_LOCK:  # any other header (structured dtypes, or not valid): numpy's parser, one at a time
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
