"""``latelex evaluate --run F --qrels R``: score a run file."""

from __future__ import annotations

import argparse

from .common import add_evaluation_options, add_verb, usage


def register(subparsers) -> None:
    p = add_verb(subparsers, "evaluate", "score a run file", "Score a TREC run or ColBERT ranking TSV against qrels.")
    p.add_argument("--run", required=True, help="TREC run or ColBERT ranking TSV")
    p.add_argument("--per-query", action="store_true", help="print one line per metric and query")
    p.add_argument("--ignore-identical-ids", action="store_true", help="drop hits whose id equals the query id (BEIR)")
    add_evaluation_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.qrels:
        raise usage("evaluate needs --qrels")
    from ..data import read_qrels_any, read_run_any
    from ..evaluate import evaluate, format_table

    ranking = read_run_any(args.run)
    results = evaluate(ranking, read_qrels_any(args.qrels, args.split), args.metrics, per_query=args.per_query,
                       ignore_identical_ids=args.ignore_identical_ids)
    if args.per_query:
        for metric, values in results.items():
            for qid, value in values.items():
                print(f"{metric}\t{qid}\t{value:.4f}")
    else:
        print(format_table(results))
    return 0
