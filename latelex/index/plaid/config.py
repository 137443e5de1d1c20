"""The frozen configuration of a PLAID index build, and the search defaults ColBERT picks by k."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError

NBITS = (1, 2, 4)


@dataclass(frozen=True)
class PlaidConfig:
    """How a PLAID index is built.

    ``nbits``: bits per residual dimension (1, 2 or 4); ``dim * nbits`` must be a multiple of 8.
    ``n_centroids``: number of k-means centroids; ``None`` sizes it as ColBERTv2 does,
    2^floor(log2(16 * sqrt(estimated number of token vectors))).
    ``kmeans_niters``: k-means iterations (ColBERTv2: 4).
    ``sample_fraction``: fraction of the documents whose vectors train the codec; ``None`` uses ColBERTv2's
    count, min(N, 1 + 16 * sqrt(120 * N)) documents.
    ``max_points_per_centroid``: k-means trains on at most this many sample vectors per centroid (faiss's
    default is 256; fewer is faster and costs little accuracy because residuals absorb the error).
    ``heldout_fraction`` / ``max_heldout``: the part of the sample kept out of k-means to learn the residual
    bucket cutoffs and weights (ColBERTv2: 5 %, at most 50,000 vectors).
    ``chunk_size``: documents encoded, compressed and written per chunk (bounds build memory).
    ``seed``: the seed of every random choice, so that a build is reproducible.
    """

    nbits: int = 2
    n_centroids: int | None = None
    kmeans_niters: int = 4
    sample_fraction: float | None = None
    max_points_per_centroid: int = 64
    heldout_fraction: float = 0.05
    max_heldout: int = 50_000
    chunk_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nbits not in NBITS:
            raise ConfigError(f"nbits must be 1, 2 or 4, not {self.nbits!r}")
        if self.n_centroids is not None and (not isinstance(self.n_centroids, int) or self.n_centroids < 1):
            raise ConfigError(f"n_centroids must be a positive integer or None, not {self.n_centroids!r}")
        if not isinstance(self.kmeans_niters, int) or self.kmeans_niters < 1:
            raise ConfigError(f"kmeans_niters must be a positive integer, not {self.kmeans_niters!r}")
        if self.sample_fraction is not None and not 0 < self.sample_fraction <= 1:
            raise ConfigError(f"sample_fraction must be in (0, 1] or None, not {self.sample_fraction!r}")
        if not isinstance(self.max_points_per_centroid, int) or self.max_points_per_centroid < 1:
            raise ConfigError(f"max_points_per_centroid must be a positive integer, not {self.max_points_per_centroid!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"heldout_fraction must be in (0, 1), not {self.heldout_fraction!r}")
        if not isinstance(self.max_heldout, int) or self.max_heldout < 1:
            raise ConfigError(f"max_heldout must be a positive integer, not {self.max_heldout!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, not {self.chunk_size!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, not {self.seed!r}")


def colbert_n_centroids(n_vectors: int) -> int:
    """ColBERTv2's number of centroids for ``n_vectors`` token vectors: 2^floor(log2(16 * sqrt(n)))."""
    return int(2 ** math.floor(math.log2(16 * math.sqrt(max(1, n_vectors)))))


def colbert_sample_documents(n_documents: int) -> int:
    """ColBERTv2's number of documents sampled to train the codec: min(N, 1 + 16 * sqrt(120 * N))."""
    return min(n_documents, 1 + int(16 * math.sqrt(120 * n_documents)))


#: How many cells per query token a search may widen to before it takes every allowed document instead.
MAX_WIDEN_CELLS = 64


@dataclass(frozen=True)
class SearchSettings:
    """PLAID's three knobs: centroids probed per query token, the pruning threshold, and the documents kept
    after pruned centroid interaction (a quarter of them are decompressed and scored exactly); and how far a
    search widens: while its cells reach fewer than ``min_candidates`` allowed documents, ``ncells`` doubles, up
    to ``max_ncells``. (Whatever these say, a search that reaches fewer than min(k, allowed documents) widens
    on to every allowed document.)"""

    ncells: int
    centroid_score_threshold: float
    ndocs: int
    min_candidates: int = 0
    max_ncells: int = MAX_WIDEN_CELLS


#: The named presets of :func:`search_settings` (``PlaidIndex.search(settings=...)``).
SEARCH_PRESETS = ("auto", "colbert")


def default_search_settings(k: int) -> SearchSettings:
    """The defaults ColBERT's searcher sets by k (the ``"colbert"`` preset)."""
    if k <= 10:
        return SearchSettings(1, 0.5, 256)
    if k <= 100:
        return SearchSettings(2, 0.45, 1024)
    return SearchSettings(4, 0.4, max(4 * k, 4096))


def search_settings(preset: str, k: int, *, ncells: int | None = None, ndocs: int | None = None,
                    centroid_score_threshold: float | None = None) -> SearchSettings:
    """The search settings that preset ``preset`` gives ``k`` hits; an explicit ``ncells``, ``ndocs`` or
    ``centroid_score_threshold`` replaces the preset's value.

    ``"colbert"``: ColBERT's settings by k (:func:`default_search_settings`), whatever the index. They assume a
    large collection, where the one to four cells probed per query token hold thousands of documents.
    ``"auto"``: the same three knobs, plus ``min_candidates = ndocs``: probe more cells (doubling ``ncells``, up
    to :data:`MAX_WIDEN_CELLS`) until the candidate set reaches ``ndocs`` documents, and on a collection (or
    subset) of no more than ``ndocs`` documents score them all through the centroid-interaction stages. On a
    large collection the first probe already reaches ``ndocs`` and "auto" is ColBERT's search; on a small one,
    or with short queries, it keeps as many documents in play as ColBERT's settings do at scale. An explicit
    ``ncells`` turns the widening off (the cells probed are the ones asked for, as before presets existed).
    """
    if preset not in SEARCH_PRESETS:
        raise ConfigError(f"search settings must be one of {', '.join(map(repr, SEARCH_PRESETS))}, not {preset!r}")
    base = default_search_settings(k)
    chosen = SearchSettings(
        base.ncells if ncells is None else ncells,
        base.centroid_score_threshold if centroid_score_threshold is None else float(centroid_score_threshold),
        base.ndocs if ndocs is None else ndocs,
    )
    if preset == "auto" and ncells is None:  # an explicit ncells is probed as given, as with "colbert"
        return SearchSettings(chosen.ncells, chosen.centroid_score_threshold, chosen.ndocs, min_candidates=chosen.ndocs)
    return chosen
