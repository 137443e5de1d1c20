"""The inverted index against a plain dense numpy dot product: exact modes, subsets, segments, deletions, FLOPS."""

from __future__ import annotations

import numpy as np
import pytest

from latelex.config import config_from_dict
from latelex.errors import ConfigError, DuplicateIdError, IndexFormatError, InputError
from latelex.index.inverted import InvertedConfig, InvertedIndex
from latelex.index.inverted import index as index_module
from latelex.types import SparseBatch

V = 300


def random_batch(rng, n, mean_terms, vocab=V, narrow=False):
    """n vectors with Zipf-distributed term ids (so some lists are long) and skewed weights."""
    indptr, rows, values = [0], [], []
    for _ in range(n):
        m = int(rng.integers(1, 2 * mean_terms))
        ids = np.unique(np.minimum(rng.zipf(1.2, m) - 1, vocab - 1)).astype(np.int32)
        if narrow:  # many near-equal weights: quantisation alone would mis-order them
            w = 1.0 + rng.random(ids.size) * 1e-3
        else:
            w = rng.lognormal(0.0, 0.8, ids.size)
        rows.append(ids)
        values.append(w.astype(np.float32))
        indptr.append(indptr[-1] + ids.size)
    return SparseBatch(np.asarray(indptr, np.int64), np.concatenate(rows), np.concatenate(values), vocab)


def dense_scores(queries, docs):
    q = queries.to_scipy().toarray().astype(np.float64)
    d = docs.to_scipy().toarray().astype(np.float64)
    return q @ d.T


def assert_exact(results, scores, ids, k, allowed=None):
    """Each result is the top k of the dense scores: same scores at every rank, ids equal up to ties."""
    for qi, hits in enumerate(results):
        row = scores[qi].copy()
        if allowed is not None:
            row[~allowed] = -np.inf
        pool = int(np.isfinite(row).sum())
        assert len(hits) == min(k, pool)
        expected = np.sort(row[np.isfinite(row)])[::-1][: len(hits)]
        got = np.array([h.score for h in hits])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
        position = {d: i for i, d in enumerate(ids)}
        for h in hits:  # every returned document really has the score it is returned with
            assert row[position[h.doc_id]] == pytest.approx(h.score, rel=1e-6, abs=1e-9)
        assert len({h.doc_id for h in hits}) == len(hits)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    docs = random_batch(rng, 1500, 25)
    queries = random_batch(rng, 40, 10)
    ids = [f"doc{i}" for i in range(len(docs))]
    return ids, docs, queries


@pytest.mark.parametrize("impacts", ["uint8", "float16"])
@pytest.mark.parametrize("algorithm", ["maxscore", "taat"])
def test_exact_equals_dense_topk(tmp_path, data, impacts, algorithm):
    ids, docs, queries = data
    index = InvertedIndex.build(tmp_path / "idx", ids, docs,
                                config=InvertedConfig(impacts=impacts, block_size=8, chunk_documents=400))
    scores = dense_scores(queries, docs)
    for k in (1, 10, 100):
        assert_exact(index.search(queries, k=k, algorithm=algorithm), scores, ids, k)


def test_exact_with_near_ties_that_quantisation_cannot_separate(tmp_path):
    rng = np.random.default_rng(3)
    docs = random_batch(rng, 800, 15, narrow=True)
    queries = random_batch(rng, 20, 6)
    ids = [f"d{i}" for i in range(len(docs))]
    index = InvertedIndex.build(tmp_path / "idx", ids, docs, config=InvertedConfig(block_size=4))
    assert index.info()["max_quantisation_error"] > 1e-4  # larger than the gaps between weights
    scores = dense_scores(queries, docs)
    for algorithm in ("maxscore", "taat"):
        assert_exact(index.search(queries, k=10, algorithm=algorithm), scores, ids, 10)


@pytest.mark.parametrize("impacts", ["uint8", "float16"])
@pytest.mark.parametrize("impact_ordered", [0, 4, 64, 1 << 20])
def test_maxscore_exact_whatever_the_stored_heads(tmp_path, impacts, impact_ordered):
    """MaxScore seeds a threshold from the impact-ordered heads, bounds every document outside the heads by the
    lists' tail bounds, and walks the document-ordered lists when the stored heads are too short for that: exact
    in every case, with heavy-tailed weights (top documents carried by one large product) as in SPLADE."""
    rng = np.random.default_rng(11)
    vocab = 400
    docs = random_batch(rng, 3000, 30, vocab=vocab)
    docs = SparseBatch(docs.indptr, docs.indices, (docs.values ** 2).astype(np.float32), vocab)
    queries = random_batch(rng, 30, 12, vocab=vocab)
    ids = [f"d{i}" for i in range(len(docs))]
    index = InvertedIndex.build(tmp_path / "idx", ids, docs,
                                config=InvertedConfig(impacts=impacts, block_size=16, impact_ordered=impact_ordered))
    scores = dense_scores(queries, docs)
    for k in (1, 10, 200):
        assert_exact(index.search(queries, k=k), scores, ids, k)
    chosen = np.sort(rng.choice(len(ids), 2000, replace=False))
    allowed = np.zeros(len(ids), bool)
    allowed[chosen] = True
    assert_exact(index.search(queries, k=10, subset=[ids[i] for i in chosen]), scores, ids, 10, allowed)


def test_threads_do_not_change_results(tmp_path, data):
    ids, docs, queries = data
    index = InvertedIndex.build(tmp_path / "idx", ids, docs)
    assert index.search(queries, k=10, threads=1) == index.search(queries, k=10, threads=3)


def test_fewer_matches_than_k_fill_with_zero_scores(tmp_path):
    docs = SparseBatch(np.array([0, 1, 2, 3]), np.array([1, 2, 3], np.int32), np.array([1.0, 2.0, 3.0], np.float32), 5)
    index = InvertedIndex.build(tmp_path / "idx", ["a", "b", "c"], docs)
    query = SparseBatch(np.array([0, 1]), np.array([2], np.int32), np.array([0.5], np.float32), 5)
    hits = index.search(query, k=3)[0]
    assert [(h.doc_id, h.score) for h in hits] == [("b", 1.0), ("a", 0.0), ("c", 0.0)]


def test_subset_filter_small_and_large(tmp_path, data):
    ids, docs, queries = data
    index = InvertedIndex.build(tmp_path / "idx", ids, docs)
    scores = dense_scores(queries, docs)
    rng = np.random.default_rng(1)
    for size in (5, 900):
        chosen = np.sort(rng.choice(len(ids), size, replace=False))
        allowed = np.zeros(len(ids), bool)
        allowed[chosen] = True
        for algorithm in ("maxscore", "taat"):
            results = index.search(queries, k=10, subset=[ids[i] for i in chosen], algorithm=algorithm)
            assert_exact(results, scores, ids, 10, allowed)
            assert all(h.doc_id in {ids[i] for i in chosen} for r in results for h in r)
    with pytest.raises(InputError, match="not in the index"):
        index.search(queries, k=3, subset=["nope"])


def test_approximate_mode_recall_knob_and_exact_scores(tmp_path, data):
    ids, docs, queries = data
    index = InvertedIndex.build(tmp_path / "idx", ids, docs)
    exact = index.search(queries, k=10)
    wide = index.search(queries, k=10, mode="approximate", query_terms=1000, rerank=2000)
    assert [[h.doc_id for h in r] for r in wide] == [[h.doc_id for h in r] for r in exact]
    narrow = index.search(queries, k=10, mode="approximate", query_terms=1, depth=5, rerank=10)

    def recall(results):
        return np.mean([len({h.doc_id for h in a} & {h.doc_id for h in e}) / len(e) for a, e in zip(results, exact)])

    assert recall(narrow) < recall(wide) == 1.0
    scores = dense_scores(queries, docs)
    position = {d: i for i, d in enumerate(ids)}
    for qi, hits in enumerate(narrow):  # approximate results still carry exact scores
        for h in hits:
            if h.score > 0:
                assert scores[qi, position[h.doc_id]] == pytest.approx(h.score, rel=1e-6)


def test_approximate_needs_impact_ordered_lists(tmp_path, data):
    ids, docs, queries = data
    index = InvertedIndex.build(tmp_path / "idx", ids, docs, config=InvertedConfig(impact_ordered=0))
    with pytest.raises(InputError, match="impact_ordered"):
        index.search(queries, mode="approximate")


def test_add_delete_persist_and_stay_exact(tmp_path, data):
    ids, docs, queries = data
    half = 900
    first = SparseBatch(docs.indptr[: half + 1], docs.indices[: docs.indptr[half]], docs.values[: docs.indptr[half]], V)
    rest_ptr = docs.indptr[half:] - docs.indptr[half]
    rest = SparseBatch(rest_ptr, docs.indices[docs.indptr[half]:], docs.values[docs.indptr[half]:], V)
    path = tmp_path / "idx"
    index = InvertedIndex.build(path, ids[:half], first)
    index.add(ids[half:], rest)
    assert len(index) == len(ids) and index.info()["segments"] == 2
    scores = dense_scores(queries, docs)
    for algorithm in ("maxscore", "taat"):
        assert_exact(index.search(queries, k=10, algorithm=algorithm), scores, ids, 10)

    top = {h.doc_id for r in index.search(queries, k=5) for h in r}
    removed = sorted(top)[:20] + [ids[-1]]
    assert index.delete(removed) == len(removed)
    allowed = np.array([i not in set(removed) for i in ids])
    assert_exact(index.search(queries, k=10), scores, ids, 10, allowed)  # visible at once
    reopened = InvertedIndex.open(path, verify=True)
    assert len(reopened) == len(ids) - len(removed)
    assert_exact(reopened.search(queries, k=10, algorithm="taat"), scores, ids, 10, allowed)
    assert set(reopened.doc_ids) == set(ids) - set(removed)

    with pytest.raises(DuplicateIdError):
        index.add([ids[0]], SparseBatch(np.array([0, 1]), np.array([1], np.int32), np.array([1.0], np.float32), V))
    with pytest.raises(InputError, match="not in the index"):
        index.delete(["missing"])
    # a deleted id may come back with a new vector
    index.add([removed[0]], SparseBatch(np.array([0, 1]), np.array([0], np.int32), np.array([50.0], np.float32), V))
    q = SparseBatch(np.array([0, 1]), np.array([0], np.int32), np.array([1.0], np.float32), V)
    assert index.search(q, k=1)[0][0].doc_id == removed[0]

    index.compact()
    assert index.info()["segments"] == 1 and index.info()["deleted"] == 0
    assert index.search(q, k=1)[0][0].doc_id == removed[0]
    assert len(InvertedIndex.open(path, verify=True)) == len(index)


def test_a_crash_before_the_manifest_swap_leaves_the_old_index(tmp_path, data, monkeypatch):
    ids, docs, queries = data
    path = tmp_path / "idx"
    index = InvertedIndex.build(path, ids, docs)
    before = index.search(queries, k=10)
    extra = SparseBatch(np.array([0, 1]), np.array([3], np.int32), np.array([99.0], np.float32), V)

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(index_module, "_write_state", crash)
    with pytest.raises(OSError):
        index.add(["new"], extra)
    with pytest.raises(OSError):
        index.delete([ids[0]])
    monkeypatch.undo()
    reopened = InvertedIndex.open(path, verify=True)
    assert len(reopened) == len(ids) and reopened.search(queries, k=10) == before
    reopened.add(["new"], extra)  # the half-written segment is replaced, not in the way
    assert "new" in InvertedIndex.open(path, verify=True).doc_ids


def test_build_from_chunks_equals_build(tmp_path, data):
    ids, docs, queries = data
    a = InvertedIndex.build(tmp_path / "a", ids, docs)
    cuts = [0, 100, 101, 1000, len(ids)]
    chunks = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        ptr = docs.indptr[s : e + 1] - docs.indptr[s]
        chunks.append((ids[s:e], SparseBatch(ptr, docs.indices[docs.indptr[s] : docs.indptr[e]],
                                             docs.values[docs.indptr[s] : docs.indptr[e]], V)))
    b = InvertedIndex.build_from_chunks(tmp_path / "b", iter(chunks), V)
    for name in ("post_offsets", "post_docs", "post_impacts", "block_max", "imp_docs", "fwd_values"):
        np.testing.assert_array_equal(a._segments[0].arrays[name], b._segments[0].arrays[name])
    assert a.search(queries, k=10) == b.search(queries, k=10)


def test_flops_matches_its_definition_and_is_never_nan(tmp_path, data):
    ids, docs, queries = data
    index = InvertedIndex.build(tmp_path / "idx", ids, docs)
    d = docs.to_scipy().toarray() > 0
    q = queries.to_scipy().toarray() > 0
    expected = float((q.mean(0) * d.mean(0)).sum())
    assert index.flops(queries) == pytest.approx(expected)
    assert index.flops() == pytest.approx(float((d.mean(0) ** 2).sum()))
    assert index.info()["flops_docs"] == pytest.approx(index.flops())
    assert index.flops(SparseBatch.from_vectors([], V)) == 0.0
    index.delete(ids[:10])
    assert index.flops(queries) == pytest.approx(float((q.mean(0) * d[10:].mean(0)).sum()))
    index.delete(ids[10:])
    assert index.flops(queries) == 0.0 and index.flops() == 0.0
    info = index.info()
    assert info["documents"] == 0 and not any(isinstance(v, float) and np.isnan(v) for v in info.values())
    assert index.search(queries, k=5) == [[] for _ in range(len(queries))]


def test_bad_input_gets_one_line_errors(tmp_path, data):
    ids, docs, queries = data
    path = tmp_path / "idx"
    index = InvertedIndex.build(path, ids, docs)
    other = SparseBatch(queries.indptr, queries.indices, queries.values, V + 1)
    checks = [
        (lambda: index.search(other), "vocabulary of 301 terms"),
        (lambda: index.search(SparseBatch(np.array([0, 1]), np.array([1], np.int32),
                                          np.array([-1.0], np.float32), V)), "negative"),
        (lambda: index.search(SparseBatch(np.array([0, 1]), np.array([1], np.int32),
                                          np.array([np.nan], np.float32), V)), "NaN"),
        (lambda: index.search(SparseBatch(np.array([0, 1, 1]), np.array([1], np.int32),
                                          np.array([1.0], np.float32), V)), "query 1 has no non-zero weight"),
        (lambda: index.search(queries, k=0), "positive"),
        (lambda: index.search(queries, mode="fast"), "mode"),
        (lambda: index.add(["x"], SparseBatch(np.array([0, 1]), np.array([1], np.int32),
                                              np.array([1.0], np.float32), V + 5)), "same model"),
        (lambda: InvertedIndex.build(tmp_path / "n", ["a"], SparseBatch(np.array([0, 1]), np.array([1], np.int32),
                                                                         np.array([-2.0], np.float32), V)),
         "negative"),
    ]
    for call, message in checks:
        with pytest.raises(InputError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown"):
        config_from_dict(InvertedConfig, {"impact": "uint8"})
    with pytest.raises(ConfigError):
        InvertedConfig(impacts="int4")
    # a truncated index directory
    victim = path / index.manifest["arrays"]["seg-000000/post_docs"]["file"]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(IndexFormatError, match="truncated; rebuild"):
        InvertedIndex.open(path)
    (path / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="rebuild"):
        InvertedIndex.open(path)
