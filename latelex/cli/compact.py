"""``latelex compact INDEX``: rewrite an index as one fresh segment of its live documents."""

from __future__ import annotations

import argparse

from .common import add_verb, open_retriever, plural


def register(subparsers) -> None:
    p = add_verb(subparsers, "compact", "merge an index's segments and reclaim deleted space",
                 "Rewrite an index as one segment of its live documents, re-encoded from their stored texts: reclaims "
                 "the space of deleted documents, merges the segments adds wrote and, for plaid and ivfpq, retrains "
                 "the codec on today's collection. The result equals a fresh build. Atomic.")
    p.add_argument("index", metavar="INDEX", help="an index built by `latelex index`")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    retriever = open_retriever(args.index, args.device)
    before = retriever.info()
    retriever.compact(batch_size=args.batch_size, show_progress=not args.quiet)
    after = retriever.info()
    dropped = before["tombstones"]
    print(f"compacted {args.index}: {plural(after['documents'], 'document')} in "
          f"{plural(after['segments'], 'segment')} (was {before['segments']})"
          f"{f', {dropped} deleted entries dropped' if dropped else ''}; "
          f"{_size(after['bytes_on_disk_with_texts'])} on disk (was {_size(before['bytes_on_disk_with_texts'])})")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover
