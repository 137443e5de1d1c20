"""splade-tiny on SciFact: the inverted index's exact modes return exactly the dense dot-product top k."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def scifact_vectors():
    from latelex.data import read_documents, read_qrels_any, read_queries_any
    from latelex.encoders.splade import Splade

    folder = shared_path("datasets", "scifact")
    model = Splade.from_pretrained(str(shared_path("models", "splade-tiny")), query_maxlen=64, doc_maxlen=256,
                                   device="cpu")
    docs = list(read_documents(folder))
    queries = list(read_queries_any(folder, split="test"))
    doc_vectors = model.encode_documents([t for _, t in docs], batch_size=64)
    query_vectors = model.encode_queries([t for _, t in queries], batch_size=64)
    return [d for d, _ in docs], doc_vectors, [q for q, _ in queries], query_vectors, read_qrels_any(folder, "test")


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
