"""Metrics (through ir-measures) and evaluation runs.

This package is itself callable: ``latelex.evaluate(run, qrels, ["nDCG@10"])`` is
:func:`latelex.evaluate.metrics.evaluate`. ``from latelex import evaluate`` therefore gives one object that works
as the function and as the package (``evaluate.metrics``, ``evaluate.format_table``), whatever was imported
before: once ``latelex.evaluate.metrics`` has been imported, Python binds the name ``latelex.evaluate`` to this
package, so the package, not a separate function, must be what callers get.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .metrics import DEFAULT_METRICS, evaluate, format_table, parse_metric

__all__ = ["DEFAULT_METRICS", "evaluate", "format_table", "parse_metric"]


class _CallableModule(types.ModuleType):
    """The type of this package: calling it calls :func:`~latelex.evaluate.metrics.evaluate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
