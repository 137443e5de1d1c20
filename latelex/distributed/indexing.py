"""Building an index with its documents encoded on Ray: :func:`build_on_ray`, what ``latelex index --ray`` calls.

The build is the ordinary one (:meth:`Retriever.build <latelex.search.retriever.Retriever.build>`, or
:meth:`ShardedRetriever.build <latelex.search.sharded.ShardedRetriever.build>` with ``shards``) given the encoder
wrapped in a :class:`~latelex.distributed.encode.RayEncoder`: encoding runs on the cluster's encoder actors in chunks
recorded as done in ``.<name>.ray-chunks`` beside the index, PLAID's chunks are compressed by Ray tasks, and the
index published is the one this process would build (same format, same codec, the same vectors within float16
rounding). A build that fails leaves its finished chunks; running it again resumes without encoding them again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import IndexFormatError

__all__ = ["build_on_ray"]


def build_on_ray(path: str | os.PathLike, encoder: Any, collection: Iterable[Any], *, ray: Any = True,
                 shards: int | None = None, partition: str | Mapping[str, int] = "hash", overwrite: bool = False,
                 **options: Any) -> Any:
    """Build ``collection`` at ``path`` with ``encoder`` run on Ray; returns the open ``Retriever`` (or
    ``ShardedRetriever`` when ``shards`` is given), holding ``encoder`` itself.

    ``ray``: ``True`` (a new local cluster), an address (``host:port``, ``ray://host:port``, ``"auto"``) or a
    :class:`~latelex.distributed.cluster.RayConfig`; a Ray already initialised in this process is used as it is.
    ``shards`` / ``partition``: as :meth:`ShardedRetriever.build`; ``options``: the other keyword arguments of
    ``Retriever.build`` (``kind``, ``engine_config``, ``chunking``, ``metadata``, ``pool_factor``, ...).

    Raises:
        ClusterError: Ray is not installed, the address does not answer, or workers died more often than they may
            be restarted (the finished chunks are kept).
        IndexFormatError: ``path`` exists and ``overwrite`` is not set (checked before a cluster is reached).
    """
    from ..search.retriever import Retriever
    from ..search.sharded import ShardedRetriever
    from .encode import ray_encoding

    final = Path(path).expanduser().resolve()
    if final.exists() and not overwrite:
        raise IndexFormatError(f"{final} already exists; pass overwrite=True (--overwrite) or choose another path")
    with ray_encoding(final, encoder, ray) as on_ray:
        if shards is None:
            built = Retriever.build(final, on_ray, collection, overwrite=overwrite, **options)
        else:
            built = ShardedRetriever.build(final, on_ray, collection, shards=shards, partition=partition,
                                           overwrite=overwrite, **options)
        built.close()
    opener = ShardedRetriever.open if shards is not None else Retriever.open
    return opener(final, encoder=encoder)
