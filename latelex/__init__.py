"""latelex: neural search with learned retrieval models (ColBERT late interaction and SPLADE).

The public names below are imported lazily, so that ``import latelex`` and ``latelex --help`` stay fast and
importing has no side effects. ``evaluate`` is the :mod:`latelex.evaluate` package, which is callable as its
``evaluate`` function: ``latelex.evaluate(run, qrels, ["nDCG@10"])``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LatelexError": "latelex.errors",
    "ColBERTConfig": "latelex.config",
    "SpladeConfig": "latelex.config",
    "Hit": "latelex.types",
    "Document": "latelex.types",
    "PackedEmbeddings": "latelex.types",
    "SparseVector": "latelex.types",
    "SparseBatch": "latelex.types",
    "ColBERT": "latelex.encoders.colbert",
    "Splade": "latelex.encoders.splade",
    "FlatIndex": "latelex.index.flat",
    "SparseIndex": "latelex.index.sparse",
    "Retriever": "latelex.search.retriever",
    "ShardedRetriever": "latelex.search.sharded",
    "Explanation": "latelex.search.explain",
    "Contribution": "latelex.search.explain",
    "rerank": "latelex.search.rerank",
    "Client": "latelex.client",
    "evaluate": "latelex.evaluate",
}
#: Exports that are modules themselves (a subpackage's attribute would be shadowed by the subpackage once imported).
_MODULES = {"evaluate"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latelex' has no attribute {name!r}")
    imported = importlib.import_module(module)
    return imported if name in _MODULES else getattr(imported, name)


def __dir__() -> list[str]:
    return sorted(__all__)
