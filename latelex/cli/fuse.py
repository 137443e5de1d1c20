"""``latelex fuse RUN RUN ... --output F``: fuse runs (RRF or weighted scores), i.e. hybrid retrieval."""

from __future__ import annotations

import argparse
import sys

from .common import add_evaluation_options, add_verb, load_qrels, maybe_evaluate, usage, write_run


def register(subparsers) -> None:
    p = add_verb(subparsers, "fuse", "fuse run files (hybrid retrieval)",
                 "Fuse two or more run files (TREC runs or ColBERT ranking TSVs from any system: BM25, SPLADE, ColBERT) "
                 "by reciprocal-rank fusion or a weighted sum of normalised scores.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run files to fuse")
    p.add_argument("--method", choices=["rrf", "score"], default="rrf", help="rrf (default) or weighted score fusion")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per run (default: 1 each)")
    p.add_argument("--rrf-k", type=float, default=60, help="RRF constant k (default 60, as in Cormack et al.)")
    p.add_argument("--normalization", choices=["minmax", "zscore", "none"], default="minmax",
                   help="score fusion: per-query score normalisation (default minmax)")
    p.add_argument("--depth", type=int, help="use only the first N hits of each run's list")
    p.add_argument("-k", "--k", type=int, default=None, help="keep the top k fused hits per query (default: all)")
    p.add_argument("--output", required=True, help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    add_evaluation_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import read_run_any
    from ..search.fusion import reciprocal_rank_fusion, score_fusion

    qrels = load_qrels(args)  # a bad qrels file is reported before a run is written
    if len(args.runs) < 2:
        raise usage("fuse needs at least two run files")
    runs = [read_run_any(path) for path in args.runs]
    if args.method == "rrf":
        fused = reciprocal_rank_fusion(runs, k=args.rrf_k, weights=args.weights, depth=args.depth)
    else:
        fused = score_fusion(runs, weights=args.weights, normalization=args.normalization, depth=args.depth)
    if args.k is not None:
        fused = {qid: hits[: args.k] for qid, hits in fused.items()}
    write_run(args.output, fused, args.format)
    print(f"wrote {len(fused)} fused rankings to {args.output}", file=sys.stderr)
    maybe_evaluate(args, fused, qrels)
    return 0
