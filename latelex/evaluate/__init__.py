"""Metrics (through ir-measures) and evaluation runs."""

from .metrics import DEFAULT_METRICS, evaluate, format_table, parse_metric

__all__ = ["DEFAULT_METRICS", "evaluate", "format_table", "parse_metric"]
