"""Encoding documents and queries for, building, and searching the engines under a retriever, by model family.

The engines take what their family indexes (token-vector matrices for ColBERT, a SparseBatch for SPLADE, texts
for BM25) under slightly different keyword names; this module is the one place that knows those differences, so
:mod:`latelex.search.retriever` calls every kind the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..index.registry import KindSpec
from ..types import Hit


def encoder_family(encoder: Any) -> str:
    """``colbert``, ``splade``, or ``text`` when there is no encoder (BM25)."""
    return "text" if encoder is None else encoder.spec()["family"]


def encode_documents(encoder: Any, texts: Sequence[str], *, batch_size: int, bar: Any = None) -> Any:
    """What an engine of the encoder's family indexes for ``texts``: a list of (L_i, dim) matrices (ColBERT), a
    SparseBatch (SPLADE), or the texts themselves (no encoder). ``bar``: a tqdm bar advanced per batch."""
    if encoder is None:
        if bar is not None:
            bar.update(len(texts))
        return list(texts)
    if not texts:
        return [] if encoder_family(encoder) == "colbert" else _empty_sparse(encoder)
    on_batch = None if bar is None else bar.update
    return encoder.encode_documents(list(texts), batch_size=batch_size, show_progress=False, on_batch=on_batch)


def pool_documents(encoder: Any, items: Any, pool_factor: int) -> list:
    """ColBERT document matrices (an :func:`encode_documents` result) token-pooled by ``pool_factor``
    (:mod:`latelex.scoring.pooling`), re-normalised when the encoder normalises its vectors."""
    if encoder_family(encoder) != "colbert":
        raise InputError(f"token pooling applies to ColBERT token vectors, not to a {encoder_family(encoder)} index")
    import torch

    from ..scoring.pooling import pool_documents as pool

    normalize = bool(getattr(getattr(encoder, "config", None), "normalize", True))
    return pool([torch.as_tensor(m) for m in items], pool_factor, normalize=normalize)


def _empty_sparse(encoder: Any) -> Any:
    from ..types import SparseBatch

    return SparseBatch.from_vectors([], encoder.vocab_size)


def encode_queries(encoder: Any, texts: Sequence[str], *, batch_size: int, show_progress: bool | None) -> Any:
    """Encoded queries for an engine of the encoder's family (the texts themselves without an encoder)."""
    if encoder is None:
        return list(texts)
    return encoder.encode_queries(list(texts), batch_size=batch_size, show_progress=show_progress)


def encoded_count(encoded: Any) -> int:
    """How many queries an :func:`encode_queries` result holds."""
    return len(encoded)


def split_encoded(encoded: Any, sizes: Sequence[int]) -> list[Any]:
    """An :func:`encode_queries` result cut into consecutive parts of ``sizes`` queries, each of the same form."""
    from ..types import SparseBatch

    if sum(sizes) != len(encoded):
        raise InputError(f"cannot split {len(encoded)} encoded queries into parts of {list(sizes)}")
    parts, start = [], 0
    for size in sizes:
        if isinstance(encoded, SparseBatch):
            parts.append(SparseBatch.from_vectors([encoded[i] for i in range(start, start + size)], encoded.vocab_size))
        else:
            parts.append(list(encoded[start:start + size]))
        start += size
    return parts


def build_engine(spec: KindSpec, path: Path, doc_ids: Sequence[str], items: Any, *, encoder: Any, config: Any,
                 show_progress: bool | None, statistics: Any = None) -> Any:
    """Build an engine of ``spec`` at ``path`` (which must not exist) from ``items`` (see :func:`encode_documents`).
    ``statistics``: BM25 only, the :class:`~latelex.index.bm25.CollectionStatistics` to score with."""
    engine = spec.engine()
    options: dict[str, Any] = {}
    if statistics is not None:
        check_statistics(spec, statistics)
        options["statistics"] = statistics
    if spec.family != "text":
        options["encoder"] = encoder.spec()
    if spec.config_ref is not None and config is not None:
        options["config"] = config
    if spec.family == "colbert" and spec.name in ("flat", "ivfpq"):
        options["similarity"] = encoder.config.similarity
    if spec.name in ("plaid", "ivfpq"):
        options["show_progress"] = show_progress
    if spec.name == "plaid" and getattr(encoder, "map_chunks", None) is not None:
        options["map_chunks"] = encoder.map_chunks  # an encoder on a cluster (RayEncoder) compresses there too
    if spec.name == "plaid" and encoder.config.similarity != "cosine":
        raise InputError("a plaid index supports cosine similarity only; use kind flat or ivfpq for l2 models")
    return engine.build(path, list(doc_ids), items, **options)


def check_statistics(spec: KindSpec, statistics: Any) -> None:
    """Collection statistics are an input of BM25 (whose scores depend on them) only."""
    if statistics is not None and spec.updates != "rewrite":
        raise InputError(f"collection statistics apply to bm25 indexes (whose scores depend on them), not to a "
                         f"{spec.name} index; drop statistics=")


def search_engine(spec: KindSpec, engine: Any, queries: Any, texts: Sequence[str], k: int, subset: Sequence[str] | None,
                  options: dict[str, Any]) -> list[list[Hit]]:
    """The engine's top ``k`` per query (``queries`` encoded for its family; ``texts`` for BM25)."""
    if spec.family == "text":
        return engine.search_text(list(texts), k=k, subset=subset)
    usable = {name: value for name, value in options.items() if name in spec.search_option_names}
    return engine.search(queries, k=k, subset=subset, **usable)
