"""Learned sparse retrieval side by side on the same vectors: latelex's inverted index (exact MaxScore, exact
term-at-a-time, approximate), an exhaustive scipy sparse product, Seismic (pyseismic-lsr, approximate) and PISA
(through pyterrier-pisa, run in its own virtual environment given by --pisa-python, when it installs).

Columns: build seconds, index MiB on disk (or in memory), recall@10 against the exact top 10, single-threaded
latency p50 / p95 in milliseconds (one query per call), and each latency's ratio to the exhaustive product.
Approximate systems are swept over their knobs; the fastest setting with recall >= --target-recall is reported.
latelex's index has the default InvertedConfig: uint8 impacts, block-max metadata, and every list also kept in impact
order (exact MaxScore bounds every document outside their heads; the approximate mode reads their first postings).

Datasets: SciFact encoded with splade-tiny (doc max 256, query max 64 tokens; cached with --cache), and a
synthetic collection (--docs, default 1M) with Zipf-distributed term ids over a 30,522-term vocabulary, about 120
terms per document and 30 per query, log-normal weights scaled down for frequent terms (as SPLADE weighs them).

    nice -n 10 .venv/bin/python bench/bench_sparse.py --cache /tmp/latelex-bench-sparse --pisa-python /tmp/inv-pisa-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, peak_rss_mb, print_table  # noqa: E402

from latelex.types import SparseBatch  # noqa: E402

K = 10


# ---------------------------------------------------------------------- data


def scifact_vectors(cache: Path | None):
    if cache is not None and (cache / "scifact.npz").exists():
        z = np.load(cache / "scifact.npz", allow_pickle=False)
        docs = SparseBatch(z["d_indptr"], z["d_indices"], z["d_values"], int(z["vocab"]))
        queries = SparseBatch(z["q_indptr"], z["q_indices"], z["q_values"], int(z["vocab"]))
        return docs, queries
    from latelex.data import read_documents, read_queries_any
    from latelex.encoders.splade import Splade

    folder = SHARED / "datasets" / "scifact"
    model = Splade.from_pretrained(str(SHARED / "models" / "splade-tiny"), query_maxlen=64, doc_maxlen=256,
                                   device="cpu")
    docs = model.encode_documents([t for _, t in read_documents(folder)], batch_size=64)
    queries = model.encode_queries([t for _, t in read_queries_any(folder, split="test")], batch_size=64)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / "scifact.npz", d_indptr=docs.indptr, d_indices=docs.indices, d_values=docs.values,
                 q_indptr=queries.indptr, q_indices=queries.indices, q_values=queries.values, vocab=docs.vocab_size)
    return docs, queries


def synthetic(n: int, n_terms: int, vocab: int, seed: int) -> SparseBatch:
    """n vectors of about n_terms distinct Zipf(1.1) term ids; weights log-normal, lower for frequent terms."""
    rng = np.random.default_rng(seed)
    # Zipf over ranks 1..vocab (probability ~ 1/r^1.1), mapped to shuffled term ids.
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = ranks ** -1.1
    cdf = np.cumsum(p / p.sum())
    term_of_rank = np.random.default_rng(12345).permutation(vocab).astype(np.int32)  # shared by docs and queries
    idf = 0.15 + 0.85 * np.log(ranks) / np.log(vocab)  # frequent terms weigh less
    indptr = np.zeros(n + 1, dtype=np.int64)
    rows, values = [], []
    step = 50_000
    for a in range(0, n, step):
        b = min(n, a + step)
        m = b - a
        draws = int(n_terms * 1.7)  # duplicates removed below leave about n_terms
        r = np.searchsorted(cdf, rng.random((m, draws)))
        r = np.minimum(r, vocab - 1)
        r.sort(axis=1)
        keep = np.ones_like(r, dtype=bool)
        keep[:, 1:] = r[:, 1:] != r[:, :-1]
        lengths = keep.sum(1)
        flat = r[keep]
        w = (rng.lognormal(-0.3, 0.6, flat.shape[0]) * idf[flat]).astype(np.float32)
        ids = term_of_rank[flat]
        row = np.repeat(np.arange(m), lengths)
        order = np.lexsort((ids, row))
        rows.append(ids[order])
        values.append(np.maximum(w[order], np.float32(1e-3)))
        np.cumsum(lengths, out=indptr[a + 1 : b + 1])
        indptr[a + 1 : b + 1] += indptr[a]
    return SparseBatch(indptr, np.concatenate(rows), np.concatenate(values), vocab)


# ---------------------------------------------------------------------- helpers


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / (1 << 20)


def one(batch: SparseBatch, i: int) -> SparseBatch:
    a, b = int(batch.indptr[i]), int(batch.indptr[i + 1])
    return SparseBatch(np.array([0, b - a], dtype=np.int64), batch.indices[a:b], batch.values[a:b], batch.vocab_size)


def latencies(fn, n: int) -> tuple[float, float, list]:
    times, results = [], []
    for i in range(n):
        t = time.perf_counter()
        results.append(fn(i))
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), results


def recall(results: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(r[:K]) & set(t)) / max(1, len(t)) for r, t in zip(results, truth)]))


# ---------------------------------------------------------------------- systems


def run_latelex(name, docs, queries, work: Path, rows, truth_out: list):
    import numba

    from latelex.index.inverted import InvertedIndex

    numba.set_num_threads(1)
    ids = [str(i) for i in range(len(docs))]
    path = work / f"{name}-latelex"
    t = time.perf_counter()
    index = InvertedIndex.build(path, ids, docs, overwrite=True)
    build = time.perf_counter() - t
    size = dir_mib(path)
    nq = len(queries)
    singles = [one(queries, i) for i in range(nq)]
    index.search(singles[0], k=K, threads=1)  # compile / warm up
    index.search(singles[0], k=K, threads=1, algorithm="taat")
    index.search(singles[0], k=K, threads=1, mode="approximate")

    def ids_of(hits):
        return [int(h.doc_id) for h in hits[0] if h.score > 0]

    p50, p95, exact = latencies(lambda i: ids_of(index.search(singles[i], k=K, threads=1)), nq)
    truth_out.extend(exact)
    out = {"build": build, "size": size}
    rows.append(["latelex exact (MaxScore)", build, size, 1.0, p50, p95, ""])
    p50, p95, res = latencies(lambda i: ids_of(index.search(singles[i], k=K, threads=1, algorithm="taat")), nq)
    rows.append(["latelex exact (TAAT)", build, size, recall(res, exact), p50, p95, ""])
    t = time.perf_counter()
    index.search(queries, k=K)
    rows_batch = time.perf_counter() - t
    out["batch_all_cores_ms_per_query"] = rows_batch / nq * 1000
    best = None
    for query_terms in (8, 12, 16, 24):
        for depth in (512, 1024, 2048, 4096):
            for rerank in (100,):
                p50, p95, res = latencies(
                    lambda i: ids_of(index.search(singles[i], k=K, threads=1, mode="approximate",
                                                  query_terms=query_terms, depth=depth, rerank=rerank)), nq)
                r = recall(res, exact)
                if r >= TARGET and (best is None or p50 < best[4]):
                    best = ["latelex approximate", build, size, r, p50, p95,
                            f"query_terms={query_terms} depth={depth} rerank={rerank}"]
    rows.append(best or ["latelex approximate", build, size, float("nan"), float("nan"), float("nan"),
                         f"no setting reached recall {TARGET}"])
    return index, out


def run_scipy(docs, queries, rows, truth):
    t = time.perf_counter()
    matrix = docs.to_scipy().T.tocsr()  # (V, N) term-major
    build = time.perf_counter() - t
    size = (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / (1 << 20)
    qm = queries.to_scipy()

    def search(i):
        scores = (qm[i] @ matrix).toarray().ravel()
        part = np.argpartition(-scores, K)[:K]
        chosen = part[np.lexsort((part, -scores[part]))]
        return [int(c) for c in chosen.tolist() if scores[c] > 0]

    search(0)
    p50, p95, res = latencies(search, len(queries))
    rows.append(["scipy exhaustive product", build, size, recall(res, truth), p50, p95, "in memory"])


def run_seismic(docs, queries, rows, truth):
    try:
        import seismic
        from seismic import SeismicDataset, SeismicIndex
    except ImportError as exc:
        rows.append(["seismic", "-", "-", "-", "-", "-", f"import failed: {exc}"])
        return
    t = time.perf_counter()
    dataset = SeismicDataset()
    dataset.add_documents_by_id([str(i) for i in range(len(docs))], np.asarray(docs.indices, dtype=np.int64),
                                np.asarray(docs.values, dtype=np.float32), np.asarray(docs.indptr, dtype=np.int64))
    n_postings = int(max(1000, min(8000, docs.nnz / docs.vocab_size * 8)))
    index = SeismicIndex.build_from_dataset(dataset, n_postings=n_postings, centroid_fraction=0.1,
                                            summary_energy=0.4, num_threads=os.cpu_count())
    build = time.perf_counter() - t
    size = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            index.save(os.path.join(tmp, "seismic"))
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / (1 << 20)
        except Exception:  # noqa: BLE001 - size is informative only
            pass
    string = seismic.get_seismic_string()
    q_tokens, q_values = [], []
    for i in range(len(queries)):
        a, b = int(queries.indptr[i]), int(queries.indptr[i + 1])
        q_tokens.append(np.asarray([str(x) for x in queries.indices[a:b].tolist()], dtype=string))
        q_values.append(np.asarray(queries.values[a:b], dtype=np.float32))
    best = None
    for query_cut in (8, 12, 16, 24):
        for heap_factor in (0.7, 0.8, 0.9, 1.0):
            def search(i):
                hits = index.search(str(i), q_tokens[i], q_values[i], k=K, query_cut=query_cut,
                                    heap_factor=heap_factor)
                return [int(h[2]) for h in hits]

            search(0)
            p50, p95, res = latencies(search, len(queries))
            r = recall(res, truth)
            if r >= TARGET and (best is None or p50 < best[4]):
                best = ["seismic (pyseismic-lsr)", build, size, r, p50, p95,
                        f"n_postings={n_postings} query_cut={query_cut} heap_factor={heap_factor}"]
    rows.append(best or ["seismic (pyseismic-lsr)", build, size, float("nan"), float("nan"), float("nan"),
                         f"no setting reached recall {TARGET}"])


def run_pisa(pisa_python: str | None, docs, queries, work: Path, rows, truth):
    if not pisa_python:
        rows.append(["PISA (pyterrier-pisa)", "-", "-", "-", "-", "-", "not run: pass --pisa-python"])
        return
    data = work / "pisa-input.npz"
    np.savez(data, d_indptr=docs.indptr, d_indices=docs.indices, d_values=docs.values,
             q_indptr=queries.indptr, q_indices=queries.indices, q_values=queries.values)
    proc = subprocess.run([pisa_python, __file__, "--pisa-worker", str(data), str(work / "pisa-index")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        rows.append(["PISA (pyterrier-pisa)", "-", "-", "-", "-", "-", f"failed: {last[:150]}"])
        return
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows.append(["PISA (pyterrier-pisa, quantized, maxscore)", out["build"], out["size"],
                 recall(out["results"], truth), out["p50"], out["p95"],
                 "scale 100; per-query latency includes pyterrier's DataFrame round trip"])


def pisa_worker(data_path: str, index_path: str) -> None:
    """Runs inside the pyterrier-pisa virtual environment: build, then time one query per call."""
    import pandas as pd
    from pyterrier_pisa import PisaIndex

    z = np.load(data_path)
    indptr, indices, values = z["d_indptr"], z["d_indices"], z["d_values"]

    def docs():
        for i in range(indptr.shape[0] - 1):
            a, b = int(indptr[i]), int(indptr[i + 1])
            yield {"docno": str(i), "toks": {str(t): float(w) for t, w in zip(indices[a:b].tolist(),
                                                                               values[a:b].tolist())}}

    shutil.rmtree(index_path, ignore_errors=True)
    t = time.perf_counter()
    index = PisaIndex(index_path, stemmer="none", threads=1)
    index.toks_indexer(scale=100.0).index(docs())
    build = time.perf_counter() - t
    size = sum(p.stat().st_size for p in Path(index_path).rglob("*") if p.is_file()) / (1 << 20)
    retr = index.quantized(num_results=K, threads=1, query_algorithm="maxscore", toks_scale=100.0)
    qp, qi, qv = z["q_indptr"], z["q_indices"], z["q_values"]
    frames = []
    for i in range(qp.shape[0] - 1):
        a, b = int(qp[i]), int(qp[i + 1])
        frames.append(pd.DataFrame([{"qid": str(i), "query_toks": {str(t): float(w) for t, w in
                                                                   zip(qi[a:b].tolist(), qv[a:b].tolist())}}]))
    retr(frames[0])
    times, results = [], []
    for frame in frames:
        t = time.perf_counter()
        res = retr(frame)
        times.append(time.perf_counter() - t)
        results.append([int(d) for d in res.sort_values("rank")["docno"].tolist()])
    ms = np.asarray(times) * 1000
    print(json.dumps({"build": build, "size": size, "p50": float(np.percentile(ms, 50)),
                      "p95": float(np.percentile(ms, 95)), "results": results}))


# ---------------------------------------------------------------------- main


def bench(name, docs, queries, work: Path, pisa_python: str | None, skip_pisa: bool):
    print(f"\n## {name}: {len(docs):,} documents ({docs.nnz / len(docs):.0f} terms each), {len(queries)} queries "
          f"({queries.nnz / len(queries):.0f} terms each), vocabulary {docs.vocab_size:,}", flush=True)
    rows: list[list] = []
    truth: list[list[int]] = []
    index, extra = run_latelex(name, docs, queries, work, rows, truth)
    run_scipy(docs, queries, rows, truth)
    run_seismic(docs, queries, rows, truth)
    if skip_pisa:
        rows.append(["PISA (pyterrier-pisa)", "-", "-", "-", "-", "-", "skipped at this scale (--pisa-max-docs)"])
    else:
        run_pisa(pisa_python, docs, queries, work, rows, truth)
    scipy_p50 = next(r[4] for r in rows if r[0].startswith("scipy"))

    def fmt(v, f="{:.2f}"):
        return f.format(v) if isinstance(v, float) else str(v)

    table = [[r[0], fmt(r[1], "{:.1f}"), fmt(r[2], "{:.1f}"), fmt(r[3], "{:.3f}"), fmt(r[4], "{:.3f}"),
              fmt(r[5], "{:.3f}"), fmt(scipy_p50 / r[4], "{:.1f}x") if isinstance(r[4], float) and r[4] > 0 else "-",
              r[6]] for r in rows]
    print_table(["system", "build s", "MiB", "recall@10", "p50 ms", "p95 ms", "speed-up vs scipy", "setting"], table)
    approx = next(r for r in rows if r[0] == "latelex approximate")
    seis = next(r for r in rows if r[0].startswith("seismic"))
    if isinstance(approx[4], float) and isinstance(seis[4], float):
        print(f"latelex approximate / seismic p50 latency at recall >= {TARGET}: {approx[4] / seis[4]:.2f}x")
    print(f"latelex batch search, all {os.cpu_count()} cores: {extra['batch_all_cores_ms_per_query']:.3f} ms/query; "
          f"FLOPS(queries) = {index.flops(queries):.3f}; doc-side: {json.dumps({k: index.info()[k] for k in ('flops_docs', 'active_terms', 'max_posting_length')})}")


TARGET = 0.95


def main() -> None:
    global TARGET
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--cache", type=Path, default=None, help="folder for the encoded SciFact vectors")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for the indexes")
    parser.add_argument("--pisa-python", default=None, help="python of a venv with pyterrier-pisa installed")
    parser.add_argument("--pisa-max-docs", type=int, default=200_000)
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--pisa-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pisa_worker:
        pisa_worker(*args.pisa_worker)
        return
    TARGET = args.target_recall
    print(f"machine: {machine()}")
    work = args.work or Path(tempfile.mkdtemp(prefix="latelex-bench-sparse-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_scifact:
            docs, queries = scifact_vectors(args.cache)
            bench("scifact (splade-tiny)", docs, queries, work, args.pisa_python, len(docs) > args.pisa_max_docs)
        if not args.skip_synthetic:
            t = time.perf_counter()
            docs = synthetic(args.docs, 120, 30522, seed=0)
            queries = synthetic(args.queries, 30, 30522, seed=1)
            print(f"\n(synthetic data generated in {time.perf_counter() - t:.0f} s)")
            bench(f"synthetic Zipf {args.docs:,}", docs, queries, work, args.pisa_python,
                  len(docs) > args.pisa_max_docs)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\npeak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
