"""Real models on real data, through the CLI: the reference figures of ../shared/datasets/README.md."""

from __future__ import annotations

import json

import pytest

from conftest import shared_path
from latelex.cli import main

pytestmark = pytest.mark.data


def _search(idx, metrics, extra=()):
    scifact = shared_path("datasets", "scifact")
    assert main(["-q", "search", str(idx), "--queries", str(scifact), "--split", "test", "--qrels", str(scifact),
                 "-k", "100", "--metrics", "nDCG@10", "RR@10", "R@100", "--metrics-json", str(metrics), *extra]) == 0
    return json.loads(metrics.read_text())


def _run(tmp_path, model, extra, search_extra=()):
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(model), "--collection", str(shared_path("datasets", "scifact")),
                 "--query-maxlen", "64", "--doc-maxlen", "256", *extra]) == 0
    return _search(idx, tmp_path / "metrics.json", search_extra)


def test_minilm_plain_colbert_exact_maxsim(tmp_path, scifact_minilm_cache):
    """Indexed through the CLI (the session fixture runs `latelex index`), searched and scored through the CLI."""
    values = _search(scifact_minilm_cache / "scifact-minilm-colbert", tmp_path / "metrics.json")
    assert values["nDCG@10"] == pytest.approx(0.707, abs=0.005)
    assert values["RR@10"] == pytest.approx(0.674, abs=0.005)
    assert values["R@100"] == pytest.approx(0.931, abs=0.005)


def _check_splade_tiny(values: dict) -> None:
    assert values["nDCG@10"] == pytest.approx(0.644, abs=0.005)
    assert values["RR@10"] == pytest.approx(0.616, abs=0.005)
    assert values["R@100"] == pytest.approx(0.893, abs=0.005)


def test_splade_tiny_exact_sparse_product(tmp_path, scifact_splade_sparse):
    """The exact sparse product: indexed through the CLI (the session fixture runs `latelex index --kind sparse`),
    searched and scored through the CLI."""
    _check_splade_tiny(_search(scifact_splade_sparse, tmp_path / "metrics.json"))


def test_splade_tiny_inverted_exact_mode(tmp_path):
    """The inverted index's exact mode, indexed and searched through the CLI (tests/test_inverted_scifact.py holds
    it to the dense top-k)."""
    splade = shared_path("models", "splade-tiny")
    _check_splade_tiny(_run(tmp_path, splade, ["--family", "splade", "--kind", "inverted"], ("--mode", "exact")))
