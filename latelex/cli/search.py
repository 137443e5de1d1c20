"""``latelex search DIR --query TEXT | --queries Q [--qrels R]``: search an index (and evaluate), write a run file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_evaluation_options, add_verb, maybe_evaluate, open_searcher, usage, write_run

#: Search-time options, passed to ``Retriever.search_queries`` when given (each engine takes its own).
SEARCH_OPTIONS = ("mode", "query_terms", "depth", "ncells", "centroid_score_threshold", "ndocs", "nprobe", "faiss_depth")


def register(subparsers) -> None:
    p = add_verb(subparsers, "search", "search an index (and evaluate)",
                 "Search an index with one or more --query texts (printed), or a --queries file (written as a run).")
    p.add_argument("index", metavar="DIR", help="an index built by `latelex index`")
    p.add_argument("--query", action="append", help="a query text to search and print (repeatable)")
    p.add_argument("--queries", help="queries: qid<TAB>text TSV, .jsonl, TREC topics, or a BEIR folder (with --split)")
    p.add_argument("-k", "--k", type=int, default=100, help="results per query (default 100)")
    p.add_argument("--output", help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    p.add_argument("--subset", help="file of document ids (one per line) to restrict the search to")
    p.add_argument("--mode", choices=["exact", "approximate"], help="inverted index: exact top-k or approximate")
    p.add_argument("--ncells", type=int, help="plaid: centroids probed per query token (default by k, as ColBERT)")
    p.add_argument("--centroid-score-threshold", type=float, help="plaid: centroid pruning threshold (default by k)")
    p.add_argument("--ndocs", type=int, help="plaid: documents decompressed and scored exactly (default by k)")
    p.add_argument("--nprobe", type=int, help="ivfpq: partitions probed per query token (default 32)")
    p.add_argument("--faiss-depth", type=int, help="ivfpq: nearest token vectors per query token (default 1024)")
    p.add_argument("--query-terms", type=int, help="inverted, approximate: keep the heaviest N query terms")
    p.add_argument("--depth", type=int, help="inverted, approximate: postings read per query term")
    p.add_argument("--metrics-json", help="also write the metrics as JSON here")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64, help="queries per forward pass (default 64)")
    add_evaluation_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import read_queries_any
    from ..search.retriever import Retriever

    if not args.query and not args.queries:
        raise usage("search needs --query TEXT or --queries FILE")
    retriever = open_searcher(args.index, args.device)
    bm25 = not isinstance(retriever, Retriever)
    if args.query:
        found = retriever.search_text(args.query, k=args.k) if bm25 else retriever.search(args.query, k=args.k)
        for text, hits in zip(args.query, found):
            print(f"query: {text}")
            for rank, hit in enumerate(hits, 1):
                snippet = ""
                if not bm25 and retriever.has_texts:
                    snippet = " " + retriever.document(hit.doc_id)[:100].replace("\n", " ")
                print(f"{rank:>4}  {hit.score:10.4f}  {hit.doc_id}{snippet}")
        return 0
    subset = None
    if args.subset:
        subset = [line.strip() for line in Path(args.subset).read_text(encoding="utf-8").splitlines() if line.strip()]
    options = {name: getattr(args, name) for name in SEARCH_OPTIONS if getattr(args, name) is not None}
    queries = read_queries_any(args.queries, args.split)
    if bm25:
        if options:
            raise usage(f"--{next(iter(options)).replace('_', '-')} does not apply to a BM25 index")
        ranking = retriever.search_queries(queries, k=args.k, subset=subset)
    else:
        ranking = retriever.search_queries(queries, k=args.k, subset=subset, batch_size=args.batch_size,
                                           show_progress=not args.quiet, **options)
    if args.output:
        write_run(args.output, ranking, args.format)
        print(f"wrote {len(ranking)} rankings to {args.output}", file=sys.stderr)
    maybe_evaluate(args, ranking)
    return 0
