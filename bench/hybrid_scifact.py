"""Hybrid retrieval on SciFact test: BM25, plain MiniLM ColBERT, their fusions, and ColBERT re-ranking of BM25.

Systems (300 test queries, whole corpus of 5,183 documents, exact search, docs = title + " " + text):

- BM25: :class:`latelex.index.bm25.BM25Index` (bm25s, Lucene BM25 k1=1.5 b=0.75, English stopwords, Snowball
  stemmer), and as its peer plain ``bm25s`` called directly in the same run;
- ColBERT: all-MiniLM-L6-v2 token vectors, no projection, query max 64 / doc max 256 tokens, exact MaxSim over a
  flat index (built once into ``--cache`` and reopened on later runs; ~5 min to encode on 2 cores);
- RRF(BM25, ColBERT): reciprocal-rank fusion of the two top-100 lists, k=60, equal weights (nothing tuned);
- score fusion(BM25, ColBERT): min-max normalised scores, ``(1 - w) * BM25 + w * ColBERT``, with w chosen by
  nDCG@10 on the **train** split (809 queries, qrels/train.tsv), never on test;
- ColBERT re-ranking of the BM25 top 100 (exact MaxSim from the ColBERT index's stored vectors).

    python bench/hybrid_scifact.py                      # prints the table; --json FILE also writes the figures
    python bench/hybrid_scifact.py --cache /tmp/latelex-bench-cache
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, machine, peak_rss_mb, print_table  # noqa: E402

from latelex.data import BeirDataset  # noqa: E402
from latelex.evaluate import evaluate  # noqa: E402
from latelex.types import Hit, Run  # noqa: E402

METRICS = ("nDCG@10", "RR@10", "R@100")
DEFAULT_CACHE = Path(os.environ.get("LATELEX_BENCH_CACHE", "/tmp/latelex-bench-cache"))
#: Reference figures of ../shared/datasets/README.md (scifact test).
REFERENCE = {"BM25": {"nDCG@10": 0.686, "RR@10": 0.649, "R@100": 0.913},
             "ColBERT": {"nDCG@10": 0.707, "RR@10": 0.674, "R@100": 0.931}}
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def scifact(split: str) -> BeirDataset:
    folder = SHARED / "datasets" / "scifact"
    if not folder.exists():
        raise SystemExit(f"{folder} is absent: the benchmark needs the shared datasets (set LATELEX_SHARED)")
    return BeirDataset(folder, split)


def colbert_encoder():
    from latelex.encoders.colbert import ColBERT

    return ColBERT.from_pretrained(SHARED / "models" / "all-MiniLM-L6-v2", query_maxlen=64, doc_maxlen=256)


def open_or_build_colbert(cache: Path, corpus: list[tuple[str, str]], log=print):
    """The ColBERT retriever over SciFact in ``cache``, reopened when its encoder spec matches, else (re)built."""
    from latelex.errors import LatelexError
    from latelex.search.retriever import Retriever

    encoder = colbert_encoder()
    path = cache / "scifact-minilm-colbert"
    if (path / "manifest.json").exists():
        try:
            retriever = Retriever.open(path, encoder=encoder)
            if retriever.manifest["encoder"] == encoder.spec() and len(retriever) == len(corpus):
                log(f"reusing the ColBERT index in {path}")
                return retriever
        except LatelexError as exc:
            log(f"cannot reuse {path} ({exc}); rebuilding it")
    log(f"encoding {len(corpus)} documents into {path} (about 5 minutes on 2 cores)")
    return Retriever.build(path, encoder, corpus, overwrite=True, show_progress=False)


def build_bm25(path: Path, corpus: list[tuple[str, str]]):
    from latelex.index.bm25 import BM25Config, BM25Index

    config = BM25Config(method="lucene", k1=1.5, b=0.75, stopwords="en", stemmer="english")
    return BM25Index.build(path, [d for d, _ in corpus], [t for _, t in corpus], config=config, overwrite=True)


def bm25s_direct(corpus: list[tuple[str, str]], queries: dict[str, str], k: int) -> Run:
    """The peer: bm25s used as its README shows, same settings, no latelex code in between."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    model = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    model.index(bm25s.tokenize([t for _, t in corpus], stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    tokens = bm25s.tokenize(list(queries.values()), stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = model.retrieve(tokens, k=k, show_progress=False)
    ids = [d for d, _ in corpus]
    return {q: [Hit(ids[j], float(s)) for j, s in zip(docs[i], scores[i])] for i, q in enumerate(queries)}


def cut(run: Run, k: int) -> Run:
    return {q: hits[:k] for q, hits in run.items()}


def tune_score_fusion_weight(bm25_run: Run, colbert_run: Run, qrels, depth: int) -> tuple[float, list[tuple[float, float]]]:
    """The ColBERT weight w of ``(1 - w) * BM25 + w * ColBERT`` (min-max) with the best nDCG@10 on ``qrels``."""
    from latelex.search.fusion import score_fusion

    curve = []
    for w in WEIGHT_GRID:
        if w in (0.0, 1.0):  # one member alone: the fusion is that member's ranking
            continue
        fused = score_fusion([bm25_run, colbert_run], weights=[1 - w, w], normalization="minmax", depth=depth)
        curve.append((w, evaluate(cut(fused, depth), qrels, ["nDCG@10"])["nDCG@10"]))
    best = max(curve, key=lambda item: (item[1], -abs(item[0] - 0.5)))[0]
    return best, curve


def measure(cache: Path = DEFAULT_CACHE, depth: int = 100, rrf_k: float = 60, tune: bool = True,
            peer: bool = True, log=print) -> dict:
    """Every figure of the table, as ``{"systems": {name: {metric: value, "seconds": s}}, ...}``."""
    from latelex.search.fusion import reciprocal_rank_fusion, score_fusion
    from latelex.search.hybrid import HybridSearcher, rerank_first_stage

    test, train = scifact("test"), scifact("train")
    corpus = list(test.corpus())
    test_queries, test_qrels = dict(test.queries()), test.qrels()
    colbert = open_or_build_colbert(cache, corpus, log=log)
    systems: dict[str, dict] = {}

    def record(name: str, run: Run, seconds: float) -> Run:
        systems[name] = {**evaluate(cut(run, depth), test_qrels, list(METRICS)), "seconds": seconds}
        log(f"{name}: " + ", ".join(f"{m} {systems[name][m]:.4f}" for m in METRICS))
        return run

    with tempfile.TemporaryDirectory(prefix="latelex-bm25-") as tmp:
        start = time.perf_counter()
        bm25 = build_bm25(Path(tmp) / "bm25", corpus)
        bm25_build = time.perf_counter() - start

        start = time.perf_counter()
        bm25_run = record("BM25", bm25.search_queries(test_queries, k=depth), time.perf_counter() - start)
        if peer:
            start = time.perf_counter()
            record("BM25 (bm25s direct, peer)", bm25s_direct(corpus, test_queries, depth), time.perf_counter() - start)
        start = time.perf_counter()
        colbert_run = record("ColBERT", colbert.search_queries(test_queries, k=depth), time.perf_counter() - start)

        start = time.perf_counter()
        rrf = reciprocal_rank_fusion([bm25_run, colbert_run], k=rrf_k, depth=depth)
        record("RRF(BM25, ColBERT)", rrf, time.perf_counter() - start)
        # the same through the one-call object (on 20 queries, to keep the run short): it must give the same run
        searcher = HybridSearcher.from_members([bm25, colbert], fusion="rrf", depth=depth, rrf_k=rrf_k)
        sample = dict(list(test_queries.items())[:20])
        one_call = searcher.search_queries(sample, k=10)
        if any([h.doc_id for h in one_call[q]] != [h.doc_id for h in rrf[q][:10]] for q in sample):
            raise SystemExit("HybridSearcher disagrees with reciprocal_rank_fusion on the members' runs")

        weight, curve = None, []
        if tune:
            train_queries, train_qrels = dict(train.queries()), train.qrels()
            log(f"tuning the score-fusion weight on {len(train_queries)} train queries")
            weight, curve = tune_score_fusion_weight(bm25.search_queries(train_queries, k=depth),
                                                     colbert.search_queries(train_queries, k=depth), train_qrels, depth)
            start = time.perf_counter()
            fused = score_fusion([bm25_run, colbert_run], weights=[1 - weight, weight], normalization="minmax",
                                 depth=depth)
            record(f"score fusion(BM25, ColBERT), w_colbert={weight} (train)", fused, time.perf_counter() - start)

        start = time.perf_counter()
        reranked = rerank_first_stage(bm25_run, colbert, test_queries, depth=depth)
        record(f"ColBERT re-rank of BM25 top {depth}", reranked, time.perf_counter() - start)

    return {"systems": systems, "queries": len(test_queries), "documents": len(corpus), "score_fusion_weight": weight, "train_curve": curve, "bm25_build_seconds": bm25_build,
            "depth": depth, "rrf_k": rrf_k, "machine": machine(), "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the reusable ColBERT index")
    parser.add_argument("--depth", type=int, default=100, help="hits per member and candidates re-ranked (100)")
    parser.add_argument("--rrf-k", type=float, default=60, help="RRF constant (60, untuned)")
    parser.add_argument("--no-tune", action="store_true", help="skip the score fusion tuned on train")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    result = measure(args.cache, depth=args.depth, rrf_k=args.rrf_k, tune=not args.no_tune,
                     log=lambda m: print(m, file=sys.stderr))
    systems = result["systems"]
    best_member = max(systems["BM25"]["nDCG@10"], systems["ColBERT"]["nDCG@10"])
    rows = []
    for name, values in systems.items():
        reference = REFERENCE.get(name, {}).get("nDCG@10")
        is_hybrid = name not in ("BM25", "ColBERT") and not name.startswith("BM25 (")
        beats = ("yes" if values["nDCG@10"] > best_member else "no") if is_hybrid else ""
        rows.append([name, *(f"{values[m]:.4f}" for m in METRICS),
                     "" if reference is None else f"{reference:.3f}",
                     "" if reference is None else f"{values['nDCG@10'] / reference:.3f}",
                     beats, f"{values['seconds']:.1f}"])
    print(f"SciFact test, {result['queries']} queries, {result['documents']} documents; "
          f"depth {result['depth']}, RRF k {result['rrf_k']:g}")
    print_table(["system", *METRICS, "README nDCG@10", "ratio", "beats both members", "query s"], rows)
    peer = systems.get("BM25 (bm25s direct, peer)")
    if peer:
        print(f"BM25Index / bm25s direct, nDCG@10: {systems['BM25']['nDCG@10'] / peer['nDCG@10']:.4f}")
    if result["score_fusion_weight"] is not None:
        print("score fusion weight tuned on train (w_colbert: train nDCG@10): "
              + ", ".join(f"{w:g}: {v:.4f}" for w, v in result["train_curve"]))
    winners = [r[0] for r in rows if r[6] == "yes"]
    print("beat both members' nDCG@10: " + (", ".join(winners) if winners else "none"))
    print(f"BM25 build {result['bm25_build_seconds']:.1f} s; peak RSS {result['peak_rss_mb']:.0f} MiB")
    print(f"machine: {result['machine']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
