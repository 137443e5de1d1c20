"""Worker process for the peers of the late-interaction benchmarks (run under the peers' Python, not latelex's).

    python plaid_peer_worker.py --probe NAME                 # smoke test: print {"ok": true} or the error
    python plaid_peer_worker.py --serve NAME --workdir DIR   # answer JSON-line commands on stdin

Commands (one JSON object per line; one JSON answer per line, ``{"ok": false, "error": ...}`` on failure):

* ``{"op": "build", "docs": PREFIX}``: index the packed vectors at PREFIX (see ``plaid_peers.save_packed``);
  answers ``{"seconds": build time}``, timed here, loading the vectors not included;
* ``{"op": "search", "queries": PREFIX, "k": K}``: answers ``{"rankings": [[doc id, ...], ...]}``;
* ``{"op": "latencies", "queries": PREFIX, "k": K, "threads": T, "warmup": W}``: one search call per query
  with T threads; answers ``{"seconds": [...]}``;
* ``{"op": "add", "docs": PREFIX}``: add the packed vectors at PREFIX to the built index (PyLate PLAID's
  ``add_documents`` on an existing index); answers ``{"seconds": add time}``, timed here like ``build``;
* ``{"op": "remove", "ids": [doc id, ...]}``: remove documents (PyLate PLAID's ``remove_documents``); answers
  ``{"seconds": remove time}``;
* ``{"op": "configure", "settings": {...}}``: search with these settings from now on (``plaid_peers.SWEEPS``);
* ``{"op": "threads", "threads": T}``, ``{"op": "bytes"}``, ``{"op": "quit"}``.

Library output is sent to stderr (file descriptor 1 included), so stdout carries answers only.
The adapters follow each peer's documented use; PLAID-style peers use ``nbits`` = ``PLAID_NBITS`` and their
own search defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plaid_peers import PLAID_NBITS, PeerIndex, directory_bytes, load_packed  # noqa: E402


def _tensors(matrices):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)) for m in matrices]


class _Folder(PeerIndex):
    def __init__(self, workdir: str):
        self.folder = Path(tempfile.mkdtemp(prefix="index-", dir=workdir))

    def bytes_on_disk(self) -> int:
        return directory_bytes(self.folder)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class PyLatePlaid(_Folder):
    """``pylate.indexes.PLAID`` (FastPlaid backend, or ``use_fast=False`` for Stanford PLAID) searched
    through ``pylate.retrieve.ColBERT``."""

    def __init__(self, workdir: str, use_fast: bool):
        super().__init__(workdir)
        self.use_fast = use_fast
        self.name = "pylate-plaid (fast-plaid backend)" if use_fast else "pylate-plaid (stanford backend)"

    def build(self, doc_ids, doc_vectors):
        from pylate import indexes, retrieve

        start = time.perf_counter()
        kwargs = {} if self.use_fast else {"embedding_size": int(doc_vectors[0].shape[1])}
        self.index = indexes.PLAID(index_folder=str(self.folder), index_name="index", override=True,
                                   use_fast=self.use_fast, nbits=PLAID_NBITS, show_progress=False,
                                   device="cpu", **kwargs)
        self.index.add_documents(documents_ids=list(doc_ids), documents_embeddings=_tensors(doc_vectors))
        self.retriever = retrieve.ColBERT(index=self.index)
        return time.perf_counter() - start

    def search(self, query_vectors, k):
        results = self.retriever.retrieve(queries_embeddings=_tensors(query_vectors), k=k)
        return [[str(r["id"]) for r in hits] for hits in results]

    def add(self, doc_ids, doc_vectors):
        """``add_documents`` on the built index (FastPlaid: ``fast_plaid.update``, which keeps the centroids but
        adds new ones for outlying vectors once 100 or more documents are buffered, and re-creates an index of
        at most 999 documents from scratch; Stanford: ColBERT's ``IndexUpdater``)."""
        tensors = _tensors(doc_vectors)
        start = time.perf_counter()
        self.index.add_documents(documents_ids=list(doc_ids), documents_embeddings=tensors)
        return time.perf_counter() - start

    def remove(self, doc_ids):
        """``remove_documents`` (FastPlaid: ``fast_plaid.delete`` plus renumbering PyLate's id mappings)."""
        start = time.perf_counter()
        self.index.remove_documents(list(doc_ids))
        return time.perf_counter() - start


class _ThreadedQueries:
    """A voyager index whose ``query`` runs with ``owner.threads`` threads; everything else passes through."""

    def __init__(self, index, owner):
        self._index = index
        self._owner = owner

    def query(self, *args, **kwargs):
        return self._index.query(*args, **{"num_threads": self._owner.threads, **kwargs})

    def __getattr__(self, name):
        return getattr(self._index, name)


class PyLateVoyager(_Folder):
    """``pylate.indexes.Voyager`` (HNSW over token vectors) searched through ``pylate.retrieve.ColBERT``,
    which gathers candidates from each query token's ``k_token`` neighbours and re-ranks them exactly."""

    name = "pylate-voyager (HNSW)"
    threads = -1

    def build(self, doc_ids, doc_vectors):
        from pylate import indexes, retrieve

        start = time.perf_counter()
        self.index = indexes.Voyager(index_folder=str(self.folder), index_name="index", override=True,
                                     embedding_size=int(doc_vectors[0].shape[1]))
        # voyager's add_items takes float32 rows only (the packed vectors travel as float16)
        self.index.add_documents(documents_ids=list(doc_ids), documents_embeddings=[np.asarray(m, dtype=np.float32) for m in doc_vectors])
        self.retriever = retrieve.ColBERT(index=self.index)
        self.default_ef_search = self.index.ef_search
        # Voyager queries use all cores unless told otherwise; route set_threads to its num_threads argument.
        self.index.index = _ThreadedQueries(self.index.index, self)
        return time.perf_counter() - start

    def set_threads(self, threads):
        super().set_threads(threads)
        self.threads = threads

    def configure(self, **settings):
        unknown = set(settings) - {"k_token", "ef_search"}
        if unknown:
            raise ValueError(f"{self.name} has no setting {sorted(unknown)}")
        self.settings = dict(settings)
        self.index.ef_search = int(settings.get("ef_search", self.default_ef_search))

    def search(self, query_vectors, k):
        extra = {"k_token": int(self.settings["k_token"])} if "k_token" in self.settings else {}
        results = self.retriever.retrieve(queries_embeddings=[np.asarray(q, dtype=np.float32) for q in query_vectors],
                                          k=k, **extra)
        return [[str(r["id"]) for r in hits] for hits in results]


class FastPlaidDirect(_Folder):
    """``fast_plaid.search.FastPlaid`` used directly on the CPU (documents are numbered; ids mapped back here)."""

    name = "fast-plaid"

    def build(self, doc_ids, doc_vectors):
        from fast_plaid import search

        start = time.perf_counter()
        self.ids = list(doc_ids)
        self.index = search.FastPlaid(index=str(self.folder), device="cpu")
        self.index.create(documents_embeddings=_tensors(doc_vectors), nbits=PLAID_NBITS)
        return time.perf_counter() - start

    def search(self, query_vectors, k):
        results = self.index.search(queries_embeddings=_tensors(query_vectors), top_k=k, show_progress=False)
        return [[self.ids[int(i)] for i, _ in hits] for hits in results]


PEERS = {
    "pylate-plaid (fast-plaid backend)": lambda workdir: PyLatePlaid(workdir, use_fast=True),
    "pylate-plaid (stanford backend)": lambda workdir: PyLatePlaid(workdir, use_fast=False),
    "pylate-voyager (HNSW)": lambda workdir: PyLateVoyager(workdir),
    "fast-plaid": lambda workdir: FastPlaidDirect(workdir),
}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def smoke(name: str) -> dict:
    """Build a 64-document index and search it once."""
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(64):
        x = rng.standard_normal((int(rng.integers(8, 24)), 32)).astype(np.float32)
        docs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    workdir = tempfile.mkdtemp(prefix="peer-probe-")
    peer = PEERS[name](workdir)
    try:
        peer.build([f"d{i}" for i in range(64)], docs)
        hits = peer.search([docs[3][:6]], 5)
        if not hits or not hits[0]:
            return {"ok": False, "error": "the smoke test's search returned nothing"}
        return {"ok": True, "top": hits[0][0]}
    finally:
        peer.close()
        shutil.rmtree(workdir, ignore_errors=True)


def serve(name: str, workdir: str, out) -> None:
    peer = PEERS[name](workdir)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            op = command["op"]
            try:
                if op == "quit":
                    break
                if op == "build":
                    ids, docs = load_packed(command["docs"])
                    answer = {"seconds": peer.build(ids, docs)}
                elif op == "add":
                    ids, docs = load_packed(command["docs"])
                    answer = {"seconds": peer.add(ids, docs)}
                elif op == "remove":
                    answer = {"seconds": peer.remove([str(d) for d in command["ids"]])}
                elif op == "search":
                    _, queries = load_packed(command["queries"])
                    answer = {"rankings": peer.search(queries, int(command["k"]))}
                elif op == "latencies":
                    _, queries = load_packed(command["queries"])
                    answer = {"seconds": peer.latencies(queries, int(command["k"]), int(command["threads"]),
                                                        int(command.get("warmup", 2)))}
                elif op == "configure":
                    peer.configure(**command["settings"])
                    answer = {}
                elif op == "threads":
                    peer.set_threads(int(command["threads"]))
                    answer = {}
                elif op == "bytes":
                    answer = {"bytes": peer.bytes_on_disk()}
                else:
                    raise ValueError(f"unknown op {op!r}")
                answer["ok"] = True
            except Exception as exc:  # report it to the driver, keep serving
                traceback.print_exc()
                answer = {"ok": False, "error": _error(exc)}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", choices=sorted(PEERS))
    parser.add_argument("--serve", choices=sorted(PEERS))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the libraries print goes to stderr
    sys.stdout = sys.stderr
    if args.probe:
        try:
            answer = smoke(args.probe)
        except Exception as exc:
            traceback.print_exc()
            answer = {"ok": False, "error": _error(exc)}
        out.write(json.dumps(answer) + "\n")
    elif args.serve:
        serve(args.serve, args.workdir or tempfile.mkdtemp(prefix="peer-"), out)
    else:
        parser.error("give --probe NAME or --serve NAME")


if __name__ == "__main__":
    main()
