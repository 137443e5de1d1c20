"""``latelex mine --queries Q --output F [--index DIR | --collection C]``: mine hard negatives into n-way files."""

from __future__ import annotations

import argparse

from .common import add_verb, open_searcher, usage


def register(subparsers) -> None:
    p = add_verb(subparsers, "mine", "mine hard negatives into n-way training files",
                 "Retrieve for every judged query with an index built by `latelex index` (--index: ColBERT, SPLADE "
                 "or BM25) or with BM25 over --collection, "
                 "sample negatives from ranks A..B that are not judged relevant, optionally score them with a "
                 "--teacher (a cross-encoder, a ColBERT model such as a plain encoder's token vectors, or a ColBERT "
                 "index), and write JSONL training tuples.")
    p.add_argument("--queries", required=True, help="training queries (BEIR folder with --split, TSV, JSONL)")
    p.add_argument("--qrels", help="qrels (default: the --queries BEIR folder)")
    p.add_argument("--split", help="BEIR split (e.g. train)")
    p.add_argument("--index", help="an index to retrieve with, of any kind (otherwise BM25 over --collection)")
    p.add_argument("--collection", help="collection (for BM25 and for a teacher)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--nway", type=int, default=8, help="passages per tuple (default 8)")
    p.add_argument("--ranks", type=int, nargs=2, default=[1, 100], metavar=("A", "B"), help="sample negatives from ranks A..B")
    p.add_argument("--examples-per-query", type=int, default=1)
    p.add_argument("--teacher", help="what scores the tuples: a cross-encoder (sequence-classification checkpoint), a "
                                     "ColBERT model or plain encoder (MaxSim, for self-distillation), or a ColBERT index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, ...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import read_documents, read_qrels_any, read_queries_any
    from ..train.mine import BM25Retriever, mine_hard_negatives
    from ..train.teachers import load_teacher

    queries = dict(read_queries_any(args.queries, args.split))
    qrels = read_qrels_any(args.qrels or args.queries, args.split)
    documents = None
    if args.index:
        retriever = open_searcher(args.index, args.device)
    else:
        if not args.collection:
            raise usage("mining needs --index DIR (any kind) or --collection for BM25")
        documents = dict(read_documents(args.collection))
        retriever = BM25Retriever.build(documents)
    teacher = None
    if args.teacher:
        teacher = load_teacher(args.teacher, device=args.device)
        if documents is None and not hasattr(teacher, "score_ids"):
            if not args.collection:
                raise usage("a --teacher model needs --collection to read passage texts (a teacher index does not)")
            documents = dict(read_documents(args.collection))
    result = mine_hard_negatives(retriever, queries, qrels, args.output, nway=args.nway, ranks=tuple(args.ranks),
                                 examples_per_query=args.examples_per_query, seed=args.seed, teacher=teacher,
                                 documents=documents)
    print(f"wrote {result.examples} examples for {result.queries} queries to {result.path}")
    return 0
