"""Collections benchmark: updating a PLAID index (add 10 %, delete 10 %), filtered search latency, and the quality
of an updated index against a fresh build, on SciFact with the built-in model (latelex-colbert-minilm).

    .venv/bin/python bench/bench_updates.py             # SciFact: 5,183 documents, 300 test queries (~15 min)
    .venv/bin/python bench/bench_updates.py --quick     # first 1,000 documents, 100 queries (smoke run)

What each part measures (one table at the end):

1. Adding a random 10 % of the corpus to a PLAID index of the other 90 %: (a) latelex end to end,
   ``Retriever.add`` with the real encoder (encoding + compression + document store + commit); (b) the same
   documents through a full rebuild of 100 % (``Retriever.build``), whose encoding time is the measured time of
   encoding every document once (each text is encoded once and cached, so the build itself runs on cached
   vectors); (c) the engines alone on the same precomputed vectors: latelex ``PlaidIndex.add`` against PyLate
   PLAID's ``add_documents`` on an existing index (PyLate runs in the peers' environment, in a worker process,
   see ``bench/plaid_peers.py``; its time is measured inside the worker), plus each engine's full build of 100 %.
2. Deleting the same 10 % (from a copy of the updated index): ``Retriever.delete``, latelex ``PlaidIndex.delete``
   and PyLate's ``remove_documents``; and whether the result matches the 90 % index before the add.
3. Filtered against unfiltered search latency with one thread, one query at a time, on the updated index:
   ``Retriever.search(q, k=10, where=...)`` with no filter and filters selecting 50 %, 10 % and 1 % of the
   documents (a synthetic metadata field ``bucket`` = position % 100), with query encoding included and
   with the query vectors cached (search only). Conditions are interleaved query by query.
4. The updated index's top 10 against a fresh full build's top 10 (mean overlap), nDCG@10 of both, and the
   same after ``Retriever.compact()``; the floor of such comparisons, a second fresh build with another seed
   against the first; for PyLate PLAID, its updated index against its own fresh build (on the same vectors).
   The fresh builds take the documents in the order a compaction writes them (base, then added).

``--threads`` sets torch's threads (and the peers') for encoding, building and updating; part 3 always uses one.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, print_table  # noqa: E402
from plaid_peers import (PLAID_NBITS, WorkerError, available_peers, load_packed, percentile_ms,  # noqa: E402
                         save_packed)

PLAID_PEERS = ("pylate-plaid (fast-plaid backend)", "pylate-plaid (stanford backend)")
#: The filters of part 3, with the share of documents each selects (metadata ``bucket`` = position % 100).
FILTERS = (("no filter", None, 1.0), ("where bucket < 50", "bucket < 50", 0.5),
           ("where bucket < 10", "bucket < 10", 0.1), ("where bucket = 0", "bucket = 0", 0.01))


def cpu_line() -> str:
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{machine()}; CPU flags: {' '.join(shown) or 'no AVX2/AVX-512'}"


def overlap(a: dict, b: dict, k: int = 10) -> float:
    values = [len(set(a[q][:k]) & set(b[q][:k])) / max(1, min(k, len(b[q][:k]))) for q in b]
    return float(np.mean(values)) if values else float("nan")


def ndcg(run_ids: dict, qrels) -> float:
    from latelex import evaluate
    from latelex.types import Hit

    run = {q: [Hit(d, float(len(ids) - i)) for i, d in enumerate(ids)] for q, ids in run_ids.items()}
    return float(evaluate(run, qrels, ["nDCG@10"])["nDCG@10"])


def retriever_run(retriever, queries: dict[str, str], k: int = 10) -> dict[str, list[str]]:
    hits = retriever.search(list(queries.values()), k=k, with_text=False)
    return {q: [h.doc_id for h in row] for q, row in zip(queries, hits)}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def s(x: float) -> str:
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first 1,000 documents and 100 queries")
    parser.add_argument("--limit", type=int, default=None, help="first N documents (default: all; --quick: 1000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for encoding, builds, updates")
    parser.add_argument("--no-peers", action="store_true", help="skip PyLate")
    parser.add_argument("--workdir", default=None, help="where the indexes go (default: a temporary folder)")
    args = parser.parse_args()

    from latelex import ColBERT
    from latelex.data.auto import read_collection_documents
    from latelex.data.beir import BeirDataset
    from latelex.encoders.caching import CachingEncoder
    from latelex.index.plaid import PlaidConfig, PlaidIndex
    from latelex.models import DEFAULT_COLBERT_MODEL
    from latelex.search.retriever import Retriever
    from latelex.types import Document

    torch.set_num_threads(args.threads)
    # SciFact's long abstracts are truncated to the model's budget, as in every SciFact bench: one warning per build
    logging.getLogger("latelex.search.retriever").setLevel(logging.ERROR)
    folder = SHARED / "datasets" / "scifact"
    if not folder.exists():
        raise SystemExit(f"{folder} is absent: the benchmark needs the shared datasets (set LATELEX_SHARED)")
    limit = args.limit or (1000 if args.quick else None)
    raw = list(read_collection_documents(folder))[:limit]
    docs = [Document(d.id, d.text, {**(d.metadata or {}), "bucket": i % 100}) for i, d in enumerate(raw)]
    data = BeirDataset(folder, split="test")
    qrels = data.qrels()
    queries = dict(list(data.queries())[: 100 if args.quick else None])
    qrels = {q: qrels[q] for q in queries}
    rng = np.random.default_rng(0)
    n_add = max(1, round(0.1 * len(docs)))
    added_set = set(rng.choice(len(docs), size=n_add, replace=False).tolist())
    base = [d for i, d in enumerate(docs) if i not in added_set]
    added = [d for i, d in enumerate(docs) if i in added_set]
    added_ids = [d.id for d in added]
    print(f"# {len(docs)} SciFact documents ({len(base)} + {len(added)} added), {len(queries)} queries, "
          f"{args.threads} threads", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-updates-", dir=args.workdir))
    enc = CachingEncoder(ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu"))
    rows: list[list[str]] = []
    try:
        # --- 1. adding 10 % through the Retriever ---------------------------------------------------------
        enc_base_s, _ = timed(lambda: enc.encode_documents([d.text for d in base]))
        print(f"# encoded the {len(base)} base documents in {enc_base_s:.0f} s", flush=True)
        build_base_s, updated = timed(lambda: Retriever.build(work / "updated", enc, base, kind="plaid",
                                                              show_progress=False))
        enc.cache_queries = True
        base_run = retriever_run(updated, queries)
        before = enc.encode_seconds
        add_s, _ = timed(lambda: updated.add(added, show_progress=False))
        enc_add_s = enc.encode_seconds - before
        print(f"# Retriever.add: {add_s:.1f} s ({enc_add_s:.1f} s encoding)", flush=True)
        # The rebuild takes the documents in the order a compaction writes them (base, then added), so that
        # compact() can be held to it exactly; a second rebuild with another seed measures how far two PLAID
        # builds of the same documents disagree (the floor of any comparison between two PLAID indexes).
        rebuilt = base + added
        fresh_s, fresh = timed(lambda: Retriever.build(work / "fresh", enc, rebuilt, kind="plaid", show_progress=False))
        seed1 = Retriever.build(work / "fresh-seed1", enc, rebuilt, kind="plaid", show_progress=False,
                                engine_config=PlaidConfig(seed=1))
        enc_all_s = enc.encode_seconds  # every document encoded exactly once: base + added
        docs_per_s = len(docs) / enc_all_s
        rebuild_s = fresh_s + enc_all_s
        rows += [
            ["1a", f"Retriever.add {len(added)} docs to {len(base)}, end to end", s(add_s),
             f"encoding {s(enc_add_s)} + index/commit {s(add_s - enc_add_s)}"],
            ["1b", f"Retriever.build of all {len(docs)} (the rebuild alternative)", s(rebuild_s),
             f"encoding {s(enc_all_s)} (measured once, {docs_per_s:.0f} docs/s) + build {s(fresh_s)} on cached vectors; "
             f"{rebuild_s / add_s:.1f}x the add"],
            ["1b", f"Retriever.build of the {len(base)} base docs, cached vectors", s(build_base_s), ""],
        ]

        # --- 4. quality: updated against fresh (before 3, whose timing loop does not change the index) ----
        updated_run = retriever_run(updated, queries)
        fresh_run = retriever_run(fresh, queries)
        seed1_run = retriever_run(seed1, queries)
        seed1.close()
        nd_updated, nd_fresh = ndcg(updated_run, qrels), ndcg(fresh_run, qrels)

        # --- 3. filtered search latency, one thread, one query at a time --------------------------------
        torch.set_num_threads(1)
        texts = list(queries.values())
        enc.cache_queries = True
        updated.search(texts, k=10, with_text=False)  # fill the query cache
        lat = {(name, mode): [] for name, _, _ in FILTERS for mode in ("encoded", "cached")}
        counts = {name: [] for name, _, _ in FILTERS}
        for q in texts[:3]:  # warm-up
            for _, where, _ in FILTERS:
                updated.search(q, k=10, where=where, with_text=False)
        for q in texts:
            for name, where, _ in FILTERS:
                for mode in ("encoded", "cached"):
                    enc.cache_queries = mode == "cached"
                    start = time.perf_counter()
                    hits = updated.search(q, k=10, where=where, with_text=False)
                    lat[(name, mode)].append(time.perf_counter() - start)
                if where is not None:
                    bound = 50 if "< 50" in where else 10 if "< 10" in where else 1
                    bad = [h.doc_id for h in hits if not h.metadata["bucket"] < bound]
                    if bad:
                        raise SystemExit(f"filter {where!r} returned {bad[0]!r}, which does not match it")
                counts[name].append(len(hits))
        enc.cache_queries = True
        torch.set_num_threads(args.threads)
        p50_none = percentile_ms(lat[("no filter", "cached")], 50)
        for name, where, share in FILTERS:
            e, c = lat[(name, "encoded")], lat[(name, "cached")]
            rows.append(["3", f"search k=10, 1 thread, {name} ({share:.0%} of docs)",
                         f"p50 {percentile_ms(c, 50):.1f} / p95 {percentile_ms(c, 95):.1f} ms",
                         f"search only (query vectors cached); with encoding p50 {percentile_ms(e, 50):.1f} / p95 "
                         f"{percentile_ms(e, 95):.1f} ms; {percentile_ms(c, 50) / p50_none:.2f}x unfiltered p50; "
                         f"{statistics.mean(counts[name]):.1f} hits/query"])

        # --- 2. deleting the added 10 % from a copy of the updated index -------------------------------
        shutil.copytree(work / "updated", work / "deleted")
        deleted = Retriever.open(work / "deleted", encoder=enc)
        del_s, result = timed(lambda: deleted.delete(added_ids))
        deleted_run = retriever_run(deleted, queries)
        rows.append(["2", f"Retriever.delete {result.deleted} docs (the added ones)", s(del_s),
                     f"top-10 overlap with the {len(base)}-doc index before the add: {overlap(deleted_run, base_run):.4f}"])
        deleted.close()

        # --- 4. (continued) compact -------------------------------------------------------------------
        compact_s, _ = timed(lambda: updated.compact(show_progress=False))
        compact_run = retriever_run(updated, queries)
        rows += [
            ["4", "updated index (90 % build + 10 % add) vs fresh build: top-10 overlap",
             f"{overlap(updated_run, fresh_run):.4f}", f"nDCG@10 updated {nd_updated:.4f}, fresh {nd_fresh:.4f}"],
            ["4", "fresh build with seed 1 vs fresh build (seed 0): top-10 overlap", f"{overlap(seed1_run, fresh_run):.4f}",
             "the floor: two PLAID builds of the same documents and vectors, codecs trained from other samples"],
            ["4", "after Retriever.compact(): top-10 overlap with the fresh build",
             f"{overlap(compact_run, fresh_run):.4f}",
             f"nDCG@10 {ndcg(compact_run, qrels):.4f}; compact took {s(compact_s)} on cached vectors "
             f"(+ re-encoding {s(enc_all_s)} with a real encoder)"],
        ]
        updated.close()
        fresh.close()

        # --- 1c / 2 / 4: the engines alone on the same vectors, latelex and PyLate -----------------------
        enc.cache_queries = True
        qvecs = enc.encode_queries(texts)
        packed = work / "packed"
        packed.mkdir()
        save_packed(packed / "base", [d.id for d in base], enc.encode_documents([d.text for d in base]))
        save_packed(packed / "added", added_ids, enc.encode_documents([d.text for d in added]))
        base_ids, base_vecs = load_packed(packed / "base")
        _, added_vecs = load_packed(packed / "added")
        all_ids, all_vecs = base_ids + added_ids, base_vecs + added_vecs
        qids = list(queries)
        config = PlaidConfig(nbits=PLAID_NBITS)
        ours: dict[str, float] = {}
        ours["build"], index = timed(lambda: PlaidIndex.build(work / "engine", base_ids, base_vecs, config=config,
                                                              show_progress=False))
        ours["add"], _ = timed(lambda: index.add(added_ids, added_vecs))
        ours_updated = {q: [h.doc_id for h in row] for q, row in zip(qids, index.search(qvecs, k=10))}
        ours["remove"], _ = timed(lambda: index.delete(added_ids))
        ours["rebuild"], index2 = timed(lambda: PlaidIndex.build(work / "engine-all", all_ids, all_vecs, config=config,
                                                                 show_progress=False))
        ours_fresh = {q: [h.doc_id for h in row] for q, row in zip(qids, index2.search(qvecs, k=10))}
        ours_overlap = overlap(ours_updated, ours_fresh)
        index = index2 = None  # let the engines close their memory maps

        peers: dict[str, dict | str] = {}
        entries = [] if args.no_peers else available_peers(work, PLAID_PEERS)
        for name, factory in entries:
            if isinstance(factory, str):
                peers[name] = factory
                print(f"# {name}: not available: {factory}", flush=True)
                continue
            got: dict = {}
            peer = factory()
            try:
                peer.set_threads(args.threads)
                got["build"] = peer.build(base_ids, base_vecs)
                got["add"] = peer.add(added_ids, added_vecs)
                updated_ids = dict(zip(qids, peer.search(qvecs, 10)))
                got["remove"] = peer.remove(added_ids)
                peer.close()
                peer = factory()
                peer.set_threads(args.threads)
                got["rebuild"] = peer.build(all_ids, all_vecs)
                fresh_ids = dict(zip(qids, peer.search(qvecs, 10)))
                got["overlap"] = overlap(updated_ids, fresh_ids)
                got["ndcg"] = (ndcg(updated_ids, qrels), ndcg(fresh_ids, qrels))
                peers[name] = got
            except (WorkerError, NotImplementedError) as exc:
                peers[name] = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                peer.close()
            print(f"# {name}: {peers[name]}", flush=True)
        if not entries:
            peers["PyLate PLAID"] = "--no-peers"

        def peer_cells(op: str) -> str:
            cells = []
            for name, got in peers.items():
                short = name.replace("pylate-plaid ", "PyLate ").replace(" backend", "")
                if isinstance(got, str):
                    cells.append(f"{short}: not available: {got}")
                else:
                    cells.append(f"{short} {s(got[op])} = {got[op] / ours[op]:.2f}x ours")
            return "; ".join(cells)

        n_base, n_add, n_all = len(base_ids), len(added_ids), len(all_ids)
        rows += [
            ["1c", f"engine build of {n_base} base docs (precomputed vectors)", s(ours["build"]), peer_cells("build")],
            ["1c", f"engine add of {n_add} docs: PlaidIndex.add vs add_documents", s(ours["add"]),
             peer_cells("add") + ("; (fast-plaid re-creates an index of <= 999 documents on update)"
                                  if n_base <= 999 else "")],
            ["1c", f"engine full build of all {n_all} docs", s(ours["rebuild"]), peer_cells("rebuild")],
            ["2", f"engine delete of the {n_add} added: PlaidIndex.delete vs remove_documents", s(ours["remove"]),
             peer_cells("remove")],
        ]
        quality = [f"{name.replace('pylate-plaid ', 'PyLate ').replace(' backend', '')} {got['overlap']:.4f} "
                   f"(nDCG@10 updated {got['ndcg'][0]:.4f}, fresh {got['ndcg'][1]:.4f})"
                   for name, got in peers.items() if not isinstance(got, str)]
        rows.append(["4", "engine updated vs engine fresh build: top-10 overlap", f"{ours_overlap:.4f}",
                     "; ".join(quality) or "PyLate not available"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"machine: {cpu_line()}")
    print(f"data: SciFact {len(docs)} documents ({len(base)} base + {len(added)} added, random, seed 0), "
          f"{len(queries)} test queries; model {DEFAULT_COLBERT_MODEL}; PLAID nbits={PLAID_NBITS}; "
          f"{args.threads} threads except part 3 (1 thread)")
    print("ratios: PyLate's time / latelex's time (above 1: latelex faster); PyLate timed inside its worker process")
    print()
    print_table(["part", "measure", "latelex", "notes / peer (same run)"], rows)


if __name__ == "__main__":
    main()
