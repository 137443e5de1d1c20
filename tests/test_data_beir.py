from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

from latelex.data import (
    BeirDataset,
    is_beir_folder,
    read_beir_corpus,
    read_beir_qrels,
    read_beir_qrels_file,
    read_beir_queries,
)
from latelex.errors import DuplicateIdError, FormatError, InputError


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def make_beir(root: Path, corpus: list[dict] | None = None, queries: list[dict] | None = None, qrels=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = (
        corpus
        if corpus is not None
        else [
            {"_id": "d1", "title": "Cells", "text": "A cell is small.", "metadata": {}},
            {"_id": "d2", "title": "", "text": "Genes carry risk."},
            {"_id": 3, "text": "  No title key.  "},
        ]
    )
    queries = (
        queries
        if queries is not None
        else [
            {"_id": "q1", "text": "what is a cell", "metadata": {}},
            {"_id": "q2", "text": "unjudged query"},
            {"_id": "q3", "text": "gene risk"},
        ]
    )
    (root / "corpus.jsonl").write_text(jsonl(corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text(jsonl(queries), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    splits = (
        qrels
        if qrels is not None
        else {
            "test": "query-id\tcorpus-id\tscore\r\nq3\td2\t1\r\nq1\td1\t2\r\nq1\td2\t0\r\n",
            "train": "query-id\tcorpus-id\tscore\nq2\td1\t1\n",
        }
    )
    for name, text in splits.items():
        (root / "qrels" / f"{name}.tsv").write_text(text, encoding="utf-8", newline="")
    return root


def test_read_beir_corpus_joins_titles(tmp_path):
    folder = make_beir(tmp_path / "ds")
    assert list(read_beir_corpus(folder)) == [
        ("d1", "Cells A cell is small."),
        ("d2", "Genes carry risk."),
        ("3", "No title key."),
    ]


def test_read_beir_corpus_title_only_and_null_title(tmp_path):
    folder = make_beir(
        tmp_path / "ds",
        corpus=[{"_id": "a", "title": "Only a title", "text": ""}, {"_id": "b", "title": None, "text": "t"}],
    )
    assert list(read_beir_corpus(folder)) == [("a", "Only a title"), ("b", "t")]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"_id": "x", "title": " ", "text": "  "}, "empty text"),
        ({"title": "t", "text": "no id"}, "'_id'"),
        ({"_id": "x", "title": "t"}, "'text'"),
        ({"_id": "x", "text": 5}, "must be a string"),
        ({"_id": ["x"], "text": "t"}, "must be a string or an integer"),
    ],
)
def test_read_beir_corpus_malformed(tmp_path, bad, fragment):
    folder = make_beir(tmp_path / "ds", corpus=[{"_id": "ok", "text": "fine"}, bad])
    path = folder / "corpus.jsonl"
    with pytest.raises(FormatError, match=fragment) as info:
        list(read_beir_corpus(folder))
    assert f"{path}:2:" in str(info.value)


def test_read_beir_corpus_invalid_json_and_non_object(tmp_path):
    folder = make_beir(tmp_path / "ds")
    (folder / "corpus.jsonl").write_text('{"_id": "a", "text": "t"}\n{"_id": "b", \n', encoding="utf-8")
    with pytest.raises(FormatError, match=r"corpus.jsonl:2: invalid JSON"):
        list(read_beir_corpus(folder))
    (folder / "corpus.jsonl").write_text('["a", "t"]\n', encoding="utf-8")
    with pytest.raises(FormatError, match=r"corpus.jsonl:1: expected a JSON object"):
        list(read_beir_corpus(folder))


def test_read_beir_corpus_duplicates_and_bad_bytes(tmp_path):
    folder = make_beir(
        tmp_path / "ds", corpus=[{"_id": "a", "text": "t"}, {"_id": "b", "text": "u"}, {"_id": "a", "text": "v"}]
    )
    with pytest.raises(DuplicateIdError, match=r"corpus.jsonl:3: .*'a'"):
        list(read_beir_corpus(folder))
    (folder / "corpus.jsonl").write_bytes(b'{"_id": "a", "text": "t"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(FormatError, match=r"corpus.jsonl:2: .*not valid UTF-8"):
        list(read_beir_corpus(folder))


def test_read_beir_corpus_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        read_beir_corpus(tmp_path / "absent")
    (tmp_path / "bare").mkdir()
    with pytest.raises(InputError, match="has no corpus.jsonl"):
        read_beir_corpus(tmp_path / "bare")
    folder = make_beir(tmp_path / "ds", corpus=[])
    with pytest.raises(InputError, match="is empty"):
        list(read_beir_corpus(folder))


def test_read_beir_queries_all_and_restricted(tmp_path):
    folder = make_beir(tmp_path / "ds")
    assert [q for q, _ in read_beir_queries(folder)] == ["q1", "q2", "q3"]
    assert list(read_beir_queries(folder, {"q3", "q1"})) == [("q1", "what is a cell"), ("q3", "gene risk")]
    with pytest.raises(InputError, match="lacks 1 of the requested queries: 'q9'"):
        list(read_beir_queries(folder, {"q1", "q9"}))


def test_read_beir_qrels(tmp_path):
    folder = make_beir(tmp_path / "ds")
    assert read_beir_qrels(folder, "test") == {"q3": {"d2": 1}, "q1": {"d1": 2, "d2": 0}}
    with pytest.raises(InputError, match="no split 'dev'.*splits are: test, train"):
        read_beir_qrels(folder, "dev")
    with pytest.raises(InputError, match="invalid split"):
        read_beir_qrels(folder, "../test")


def test_read_beir_qrels_file_with_and_without_header(tmp_path):
    with_header = tmp_path / "a.tsv"
    with_header.write_text("query-id\tcorpus-id\tscore\n1\t2\t1\n", encoding="utf-8")
    without = tmp_path / "b.tsv"
    without.write_text("1\t2\t1\n", encoding="utf-8")
    assert read_beir_qrels_file(with_header) == read_beir_qrels_file(without) == {"1": {"2": 1}}
    bad = tmp_path / "c.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\n1\t2\t1\n1\t3\tyes\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"c.tsv:3: relevance grade must be an integer"):
        read_beir_qrels_file(bad)
    dup = tmp_path / "d.tsv"
    dup.write_text("query-id\tcorpus-id\tscore\n1\t2\t1\n1\t2\t0\n", encoding="utf-8")
    with pytest.raises(DuplicateIdError, match=r"d.tsv:3:"):
        read_beir_qrels_file(dup)
    header_only = tmp_path / "e.tsv"
    header_only.write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    with pytest.raises(InputError, match="is empty"):
        read_beir_qrels_file(header_only)


def test_beir_dataset(tmp_path):
    folder = make_beir(tmp_path / "ds")
    dataset = BeirDataset(str(folder), "test")  # type: ignore[arg-type]
    assert dataset.folder == folder
    assert [q for q, _ in dataset.queries()] == ["q1", "q3"]  # file order, judged only
    assert dataset.qrels() == read_beir_qrels(folder, "test")
    assert len(list(dataset.corpus())) == 3
    assert [q for q, _ in BeirDataset(folder, "train").queries()] == ["q2"]
    with pytest.raises(InputError, match="splits are: test, train"):
        BeirDataset(folder, "dev").qrels()


def test_is_beir_folder(tmp_path):
    folder = make_beir(tmp_path / "ds")
    assert is_beir_folder(folder)
    assert not is_beir_folder(folder / "corpus.jsonl")
    assert not is_beir_folder(tmp_path / "absent")
    (tmp_path / "other").mkdir()
    assert not is_beir_folder(tmp_path / "other")


@pytest.mark.data
def test_scifact_counts():
    folder = shared_path("datasets", "scifact")
    docs = list(read_beir_corpus(folder))
    assert len(docs) == 5183
    assert len({doc_id for doc_id, _ in docs}) == 5183
    assert all(text for _, text in docs)
    dataset = BeirDataset(folder, "test")
    qrels = dataset.qrels()
    assert len(qrels) == 300
    assert sum(len(judged) for judged in qrels.values()) == 339
    queries = list(dataset.queries())
    assert len(queries) == 300
    assert {q for q, _ in queries} == set(qrels)
    train = BeirDataset(folder, "train").qrels()
    assert (len(train), sum(len(j) for j in train.values())) == (809, 919)
