"""Shards of a :class:`~latelex.search.sharded.ShardedRetriever` living in Ray actors, with replicas.

Each shard directory is opened by ``replicas`` actors (:class:`ShardActor`), which Ray places on the cluster's nodes
and restarts when their process dies (``max_restarts``). A :class:`RayShard` is the shard handle the sharded
retriever talks to (``read`` / ``write`` / ``close``, the protocol of :mod:`latelex.search.sharded`):

* reads (search, get, explain, counts) go to the replicas in turn; a read whose actor dies is retried by Ray on the
  restarted actor (reads are idempotent), and one that still fails is tried on the next replica;
* writes (add, upsert, delete, compact) go to the shard's first replica and are never retried by Ray (a retried
  add could commit twice); the other replicas read the new generation on their next read, as every
  :class:`~latelex.search.retriever.Retriever` does (they share the shard's directory: one node's disk or a
  shared file system).

Queries reach the actors already encoded (the sharded retriever encodes them once, in the caller's process), so a
replica loads its model only when it needs one: for an add, an upsert, a compaction or an explanation.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, LatelexError

__all__ = ["ReplicaConfig", "RayShard", "ray_shard_opener"]

@dataclass(frozen=True)
class ReplicaConfig:
    """How each shard is served on Ray: ``replicas`` actors per shard, each reserving ``cpus_per_replica`` logical
    CPUs (and ``gpus_per_replica`` GPUs), restarted up to ``max_restarts`` times when its process dies (-1: always).
    """

    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_restarts: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ConfigError(f"replicas must be a positive integer, not {self.replicas!r}")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ConfigError("cpus_per_replica and gpus_per_replica must be >= 0")


class ShardActor:
    """One replica of one shard: a :class:`~latelex.search.shard_handle.LocalShard` over the shard's directory,
    opened on first use without a model, and again with one the first time a call needs it (made a Ray actor by
    :func:`_actor_class`; the methods callable through it are the LocalShard's, nothing else)."""

    def __init__(self, number: int, path: str, allow_network: bool = False) -> None:
        self.number = number
        self.path = path
        self.allow_network = allow_network
        self._shard: Any = None
        self._with_model = False

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()

    def ready(self) -> int:
        """Open the shard now; returns its live document count."""
        return self._open(model=False).read("__len__")

    def read(self, method: str, args: tuple, kwargs: dict) -> Any:
        from ..search.shard_handle import MODEL_METHODS

        needs_model = method in MODEL_METHODS or (method == "search" and kwargs.get("encoded") is None)
        return self._open(model=needs_model).read(method, *args, **kwargs)

    def write(self, method: str, args: tuple, kwargs: dict) -> Any:
        from ..search.shard_handle import MODEL_METHODS

        return self._open(model=method in MODEL_METHODS).write(method, *args, **kwargs)

    def _open(self, *, model: bool) -> Any:
        from ..search.retriever import Retriever
        from ..search.shard_handle import LocalShard

        if self._shard is None or (model and not self._with_model):
            encoder = None
            if model:
                spec = Retriever.inspect(self.path).get("encoder")
                if spec is not None:
                    from ..encoders import encoder_from_spec

                    encoder = encoder_from_spec(spec, allow_network=self.allow_network)
            if self._shard is not None:
                self._shard.close()
            self._shard = LocalShard.open(self.number, self.path, encoder)
            self._with_model = model
        return self._shard


_ACTOR_CLASS: Any = None
_ACTOR_LOCK = threading.Lock()


def _actor_class() -> Any:
    global _ACTOR_CLASS
    with _ACTOR_LOCK:
        if _ACTOR_CLASS is None:
            import ray

            cls = type("ShardActor", (ShardActor,), {
                "read": ray.method(max_task_retries=-1)(ShardActor.read),
                "write": ray.method(max_task_retries=0)(ShardActor.write),
            })
            _ACTOR_CLASS = ray.remote(cls)
        return _ACTOR_CLASS


def _unwrap(error: Exception) -> Exception:
    """A library error raised inside an actor, as itself (one line), not as Ray's wrapper with its traceback."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, LatelexError) else error


class RayShard:
    """The handle of one shard served by Ray actors (see the module docstring)."""

    def __init__(self, number: int, path: Path, replicas: list[Any]) -> None:
        self.number = number
        self.path = path
        self.replicas = replicas
        self._turn = itertools.count()

    @classmethod
    def start(cls, number: int, path: Path, config: ReplicaConfig, *, allow_network: bool = False) -> "RayShard":
        """Start the shard's replicas and wait until each has opened the directory (a damaged shard fails here)."""
        import ray

        actor = _actor_class().options(num_cpus=config.cpus_per_replica, num_gpus=config.gpus_per_replica,
                                       max_restarts=config.max_restarts)
        replicas = [actor.remote(number, str(path), allow_network) for _ in range(config.replicas)]
        shard = cls(number, Path(path), replicas)
        try:
            ray.get([r.ready.remote() for r in replicas])
        except ray.exceptions.RayError as error:
            shard.close()
            raise _unwrap(error) from None
        return shard

    def read(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        import ray

        start = next(self._turn)
        last: Exception | None = None
        for i in range(len(self.replicas)):
            replica = self.replicas[(start + i) % len(self.replicas)]
            try:
                return ray.get(replica.read.remote(method, args, kwargs))
            except ray.exceptions.RayActorError as error:  # this replica is gone for good: try the next one
                last = error
            except ray.exceptions.RayTaskError as error:
                raise _unwrap(error) from None
        raise LatelexError(f"every replica of shard {self.number} ({self.path}) is gone: {last}")

    def write(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        import ray

        try:
            return ray.get(self.replicas[0].write.remote(method, args, kwargs))
        except ray.exceptions.RayTaskError as error:
            raise _unwrap(error) from None
        except ray.exceptions.RayActorError as error:
            raise LatelexError(f"shard {self.number}'s writer died during {method}; the shard keeps its last "
                               f"commit (reopen it and retry): {error}") from None

    def pids(self) -> list[int]:
        """The process id of each replica."""
        import ray

        return ray.get([r.pid.remote() for r in self.replicas])

    def close(self) -> None:
        import ray

        for replica in self.replicas:
            try:
                ray.kill(replica, no_restart=True)
            except Exception:  # already gone
                pass


def ray_shard_opener(config: ReplicaConfig | None = None, *, allow_network: bool = False
                     ) -> Callable[[int, Path, Any], RayShard]:
    """A ``shard_opener`` for :meth:`ShardedRetriever.open` that serves each shard from Ray actors. Ray must be
    initialised (:func:`latelex.distributed.cluster.connect`)."""
    config = config or ReplicaConfig()

    def open_shard(number: int, path: Path, encoder: Any) -> RayShard:
        return RayShard.start(number, path, config, allow_network=allow_network)

    return open_shard
