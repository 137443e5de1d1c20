from __future__ import annotations

import numpy as np
import pytest

from latelex.encoders.colbert import ColBERT
from latelex.errors import ConfigError, InputError
from latelex.index.bm25 import BM25Index
from latelex.scoring.maxsim import maxsim_packed
from latelex.search.fusion import reciprocal_rank_fusion, score_fusion
from latelex.search.hybrid import HybridSearcher, rerank_first_stage
from latelex.search.retriever import Retriever
from latelex.types import Hit, PackedEmbeddings

DOCS = {
    "d0": "vitamin and cancer risk in patients",
    "d1": "the cells of the brain and the heart",
    "d2": "a healthy fruit is good for the heart",
    "d3": "cancer cells and gene expression",
    "d4": "vaccine trial results for a new virus",
    "d5": "blood tests show low vitamin levels",
    "d6": "heart disease and high blood pressure",
    "d7": "protein models of cells",
    "d8": "learned sparse retrieval with token vectors",
    "d9": "late interaction scores every query token",
    "d10": "apple and banana are red and green fruits",
    "d11": "dense neural search models of documents",
}
QUERIES = {"q1": "vitamin cancer", "q2": "heart blood", "q3": "cells gene protein", "q4": "fruit apple banana",
           "q5": "token vectors retrieval"}


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return ColBERT.from_backbone(tiny_bert, dim=16, seed=1, query_maxlen=32, doc_maxlen=32)


@pytest.fixture(scope="module")
def colbert(encoder, tmp_path_factory):
    return Retriever.build(tmp_path_factory.mktemp("c") / "idx", encoder, DOCS.items(), show_progress=False)


@pytest.fixture(scope="module")
def bm25(tmp_path_factory):
    return BM25Index.build(tmp_path_factory.mktemp("b") / "idx", list(DOCS), list(DOCS.values()))


def exact_maxsim(encoder, query: str, doc_ids: list[str]) -> dict[str, float]:
    """Plain reference: encode the query and each candidate, MaxSim in float32."""
    q = encoder.encode_queries([query], show_progress=False)[0]
    docs = encoder.encode_documents([DOCS[d] for d in doc_ids], show_progress=False)
    packed = PackedEmbeddings.from_list(list(docs))
    scores = maxsim_packed(q, packed.vectors, packed.offsets, similarity=encoder.config.similarity)
    return {d: float(s) for d, s in zip(doc_ids, scores.tolist())}


def test_rerank_first_stage_with_an_encoder_is_exact_maxsim(bm25, encoder):
    first = bm25.search_queries(QUERIES, k=5)
    run = rerank_first_stage(first, encoder, QUERIES, DOCS)
    assert list(run) == list(first)
    for qid, hits in run.items():
        candidates = [h.doc_id for h in first[qid]]
        reference = exact_maxsim(encoder, QUERIES[qid], candidates)
        assert sorted(h.doc_id for h in hits) == sorted(candidates)  # the same candidates, re-ordered
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:
            assert h.score == pytest.approx(reference[h.doc_id], abs=1e-4)
    # k and depth cut the output and the candidates
    short = rerank_first_stage(first, encoder, QUERIES, DOCS, k=2, depth=3)
    for qid, hits in short.items():
        top3 = {h.doc_id for h in first[qid][:3]}
        assert len(hits) == min(2, len(top3)) and {h.doc_id for h in hits} <= top3


def test_rerank_with_a_retriever_uses_stored_vectors(bm25, encoder, colbert):
    first = bm25.search_queries(QUERIES, k=6)
    by_encoder = rerank_first_stage(first, encoder, QUERIES, DOCS)
    by_index = rerank_first_stage(first, colbert, QUERIES)  # no texts needed
    for qid in QUERIES:
        a = {h.doc_id: h.score for h in by_encoder[qid]}
        b = {h.doc_id: h.score for h in by_index[qid]}
        assert a.keys() == b.keys()
        for d in a:
            assert b[d] == pytest.approx(a[d], abs=2e-2)  # float16 vectors on disk
        # and the retriever path is exactly its own index restricted to the candidates
        expected = colbert.search([QUERIES[qid]], k=len(a), subset=list(a), with_text=False)[0]
        assert by_index[qid] == expected


def test_rerank_first_stage_edge_cases(encoder):
    first = {"q1": [Hit("d0", 1.0), Hit("d3", 0.5)], "q2": []}
    run = rerank_first_stage(first, encoder, QUERIES, DOCS)
    assert run["q2"] == [] and {h.doc_id for h in run["q1"]} == {"d0", "d3"}
    assert rerank_first_stage({"q2": []}, encoder, QUERIES, DOCS) == {"q2": []}
    with pytest.raises(InputError, match="empty"):
        rerank_first_stage({}, encoder, QUERIES, DOCS)
    with pytest.raises(InputError, match="no text"):
        rerank_first_stage({"zz": [Hit("d0", 1.0)]}, encoder, QUERIES, DOCS)
    with pytest.raises(InputError, match="not in the collection"):
        rerank_first_stage({"q1": [Hit("nope", 1.0)]}, encoder, QUERIES, DOCS)
    with pytest.raises(InputError, match="documents"):
        rerank_first_stage(first, encoder, QUERIES)
    with pytest.raises(InputError, match="cannot re-rank"):
        rerank_first_stage(first, object(), QUERIES, DOCS)


@pytest.mark.parametrize("fusion", ["rrf", "score"])
def test_hybrid_searcher_is_fusion_of_its_members(bm25, colbert, fusion):
    searcher = HybridSearcher.from_members([bm25, colbert], fusion=fusion, weights=[1.0, 0.5], depth=4)
    run = searcher.search_queries(QUERIES, k=3)
    runs = [bm25.search_queries(QUERIES, k=4), colbert.search_queries(QUERIES, k=4)]
    if fusion == "rrf":
        expected = reciprocal_rank_fusion(runs, weights=[1.0, 0.5])
    else:
        expected = score_fusion(runs, weights=[1.0, 0.5], normalization="minmax")
    assert run == {q: hits[:3] for q, hits in expected.items()}


def test_hybrid_searcher_with_rerank(bm25, colbert, encoder):
    searcher = HybridSearcher.from_members([bm25, colbert], fusion="rrf", rerank_with=colbert, depth=5)
    run = searcher.search_queries(QUERIES, k=2)
    first = reciprocal_rank_fusion([bm25.search_queries(QUERIES, k=5), colbert.search_queries(QUERIES, k=5)], depth=5)
    assert run == rerank_first_stage(first, colbert, QUERIES, k=2, depth=5)
    # one member re-ranked by an encoder, the texts read from the retriever's document store
    single = HybridSearcher.from_members([bm25], rerank_with=encoder, documents=colbert, depth=4)
    assert single.search_queries(QUERIES, k=4) == rerank_first_stage(bm25.search_queries(QUERIES, k=4), encoder,
                                                                      QUERIES, DOCS)


def test_hybrid_searcher_bad_input(bm25, encoder):
    with pytest.raises(InputError, match="at least one member"):
        HybridSearcher.from_members([])
    with pytest.raises(InputError, match="search_queries"):
        HybridSearcher.from_members([object()])
    with pytest.raises(InputError, match="one weight per member"):
        HybridSearcher.from_members([bm25, bm25], weights=[1.0])
    with pytest.raises(InputError, match="documents"):
        HybridSearcher.from_members([bm25], rerank_with=encoder)
    with pytest.raises(ConfigError, match="weights"):
        HybridSearcher.from_members([bm25, bm25], weights=[1.0, -2.0])
    with pytest.raises(ConfigError, match="fusion"):
        HybridSearcher.from_members([bm25], fusion="max")
    with pytest.raises(ConfigError, match="unknown HybridConfig option"):
        HybridSearcher.from_members([bm25], rrfk=10)
    searcher = HybridSearcher.from_members([bm25, bm25])
    with pytest.raises(InputError, match="no queries"):
        searcher.search_queries({}, k=3)
    with pytest.raises(InputError, match="positive"):
        searcher.search_queries(QUERIES, k=0)


def test_splade_retriever_can_rerank_too(bm25, tiny_mlm, tmp_path):
    from latelex.encoders.splade import Splade

    splade = Retriever.build(tmp_path / "s", Splade.from_pretrained(tiny_mlm), DOCS.items(), show_progress=False)
    first = bm25.search_queries(QUERIES, k=5)
    run = rerank_first_stage(first, splade, QUERIES)
    for qid in QUERIES:
        candidates = [h.doc_id for h in first[qid]]
        expected = splade.search([QUERIES[qid]], k=len(candidates), subset=candidates)[0]
        assert [h.doc_id for h in run[qid]] == [h.doc_id for h in expected]  # batched query encoding: 1e-6 noise
        np.testing.assert_allclose([h.score for h in run[qid]], [h.score for h in expected], rtol=1e-5)
