"""Late-interaction systems behind one small interface, for the PLAID and late-interaction benchmarks.

Every system is a :class:`PeerIndex`: ``build`` it on per-document token matrices, ``search`` it with
per-query token matrices, ask it for its ``bytes_on_disk`` and for single-query ``latencies`` with a given
number of threads. Two families:

* latelex's own engines, in this process: :class:`LatelexFlat` (exact MaxSim, the reference),
  :class:`LatelexIvfPq` (ColBERT v1 end-to-end) and :class:`LatelexPlaid` (when ``latelex.index.plaid``
  exists). :func:`latelex_systems` lists them.
* peers (PyLate's PLAID with its FastPlaid and Stanford backends, PyLate's Voyager HNSW index, fast-plaid on
  its own). They need other pins than latelex (PyLate pins sentence-transformers 5.3.0 and fast-plaid, and
  fast-plaid ships one wheel per torch version, none for latelex's torch), so they live in a separate
  virtual environment and run in a worker process, ``bench/plaid_peer_worker.py``, driven by
  :class:`SubprocessPeer`: vectors travel as ``.npy`` files, commands and answers as JSON lines, and build
  time and latencies are measured inside the worker, so IPC is never timed. :func:`available_peers` lists
  each peer with a factory, or with the reason it cannot run here.

The peers' environment is the Python named by ``$LATELEX_PEERS_PYTHON``, else the first of
:data:`PEER_PYTHONS` that exists. It was made like this (torch 2.11 is the newest torch fast-plaid has a
wheel for; PyPI's torch 2.11 is the CUDA build, which also runs on the CPU)::

    python3.11 -m venv /tmp/peers-venv-t211
    /tmp/peers-venv-t211/bin/pip install torch==2.11.0 "pylate[voyager]==1.6.0" "voyager==2.1.0" pandas

voyager 2.2 changed ``add_items`` to take one 2-D array, which PyLate 1.6.0's Voyager index does not pass.

This module imports only the standard library and numpy at load time: the worker imports it too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "plaid_peer_worker.py"
#: Candidate interpreters of the peers' environment, first existing one wins (after $LATELEX_PEERS_PYTHON).
PEER_PYTHONS = ("/tmp/peers-venv-t211/bin/python", "/tmp/peers-venv/bin/python")
#: The peers the worker knows, in table order.
PEER_NAMES = ("pylate-plaid (fast-plaid backend)", "pylate-plaid (stanford backend)", "pylate-voyager (HNSW)", "fast-plaid")
#: Seconds a worker may take to answer one command (builds included).
WORKER_TIMEOUT_S = 3600
#: Seconds one smoke test in :func:`available_peers` may take (the Stanford backend compiles C++ first).
PROBE_TIMEOUT_S = 600
#: PLAID bits per residual dimension used by every PLAID-style system here (ColBERTv2's default).
PLAID_NBITS = 2
#: Search settings tried after each system's defaults by ``bench_late_interaction.py --sweep``, from more
#: accurate to faster, so that systems can be compared at equal recall rather than only at their defaults.
#: latelex plaid: ColBERT's settings for k <= 100 and k > 100; latelex ivfpq: fewer nearest token vectors
#: per query token (ColBERT v1's default is 1024); PyLate Voyager: fewer neighbours per query token
#: (``k_token``, default 100) and a smaller HNSW search list (``ef_search``, default 200).
SWEEPS: dict[str, list[dict]] = {
    "latelex plaid (nbits=2)": [
        {"ncells": 4, "centroid_score_threshold": 0.4, "ndocs": 4096},
        {"ncells": 2, "centroid_score_threshold": 0.45, "ndocs": 1024},
    ],
    "latelex ivfpq (ColBERT v1)": [{"faiss_depth": 256}, {"faiss_depth": 64}, {"faiss_depth": 16}],
    "pylate-voyager (HNSW)": [
        {"k_token": 32, "ef_search": 100},
        {"k_token": 10, "ef_search": 40},
        {"k_token": 4, "ef_search": 20},
    ],
}


# --- the interface --------------------------------------------------------------------------------------

class PeerIndex:
    """One late-interaction system. Subclasses set ``name`` and implement build, search, bytes_on_disk."""

    name: str = "?"
    #: Search settings passed to every search (set by :meth:`configure`); empty: the system's defaults.
    settings: dict = {}

    def build(self, doc_ids: Sequence[str], doc_vectors: Sequence[np.ndarray]) -> float:
        """Index ``doc_vectors`` (one float32 (L_i, dim) matrix per document, named by ``doc_ids``);
        returns the build time in seconds, measured where the index lives."""
        raise NotImplementedError

    def search(self, query_vectors: Sequence[np.ndarray], k: int) -> list[list[str]]:
        """The ids of the ``k`` best documents for each (Lq_i, dim) query, best first."""
        raise NotImplementedError

    def bytes_on_disk(self) -> int:
        """Bytes of every file the index wrote."""
        raise NotImplementedError

    def add(self, doc_ids: Sequence[str], doc_vectors: Sequence[np.ndarray]) -> float:
        """Add documents to the built index; returns the time of the add, measured where the index lives.
        Only the PyLate PLAID peers implement it (``bench/bench_updates.py``)."""
        raise NotImplementedError(f"{self.name} has no add here")

    def remove(self, doc_ids: Sequence[str]) -> float:
        """Remove documents from the index; returns the time taken, measured where the index lives."""
        raise NotImplementedError(f"{self.name} has no remove here")

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` threads for searching (default: torch's intra-op threads)."""
        import torch

        torch.set_num_threads(threads)

    def configure(self, **settings) -> None:
        """Search with these settings from now on (the names of :data:`SWEEPS`), or the defaults when empty."""
        if settings:
            raise ValueError(f"{self.name} takes no search settings")

    def latencies(self, query_vectors: Sequence[np.ndarray], k: int, threads: int, warmup: int = 2) -> list[float]:
        """Seconds of one ``search([q], k)`` call per query, with ``threads`` threads, after ``warmup`` calls."""
        self.set_threads(threads)
        for q in list(query_vectors)[:warmup]:
            self.search([q], k)
        out = []
        for q in query_vectors:
            start = time.perf_counter()
            self.search([q], k)
            out.append(time.perf_counter() - start)
        return out

    def close(self) -> None:
        """Release the index and its files."""


def directory_bytes(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# --- latelex's own engines --------------------------------------------------------------------------------

class _LatelexEngine(PeerIndex):
    """A latelex index built into a temporary directory and searched in this process."""

    def __init__(self, workdir: str | os.PathLike | None = None):
        self._root = Path(tempfile.mkdtemp(prefix="li-", dir=workdir))
        self.index = None

    def _build(self, path: Path, doc_ids: Sequence[str], doc_vectors: Sequence[np.ndarray]):
        raise NotImplementedError

    def build(self, doc_ids, doc_vectors) -> float:
        start = time.perf_counter()
        self.index = self._build(self._root / "index", list(doc_ids), doc_vectors)
        return time.perf_counter() - start

    def search(self, query_vectors, k):
        return [[h.doc_id for h in hits] for hits in self.index.search(list(query_vectors), k=k, **self.settings)]

    def configure(self, **settings) -> None:
        self.settings = dict(settings)

    def bytes_on_disk(self) -> int:
        return directory_bytes(self._root / "index")

    def close(self) -> None:
        self.index = None
        shutil.rmtree(self._root, ignore_errors=True)


class LatelexFlat(_LatelexEngine):
    """latelex FlatIndex: float16 vectors, exact MaxSim over every document."""

    name = "latelex flat (exact)"

    def _build(self, path, doc_ids, doc_vectors):
        from latelex.index.flat import FlatIndex

        return FlatIndex.build(path, doc_ids, doc_vectors)


class LatelexIvfPq(_LatelexEngine):
    """latelex IvfPqIndex: ColBERT v1 end-to-end retrieval with its default settings."""

    name = "latelex ivfpq (ColBERT v1)"

    def __init__(self, workdir=None, config=None):
        super().__init__(workdir)
        self.config = config

    def _build(self, path, doc_ids, doc_vectors):
        from latelex.index.ivfpq import IvfPqIndex

        return IvfPqIndex.build(path, doc_ids, doc_vectors, config=self.config, show_progress=False)

    def set_threads(self, threads: int) -> None:
        import faiss
        import torch

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)


class LatelexPlaid(_LatelexEngine):
    """latelex PlaidIndex (nbits :data:`PLAID_NBITS`), when the module exists."""

    name = f"latelex plaid (nbits={PLAID_NBITS})"

    def _build(self, path, doc_ids, doc_vectors):
        from latelex.index.plaid import PlaidConfig, PlaidIndex

        return PlaidIndex.build(path, doc_ids, doc_vectors, config=PlaidConfig(nbits=PLAID_NBITS))


Factory = Callable[[], PeerIndex]
Entry = tuple[str, Union[Factory, str]]


def latelex_systems(workdir: str | os.PathLike | None = None) -> list[Entry]:
    """latelex's engines as ``(name, factory or reason it cannot run)``; the exact flat index first."""
    out: list[Entry] = [(LatelexFlat.name, lambda: LatelexFlat(workdir))]
    try:
        import faiss  # noqa: F401

        out.append((LatelexIvfPq.name, lambda: LatelexIvfPq(workdir)))
    except ImportError as exc:
        out.append((LatelexIvfPq.name, f"faiss is not installed ({exc})"))
    try:
        from latelex.index import plaid  # noqa: F401

        out.append((LatelexPlaid.name, lambda: LatelexPlaid(workdir)))
    except ImportError as exc:
        out.append((LatelexPlaid.name, f"latelex.index.plaid is not there yet ({exc})"))
    return out


# --- vectors on disk, for the worker -----------------------------------------------------------------------

def save_packed(prefix: str | os.PathLike, ids: Sequence[str], matrices: Sequence[np.ndarray]) -> None:
    """Write matrices as ``prefix.vectors.npy`` (T, dim) float16, ``prefix.offsets.npy`` (N + 1,) int64 and
    ``prefix.ids.json``. float16 is what every engine here stores, and halves the transfer."""
    offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([m.shape[0] for m in matrices], out=offsets[1:])
    dim = matrices[0].shape[1]
    vectors = np.lib.format.open_memmap(f"{prefix}.vectors.npy", mode="w+", dtype=np.float16, shape=(int(offsets[-1]), dim))
    for m, a, b in zip(matrices, offsets[:-1], offsets[1:]):
        vectors[a:b] = m
    vectors.flush()
    del vectors
    np.save(f"{prefix}.offsets.npy", offsets, allow_pickle=False)
    with open(f"{prefix}.ids.json", "w", encoding="utf-8") as f:
        json.dump(list(ids), f)


def load_packed(prefix: str | os.PathLike) -> tuple[list[str], list[np.ndarray]]:
    """Inverse of :func:`save_packed`: ids and float32 (L_i, dim) matrices."""
    vectors = np.load(f"{prefix}.vectors.npy", allow_pickle=False).astype(np.float32)
    offsets = np.load(f"{prefix}.offsets.npy", allow_pickle=False)
    with open(f"{prefix}.ids.json", encoding="utf-8") as f:
        ids = json.load(f)
    return ids, [vectors[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


# --- peers in a worker process ------------------------------------------------------------------------------

def peer_python() -> str | None:
    """The interpreter of the peers' environment, or None."""
    configured = os.environ.get("LATELEX_PEERS_PYTHON")
    if configured:
        return configured if Path(configured).exists() else None
    return next((p for p in PEER_PYTHONS if Path(p).exists()), None)


class WorkerError(RuntimeError):
    """The worker answered with an error, or died."""


def _death(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"the worker was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"the worker was killed by signal {-returncode}"
    return f"the worker exited with status {returncode}"


class SubprocessPeer(PeerIndex):
    """A peer living in ``plaid_peer_worker.py`` under the peers' Python; one worker per instance."""

    def __init__(self, name: str, python: str, workdir: str | os.PathLike | None = None):
        self.name = name
        self._python = python
        self._dir = Path(tempfile.mkdtemp(prefix="peer-", dir=workdir))
        self._queries = 0
        self._log = open(self._dir / "worker.log", "w+", encoding="utf-8")
        self._proc = subprocess.Popen(
            [python, str(WORKER), "--serve", name, "--workdir", str(self._dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )

    def _ask(self, **command) -> dict:
        if self._proc.poll() is not None:
            raise WorkerError(f"{self.name}: {_death(self._proc.returncode)}; see {self._log.name}")
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=30)
            self._log.seek(0)
            tail = [ln for ln in self._log.read().splitlines() if ln.strip()][-1:]
            raise WorkerError(f"{_death(self._proc.returncode)} during {command['op']}" + (f": {tail[0]}" if tail else ""))
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(answer.get("error", "unknown error"))
        return answer

    def _send_queries(self, query_vectors) -> str:
        self._queries += 1
        prefix = self._dir / f"queries{self._queries}"
        save_packed(prefix, [str(i) for i in range(len(query_vectors))], list(query_vectors))
        return str(prefix)

    def build(self, doc_ids, doc_vectors) -> float:
        prefix = self._dir / "docs"
        save_packed(prefix, list(doc_ids), list(doc_vectors))
        answer = self._ask(op="build", docs=str(prefix))
        for suffix in (".vectors.npy", ".offsets.npy", ".ids.json"):
            Path(f"{prefix}{suffix}").unlink()
        return float(answer["seconds"])

    def add(self, doc_ids, doc_vectors) -> float:
        self._queries += 1
        prefix = self._dir / f"added{self._queries}"
        save_packed(prefix, list(doc_ids), list(doc_vectors))
        answer = self._ask(op="add", docs=str(prefix))
        for suffix in (".vectors.npy", ".offsets.npy", ".ids.json"):
            Path(f"{prefix}{suffix}").unlink()
        return float(answer["seconds"])

    def remove(self, doc_ids) -> float:
        return float(self._ask(op="remove", ids=[str(d) for d in doc_ids])["seconds"])

    def search(self, query_vectors, k):
        return self._ask(op="search", queries=self._send_queries(query_vectors), k=k)["rankings"]

    def latencies(self, query_vectors, k, threads, warmup=2):
        answer = self._ask(op="latencies", queries=self._send_queries(query_vectors), k=k, threads=threads, warmup=warmup)
        return answer["seconds"]

    def set_threads(self, threads: int) -> None:
        self._ask(op="threads", threads=threads)

    def configure(self, **settings) -> None:
        self._ask(op="configure", settings=settings)
        self.settings = dict(settings)

    def bytes_on_disk(self) -> int:
        return int(self._ask(op="bytes")["bytes"])

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def probe(name: str, python: str) -> str | None:
    """None if peer ``name`` builds and searches a tiny index in a fresh worker, else the reason it cannot."""
    try:
        run = subprocess.run([python, str(WORKER), "--probe", name], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"its smoke test took over {PROBE_TIMEOUT_S} s"
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    if run.returncode == 0 and lines:
        answer = json.loads(lines[-1])
        return None if answer.get("ok") else answer.get("error", "unknown error")
    tail = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()][-1:]
    return f"{_death(run.returncode)} in a 64-document smoke test" + (f" ({tail[0][:200]})" if tail else "")


def available_peers(workdir: str | os.PathLike | None = None, names: Sequence[str] = PEER_NAMES) -> list[Entry]:
    """Each peer as ``(name, factory)`` when it passes a smoke test here, else ``(name, reason)``.

    A factory starts a worker and returns a :class:`SubprocessPeer`; close it when done.
    """
    python = peer_python()
    out: list[Entry] = []
    for name in names:
        if python is None:
            out.append((name, "no peers environment: set LATELEX_PEERS_PYTHON or create one of "
                              + ", ".join(PEER_PYTHONS) + " (see bench/plaid_peers.py)"))
            continue
        reason = probe(name, python)
        if reason is None:
            out.append((name, lambda name=name: SubprocessPeer(name, python, workdir)))
        else:
            out.append((name, reason))
    return out


# --- measuring -------------------------------------------------------------------------------------------

def recall_at_k(got: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean over queries of |top-k found ∩ exact top-k| / |exact top-k|."""
    values = [len(set(g[:k]) & set(e[:k])) / max(1, len(e[:k])) for g, e in zip(got, exact)]
    return float(np.mean(values)) if values else float("nan")


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q)) if len(seconds) else float("nan")
