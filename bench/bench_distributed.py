"""Scale-out on Ray: distributed encoding throughput, and the fan-out cost of a sharded index.

    .venv/bin/python bench/bench_distributed.py                 # SciFact, the built-in model
    .venv/bin/python bench/bench_distributed.py --docs 1000     # a shorter run

1. **Encoding throughput.** The same PLAID build of SciFact three times in one run: one process (torch's default
   threads), then ``build_on_ray(..., ray=RayConfig(workers=W))`` with 1 and 2 Ray workers (a local cluster of
   as many logical CPUs as the machine has cores; each worker one model and one torch thread). Wall time of the
   whole build (workers starting and loading their model included, codec training and compression included),
   documents per second, and the ratio to the single process. Each Ray build is held against the single one:
   the largest difference of 64 documents' vectors encoded in process and on Ray, the token counts, the share of
   centroids within 1e-3, and the top-10 agreement of the 300 test queries' hits.
2. **Fan-out.** SciFact (vectors encoded once, then reused) as one PLAID index and as a 4-shard PLAID index, the
   shards searched in local threads and as Ray actors: per-query search latency (pre-encoded queries, k=10, no
   texts; one query at a time, the three in turn query by query), p50 / p95; the recall of the exact top 10 (flat
   index) of the single index, of each shard (against the exact top 10 of its own documents) and of the merged
   result; bytes per vector and per document, for the scale-out estimate in the README.

3. **Passage length for the README's estimate** (``--passages N``, default 2000): the mean number of token vectors
   per passage of the MS MARCO DL19 subset with the built-in model.

There is no peer row: none of the peers (ColBERT, PyLate, RAGatouille, fast-plaid, next-plaid) encodes or serves
across processes; the single-process build in the same run is the baseline.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, print_table  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    pairs = [(set(f), set(e)) for f, e in zip(found, exact) if e]
    return sum(len(f & e) / len(e) for f, e in pairs) / max(1, len(pairs))


def encoding(docs, queries: dict[str, str], work: Path, workers: list[int], chunk_size: int) -> list[list[str]]:
    import numpy as np
    import ray
    import torch

    from latelex import ColBERT, Retriever
    from latelex.distributed.cluster import RayConfig
    from latelex.distributed.encode import RayEncoder
    from latelex.distributed.indexing import build_on_ray
    from latelex.models import DEFAULT_COLBERT_MODEL

    encoder = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu")
    texts = list(queries.values())
    rows = []
    start = time.perf_counter()
    single = Retriever.build(work / "single", encoder, docs, kind="plaid", show_progress=False)
    base = time.perf_counter() - start
    rows.append(["1 process", f"{os.cpu_count()} torch threads", f"{base:.1f}", f"{len(docs) / base:.1f}", "1.00",
                 "-", "-", "-", "-"])
    encoded = single.encode_queries(texts)
    reference_top = [[h.doc_id for h in row] for row in single.search(texts, k=10, with_text=False, encoded=encoded)]
    reference = np.load(next((work / "single").rglob("centroids.npy"))).astype(np.float32)
    reference_lens = np.concatenate([np.load(p) for p in sorted((work / "single").rglob("*doclens*.npy"))])
    sample = [d.text for d in docs[:64]]
    in_process = encoder.encode_documents(sample, show_progress=False)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        for w in workers:
            start = time.perf_counter()
            built = build_on_ray(work / f"ray-{w}", encoder, docs, kind="plaid", show_progress=False,
                                 ray=RayConfig(workers=w, chunk_size=chunk_size))
            seconds = time.perf_counter() - start
            top = [[h.doc_id for h in row] for row in built.search(texts, k=10, with_text=False, encoded=encoded)]
            built.close()
            agree = sum(len(set(a) & set(b)) for a, b in zip(top, reference_top)) / (10 * len(texts))
            centroids = np.load(next((work / f"ray-{w}").rglob("centroids.npy"))).astype(np.float32)
            close = (float((np.abs(centroids - reference).max(axis=1) < 1e-3).mean())
                     if centroids.shape == reference.shape else 0.0)
            lens = np.concatenate([np.load(p) for p in sorted((work / f"ray-{w}").rglob("*doclens*.npy"))])
            wrapped = RayEncoder(encoder, RayConfig(workers=w, chunk_size=16), work / f"sample-{w}")
            on_ray = wrapped.encode_documents(sample)
            wrapped.close()
            diff = max(float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())
                       for a, b in zip(in_process, on_ray))
            rows.append([f"Ray, {w} worker{'s' if w > 1 else ''}", "1 torch thread each", f"{seconds:.1f}",
                         f"{len(docs) / seconds:.1f}", f"{base / seconds:.2f}", f"{diff:.1e}",
                         "yes" if np.array_equal(lens, reference_lens) else "NO", f"{close:.3f}", f"{agree:.3f}"])
    finally:
        ray.shutdown()
    single.close()
    return rows


def fan_out(docs, queries: dict[str, str], work: Path, shards: int) -> tuple[list[list[str]], list[str]]:
    import ray

    from latelex import ColBERT, Retriever, ShardedRetriever
    from latelex.distributed.shard_actors import ReplicaConfig, ray_shard_opener
    from latelex.encoders.caching import CachingEncoder
    from latelex.models import DEFAULT_COLBERT_MODEL

    encoder = CachingEncoder(ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu"))
    flat = Retriever.build(work / "flat", encoder, docs, kind="flat", show_progress=False)
    single = Retriever.build(work / "plaid", encoder, docs, kind="plaid", show_progress=False)
    ShardedRetriever.build(work / "sharded", encoder, docs, kind="plaid", shards=shards, show_progress=False).close()
    texts = list(queries.values())
    encoded = single.encode_queries(texts)
    exact = [[h.doc_id for h in row] for row in flat.search(texts, k=10, with_text=False, encoded=encoded)]

    ray.init(num_cpus=max(shards, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        local = ShardedRetriever.open(work / "sharded", encoder=encoder)
        remote = ShardedRetriever.open(work / "sharded", encoder=encoder,
                                       shard_opener=ray_shard_opener(ReplicaConfig(cpus_per_replica=0.5)))
        first = local.shards[0]

        def one_shard(text, k, with_text, encoded):
            return first.read("search", [text], k=k, with_text=with_text, encoded=encoded)[0]

        systems = {"single index": single.search, f"{shards} shards, threads": local.search,
                   f"{shards} shards, Ray actors": remote.search, "one shard alone (in process)": one_shard}
        for search in systems.values():  # warm
            for i in range(4):
                search(texts[i], k=10, with_text=False, encoded=encoded[i:i + 1])
        times: dict[str, list[float]] = {name: [] for name in systems}
        tops: dict[str, list[list[str]]] = {name: [] for name in systems}
        for i, text in enumerate(texts):
            for name, search in systems.items():
                start = time.perf_counter()
                hits = search(text, k=10, with_text=False, encoded=encoded[i:i + 1])
                times[name].append((time.perf_counter() - start) * 1000)
                tops[name].append([h.doc_id for h in hits])
        rows = [[name, f"{percentile(t, 50):.1f}", f"{percentile(t, 95):.1f}",
                 f"{recall(tops[name], exact):.3f}" if name != "one shard alone (in process)" else "-"]
                for name, t in times.items()]
        # each shard's own recall: its PLAID top 10 against the exact top 10 of its own documents
        notes = []
        for shard in local.shards:
            ids = shard.read("doc_ids")
            own_exact = [[h.doc_id for h in row] for row in
                         flat.search(texts, k=10, with_text=False, encoded=encoded, subset=ids)]
            own = [[h.doc_id for h in row] for row in
                   shard.read("search", texts, k=10, with_text=False, encoded=encoded)]
            notes.append(f"shard {shard.number}: {len(ids)} documents, recall of its exact top 10 "
                         f"{recall(own, own_exact):.3f}")
        info = single.info()
        vectors, size = info["token_vectors"], info["bytes_on_disk"]
        notes.append(f"single PLAID index: {info['bytes_per_token_vector']:.1f} bytes per token vector (index files, "
                     f"texts excluded), {vectors / len(docs):.1f} vectors and {size / len(docs) / 1024:.2f} KiB "
                     f"per document")
        local.close()
        remote.close()
    finally:
        ray.shutdown()
    return rows, notes


def passage_vectors(count: int) -> str:
    from latelex import ColBERT
    from latelex.data.auto import read_collection_documents
    from latelex.models import DEFAULT_COLBERT_MODEL

    folder = SHARED / "datasets" / "msmarco-dl19-subset"
    texts = [d.text for d in read_collection_documents(folder)][:count]
    encoder = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu")
    lengths = sorted(m.shape[0] for m in encoder.encode_documents(texts, batch_size=64, show_progress=False))
    return (f"MS MARCO DL19 subset, {len(texts)} passages: {sum(lengths) / len(lengths):.1f} token vectors per passage "
            f"(median {lengths[len(lengths) // 2]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=0, help="index only the first N SciFact documents (0: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")
    parser.add_argument("--chunk-size", type=int, default=256, help="documents per Ray chunk (default 256)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--passages", type=int, default=2000, help="MS MARCO passages to measure (default 2000)")
    parser.add_argument("--skip", choices=("encoding", "fan-out", "passages"), action="append", default=[])
    parser.add_argument("--workdir", type=Path, help="where the indexes go (default: a temporary folder, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from latelex.data.auto import read_collection_documents, read_queries_any

    folder = SHARED / "datasets" / "scifact"
    if not folder.exists():
        raise SystemExit(f"{folder} is absent: the benchmark needs the shared datasets (set LATELEX_SHARED)")
    docs = list(read_collection_documents(folder))
    if args.docs:
        docs = docs[:args.docs]
    queries = dict(read_queries_any(folder, split="test"))
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-", dir=args.workdir))
    try:
        print(f"machine: {machine()}")
        print(f"# SciFact: {len(docs)} documents, {len(queries)} test queries; built-in model (latelex-colbert-minilm)")
        if "encoding" not in args.skip:
            rows = encoding(docs, queries, work / "encoding", args.workers, args.chunk_size)
            print("\n## Encoding throughput (a whole PLAID build)")
            print_table(["build", "threads", "seconds", "docs/s", "vs 1 process", "max |vector diff| (64 docs)",
                         "same token counts", "centroids within 1e-3", "top-10 agreement"], rows)
            print("- the codec is k-means over the vectors: a last-bit difference in float16 moves some points to "
                  "another centroid, so centroids (and hits near the cut) can differ while the vectors agree")
        if "fan-out" not in args.skip:
            rows, notes = fan_out(docs, queries, work / "fan-out", args.shards)
            print(f"\n## Fan-out: one PLAID index against {args.shards} shards (search only, k=10, one query at a time)")
            print_table(["index", "p50 ms", "p95 ms", "recall of exact top 10"], rows)
            for note in notes:
                print(f"- {note}")
        if "passages" not in args.skip:
            print(f"\n## Passage length\n- {passage_vectors(args.passages)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
