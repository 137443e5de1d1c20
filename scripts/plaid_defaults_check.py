"""Do PlaidIndex's search defaults hold on every collection size? Prints one table against the targets of item 7
of the collections issue, with the built-in model (latelex-colbert-minilm) at the defaults:

* recall of the exact top 10 (exact = FlatIndex over the same float16 vectors) on the first 200, 1,000 and all
  5,183 SciFact abstracts (300 test queries; target >= 0.90);
* nDCG@10 and Recall@100 of PLAID against the flat index on SciFact test and nfcorpus dev, whole collection
  (targets: within 0.005 and 0.01);
* single-thread p50 latency per query (query encoding excluded) with ColBERT's settings (``settings="colbert"``)
  and with the adaptive defaults (``settings="auto"``), and with ``--before REV`` also PlaidIndex as commit REV
  had it (its defaults, ColBERT's), all timed query by query in turn in the same run (target: no worse at
  SciFact scale). Every row also counts the queries that got fewer than min(k, documents) hits.

    nice -n 5 .venv/bin/python scripts/plaid_defaults_check.py --before 9321660  # encodes once into --cache

Each corpus is encoded once (about 4 minutes per corpus on 2 cores) and cached as float16 arrays in ``--cache``;
later runs only build the indexes and search.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latelex.data import BeirDataset  # noqa: E402
from latelex.evaluate import evaluate  # noqa: E402
from latelex.index.flat import FlatIndex  # noqa: E402
from latelex.index.plaid import PlaidConfig, PlaidIndex  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from common import machine, print_table  # noqa: E402

SHARED = ROOT.parent / "shared"
DATASETS = {"scifact": "test", "nfcorpus": "dev"}


# --- vectors, encoded once -----------------------------------------------------------------------------


def encoded(cache: Path, name: str, split: str):
    """``(doc ids, doc matrices, query ids, query matrices, qrels, encoder spec)`` of one BEIR dataset, encoded
    once with the built-in model and kept in ``cache`` as float16 arrays plus offsets."""
    from latelex import ColBERT
    from latelex.models import DEFAULT_COLBERT_MODEL

    folder = cache / name
    data = BeirDataset(SHARED / "datasets" / name, split=split)
    files = [folder / f for f in ("docs.npy", "docs_offsets.npy", "queries.npy", "queries_offsets.npy", "ids.json", "spec.json")]
    if not all(f.exists() for f in files):
        folder.mkdir(parents=True, exist_ok=True)
        model = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL)
        corpus, queries = list(data.corpus()), list(data.queries())
        t = time.perf_counter()
        for prefix, mats in (("queries", model.encode_queries([t for _, t in queries], show_progress=False)),
                             ("docs", model.encode_documents([t for _, t in corpus], show_progress=True))):
            offsets = np.zeros(len(mats) + 1, dtype=np.int64)
            np.cumsum([m.shape[0] for m in mats], out=offsets[1:])
            np.save(folder / f"{prefix}.npy", torch.cat(mats).numpy().astype(np.float16))
            np.save(folder / f"{prefix}_offsets.npy", offsets)
        (folder / "ids.json").write_text(json.dumps({"docs": [i for i, _ in corpus], "queries": [i for i, _ in queries]}))
        (folder / "spec.json").write_text(json.dumps(model.spec()))
        print(f"encoded {name}: {len(corpus)} documents, {len(queries)} queries in {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)
    ids = json.loads((folder / "ids.json").read_text())

    def split_rows(prefix: str) -> list[np.ndarray]:
        x, o = np.load(folder / f"{prefix}.npy"), np.load(folder / f"{prefix}_offsets.npy")
        return [x[o[i] : o[i + 1]] for i in range(len(o) - 1)]

    docs = split_rows("docs")
    queries = [torch.from_numpy(q.astype(np.float32)) for q in split_rows("queries")]
    return ids["docs"], docs, ids["queries"], queries, data.qrels(), json.loads((folder / "spec.json").read_text())


def built(cache: Path, tag: str, ids: list[str], docs: list[np.ndarray], spec: dict, fresh: bool) -> tuple[FlatIndex, PlaidIndex, float]:
    """The flat and PLAID indexes of ``docs`` (built once into ``cache``; ``fresh`` builds them again), and the
    PLAID build's seconds (0 when reused)."""
    flat_path, plaid_path = cache / "indexes" / f"flat-{tag}", cache / "indexes" / f"plaid-{tag}"
    if fresh or not flat_path.exists():
        FlatIndex.build(flat_path, ids, docs, encoder=spec, overwrite=True)
    seconds = 0.0
    if fresh or not plaid_path.exists():
        t = time.perf_counter()
        PlaidIndex.build(plaid_path, ids, docs, config=PlaidConfig(), encoder=spec, overwrite=True, show_progress=False)
        seconds = time.perf_counter() - t
    return FlatIndex.open(flat_path), PlaidIndex.open(plaid_path), seconds


def overlap(got: list[list], exact: list[list], k: int) -> float:
    """Mean fraction of the exact top ``k`` that ``got`` finds in its own top ``k``."""
    return float(np.mean([len({h.doc_id for h in g[:k]} & {h.doc_id for h in e[:k]}) / k for g, e in zip(got, exact)]))


def short(runs: list[list], k: int, n_docs: int) -> int:
    """Queries with fewer than min(k, documents) hits."""
    return sum(len(r) < min(k, n_docs) for r in runs)


def p50_interleaved(searchers: dict[str, object], queries: list[torch.Tensor], k: int) -> dict[str, float]:
    """Single-thread p50 ms per query of each searcher (``fn(queries, k) -> hits``), all of them timed one after
    the other on every query (the order rotating), so that a busy neighbour slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in searchers}
    names = list(searchers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, q in enumerate(queries):
            for name in names[i % len(names):] + names[: i % len(names)]:
                t = time.perf_counter()
                searchers[name]([q], k)
                times[name].append((time.perf_counter() - t) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {name: statistics.median(v) for name, v in times.items()}


def before_class(rev: str, folder: Path):
    """PlaidIndex as commit ``rev`` of this repository had it: its ``latelex`` package extracted with ``git archive``
    into ``folder`` as ``latelex_before`` (the package imports itself relatively) and imported beside this one."""
    target = folder / "latelex_before"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "latelex"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        (folder / "latelex").rename(target)
    sys.path.insert(0, str(folder))
    from latelex_before.index.plaid import PlaidIndex as Before

    return Before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "plaid_defaults",
                        help="folder for the encoded vectors and the built indexes (reused between runs)")
    parser.add_argument("--fresh", action="store_true", help="build the indexes again even when the cache holds them")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 0],
                        help="SciFact prefixes whose recall of the exact top 10 is measured (0: the whole corpus)")
    parser.add_argument("--before", default=None, metavar="REV",
                        help="also search with PlaidIndex as commit REV had it (its default settings), timed in the same "
                             "run; e.g. the commit before the adaptive defaults")
    parser.add_argument("--encode-only", action="store_true")
    args = parser.parse_args()
    data = {name: encoded(args.cache, name, split) for name, split in DATASETS.items()}
    if args.encode_only:
        return
    before = before_class(args.before, args.cache / f"before-{args.before}") if args.before else None
    headers = ["collection", "docs", "settings", "recall exact top10", "queries < k hits (k=10/100)",
               "nDCG@10 (flat)", "R@100 (flat)", "p50 ms k=10", "p50 ms k=100"]
    rows = []
    jobs = [("scifact", n) for n in args.sizes] + [("nfcorpus", 0)]
    for name, n in jobs:
        doc_ids, docs, qids, queries, qrels, spec = data[name]
        if n:
            doc_ids, docs = doc_ids[:n], docs[:n]
        tag = f"{name}-{len(doc_ids)}"
        flat, plaid, build_s = built(args.cache, tag, doc_ids, docs, spec, args.fresh)
        if build_s:
            print(f"built {tag}: {build_s:.0f} s, {plaid.info()['n_centroids']} centroids", file=sys.stderr, flush=True)
        searchers = {preset: (lambda qs, k, preset=preset: plaid.search(qs, k=k, settings=preset, threads=1))
                     for preset in ("colbert", "auto")}
        if before is not None:
            old = before.open(plaid.path)
            searchers = {f"before ({args.before[:9]})": lambda qs, k: old.search(qs, k=k, threads=1), **searchers}
        whole = len(doc_ids) == len(data[name][0])
        for search in searchers.values():  # compile the kernels once, outside any timing
            search(queries[:4], 10)
        exact10, exact100 = flat.search(queries, k=10), flat.search(queries, k=100)
        flat_m = evaluate(dict(zip(qids, exact100)), qrels, ["nDCG@10", "R@100"]) if whole else None
        p10 = p50_interleaved(searchers, queries, 10)
        p100 = p50_interleaved(searchers, queries, 100) if whole else None
        for label, search in searchers.items():
            got10, got100 = search(queries, 10), search(queries, 100)
            row = [name if whole else f"{name} first {len(doc_ids)}", f"{len(doc_ids):,}", label,
                   f"{overlap(got10, exact10, 10):.4f}", f"{short(got10, 10, len(doc_ids))}/{short(got100, 100, len(doc_ids))}"]
            if flat_m is not None:
                m10 = evaluate(dict(zip(qids, got10)), qrels, ["nDCG@10"])["nDCG@10"]
                m100 = evaluate(dict(zip(qids, got100)), qrels, ["R@100"])["R@100"]
                row += [f"{m10:.4f} ({m10 - flat_m['nDCG@10']:+.4f})", f"{m100:.4f} ({m100 - flat_m['R@100']:+.4f})"]
            else:
                row += ["-", "-"]
            row += [f"{p10[label]:.2f}", f"{p100[label]:.2f}" if p100 else "-"]
            rows.append(row)
            print("  ".join(row), file=sys.stderr, flush=True)
        if flat_m is not None:
            rows.append([name, f"{len(doc_ids):,}", "flat (exact)", "1.0000", "0/0", f"{flat_m['nDCG@10']:.4f}",
                         f"{flat_m['R@100']:.4f}", "-", "-"])
    print(machine())
    print(f"PLAID nbits 2 (PlaidConfig() defaults) against FlatIndex over the same float16 vectors of the built-in model; "
          f"queries: SciFact test ({len(data['scifact'][2])}), nfcorpus dev ({len(data['nfcorpus'][2])}); nDCG@10 from k=10 "
          "searches, R@100 from k=100 searches; p50: one thread, query encoding excluded, the rows of a collection timed "
          "query by query in turn")
    print_table(headers, rows)
    print("targets (settings 'auto'): recall >= 0.90 at every size; nDCG@10 within 0.005 and R@100 within 0.01 of flat; "
          "no query with fewer than min(k, documents) hits; SciFact p50 no worse than 'colbert'")


if __name__ == "__main__":
    main()
