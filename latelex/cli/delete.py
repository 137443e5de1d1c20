"""``latelex delete INDEX [ID ...] [--ids FILE] [--strict]``: delete documents from an index by id."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_verb, open_retriever, plural, usage


def register(subparsers) -> None:
    p = add_verb(subparsers, "delete", "delete documents from an index",
                 "Delete documents by id (their texts, metadata and vectors). Ids not in the index are counted, or "
                 "with --strict refused before anything is deleted. Atomic. `latelex compact` reclaims the space.")
    p.add_argument("index", metavar="INDEX", help="an index built by `latelex index`")
    p.add_argument("ids", metavar="ID", nargs="*", help="document ids to delete")
    p.add_argument("--ids", dest="ids_file", metavar="FILE", help="a file of document ids, one per line")
    p.add_argument("--strict", action="store_true", help="an id not in the index is an error, and nothing is deleted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError

    ids = list(args.ids)
    if args.ids_file:
        ids += [line.strip() for line in Path(args.ids_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise usage("delete needs document ids: ID ... or --ids FILE")
    retriever = open_retriever(args.index, load_encoder=False)  # deleting encodes nothing: no model is loaded
    if args.strict:
        missing = [d for d in ids if d not in retriever]
        if missing:
            shown = ", ".join(repr(d) for d in missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise InputError(f"{plural(len(missing), 'id')} not in {args.index}: {shown}; nothing was deleted")
    result = retriever.delete(ids)
    message = f"deleted {plural(result.deleted, 'document')} from {args.index} ({len(retriever)} left)"
    if result.not_found:
        shown = ", ".join(repr(d) for d in result.not_found[:3]) + (", ..." if len(result.not_found) > 3 else "")
        message += f"; {plural(len(result.not_found), 'id')} not found: {shown}"
    print(message)
    return 0
