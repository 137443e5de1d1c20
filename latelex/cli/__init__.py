"""The ``latelex`` command line: a thin shell over the Python API, verb for verb.

    latelex index    DIR --model M --collection C     encode a collection and build an index
    latelex search   DIR --queries Q [--qrels R]      search (and evaluate), write a run file; --where filters
    latelex add      DIR --collection C [--upsert]    add (or replace) documents
    latelex delete   DIR ID ... [--ids F] [--strict]  delete documents by id
    latelex compact  DIR                              merge segments, reclaim deleted space
    latelex rerank   --model M --candidates F ...     re-rank another system's candidates with ColBERT
    latelex evaluate --run F --qrels R                score a run file
    latelex fuse     RUN RUN ... --output F           fuse runs (RRF or weighted scores): hybrid retrieval
    latelex info     DIR                              describe an index
    latelex train    OUT --model M --triples F ...    train ColBERT or SPLADE from triples
    latelex mine     --queries Q --qrels R ...        mine hard negatives into n-way training files
    latelex serve    DIR [NAME=DIR ...] [--port P]    serve indexes over HTTP, with a search page

Library errors print one line and exit with status 1; nothing is left half-written.

One module per verb. Each defines ``register(subparsers)``, which adds the verb's parser and sets ``func=run``,
and ``run(args) -> int``, which imports what it needs when called (``latelex --help`` imports no torch).
To add a verb, write ``latelex/cli/<verb>.py`` and list it in ``VERBS``; shared options and helpers are in
``common.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Sequence

from . import add, compact, delete, evaluate, fuse, index, info, mine, rerank, search, serve, train
from .common import EXAMPLES, UsageError, show_warning

#: The verbs, in the order ``latelex --help`` lists them.
VERBS = (index, search, add, delete, compact, rerank, evaluate, info, fuse, train, mine, serve)

__all__ = ["VERBS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="latelex", description="Neural search with ColBERT late interaction and SPLADE.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"latelex {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb in VERBS:
        verb.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import LatelexError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="latelex: %(message)s")
    warnings.showwarning = show_warning
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        parser.error(str(exc))
    except LatelexError as exc:
        print(f"latelex: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"latelex: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("latelex: interrupted; nothing was published", file=sys.stderr)
        return 130
    return 0
