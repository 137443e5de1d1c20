"""splade-tiny on SciFact: the inverted index's exact modes return exactly the dense dot-product top k."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def scifact_vectors(scifact_splade_sparse):
    """The document vectors of the session's CLI-built sparse index (splade-tiny, doc max 256), in corpus order, and
    the test queries encoded with the same model (query max 64)."""
    from scipy.sparse import csr_matrix

    from latelex import Retriever
    from latelex.data import read_documents, read_qrels_any, read_queries_any
    from latelex.encoders.splade import Splade
    from latelex.types import SparseBatch

    folder = shared_path("datasets", "scifact")
    retriever = Retriever.open(scifact_splade_sparse)
    sparse = retriever.index
    assert retriever.kind == "sparse" and len(retriever._state.segments) == 1
    config = retriever.manifest["encoder"]["config"]
    assert (config["query_maxlen"], config["doc_maxlen"]) == (64, 256)
    doc_ids = [d for d, _ in read_documents(folder)]
    assert sparse.doc_ids == doc_ids
    by_doc = csr_matrix(sparse._postings()).T.tocsr()  # (V, N) term-major as stored -> (N, V)
    by_doc.sort_indices()
    docs = SparseBatch(by_doc.indptr.astype(np.int64), by_doc.indices.astype(np.int32),
                       by_doc.data.astype(np.float32), sparse.vocab_size)
    model = Splade.from_pretrained(str(shared_path("models", "splade-tiny")), query_maxlen=64, doc_maxlen=256,
                                   device="cpu")
    queries = list(read_queries_any(folder, split="test"))
    query_vectors = model.encode_queries([t for _, t in queries], batch_size=64)
    assert query_vectors.vocab_size == docs.vocab_size
    return doc_ids, docs, [q for q, _ in queries], query_vectors, read_qrels_any(folder, "test")


def test_exact_modes_equal_the_dense_topk_and_the_reference_ndcg(tmp_path, scifact_vectors):
    from latelex.evaluate.metrics import evaluate
    from latelex.index.inverted import InvertedIndex

    doc_ids, docs, query_ids, queries, qrels = scifact_vectors
    index = InvertedIndex.build(tmp_path / "idx", doc_ids, docs)
    dense = (queries.to_scipy().astype(np.float64) @ docs.to_scipy().astype(np.float64).T).toarray()
    k = 100
    for algorithm in ("maxscore", "taat"):
        results = index.search(queries, k=k, algorithm=algorithm)
        for qi, hits in enumerate(results):
            expected = np.sort(dense[qi])[::-1][:k]
            np.testing.assert_allclose([h.score for h in hits], expected, rtol=1e-6, atol=1e-9)
            ties = np.sum(np.isclose(dense[qi], expected[-1], rtol=1e-6))
            strictly_above = {doc_ids[i] for i in np.flatnonzero(dense[qi] > expected[-1] * (1 + 1e-6))}
            assert strictly_above <= {h.doc_id for h in hits}, (qi, ties)
        run = {q: hits for q, hits in zip(query_ids, results)}
        values = evaluate(run, qrels, ["nDCG@10"])
        assert values["nDCG@10"] == pytest.approx(0.644, abs=0.005)
