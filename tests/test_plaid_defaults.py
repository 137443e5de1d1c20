"""PlaidIndex search defaults on every collection size: never fewer than min(k, allowed documents) hits, settings
that adapt to the index, and ColBERT's own settings still reachable by name (random vectors, tiny indexes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latelex.errors import ConfigError, InputError
from latelex.index.plaid import PlaidConfig, PlaidIndex
from latelex.index.plaid.config import SEARCH_PRESETS, default_search_settings, search_settings

from test_plaid_index import DIM, GENEROUS, assert_hits, brute_force, make_docs, make_queries


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fine(tmp_path_factory) -> PlaidIndex:
    """160 documents in 128 cells (about 10 token vectors a cell): one cell per query token reaches few documents."""
    ids, docs = make_docs(160, n_clusters=48)
    return PlaidIndex.build(tmp_path_factory.mktemp("fine") / "idx", ids, docs,
                            config=PlaidConfig(nbits=2, chunk_size=50, n_centroids=128))


def one_token_queries(n: int = 12) -> list[torch.Tensor]:
    return [q[:1].clone() for q in make_queries(n, seed=3)]


def test_one_cell_per_token_reaches_fewer_documents_than_k(fine):
    # The premise of the tests below: ColBERT's ncells=1 lists of one query token hold fewer than k documents.
    data = fine._data
    scores = data.centroids_np @ one_token_queries()[0].numpy()[0]
    cell = int(np.argmax(scores))
    assert data.ivf_offsets[cell + 1] - data.ivf_offsets[cell] < 50


@pytest.mark.parametrize("settings", SEARCH_PRESETS)
def test_never_fewer_than_k_hits(fine, settings):
    queries = one_token_queries()
    for kwargs in ({}, dict(ncells=1), dict(ncells=1, ndocs=4, centroid_score_threshold=0.99)):
        for row in fine.search(queries, k=50, settings=settings, **kwargs):
            assert len(row) == 50 and len({h.doc_id for h in row}) == 50
            assert all(a.score >= b.score for a, b in zip(row, row[1:]))


def test_hits_carry_exact_maxsim_scores_when_widened(fine):
    queries = one_token_queries(4)
    exact = {d: s for row in brute_force(fine, queries, 160) for d, s in row}
    got = fine.search(queries, k=40, settings="colbert", ncells=1)
    for q, row in zip(brute_force(fine, queries, 160), got):
        scores = dict(q)
        for h in row:
            assert h.score == pytest.approx(scores[h.doc_id], abs=1e-4)
    assert exact


def test_k_beyond_the_collection_returns_every_live_document_in_exact_order(fine):
    queries = one_token_queries(3)
    for settings in SEARCH_PRESETS:
        assert_hits(fine.search(queries, k=500, settings=settings, ncells=1), brute_force(fine, queries, 500))


def test_a_subset_larger_than_ndocs_still_fills_k(fine):
    ids = fine.doc_ids
    subset = ids[::2]  # 80 documents, more than ndocs: through the inverted lists, filtered
    for row in fine.search(one_token_queries(), k=30, subset=subset, settings="colbert", ncells=1, ndocs=8):
        assert len(row) == 30 and {h.doc_id for h in row} <= set(subset)
    small = ids[:7]
    for row in fine.search(one_token_queries(), k=30, subset=small, ncells=1, ndocs=4):
        assert sorted(h.doc_id for h in row) == sorted(small)


def test_deleted_documents_do_not_count_towards_k(tmp_path):
    ids, docs = make_docs(60, n_clusters=48, seed=5)
    index = PlaidIndex.build(tmp_path / "idx", ids, docs, config=PlaidConfig(nbits=2, n_centroids=64))
    index.delete(ids[:45])
    for row in index.search(one_token_queries(), k=20, settings="colbert", ncells=1):
        assert sorted(h.doc_id for h in row) == sorted(ids[45:])


def test_the_auto_preset_is_colbert_plus_a_candidate_target():
    for k in (1, 10, 100, 1000):
        want = default_search_settings(k)
        auto = search_settings("auto", k)
        assert (auto.ncells, auto.centroid_score_threshold, auto.ndocs) == (want.ncells, want.centroid_score_threshold, want.ndocs)
        assert auto.min_candidates == want.ndocs
        assert search_settings("colbert", k) == want and want.min_candidates == 0


def test_explicit_knobs_override_either_preset():
    for preset in SEARCH_PRESETS:
        chosen = search_settings(preset, 10, ncells=3, ndocs=77, centroid_score_threshold=0.25)
        assert (chosen.ncells, chosen.ndocs, chosen.centroid_score_threshold) == (3, 77, 0.25)
    assert search_settings("auto", 10, ndocs=77).min_candidates == 77
    assert search_settings("auto", 10, ncells=2).min_candidates == 0  # the cells asked for, no widening
    with pytest.raises(ConfigError, match="settings must be one of"):
        search_settings("plaid", 10)


def test_auto_widens_until_the_candidates_reach_ndocs(fine, monkeypatch):
    import latelex.index.plaid.index as plaid_index

    seen = []
    real = plaid_index.search_one

    def spy(data, Q, k, ncells, threshold, ndocs, allowed, direct, *rest):
        seen.append(direct is not None)
        return real(data, Q, k, ncells, threshold, ndocs, allowed, direct, *rest)

    monkeypatch.setattr(plaid_index, "search_one", spy)
    queries = one_token_queries(2)
    fine.search(queries, k=10, threads=1)  # 160 documents <= ndocs 256: all of them are candidates
    fine.search(queries, k=10, settings="colbert", threads=1)  # through the inverted lists
    fine.search(queries, k=10, ndocs=64, threads=1)  # through the inverted lists, widened to 64 candidates
    assert seen == [True, True, False, False, False, False]

    from latelex.index.plaid import search as plaid_search

    counts = []
    gather = plaid_search.gather_candidates
    monkeypatch.setattr(plaid_search, "gather_candidates", lambda *a: counts.append(len(out := gather(*a))) or out)
    fine.search(queries[:1], k=10, ndocs=64, threads=1)
    assert counts[-1] >= 64 and all(c < 64 for c in counts[:-1]) and len(counts) > 1
    counts.clear()
    fine.search(queries[:1], k=10, ndocs=64, settings="colbert", threads=1)
    assert len(counts) == 1 and counts[0] < 64


def test_colbert_preset_with_generous_knobs_is_exact_and_bad_names_are_refused(fine):
    queries = make_queries(4)
    assert_hits(fine.search(queries, k=10, settings="colbert", **GENEROUS), brute_force(fine, queries, 10))
    with pytest.raises(InputError, match="settings must be one of 'auto', 'colbert'"):
        fine.search(queries, settings="fast")


def test_auto_defaults_find_the_exact_top_k_on_a_small_collection(fine):
    # On 160 documents in 128 cells the defaults probe widely enough to recover nearly all of the exact top 10.
    queries = make_queries(20, seed=11)
    exact = brute_force(fine, queries, 10)
    got = fine.search(queries, k=10)
    recall = np.mean([len({h.doc_id for h in g} & {d for d, _ in e}) / 10 for g, e in zip(got, exact)])
    assert recall >= 0.95
    assert DIM == fine.dim
