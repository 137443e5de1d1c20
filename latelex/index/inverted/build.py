"""Writing one segment of the inverted index, streaming: documents arrive in chunks, postings are made by a
counting sort over memory-mapped files, so the working memory stays about one chunk plus O(V).

A segment is a folder of ``.npy`` arrays (``I`` = the impact code type, uint8 or the bits of a float16):

- forward index, document-major: ``fwd_indptr`` int64 (n + 1,), ``fwd_indices`` int32 (nnz,) ascending within
  a document, ``fwd_values`` float32 (nnz,), the unquantised weights used for exact re-scoring;
- postings, term-major: ``post_offsets`` int64 (V + 1,), ``post_docs`` int32 (nnz,) ascending within a term
  (segment-local document numbers), ``post_impacts`` I (nnz,) quantised weights;
- block-max metadata: ``block_offsets`` int64 (V + 1,) into ``block_last`` int32 (B,) (last document of each
  block of ``block_size`` postings) and ``block_max`` I (B,) (largest impact code of the block);
- ``term_max`` float32 (V,): the largest unquantised weight of each term;
- impact-ordered lists for approximate search: ``imp_offsets`` int64 (V + 1,), ``imp_docs`` int32 and
  ``imp_impacts`` I, each term's ``impact_ordered`` largest postings, largest first;
- ``doc_ids_blob`` uint8 / ``doc_ids_offsets`` int64 (n + 1,): the document ids.

A code ``c`` decodes to ``decode_table(kind, scale)[c]``; every weight ``w`` of the segment satisfies
``|w - decoded| <= max_error``, which is measured while writing and recorded in the manifest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numba
import numpy as np

from ...errors import InputError
from ...fsio import file_sha256
from ...npyio import load_npy
from ...types import SparseBatch
from .. import storage
from .config import InvertedConfig

CODE_DTYPES = {"uint8": np.dtype(np.uint8), "float16": np.dtype(np.uint16)}
#: dtype of the impact arrays as written on disk (float16 impacts are read as their uint16 bits).
DISK_DTYPES = {"uint8": np.dtype(np.uint8), "float16": np.dtype(np.float16)}


def decode_table(kind: str, scale: float) -> np.ndarray:
    """float64 (256,) or (65536,): the weight each impact code stands for."""
    if kind == "uint8":
        return np.arange(256, dtype=np.float64) * float(scale)
    table = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float64)
    table[~np.isfinite(table)] = 0.0  # never written: weights are finite and >= 0
    table[table < 0] = 0.0
    return table


def array_entry(directory: Path, path: Path) -> dict[str, Any]:
    """Manifest entry of an ``.npy`` file written in place (file relative to ``directory``)."""
    array = load_npy(path, mmap=True)
    return {
        "file": path.relative_to(directory).as_posix(),
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


@numba.njit(cache=True, nogil=True)
def _place(indices, values, doc_base, indptr, cursor, post_docs, out_pos, term_max):
    """Counting-sort step: the posting slot of every (document, term) of one chunk, in document order."""
    n = indptr.shape[0] - 1
    for d in range(n):
        for j in range(indptr[d], indptr[d + 1]):
            t = indices[j]
            p = cursor[t]
            cursor[t] = p + 1
            post_docs[p] = doc_base + d
            out_pos[j] = p
            w = values[j]
            if w > term_max[t]:
                term_max[t] = w


@numba.njit(cache=True, nogil=True)
def _blocks(post_offsets, post_docs, codes, block_size, block_offsets, block_last, block_max):
    vocab = post_offsets.shape[0] - 1
    b = 0
    for t in range(vocab):
        block_offsets[t] = b
        start, end = post_offsets[t], post_offsets[t + 1]
        for s in range(start, end, block_size):
            e = min(s + block_size, end)
            m = codes[s]
            for p in range(s + 1, e):
                if codes[p] > m:
                    m = codes[p]
            block_last[b] = post_docs[e - 1]
            block_max[b] = m
            b += 1
    block_offsets[vocab] = b


@numba.njit(cache=True, nogil=True)
def _impact_order(post_offsets, post_docs, codes, depth, imp_offsets, imp_docs, imp_codes):
    vocab = post_offsets.shape[0] - 1
    o = 0
    for t in range(vocab):
        imp_offsets[t] = o
        start, end = post_offsets[t], post_offsets[t + 1]
        if end == start:
            continue
        # Stable order by code descending (document ascending among equal codes).
        order = np.argsort(-codes[start:end].astype(np.int64), kind="mergesort")
        m = min(depth, end - start)
        for i in range(m):
            imp_docs[o + i] = post_docs[start + order[i]]
            imp_codes[o + i] = codes[start + order[i]]
        o += m
    imp_offsets[vocab] = o


def quantise(values: np.ndarray, kind: str, scale: float) -> np.ndarray:
    """Impact codes of float weights (uint8 codes, or the uint16 bits of float16)."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "uint8":
        return np.minimum(np.floor(values / scale + 0.5), 255).astype(np.uint8)
    return values.astype(np.float16).view(np.uint16)


class SegmentWriter:
    """Writes one segment into ``directory`` from chunks of (doc ids, vectors); call :meth:`finish` at the end.

    The caller has already checked the vectors (well-formed, finite, >= 0, over ``vocab_size`` terms).
    """

    def __init__(self, directory: Path, vocab_size: int, config: InvertedConfig):
        self.directory = directory
        self.vocab_size = vocab_size
        self.config = config
        self._ids: list[str] = []
        self._lengths: list[np.ndarray] = []
        self._max = 0.0
        self._nnz = 0
        self._raw_indices = None
        self._raw_values = None

    def add(self, doc_ids: Sequence[str], vectors: SparseBatch) -> None:
        """Append a chunk: N ids and the N vectors (CSR) they name."""
        if self._raw_indices is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._raw_indices = open(self.directory / "fwd_indices.raw", "wb")
            self._raw_values = open(self.directory / "fwd_values.raw", "wb")
        indptr = np.asarray(vectors.indptr, dtype=np.int64)
        indices = np.asarray(vectors.indices, dtype=np.int32)
        values = np.asarray(vectors.values, dtype=np.float32)
        keep = values != 0  # explicit zeros never change a score: do not store them
        if not keep.all():
            row = np.repeat(np.arange(len(vectors)), np.diff(indptr))
            indices, values = indices[keep], values[keep]
            indptr = np.zeros_like(indptr)
            np.cumsum(np.bincount(row[keep], minlength=len(vectors)), out=indptr[1:])
        self._raw_indices.write(np.ascontiguousarray(indices).tobytes())
        self._raw_values.write(np.ascontiguousarray(values).tobytes())
        self._lengths.append(np.diff(indptr))
        self._ids.extend(doc_ids)
        self._nnz += int(indices.shape[0])
        if values.size:
            self._max = max(self._max, float(values.max()))

    def finish(self, root: Path) -> dict[str, Any]:
        """Write every array; return the segment's manifest entry (array files relative to ``root``)."""
        if self._raw_indices is None:
            raise InputError("a segment needs at least one document")
        self._raw_indices.close()
        self._raw_values.close()
        d, cfg, vocab = self.directory, self.config, self.vocab_size
        n, nnz = len(self._ids), self._nnz
        kind = cfg.impacts
        if kind == "uint8":
            scale = self._max / 255.0 if self._max > 0 else 1.0
        else:
            scale = 1.0
        code_dtype = CODE_DTYPES[kind]

        def create(name: str, dtype, shape) -> np.ndarray:
            return np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        # Forward index: move the raw chunks into .npy files.
        fwd_indptr = create("fwd_indptr", np.int64, (n + 1,))
        fwd_indptr[0] = 0
        np.cumsum(np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64), out=fwd_indptr[1:])
        fwd_indices = create("fwd_indices", np.int32, (nnz,))
        fwd_values = create("fwd_values", np.float32, (nnz,))
        step = 1 << 24
        for raw, out in (("fwd_indices.raw", fwd_indices), ("fwd_values.raw", fwd_values)):
            src = np.memmap(d / raw, dtype=out.dtype, mode="r", shape=(nnz,)) if nnz else out[:0]
            for s in range(0, nnz, step):
                out[s : s + step] = src[s : s + step]
            del src
            (d / raw).unlink()

        # Postings by counting sort, chunk by chunk of documents (so documents ascend within each term).
        df = np.zeros(vocab, dtype=np.int64)
        for s in range(0, nnz, step):
            df += np.bincount(fwd_indices[s : s + step], minlength=vocab)
        post_offsets = create("post_offsets", np.int64, (vocab + 1,))
        post_offsets[0] = 0
        np.cumsum(df, out=post_offsets[1:])
        post_docs = create("post_docs", np.int32, (nnz,))
        post_codes = create("post_impacts", DISK_DTYPES[kind], (nnz,))
        codes_view = post_codes.view(code_dtype)
        term_max = create("term_max", np.float32, (vocab,))
        term_max[:] = 0
        cursor = np.array(post_offsets[:-1], dtype=np.int64)
        table = decode_table(kind, scale)
        max_error = 0.0
        for a in range(0, n, cfg.chunk_documents):
            b = min(n, a + cfg.chunk_documents)
            lo, hi = int(fwd_indptr[a]), int(fwd_indptr[b])
            local_indptr = np.asarray(fwd_indptr[a : b + 1]) - lo
            idx = np.asarray(fwd_indices[lo:hi])
            val = np.asarray(fwd_values[lo:hi])
            pos = np.empty(hi - lo, dtype=np.int64)
            _place(idx, val, a, local_indptr, cursor, post_docs, pos, term_max)
            codes = quantise(val, kind, scale)
            codes_view[pos] = codes
            if codes.size:
                max_error = max(max_error, float(np.max(np.abs(val.astype(np.float64) - table[codes]))))

        # Block-max metadata.
        counts = np.diff(np.asarray(post_offsets))
        n_blocks = int(((counts + cfg.block_size - 1) // cfg.block_size).sum())
        block_offsets = create("block_offsets", np.int64, (vocab + 1,))
        block_last = create("block_last", np.int32, (n_blocks,))
        block_max = create("block_max", DISK_DTYPES[kind], (n_blocks,))
        _blocks(post_offsets, post_docs, codes_view, cfg.block_size, block_offsets, block_last,
                block_max.view(code_dtype))

        # Impact-ordered heads of the lists (approximate mode).
        names = ["fwd_indptr", "fwd_indices", "fwd_values", "post_offsets", "post_docs", "post_impacts",
                 "block_offsets", "block_last", "block_max", "term_max"]
        if cfg.impact_ordered > 0:
            total = int(np.minimum(counts, cfg.impact_ordered).sum())
            imp_offsets = create("imp_offsets", np.int64, (vocab + 1,))
            imp_docs = create("imp_docs", np.int32, (total,))
            imp_codes = create("imp_impacts", DISK_DTYPES[kind], (total,))
            _impact_order(post_offsets, post_docs, codes_view, cfg.impact_ordered, imp_offsets, imp_docs,
                          imp_codes.view(code_dtype))
            names += ["imp_offsets", "imp_docs", "imp_impacts"]
            for a in (imp_offsets, imp_docs, imp_codes):
                a.flush()
            del imp_offsets, imp_docs, imp_codes

        for a in (fwd_indptr, fwd_indices, fwd_values, post_offsets, post_docs, post_codes, term_max,
                  block_offsets, block_last, block_max):
            a.flush()
        del fwd_indptr, fwd_indices, fwd_values, post_offsets, post_docs, post_codes, codes_view, term_max
        del block_offsets, block_last, block_max

        blob, offsets = storage.encode_strings(self._ids)
        np.save(d / "doc_ids_blob.npy", blob, allow_pickle=False)
        np.save(d / "doc_ids_offsets.npy", offsets, allow_pickle=False)
        names += ["doc_ids_blob", "doc_ids_offsets"]
        _fsync_files(d)
        return {
            "name": d.name,
            "documents": n,
            "nnz": nnz,
            "impacts": kind,
            "scale": scale,
            "max_error": max_error,
            "block_size": cfg.block_size,
            "impact_ordered": cfg.impact_ordered,
            "arrays": {name: array_entry(root, d / f"{name}.npy") for name in names},
        }

    def abort(self) -> None:
        """Close the raw files and remove the segment folder (a failed build or add)."""
        for f in (self._raw_indices, self._raw_values):
            if f is not None and not f.closed:
                f.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _fsync_files(directory: Path) -> None:
    from ...fsio import fsync_path

    for p in directory.iterdir():
        if p.is_file():
            fsync_path(p)
    fsync_path(directory)


def write_segment(directory: Path, root: Path, chunks, vocab_size: int, config: InvertedConfig) -> dict[str, Any]:
    """Write a segment from an iterable of checked ``(doc_ids, SparseBatch)`` chunks; return its manifest entry."""
    writer = SegmentWriter(directory, vocab_size, config)
    try:
        for ids, batch in chunks:
            writer.add(ids, batch)
        return writer.finish(root)
    except BaseException:
        writer.abort()
        raise


def slice_batch(batch: SparseBatch, start: int, stop: int) -> SparseBatch:
    """Rows ``start:stop`` of a batch, as views where possible."""
    indptr = np.asarray(batch.indptr)
    a, b = int(indptr[start]), int(indptr[stop])
    return SparseBatch(indptr[start : stop + 1] - a, np.asarray(batch.indices)[a:b], np.asarray(batch.values)[a:b],
                       batch.vocab_size)


__all__ = ["SegmentWriter", "write_segment", "decode_table", "quantise", "slice_batch", "array_entry",
           "CODE_DTYPES", "DISK_DTYPES"]
