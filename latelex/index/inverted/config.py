"""Configuration of the SPLADE inverted index: how impacts are quantised and how the postings are laid out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError


@dataclass(frozen=True)
class InvertedConfig:
    """How :class:`~latelex.index.inverted.InvertedIndex` stores a segment.

    ``impacts``: ``"uint8"`` (weights divided by a per-segment scale and rounded, 1 byte per posting) or
    ``"float16"`` (2 bytes per posting). Either way the largest quantisation error is measured at build and
    recorded, so exact search can bound it; the unquantised weights stay in the forward index.
    ``block_size``: postings per block of the block-max metadata (the largest impact of each block).
    ``impact_ordered``: postings per term kept a second time in impact order (largest weight first), for the
    approximate mode and for exact MaxScore (which bounds every document outside these heads by the first weight
    left out, and needs long heads for long lists to prune well); ``0`` keeps none (approximate search is then
    unavailable and exact MaxScore walks the document-ordered lists only), a value larger than a list's length
    (the default) keeps the whole list (5 more bytes per posting).
    ``chunk_documents``: documents transposed per pass while building (bounds the build's working memory).
    """

    impacts: Literal["uint8", "float16"] = "uint8"
    block_size: int = 64
    impact_ordered: int = 1 << 31
    chunk_documents: int = 65536

    def __post_init__(self) -> None:
        if self.impacts not in ("uint8", "float16"):
            raise ConfigError(f"impacts must be 'uint8' or 'float16', not {self.impacts!r}")
        for name in ("block_size", "chunk_documents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        if isinstance(self.impact_ordered, bool) or not isinstance(self.impact_ordered, int) or self.impact_ordered < 0:
            raise ConfigError(f"impact_ordered must be an integer >= 0, not {self.impact_ordered!r}")


__all__ = ["InvertedConfig"]
