"""Time exact MaxSim over a packed collection: segment-max strategies against a padded-batch baseline.

Synthetic clustered token vectors at about SciFact's scale (5,000 documents, 1.2M token vectors),
stored as float16 like latelex's flat index, and 32-token queries. Each strategy scores one batch of
``--timed-queries`` queries against the whole collection; the table reports milliseconds per query and
the ratio to the padded baseline (``maxsim_padded`` over groups of documents padded to the group's
longest, the way padded-batch implementations score a collection).

    .venv/bin/python bench/bench_maxsim.py                      # dims 128 and 384, ~2 minutes on 2 cores
    .venv/bin/python bench/bench_maxsim.py --dims 128 --timed-queries 8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latelex.scoring import maxsim as ms  # noqa: E402


def clustered_collection(docs: int, tokens: int, dim: int, clusters: int, max_len: int, seed: int):
    """float16 (T, dim) unit vectors around ``clusters`` centres, offsets (docs + 1,), and the centres.

    Document lengths are log-normal, truncated at ``max_len`` (an encoder's doc_maxlen) and scaled so that
    the collection holds about ``tokens`` vectors.
    """
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(mean=0.0, sigma=0.5, size=docs)
    scale = tokens / raw.sum()
    for _ in range(50):  # truncation lowers the total; raise the scale until it is about right
        lengths = np.clip(np.round(raw * scale), 8, max_len).astype(np.int64)
        scale *= tokens / max(1, lengths.sum())
    offsets = np.zeros(docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((total, dim), dtype=np.float16)
    step = 1 << 17
    for a in range(0, total, step):
        b = min(total, a + step)
        noise = rng.standard_normal((b - a, dim), dtype=np.float32)
        noise *= np.float32(0.35 / np.sqrt(dim))
        block = centres[rng.integers(0, clusters, b - a)] + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[a:b] = block
    return vectors, offsets, centres


def clustered_queries(centres: np.ndarray, n: int, length: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    noise = rng.standard_normal((n, length, dim), dtype=np.float32) * np.float32(0.35 / np.sqrt(dim))
    q = centres[rng.integers(0, len(centres), (n, length))] + noise
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return torch.from_numpy(q.astype(np.float32))


def padded_groups(vectors: np.ndarray, offsets: np.ndarray, group: int):
    """The collection as (n, Lmax, dim) float16 groups with masks, padded to each group's longest document."""
    groups = []
    n = len(offsets) - 1
    for a in range(0, n, group):
        b = min(n, a + group)
        lengths = offsets[a + 1 : b + 1] - offsets[a:b]
        padded = np.zeros((b - a, int(lengths.max()), vectors.shape[1]), dtype=np.float16)
        mask = np.zeros(padded.shape[:2], dtype=bool)
        for i in range(b - a):
            padded[i, : lengths[i]] = vectors[offsets[a + i] : offsets[a + i + 1]]
            mask[i, : lengths[i]] = True
        groups.append((torch.from_numpy(padded), torch.from_numpy(mask)))
    return groups


def run_padded(Q: torch.Tensor, groups, chunk_bytes: int) -> torch.Tensor:
    saved = ms.PADDED_CHUNK_BYTES
    ms.PADDED_CHUNK_BYTES = chunk_bytes
    try:
        with torch.no_grad():
            return torch.cat([ms.maxsim_padded(Q, D.float(), d_mask=m) for D, m in groups], dim=1)
    finally:
        ms.PADDED_CHUNK_BYTES = saved


def timed(fn, repeats: int):
    """Best wall-clock and CPU seconds of ``repeats`` runs (the machine may be shared), and the result."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - w)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--tokens", type=int, default=1_200_000, help="token vectors in the collection (about)")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 384])
    parser.add_argument("--queries", type=int, default=300, help="queries generated")
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--timed-queries", type=int, default=16, help="queries scored, as one batch, per strategy")
    parser.add_argument("--clusters", type=int, default=2048)
    parser.add_argument("--max-doc-len", type=int, default=300, help="longest document, in tokens")
    parser.add_argument("--pad-group", type=int, default=256, help="documents per padded group (baseline)")
    parser.add_argument("--strategies", nargs="+", default=list(ms.SEGMENT_MAX))
    parser.add_argument("--chunk-mb", type=float, nargs="+", default=[4.0, 64.0],
                        help="packed chunk budgets tried with the auto strategy, besides the default")
    parser.add_argument("--repeats", type=int, default=1, help="runs per strategy; the best time counts")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    default_mb = ms.PACKED_CHUNK_BYTES_PER_THREAD * torch.get_num_threads() / 2**20
    padded_mb = ms.PADDED_CHUNK_BYTES / 2**20
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    auto = ms.AUTO_STRATEGY["cpu"]
    for dim in args.dims:
        t0 = time.perf_counter()
        vectors, offsets, centres = clustered_collection(
            args.docs, args.tokens, dim, args.clusters, args.max_doc_len, seed=dim
        )
        queries = clustered_queries(centres, args.queries, args.query_length, seed=dim + 1)
        groups = padded_groups(vectors, offsets, args.pad_group)
        padded_tokens = sum(int(D.shape[0] * D.shape[1]) for D, _ in groups)
        print(f"\ndim {dim}: {args.docs} documents, {len(vectors)} token vectors (padded baseline holds "
              f"{padded_tokens}, {padded_tokens / len(vectors):.2f}x), {args.queries} queries of "
              f"{args.query_length} tokens, {args.timed_queries} timed in one batch; "
              f"setup {time.perf_counter() - t0:.1f}s")
        Q = queries[: args.timed_queries]
        n = len(Q)
        M = n * args.query_length

        wall, cpu, reference = timed(lambda: run_padded(Q, groups, ms.PADDED_CHUNK_BYTES), args.repeats)
        rows = [(f"padded baseline @{padded_mb:g}MB", wall, cpu)]
        wall, cpu, out = timed(lambda: run_padded(Q, groups, int(default_mb * 2**20)), args.repeats)
        rows.append((f"padded baseline @{default_mb:g}MB", wall, cpu))
        for strategy in args.strategies:
            wall, cpu, out = timed(lambda: ms.maxsim_packed(Q, vectors, offsets, strategy=strategy), args.repeats)
            torch.testing.assert_close(out, reference, atol=1e-2, rtol=1e-3)
            label = f"packed {strategy}" + (" (auto)" if strategy == auto else "")
            rows.append((f"{label} @{default_mb:g}MB", wall, cpu))
        for mb in args.chunk_mb:
            if mb == default_mb:
                continue
            chunk = max(1, int(mb * 2**20) // (4 * (M + dim)))
            wall, cpu, out = timed(lambda: ms.maxsim_packed(Q, vectors, offsets, chunk_tokens=chunk), args.repeats)
            torch.testing.assert_close(out, reference, atol=1e-2, rtol=1e-3)
            rows.append((f"packed {auto} (auto) @{mb:g}MB", wall, cpu))

        base_wall, base_cpu = rows[0][1], rows[0][2]
        print(f"{'strategy':<36} {'wall ms/q':>10} {'vs padded':>10} {'cpu ms/q':>10} {'vs padded':>10}")
        for label, wall, cpu in rows:
            print(f"{label:<36} {1000 * wall / n:>10.1f} {wall / base_wall:>9.2f}x "
                  f"{1000 * cpu / n:>10.1f} {cpu / base_cpu:>9.2f}x")
        best = min(rows[2:], key=lambda r: r[1])
        print(f"all {args.queries} queries with the fastest packed row ({best[0]}): "
              f"about {best[1] / n * args.queries:.0f}s wall")


if __name__ == "__main__":
    main()
