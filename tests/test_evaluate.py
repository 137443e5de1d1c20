"""Metrics come from ir-measures; these tests pin the conventions latelex adds around it."""

import math

import pytest

from latelex.errors import InputError
from latelex.evaluate import evaluate, parse_metric
from latelex.types import Hit

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d9": 1}}


def test_values_match_hand_computation():
    run = {"q1": [Hit("d2", 3.0), Hit("d1", 2.0), Hit("d3", 1.0)], "q2": [Hit("d9", 1.0)]}
    res = evaluate(run, QRELS, ["RR@10", "nDCG@10", "R@2", "P@1"])
    assert res["RR@10"] == pytest.approx((1 / 2 + 1) / 2)
    # trec_eval's nDCG (and so BEIR's) uses the grade itself as the gain, not 2**grade - 1
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    got = 1 / math.log2(3) + 2 / math.log2(4)
    assert res["nDCG@10"] == pytest.approx((got / ideal + 1.0) / 2, abs=1e-4)
    assert res["R@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["P@1"] == pytest.approx(0.5)


def test_missing_query_counts_as_zero_and_aliases():
    run = {"q1": [Hit("d1", 1.0)]}
    res = evaluate(run, QRELS, ["MRR@10", "Recall@100"])
    assert res["MRR@10"] == pytest.approx(0.5)
    assert res["Recall@100"] == pytest.approx(0.25)


def test_identical_ids_can_be_ignored():
    run = {"q2": [Hit("q2", 9.0), Hit("d9", 1.0)]}
    assert evaluate(run, {"q2": {"d9": 1}}, ["RR@10"])["RR@10"] == pytest.approx(0.5)
    assert evaluate(run, {"q2": {"d9": 1}}, ["RR@10"], ignore_identical_ids=True)["RR@10"] == pytest.approx(1.0)


def test_per_query_and_errors():
    run = {"q1": [Hit("d3", 1.0)], "q2": []}
    per = evaluate(run, QRELS, ["RR@10"], per_query=True)
    assert per["RR@10"] == {"q1": 1.0, "q2": 0.0}
    with pytest.raises(InputError, match="unknown metric"):
        parse_metric("Bogus@3")
    with pytest.raises(InputError, match="empty"):
        evaluate(run, {}, ["RR@10"])
