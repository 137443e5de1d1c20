"""Streaming, chunked, resumable construction of a PLAID index directory.

A build works in a staging directory beside the destination, ``.<name>.plaid-build``, in four steps:

1. *source*: a random-access input (anything with ``__len__`` and ``__getitem__``: a list, a
   :class:`~latelex.types.PackedEmbeddings`, a lazy sequence) is read in place; any other iterable (a
   generator from an encoder) is first spilled to float16 chunk files in the staging directory, so that it is
   consumed once and never held in memory;
2. *codec*: ColBERTv2's document sample trains the centroids (k-means) and, from a held-out part, the
   residual buckets;
3. *chunks*: ``chunk_size`` documents at a time are compressed and written with their inverted list
   (centroid -> documents) and checksums; ``build_state.json`` records every finished step;
4. *publish*: the manifest is written last and the directory is moved into place with ``os.replace``.

A build that dies (an exception, a kill, a power cut) leaves the staging directory behind; calling the same
build again (same ids, config and encoder) resumes after the last finished step. Vectors are rounded to
float16 on the way in, whichever path they take, so a build is the same from a list as from a generator.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ...config import config_to_dict
from ...errors import ConfigError, IndexFormatError, InputError
from ...fsio import build_lock, file_sha256, fsync_path
from ...npyio import load_npy
from ..storage import MANIFEST, encode_strings, publish, save_array, write_manifest
from ..token_vectors import VECTOR_DTYPE, as_matrix, check_encoder, check_new_ids
from .codec import ResidualCodec
from .config import PlaidConfig, colbert_n_centroids, colbert_sample_documents

KIND = "plaid"
FORMAT_VERSION = 2  # 2: decompressed vectors are unit length (manifest "unit_norm"); 1 is still read
STATE = "build_state.json"

#: How a build compresses its chunks: ``map_chunks(fn, args)`` returns ``fn(*a)`` for each ``a`` of the iterable
#: ``args``, in order (``itertools.starmap``, the default, does it here one chunk at a time; a cluster runs a few at
#: once, e.g. :meth:`latelex.distributed.encode.RayEncoder.map_chunks`). It should consume ``args`` only a little
#: ahead of the results it has yielded, since each item holds a chunk's vectors.
ChunkMapper = Callable[[Callable[..., Any], Iterable[tuple]], Iterator[Any]]


# --- input checking ------------------------------------------------------------------------------------


def as_vectors(value: Any, what: str, dim: int | None) -> np.ndarray:
    """A (L, dim) float16 copy of one document's vectors (tensor or array), after checking shape and values."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    value = as_matrix(value, what)
    if value.shape[0] == 0:
        raise InputError(f"{what} has no token vectors; an encoder gives every text at least one")
    if dim is not None and value.shape[1] != dim:
        raise InputError(f"{what} has vectors of dimension {value.shape[1]}, but the index has dimension {dim}")
    with np.errstate(over="ignore", invalid="ignore"):
        half = value.astype(VECTOR_DTYPE)
    if not np.isfinite(half).all():
        raise InputError(f"{what} has NaN, infinite or out-of-float16-range values")
    return half


# --- durable files ---------------------------------------------------------------------------------------


def save_durable(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """:func:`storage.save_array`, then fsync, so that a manifest never names a file still in the page cache."""
    entry = save_array(directory, name, array)
    fsync_path(directory / entry["file"])
    return entry


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- chunks ----------------------------------------------------------------------------------------------


def chunk_name(number: int) -> str:
    return f"chunk-{number:05d}"


def inverted_lists(codes: np.ndarray, doclens: np.ndarray, n_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """``(docs (E,), offsets (C + 1,) int32)``: for each centroid, the ascending chunk-local positions of the
    documents with at least one token vector assigned to it (uint16 when the chunk has at most 65,536 documents)."""
    n = doclens.shape[0]
    local = np.repeat(np.arange(n, dtype=np.int64), doclens)
    pairs = np.unique(codes.astype(np.int64) * n + local)
    cells = pairs // n
    docs = (pairs % n).astype(np.uint16 if n <= 2**16 else np.int32)
    offsets = np.zeros(n_centroids + 1, dtype=np.int32)
    np.cumsum(np.bincount(cells, minlength=n_centroids), out=offsets[1:])
    return docs, offsets


def compress_chunk(codec: ResidualCodec, vectors: np.ndarray, doclens: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one chunk: codes, packed residuals, scale bytes (unit-length codecs), document lengths and
    inverted lists."""
    codes, packed = codec.compress(vectors)
    decoded = codec.decompress(codes[:4096], packed[:4096])
    ivf_docs, ivf_offsets = inverted_lists(codes, doclens, codec.n_centroids)
    extra = {"scales": codec.scales(codes, packed)} if codec.unit_norm else {}
    return {
        **extra,
        "codes": codes,
        "residuals": packed,
        "doclens": doclens.astype(np.int32),
        "ivf_docs": ivf_docs,
        "ivf_offsets": ivf_offsets,
        "_mse": np.array(float(((decoded - vectors[:4096].astype(np.float32)) ** 2).sum(axis=1).mean())),
    }


def write_chunk(directory: Path, name: str, arrays: dict[str, np.ndarray], ids: list[str]) -> dict[str, dict]:
    """Write one chunk's arrays (and its document ids) durably; return their manifest entries by array name."""
    blob, offsets = encode_strings(ids)
    entries = {}
    for key in ("codes", "residuals", "scales", "doclens", "ivf_docs", "ivf_offsets"):
        if key in arrays:
            entries[f"{name}.{key}"] = save_durable(directory, f"{name}.{key}", arrays[key])
    entries[f"{name}.ids_bytes"] = save_durable(directory, f"{name}.ids_bytes", blob)
    entries[f"{name}.ids_offsets"] = save_durable(directory, f"{name}.ids_offsets", offsets)
    return entries


def codec_arrays(codec: ResidualCodec) -> dict[str, np.ndarray]:
    return {
        "centroids": codec.centroids.astype(np.float16),
        "bucket_cutoffs": codec.cutoffs,
        "bucket_weights": codec.weights,
    }


# --- sources ---------------------------------------------------------------------------------------------


class SequenceSource:
    """Random access to documents given as a sequence of matrices."""

    def __init__(self, items: Sequence, ids: list[str]):
        self.items = items
        self.ids = ids
        self.dim: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def length(self, i: int) -> int:
        shape = getattr(self.items[i], "shape", None)
        return int(shape[0]) if shape is not None and len(shape) == 2 else int(self.get(i).shape[0])

    def get(self, i: int) -> np.ndarray:
        m = as_vectors(self.items[i], f"the embedding of document {self.ids[i]!r}", self.dim)
        if self.dim is None:
            self.dim = int(m.shape[1])
        return m

    def block(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        mats = [self.get(i) for i in range(a, b)]
        return np.concatenate(mats), np.array([m.shape[0] for m in mats], dtype=np.int64)


class SpillSource:
    """Documents spilled to ``raw-NNNNN`` float16 chunk files in the staging directory."""

    def __init__(self, directory: Path, ids: list[str], chunk_size: int, dim: int):
        self.directory = directory
        self.ids = ids
        self.chunk_size = chunk_size
        self.dim = dim
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None or self._cache[0] != c:
            vectors = load_npy(self.directory / f"raw-{c:05d}.vectors.npy", mmap=True)
            lengths = load_npy(self.directory / f"raw-{c:05d}.lengths.npy")
            offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            self._cache = (c, vectors, offsets)
        return self._cache[1], self._cache[2]

    def length(self, i: int) -> int:
        _, offsets = self._chunk(i // self.chunk_size)
        j = i % self.chunk_size
        return int(offsets[j + 1] - offsets[j])

    def get(self, i: int) -> np.ndarray:
        vectors, offsets = self._chunk(i // self.chunk_size)
        j = i % self.chunk_size
        return np.array(vectors[offsets[j] : offsets[j + 1]])

    def block(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        c = a // self.chunk_size  # blocks never cross a chunk: both use chunk_size
        vectors, offsets = self._chunk(c)
        ja, jb = a - c * self.chunk_size, b - c * self.chunk_size
        return np.array(vectors[offsets[ja] : offsets[jb]]), np.diff(offsets[ja : jb + 1])


def spill(directory: Path, ids: list[str], embeddings: Iterable, chunk_size: int, state: dict, save_state: Callable[[], None],
          progress: Callable[[int], None]) -> SpillSource:
    """Consume ``embeddings`` into raw chunk files. On a resume the documents spilled before the crash are consumed
    again and checked against the digest of each spilled chunk: from the first chunk that differs (other vectors
    under the same ids), everything staged is stale and the build goes on from there with the new vectors."""
    n = len(ids)
    done = int(state.get("spilled_chunks", 0))
    digests: list[str] = state.setdefault("spill_digests", [])
    dim = state.get("dim")
    iterator = iter(embeddings)

    def take(a: int, b: int) -> list[np.ndarray]:
        nonlocal dim
        mats = []
        for i in range(a, b):
            value = next(iterator, None)
            if value is None:
                raise InputError(f"{n} document ids but only {i} embeddings; give one matrix per document")
            m = as_vectors(value, f"the embedding of document {ids[i]!r}", dim)
            dim = int(m.shape[1])
            mats.append(m)
        return mats

    pending: list[np.ndarray] | None = None
    c = 0
    while c < done:  # resume: the documents spilled before the crash must be the ones given now
        mats = take(c * chunk_size, min(n, (c + 1) * chunk_size))
        digest = vectors_digest(np.concatenate(mats), np.array([m.shape[0] for m in mats]))
        if c >= len(digests) or digests[c] != digest:
            state["spilled_chunks"] = c
            del digests[c:]
            for stale in ("codec_stats", "chunks"):
                state.pop(stale, None)
            save_state()
            pending = mats
            break
        c += 1
    position = c * chunk_size
    while position < n:
        end = min(n, position + chunk_size)
        mats = pending if pending is not None else take(position, end)
        pending = None
        c = position // chunk_size
        lengths = np.array([m.shape[0] for m in mats], dtype=np.int64)
        vectors = np.concatenate(mats)
        save_durable(directory, f"raw-{c:05d}.vectors", vectors)
        save_durable(directory, f"raw-{c:05d}.lengths", lengths)
        del digests[c:]
        digests.append(vectors_digest(vectors, lengths))
        state["spilled_chunks"] = c + 1
        state["dim"] = dim
        save_state()
        progress(end - position)
        position = end
    if next(iterator, None) is not None:
        raise InputError(f"more embeddings than document ids ({n}); give one matrix per document")
    return SpillSource(directory, ids, chunk_size, int(dim))


def vectors_digest(vectors: np.ndarray, doclens: np.ndarray) -> str:
    """SHA-256 of a block of documents' vectors (as stored, float16) and lengths: what a resumed build checks."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(doclens, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
    return h.hexdigest()


def is_random_access(embeddings: Any) -> bool:
    return hasattr(embeddings, "__len__") and hasattr(embeddings, "__getitem__") and not isinstance(embeddings, (str, bytes))


# --- the codec -------------------------------------------------------------------------------------------


def sample_positions(n: int, config: PlaidConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """The documents whose vectors train the codec (ColBERTv2's count), ascending; the first draw of the build's
    random generator, so that a resumed build can find them again."""
    rng = np.random.default_rng(config.seed) if rng is None else rng
    n_docs = colbert_sample_documents(n) if config.sample_fraction is None else max(1, round(config.sample_fraction * n))
    return np.sort(rng.choice(n, size=n_docs, replace=False))


def sample_digest(source: SequenceSource | SpillSource, config: PlaidConfig) -> str:
    """Digest of the vectors of the documents that train the codec."""
    h = hashlib.sha256()
    for i in sample_positions(len(source), config).tolist():
        m = source.get(int(i))
        h.update(vectors_digest(m, np.array([m.shape[0]])).encode())
    return h.hexdigest()


def train_codec(source: SequenceSource | SpillSource, config: PlaidConfig) -> tuple[ResidualCodec, dict[str, Any]]:
    """Sample documents as ColBERTv2 does, train centroids and residual buckets; return the codec and its stats."""
    n = len(source)
    rng = np.random.default_rng(config.seed)
    positions = sample_positions(n, config, rng)
    n_docs = len(positions)
    # Two passes over the sampled documents keep the sample bounded: lengths first, then only the rows that
    # k-means and the held-out part will use, drawn uniformly from all the sampled documents' vectors.
    lengths = np.array([source.length(int(i)) for i in positions], dtype=np.int64)
    total = int(lengths.sum())
    estimated = int(round(total / n_docs * n))
    n_centroids = config.n_centroids or colbert_n_centroids(estimated)
    heldout_n = min(config.max_heldout, max(1, int(config.heldout_fraction * total)))
    train_n = total - heldout_n
    if train_n < 1:
        raise InputError("too few token vectors to train a PLAID codec; give more documents or use a FlatIndex")
    n_centroids = min(n_centroids, train_n)
    keep = min(total, heldout_n + config.max_points_per_centroid * n_centroids)
    chosen = np.sort(rng.choice(total, size=keep, replace=False)) if keep < total else np.arange(total)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    owner = np.searchsorted(starts, chosen, side="right") - 1
    bounds = np.searchsorted(owner, np.arange(len(positions) + 1))
    sample = None
    row = 0
    for j in range(len(positions)):
        if bounds[j] == bounds[j + 1]:
            continue
        m = source.get(int(positions[j]))
        if sample is None:
            dim = int(m.shape[1])
            if (dim * config.nbits) % 8:
                raise ConfigError(f"dim {dim} times nbits {config.nbits} must be a multiple of 8 to pack residuals into bytes")
            sample = np.empty((keep, dim), dtype=np.float32)
        part = m[chosen[bounds[j] : bounds[j + 1]] - starts[j]]
        sample[row : row + part.shape[0]] = part
        row += part.shape[0]
    rng.shuffle(sample)  # in place: the held-out part and the k-means part are views, not copies
    heldout = sample[:heldout_n]
    train = sample[heldout_n:]
    codec = replace(ResidualCodec.train(train, heldout, n_centroids, config.nbits, config.kmeans_niters, config.seed),
                    unit_norm=True)
    decoded = codec.decompress(*codec.compress(heldout))
    stats = {
        "sample_documents": int(n_docs),
        "sample_vectors": int(total),
        "kmeans_vectors": int(train.shape[0]),
        "heldout_vectors": int(heldout.shape[0]),
        "estimated_token_vectors": estimated,
        "heldout_mse": float(((decoded - heldout) ** 2).sum(axis=1).mean()),
    }
    return codec, stats


def load_codec_from(directory: Path, nbits: int) -> ResidualCodec:
    """The codec a (resumed) build staged in ``directory``; builds always decode to unit vectors."""
    centroids = load_npy(directory / "centroids.npy").astype(np.float32)
    cutoffs = load_npy(directory / "bucket_cutoffs.npy")
    weights = load_npy(directory / "bucket_weights.npy")
    return ResidualCodec(centroids, cutoffs, weights, nbits, unit_norm=True)


# --- the build -------------------------------------------------------------------------------------------


def staging_path(final: Path) -> Path:
    return final.parent / f".{final.name}.plaid-build"


def check_target(final: Path, overwrite: bool) -> None:
    if not final.exists():
        return
    if not overwrite:
        raise IndexFormatError(f"{final} already exists; pass overwrite=True (--overwrite) or choose another path")
    if not final.is_dir():
        raise IndexFormatError(f"{final} exists and is not a directory; refusing to replace it with an index")
    if not (final / MANIFEST).exists() and any(final.iterdir()):
        raise IndexFormatError(f"{final} is a non-empty directory without a {MANIFEST}; refusing to overwrite what is not an index")


def fingerprint(ids: list[str], config: PlaidConfig, encoder: dict | None, codec: ResidualCodec | None, random_access: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([config_to_dict(config), encoder, random_access, FORMAT_VERSION]).encode())
    for doc_id in ids:
        h.update(doc_id.encode("utf-8"))
        h.update(b"\0")
    if codec is not None:
        for a in (codec.centroids, codec.cutoffs, codec.weights):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def manifest_fields(*, dim: int, config: PlaidConfig, encoder: dict | None, codec: ResidualCodec, codec_stats: dict,
                    chunks: list[dict], deleted: str | None, n_deleted: int, deleted_tokens: int, generation: int) -> dict[str, Any]:
    stored_docs = sum(c["documents"] for c in chunks)
    stored_tokens = sum(c["token_vectors"] for c in chunks)
    return {
        "encoder": encoder,
        "similarity": "cosine",
        "dim": dim,
        "nbits": codec.nbits,
        "n_centroids": codec.n_centroids,
        "unit_norm": codec.unit_norm,
        "config": config_to_dict(config),
        "codec": codec_stats,
        "chunks": chunks,
        "deleted": deleted,
        "generation": generation,
        "counts": {
            "documents": stored_docs - n_deleted,
            "token_vectors": stored_tokens - deleted_tokens,
            "stored_documents": stored_docs,
            "stored_token_vectors": stored_tokens,
            "deleted_documents": n_deleted,
        },
    }


def build_index(final: Path, doc_ids: Sequence[str], embeddings: Iterable, *, config: PlaidConfig, encoder: dict | None,
                overwrite: bool, show_progress: bool | None, codec: ResidualCodec | None = None,
                map_chunks: ChunkMapper | None = None) -> None:
    """Build (or resume building) the PLAID index of ``embeddings`` at ``final``; see the module notes.

    ``codec``: use these centroids and buckets instead of training them (used by rebuilds and tests).
    ``map_chunks``: how to run the compression of the chunks (see :data:`ChunkMapper`; default: here, one after the
    other). Chunks are written and recorded in order whichever runs them, and the index is the same.
    """
    ids = check_new_ids(doc_ids)
    if not ids:
        raise InputError("cannot build an index of an empty corpus: no document ids were given")
    encoder = check_encoder(encoder)
    check_target(final, overwrite)
    random_access = is_random_access(embeddings)
    if random_access and len(embeddings) != len(ids):
        raise InputError(f"{len(ids)} document ids but {len(embeddings)} embeddings; give one matrix per document")
    final.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(final):  # a second build of this path waits instead of sharing the staging folder
        _build_locked(final, ids, embeddings, config=config, encoder=encoder, show_progress=show_progress, codec=codec,
                      random_access=random_access, map_chunks=map_chunks)


def _build_locked(final: Path, ids: list[str], embeddings: Iterable, *, config: PlaidConfig, encoder: dict | None,
                  show_progress: bool | None, codec: ResidualCodec | None, random_access: bool,
                  map_chunks: ChunkMapper | None = None) -> None:
    staging = staging_path(final)
    key = fingerprint(ids, config, encoder, codec, random_access)
    state: dict[str, Any] = {}
    if (staging / STATE).exists():
        try:
            state = json.loads((staging / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
    if state.get("fingerprint") != key:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        state = {"fingerprint": key}

    def save_state() -> None:
        write_json_atomic(staging / STATE, state)

    save_state()
    from ...encoders.batching import progress as progress_bar

    n = len(ids)
    cs = config.chunk_size
    n_chunks = (n + cs - 1) // cs
    # One bar for one stage: compressing the documents. Consuming an iterable of embeddings (the spill) draws no
    # bar, because whoever produces the embeddings (an encoder) shows that stage's progress.
    if random_access:
        source: SequenceSource | SpillSource = SequenceSource(embeddings, ids)
    else:
        source = spill(staging, ids, embeddings, cs, state, save_state, lambda _: None)
    if random_access and (state.get("codec_stats") is not None or state.get("chunks")):
        _check_resumed(source, config, codec is None, state, save_state)
    with progress_bar(n, "Compressing PLAID index", show_progress, unit="doc") as bar:
        if state.get("codec_stats") is None:
            if codec is None:
                codec, stats = train_codec(source, config)
                if random_access:
                    stats["sample_digest"] = sample_digest(source, config)
            else:
                stats = {"given": True}
            for name, array in codec_arrays(codec).items():
                save_durable(staging, name, array)
            state["codec_stats"] = stats
            state["dim"] = codec.dim
            save_state()
        codec = load_codec_from(staging, config.nbits)
        dim = codec.dim
        source.dim = dim

        chunks: list[dict] = state.setdefault("chunks", [])
        bar.update(sum(c["documents"] for c in chunks))  # compressed before an interrupted build
        read: deque = deque()  # (chunk, first, end, digest, token vectors) of the blocks handed to the mapper

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for c in range(len(chunks), n_chunks):
                a, b = c * cs, min(n, (c + 1) * cs)
                vectors, doclens = source.block(a, b)
                read.append((c, a, b, vectors_digest(vectors, doclens), int(doclens.sum())))
                yield vectors, doclens
                del vectors, doclens  # before the next block is read

        mapper = itertools.starmap if map_chunks is None else map_chunks
        for arrays in mapper(functools.partial(compress_chunk, codec), blocks()):
            c, a, b, digest, tokens = read.popleft()
            write_chunk(staging, chunk_name(c), arrays, ids[a:b])
            chunks.append({"name": chunk_name(c), "documents": b - a, "token_vectors": tokens,
                           "first_document": a, "mse": float(arrays["_mse"]), "digest": digest})
            save_state()
            bar.update(b - a)
            del arrays

        for path in staging.glob("raw-*.npy"):
            path.unlink()
        arrays_entries = finish_entries(staging, [c["name"] for c in chunks])
        write_manifest(staging, KIND, FORMAT_VERSION, arrays_entries,
                       **manifest_fields(dim=dim, config=config, encoder=encoder, codec=codec, codec_stats=state["codec_stats"],
                                         chunks=chunks, deleted=None, n_deleted=0, deleted_tokens=0, generation=0))
        (staging / STATE).unlink()
        fsync_path(staging)
        publish(staging, final)


def _check_resumed(source: SequenceSource, config: PlaidConfig, trained: bool, state: dict,
                   save_state: Callable[[], None]) -> None:
    """Before a resumed build trusts what it staged: the codec's sample and every finished chunk must come from the
    vectors given now (same ids, other vectors: start over from the first difference)."""
    stats = state.get("codec_stats")
    if stats is not None and trained and stats.get("sample_digest") != sample_digest(source, config):
        state.pop("codec_stats", None)
        state.pop("chunks", None)
        save_state()
        return
    chunks = state.get("chunks") or []
    for number, chunk in enumerate(chunks):
        a = int(chunk["first_document"])
        vectors, doclens = source.block(a, a + int(chunk["documents"]))
        if chunk.get("digest") != vectors_digest(vectors, doclens):
            del chunks[number:]
            save_state()
            return


CHUNK_ARRAYS = ("codes", "residuals", "doclens", "ivf_docs", "ivf_offsets", "ids_bytes", "ids_offsets")
OPTIONAL_CHUNK_ARRAYS = ("scales",)  # unit-length codecs (format 2) only
CODEC_ARRAYS = ("centroids", "bucket_cutoffs", "bucket_weights")


def array_entry(directory: Path, name: str) -> dict[str, Any]:
    """The manifest entry of an existing ``name.npy`` (checksum computed from the file)."""
    path = directory / f"{name}.npy"
    array = load_npy(path, mmap=True)
    return {"file": path.name, "dtype": array.dtype.str, "shape": list(array.shape), "bytes": path.stat().st_size,
            "sha256": file_sha256(path)}


def finish_entries(directory: Path, chunk_names: list[str]) -> dict[str, dict]:
    entries = {name: array_entry(directory, name) for name in CODEC_ARRAYS}
    for chunk in chunk_names:
        for key in CHUNK_ARRAYS + OPTIONAL_CHUNK_ARRAYS:
            if key in CHUNK_ARRAYS or (directory / f"{chunk}.{key}.npy").exists():
                entries[f"{chunk}.{key}"] = array_entry(directory, f"{chunk}.{key}")
    return entries
