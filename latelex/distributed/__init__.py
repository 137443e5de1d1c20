"""Layer 4: the same objects spread over Ray workers and actors.

* :mod:`.cluster`: :class:`RayConfig` (address, workers, chunk size, CPUs / GPUs per worker) and a bounded
  :func:`~latelex.distributed.cluster.connect` (one-line :class:`ClusterError` for a missing Ray or an unreachable
  cluster);
* :mod:`.encode`: :class:`RayEncoder`, encoding a collection on a pool of encoder actors in resumable chunks, and
  parallel PLAID compression;
* :mod:`.indexing`: :func:`build_on_ray`, an ordinary (or sharded) build encoded on Ray (``latelex index --ray``);
* :mod:`.shard_actors`: shards of a sharded retriever served by Ray actors with replicas.

Importing this package imports no Ray (nor torch): names are loaded on first use, and Ray only when a cluster is.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RayConfig": "latelex.distributed.cluster",
    "ClusterError": "latelex.distributed.cluster",
    "RayEncoder": "latelex.distributed.encode",
    "build_on_ray": "latelex.distributed.indexing",
    "ReplicaConfig": "latelex.distributed.shard_actors",
    "ray_shard_opener": "latelex.distributed.shard_actors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latelex.distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
