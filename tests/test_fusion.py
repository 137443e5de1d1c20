from __future__ import annotations

import math

import numpy as np
import pytest

from latelex.errors import InputError
from latelex.search.fusion import reciprocal_rank_fusion, score_fusion
from latelex.types import Hit


def run_of(**lists):
    """{qid: [Hit]} from {qid: [(doc, score), ...]}."""
    return {q: [Hit(d, float(s)) for d, s in pairs] for q, pairs in lists.items()}


A = run_of(q=[("d1", 3.0), ("d2", 2.0), ("d3", 1.0)])
B = run_of(q=[("d3", 10.0), ("d4", 6.0), ("d1", 2.0)])


def ranked(run, qid="q"):
    return [(h.doc_id, h.score) for h in run[qid]]


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([A, B], k=60)
    expected = {"d1": 1 / 61 + 1 / 63, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 62}
    got = ranked(fused)
    assert [d for d, _ in got] == ["d1", "d3", "d2", "d4"]  # d1 = d3 and d2 = d4: ties go to first met (run A first)
    for d, s in got:
        assert s == pytest.approx(expected[d], rel=1e-12)


def test_rrf_weights_k_and_depth_by_hand():
    fused = ranked(reciprocal_rank_fusion([A, B], k=60, weights=[1, 2]))
    expected = {"d1": 1 / 61 + 2 / 63, "d2": 1 / 62, "d3": 1 / 63 + 2 / 61, "d4": 2 / 62}
    assert [d for d, _ in fused] == sorted(expected, key=lambda d: -expected[d]) == ["d3", "d1", "d4", "d2"]
    for d, s in fused:
        assert s == pytest.approx(expected[d])
    # k = 0: 1/rank, the top rank dominates
    fused = ranked(reciprocal_rank_fusion([A, B], k=0))
    assert fused[0] == ("d1", pytest.approx(1 + 1 / 3)) and fused[1] == ("d3", pytest.approx(1 + 1 / 3))
    # depth 1: only each list's top hit counts; d1 (run A) and d3 (run B) tie, run A's comes first
    assert ranked(reciprocal_rank_fusion([A, B], depth=1)) == [("d1", pytest.approx(1 / 61)), ("d3", pytest.approx(1 / 61))]


def test_rrf_against_a_dense_reference():
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(30)]
    runs = []
    for _ in range(3):
        run = {}
        for q in ("q1", "q2", "q3"):
            chosen = rng.choice(len(docs), size=int(rng.integers(1, 20)), replace=False)
            run[q] = [Hit(docs[i], float(rng.normal())) for i in chosen]
        runs.append(run)
    weights = [0.5, 1.0, 2.0]
    fused = reciprocal_rank_fusion(runs, k=10, weights=weights, depth=8)
    for q in ("q1", "q2", "q3"):
        dense = np.zeros(len(docs))
        present = np.zeros(len(docs), dtype=bool)
        for run, w in zip(runs, weights):
            for rank, hit in enumerate(run[q][:8], start=1):
                dense[docs.index(hit.doc_id)] += w / (10 + rank)
                present[docs.index(hit.doc_id)] = True
        assert {h.doc_id for h in fused[q]} == {docs[i] for i in np.flatnonzero(present)}
        got = [h.score for h in fused[q]]
        assert got == sorted(got, reverse=True)
        np.testing.assert_allclose(got, [dense[docs.index(h.doc_id)] for h in fused[q]])


def test_score_fusion_minmax_by_hand():
    # minmax: A -> d1 1, d2 .5, d3 0; B -> d3 1, d4 .5, d1 0; missing documents get the run's minimum, 0
    assert ranked(score_fusion([A, B])) == [("d1", 1.0), ("d3", 1.0), ("d2", 0.5), ("d4", 0.5)]
    assert ranked(score_fusion([A, B], weights=[1, 2])) == [("d3", 2.0), ("d1", 1.0), ("d4", 1.0), ("d2", 0.5)]
    assert ranked(score_fusion([A, B], weights=[0, 1])) == [("d3", 1.0), ("d4", 0.5), ("d1", 0.0), ("d2", 0.0)]


def test_score_fusion_zscore_and_none_by_hand():
    z = math.sqrt(1.5)  # (3 - 2) / std(3, 2, 1) = 1 / sqrt(2/3); same for B: (10 - 6) / sqrt(32/3)
    got = dict(ranked(score_fusion([A, B], weights=[2, 1], normalization="zscore")))
    # missing: d4 in A gets A's minimum -z; d2 in B gets B's minimum -z
    expected = {"d1": 2 * z - z, "d2": 0 - z, "d3": -2 * z + z, "d4": -2 * z + 0}
    assert got == pytest.approx(expected)
    # none: raw scores, missing documents at the run's minimum raw score (A: 1, B: 2)
    assert ranked(score_fusion([A, B], normalization="none")) == [("d3", 11.0), ("d4", 7.0), ("d1", 5.0), ("d2", 4.0)]
    # depth 2: A keeps d1, d2 (minmax 1, 0), B keeps d3, d4 (1, 0)
    assert ranked(score_fusion([A, B], depth=2)) == [("d1", 1.0), ("d3", 1.0), ("d2", 0.0), ("d4", 0.0)]


def test_score_fusion_edge_cases():
    single = run_of(q=[("d9", 4.0)])
    # a list whose scores do not vary carries no score information: it normalises to 0
    assert ranked(score_fusion([A, single])) == [("d1", 1.0), ("d2", 0.5), ("d3", 0.0), ("d9", 0.0)]
    # queries are the union; a run without the query adds nothing
    other = run_of(r=[("d5", 1.0), ("d6", 0.0)])
    fused = score_fusion([A, other])
    assert list(fused) == ["q", "r"] and ranked(fused, "r") == [("d5", 1.0), ("d6", 0.0)]
    assert ranked(reciprocal_rank_fusion([A, other]), "r") == [("d5", pytest.approx(1 / 61)), ("d6", pytest.approx(1 / 62))]
    # fusing one run keeps its order
    assert [d for d, _ in ranked(reciprocal_rank_fusion([B]))] == ["d3", "d4", "d1"]
    assert [d for d, _ in ranked(score_fusion([B]))] == ["d3", "d4", "d1"]


def test_bad_input():
    with pytest.raises(InputError, match="no runs"):
        reciprocal_rank_fusion([])
    with pytest.raises(InputError, match="not a single run"):
        score_fusion(A)
    with pytest.raises(InputError, match="one weight per run"):
        reciprocal_rank_fusion([A, B], weights=[1.0])
    with pytest.raises(InputError, match=">= 0"):
        score_fusion([A, B], weights=[1.0, -1.0])
    with pytest.raises(InputError, match="positive"):
        score_fusion([A, B], weights=[0, 0])
    with pytest.raises(InputError, match="twice"):
        reciprocal_rank_fusion([run_of(q=[("d1", 1), ("d1", 0)])])
    with pytest.raises(InputError, match="depth"):
        reciprocal_rank_fusion([A], depth=0)
    with pytest.raises(InputError, match="constant k"):
        reciprocal_rank_fusion([A], k=-1)
    with pytest.raises(InputError, match="normalization"):
        score_fusion([A], normalization="softmax")
    with pytest.raises(InputError, match="NaN"):
        score_fusion([run_of(q=[("d1", float("nan"))])])
    with pytest.raises(InputError, match="Hit"):
        reciprocal_rank_fusion([{"q": [("d1", 1.0)]}])
