"""The top-level names: each resolves, and ``latelex.evaluate`` is callable whatever was imported before."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CALL = """
from latelex import Hit
run = {"q1": [Hit("d1", 2.0), Hit("d2", 1.0)], "q2": [Hit("d3", 1.0)]}
qrels = {"q1": {"d1": 1}, "q2": {"d4": 1}}
scores = evaluate(run, qrels, ["nDCG@10"])
assert scores == {"nDCG@10": 0.5}, scores
import latelex.evaluate.metrics
assert latelex.evaluate.metrics.evaluate(run, qrels, ["nDCG@10"]) == scores
assert evaluate.format_table and evaluate.DEFAULT_METRICS
print("ok")
"""


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize(
    "before",
    [
        "import latelex.evaluate.metrics",
        "from latelex.evaluate import metrics",
        "import latelex.evaluate",
        "import latelex.cli",
        "pass",
    ],
)
def test_evaluate_is_callable_whatever_was_imported_before(before):
    assert _run(f"{before}\nfrom latelex import evaluate\n{_CALL}").strip() == "ok"


def test_attribute_access_before_and_after_the_subpackage():
    code = """
    import latelex
    first = latelex.evaluate
    import latelex.evaluate.metrics
    assert latelex.evaluate is first and callable(first)
    from latelex.evaluate import evaluate as function
    assert function is latelex.evaluate.metrics.evaluate
    print("ok")
    """
    assert _run(code).strip() == "ok"


def test_every_exported_name_resolves():
    code = """
    import latelex
    missing = []
    for name in latelex.__all__:
        if getattr(latelex, name, None) is None:
            missing.append(name)
    assert not missing, missing
    assert sorted(latelex.__all__) == dir(latelex)
    print(len(latelex.__all__))
    """
    assert int(_run(code)) >= 15


def test_unknown_name_is_an_attribute_error():
    import latelex

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        latelex.nope  # noqa: B018
