"""The hybrid figures of bench/hybrid_scifact.py on SciFact test, held as a data test.

The ColBERT index (all-MiniLM-L6-v2, plain, query max 64 / doc max 256) is the one the session fixture
``scifact_minilm_cache`` builds through the CLI for test_scifact as well.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import shared_path

pytestmark = pytest.mark.data

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def figures(scifact_minilm_cache):
    shared_path("datasets", "scifact")
    shared_path("models", "all-MiniLM-L6-v2")
    sys.path.insert(0, str(BENCH))
    try:
        import hybrid_scifact
    finally:
        sys.path.remove(str(BENCH))
    return hybrid_scifact.measure(scifact_minilm_cache, depth=100, rrf_k=60, tune=False, peer=False, log=lambda _: None)["systems"]


def test_bm25_reproduces_the_reference(figures):
    bm25 = figures["BM25"]
    assert bm25["nDCG@10"] == pytest.approx(0.686, abs=0.005)
    assert bm25["RR@10"] == pytest.approx(0.649, abs=0.005)
    assert bm25["R@100"] == pytest.approx(0.913, abs=0.005)


def test_colbert_member_is_the_reference(figures):
    assert figures["ColBERT"]["nDCG@10"] == pytest.approx(0.707, abs=0.005)


def test_rrf_of_bm25_and_colbert_beats_both_members(figures):
    rrf = figures["RRF(BM25, ColBERT)"]["nDCG@10"]
    assert rrf > figures["BM25"]["nDCG@10"]
    assert rrf > figures["ColBERT"]["nDCG@10"]
