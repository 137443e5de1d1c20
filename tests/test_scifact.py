"""Real models on real data, through the CLI: the reference figures of ../shared/datasets/README.md."""

from __future__ import annotations

import json

import pytest

from conftest import shared_path
from latelex.cli import main

pytestmark = pytest.mark.data


def _run(tmp_path, model, extra):
    scifact = shared_path("datasets", "scifact")
    idx, metrics = tmp_path / "idx", tmp_path / "metrics.json"
    assert main(["-q", "index", str(idx), "--model", str(model), "--collection", str(scifact),
                 "--query-maxlen", "64", "--doc-maxlen", "256", *extra]) == 0
    assert main(["-q", "search", str(idx), "--queries", str(scifact), "--split", "test", "--qrels", str(scifact),
                 "-k", "100", "--metrics", "nDCG@10", "RR@10", "R@100", "--metrics-json", str(metrics)]) == 0
    return json.loads(metrics.read_text())


def test_minilm_plain_colbert_exact_maxsim(tmp_path):
    values = _run(tmp_path, shared_path("models", "all-MiniLM-L6-v2"), [])
    assert values["nDCG@10"] == pytest.approx(0.707, abs=0.005)
    assert values["RR@10"] == pytest.approx(0.674, abs=0.005)
    assert values["R@100"] == pytest.approx(0.931, abs=0.005)


def test_splade_tiny_exact_sparse(tmp_path):
    values = _run(tmp_path, shared_path("models", "splade-tiny"), ["--family", "splade"])
    assert values["nDCG@10"] == pytest.approx(0.644, abs=0.005)
    assert values["RR@10"] == pytest.approx(0.616, abs=0.005)
    assert values["R@100"] == pytest.approx(0.893, abs=0.005)
