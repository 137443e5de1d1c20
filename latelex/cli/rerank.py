"""``latelex rerank --candidates F --output F [--model M]``: re-rank another system's candidates with ColBERT."""

from __future__ import annotations

import argparse
import sys

from .common import (
    load_qrels,
    DEFAULT_MODEL, add_encoder_options, add_evaluation_options, add_verb, load_encoder, maybe_evaluate, usage,
    write_run,
)


def register(subparsers) -> None:
    p = add_verb(subparsers, "rerank", "re-rank another system's candidates with ColBERT",
                 "Re-rank candidates from a ColBERT top-k TSV (qid pid rank), an MS MARCO top1000 file "
                 "(qid pid query passage) or a TREC run, encoding the documents on the fly.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"ColBERT model folder or Hugging Face Hub name (default: {DEFAULT_MODEL})")
    p.add_argument("--candidates", required=True, help="top-k TSV, top1000 file or TREC run")
    p.add_argument("--queries", help="queries (needed unless the candidates file carries them)")
    p.add_argument("--collection", help="collection (needed unless the candidates file carries passages)")
    p.add_argument("--output", required=True, help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    p.add_argument("-k", "--k", type=int, default=None, help="keep the top k per query (default: all candidates)")
    p.add_argument("--metrics-json", help="also write the metrics as JSON here")
    add_evaluation_options(p)
    add_encoder_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import read_candidates, read_documents, read_queries_any
    from ..search.rerank import rerank

    qrels = load_qrels(args)  # a bad qrels file is reported before a run is written
    candidates = read_candidates(args.candidates)
    queries = candidates.queries
    if args.queries:
        queries = dict(read_queries_any(args.queries, args.split))
    if queries is None:
        raise usage(f"{args.candidates} carries no query texts; pass --queries")
    documents = candidates.passages
    if args.collection:
        wanted = {d for pids in candidates.pids_by_query.values() for d in pids}
        documents = {d: t for d, t in read_documents(args.collection) if d in wanted}
    if documents is None:
        raise usage(f"{args.candidates} carries no passages; pass --collection")
    encoder = load_encoder(args)
    if encoder.spec()["family"] != "colbert":
        raise usage("re-ranking uses a ColBERT model; pass a ColBERT checkpoint or --family colbert")
    ranking = rerank(encoder, queries, candidates.pids_by_query, documents, k=args.k, batch_size=args.batch_size,
                     show_progress=not args.quiet)
    write_run(args.output, ranking, args.format)
    print(f"wrote {len(ranking)} re-ranked lists to {args.output}", file=sys.stderr)
    maybe_evaluate(args, ranking, qrels)
    return 0
