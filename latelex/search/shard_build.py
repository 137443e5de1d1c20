"""Building a sharded index: split the documents, build each shard as an ordinary retriever, write the manifests,
publish the whole directory at once (:meth:`~latelex.search.sharded.ShardedRetriever.build` calls this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import config_to_dict
from ..errors import IndexFormatError, InputError
from ..fsio import fsync_path, staged_folder
from ..index import registry, storage
from ..types import Document
from . import shard_manifest as layout
from .retriever import Retriever


def build_shards(final: Path, encoder: Any, docs: list[Document], *, shards: int, given: dict[str, int] | None,
                 spec: registry.KindSpec, overwrite: bool, store_text: bool, batch_size: int,
                 show_progress: bool | None, engine_config: Any, chunking: Any, pool_factor: int) -> None:
    """Build ``docs`` into ``shards`` retrievers of ``spec`` under ``final`` (a resolved path) with ``shards.json``
    and each shard's ``shard.json``, staged beside ``final`` and moved into place when all is written; on error
    nothing is published. ``given``: ``{id: shard}`` (None: by hash)."""
    groups = assign(docs, shards, given)
    check_target(final, overwrite)
    statistics = None
    if spec.updates == "rewrite":  # bm25: every shard scores with the whole collection's statistics
        from ..index.bm25 import collection_statistics

        statistics = collection_statistics([d.text for d in docs], engine_config)
    build_id = layout.new_build_id()
    with staged_folder(final, tag="building") as tmp:
        for number, group in enumerate(groups):
            directory = tmp / layout.shard_name(number)
            Retriever.build(directory, encoder, group, kind=spec.name, store_text=store_text, batch_size=batch_size,
                            show_progress=show_progress, engine_config=engine_config, chunking=chunking,
                            pool_factor=pool_factor, statistics=statistics).close()
            layout.write_shard_marker(directory, build_id, number, shards)
        layout.write_shards_manifest(
            tmp, build_id=build_id, kind=spec.name, encoder=None if encoder is None else encoder.spec(),
            shards=shards, scheme="hash" if given is None else "given", store_text=store_text,
            engine_config=None if engine_config is None else config_to_dict(engine_config))
        fsync_path(tmp)


def assign(docs: list[Document], shards: int, given: dict[str, int] | None) -> list[list[Document]]:
    """The documents of each shard: by hash, or as ``given`` (which must name every document); none may be empty."""
    groups: list[list[Document]] = [[] for _ in range(shards)]
    if given is None:
        for d in docs:
            groups[layout.hash_shard(d.id, shards)].append(d)
    else:
        missing = [d.id for d in docs if d.id not in given]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise InputError(f"the partition gives no shard to {len(missing)} document(s): {shown}; give every "
                             f"document a shard number")
        for d in docs:
            groups[given[d.id]].append(d)
    empty = [n for n, group in enumerate(groups) if not group]
    if empty:
        how = "the given partition" if given is not None else "their ids' hashes"
        raise InputError(f"shard {empty[0]} would hold no documents ({len(docs)} documents over {shards} shards by "
                         f"{how}); use fewer shards")
    return groups


def check_target(final: Path, overwrite: bool) -> None:
    """Refuse an existing ``final`` without ``overwrite``, and anything there that is not an index (plain or
    sharded) or empty even with it."""
    if not final.exists():
        return
    if not overwrite:
        raise IndexFormatError(f"{final} already exists; pass overwrite=True (--overwrite) or choose another path")
    index = (final / storage.MANIFEST).exists() or layout.is_sharded(final)
    if not final.is_dir() or (any(final.iterdir()) and not index):
        raise IndexFormatError(f"{final} exists and is not an index; refusing to replace it, choose another path")
