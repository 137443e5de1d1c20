"""``latelex index DIR --collection C [--model M] [--kind K]``: encode a collection and build an index."""

from __future__ import annotations

import argparse
import sys

from .common import DEFAULT_MODEL, add_encoder_options, add_verb, load_encoder, usage


def register(subparsers) -> None:
    p = add_verb(subparsers, "index", "encode a collection and build an index",
                 "Encode a collection (ColBERT TSV, JSONL or BEIR folder) and build an index at DIR.")
    p.add_argument("index", metavar="DIR", help="where to write the index (a directory)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model folder or Hugging Face Hub name (default: {DEFAULT_MODEL}, the built-in offline ColBERT model)")
    p.add_argument("--collection", required=True, help="collection.tsv (pid<TAB>text), documents .jsonl, or a BEIR folder")
    p.add_argument("--kind", choices=["flat", "plaid", "ivfpq", "sparse", "inverted", "bm25"],
                   help="index kind. ColBERT: flat (exact MaxSim, the default), plaid (ColBERTv2 residual compression "
                        "and PLAID search), ivfpq (ColBERT v1: faiss IVFPQ candidates + exact MaxSim). SPLADE: sparse "
                        "(exact matrix product, the default), inverted (dynamic pruning; exact or approximate). "
                        "bm25: BM25 through bm25s (English stopwords, Snowball stemmer), no model needed")
    g = p.add_argument_group("engine options")
    g.add_argument("--nbits", type=int, choices=[1, 2, 4], help="plaid: bits per residual dimension (default 2)")
    g.add_argument("--centroids", type=int, help="plaid: number of centroids (default: ColBERTv2's formula)")
    g.add_argument("--partitions", type=int, help="ivfpq: IVF partitions (default scaled to the collection)")
    g.add_argument("--sample", type=float, help="ivfpq: fraction of token vectors to train on (default 0.3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at DIR")
    p.add_argument("--no-store-text", action="store_true", help="do not keep document texts in the index")
    add_encoder_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import read_documents
    from ..search.retriever import Retriever

    if args.kind == "bm25":
        from ..index.bm25 import BM25Index

        engine_config(args)  # refuses engine options that do not apply
        pairs = list(read_documents(args.collection))
        index = BM25Index.build(args.index, [d for d, _ in pairs], [t for _, t in pairs], overwrite=args.overwrite)
        print(f"indexed {len(index)} documents into {args.index} (BM25, no model)")
        return 0
    encoder = load_encoder(args)
    print(f"encoder: {encoder!r}", file=sys.stderr)
    retriever = Retriever.build(
        args.index, encoder, read_documents(args.collection), kind=args.kind, overwrite=args.overwrite,
        store_text=not args.no_store_text, batch_size=args.batch_size, show_progress=not args.quiet,
        engine_config=engine_config(args),
    )
    info = retriever.info()
    print(f"indexed {info.get('documents', len(retriever))} documents into {retriever.path}")
    return 0


def engine_config(args: argparse.Namespace):
    """The engine configuration the index command's options describe (None: the engine's defaults)."""
    from ..config import config_replace

    if args.kind == "plaid":
        from ..index.plaid import PlaidConfig

        changes = {"nbits": args.nbits, "n_centroids": args.centroids}
        return config_replace(PlaidConfig(), **{k: v for k, v in changes.items() if v is not None})
    if args.kind == "ivfpq":
        from ..index.ivfpq import IvfPqConfig

        changes = {"partitions": args.partitions, "sample": args.sample}
        return config_replace(IvfPqConfig(), **{k: v for k, v in changes.items() if v is not None})
    for name in ("nbits", "centroids", "partitions", "sample"):
        if getattr(args, name) is not None:
            raise usage(f"--{name} applies to --kind plaid or ivfpq")
    return None
