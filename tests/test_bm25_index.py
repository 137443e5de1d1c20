from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from latelex.config import config_from_dict
from latelex.errors import ConfigError, DuplicateIdError, IndexFormatError, InputError
from latelex.index.bm25 import BM25Config, BM25Index

DOCS = {
    "d0": "Vitamin D deficiency raises the risk of cancer in older patients.",
    "d1": "The cells of the immune system respond to a virus within days.",
    "d2": "A healthy diet with fruit lowers blood pressure and heart disease risk.",
    "d3": "Cancer cells divide quickly; the tumour grows and spreads.",
    "d4": "Vaccines train immune cells to recognise a virus before infection.",
    "d5": "Blood tests measure vitamin levels; low vitamin D is common in winter.",
    "d6": "Heart disease is the leading cause of death and is linked to blood pressure.",
    "d7": "Protein folding determines what a protein does in the cell.",
    "d8": "Gene expression differs between tumour cells and healthy cells.",
    "d9": "The the the of of and.",  # only stopwords: indexed, never matched
}
QUERIES = ["vitamin D and cancer", "immune cells virus", "blood pressure heart", "protein genes tumour cell",
           "cells cells cancer"]


def reference_lucene_scores(docs: list[str], query: str, k1=1.5, b=0.75, stem=True, stop=True) -> np.ndarray:
    """Plain BM25 (Lucene's idf and tf) over our own tokenisation: the textbook formula, no bm25s code."""
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    stemmer = Stemmer.Stemmer("english")
    stopwords = set(STOPWORDS_EN) if stop else set()

    def terms(text: str) -> list[str]:
        words = [w for w in re.findall(r"(?u)\b\w\w+\b", text.lower()) if w not in stopwords]
        return [stemmer.stemWord(w) for w in words] if stem else words

    doc_terms = [terms(d) for d in docs]
    n = len(docs)
    avgdl = sum(len(t) for t in doc_terms) / n
    scores = np.zeros(n)
    for term in terms(query):
        df = sum(term in t for t in doc_terms)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, t in enumerate(doc_terms):
            tf = t.count(term)
            if tf:
                scores[i] += idf * tf / (tf + k1 * (1 - b + b * len(t) / avgdl))
    return scores


def reference_ranking(scores: np.ndarray, k: int) -> list[int]:
    """Matching documents by score descending, ties by lower position."""
    matched = [i for i in range(len(scores)) if scores[i] > 0]
    return sorted(matched, key=lambda i: (-scores[i], i))[:k]


@pytest.fixture
def index(tmp_path):
    return BM25Index.build(tmp_path / "bm25", list(DOCS), list(DOCS.values()))


@pytest.mark.parametrize("stem,stop", [(True, True), (False, False)])
def test_scores_and_rankings_match_the_textbook_formula(tmp_path, stem, stop):
    config = BM25Config(stemmer="english" if stem else None, stopwords="en" if stop else None, k1=1.2, b=0.6)
    index = BM25Index.build(tmp_path / "idx", list(DOCS), list(DOCS.values()), config=config)
    ids = list(DOCS)
    for query in QUERIES:
        expected = reference_lucene_scores(list(DOCS.values()), query, k1=1.2, b=0.6, stem=stem, stop=stop)
        np.testing.assert_allclose(index.scores(query), expected, rtol=1e-5, atol=1e-6)
        for k in (1, 3, 100):
            hits = index.search_text([query], k=k)[0]
            assert [ids.index(h.doc_id) for h in hits] == reference_ranking(expected, k)
            np.testing.assert_allclose([h.score for h in hits], expected[reference_ranking(expected, k)], rtol=1e-5)


def test_one_score_by_hand(tmp_path):
    # 3 documents; "apple" is in d0 (twice, length 3) and d1 (once, length 2): Lucene idf and tf by hand.
    index = BM25Index.build(tmp_path / "idx", ["d0", "d1", "d2"], ["apple apple banana", "apple fruit", "green blue"],
                            config=BM25Config(stopwords=None, stemmer=None))
    avgdl = 7 / 3
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    d0 = idf * 2 / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / avgdl))
    d1 = idf * 1 / (1 + 1.5 * (1 - 0.75 + 0.75 * 2 / avgdl))
    hits = index.search_text(["apple"], k=10)[0]
    assert [h.doc_id for h in hits] == ["d0", "d1"]  # d2 matches nothing and is not returned
    assert hits[0].score == pytest.approx(d0, rel=1e-6)
    assert hits[1].score == pytest.approx(d1, rel=1e-6)


def test_stemming_and_stopwords(tmp_path, index):
    # "genes" is stemmed to "gene", which d8 holds; without a stemmer it matches nothing.
    assert [h.doc_id for h in index.search_text(["genes"], k=5)[0]] == ["d8"]
    plain = BM25Index.build(tmp_path / "plain", list(DOCS), list(DOCS.values()), config=BM25Config(stemmer=None))
    assert plain.search_text(["genes"], k=5) == [[]]
    # a query of stopwords only, or of unknown words, matches nothing: an empty list, not arbitrary documents
    assert index.search_text(["the of and", "zebra xylophone"], k=5) == [[], []]
    assert "d9" not in {h.doc_id for hits in index.search_text(QUERIES, k=100) for h in hits}


def test_reopen_gives_identical_results_and_never_pickles(tmp_path, index):
    before = index.search_text(QUERIES, k=4)
    again = BM25Index.open(tmp_path / "bm25", verify=True)
    assert again.search_text(QUERIES, k=4) == before
    assert again.doc_ids == list(DOCS) and len(again) == len(DOCS)
    assert again.manifest["kind"] == "bm25" and again.config == BM25Config()
    info = again.info()
    assert info["documents"] == len(DOCS) and info["kind"] == "bm25" and info["bytes_on_disk"] > 0
    json.dumps(info)
    files = [p for p in (tmp_path / "bm25").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".npy", ".json"}
    for p in files:
        if p.suffix == ".npy":
            array = np.load(p, allow_pickle=False)  # raises on a pickled (object) array
            assert array.dtype != object
    # every file is covered by a checksum in the manifest
    manifest = again.manifest
    listed = {e["file"] for e in manifest["arrays"].values()} | {e["file"] for e in manifest["files"].values()}
    assert listed == {str(p.relative_to(tmp_path / "bm25")) for p in files if p.name != "manifest.json"}


@pytest.mark.parametrize("method", ["bm25+", "bm25l", "robertson", "atire"])
def test_other_methods_round_trip(tmp_path, method):
    config = BM25Config(method=method)
    index = BM25Index.build(tmp_path / "idx", list(DOCS), list(DOCS.values()), config=config)
    hits = index.search_text(QUERIES, k=3)
    assert all(len(h) >= 1 for h in hits)
    assert BM25Index.open(tmp_path / "idx", verify=True).search_text(QUERIES, k=3) == hits
    if method in ("bm25+", "bm25l"):
        assert "bm25s_nonoccurrence" in index.manifest["arrays"]


@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_open_reads_no_header_with_numpy_and_equals_bm25s_own_load(tmp_path, method, monkeypatch):
    # np.load parses headers with ast.literal_eval, which fails under concurrent parsing on CPython 3.11 (a sharded
    # index opens its shards from threads): opening must read every array through latelex.npyio instead
    import bm25s

    BM25Index.build(tmp_path / "idx", list(DOCS), list(DOCS.values()), config=BM25Config(method=method))
    reference = bm25s.BM25.load(str(tmp_path / "idx" / "bm25s"), mmap=True, allow_pickle=False, show_progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("np.load called while opening a BM25 index")

    monkeypatch.setattr(np, "load", refuse)
    opened = BM25Index.open(tmp_path / "idx")._model
    assert type(opened) is type(reference)
    assert vars(opened).keys() == vars(reference).keys()
    for name, value in vars(reference).items():
        if name == "scores":
            assert opened.scores["num_docs"] == value["num_docs"] == len(DOCS)
            for key in ("data", "indices", "indptr"):
                np.testing.assert_array_equal(opened.scores[key], value[key])
                assert opened.scores[key].dtype == value[key].dtype
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(opened, name), value)
        else:
            assert getattr(opened, name) == value, name
    assert (opened.nonoccurrence_array is None) == (method == "lucene")


def test_subset_restricts_the_ranking(index):
    subset = ["d3", "d8", "d5", "d2"]
    full = index.search_text(QUERIES, k=100)
    for hits, everything in zip(index.search_text(QUERIES, k=3, subset=subset), full):
        assert hits == [h for h in everything if h.doc_id in subset][:3]
    assert index.search_text(QUERIES, k=3, subset=[]) == [[] for _ in QUERIES]
    with pytest.raises(InputError, match="not in the index"):
        index.search_text(QUERIES, k=3, subset=["nope"])


def test_search_queries_returns_a_run(index):
    run = index.search_queries({"q1": QUERIES[0], "q2": QUERIES[1]}, k=2)
    assert list(run) == ["q1", "q2"]
    assert run["q1"] == index.search_text([QUERIES[0]], k=2)[0]
    with pytest.raises(InputError, match="no queries"):
        index.search_queries({}, k=2)
    with pytest.raises(InputError, match="unique"):
        index.search_queries([("q", "a"), ("q", "b")], k=2)


def test_bad_input(tmp_path, index):
    with pytest.raises(InputError, match="empty corpus"):
        BM25Index.build(tmp_path / "x", [], [])
    with pytest.raises(DuplicateIdError, match="appears twice"):
        BM25Index.build(tmp_path / "x", ["a", "b", "a"], ["x y", "y z", "z w"])
    with pytest.raises(InputError, match="one text per id"):
        BM25Index.build(tmp_path / "x", ["a", "b"], ["x y"])
    with pytest.raises(InputError, match="single string"):
        BM25Index.build(tmp_path / "x", ["a"], "text")
    with pytest.raises(InputError, match="empty"):
        index.search_text(["fine", "   "], k=3)
    with pytest.raises(InputError, match="single string"):
        index.search_text("vitamin", k=3)
    with pytest.raises(InputError, match="positive integer"):
        index.search_text(["vitamin"], k=0)
    assert index.search_text([], k=3) == []
    assert not (tmp_path / "x").exists()  # nothing half-built was left behind
    with pytest.raises(IndexFormatError, match="already exists"):
        BM25Index.build(tmp_path / "bm25", ["a"], ["apple"])
    again = BM25Index.build(tmp_path / "bm25", ["a"], ["apple"], overwrite=True)
    assert again.doc_ids == ["a"]


def test_config_is_checked():
    with pytest.raises(ConfigError, match="method"):
        BM25Config(method="bm26")
    with pytest.raises(ConfigError, match="b must"):
        BM25Config(b=1.5)
    with pytest.raises(ConfigError, match="stemmer"):
        BM25Config(stemmer="porter")
    with pytest.raises(ConfigError, match="unknown BM25Config option"):
        config_from_dict(BM25Config, {"k_1": 1.2})


def test_damaged_index_is_refused(tmp_path, index, monkeypatch):
    monkeypatch.setattr("latelex.index.storage.SMALL_FILE_BYTES", 0)  # as if the arrays were large (> 4 MiB)
    path = tmp_path / "bm25"
    data = path / "bm25s" / "data.csc.index.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # same size, different bytes: only the checksum notices
    data.write_bytes(bytes(raw))
    BM25Index.open(path)
    with pytest.raises(IndexFormatError, match="checksum"):
        BM25Index.open(path, verify=True)
    data.write_bytes(bytes(raw[:-8]))
    with pytest.raises(IndexFormatError, match="truncated"):
        BM25Index.open(path)
    (path / "bm25s" / "vocab.index.json").write_text("{}")
    (path / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        BM25Index.open(path)
