"""The one registry of index kinds: what each engine is, what it indexes, how it is configured, searched and updated.

Everything that used to keep its own list of kinds reads this table instead: the CLI's ``--kind`` choices, its
engine and search flags, the :class:`~latelex.search.retriever.Retriever`'s dispatch and the README's table of
kinds. Engines are imported lazily (:meth:`KindSpec.engine`), so an unused engine's dependencies (faiss, bm25s,
numba) are never needed.

Every engine implements the small protocol in :mod:`latelex.index.protocol`. ``updates`` says how a
Retriever changes an index of that kind:

* ``"native"``: the engine adds and deletes in place (``add`` / ``delete``; ``compact`` or ``rebuild`` reclaims space);
* ``"segments"``: the engine is write-once; an add writes a new segment of the same family (searched beside the
  others, results merged: exact for exact kinds), a delete is a tombstone in the document store, and
  ``compact()`` merges every segment into one;
* ``"rewrite"``: the engine's statistics span the whole collection (BM25's idf and average length), so every
  change rewrites it from the stored texts (fast: no model).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

FAMILIES = ("colbert", "splade", "text")


@dataclass(frozen=True)
class Option:
    """One engine option: a build-configuration field or a search keyword, and its command-line flag.

    ``name``: the keyword (search) or config field (build); ``flag``: the CLI flag (default ``--name`` with dashes);
    ``type``: ``int``, ``float`` or ``str``; ``choices``: allowed values or ``None``.
    """

    name: str
    type: type
    help: str
    choices: tuple | None = None
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class KindSpec:
    """One index kind. ``engine_ref`` / ``config_ref``: ``"module:Class"`` strings, imported on first use."""

    name: str
    family: str
    engine_ref: str
    description: str
    updates: str
    config_ref: str | None = None
    build_options: tuple[Option, ...] = ()
    search_options: tuple[Option, ...] = ()
    #: the kind of the segments an add writes, for ``updates == "segments"`` (default: the kind itself)
    segment_kind: str | None = None
    exact: bool = True
    default: bool = False
    #: whether documents can be token-pooled at indexing (``pool_factor``; :mod:`latelex.scoring.pooling`)
    pooling: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def engine(self) -> Any:
        """The engine class (imported now)."""
        return _load(self.engine_ref)

    def config_class(self) -> Any:
        """The engine's frozen configuration class, or ``None`` when it has none."""
        return None if self.config_ref is None else _load(self.config_ref)

    @property
    def search_option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.search_options)


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_PLAID_SEARCH = (
    Option("settings", str, "plaid: 'auto' (ColBERT's settings by k, probing more cells until ndocs candidates, "
                            "so small collections are searched as well as large ones; the default) or 'colbert'",
           choices=("auto", "colbert")),
    Option("ncells", int, "plaid: centroids probed per query token (default: adapted to the index and k)"),
    Option("centroid_score_threshold", float, "plaid: centroid pruning threshold (default by k)"),
    Option("ndocs", int, "plaid: documents decompressed and scored exactly (default by k)"),
)

KINDS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec(
            "flat", "colbert", "latelex.index.flat:FlatIndex", default=True, updates="segments", pooling=True,
            description="fp16 token vectors, memory-mapped; exact MaxSim over packed documents (the reference; up to about 100k documents)",
        ),
        KindSpec(
            "plaid", "colbert", "latelex.index.plaid:PlaidIndex", updates="native", exact=False, pooling=True,
            config_ref="latelex.index.plaid.config:PlaidConfig",
            description=("ColBERTv2 residual compression (centroid + 1/2/4-bit residual with Lloyd-Max buckets and a one-byte "
                         "unit-length scale, ~39 bytes per 128-dim vector at 2 bits), PLAID centroid pruning with search "
                         "defaults adapted to the collection size; resumable chunked build"),
            build_options=(
                Option("nbits", int, "plaid: bits per residual dimension (default 2)", choices=(1, 2, 4)),
                Option("n_centroids", int, "plaid: number of centroids (default: ColBERTv2's formula)", flag="--centroids"),
            ),
            search_options=_PLAID_SEARCH,
        ),
        KindSpec(
            "ivfpq", "colbert", "latelex.index.ivfpq:IvfPqIndex", updates="segments", segment_kind="flat", exact=False,
            config_ref="latelex.index.ivfpq:IvfPqConfig",
            description="ColBERT v1 end to end: faiss IVFPQ candidates, exact MaxSim over fp16 vectors; added documents are searched exactly until compact()",
            build_options=(
                Option("partitions", int, "ivfpq: IVF partitions (default scaled to the collection)"),
                Option("sample", float, "ivfpq: fraction of token vectors to train on (default 0.3)"),
            ),
            search_options=(
                Option("nprobe", int, "ivfpq: partitions probed per query token (default 32)"),
                Option("faiss_depth", int, "ivfpq: nearest token vectors per query token (default 1024)"),
            ),
        ),
        KindSpec(
            "sparse", "splade", "latelex.index.sparse:SparseIndex", default=True, updates="segments",
            description="exact sparse matrix product",
        ),
        KindSpec(
            "inverted", "splade", "latelex.index.inverted:InvertedIndex", updates="native",
            config_ref="latelex.index.inverted.config:InvertedConfig",
            description=("uint8 (or fp16) impacts with block maxima and impact-ordered heads; exact top-k (threshold seeding + "
                         "MaxScore, or TAAT) and an approximate mode with a recall knob; FLOPS; Anserini and PISA export"),
            search_options=(
                Option("mode", str, "inverted index: exact top-k or approximate", choices=("exact", "approximate")),
                Option("query_terms", int, "inverted, approximate: keep the heaviest N query terms"),
                Option("depth", int, "inverted, approximate: postings read per query term"),
            ),
        ),
        KindSpec(
            "bm25", "text", "latelex.index.bm25:BM25Index", default=True, updates="rewrite",
            config_ref="latelex.index.bm25:BM25Config",
            description="bm25s with English stopwords and a Snowball stemmer; no model; a first stage and a fusion member",
        ),
    )
}


def kind(name: str) -> KindSpec:
    """The spec of kind ``name``; an unknown name is an :class:`InputError` listing the known ones."""
    spec = KINDS.get(name)
    if spec is None:
        raise InputError(f"unknown index kind {name!r}; use one of {', '.join(KINDS)}")
    return spec


def kinds_for(family: str) -> tuple[KindSpec, ...]:
    """The kinds an encoder of ``family`` can build, the family's default first."""
    found = sorted((s for s in KINDS.values() if s.family == family), key=lambda s: not s.default)
    return tuple(found)


def default_kind(family: str) -> str:
    """The kind built when none is named: flat for ColBERT, sparse for SPLADE, bm25 without a model."""
    found = kinds_for(family)
    if not found:
        raise InputError(f"no index kind serves the {family!r} family; use one of {', '.join(FAMILIES)}")
    return found[0].name


def pooling_kinds() -> tuple[str, ...]:
    """The kinds whose documents can be token-pooled at indexing (``pool_factor`` above 1)."""
    return tuple(s.name for s in KINDS.values() if s.pooling)


def all_search_options() -> dict[str, tuple[Option, list[str]]]:
    """Every search option of every kind: name -> (option, kinds that take it), for the CLI's flags."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for spec in KINDS.values():
        for option in spec.search_options:
            out.setdefault(option.name, (option, []))[1].append(spec.name)
    return out


def all_build_options() -> dict[str, tuple[Option, list[str]]]:
    """Every build option of every kind: field name -> (option, kinds that take it)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for spec in KINDS.values():
        for option in spec.build_options:
            out.setdefault(option.name, (option, []))[1].append(spec.name)
    return out


def markdown_table() -> str:
    """The README's table of kinds, made from this registry."""
    rows = ["| kind | model family | updates | search options | what it is |", "|---|---|---|---|---|"]
    for spec in KINDS.values():
        options = ", ".join(f"`{o.name}`" for o in spec.search_options) or "-"
        family = "none (texts)" if spec.family == "text" else spec.family
        rows.append(f"| `{spec.name}`{' (default)' if spec.default else ''} | {family} | {spec.updates} | {options} "
                    f"| {spec.description} |")
    return "\n".join(rows)
