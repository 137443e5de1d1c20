"""PLAID index benchmark: build time, bytes per token vector, recall@10 against exact MaxSim, nDCG@10, and search
latency (p50/p95 single-threaded, throughput on all cores) at SciFact scale from real all-MiniLM-L6-v2 token vectors,
plus a synthetic clustered collection (10M vectors by default) for build memory, recall and latency at scale.

    nice -n 10 .venv/bin/python bench/bench_plaid.py --vectors /tmp/plaid_cache          # SciFact part
    nice -n 10 .venv/bin/python bench/bench_plaid.py --synthetic 10000000 --skip-scifact  # 10M part (~20 min)
    .venv/bin/python bench/bench_plaid.py --synthetic 10000000 --skip-scifact --synthetic-reuse  # search only

``--vectors DIR`` holds the encoded SciFact vectors (docs_vectors.npy, docs_offsets.npy, queries_vectors.npy,
queries_offsets.npy, docs_ids.json, queries_ids.json); they are encoded and written there when absent.

Each PLAID row also gives its *ceiling*: the recall of an exhaustive search over every document's decompressed
vectors, the best any pruning could do with that codec; and its recall of that exhaustive search's top 10, which
is what pruning alone loses (the measure of the PLAID paper, which compares with ColBERTv2's own exhaustive
search over the same compressed vectors). The peers (PyLate PLAID / Voyager, fast-plaid) run on
the same vectors in ``bench/bench_late_interaction.py`` (``--cache DIR`` takes the same folders as ``--vectors``
and ``--trained-vectors`` here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, peak_rss_mb, print_table  # noqa: E402

from latelex.index.flat import FlatIndex  # noqa: E402
from latelex.index.plaid import PlaidConfig, PlaidIndex  # noqa: E402
from latelex.index.plaid.build import build_index  # noqa: E402
from latelex.index.plaid.codec import ResidualCodec  # noqa: E402

# --- SciFact vectors -------------------------------------------------------------------------------------


def scifact_vectors(folder: Path, model_name: str | None = None):
    """SciFact test vectors cached in ``folder``: all-MiniLM-L6-v2 as a plain encoder (query 64 / doc 256 tokens),
    or the ColBERT model ``model_name`` with its own settings."""
    names = ("docs_vectors", "docs_offsets", "queries_vectors", "queries_offsets")
    if not all((folder / f"{n}.npy").exists() for n in names):
        from latelex import ColBERT
        from latelex.data import BeirDataset

        data = BeirDataset(SHARED / "datasets" / "scifact", split="test")
        corpus, queries = list(data.corpus()), list(data.queries())
        if model_name is None:
            model = ColBERT.from_pretrained(SHARED / "models" / "all-MiniLM-L6-v2", query_maxlen=64, doc_maxlen=256)
        else:
            model = ColBERT.from_pretrained(model_name)
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, items, mats in (("queries", queries, model.encode_queries([t for _, t in queries])),
                                    ("docs", corpus, model.encode_documents([t for _, t in corpus]))):
            offsets = np.zeros(len(mats) + 1, dtype=np.int64)
            np.cumsum([m.shape[0] for m in mats], out=offsets[1:])
            np.save(folder / f"{prefix}_vectors.npy", torch.cat(mats).numpy().astype(np.float32))
            np.save(folder / f"{prefix}_offsets.npy", offsets)
            (folder / f"{prefix}_ids.json").write_text(json.dumps([i for i, _ in items]))
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}
    ids = {p: json.loads((folder / f"{p}_ids.json").read_text()) for p in ("docs", "queries")}
    return ids, arrays


def projection_weight() -> torch.Tensor:
    from latelex import ColBERT

    model = ColBERT.from_backbone(SHARED / "models" / "all-MiniLM-L6-v2", dim=128, seed=0, query_maxlen=64, doc_maxlen=256,
                                  query_marker=None, doc_marker=None, query_augmentation=False, skiplist=())
    return model.projection.weight.detach().float()


def project(vectors: np.ndarray, weight: torch.Tensor) -> np.ndarray:
    parts = []
    for a in range(0, vectors.shape[0], 200_000):
        x = torch.from_numpy(np.asarray(vectors[a : a + 200_000], dtype=np.float32))
        parts.append(torch.nn.functional.normalize(x @ weight.T, dim=-1).numpy())
    return np.concatenate(parts)


def split(vectors: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(vectors[offsets[i] : offsets[i + 1]], dtype=np.float32) for i in range(len(offsets) - 1)]


def recall_at(got: list[list[str]], exact: list[list[str]], k: int = 10) -> float:
    return float(np.mean([len(set(g[:k]) & set(e[:k])) / k for g, e in zip(got, exact)]))


def ndcg(run_ids: list[list[str]], qids: list[str], qrels) -> float:
    from latelex.evaluate import evaluate
    from latelex.types import Hit

    run = {q: [Hit(d, float(len(r) - i)) for i, d in enumerate(r)] for q, r in zip(qids, run_ids)}
    return evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]


def latencies(search_one, queries) -> tuple[float, float, float]:
    """(p50 wall ms, p95 wall ms, p50 CPU ms of this thread): on a shared machine the CPU time is the steadier figure."""
    times, cpu = [], []
    for q in queries:
        t, c = time.perf_counter(), time.thread_time()
        search_one(q)
        cpu.append((time.thread_time() - c) * 1000)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], statistics.median(cpu)


#: Queries per block in compare_centroid_paths.
PATH_BLOCK = 25


def compare_centroid_paths(index: PlaidIndex, tq: list[torch.Tensor], exact: list[list[str]], qids: list[str], qrels,
                           label: str) -> list[list[str]]:
    """Rows of an A/B of the centroid-score paths (latelex.index.plaid.cpu_paths) on one index: every query searched
    on 1 thread once per path, each path forced through LATELEX_PLAID_CENTROIDS; p50/p95 wall ms, recall@10 against
    exact MaxSim, nDCG@10, and p50 over float32's. The queries run in blocks of PATH_BLOCK, each block by every path
    in turn, the order turning from block to block, and a path's first query in a block is run once untimed: a
    search then meets the caches as in a steady stream of queries on one path (alternating paths query by query
    made each find the other's arrays in cache), and a burst of load on the machine hits every path. Paths whose
    kernel does not work exactly here are named and skipped."""
    from latelex.index.plaid import cpu_paths

    if os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"):
        print("note: with oneDNN capped, torch._int_mm (the int8 path) runs oneDNN's capped kernels, which it does not "
              "reach on a CPU that lacks the instruction sets (qemu-x86_64 -cpu Haswell: torch's slow loop instead)")
    paths = []
    for path in cpu_paths.PATHS:
        problem = "" if path == "float32" else cpu_paths.kernel_problem(path, index.dim)[0]
        if problem:
            print(f"centroid path {path} skipped: {problem}")
        else:
            paths.append(path)
    saved = os.environ.get(cpu_paths.ENV_VAR)
    times: dict[str, list[float]] = {p: [] for p in paths}
    got: dict[str, list[list[str]]] = {p: [] for p in paths}
    torch.set_num_threads(1)
    try:
        for path in paths:  # prepare each path's data and compile its kernels before timing
            os.environ[cpu_paths.ENV_VAR] = path
            index.search(tq[:2], k=10, threads=1)
        for b, start in enumerate(range(0, len(tq), PATH_BLOCK)):
            block = tq[start:start + PATH_BLOCK]
            for j in range(len(paths)):
                path = paths[(b + j) % len(paths)]
                os.environ[cpu_paths.ENV_VAR] = path
                index.search(block[:1], k=10, threads=1)  # untimed: this path's arrays back in cache
                for q in block:
                    t = time.perf_counter()
                    hits = index.search([q], k=10, threads=1)[0]
                    times[path].append((time.perf_counter() - t) * 1000)
                    got[path].append([h.doc_id for h in hits])
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
        if saved is None:
            os.environ.pop(cpu_paths.ENV_VAR, None)
        else:
            os.environ[cpu_paths.ENV_VAR] = saved
    base = statistics.median(times["float32"])
    rows = []
    for path in paths:
        ordered = sorted(times[path])
        p50 = statistics.median(ordered)
        rows.append([label, path, f"{recall_at(got[path], exact):.4f}", f"{ndcg(got[path], qids, qrels):.4f}",
                     f"{p50:.2f}", f"{ordered[int(0.95 * (len(ordered) - 1))]:.2f}", f"{p50 / base:.2f}"])
    return rows


def bench_scifact(folder: Path, nbits_list: list[int], trained: Path | None = None, dims: tuple[int, ...] = (384, 128),
                  centroid_paths: bool = False) -> None:
    """``trained``: a folder for the built-in model's vectors; with it the 128-dim rows use the trained
    latelex-colbert-minilm instead of a fixed random projection of the plain vectors. ``centroid_paths``: also an
    A/B of the centroid-score paths on each PLAID index (:func:`compare_centroid_paths`)."""
    from latelex.data import BeirDataset

    ids, arrays = scifact_vectors(folder)
    qrels = BeirDataset(SHARED / "datasets" / "scifact", split="test").qrels()
    weight = projection_weight()
    trained_arrays = None
    if trained is not None:
        from latelex.models import DEFAULT_COLBERT_MODEL

        trained_ids, trained_arrays = scifact_vectors(trained, DEFAULT_COLBERT_MODEL)
        assert trained_ids == ids, "the two vector caches must hold the same documents and queries"
    rows, path_rows = [], []
    for dim in dims:
        if dim == 128 and trained_arrays is not None:
            doc_vectors, query_vectors = trained_arrays["docs_vectors"], trained_arrays["queries_vectors"]
            offsets = trained_arrays
            label = "128 (latelex-colbert-minilm)"
        else:
            label = f"{dim}" if dim == 384 else "128 (random projection)"
            doc_vectors = arrays["docs_vectors"] if dim == 384 else project(arrays["docs_vectors"], weight)
            query_vectors = arrays["queries_vectors"] if dim == 384 else project(arrays["queries_vectors"], weight)
            offsets = arrays
        docs = split(doc_vectors, offsets["docs_offsets"])
        queries = split(query_vectors, offsets["queries_offsets"])
        tq = [torch.from_numpy(q) for q in queries]
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            flat = FlatIndex.build(Path(tmp) / "flat", ids["docs"], docs)
            exact = [[h.doc_id for h in row] for row in flat.search(tq, k=10)]
            exact_ndcg = ndcg(exact, ids["queries"], qrels)
            flat_bytes = flat.info()["bytes_per_token_vector"]
            torch.set_num_threads(1)
            p50, p95, cpu50 = latencies(lambda q: flat.search([q], k=10), tq[:60])
            torch.set_num_threads(os.cpu_count() or 1)
            rows.append([label, "exact (FlatIndex fp16)", "-", f"{flat_bytes:.1f}", "1.000", "1.000", "-", f"{exact_ndcg:.4f}",
                         f"{p50:.1f}", f"{p95:.1f}", f"{cpu50:.1f}", "-"])
            first_codec = None
            for nbits in sorted(nbits_list, key=lambda b: b != 2):  # nbits 2 first: it trains the centroids
                t = time.perf_counter()
                if first_codec is None:
                    index = PlaidIndex.build(Path(tmp) / f"plaid{nbits}", ids["docs"], docs, config=PlaidConfig(nbits=nbits),
                                             show_progress=False)
                    first_codec = index.codec
                    build_note = ""
                else:
                    # The centroids do not depend on nbits: reuse them (2 cores), learn only this nbits' buckets.
                    rng = np.random.default_rng(0)
                    heldout = np.asarray(doc_vectors[np.sort(rng.choice(doc_vectors.shape[0], 50_000, replace=False))],
                                         dtype=np.float16).astype(np.float32)
                    codec = ResidualCodec.fit_buckets(first_codec.centroids, heldout, nbits)
                    build_index(Path(tmp) / f"plaid{nbits}", ids["docs"], docs, config=PlaidConfig(nbits=nbits), encoder=None,
                                overwrite=False, show_progress=False, codec=codec)
                    index = PlaidIndex.open(Path(tmp) / f"plaid{nbits}")
                    build_note = " (centroids reused)"
                build_s = time.perf_counter() - t
                index.search(tq[:5], k=10, threads=1)  # compile the kernels once
                t = time.perf_counter()
                got = [[h.doc_id for h in row] for row in index.search(tq, k=10)]
                all_cores_qps = len(tq) / (time.perf_counter() - t)
                torch.set_num_threads(1)
                p50, p95, cpu50 = latencies(lambda q: index.search([q], k=10, threads=1), tq)
                torch.set_num_threads(os.cpu_count() or 1)
                info = index.info()
                # ndocs = 4N: a subset no larger than ndocs is scored directly, and all N reach the exact stage (ndocs // 4)
                everything = index.search(tq, k=10, subset=ids["docs"], ndocs=4 * len(ids["docs"]), threads=os.cpu_count())
                everything = [[h.doc_id for h in row] for row in everything]
                ceiling = recall_at(everything, exact)
                rows.append([label, f"latelex PLAID nbits={nbits} ({info['n_centroids']} centroids)", f"{build_s:.0f}{build_note}",
                             f"{info['bytes_per_token_vector']:.1f}", f"{recall_at(got, exact):.4f}", f"{ceiling:.4f}",
                             f"{recall_at(got, everything):.4f}",
                             f"{ndcg(got, ids['queries'], qrels):.4f}", f"{p50:.2f}", f"{p95:.2f}", f"{cpu50:.2f}", f"{all_cores_qps:.0f}"])
                print(" | ".join(rows[-1]), flush=True)
                if centroid_paths:
                    path_rows += compare_centroid_paths(index, tq, exact, ids["queries"], qrels,
                                                        f"{label}, nbits={nbits}")
    print()
    print(f"SciFact (5,183 docs, {arrays['docs_vectors'].shape[0]:,} token vectors, 300 test queries), k=10, PLAID defaults "
          "(settings 'auto': ColBERT's ncells 1, threshold 0.5, ndocs 256 for k<=10, with more cells probed until 256 "
          "candidates); latency excludes query encoding; p50/p95 on 1 thread; scripts/plaid_defaults_check.py compares "
          "'auto' with settings='colbert' at several collection sizes")
    print_table(["dim", "system", "build s", "B/vector", "recall@10 vs exact", "ceiling (all decompressed)",
                 "recall@10 vs all decompressed", "nDCG@10", "p50 ms", "p95 ms", "p50 CPU ms", "QPS all cores"], rows)
    if path_rows:
        print()
        print(f"PLAID centroid-score paths, each forced, in turn by blocks of {PATH_BLOCK} queries (1 thread, PLAID "
              "defaults):")
        print_table(["index", "centroid path", "recall@10 vs exact", "nDCG@10", "p50 ms", "p95 ms", "p50 / float32"],
                    path_rows)


# --- synthetic build memory ------------------------------------------------------------------------------


class MemmapDocs:
    """Documents as views into a memory-mapped (T, dim) array: the input the build streams from."""

    def __init__(self, vectors: np.ndarray, offsets: np.ndarray):
        self.vectors = vectors
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.vectors[self.offsets[i] : self.offsets[i + 1]]


def synthetic(path: Path, n_vectors: int, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (float16, memory-mapped) in documents of 30-170 tokens; written once, then reused."""
    vec_path, off_path = path / f"synthetic-{n_vectors}-{dim}.npy", path / f"synthetic-{n_vectors}-{dim}-offsets.npy"
    rng = np.random.default_rng(seed)
    if not vec_path.exists() or not off_path.exists():
        centers = rng.standard_normal((4096, dim)).astype(np.float32)
        out = np.lib.format.open_memmap(vec_path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16, shape=(n_vectors, dim))
        for a in range(0, n_vectors, 1 << 20):
            b = min(n_vectors, a + (1 << 20))
            x = centers[rng.integers(0, 4096, b - a)] + 0.5 * rng.standard_normal((b - a, dim)).astype(np.float32)
            out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(vec_path.with_suffix(".tmp.npy"), vec_path)
        lengths = rng.integers(30, 171, n_vectors // 30 + 1)
        ends = np.cumsum(lengths)
        ends = ends[ends < n_vectors]
        np.save(off_path, np.concatenate([[0], ends, [n_vectors]]).astype(np.int64))
    return np.load(vec_path, mmap_mode="r"), np.load(off_path)


class AnonPeak:
    """Peak anonymous resident memory (RssAnon: excludes pages of memory-mapped files), sampled every 50 ms."""

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_synthetic(n_vectors: int, workdir: Path, config: PlaidConfig, reuse: bool = False) -> None:
    """Build (or with ``reuse``, open the index an earlier run built) over ``n_vectors`` synthetic vectors; print
    build time and memory, recall@10 of 50 queries against exact MaxSim over the input vectors, and latency."""
    from latelex.scoring.maxsim import maxsim_packed

    vectors, offsets = synthetic(workdir, n_vectors)
    docs = MemmapDocs(vectors, offsets)
    ids = [f"s{i}" for i in range(len(docs))]
    target = workdir / f"plaid-synthetic-{n_vectors}"
    build_s = anon_peak = None
    if reuse and target.exists():
        index = PlaidIndex.open(target)
    else:
        with AnonPeak() as anon:
            t = time.perf_counter()
            index = PlaidIndex.build(target, ids, docs, config=config, overwrite=True, show_progress=False)
            build_s = time.perf_counter() - t
        anon_peak = anon.peak_mb
    info = index.info()
    rng = np.random.default_rng(1)
    queries = [torch.from_numpy(np.asarray(vectors[int(s) : int(s) + 32], dtype=np.float32))
               for s in rng.integers(0, n_vectors - 32, 50)]
    threads = torch.get_num_threads()
    index.search(queries[:2], k=10, threads=1)
    torch.set_num_threads(1)
    p50, p95, cpu50 = latencies(lambda q: index.search([q], k=10, threads=1), queries)
    torch.set_num_threads(threads)
    # Recall at the k=10 defaults and at ColBERT's settings for larger k (more cells, more documents kept).
    settings = {"k=10 defaults (settings 'auto')": {}, "k=10 settings='colbert' (ncells 1, threshold 0.5, ndocs 256)": dict(settings="colbert"),
                "ncells 2, threshold 0.45, ndocs 1024": dict(ncells=2, centroid_score_threshold=0.45, ndocs=1024),
                "ncells 4, threshold 0.4, ndocs 4096": dict(ncells=4, centroid_score_threshold=0.4, ndocs=4096)}
    got = {name: [{int(h.doc_id[1:]) for h in hits} for hits in index.search(queries, k=10, **kw)]
           for name, kw in settings.items()}
    t = time.perf_counter()
    exact_scores = maxsim_packed(torch.stack(queries), vectors, offsets)  # (50, N), one pass over the input
    exact_s = time.perf_counter() - t
    exact = [set(torch.topk(row, 10).indices.tolist()) for row in exact_scores]
    recall = {name: float(np.mean([len(e & g) / 10 for e, g in zip(exact, rows)])) for name, rows in got.items()}
    print()
    print(f"Synthetic clustered collection: {n_vectors:,} vectors, dim 128, {len(docs):,} documents, nbits {config.nbits}")
    built = "not measured: --synthetic-reuse opened an earlier build"
    print_table(["figure", "value"], [
        ["build time (s)", built if build_s is None else f"{build_s:.0f}"],
        ["centroids", f"{info['n_centroids']}"],
        ["peak anonymous RSS during build (MiB, excludes the memory-mapped input)", built if anon_peak is None else f"{anon_peak:.0f}"],
        ["peak RSS of the process (MiB, includes touched input pages)", f"{peak_rss_mb():.0f}"],
        ["bytes per token vector", f"{info['bytes_per_token_vector']:.1f}"],
        *[[f"recall@10 vs exact MaxSim over the input, {name} (50 queries of 32 tokens; exact pass {exact_s:.0f} s)",
           f"{value:.3f}"] for name, value in recall.items()],
        ["search p50 / p95 ms (k=10, 1 thread)", f"{p50:.1f} / {p95:.1f}"],
        ["search p50 CPU ms (k=10, 1 thread)", f"{cpu50:.1f}"],
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=Path, default=Path(tempfile.gettempdir()) / "plaid_cache")
    parser.add_argument("--nbits", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trained-vectors", type=Path, default=None,
                        help="folder for the built-in model's SciFact vectors: the 128-dim rows then use the trained "
                             "latelex-colbert-minilm instead of a random projection")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 128], choices=[384, 128],
                        help="which SciFact rows to run: the plain 384-dim vectors and/or the 128-dim ones")
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--centroid-paths", action="store_true",
                        help="also time every centroid-score path (int8, u8s8, float32) on each SciFact PLAID index, "
                             "in turn by blocks of queries")
    parser.add_argument("--synthetic", type=int, default=0, help="vectors in the synthetic build (0: skip)")
    parser.add_argument("--synthetic-dir", type=Path, default=Path(tempfile.gettempdir()) / "plaid_synthetic")
    parser.add_argument("--synthetic-reuse", action="store_true",
                        help="open the synthetic index an earlier run built instead of building it again")
    parser.add_argument("--max-points-per-centroid", type=int, default=PlaidConfig().max_points_per_centroid)
    args = parser.parse_args()
    print(machine())
    if not args.skip_scifact:
        bench_scifact(args.vectors, args.nbits, args.trained_vectors, tuple(args.dims), args.centroid_paths)
    if args.synthetic:
        args.synthetic_dir.mkdir(parents=True, exist_ok=True)
        bench_synthetic(args.synthetic, args.synthetic_dir, PlaidConfig(nbits=2, max_points_per_centroid=args.max_points_per_centroid),
                        reuse=args.synthetic_reuse)


if __name__ == "__main__":
    main()
