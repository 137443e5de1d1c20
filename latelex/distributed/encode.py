"""Encoding a collection on Ray workers, chunk by chunk, resumably: :class:`RayEncoder`.

A :class:`RayEncoder` wraps a ColBERT or SPLADE encoder and has the interface a build uses (``spec()``, ``config``,
``tokenizer``, ``encode_queries``, ``encode_documents``, and everything else delegated to the encoder), so that
:meth:`Retriever.build(..., ray=...) <latelex.search.retriever.Retriever.build>` builds every kind that has an
encoder exactly as in one process; only ``encode_documents`` runs elsewhere:

1. the texts are cut into chunks of ``RayConfig.chunk_size`` documents, each named by a fingerprint: SHA-256 of the
   encoder spec and the chunk's texts;
2. chunks recorded as done in ``work_dir`` under that fingerprint are reused (a resumed run); the others go to a
   pool of encoder actors, one model per actor, at most two chunks queued per actor, so a worker never holds more
   than two chunks of texts and the driver never holds the encoded collection;
3. as each chunk's vectors come back they are written to ``work_dir/chunks/`` as plain ``.npy`` arrays (never
   pickles; ColBERT: one float16 (T, dim) matrix and the documents' lengths; SPLADE: CSR indptr / indices /
   values), each fsynced and renamed into place, and then the chunk is appended to the journal ``state.jsonl``
   (fsynced): a crash leaves finished chunks recorded and a half-written one unrecorded;
4. the result is a lazy, memory-mapped sequence over the chunk files (ColBERT: :class:`ChunkedMatrices`, float32
   tensors as the encoder gives them) or a :class:`~latelex.types.SparseBatch` assembled from them (SPLADE).

**How the model reaches the actors.** A torch encoder is sent as it is: put once in Ray's object store
(``ray.put``, moved to the CPU first) and handed to every actor. That works for every torch encoder, also one that
exists only in memory (trained, given adapters, built with ``from_backbone``) and one whose folder exists only on
the driver's machine, and rebuilding from ``spec()`` would silently load other weights in the first case and fail
in the second. An encoder on the onnx backend holds an onnxruntime session, which cannot travel: its actors rebuild
it from ``spec()`` (the model must then be readable at the same path, or in the Hugging Face cache, on every
node). Objects travel between Ray processes by Ray's serialisation; nothing read from disk is ever unpickled.

**Failures.** Actors are created with ``max_restarts`` and ``max_task_retries``: when a worker process dies (killed,
out of memory, a lost node) Ray restarts it and retries its chunks (encoding is idempotent). When the restarts run
out, the error is one line and every chunk finished so far stays recorded: running the same build again resumes.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError, LatelexError
from ..fsio import fsync_path
from ..npyio import load_npy
from .cluster import ClusterError, RayConfig, connect, connected, worker_count

logger = logging.getLogger(__name__)

__all__ = ["ChunkStore", "ChunkedMatrices", "RayEncoder", "ray_encoding", "work_dir_for"]

#: Bumped when the chunk files change meaning; part of every chunk's fingerprint.
CHUNK_FORMAT = "latelex-ray-chunk/1"
JOURNAL = "state.jsonl"
#: Chunks queued on one actor at a time: one encoding, one waiting, so that an actor never idles between chunks.
PER_WORKER = 2
#: Seconds the encoder actors have to start and load their model.
WORKER_START_TIMEOUT = 900.0


def work_dir_for(final: Path) -> Path:
    """Where a Ray build of ``final`` keeps its encoded chunks: ``.<name>.ray-chunks`` beside it."""
    return final.parent / f".{final.name}.ray-chunks"


# ---------------------------------------------------------------------- the chunk store


class ChunkStore:
    """Encoded chunks in ``directory``: ``chunks/<fingerprint>.<part>.npy`` files and the journal ``state.jsonl``,
    one JSON line per finished chunk (appended and fsynced; a torn last line is ignored). The journal is
    append-only so that recording a chunk costs the same at the millionth chunk as at the first."""

    def __init__(self, directory: Path, spec: dict[str, Any]) -> None:
        self.directory = directory
        self.files = directory / "chunks"
        self.files.mkdir(parents=True, exist_ok=True)
        self._salt = (CHUNK_FORMAT + "\0" + json.dumps(spec, sort_keys=True, separators=(",", ":"))).encode()
        self.family = spec["family"]
        self.records: dict[str, dict[str, Any]] = {}
        journal = directory / JOURNAL
        if journal.exists():
            data = journal.read_bytes()
            for line in data.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash
                if isinstance(record, dict) and isinstance(record.get("chunk"), str):
                    self.records[record["chunk"]] = record
            if data and not data.endswith(b"\n"):
                with open(journal, "ab") as f:  # end the torn line, so the next record starts on its own
                    f.write(b"\n")
        else:
            journal.touch()
            fsync_path(directory)

    def key(self, texts: Sequence[str]) -> str:
        """The fingerprint of a chunk: SHA-256 of the chunk format, the encoder spec and the texts."""
        h = hashlib.sha256(self._salt)
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return h.hexdigest()

    def path(self, key: str, part: str) -> Path:
        return self.files / f"{key[:32]}.{part}.npy"

    def parts(self) -> tuple[str, ...]:
        return ("vectors", "lengths") if self.family == "colbert" else ("indptr", "indices", "values")

    def has(self, key: str, documents: int) -> bool:
        """Whether the chunk ``key`` of ``documents`` texts is recorded and its files are whole."""
        record = self.records.get(key)
        if record is None or record.get("documents") != documents:
            return False
        try:
            shapes = {p: load_npy(self.path(key, p), mmap=True).shape for p in self.parts()}
        except (OSError, ValueError):
            return False
        if self.family == "colbert":
            return shapes["lengths"] == (documents,) and shapes["vectors"][0] == record.get("rows")
        return (shapes["indptr"] == (documents + 1,) and shapes["indices"] == (record.get("rows"),)
                and shapes["values"] == shapes["indices"])

    def save(self, key: str, arrays: dict[str, np.ndarray], documents: int) -> None:
        """Write a chunk's arrays durably, then record it in the journal."""
        for part in self.parts():
            _save_npy(self.path(key, part), arrays[part])
        fsync_path(self.files)
        rows = int(arrays["vectors"].shape[0] if self.family == "colbert" else arrays["indices"].shape[0])
        record = {"chunk": key, "documents": int(documents), "rows": rows}
        with open(self.directory / JOURNAL, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[key] = record

    def matrices(self, keys: Sequence[str]) -> "ChunkedMatrices":
        return ChunkedMatrices([(self.path(k, "vectors"), self.path(k, "lengths")) for k in keys])

    def sparse(self, keys: Sequence[str], vocab_size: int) -> Any:
        from ..types import SparseBatch

        indptrs, indices, values = [np.zeros(1, dtype=np.int64)], [], []
        base = 0
        for key in keys:
            indptr = load_npy(self.path(key, "indptr")).astype(np.int64)
            indptrs.append(indptr[1:] + base)
            base += int(indptr[-1])
            indices.append(load_npy(self.path(key, "indices")).astype(np.int32, copy=False))
            values.append(load_npy(self.path(key, "values")).astype(np.float32, copy=False))
        return SparseBatch(np.concatenate(indptrs), np.concatenate(indices or [np.zeros(0, np.int32)]),
                           np.concatenate(values or [np.zeros(0, np.float32)]), int(vocab_size))


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as ``path`` (no pickles), written to a temporary name, fsynced and renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ChunkedMatrices(Sequence):
    """The documents' (L_i, dim) token matrices, read from chunk files: random access by position, float32 torch
    tensors (as an encoder returns them) made from the memory-mapped float16 arrays, one chunk mapped at a time.
    Only the documents' lengths are held in memory."""

    def __init__(self, parts: Sequence[tuple[Path, Path]]) -> None:
        self._vector_files = [v for v, _ in parts]
        self._offsets = []
        starts = [0]
        for _, lengths_file in parts:
            lengths = load_npy(lengths_file).astype(np.int64)
            offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            self._offsets.append(offsets)
            starts.append(starts[-1] + int(lengths.shape[0]))
        self._starts = starts
        self._mapped: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def _chunk(self, c: int) -> np.ndarray:
        if self._mapped is None or self._mapped[0] != c:
            self._mapped = (c, load_npy(self._vector_files[c], mmap=True))
        return self._mapped[1]

    def _matrix(self, c: int, j: int) -> Any:
        import torch

        offsets = self._offsets[c]
        block = self._chunk(c)[offsets[j] : offsets[j + 1]]
        return torch.from_numpy(np.asarray(block, dtype=np.float32))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"document {i} of {len(self)}")
        c = bisect.bisect_right(self._starts, i) - 1
        return self._matrix(c, i - self._starts[c])

    def __iter__(self) -> Iterator[Any]:
        for c in range(len(self._offsets)):
            for j in range(self._starts[c + 1] - self._starts[c]):
                yield self._matrix(c, j)


# ---------------------------------------------------------------------- the actors


class LatelexEncoderWorker:
    """One model in one Ray actor: encodes a chunk of document texts into plain arrays (made an actor class by
    :func:`_actor_class`)."""

    def __init__(self, model: Any, spec: dict[str, Any], device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        if model is None:  # an encoder that cannot travel (onnx backend) is rebuilt from its spec
            from ..encoders import encoder_from_spec

            model = encoder_from_spec(spec, device=device)
        elif device != "cpu":
            model.to(device)
        self.encoder = model
        self.family = spec["family"]

    def ready(self) -> int:
        """The actor's process id, once its model is loaded."""
        return os.getpid()

    def encode(self, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
        out = self.encoder.encode_documents(texts, batch_size=batch_size, show_progress=False)
        if self.family == "colbert":
            import torch

            lengths = np.array([m.shape[0] for m in out], dtype=np.int64)
            with np.errstate(over="ignore"):  # beyond float16's range: caught by the engine's own check
                vectors = torch.cat(list(out)).float().numpy().astype(np.float16)
            return {"vectors": vectors, "lengths": lengths}
        return {"indptr": np.asarray(out.indptr, dtype=np.int64), "indices": np.asarray(out.indices, dtype=np.int32),
                "values": np.asarray(out.values, dtype=np.float32)}


_REMOTE: dict[str, Any] = {}


def _actor_class(ray: Any) -> Any:
    if "actor" not in _REMOTE:
        _REMOTE["actor"] = ray.remote(LatelexEncoderWorker)
    return _REMOTE["actor"]


def _apply(fn: Callable, *args: Any) -> Any:
    return fn(*args)


def _apply_task(ray: Any) -> Any:
    if "apply" not in _REMOTE:
        _REMOTE["apply"] = ray.remote(_apply)
    return _REMOTE["apply"]


def _root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, unwrapped from Ray's own."""
    seen = 0
    while seen < 8 and isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause  # type: ignore[attr-defined]
        seen += 1
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _raised_line(exc: BaseException) -> str:
    """The ``SomeError: message`` line of a remote traceback that Ray folded into its own message (an actor whose
    ``__init__`` raised), else the message's first line."""
    import re

    for line in reversed(str(exc).splitlines()):
        line = line.strip()
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*: ", line):
            return line
    return _first_line(exc)


# ---------------------------------------------------------------------- the encoder


class RayEncoder:
    """An encoder whose ``encode_documents`` runs on Ray workers, resumably (see the module notes); everything
    else is the wrapped ``encoder``'s. ``work_dir`` keeps the encoded chunks (removed by whoever made it, once the
    index is published). ``last_run``: ``{"chunks", "resumed", "encoded", "documents"}`` of the latest call."""

    def __init__(self, encoder: Any, config: RayConfig, work_dir: str | os.PathLike) -> None:
        if encoder is None or not callable(getattr(encoder, "spec", None)):
            raise InputError("RayEncoder wraps a ColBERT or Splade encoder, not None")
        self.encoder = encoder
        self.ray_config = config
        self.work_dir = Path(work_dir).expanduser().resolve()
        self.worker_pids: list[int] = []
        self.last_run: dict[str, int] | None = None
        self._actors: list[Any] = []
        self._model_ref: Any = None

    # --- the encoder's interface -------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The wrapped encoder's spec: an index built through Ray records the same encoder as one built without."""
        return self.encoder.spec()

    @property
    def family(self) -> str:
        return self.encoder.spec()["family"]

    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    def encode_queries(self, texts: Sequence[str], **options: Any) -> Any:
        """Queries are encoded here, by the wrapped encoder."""
        return self.encoder.encode_queries(texts, **options)

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("encoder")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"RayEncoder({self.encoder!r}, {self.ray_config!r})"

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool | None = None,
                         on_batch: Callable[[int], None] | None = None) -> Any:
        """Encode ``texts`` on the cluster, reusing the chunks ``work_dir`` already holds. ColBERT: a lazy sequence
        of float32 (L_i, dim) tensors over memory-mapped chunk files; SPLADE: a SparseBatch. ``on_batch`` advances
        by each chunk's documents as it is written (resumed chunks at once)."""
        from ..encoders.batching import batch_progress

        from ..encoders.colbert import check_texts

        texts = texts if isinstance(texts, str) else list(texts)
        check_texts(texts, "document")  # here, so that a bad text is named by its place in the whole collection
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, not {batch_size}")
        family = self.family
        store = ChunkStore(self.work_dir, self.spec())
        size = self.ray_config.chunk_size
        spans = [(a, min(len(texts), a + size)) for a in range(0, len(texts), size)]
        keys = [store.key(texts[a:b]) for a, b in spans]
        todo = [i for i, (a, b) in enumerate(spans) if not store.has(keys[i], b - a)]
        resumed = len(spans) - len(todo)
        with batch_progress(len(texts), "Encoding documents on Ray", show_progress, on_batch) as advance:
            if resumed:
                pending = set(todo)
                done = sum(b - a for i, (a, b) in enumerate(spans) if i not in pending)
                logger.info("resumed %d of %d chunks (%d documents) from %s; %d chunks to encode",
                            resumed, len(spans), done, self.work_dir, len(todo))
                advance(done)
            if todo:
                self._encode_on_workers(texts, spans, keys, todo, store, batch_size, advance)
        self.last_run = {"chunks": len(spans), "resumed": resumed, "encoded": len(todo), "documents": len(texts)}
        if family == "colbert":
            return store.matrices(keys)
        return store.sparse(keys, self.encoder.vocab_size)

    # --- compressing on the cluster ----------------------------------------------------------------------

    def map_chunks(self, fn: Callable, items: Iterable[tuple]) -> Iterator[Any]:
        """``fn(*args)`` for each ``args`` of ``items``, run as Ray tasks (a few at a time, so that only that many
        argument blocks are held), results yielded in order: how a PLAID build compresses its chunks in parallel.
        ``fn`` goes to the object store once."""
        ray, _ = connect(self.ray_config)
        self._stop_workers()  # their CPUs go to the tasks
        task = _apply_task(ray).options(num_cpus=1, max_retries=max(self.ray_config.max_restarts, 0))
        window = max(2, worker_count(ray, self.ray_config))
        fn_ref = ray.put(fn)
        pending: deque = deque()
        for args in items:
            pending.append(task.remote(fn_ref, *args))
            if len(pending) >= window:
                yield self._get(ray, pending.popleft(), "compressing a chunk")
        while pending:
            yield self._get(ray, pending.popleft(), "compressing a chunk")

    def close(self) -> None:
        """Stop the encoder actors and release the model in the object store."""
        self._stop_workers()
        self._model_ref = None

    # --- internals ----------------------------------------------------------------------------------------

    def _save_chunk(self, store: ChunkStore, key: str, arrays: dict[str, np.ndarray], documents: int) -> None:
        store.save(key, arrays, documents)

    def _encode_on_workers(self, texts: list[str], spans: list[tuple[int, int]], keys: list[str], todo: list[int],
                           store: ChunkStore, batch_size: int, advance: Callable[[int], None]) -> None:
        ray, _ = connect(self.ray_config)
        actors = self._start_workers(ray, min(worker_count(ray, self.ray_config), len(todo)))
        queue = deque(todo)
        inflight: dict[Any, tuple[int, int]] = {}
        load = [0] * len(actors)
        finished = len(spans) - len(todo)

        def submit() -> None:
            while queue:
                w = min(range(len(actors)), key=load.__getitem__)
                if load[w] >= PER_WORKER:
                    return
                i = queue.popleft()
                a, b = spans[i]
                inflight[actors[w].encode.remote(texts[a:b], batch_size)] = (i, w)
                load[w] += 1

        try:
            submit()
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                ref = ready[0]
                i, w = inflight.pop(ref)
                load[w] -= 1
                a, b = spans[i]
                arrays = self._get(ray, ref, f"encoding chunk {i + 1} of {len(spans)}",
                                   f"; {finished} finished chunks are kept in {self.work_dir}: run the same build "
                                   f"again to resume")
                del ref
                self._save_chunk(store, keys[i], arrays, b - a)
                del arrays
                finished += 1
                advance(b - a)
                submit()
        finally:
            self._stop_workers()

    def _start_workers(self, ray: Any, n: int) -> list[Any]:
        config = self.ray_config
        model_ref = self._ship_model(ray)
        retries = config.max_restarts
        actor = _actor_class(ray).options(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
                                          max_restarts=retries, max_task_retries=retries)
        self._actors = [actor.remote(model_ref, self.spec(), config.device, config.threads) for _ in range(n)]
        try:
            self.worker_pids = ray.get([a.ready.remote() for a in self._actors], timeout=WORKER_START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self._stop_workers()
            raise ClusterError(
                f"{n} Ray encoder workers did not start within {WORKER_START_TIMEOUT:g} s; the cluster may lack the "
                f"{config.cpus_per_worker:g} CPUs and {config.gpus_per_worker:g} GPUs each asks for (`ray status` "
                f"shows what it has): ask for fewer workers") from None
        except ray.exceptions.RayError as exc:
            self._stop_workers()
            cause = _root_cause(exc)
            if isinstance(cause, LatelexError):
                raise cause from None
            raise ClusterError(f"a Ray encoder worker could not start: {_raised_line(cause)}") from None
        logger.info("%d Ray encoder workers started (%s, %g CPUs%s each)", n, config.device, config.cpus_per_worker,
                    f", {config.gpus_per_worker:g} GPUs" if config.gpus_per_worker else "")
        return self._actors

    def _ship_model(self, ray: Any) -> Any:
        """The encoder in the object store (on the CPU), or None for an onnx encoder that actors rebuild."""
        if self._model_ref is None and getattr(self.encoder, "backend", "torch") == "torch":
            device = getattr(self.encoder, "device", None)
            moved = device is not None and str(device) != "cpu"
            if moved:
                self.encoder.to("cpu")
            try:
                self._model_ref = ray.put(self.encoder)
            finally:
                if moved:
                    self.encoder.to(device)
        return self._model_ref

    def _stop_workers(self) -> None:
        if not self._actors:
            return
        import ray

        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors = []

    def _get(self, ray: Any, ref: Any, what: str, hint: str = "") -> Any:
        """``ray.get(ref)``; a failure is the task's own exception (a latelex error stays one line) or a
        :class:`ClusterError` when the worker died more times than it may be restarted."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = _root_cause(exc)
            if isinstance(cause, Exception) and cause is not exc:
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:  # the actor or its node died past max_restarts, an object was lost
            raise ClusterError(f"a Ray worker failed while {what} ({_first_line(exc).rstrip('.')}; it was restarted "
                               f"at most {self.ray_config.max_restarts} times){hint}") from None


# ---------------------------------------------------------------------- a build on Ray


@contextlib.contextmanager
def ray_encoding(final: str | os.PathLike, encoder: Any, ray: Any) -> Iterator[RayEncoder]:
    """For a build that publishes at ``final``: connect to the cluster ``ray`` names (a :class:`RayConfig`, an
    address, ``True``) and yield ``encoder`` wrapped in a :class:`RayEncoder` whose chunks go to
    :func:`work_dir_for` ``(final)``. When the block succeeds the chunks are removed; when it fails they stay, so
    that the same build run again resumes. Ray is shut down at the end if this started it."""
    config = RayConfig.of(ray)
    if config is None:
        raise InputError("ray_encoding needs a Ray configuration (ray=True, an address or a RayConfig)")
    if encoder is None:
        raise InputError("ray= spreads the encoding over Ray workers, and a bm25 index has no encoder; build it "
                         "without ray")
    final = Path(final).expanduser().resolve()
    work_dir = work_dir_for(final)
    with connected(config):
        wrapped = RayEncoder(encoder, config, work_dir)
        try:
            yield wrapped
        finally:
            wrapped.close()
    shutil.rmtree(work_dir, ignore_errors=True)
