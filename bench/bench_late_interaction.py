"""Late-interaction engines side by side on the same token vectors: latelex's and the peers'.

Systems: latelex flat (exact MaxSim, the reference), latelex ivfpq (ColBERT v1 end-to-end), latelex plaid
(when ``latelex.index.plaid`` exists), and the peers of ``bench/plaid_peers.py`` (PyLate PLAID with its
fast-plaid and Stanford backends, PyLate Voyager, fast-plaid), each in the peers' environment. Every system
gets the same vectors; the table gives build time (encoding excluded), index bytes per token vector (all
files), recall@k of the exact top k, and single-query latency (p50 / p95) with 1 thread and with all threads.

Data: SciFact (5,183 documents, 300 test queries) encoded once with all-MiniLM-L6-v2 as a plain ColBERT
encoder (384 dimensions, no projection, doc max 256 / query max 64 tokens; about 5 minutes on 2 cores),
cached under ``--cache``; or ``--synthetic N`` clustered unit vectors.

    nice -n 10 .venv/bin/python bench/bench_late_interaction.py
    nice -n 10 .venv/bin/python bench/bench_late_interaction.py --synthetic 2000 --dim 128
    nice -n 10 .venv/bin/python bench/bench_late_interaction.py --only latelex   # no peers
    nice -n 10 .venv/bin/python bench/bench_late_interaction.py --only latelex voyager --sweep  # equal recall
    # 1.3M synthetic vectors beside PyLate PLAID and fast-plaid (about 26 minutes, the peers' builds 11-12 each):
    nice -n 10 .venv/bin/python bench/bench_late_interaction.py --synthetic 15000 --dim 128 --only "latelex plaid" fast-plaid
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, peak_rss_mb, print_table  # noqa: E402
from plaid_peers import (  # noqa: E402
    SWEEPS,
    LatelexFlat,
    available_peers,
    latelex_systems,
    peer_python,
    percentile_ms,
    recall_at_k,
)

MODEL = "all-MiniLM-L6-v2"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------------------

def _save(cache: Path, prefix: str, ids: list[str], matrices: list[np.ndarray]) -> None:
    offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([m.shape[0] for m in matrices], out=offsets[1:])
    np.save(cache / f"{prefix}_vectors.npy", np.concatenate(matrices).astype(np.float32), allow_pickle=False)
    np.save(cache / f"{prefix}_offsets.npy", offsets, allow_pickle=False)
    (cache / f"{prefix}_ids.json").write_text(json.dumps(ids))


def _load(cache: Path, prefix: str) -> tuple[list[str], list[np.ndarray]]:
    vectors = np.load(cache / f"{prefix}_vectors.npy", allow_pickle=False)
    offsets = np.load(cache / f"{prefix}_offsets.npy", allow_pickle=False)
    ids = json.loads((cache / f"{prefix}_ids.json").read_text())
    return ids, [np.asarray(vectors[a:b], dtype=np.float32) for a, b in zip(offsets[:-1], offsets[1:])]


def scifact_vectors(cache: Path):
    """(doc ids, doc matrices, query matrices) of SciFact test, encoding and caching them the first time."""
    if not (cache / "queries_ids.json").exists():
        import torch

        from latelex import ColBERT
        from latelex.data import BeirDataset

        folder = SHARED / "datasets" / "scifact"
        model_dir = SHARED / "models" / MODEL
        if not folder.exists() or not model_dir.exists():
            raise SystemExit(f"{folder} or {model_dir} is absent: set LATELEX_SHARED or use --synthetic N")
        log(f"encoding SciFact with {MODEL} (once; cached in {cache})")
        cache.mkdir(parents=True, exist_ok=True)
        data = BeirDataset(folder, split="test")
        corpus, queries = list(data.corpus()), list(data.queries())
        model = ColBERT.from_pretrained(str(model_dir), query_maxlen=64, doc_maxlen=256)
        with torch.inference_mode():
            Q = model.encode_queries([t for _, t in queries], show_progress=False)
            D = model.encode_documents([t for _, t in corpus], show_progress=True)
        _save(cache, "docs", [i for i, _ in corpus], [d.numpy() for d in D])
        _save(cache, "queries", [i for i, _ in queries], [q.numpy() for q in Q])
    doc_ids, docs = _load(cache, "docs")
    _, queries = _load(cache, "queries")
    return doc_ids, docs, queries


def synthetic_vectors(n_docs: int, dim: int, n_queries: int = 100, seed: int = 0):
    """Clustered unit vectors: documents of 20-180 tokens, each mixing a few of sqrt(T) topics; 32-token queries."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(80), 0.5, n_docs), 20, 180).astype(int)
    clusters = max(8, int(np.sqrt(lengths.sum())))
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(length: int, topics: int) -> np.ndarray:
        chosen = rng.choice(clusters, size=topics, replace=False)
        x = centres[rng.choice(chosen, size=length)] + 0.5 / np.sqrt(dim) * rng.standard_normal((length, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    docs = [sample(int(n), 8) for n in lengths]
    queries = [sample(32, 4) for _ in range(n_queries)]
    return [f"doc{i}" for i in range(n_docs)], docs, queries


# --- running ---------------------------------------------------------------------------------------------

def measure(peer, doc_ids, docs, queries, latency_queries, k: int, exact, threads_all: int) -> dict:
    log(f"{peer.name}: building")
    build_s = peer.build(doc_ids, docs)
    size = peer.bytes_on_disk()
    log(f"{peer.name}: built in {build_s:.1f} s, {size / 2**20:.1f} MiB")
    return {"build_s": build_s, "bytes": size, **measure_search(peer, queries, latency_queries, k, exact, threads_all)}


def measure_search(peer, queries, latency_queries, k: int, exact, threads_all: int) -> dict:
    """Rankings, recall and latencies of a built system with its current search settings."""
    label = f"{peer.name} {setting_label(peer.settings)}".strip()
    log(f"{label}: searching {len(queries)} queries")
    rankings = peer.search(queries, k)
    log(f"{label}: timing {len(latency_queries)} single queries, 1 thread and {threads_all} threads")
    one = peer.latencies(latency_queries, k, threads=1)
    many = peer.latencies(latency_queries, k, threads=threads_all)
    peer.set_threads(threads_all)
    result = {
        "rankings": rankings,
        "recall": None if exact is None else recall_at_k(rankings, exact, k),
        "p50_1": percentile_ms(one, 50), "p95_1": percentile_ms(one, 95),
        "p50_n": percentile_ms(many, 50), "p95_n": percentile_ms(many, 95),
    }
    shown = {key: (round(v, 3) if isinstance(v, float) else v) for key, v in result.items() if key != "rankings"}
    log(f"{label}: {shown}")
    return result


def failure(exc: BaseException) -> str:
    """The table cell of a system or setting that raised ``exc``: its type and first line."""
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def setting_label(settings: dict) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in settings.items()) + "]" if settings else ""


def equal_recall_rows(results: dict[str, dict | str], ours_first: bool = True) -> list[list[str]]:
    """Each latelex PLAID / IVFPQ row beside the fastest peer row (p50, 1 thread) whose recall is at least as high;
    or, with ``ours_first=False``, each peer row beside the fastest such latelex row. Ratio: peer p50 / latelex p50."""
    measured = {n: r for n, r in results.items() if isinstance(r, dict) and r.get("recall") is not None}
    latelex = {n: r for n, r in measured.items() if n.startswith("latelex") and not n.startswith(LatelexFlat.name)}
    peers = {n: r for n, r in measured.items() if not n.startswith("latelex")}
    rows_of, rivals_of = (latelex, peers) if ours_first else (peers, latelex)
    rows = []
    for name, row in rows_of.items():
        rivals = [(r["p50_1"], n, r) for n, r in rivals_of.items() if r["recall"] >= row["recall"]]
        if not rivals:
            rows.append([name, f"{row['recall']:.3f}", f"{row['p50_1']:.1f}", "none reached this recall", "", "", ""])
            continue
        p50, rival, r = min(rivals, key=lambda t: t[0])
        ratio = p50 / row["p50_1"] if ours_first else row["p50_1"] / p50
        rows.append([name, f"{row['recall']:.3f}", f"{row['p50_1']:.1f}", rival, f"{r['recall']:.3f}", f"{p50:.1f}",
                     f"{ratio:.1f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="N clustered synthetic documents instead of SciFact")
    parser.add_argument("--dim", type=int, default=128, help="dimension of the synthetic vectors")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "latelex-scifact-minilm",
                        help="where the SciFact vectors are cached (docs_*/queries_* .npy and ids .json)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=0, help="use only the first N queries (0: all)")
    parser.add_argument("--latency-queries", type=int, default=30, help="queries timed one at a time, per thread setting")
    parser.add_argument("--only", nargs="*", default=None, help="run systems whose name contains one of these words")
    parser.add_argument("--workdir", type=Path, default=None, help="where indexes are built (default: a temporary folder)")
    parser.add_argument("--sweep", action="store_true",
                        help="after each system's defaults, also measure the search settings of plaid_peers.SWEEPS on the "
                             "same index, and print which peer setting is fastest at each of latelex's recalls")
    args = parser.parse_args()

    if args.synthetic:
        doc_ids, docs, queries = synthetic_vectors(args.synthetic, args.dim)
        data = f"synthetic clustered, {len(docs)} docs, dim {args.dim}"
    else:
        doc_ids, docs, queries = scifact_vectors(args.cache)
        data = f"SciFact test, token vectors of {args.cache}, {len(docs)} docs, dim {docs[0].shape[1]}"
    if args.queries:
        queries = queries[: args.queries]
    tokens = sum(d.shape[0] for d in docs)
    data += f", {tokens:,} token vectors, {len(queries)} queries (mean {np.mean([q.shape[0] for q in queries]):.1f} tokens)"
    log(data)
    latency_queries = queries[: args.latency_queries]
    threads_all = os.cpu_count() or 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-li-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def wanted(name: str) -> bool:
        return args.only is None or any(word in name for word in args.only)

    systems = [(n, f) for n, f in latelex_systems(workdir) if wanted(n)]
    peer_names = [n for n in ("pylate-plaid (fast-plaid backend)", "pylate-plaid (stanford backend)",
                              "pylate-voyager (HNSW)", "fast-plaid") if wanted(n)]
    if peer_names:
        log(f"smoke-testing peers with {peer_python()}")
        systems += available_peers(workdir, peer_names)

    # The exact ranking every recall is measured against: latelex's flat index, in this process.
    exact = None
    results: dict[str, dict | str] = {}
    if not any(name == LatelexFlat.name for name, _ in systems):
        reference = LatelexFlat(workdir)
        reference.build(doc_ids, docs)
        exact = reference.search(queries, args.k)
        reference.close()
    for name, factory in systems:
        if isinstance(factory, str):
            results[name] = f"not run: {factory}"
            continue
        peer = None
        try:
            peer = factory()
            results[name] = measure(peer, doc_ids, docs, queries, latency_queries, args.k, exact, threads_all)
            if name == LatelexFlat.name:
                exact = results[name]["rankings"]
                results[name]["recall"] = 1.0
            for settings in SWEEPS.get(name, []) if args.sweep else []:
                label = f"{name} {setting_label(settings)}"
                try:
                    peer.configure(**settings)
                    results[label] = {"build_s": results[name]["build_s"], "bytes": results[name]["bytes"],
                                      **measure_search(peer, queries, latency_queries, args.k, exact, threads_all)}
                except Exception as exc:  # a setting a system rejects must not sink the table
                    traceback.print_exc()
                    results[label] = failure(exc)
        except Exception as exc:  # one failing system must not sink the table
            traceback.print_exc()
            results[name] = failure(exc)
        finally:
            if peer is not None:
                peer.close()

    flat = results.get(LatelexFlat.name)
    headers = ["system", "build s", "bytes/vector", f"recall@{args.k} vs exact", "p50 ms 1 thr", "p95 ms 1 thr",
               f"p50 ms {threads_all} thr", f"p95 ms {threads_all} thr", "p50 1 thr / exact"]
    rows = []
    for name, r in results.items():
        if isinstance(r, str):
            rows.append([name, r] + [""] * (len(headers) - 2))
            continue
        ratio = f"{r['p50_1'] / flat['p50_1']:.2f}x" if isinstance(flat, dict) else "-"
        rows.append([name, f"{r['build_s']:.1f}", f"{r['bytes'] / tokens:.1f}", f"{r['recall']:.3f}",
                     f"{r['p50_1']:.1f}", f"{r['p95_1']:.1f}", f"{r['p50_n']:.1f}", f"{r['p95_n']:.1f}", ratio])
    print()
    print(f"Data: {data}; k={args.k}; latency over {len(latency_queries)} single-query calls after 2 warm-up calls")
    print_table(headers, rows)
    if args.sweep:
        print()
        print(f"At equal recall: the fastest peer row whose recall@{args.k} is at least latelex's (p50, 1 thread)")
        print_table(["latelex row", "recall", "p50 ms", "fastest peer at >= that recall", "its recall", "its p50 ms",
                     "peer p50 / latelex p50"], equal_recall_rows(results))
        print()
        print(f"At equal recall, the other way: the fastest latelex row whose recall@{args.k} is at least each peer row's")
        print_table(["peer row", "recall", "p50 ms", "fastest latelex at >= that recall", "its recall", "its p50 ms",
                     "peer p50 / latelex p50"], equal_recall_rows(results, ours_first=False))
    print(f"Machine: {machine()}; peak RSS of this process {peak_rss_mb():.0f} MiB")
    if peer_names:
        print(f"Peers' Python: {peer_python()} (build time and latency measured inside the worker)")


if __name__ == "__main__":
    main()
