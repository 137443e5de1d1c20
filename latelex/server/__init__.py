"""``latelex serve``: the HTTP server (FastAPI + uvicorn) over one or more latelex indexes.

Endpoints (schema at ``/openapi.json``, interactive docs at ``/docs``, a search page at ``/``)::

    GET    /health                                 {"status": "ok", "indexes": [...]}
    GET    /indexes                                [{name, kind, documents, family}]
    GET    /indexes/{name}                         what `latelex info` prints
    POST   /indexes/{name}/search                  {query | queries, k, where, subset, with_text, passages,
                                                    explain, options} -> {hits} | {results}
    POST   /indexes/{name}/explain                 {query, id} -> the token-level explanation
    POST   /indexes/{name}/documents               {documents: [{id, text, metadata}], upsert} -> counts
    DELETE /indexes/{name}/documents               {ids: [...]} -> counts, not_found
    GET    /indexes/{name}/documents/{id}          {id, text, metadata}
    POST   /rerank                                 {query, documents: [texts], k} -> [{index, score, text}]
    POST   /encode                                 {texts, input: query|document} -> token or sparse vectors

The model of each index is loaded once; concurrent searches are encoded in shared micro-batches; writes go
through each index's single writer and are durable when answered (a kill -9 afterwards loses nothing); SIGTERM
finishes the requests in flight. Python callers use :class:`latelex.client.Client`, which mirrors
:class:`~latelex.search.retriever.Retriever`.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import LOOPBACK, Limits, ServerConfig

__all__ = ["Limits", "ServerConfig", "create_app", "serve"]

logger = logging.getLogger(__name__)


def create_app(service: Any) -> Any:
    """The FastAPI app over a :class:`~latelex.server.service.Service` (see :mod:`latelex.server.app`)."""
    from .app import create_app as _create

    return _create(service)


def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          graceful_timeout: float = 30.0) -> None:
    """Open every index of ``config``, then serve until SIGINT / SIGTERM (requests in flight are finished, for
    at most ``graceful_timeout`` seconds). Binding to a host other than loopback without an API key is allowed,
    with a warning: anyone who reaches the port could then change the indexes."""
    import uvicorn

    from .service import Service

    if host not in LOOPBACK and config.api_key is None:
        logger.warning("serving on %s without an API key: anyone who reaches this port can add and delete documents; "
                       "give --api-key-file", host)
    service = Service.open(config)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=graceful_timeout)
