"""``latelex search DIR --query TEXT [--explain] | --queries Q [--qrels R] [--where EXPR]``: search an index (and
evaluate), print the hits (with ``--explain``, what each query token or term adds to a hit's score) or write a run
file.

Any index ``latelex index`` builds opens through the Retriever (BM25 included); a plain BM25 index of an older
latelex is still read. The engine flags come from the registry of index kinds: one the index's kind does not take
is a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..index import registry
from .common import (add_backend_options, add_evaluation_options, add_verb, backend_options, load_qrels, maybe_evaluate,
                     metavar, open_searcher, usage, write_run)

#: Metadata fields printed per hit (the rest are counted).
SHOWN_FIELDS = 3
#: Characters of text printed per hit.
SNIPPET_CHARS = 160
#: Terms printed per explained hit of a SPLADE or BM25 index (``--explain``; ColBERT prints every query token).
EXPLAINED_TERMS = 10
#: Character spans printed per term or token (``--explain``).
EXPLAINED_SPANS = 3


def register(subparsers) -> None:
    p = add_verb(subparsers, "search", "search an index (and evaluate)",
                 "Search an index with one or more --query texts (printed with their metadata and text), or a "
                 "--queries file (written as a run).")
    p.add_argument("index", metavar="DIR", help="an index built by `latelex index`")
    p.add_argument("--query", action="append", help="a query text to search and print (repeatable)")
    p.add_argument("--queries", help="queries: qid<TAB>text TSV, .jsonl, TREC topics, or a BEIR folder (with --split)")
    p.add_argument("-k", "--k", type=int, default=100, help="results per query (default 100)")
    p.add_argument("--where", metavar="EXPR",
                   help="only documents whose metadata match, e.g. 'year >= 2015 and source = \"pubmed\"' "
                        "(comparisons, in, exists, is null, and/or/not)")
    p.add_argument("--output", help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    p.add_argument("--subset", help="file of document ids (one per line) to restrict the search to")
    g = p.add_argument_group("engine options (each applies to the kinds it names)")
    for name, (option, kinds) in registry.all_search_options().items():
        g.add_argument(option.cli_flag, dest=name, type=option.type, choices=option.choices,
                       metavar=None if option.choices else metavar(option), help=option.help.replace("%", "%%"))
    p.add_argument("--explain", action="store_true",
                   help="with --query: below each hit, what each query token (ColBERT) or shared term (SPLADE, BM25) "
                        "adds to its score and where it matched in the text")
    p.add_argument("--metrics-json", help="also write the metrics as JSON here")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--allow-network", action="store_true",
                   help="let the index's model be downloaded from the Hub when it is not on this machine (default: "
                        "local files only)")
    p.add_argument("--batch-size", type=int, default=64, help="queries per forward pass (default 64)")
    add_backend_options(p, recorded=True)
    add_evaluation_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import read_queries_any

    if not args.query and not args.queries:
        raise usage("search needs --query TEXT or --queries FILE")
    if args.explain and not args.query:
        raise usage("--explain explains the hits of --query searches; use --query TEXT or drop --explain")
    qrels = load_qrels(args)  # a bad qrels file is reported before anything is searched or written
    searcher = open_searcher(args.index, args.device, allow_network=args.allow_network, backend=backend_options(args))
    if args.explain and not hasattr(searcher, "explain"):
        raise usage(f"{args.index} is a BM25 index from an older latelex, which cannot explain scores; rebuild it with "
                    f"`latelex index DIR --kind bm25 --collection C`")
    options = engine_options(args, searcher.kind)
    subset = None
    if args.subset:
        from ..data.lines import iter_lines

        subset = [line.strip() for _, line in iter_lines(args.subset) if line.strip()]
    common = dict(k=args.k, where=args.where, subset=subset, batch_size=args.batch_size, **options)
    if args.query:  # a bar only when there are many (the library's default), never with -q
        special, mask = _special_tokens(searcher) if args.explain else (frozenset(), None)
        found = searcher.search(list(args.query), show_progress=False if args.quiet else None, **common)
        for text, hits in zip(args.query, found):
            print(f"query: {text}")
            for rank, hit in enumerate(hits, 1):
                print(format_hit(rank, hit))
                if args.explain:
                    for line in format_explanation(searcher.explain(text, hit.doc_id), special, mask):
                        print(line)
        return 0
    queries = read_queries_any(args.queries, args.split)
    ranking = searcher.search_queries(queries, show_progress=not args.quiet, **common)
    if args.output:
        write_run(args.output, ranking, args.format)
        print(f"wrote {len(ranking)} rankings to {args.output}", file=sys.stderr)
    maybe_evaluate(args, ranking, qrels)
    return 0


def engine_options(args: argparse.Namespace, kind: str) -> dict:
    """The engine flags given, as search keywords; one that ``kind`` does not take is a usage error."""
    options = {}
    for name, (option, kinds) in registry.all_search_options().items():
        value = getattr(args, name)
        if value is None:
            continue
        if kind not in kinds:
            raise usage(f"{option.cli_flag} applies to {' or '.join(kinds)} indexes; {args.index} is a {kind} index")
        options[name] = value
    return options


def format_hit(rank: int, hit) -> str:
    """``rank score id [passage N, chars A-B] {field=value ...}`` and, indented below, a snippet of the text (the
    matching passage of a chunked index)."""
    line = f"{rank:>4}  {hit.score:10.4f}  {hit.doc_id}"
    if hit.span is not None:
        line += f"  [passage {hit.passage}, chars {hit.span[0]}-{hit.span[1]}]"
    if hit.metadata:
        fields = [f"{key}={_value(value)}" for key, value in list(hit.metadata.items())[:SHOWN_FIELDS]]
        more = len(hit.metadata) - SHOWN_FIELDS
        line += "  {" + " ".join(fields) + (f" +{more} more" if more > 0 else "") + "}"
    if hit.text:
        text = hit.text[hit.span[0]:hit.span[1]] if hit.span is not None else hit.text
        text = " ".join(text.split())
        line += "\n        " + (text[:SNIPPET_CHARS - 3] + "..." if len(text) > SNIPPET_CHARS else text)
    return line


def format_explanation(explanation, special: frozenset[str] = frozenset(), mask: str | None = "[MASK]",
                       top: int = EXPLAINED_TERMS) -> list[str]:
    """Indented lines for ``latelex search --explain``. ColBERT: ``query token -> document token [start:end] +score``
    for each query token that is not one of the ``special`` tokens ([CLS], markers, [SEP], the ``mask`` token of
    query augmentation); SPLADE: the ``top`` shared terms, ``term q_weight x d_weight = +score [spans]``; BM25: the
    ``top`` terms, ``term +score [spans]``. A last line gives the score and what the lines left out add to it, so the
    shown and summarised parts always sum to it."""
    contributions = explanation.contributions
    lines = []
    if explanation.passage is not None:
        a, b = explanation.passage_span
        lines.append(f"    best passage {explanation.passage} [{a}:{b}]")
    if explanation.family == "colbert":
        shown = [c for c in contributions if c.query_token not in special]
        for c in shown:
            lines.append(f"    {c.query_token} -> {c.doc_token}{_spans(c.spans)} {c.score:+.2f}")
        masks = [c for c in contributions if c.query_token == mask]
        others = [c for c in contributions if c.query_token in special and c not in masks]
        parts = [f"query tokens {len(contributions)}"]
        if masks:
            parts.append(f"of which {masks[0].query_token} {len(masks)}: {sum(c.score for c in masks):+.2f}")
        if others:
            parts.append(f"special {len(others)}: {sum(c.score for c in others):+.2f}")
    else:
        shown = list(contributions[:top])
        for c in shown:
            weights = f" {c.query_weight:.2f} x {c.doc_weight:.2f} =" if c.query_weight is not None else ""
            lines.append(f"    {c.query_token}{weights} {c.score:+.2f}{_spans(c.spans)}")
        parts = [f"shared terms {len(contributions)}"]
        rest = contributions[len(shown):]
        if rest:
            parts.append(f"not shown {len(rest)}: {sum(c.score for c in rest):+.2f}")
    lines.append(f"    score = {explanation.score:.4f} ({', '.join(parts)})")
    return lines


def _special_tokens(searcher) -> tuple[frozenset[str], str | None]:
    """The special tokens of the searcher's encoder (see :func:`latelex.search.explain.special_tokens`) and its mask
    token (query augmentation), or nothing for BM25."""
    from ..search.explain import special_tokens

    encoder = searcher.encoder
    return special_tokens(encoder), None if encoder is None else getattr(encoder.tokenizer, "mask_token", None)


def _spans(spans) -> str:
    if not spans:
        return ""
    shown = " ".join(f"{a}:{b}" for a, b in spans[:EXPLAINED_SPANS])
    more = len(spans) - EXPLAINED_SPANS
    return f" [{shown}{f' +{more} more' if more > 0 else ''}]"


def _value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
