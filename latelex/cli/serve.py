"""``latelex serve INDEX [INDEX ...]``: serve indexes over HTTP (see :mod:`latelex.server`)."""

from __future__ import annotations

import argparse
import os

from .common import add_backend_options, add_verb, backend_options, usage

API_KEY_ENV = "LATELEX_API_KEY"


def register(subparsers) -> None:
    p = add_verb(subparsers, "serve", "serve indexes over HTTP, with a search page",
                 "Serve one or more indexes over HTTP (FastAPI + uvicorn): search, explain, add, delete, get, "
                 "rerank and encode; OpenAPI docs at /docs, a search page at /. Binds to 127.0.0.1 unless told.")
    p.add_argument("indexes", metavar="INDEX", nargs="+",
                   help="an index directory (served under its directory name) or NAME=PATH")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--model", help="a ColBERT model for /rerank and /encode (default: the first ColBERT index's)")
    p.add_argument("--api-key-file", metavar="FILE",
                   help=f"a file holding the API key that writes need (or set ${API_KEY_ENV})")
    p.add_argument("--protect-search", action="store_true",
                   help="require the API key for searches and reads too (default: writes only)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (default: 8 MB)")
    p.add_argument("--max-batch", type=int, default=64, help="queries per search, texts per /encode (default: 64)")
    p.add_argument("--max-documents", type=int, default=1000, help="documents per add or delete (default: 1000)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k (default: 1000)")
    p.add_argument("--max-concurrent", type=int, default=64, help="requests in flight; more get 503 (default: 64)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a query waits to be encoded with concurrent ones (default: 2 ms; 0: no batching wait)")
    p.add_argument("--device", help="torch device for the models (default: cpu, or cuda when available)")
    g = p.add_argument_group("Ray (sharded indexes: latelex index --shards N)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="serve each shard from Ray actors placed by a Ray cluster: ADDRESS (host:port, ray://host:port "
                        "or 'auto') joins a running cluster; no ADDRESS starts a local one. Without --ray a sharded "
                        "index is searched in this process's threads")
    g.add_argument("--replicas", type=int, default=1, help="with --ray: actors per shard (default: 1)")
    g.add_argument("--replica-cpus", type=float, default=1.0,
                   help="with --ray: logical CPUs each replica reserves (default: 1)")
    add_backend_options(p, recorded=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import BackendConfig
    from ..server import Limits, ServerConfig, serve
    from ..server.service import index_names

    key = None
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as exc:
            raise usage(f"cannot read --api-key-file {args.api_key_file}: {exc.strerror}") from None
        if not key:
            raise usage(f"--api-key-file {args.api_key_file} is empty")
    elif os.environ.get(API_KEY_ENV, "").strip():
        key = os.environ[API_KEY_ENV].strip()
    if args.protect_search and key is None:
        raise usage(f"--protect-search needs an API key: give --api-key-file or set ${API_KEY_ENV}")
    for name in ("max_batch", "max_documents", "max_k", "max_concurrent", "port"):
        if getattr(args, name) < 1:
            raise usage(f"--{name.replace('_', '-')} must be at least 1")
    limits = Limits(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_batch=args.max_batch,
                    max_documents=args.max_documents, max_k=args.max_k, max_concurrent=args.max_concurrent)
    runtime = backend_options(args)
    ray = replicas = None
    if args.ray is not None:
        from ..distributed.cluster import RayConfig
        from ..distributed.shard_actors import ReplicaConfig

        ray = RayConfig(address=args.ray)
        replicas = ReplicaConfig(replicas=args.replicas, cpus_per_replica=args.replica_cpus)
    elif args.replicas != 1:
        raise usage("--replicas needs --ray (replicas are Ray actors)")
    config = ServerConfig(indexes=index_names(args.indexes), model=args.model, api_key=key,
                          protect_search=args.protect_search, limits=limits, batch_wait_ms=args.batch_wait_ms,
                          device=args.device, backend=BackendConfig(**runtime) if runtime else None,
                          ray=ray, replicas=replicas)
    serve(config, host=args.host, port=args.port, log_level="warning" if getattr(args, "quiet", False) else "info")
    return 0
