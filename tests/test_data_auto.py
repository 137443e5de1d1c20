from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

from latelex.data import (
    Candidates,
    read_candidates,
    read_documents,
    read_qrels_any,
    read_queries_any,
    read_run_any,
)
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Hit


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8", newline="")
    return path


def beir_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "beir"
    write(folder, "corpus.jsonl", '{"_id": "d1", "title": "T", "text": "body"}\n{"_id": "d2", "text": "two"}\n')
    write(folder, "queries.jsonl", '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    write(folder, "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    return folder


# ---------------------------------------------------------------- documents


def test_read_documents_beir_folder(tmp_path):
    assert list(read_documents(beir_folder(tmp_path))) == [("d1", "T body"), ("d2", "two")]


@pytest.mark.parametrize(
    "row",
    [
        {"_id": "7", "title": "T", "text": "x"},
        {"id": 7, "title": "T", "contents": "x"},
        {"docid": "7", "title": "T", "text": "x"},
        {"pid": 7, "title": "T", "contents": "x"},
    ],
)
def test_read_documents_jsonl_keys(tmp_path, row):
    path = write(tmp_path, "docs.jsonl", json.dumps(row) + "\n")
    assert list(read_documents(path)) == [("7", "T x")]


def test_read_documents_jsonl_by_content_and_tsv(tmp_path):
    as_json = write(tmp_path, "docs.txt", '{"id": "a", "contents": "alpha"}\n')
    assert list(read_documents(as_json)) == [("a", "alpha")]
    tsv = write(tmp_path, "collection.tsv", "id\ttext\ttitle\n0\tbody\tHead\n")
    assert list(read_documents(tsv)) == [("0", "Head | body")]


def test_read_documents_jsonl_missing_keys(tmp_path):
    path = write(tmp_path, "docs.jsonl", '{"id": "a", "contents": "alpha"}\n{"name": "b", "contents": "x"}\n')
    with pytest.raises(FormatError, match=r"docs.jsonl:2: .*'_id' / 'id' / 'docid' / 'pid'"):
        list(read_documents(path))


def test_read_documents_detection_failures(tmp_path):
    qrels = write(tmp_path, "qrels.tsv", "1\t0\t10\t1\n")
    with pytest.raises(FormatError, match=r"qrels.tsv:1: cannot tell the format.*BEIR folder.*ColBERT collection"):
        read_documents(qrels)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FormatError, match="folder without corpus.jsonl; accepted"):
        read_documents(tmp_path / "plain")
    with pytest.raises(InputError, match="is empty"):
        read_documents(write(tmp_path, "empty.tsv", "\n"))
    with pytest.raises(InputError, match="no such file"):
        read_documents(tmp_path / "absent.tsv")


# ---------------------------------------------------------------- queries


def test_read_queries_any_formats(tmp_path):
    folder = beir_folder(tmp_path)
    assert [q for q, _ in read_queries_any(folder)] == ["q1", "q2"]
    assert list(read_queries_any(folder, split="test")) == [("q2", "second")]
    jsonl = write(tmp_path, "q.jsonl", '{"qid": 3, "query": "third"}\n')
    assert list(read_queries_any(jsonl)) == [("3", "third")]
    sgml = write(tmp_path, "topics.txt", "\n<top>\n<num> Number: 401\n<title> foreign minorities\n</top>\n")
    assert list(read_queries_any(sgml)) == [("401", "foreign minorities")]
    tsv = write(tmp_path, "queries.tsv", "5\twhat is x\n")
    assert list(read_queries_any(tsv)) == [("5", "what is x")]


def test_read_queries_any_errors(tmp_path):
    tsv = write(tmp_path, "queries.tsv", "5\twhat is x\n")
    with pytest.raises(InputError, match="applies only to a BEIR folder"):
        read_queries_any(tsv, split="test")
    with pytest.raises(InputError, match="no split 'dev'.*test"):
        list(read_queries_any(beir_folder(tmp_path), split="dev"))
    bad = write(tmp_path, "bad.tsv", "5 what is x\n")
    with pytest.raises(FormatError, match=r"bad.tsv:1: cannot tell.*TREC SGML topics.*qid<TAB>text"):
        read_queries_any(bad)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FormatError, match="without queries.jsonl"):
        read_queries_any(tmp_path / "plain")


# ---------------------------------------------------------------- qrels


def test_read_qrels_any_formats(tmp_path):
    folder = beir_folder(tmp_path)
    expected = {"q2": {"d1": 1}}
    assert read_qrels_any(folder, "test") == expected
    assert read_qrels_any(folder / "qrels" / "test.tsv") == expected
    assert read_qrels_any(write(tmp_path, "three.tsv", "q2\td1\t1\n")) == expected
    assert read_qrels_any(write(tmp_path, "trec.txt", "q2 0 d1 1\n")) == expected


def test_read_qrels_any_errors(tmp_path):
    folder = beir_folder(tmp_path)
    with pytest.raises(InputError, match="name a split; its splits are: test"):
        read_qrels_any(folder)
    with pytest.raises(InputError, match="applies only to a BEIR folder"):
        read_qrels_any(folder / "qrels" / "test.tsv", split="test")
    bad = write(tmp_path, "bad.txt", "a b c d e\n")
    with pytest.raises(FormatError, match=r"bad.txt:1: cannot tell.*query-id<TAB>corpus-id<TAB>score"):
        read_qrels_any(bad)


# ---------------------------------------------------------------- runs and candidates


def test_read_run_any(tmp_path):
    trec = write(tmp_path, "run.trec", "1 Q0 b 2 0.5 t\n1 Q0 a 1 0.9 t\n")
    assert read_run_any(trec) == {"1": [Hit("a", 0.9), Hit("b", 0.5)]}
    colbert = write(tmp_path, "ranking.tsv", "1\tb\t2\t0.5\n1\ta\t1\t0.9\n")
    assert read_run_any(colbert) == {"1": [Hit("a", 0.9), Hit("b", 0.5)]}
    no_scores = write(tmp_path, "ranking3.tsv", "1\tb\t2\n1\ta\t1\n")
    assert read_run_any(no_scores) == {"1": [Hit("a", -1.0), Hit("b", -2.0)]}
    top1000 = write(tmp_path, "top1000.tsv", "1\t2\twhat is it\tit is a thing\n")
    with pytest.raises(FormatError, match=r"top1000.tsv:1: cannot tell.*TREC run.*ColBERT ranking"):
        read_run_any(top1000)


def test_read_candidates_top1000(tmp_path):
    path = write(
        tmp_path,
        "top1000.dev",
        "1\t20\twhat is x\tx is a letter\n2\t20\t7\tx is a letter\n1\t10\twhat is x\tanother passage\n",
    )
    candidates = read_candidates(path)
    assert candidates == Candidates(
        {"1": ["20", "10"], "2": ["20"]},
        {"1": "what is x", "2": "7"},
        {"20": "x is a letter", "10": "another passage"},
    )


def test_read_candidates_top1000_numeric_query_first(tmp_path):
    path = write(tmp_path, "top1000.dev", "1\t20\t1984\tnovel by orwell\n")
    assert read_candidates(path).queries == {"1": "1984"}


def test_read_candidates_top1000_inconsistent(tmp_path):
    dup = write(tmp_path, "a.tsv", "1\t20\tq\tp\n1\t20\tq\tp\n")
    with pytest.raises(DuplicateIdError, match=r"a.tsv:2:"):
        read_candidates(dup)
    changed = write(tmp_path, "b.tsv", "1\t20\tq\tp\n1\t21\tother q\tp2\n")
    with pytest.raises(FormatError, match=r"b.tsv:2: query '1' has a different text"):
        read_candidates(changed)


def test_read_candidates_ids_only(tmp_path):
    trec = write(tmp_path, "run.trec", "1 Q0 b 2 0.5 t\n1 Q0 a 1 0.9 t\n")
    assert read_candidates(trec) == Candidates({"1": ["a", "b"]}, None, None)
    topk = write(tmp_path, "topk.tsv", "1\tb\t2\n1\ta\t1\n")
    assert read_candidates(topk) == Candidates({"1": ["a", "b"]}, None, None)
    pairs = write(tmp_path, "pairs.tsv", "1\tb\n1\ta\n")
    assert read_candidates(pairs).pids_by_query == {"1": ["b", "a"]}
    bad = write(tmp_path, "bad.tsv", "one column only\n")
    with pytest.raises(FormatError, match=r"bad.tsv:1: cannot tell.*top-k.*TREC run.*top1000"):
        read_candidates(bad)


# ---------------------------------------------------------------- real data


@pytest.mark.data
def test_scifact_through_detection():
    folder = shared_path("datasets", "scifact")
    assert sum(1 for _ in read_documents(folder)) == 5183
    assert sum(1 for _ in read_queries_any(folder, split="test")) == 300
    qrels = read_qrels_any(folder, "test")
    assert sum(len(judged) for judged in qrels.values()) == 339
    assert read_qrels_any(folder / "qrels" / "test.tsv") == qrels
