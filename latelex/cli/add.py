"""``latelex add INDEX --collection C [--metadata FILE] [--upsert]``: add documents to an index."""

from __future__ import annotations

import argparse

from .common import add_collection_options, add_verb, open_retriever, plural, read_collection


def register(subparsers) -> None:
    p = add_verb(subparsers, "add", "add documents to an index",
                 "Encode the documents of a collection and add them to an index, with the encoder, kind, chunking "
                 "and token pooling (--pool-factor) it was built with. An id already in the index is an error unless "
                 "--upsert replaces it. Atomic: an interrupted add leaves the index as it was.")
    p.add_argument("index", metavar="INDEX", help="an index built by `latelex index`")
    add_collection_options(p)
    p.add_argument("--upsert", action="store_true", help="replace documents whose id is already in the index")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    documents, metadata = read_collection(args)
    retriever = open_retriever(args.index, args.device)
    change = retriever.upsert if args.upsert else retriever.add
    result = change(documents, metadata=metadata, batch_size=args.batch_size, show_progress=not args.quiet)
    total = len(retriever)
    note = f", replacing {result.replaced}" if args.upsert else ""
    print(f"added {plural(result.added, 'document')} to {args.index}{note} ({total} in all)")
    return 0
