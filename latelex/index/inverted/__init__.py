"""The SPLADE inverted index: quantised block-max postings, a forward index for exact re-scoring, exact and
approximate top-k search, incremental add/delete and FLOPS statistics."""

from .config import InvertedConfig
from .index import InvertedIndex

__all__ = ["InvertedIndex", "InvertedConfig"]
