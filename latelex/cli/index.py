"""``latelex index DIR --collection C [--model M] [--kind K]``: encode a collection and build an index.

The kinds, their descriptions and the engine build flags come from the registry of index kinds
(:mod:`latelex.index.registry`); a build flag given with a kind that does not take it is a usage error.
"""

from __future__ import annotations

import argparse
import sys

from ..index import registry
from .common import (
    DEFAULT_MODEL, add_chunking_options, add_collection_options, add_encoder_options, add_verb, chunking,
    load_encoder, metavar, read_collection, usage,
)

#: argparse ``dest`` of a build option: prefixed, so that an engine field can never shadow a verb's own option.
_DEST = "build_{}"


def _kind_help() -> str:
    lines = []
    for family in registry.FAMILIES:
        for spec in registry.kinds_for(family):
            label = "" if family == "text" else f" ({family}{', the default' if spec.default else ''})"
            lines.append(f"{spec.name}{label}: {spec.description}")
    return ("index kind (default: the model family's default kind). " + "; ".join(lines)).replace("%", "%%")


def register(subparsers) -> None:
    p = add_verb(subparsers, "index", "encode a collection and build an index",
                 "Encode a collection (BEIR folder, JSONL, ColBERT TSV or a folder of text files) and build an index "
                 "at DIR. Metadata (JSONL keys, --metadata) is kept with each document and filtered with "
                 "`latelex search --where`.")
    p.add_argument("index", metavar="DIR", help="where to write the index (a directory)")
    p.add_argument("--model", default=None,
                   help=f"model folder or Hugging Face Hub name (default: {DEFAULT_MODEL}, the built-in offline "
                        f"ColBERT model; none for --kind bm25)")
    add_collection_options(p)
    p.add_argument("--kind", choices=list(registry.KINDS), help=_kind_help())
    g = p.add_argument_group("engine options")
    for name, (option, kinds) in registry.all_build_options().items():
        g.add_argument(option.cli_flag, dest=_DEST.format(name), type=option.type, choices=option.choices,
                       metavar=None if option.choices else metavar(option), help=option.help.replace("%", "%%"))
    p.add_argument("--pool-factor", type=int, default=1, metavar="N",
                   help=f"token pooling ({' and '.join(registry.pooling_kinds())} only): cluster each document's "
                        f"(passage's) similar token vectors and keep ceil(L/N) of its L vectors, their means; 2 stores "
                        f"about half the vectors at a small cost in quality; later adds use the same factor "
                        f"(default 1: no pooling)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at DIR")
    p.add_argument("--no-store-text", action="store_true", help="do not keep document texts in the index")
    p.add_argument("--shards", type=int, metavar="N",
                   help="build a sharded index: N ordinary indexes DIR/shard-000 ... (each document in one, by a hash "
                        "of its id or --partition), searched and changed as one by every verb; exact kinds give the "
                        "same top k as one index")
    p.add_argument("--partition", metavar="FILE",
                   help="with --shards: the shard of every document, a TSV of id<TAB>shard or a .jsonl of "
                        "{\"id\": ..., \"shard\": N} (default: by a hash of the id)")
    _add_ray_options(p)
    add_chunking_options(p)
    add_encoder_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..search.retriever import Retriever

    kind = resolve_kind(args)
    config = engine_config(args, kind)
    chunks = chunking(args)
    pool = pool_factor(args, kind)
    build = builder(args, Retriever.build, ray_options(args, kind))
    textual = registry.kind(kind).family == "text"
    if textual and args.model is not None:
        raise usage(f"--model does not apply to --kind {kind} (it needs no model)")
    documents, metadata = read_collection(args)
    encoder = None
    if not textual:
        args.model = args.model or DEFAULT_MODEL
        encoder = load_encoder(args)
        print(f"encoder: {encoder!r}", file=sys.stderr)
    retriever = build(
        args.index, encoder, documents, kind=kind, overwrite=args.overwrite, store_text=not args.no_store_text,
        batch_size=args.batch_size, show_progress=not args.quiet, engine_config=config, chunking=chunks,
        metadata=metadata, pool_factor=pool,
    )
    info = retriever.info()
    what = f"{kind}, no model" if textual else kind
    passages = f", {info['passages']} passages" if info.get("passages") is not None else ""
    pooled = f", pool factor {pool}" if pool > 1 else ""
    pooled += f", {info['shards']} shards" if info.get("sharded") else ""
    print(f"indexed {info.get('documents', len(retriever))} documents{passages} into {retriever.path} ({what}{pooled})")
    return 0


def builder(args: argparse.Namespace, plain, ray=None):
    """``plain`` (``Retriever.build``), or with ``--shards`` ``ShardedRetriever.build`` bound to ``--shards`` and
    ``--partition``, or with ``ray`` (a RayConfig, ``--ray``) ``build_on_ray`` bound to both; their usage errors
    (checked before any work)."""
    import functools

    from ..search.shard_manifest import is_sharded, read_partition

    sharding: dict = {}
    if args.shards is None:
        if args.partition is not None:
            raise usage("--partition needs --shards N")
        if is_sharded(args.index):
            raise usage(f"{args.index} is a sharded index; rebuild it with --shards N --overwrite, or remove it to "
                        f"build a plain index there")
    else:
        if args.shards < 1:
            raise usage(f"--shards must be at least 1, not {args.shards}")
        partition = "hash" if args.partition is None else read_partition(args.partition)
        sharding = {"shards": args.shards, "partition": partition}
    if ray is not None:
        from ..distributed.indexing import build_on_ray

        return functools.partial(build_on_ray, ray=ray, **sharding)
    if sharding:
        from ..search.sharded import ShardedRetriever

        return functools.partial(ShardedRetriever.build, **sharding)
    return plain


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray (pip install \"latelex[ray]\")")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="encode on Ray workers (one model each, in chunks recorded as done: a build that fails is "
                        "resumed by running it again) and compress PLAID chunks there; ADDRESS: host:port of a running "
                        "cluster, 'auto' for the one on this machine; none: a new local cluster")
    g.add_argument("--ray-workers", type=int, metavar="N", help="encoder workers (default: one per CPU of the cluster)")
    g.add_argument("--ray-chunk-size", type=int, metavar="N",
                   help="documents per chunk, the unit of work recorded as done (default 512)")
    g.add_argument("--ray-gpus", type=float, metavar="G",
                   help="GPUs per worker (e.g. 1, or 0.5 to share a GPU between two); default 0: CPU workers")


def ray_options(args: argparse.Namespace, kind: str):
    """The RayConfig of ``--ray``, else ``None``; the Ray flags' usage errors (checked before any work)."""
    flags = {"--ray-workers": args.ray_workers, "--ray-chunk-size": args.ray_chunk_size, "--ray-gpus": args.ray_gpus}
    if args.ray is None:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise usage(f"{given[0]} needs --ray")
        return None
    if registry.kind(kind).family == "text":
        raise usage(f"--ray spreads the encoding over Ray workers, and --kind {kind} has no model; drop --ray")
    from ..distributed.cluster import RayConfig
    from ..errors import ConfigError

    fields = {"address": args.ray, "workers": args.ray_workers}
    if args.ray_chunk_size is not None:
        fields["chunk_size"] = args.ray_chunk_size
    if args.ray_gpus is not None:
        fields["gpus_per_worker"] = args.ray_gpus
    try:
        return RayConfig(**fields)
    except ConfigError as exc:
        raise usage(str(exc)) from None


def resolve_kind(args: argparse.Namespace) -> str:
    """``--kind``, or the default kind of the model's family (read from the model folder, nothing loaded)."""
    if args.kind is not None:
        return args.kind
    from ..encoders import detect_family

    return registry.default_kind(args.family or detect_family(args.model or DEFAULT_MODEL))


def pool_factor(args: argparse.Namespace, kind: str) -> int:
    """``--pool-factor``, checked against the kind before any work (a usage error for a kind that does not pool)."""
    factor = args.pool_factor
    if factor < 1:
        raise usage(f"--pool-factor must be at least 1 (1: no pooling), not {factor}")
    kinds = registry.pooling_kinds()
    if factor > 1 and kind not in kinds:
        raise usage(f"--pool-factor applies to --kind {' or '.join(kinds)}, not {kind}")
    return factor


def engine_config(args: argparse.Namespace, kind: str):
    """The engine configuration the build flags describe (None: the engine's defaults); a flag the kind does not
    take is a usage error."""
    changes = {}
    for name, (option, kinds) in registry.all_build_options().items():
        value = getattr(args, _DEST.format(name))
        if value is None:
            continue
        if kind not in kinds:
            raise usage(f"{option.cli_flag} applies to --kind {' or '.join(kinds)}, not {kind}")
        changes[name] = value
    if not changes:
        return None
    from ..config import config_replace

    return config_replace(registry.kind(kind).config_class()(), **changes)
