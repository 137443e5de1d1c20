"""latelex.Client against a real server (uvicorn in a thread, tiny ColBERT), held to a local Retriever opened on a
separate copy of the same index: every verb answers the same, and the server's errors become latelex errors."""

from __future__ import annotations

import shutil
import socket

import httpx
import numpy as np
import pytest

from latelex import ColBERT, Retriever
from latelex.client import Client, _error
from latelex.errors import AuthError, DuplicateIdError, InputError, LatelexError
from latelex.search.rerank import rerank as rerank_run
from latelex.server import ServerConfig
from latelex.types import Document, SparseVector
from server_helpers import running_server

TOL = 1e-5
DOCS = [
    ("d0", "apple banana fruit healthy", {"year": 2010, "tag": "food"}),
    ("d1", "cancer risk study cells", {"year": 2015, "tag": "bio"}),
    ("d2", "protein gene expression in brain cells", {"year": 2018, "tag": "bio"}),
    ("d3", "vaccine trial results for a new virus", {"year": 2021, "tag": "bio"}),
    ("d4", "red green blue small large", {"year": 2012, "tag": "misc"}),
    ("d5", "late interaction retrieval with token vectors", {"year": 2020, "tag": "ir"}),
    ("d6", "sparse learned index for neural search", {"year": 2022, "tag": "ir"}),
    ("d7", "heart disease and blood pressure in patients", {"year": 2016, "tag": "bio"}),
    ("d8", "fruit and green apple are good for health", {"year": 2019, "tag": "food"}),
    ("d9", "drug dose effects on the brain", {"year": 2014, "tag": "bio"}),
]
QUERIES = ["apple fruit", "brain cells", "neural search retrieval", "virus vaccine trial"]


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return ColBERT.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, encoder):
    """(client, local retriever, url): a server over one index ("docs"), and a local retriever on a copy of it."""
    root = tmp_path_factory.mktemp("client")
    Retriever.build(root / "served", encoder, DOCS).close()
    shutil.copytree(root / "served", root / "local")
    local = Retriever.open(root / "local", encoder=encoder)
    with running_server(ServerConfig(indexes={"docs": str(root / "served")})) as (url, _):
        with Client(url, index="docs") as client:
            yield client, local, url
    local.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, encoder):
    """The url of a server with an API key ("secret") over two indexes ("a" and "b")."""
    root = tmp_path_factory.mktemp("keyed")
    Retriever.build(root / "a", encoder, DOCS[:5]).close()
    Retriever.build(root / "b", encoder, DOCS[5:]).close()
    config = ServerConfig(indexes={"a": str(root / "a"), "b": str(root / "b")}, api_key="secret")
    with running_server(config) as (url, _):
        yield url


def assert_same_hits(remote, local):
    assert [h.doc_id for h in remote] == [h.doc_id for h in local]
    for r, l in zip(remote, local):
        assert r.score == pytest.approx(l.score, abs=TOL)
        assert (r.text, r.metadata, r.passage, r.span) == (l.text, l.metadata, l.passage, l.span)


def assert_same_documents(client, local, ids):
    assert len(client) == len(local)
    for doc_id in ids:
        assert (doc_id in client) == (doc_id in local)
        if doc_id in local:
            assert client.get(doc_id) == local.get(doc_id)


# ------------------------------------------------------------------------------------------------ reading


def test_search_one_query_matches_local(setup):
    client, local, _ = setup
    for query in QUERIES:
        hits = client.search(query, k=4)
        assert all(type(h).__name__ == "Hit" for h in hits)
        assert_same_hits(hits, local.search(query, k=4))


def test_search_batch_filters_and_options_match_local(setup):
    client, local, _ = setup
    for kwargs in [{}, {"where": "year >= 2016"}, {"where": {"tag": "bio"}}, {"subset": ["d1", "d2", "d8"]},
                   {"with_text": False}, {"where": 'tag = "nothing"'}]:
        remote = client.search(QUERIES, k=3, **kwargs)
        expected = local.search(QUERIES, k=3, **kwargs)
        assert len(remote) == len(expected) == len(QUERIES)
        for r, l in zip(remote, expected):
            assert_same_hits(r, l)
    assert client.search([], k=3) == []


def test_search_splits_batches_over_max_batch(setup):
    _, local, url = setup
    queries = QUERIES * 3
    with Client(url, index="docs", max_batch=5) as small:
        remote = small.search(queries, k=2)
    assert len(remote) == len(queries)
    for r, l in zip(remote, local.search(queries, k=2)):
        assert_same_hits(r, l)


def test_search_queries_returns_a_run(setup):
    client, local, _ = setup
    queries = {f"q{i}": q for i, q in enumerate(QUERIES)}
    remote, expected = client.search_queries(queries, k=3), local.search_queries(queries, k=3)
    assert list(remote) == list(expected)
    for qid in queries:
        assert_same_hits(remote[qid], expected[qid])


def test_get_document_len_contains_info(setup):
    client, local, _ = setup
    assert_same_documents(client, local, ["d0", "d5", "d9", "nope"])
    assert client.document("d3") == local.document("d3")
    assert "nope" not in client and 5 not in client and "" not in client
    info = client.info()
    assert info["name"] == "docs" and info["kind"] == local.info()["kind"] and "path" not in info
    assert info["documents"] == len(local)


def test_explain_matches_local(setup):
    client, local, _ = setup
    if not hasattr(Retriever, "explain"):
        pytest.skip("Retriever.explain is not there yet")
    for query, doc_id in [("apple fruit", "d8"), ("brain cells", "d2")]:
        remote, expected = client.explain(query, doc_id), local.explain(query, doc_id)
        assert type(remote) is type(expected)
        assert (remote.doc_id, remote.query, remote.family, remote.text) == (doc_id, query, "colbert",
                                                                              expected.text)
        assert remote.score == pytest.approx(expected.score, abs=TOL)
        assert len(remote.contributions) == len(expected.contributions)
        for r, e in zip(remote.contributions, expected.contributions):
            assert (r.query_token, r.query_position, r.doc_token, r.doc_position, r.spans) == \
                   (e.query_token, e.query_position, e.doc_token, e.doc_position, e.spans)
            assert all(isinstance(s, tuple) for s in r.spans)
            assert r.score == pytest.approx(e.score, abs=TOL)
    many = client.explain_many("apple fruit", ["d0", "d8"])
    assert [e.doc_id for e in many] == ["d0", "d8"]


def test_rerank_matches_the_library(setup, encoder):
    client, _, url = setup
    texts = [text for _, text, _ in DOCS]
    ids = [str(i) for i in range(len(texts))]
    expected = rerank_run(encoder, {"q": "apple brain"}, {"q": ids}, dict(zip(ids, texts)), show_progress=False)["q"]
    for c in (client, Client(url, index="docs", max_batch=3)):
        hits = c.rerank("apple brain", texts)
        assert [h.doc_id for h in hits] == [h.doc_id for h in expected]
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=TOL)
        assert [h.text for h in hits] == [texts[int(h.doc_id)] for h in expected]
        top = c.rerank("apple brain", texts, k=2)
        assert [h.doc_id for h in top] == [h.doc_id for h in expected[:2]]
    with pytest.raises(InputError):
        client.rerank("apple", "one text")


def test_encode_matches_the_encoder(setup, encoder):
    client, _, url = setup
    texts = ["apple banana", "brain cells and protein", "late interaction"]
    with Client(url, index="docs", max_batch=2) as small:
        for input, local in (("document", encoder.encode_documents), ("query", encoder.encode_queries)):
            remote = small.encode(texts, input=input)
            expected = local(texts, show_progress=False)
            assert len(remote) == len(texts)
            for r, e in zip(remote, expected):
                assert isinstance(r, np.ndarray) and r.dtype == np.float32 and r.shape == tuple(e.shape)
                np.testing.assert_allclose(r, e.float().numpy(), atol=TOL)
    assert not isinstance(client.encode(["apple"])[0], SparseVector)
    with pytest.raises(InputError, match="input must be"):
        client.encode(["apple"], input="passage")


# ------------------------------------------------------------------------------------------------ changes


def test_add_upsert_delete_leave_the_same_documents(setup, monkeypatch):
    client, local, _ = setup
    import latelex.search.documents as documents

    changes = [
        ("add", [("n1", "green apple fruit", {"year": 2023, "tag": "food"}),
                 {"id": "n2", "text": "brain protein study", "metadata": {"year": 2024}},
                 Document("n3", "token vectors index"), ("dir/x #1?y=é", "an id that needs quoting")],
         {"n3": {"tag": "ir"}}),
        ("add", ["a text with a generated id about the heart"], None),
        ("upsert", [("n1", "red apple fruit", {"year": 2025}), ("n4", "blood test", None)], None),
        ("delete", ["n2", "d4", "missing"], None),
    ]

    def apply(target, verb, docs, metadata):
        if verb == "delete":
            return target.delete(docs)
        counter = iter(range(100))  # the same generated ids on both sides
        monkeypatch.setattr(documents, "generated_id", lambda: f"gen{next(counter)}")
        return getattr(target, verb)(docs, metadata=metadata)

    for change in changes:
        remote, expected = apply(client, *change), apply(local, *change)
        assert remote == expected, change[0]
    assert client.get("gen0").text == "a text with a generated id about the heart"
    assert client.get("n1") == Document("n1", "red apple fruit", {"year": 2025})
    assert client.get("n3").metadata == {"tag": "ir"}
    assert expected.not_found == ("missing",)
    assert client.get("dir/x #1?y=é").text == "an id that needs quoting"
    assert client.explain("quoting", "dir/x #1?y=é").doc_id == "dir/x #1?y=é"
    assert_same_documents(client, local, ["n1", "n2", "n3", "n4", "gen0", "d4", "d0", "dir/x #1?y=é", "dir/x"])
    for r, l in zip(client.search(QUERIES, k=5), local.search(QUERIES, k=5)):
        assert_same_hits(r, l)


def test_large_changes_are_split(setup):
    client, local, url = setup
    docs = [(f"s{i}", f"small study number {i} of cells", {"year": 2000 + i}) for i in range(7)]
    with Client(url, index="docs", max_documents=3) as small:
        result = small.add(docs)
        assert result == local.add(docs)
        assert (result.added, result.replaced) == (7, 0)
        assert small.upsert(docs[:4]) == local.upsert(docs[:4])
        ids = [d[0] for d in docs] + ["absent"]
        removed = small.delete(ids)
        assert removed == local.delete(ids)
        assert (removed.deleted, removed.not_found) == (7, ("absent",))
    with Client(url, index="docs", max_body_bytes=2048) as tight:  # split by size too
        big = [(f"b{i}", "cells " * 60, None) for i in range(4)]
        assert tight.add(big) == local.add(big)
        assert tight.delete([d[0] for d in big]) == local.delete([d[0] for d in big])
    assert_same_documents(client, local, [d[0] for d in docs] + ["b0"])


# ------------------------------------------------------------------------------------------------ errors


def test_errors_carry_the_servers_one_line_message(setup):
    client, _, url = setup
    with pytest.raises(InputError, match="no index named 'nope'.*docs"):
        Client(url, index="nope").search("apple")
    with pytest.raises(InputError, match="no document 'zz'"):
        client.get("zz")
    with pytest.raises(InputError, match="no document 'zz'"):
        client.explain("apple", "zz")
    with pytest.raises(InputError, match="no index named"):
        "d0" in Client(url, index="nope")
    with pytest.raises(DuplicateIdError, match="'d0' is already"):
        client.add([("d0", "again")])
    with pytest.raises(InputError, match="unknown field 'colour'"):
        client.search("apple", where="colour = 1")
    with pytest.raises(InputError, match="over the limit"):
        client.search("apple", k=100_000)
    with pytest.raises(InputError, match="empty"):
        client.search("   ")
    with pytest.raises(InputError, match="k must be"):
        client.search("apple", k=0)
    with pytest.raises(InputError, match="takes no search option"):
        client.search("apple", ncells=4)
    for error in (InputError, DuplicateIdError):
        try:
            client.add([("d0", "again")])
        except error as exc:
            assert "\n" not in str(exc)


def test_api_key(keyed):
    docs = [("k1", "apple fruit")]
    with Client(keyed, index="a") as anonymous:
        assert anonymous.search("apple", k=2)  # reading needs no key
        with pytest.raises(AuthError, match="needs an API key.*api_key"):
            anonymous.add(docs)
    with pytest.raises(AuthError, match="wrong API key"):
        Client(keyed, index="a", api_key="guess").add(docs)
    with Client(keyed, index="a", api_key="secret") as writer:
        assert writer.add(docs).added == 1
        assert writer.delete(["k1"]).deleted == 1
    assert issubclass(AuthError, LatelexError) and not issubclass(AuthError, InputError)


def test_server_down_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", index="docs", timeout=5)
    with pytest.raises(LatelexError, match=rf"127\.0\.0\.1:{port}.*latelex serve") as info:
        client.search("apple")
    assert not isinstance(info.value, (InputError, AuthError))
    with pytest.raises(LatelexError, match="latelex serve"):
        Client(f"http://127.0.0.1:{port}").index


def test_server_errors_are_latelex_errors():
    request = httpx.Request("POST", "http://h/indexes/x/search")
    error = _error(httpx.Response(500, json={"error": "internal error (KeyError); see the server log"},
                                  request=request), "POST", "http://h/indexes/x/search")
    assert type(error) is LatelexError and "HTTP 500" in str(error) and "http://h/indexes/x/search" in str(error)
    busy = _error(httpx.Response(503, json={"error": "more than 64 requests in flight; retry shortly"},
                                 request=request), "POST", "http://h")
    assert type(busy) is LatelexError and "busy" in str(busy)
    assert type(_error(httpx.Response(413, text="too big", request=request), "POST", "u")) is InputError
    assert type(_error(httpx.Response(422, json={"error": "k: bad"}, request=request), "POST", "u")) is InputError


def test_index_none_picks_the_only_index(setup, keyed):
    _, local, url = setup
    with Client(url) as auto:
        assert auto.index == "docs"
        assert_same_hits(auto.search("apple fruit", k=3), local.search("apple fruit", k=3))
    with pytest.raises(InputError, match=r"serves 2 indexes \(a, b\); pass index=NAME"):
        Client(keyed).search("apple")
    with Client(keyed, index="b") as other:
        assert other.search("neural search", k=1)[0].doc_id in {d[0] for d in DOCS[5:]}


def test_bad_arguments_fail_before_any_request():
    with pytest.raises(InputError, match="http://"):
        Client("localhost:8000")
    with pytest.raises(InputError, match="max_batch"):
        Client("http://127.0.0.1:1", max_batch=0)
    client = Client("http://127.0.0.1:1", index="docs")
    with pytest.raises(InputError, match="single string"):
        client.delete("d0")
    with pytest.raises(InputError, match="single string"):
        client.add("one text")
    assert repr(client) == "Client(url='http://127.0.0.1:1', index='docs')"


def test_client_is_exported_lazily():
    import subprocess
    import sys

    code = ("import sys, latelex; assert 'httpx' not in sys.modules; from latelex import Client; "
            "assert Client.__module__ == 'latelex.client' and 'Client' in latelex.__all__; "
            "assert 'torch' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
