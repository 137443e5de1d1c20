"""The PLAID index: ColBERTv2 residual compression, PLAID candidate pruning, incremental updates."""

from .config import PlaidConfig, SearchSettings, default_search_settings
from .index import PlaidIndex

__all__ = ["PlaidConfig", "PlaidIndex", "SearchSettings", "default_search_settings"]
