from __future__ import annotations

import json

import numpy as np
import pytest

from latelex.errors import DuplicateIdError, IndexFormatError, InputError
from latelex.index.sparse import SparseIndex
from latelex.scoring.sparse import sparse_dot
from latelex.scoring.topk import topk
from latelex.types import SparseBatch, SparseVector

VOCAB = 400


def random_batch(rng: np.random.Generator, n: int, terms: int, vocab: int = VOCAB, empty_rows=()) -> SparseBatch:
    vectors = []
    for i in range(n):
        count = 0 if i in empty_rows else int(rng.integers(1, terms + 1))
        ids = np.sort(rng.choice(vocab, size=count, replace=False)).astype(np.int32)
        vectors.append(SparseVector(ids, rng.random(count).astype(np.float32) * 3))
    return SparseBatch.from_vectors(vectors, vocab)


def reference_ranking(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Positions of the best k scores: descending, ties by lower position (a plain full sort)."""
    positions = np.arange(scores.shape[0]) if allowed is None else np.sort(allowed)
    order = np.lexsort((positions, -scores[positions]))
    return positions[order][:k]


def assert_same_ranking(hits, ids, scores_row, expected_positions):
    """Same hits in the same order as the reference, where two scores within float32 noise may swap."""
    assert len(hits) == len(expected_positions)
    got = np.array([ids.index(h.doc_id) for h in hits])
    np.testing.assert_allclose([h.score for h in hits], scores_row[expected_positions], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([h.score for h in hits], scores_row[got], rtol=1e-5, atol=1e-6)
    for a, b in zip(got, expected_positions):
        if a != b:
            assert abs(scores_row[a] - scores_row[b]) < 1e-5


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(7)
    docs = random_batch(rng, 600, 30, empty_rows={5})
    queries = random_batch(rng, 25, 12)
    ids = [f"d{i}" for i in range(len(docs))]
    return ids, docs, queries


def dense_scores(queries: SparseBatch, docs: SparseBatch) -> np.ndarray:
    q = queries.to_scipy().toarray().astype(np.float64)
    d = docs.to_scipy().toarray().astype(np.float64)
    return (q @ d.T).astype(np.float32)


def test_search_matches_dense_dot_product(corpus, tmp_path):
    ids, docs, queries = corpus
    index = SparseIndex.build(tmp_path / "idx", ids, docs)
    scores = dense_scores(queries, docs)
    np.testing.assert_allclose(sparse_dot(queries, docs), scores, rtol=1e-5, atol=1e-5)
    for k in (1, 10, 100):
        for hits, row in zip(index.search(queries, k=k), scores):
            assert_same_ranking(hits, ids, row, reference_ranking(row, k))

    # k beyond the corpus: every document, the non-matching ones at score 0 after the matching ones.
    everything = index.search(SparseBatch.from_vectors([queries[0]], VOCAB), k=10_000)[0]
    assert len(everything) == len(ids)
    assert_same_ranking(everything, ids, scores[0], reference_ranking(scores[0], len(ids)))

    rng = np.random.default_rng(1)
    allowed = rng.choice(len(ids), size=40, replace=False)
    subset = [ids[i] for i in allowed]
    for k in (5, 60):
        for hits, row in zip(index.search(queries, k=k, subset=subset), scores):
            assert {h.doc_id for h in hits} <= set(subset)
            assert_same_ranking(hits, ids, row, reference_ranking(row, k, allowed))


def test_empty_query_and_no_queries(corpus, tmp_path):
    ids, docs, _ = corpus
    index = SparseIndex.build(tmp_path / "idx", ids, docs)
    queries = SparseBatch.from_vectors(
        [
            SparseVector(np.zeros(0, np.int32), np.zeros(0, np.float32)),
            SparseVector(np.array([3], np.int32), np.array([1.0], np.float32)),
        ],
        VOCAB,
    )
    hits = index.search(queries, k=3)
    assert hits[0] == [] and len(hits[1]) == 3
    assert index.search(SparseBatch.from_vectors([], VOCAB)) == []


def test_reopen_from_disk(corpus, tmp_path):
    ids, docs, queries = corpus
    encoder = {"family": "splade", "model": "/models/x", "query_model": None, "config": {"pooling": "max"}}
    built = SparseIndex.build(tmp_path / "idx", ids, docs, encoder=encoder)
    opened = SparseIndex.open(tmp_path / "idx", verify=True)
    assert len(opened) == len(ids) and opened.doc_ids == ids and opened.vocab_size == VOCAB
    assert opened.encoder == encoder
    assert opened.manifest["kind"] == "sparse" and opened.manifest["counts"]["documents"] == len(ids)
    assert opened.search(queries, k=7) == built.search(queries, k=7)
    info = opened.info()
    assert info["kind"] == "sparse" and info["documents"] == len(ids) and info["nnz"] == docs.nnz
    assert info["avg_terms_per_doc"] == pytest.approx(docs.nnz / len(ids))
    assert info["bytes_on_disk"] == sum(p.stat().st_size for p in (tmp_path / "idx").iterdir())
    json.dumps(info)
    # Posting lists: document numbers ascend within every term.
    indptr, postings = np.load(tmp_path / "idx" / "indptr.npy"), np.load(tmp_path / "idx" / "indices.npy")
    steps = np.diff(postings.astype(np.int64))
    starts = np.zeros(postings.shape[0], dtype=bool)
    starts[indptr[:-1][indptr[:-1] < postings.shape[0]]] = True
    assert np.all((steps > 0) | starts[1:])


def test_explicit_zeros_are_not_stored(tmp_path):
    batch = SparseBatch.from_vectors(
        [SparseVector(np.array([1, 2, 3], np.int32), np.array([0.5, 0.0, 2.0], np.float32))], VOCAB
    )
    index = SparseIndex.build(tmp_path / "idx", ["x"], batch)
    assert index.nnz == 2 and batch.values[1] == 0.0


def test_truncated_array_is_detected(corpus, tmp_path):
    ids, docs, _ = corpus
    SparseIndex.build(tmp_path / "idx", ids, docs)
    target = tmp_path / "idx" / "indices.npy"
    target.write_bytes(target.read_bytes()[:-16])
    with pytest.raises(IndexFormatError, match="truncated"):
        SparseIndex.open(tmp_path / "idx")


def test_existing_path_needs_overwrite(corpus, tmp_path):
    ids, docs, queries = corpus
    SparseIndex.build(tmp_path / "idx", ids, docs)
    with pytest.raises(IndexFormatError, match="already exists"):
        SparseIndex.build(tmp_path / "idx", ids[:3], SparseBatch.from_vectors(list(docs)[:3], VOCAB))
    assert len(SparseIndex.open(tmp_path / "idx")) == len(ids)
    # A failed build with overwrite leaves the old index as it was.
    with pytest.raises(InputError):
        SparseIndex.build(tmp_path / "idx", ["a", "b"], SparseBatch.from_vectors(list(docs)[:3], VOCAB), overwrite=True)
    assert len(SparseIndex.open(tmp_path / "idx")) == len(ids)
    SparseIndex.build(tmp_path / "idx", ids[:3], SparseBatch.from_vectors(list(docs)[:3], VOCAB), overwrite=True)
    assert len(SparseIndex.open(tmp_path / "idx")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def one_doc(weights, ids=(1, 2)) -> SparseBatch:
    return SparseBatch.from_vectors([SparseVector(np.array(ids, np.int32), np.array(weights, np.float32))], VOCAB)


def test_bad_documents_are_refused(tmp_path):
    with pytest.raises(InputError, match="negative"):
        SparseIndex.build(tmp_path / "a", ["x"], one_doc([0.5, -1.0]))
    with pytest.raises(InputError, match="NaN"):
        SparseIndex.build(tmp_path / "b", ["x"], one_doc([np.nan, 1.0]))
    with pytest.raises(InputError, match="ascending"):
        SparseIndex.build(tmp_path / "c", ["x"], one_doc([1.0, 1.0], ids=(2, 1)))
    with pytest.raises(InputError, match="vocabulary"):
        SparseIndex.build(tmp_path / "d", ["x"], one_doc([1.0, 1.0], ids=(2, VOCAB)))
    with pytest.raises(InputError, match="empty corpus"):
        SparseIndex.build(tmp_path / "e", [], SparseBatch.from_vectors([], VOCAB))
    with pytest.raises(InputError, match="ids but"):
        SparseIndex.build(tmp_path / "f", ["x", "y"], one_doc([1.0, 1.0]))
    with pytest.raises(InputError, match="empty"):
        SparseIndex.build(tmp_path / "g", [""], one_doc([1.0, 1.0]))
    two = SparseBatch.from_vectors([one_doc([1.0, 2.0])[0]] * 2, VOCAB)
    with pytest.raises(DuplicateIdError, match="twice"):
        SparseIndex.build(tmp_path / "h", ["x", "x"], two)
    assert not any(tmp_path.iterdir())


def test_bad_queries_are_refused(corpus, tmp_path):
    ids, docs, queries = corpus
    index = SparseIndex.build(tmp_path / "idx", ids, docs)
    other = SparseBatch(queries.indptr, queries.indices, queries.values, VOCAB + 1)
    with pytest.raises(InputError, match="vocabulary"):
        index.search(other)
    with pytest.raises(InputError, match="not in the index"):
        index.search(queries, subset=["d1", "nope"])
    with pytest.raises(InputError, match="k must"):
        index.search(queries, k=0)
    with pytest.raises(InputError):
        sparse_dot(other, docs)


def test_topk_breaks_ties_by_position():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0], dtype=np.float32)
    positions, values = topk(scores, 4)
    assert positions.tolist() == [1, 3, 2, 4]
    assert values.tolist() == [3.0, 3.0, 2.0, 2.0]
    assert topk(scores, 50)[0].tolist() == [1, 3, 2, 4, 5, 0, 6]
    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 5, size=1000).astype(np.float32)
    for k in (1, 17, 999):
        assert topk(noisy, k)[0].tolist() == reference_ranking(noisy, k).tolist()
