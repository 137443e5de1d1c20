"""Anserini JsonVectorCollection and PISA binary collection export, checked byte-level and by round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latelex.data.sparse_export import (
    read_json_vector_collection,
    read_pisa_collection,
    write_anserini_queries,
    write_json_vector_collection,
    write_pisa_collection,
    write_pisa_queries,
)
from latelex.errors import FormatError, InputError
from latelex.types import SparseBatch

VOCAB = ["[PAD]", "the", "cat", "##s", "sat", "mat", "unused"]


def batch():
    # doc a: cat 1.234, sat 0.5; doc b: the 0.004 (rounds to 0 at scale 100), mat 2.0; doc c: cat 0.3
    return SparseBatch(np.array([0, 2, 4, 5]), np.array([2, 4, 1, 5, 2], np.int32),
                       np.array([1.234, 0.5, 0.004, 2.0, 0.3], np.float32), len(VOCAB))


def test_json_vector_collection_lines_and_round_trip(tmp_path):
    path = tmp_path / "docs.jsonl"
    assert write_json_vector_collection(path, ["a", "b", "c"], batch(), VOCAB, contents=["x", "y", "z"]) == 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"id": "a", "contents": "x", "vector": {"cat": 123, "sat": 50}}
    assert lines[1]["vector"] == {"mat": 200}  # 0.4 rounds to 0 and is dropped
    ids, back, contents = read_json_vector_collection(path, VOCAB)
    assert ids == ["a", "b", "c"] and contents == ["x", "y", "z"]
    np.testing.assert_array_equal(back.indices, [2, 4, 5, 2])
    np.testing.assert_allclose(back.values, [1.23, 0.5, 2.0, 0.3], rtol=1e-6)


def test_json_vector_collection_rejects_unknown_tokens(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "vector": {"cat": 10}}\n{"id": "b", "vector": {"dog": 3}}\n')
    with pytest.raises(FormatError, match=r"docs.jsonl:2: token 'dog' is not in the vocabulary"):
        read_json_vector_collection(path, VOCAB)


def test_pisa_binary_collection_layout(tmp_path):
    stats = write_pisa_collection(tmp_path / "c", ["a", "b", "c"], batch(), VOCAB)
    assert stats == {"documents": 3, "terms": 3, "postings": 4}
    docs = np.fromfile(tmp_path / "c.docs", dtype="<u4").tolist()
    freqs = np.fromfile(tmp_path / "c.freqs", dtype="<u4").tolist()
    # header [1, 3]; then terms with postings in id order: cat -> docs 0, 2; sat -> 0; mat -> 1
    assert docs == [1, 3, 2, 0, 2, 1, 0, 1, 1]
    assert freqs == [2, 123, 30, 1, 50, 1, 200]
    assert np.fromfile(tmp_path / "c.sizes", dtype="<u4").tolist() == [3, 2, 1, 1]  # b keeps only "mat"
    assert (tmp_path / "c.terms").read_text().splitlines() == ["cat", "sat", "mat"]
    assert (tmp_path / "c.documents").read_text().splitlines() == ["a", "b", "c"]
    ids, back, terms = read_pisa_collection(tmp_path / "c")
    assert ids == ["a", "b", "c"] and terms == ["cat", "sat", "mat"]
    np.testing.assert_allclose(back.to_scipy().toarray(), [[1.23, 0.5, 0], [0, 0, 2.0], [0.3, 0, 0]], rtol=1e-6)


def test_query_files(tmp_path):
    q = SparseBatch(np.array([0, 2]), np.array([2, 4], np.int32), np.array([0.03, 0.011], np.float32), len(VOCAB))
    write_pisa_queries(tmp_path / "q.txt", ["q1"], q, VOCAB)
    assert (tmp_path / "q.txt").read_text() == "q1:cat cat cat sat\n"
    write_anserini_queries(tmp_path / "q.tsv", ["q1"], q, VOCAB)
    assert (tmp_path / "q.tsv").read_text() == "q1\tcat cat cat sat\n"


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="vocabulary lists 3 tokens"):
        write_json_vector_collection(tmp_path / "x", ["a", "b", "c"], batch(), VOCAB[:3])
    with pytest.raises(InputError, match="one id per vector"):
        write_pisa_collection(tmp_path / "x", ["a"], batch(), VOCAB)
    with pytest.raises(InputError, match="whitespace"):
        write_pisa_collection(tmp_path / "x", ["a", "b", "c"], batch(), VOCAB[:-1] + ["two words"])
    (tmp_path / "t.docs").write_bytes(np.array([1, 3, 5, 0], "<u4").tobytes())
    (tmp_path / "t.documents").write_text("a\nb\nc\n")
    (tmp_path / "t.terms").write_text("x\n")
    with pytest.raises(FormatError, match="runs past the end"):
        read_pisa_collection(tmp_path / "t")
