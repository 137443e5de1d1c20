"""What the HTTP app serves, without HTTP: the open retrievers, their shared encoders and the query batcher.

:class:`Service` is the one object behind every endpoint. It opens each index once, loads each distinct model once
(indexes built with the same encoder share it), and encodes concurrent searches' queries together
(:mod:`latelex.server.batching`). Writes go through one writer thread per index, which commits the adds that arrive
together in one commit (:mod:`latelex.server.writes`), while searches keep reading the last committed generation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError, LatelexError
from .batching import QueryBatcher
from .config import ServerConfig
from .writes import GroupWriter

logger = logging.getLogger(__name__)

__all__ = ["Service", "UnknownIndexError", "index_names"]


class UnknownIndexError(InputError):
    """A request named an index the server does not serve (HTTP 404)."""


def index_names(specs: Sequence[str]) -> dict[str, str]:
    """``{name: path}`` from ``PATH`` or ``NAME=PATH`` items (a bare path is served under its directory name)."""
    out: dict[str, str] = {}
    for item in specs:
        name, sep, path = item.partition("=")
        if not sep:
            path, name = item, Path(item).expanduser().resolve().name
        if not name or not path:
            raise InputError(f"cannot read index {item!r}; give PATH or NAME=PATH")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise InputError(f"index name {name!r} may hold letters, digits, '-', '_' and '.' only; "
                             f"name it with NAME=PATH")
        if name in out:
            raise InputError(f"two indexes are named {name!r}; name them apart with NAME=PATH")
        out[name] = path
    return out


class Service:
    """The retrievers a server answers for. Build with :meth:`open`; :meth:`close` when done."""

    def __init__(self, config: ServerConfig, retrievers: dict[str, Any], model: Any = None,
                 ray_started: bool = False) -> None:
        self.config = config
        self.retrievers = retrievers
        self.model = model
        self.ray_started = ray_started
        self.batcher = QueryBatcher(wait_ms=config.batch_wait_ms, max_queries=config.batch_queries)
        self.writers = {name: GroupWriter(r, max_documents=config.limits.max_documents)
                        for name, r in retrievers.items()}

    @classmethod
    def open(cls, config: ServerConfig) -> "Service":
        """Open every index of ``config`` (one load per distinct model) and the extra ``model`` if any; a missing
        or damaged index is a one-line error here, before the server listens. A sharded index is searched in
        threads of this process, or, with ``config.ray``, by Ray actors (``config.replicas`` per shard)."""
        from ..search.shard_manifest import is_sharded

        opener, ray_started = None, False
        if config.ray is not None:
            plain = [name for name, path in config.indexes.items() if not is_sharded(path)]
            if plain:
                raise InputError(f"--ray serves sharded indexes; {plain[0]!r} is a single index: serve it without "
                                 f"--ray, or build it with `latelex index --shards N`")
            from ..distributed.cluster import connect
            from ..distributed.shard_actors import ray_shard_opener

            _, ray_started = connect(config.ray)
            opener = ray_shard_opener(config.replicas)
        try:
            retrievers, model = cls._open_all(config, opener)
        except BaseException:
            if ray_started:
                import ray

                ray.shutdown()
            raise
        return cls(config, retrievers, model, ray_started)

    @staticmethod
    def _open_all(config: ServerConfig, opener: Any) -> tuple[dict[str, Any], Any]:
        from ..config import RUNTIME_SPEC_KEYS
        from ..encoders import encoder_from_spec
        from ..search.sharded import inspect_any, open_any

        encoders: dict[str, Any] = {}
        retrievers: dict[str, Any] = {}
        for name, path in config.indexes.items():
            spec = inspect_any(path).get("encoder")
            encoder = None
            if spec is not None and config.backend is not None:
                spec = {**{k: v for k, v in spec.items() if k not in RUNTIME_SPEC_KEYS}, **config.backend.spec_fields()}
            if spec is not None:
                key = json.dumps(spec, sort_keys=True)
                if key not in encoders:
                    encoders[key] = encoder_from_spec(spec, device=config.device)
                encoder = encoders[key]
            try:
                retrievers[name] = open_any(path, encoder=encoder,
                                            **({} if opener is None else {"shard_opener": opener}))
            except BaseException:
                for opened in retrievers.values():
                    opened.close()
                raise
        model = None
        if config.model is not None:
            from ..encoders.colbert import ColBERT

            runtime = {} if config.backend is None else {"backend": config.backend.backend,
                                                         "quantize": config.backend.quantize}
            model = ColBERT.from_pretrained(config.model, device=config.device, **runtime)
        return retrievers, model

    def start(self) -> None:
        self.batcher.start()
        for writer in self.writers.values():
            writer.start()

    def close(self) -> None:
        self.batcher.close()
        for writer in self.writers.values():
            writer.close()
        for retriever in self.retrievers.values():
            retriever.close()
        if self.ray_started:
            import ray

            ray.shutdown()

    # ------------------------------------------------------------------ lookups

    def retriever(self, name: str) -> Any:
        try:
            return self.retrievers[name]
        except KeyError:
            served = ", ".join(sorted(self.retrievers)) or "none"
            raise UnknownIndexError(f"no index named {name!r} (served: {served})") from None

    def encoder_for(self, index: str | None, *, colbert: bool) -> Any:
        """The model ``/rerank`` (``colbert``) or ``/encode`` uses: the named index's encoder, else the server's
        ``model``, else the first served index's ColBERT encoder."""
        if index is not None:
            encoder = self.retriever(index).encoder
            if encoder is None or (colbert and encoder.spec()["family"] != "colbert"):
                raise InputError(f"index {index!r} has no {'ColBERT ' if colbert else ''}encoder; name another")
            return encoder
        if self.model is not None:
            return self.model
        for retriever in self.retrievers.values():
            if retriever.encoder is not None and retriever.encoder.spec()["family"] == "colbert":
                return retriever.encoder
        raise LatelexError("this server has no ColBERT model: serve a ColBERT index or start it with --model")

    def write(self, name: str, op: str, *, docs: list | None = None, ids: list | None = None) -> Any:
        """Add, upsert (``docs``) or delete (``ids``) through the index's group-commit writer; returns the request's
        own ChangeResult once its commit is durable."""
        self.retriever(name)
        return self.writers[name].submit(op, docs=docs, ids=ids)

    # ------------------------------------------------------------------ search

    def search(self, name: str, texts: list[str], **options: Any) -> list[list[Any]]:
        """Search index ``name`` for every text; queries are encoded in a batch shared with concurrent requests."""
        from ..search import engines

        retriever = self.retriever(name)
        if retriever.encoder is None:
            return retriever.search(texts, **options)
        encoded = self.batcher.encode(id(retriever.encoder), texts, retriever.encode_queries, engines.split_encoded)
        return retriever.search(texts, encoded=encoded, **options)
