"""Hard-negative mining: rank window, excluded positives, seeded sampling, teacher scores, readable output."""

from __future__ import annotations

import json

import pytest
import torch

from latelex.errors import InputError
from latelex.train import BM25Retriever, CrossEncoderTeacher, TrainingData, mine_hard_negatives
from latelex.train.data import read_examples
from latelex.types import Hit

TOPICS = [
    "apple banana fruit", "cancer risk patients", "vaccine virus trial", "brain heart blood",
    "sparse index search", "gene protein cell", "drug dose treatment", "red green blue",
]
DOCS = {f"d{i}": f"{t} study results" for i, t in enumerate(TOPICS)}
QUERIES = {f"q{i}": f"what about {t}" for i, t in enumerate(TOPICS)}
QRELS = {f"q{i}": {f"d{i}": 1} for i in range(8)}


class FixedRetriever:
    """Returns d0 .. d7 in order for every query (so ranks are known)."""

    def __init__(self):
        self.calls = []

    def search_queries(self, queries, k):
        self.calls.append((list(queries), k))
        return {q: [Hit(f"d{i}", 10.0 - i) for i in range(min(k, 8))] for q, _ in queries}


def test_rank_window_excludes_positives_and_is_seeded(tmp_path):
    qrels = {"q0": {"d0": 1, "d2": 2, "d3": 0}, "q1": {"d5": 1}, "q9": {"d1": 1}}
    retriever = FixedRetriever()
    out = tmp_path / "mined.jsonl"
    result = mine_hard_negatives(retriever, QUERIES, qrels, out, nway=3, ranks=(2, 5), examples_per_query=4, seed=7)
    assert retriever.calls[0][1] == 5 and [q for q, _ in retriever.calls[0][0]] == ["q0", "q1"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.examples == len(rows) == 8 and result.queries == 2
    assert result.skipped_without_positive == 6  # q2..q7 have no judgement among the given qrels
    for qid, pos, *negs in rows:
        assert len(negs) == 2 and len(set(negs)) == 2
        if qid == "q0":
            assert pos in {"d0", "d2"} and set(negs) <= {"d1", "d3", "d4"}  # ranks 2..5 minus the positive d2
        else:
            assert pos == "d5" and set(negs) <= {"d1", "d2", "d3", "d4"}
    assert {r[1] for r in rows if r[0] == "q0"} == {"d0", "d2"}  # positives cycled
    again = tmp_path / "again.jsonl"
    mine_hard_negatives(FixedRetriever(), QUERIES, qrels, again, nway=3, ranks=(2, 5), examples_per_query=4, seed=7)
    assert again.read_text() == out.read_text()
    data = TrainingData.from_id_triples(out, QUERIES, DOCS, nway=3)
    assert len(data) == 8


def test_too_narrow_window_skips_or_fails(tmp_path):
    qrels = {"q0": {"d0": 1, "d1": 1}, "q1": {"d4": 1}}
    result = mine_hard_negatives(FixedRetriever(), QUERIES, qrels, tmp_path / "m.jsonl", nway=3, ranks=(1, 3))
    assert result.skipped_few_negatives == 1 and result.examples == 1  # q0 keeps only d2 in ranks 1..3
    with pytest.raises(InputError, match="no tuple could be formed"):
        mine_hard_negatives(FixedRetriever(), QUERIES, {"q0": {"d0": 1}}, tmp_path / "m.jsonl", nway=3, ranks=(1, 2))
    with pytest.raises(InputError, match="no query has a judged positive"):
        mine_hard_negatives(FixedRetriever(), QUERIES, {"q0": {"d0": 0}}, tmp_path / "m.jsonl")
    with pytest.raises(InputError, match="ranks"):
        mine_hard_negatives(FixedRetriever(), QUERIES, QRELS, tmp_path / "m.jsonl", ranks=(5, 2))
    with pytest.raises(InputError, match="documents"):
        mine_hard_negatives(FixedRetriever(), QUERIES, QRELS, tmp_path / "m.jsonl", teacher=object())


def test_bm25_retriever_finds_the_positive():
    run = BM25Retriever.build(DOCS).search_queries(QUERIES, k=3)
    assert all(run[f"q{i}"][0].doc_id == f"d{i}" for i in range(8))
    assert all(h.score > 0 for hits in run.values() for h in hits)


def test_teacher_scores_are_written_and_readable(tmp_path, tiny_cross_encoder):
    teacher = CrossEncoderTeacher.from_pretrained(tiny_cross_encoder, device="cpu", batch_size=3)
    out = tmp_path / "distill.jsonl"
    result = mine_hard_negatives(FixedRetriever(), QUERIES, QRELS, out, nway=2, ranks=(1, 8),
                                 teacher=teacher, documents=DOCS)
    assert result.scored and result.examples > 0
    examples = [e for _, e in read_examples(out)]
    assert all(e.scores is not None and len(e.pids) == 2 for e in examples)
    # the written scores are the teacher's logits for each (query, passage) pair
    e = examples[0]
    tokens = teacher.tokenizer([QUERIES[e.qid]] * 2, [DOCS[p] for p in e.pids], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = teacher.model(**tokens).logits[:, 0].tolist()
    assert list(e.scores) == pytest.approx(logits, abs=1e-5)
    data = TrainingData.from_id_triples(out, QUERIES, DOCS, nway=2)
    assert data.scores is not None and data.scores.shape == (result.examples, 2)


def test_mining_with_a_latelex_retriever(tmp_path, tiny_bert):
    from latelex.encoders.colbert import ColBERT
    from latelex.search.retriever import Retriever

    encoder = ColBERT.from_backbone(tiny_bert, dim=16, device="cpu", query_maxlen=16, doc_maxlen=24)
    retriever = Retriever.build(tmp_path / "index", encoder, DOCS.items())
    result = mine_hard_negatives(retriever, QUERIES, QRELS, tmp_path / "m.jsonl", nway=4, ranks=(1, 8))
    assert result.examples == 8
    for _, e in read_examples(tmp_path / "m.jsonl"):
        assert e.pids[0] == "d" + e.qid[1:] and e.pids[0] not in e.pids[1:]
