"""The server's settings: what it serves, where it listens, who may write, and the limits on each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Limits", "ServerConfig"]

#: Hosts a server binds to without ``--allow-remote``: loopback only.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Limits:
    """Bounds on one request; each one exceeded is answered with a 4xx and a one-line JSON error.

    ``max_body_bytes``: the request body (413); ``max_batch``: queries in one search, texts in one ``/encode`` or
    ``/rerank`` (422); ``max_documents``: documents in one add or ids in one delete (422); ``max_k``: the largest
    ``k`` (422); ``max_query_chars``: one query's length (422); ``max_concurrent``: requests in flight at once, the
    rest are refused with 503 and a ``Retry-After`` header; ``max_explain``: hits explained in one search.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 64
    max_documents: int = 1000
    max_k: int = 1000
    max_query_chars: int = 2000
    max_concurrent: int = 64
    max_explain: int = 20


@dataclass(frozen=True)
class ServerConfig:
    """What :func:`latelex.server.create_app` serves.

    ``indexes``: ``{name: path}`` of retriever directories, served under ``/indexes/{name}``. ``model``: a ColBERT
    model (name or path) for ``/rerank`` and ``/encode`` when no served index has one to lend. ``api_key``: when
    set, write endpoints (and, with ``protect_search``, every endpoint but ``/health`` and the page) require it as
    ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. ``batch_wait_ms`` / ``batch_queries``: concurrent
    searches are encoded together, the first query waiting at most ``batch_wait_ms`` for others, up to
    ``batch_queries`` queries a batch. ``backend``: a :class:`~latelex.config.BackendConfig` to run every index's
    model on (e.g. onnx with int8 weights) instead of the backend each index records. ``ray``: a
    :class:`~latelex.distributed.cluster.RayConfig` (the cluster to join or start): every served index must then be
    sharded (``latelex index --shards N``), and each shard is served by ``replicas`` (a
    :class:`~latelex.distributed.shard_actors.ReplicaConfig`) Ray actors behind this same HTTP app.
    """

    indexes: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    api_key: str | None = None
    protect_search: bool = False
    limits: Limits = field(default_factory=Limits)
    batch_wait_ms: float = 2.0
    batch_queries: int = 32
    device: str | None = None
    backend: Any = None
    ray: Any = None
    replicas: Any = None
