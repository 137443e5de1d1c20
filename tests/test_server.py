"""`latelex serve`: the real server on a loopback port, spoken to over HTTP with httpx (tiny random models)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from latelex import ColBERT, Retriever, Splade
from latelex.index.plaid import PlaidConfig
from latelex.server import Limits, ServerConfig
from latelex.types import Document
from server_helpers import free_port, running_server, start_cli_server
from tiny_models import WORDS

VOCAB = [w for w in WORDS if len(w) > 2]


def make_docs(n: int, start: int = 0) -> list[Document]:
    import random

    rng = random.Random(start)
    return [Document(f"d{i}", " ".join(rng.choice(VOCAB) for _ in range(12)),
                     {"n": i, "tag": rng.choice(["x", "y"])}) for i in range(start, start + n)]


@pytest.fixture(scope="module")
def models(tiny_bert, tiny_mlm):
    return ColBERT.from_pretrained(tiny_bert), Splade.from_pretrained(tiny_mlm)


@pytest.fixture(scope="module")
def built(tmp_path_factory, models) -> dict[str, Path]:
    """One index per family (flat, PLAID, sparse, BM25) over the same 24 documents, built once."""
    colbert, splade = models
    root = tmp_path_factory.mktemp("served")
    docs = make_docs(24)
    Retriever.build(root / "flat", colbert, docs)
    Retriever.build(root / "plaid", colbert, docs, kind="plaid", engine_config=PlaidConfig(nbits=2))
    Retriever.build(root / "sparse", splade, docs)
    Retriever.build(root / "bm25", None, docs)
    return {name: root / name for name in ("flat", "plaid", "sparse", "bm25")}


def fresh_copy(built: dict[str, Path], tmp_path: Path, names=("flat",)) -> dict[str, str]:
    """Copies of the built indexes that a test may change."""
    out = {}
    for name in names:
        shutil.copytree(built[name], tmp_path / name)
        out[name] = str(tmp_path / name)
    return out


@pytest.fixture(scope="module")
def server(built):
    """A read-only server over every built index (tests that write use their own copies)."""
    config = ServerConfig(indexes={k: str(v) for k, v in built.items()})
    with running_server(config) as (url, service):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, service


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


# ------------------------------------------------------------------------------------------------ reading


def test_health_indexes_info_schema_and_page(server):
    client, _ = server
    assert client.get("/health").json() == {"status": "ok", "indexes": ["bm25", "flat", "plaid", "sparse"]}
    listed = {i["name"]: i for i in client.get("/indexes").json()}
    assert {n: (i["kind"], i["documents"], i["family"]) for n, i in listed.items()} == {
        "bm25": ("bm25", 24, "text"), "flat": ("flat", 24, "colbert"), "plaid": ("plaid", 24, "colbert"),
        "sparse": ("sparse", 24, "splade")}
    info = client.get("/indexes/plaid").json()
    assert info["kind"] == "plaid" and info["documents"] == 24 and "path" not in info
    schema = client.get("/openapi.json").json()
    assert {"/indexes/{name}/search", "/indexes/{name}/documents", "/rerank", "/encode"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.text.lower().startswith("<!doctype html")


@pytest.mark.parametrize("name", ["flat", "plaid", "sparse", "bm25"])
def test_search_matches_the_library(server, built, models, name):
    client, _ = server
    colbert, splade = models
    encoder = {"flat": colbert, "plaid": colbert, "sparse": splade, "bm25": None}[name]
    local = Retriever.open(built[name], encoder=encoder)
    queries = ["cancer risk study", "apple banana fruit", "protein gene cells"]
    expected = local.search(queries, k=5)
    got = client.post(f"/indexes/{name}/search", json={"queries": queries, "k": 5}).json()["results"]
    for want, have in zip(expected, got):
        assert [h["id"] for h in have] == [h.doc_id for h in want]
        assert [h["score"] for h in have] == pytest.approx([h.score for h in want], abs=1e-5)
        assert all(h["text"] == local.document(h["id"]) for h in have)
        assert all(h["metadata"] == local.get(h["id"]).metadata for h in have)
    one = client.post(f"/indexes/{name}/search", json={"query": queries[0], "k": 3, "where": 'tag = "x"',
                                                        "with_text": False}).json()["hits"]
    want = local.search(queries[0], k=3, where='tag = "x"')
    assert [h["id"] for h in one] == [h.doc_id for h in want]
    assert all("text" not in h and h["metadata"]["tag"] == "x" for h in one)
    local.close()


def test_engine_options_reach_the_engine(server):
    client, _ = server
    wide = client.post("/indexes/plaid/search", json={"query": "cancer risk", "k": 5,
                                                      "options": {"ncells": 8, "ndocs": 64}})
    assert wide.status_code == 200 and len(wide.json()["hits"]) == 5
    assert_error(client.post("/indexes/flat/search", json={"query": "x", "options": {"ncells": 2}}), 400, "ncells")


def test_queries_are_encoded_in_shared_batches(built):
    """Concurrent searches share an encoding batch, and batching changes no result."""
    config = ServerConfig(indexes={"flat": str(built["flat"])}, batch_wait_ms=200, batch_queries=32)
    queries = ["cancer risk study", "apple banana fruit", "protein gene cells", "blood heart brain"] * 2
    with running_server(config) as (url, service):
        local = service.retrievers["flat"]
        expected = {q: [(h.doc_id, h.score) for h in local.search(q, k=4)] for q in set(queries)}
        barrier = threading.Barrier(len(queries))
        got: dict[int, list] = {}

        def one(i: int) -> None:
            barrier.wait()
            hits = httpx.post(f"{url}/indexes/flat/search", json={"query": queries[i], "k": 4}, timeout=60).json()
            got[i] = [(h["id"], h["score"]) for h in hits["hits"]]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(queries))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert service.batcher.stats["largest"] > 1, service.batcher.stats
        for i, q in enumerate(queries):
            assert [d for d, _ in got[i]] == [d for d, _ in expected[q]]
            assert [s for _, s in got[i]] == pytest.approx([s for _, s in expected[q]], abs=1e-5)


def test_rerank_and_encode(server, models):
    from latelex.search.rerank import rerank

    client, _ = server
    colbert, splade = models
    texts = ["apple banana fruit healthy", "cancer risk study cells", "red green blue small"]
    got = client.post("/rerank", json={"query": "fruit apple", "documents": texts, "k": 2}).json()["results"]
    want = rerank(colbert, {"q": "fruit apple"}, {"q": ["0", "1", "2"]}, dict(zip("012", texts)), k=2)["q"]
    assert [r["index"] for r in got] == [int(h.doc_id) for h in want]
    assert [r["score"] for r in got] == pytest.approx([h.score for h in want], abs=1e-5)
    assert got[0]["text"] == texts[got[0]["index"]]

    dense = client.post("/encode", json={"texts": texts[:2], "input": "document"}).json()
    assert dense["family"] == "colbert" and dense["dim"] == colbert.dim
    for have, want in zip(dense["embeddings"], colbert.encode_documents(texts[:2])):
        assert np.allclose(np.array(have), want.numpy(), atol=1e-5)
    queries = client.post("/encode", json={"texts": ["apple"], "input": "query"}).json()
    assert len(queries["embeddings"][0]) == colbert.encode_queries(["apple"])[0].shape[0]

    sparse = client.post("/encode", json={"texts": texts[:1], "index": "sparse"}).json()
    want = splade.encode_documents(texts[:1])[0]
    assert sparse["family"] == "splade"
    assert sparse["embeddings"][0]["indices"] == want.ids.tolist()
    assert sparse["embeddings"][0]["values"] == pytest.approx(want.weights.tolist(), abs=1e-5)
    assert_error(client.post("/rerank", json={"query": "x", "documents": ["y"], "index": "bm25"}), 400, "bm25")


@pytest.mark.parametrize("name", ["flat", "sparse", "bm25"])
def test_explain_endpoint_and_search_explanations_are_the_library_s(server, built, models, name):
    client, _ = server
    colbert, splade = models
    local = Retriever.open(built[name], encoder={"flat": colbert, "sparse": splade, "bm25": None}[name])
    query = "cancer risk study"
    hits = client.post(f"/indexes/{name}/search", json={"query": query, "k": 3, "explain": True}).json()["hits"]
    for hit in hits:
        want = local.explain(query, hit["id"]).to_dict()
        assert hit["explanation"]["doc_id"] == hit["id"]
        assert hit["explanation"]["score"] == pytest.approx(want["score"], abs=1e-5)
        assert sum(c["score"] for c in hit["explanation"]["contributions"]) == pytest.approx(want["score"], abs=1e-4)
    alone = client.post(f"/indexes/{name}/explain", json={"query": query, "id": hits[0]["id"]}).json()
    assert alone == json.loads(json.dumps(local.explain(query, hits[0]["id"]).to_dict()))
    assert_error(client.post(f"/indexes/{name}/explain", json={"query": query, "id": "ghost"}), 404, "ghost")
    local.close()


def test_the_server_can_run_the_models_on_onnx(built, models):
    pytest.importorskip("onnxruntime")
    from latelex.config import BackendConfig

    colbert, _ = models
    config = ServerConfig(indexes={"flat": str(built["flat"])}, backend=BackendConfig("onnx"))
    with running_server(config) as (url, service):
        assert service.retrievers["flat"].encoder.backend == "onnx"
        got = httpx.post(f"{url}/indexes/flat/search", json={"query": "cancer risk study", "k": 5}).json()["hits"]
    want = Retriever.open(built["flat"], encoder=colbert).search("cancer risk study", k=5)
    assert [h["id"] for h in got] == [h.doc_id for h in want]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in want], abs=1e-3)


# ------------------------------------------------------------------------------------------------ writing


def test_add_get_upsert_delete(built, tmp_path):
    paths = fresh_copy(built, tmp_path)
    with running_server(ServerConfig(indexes=paths)) as (url, service), httpx.Client(base_url=url) as client:
        docs = [{"id": "notes/a b.txt", "text": "vaccine dose trial results", "metadata": {"n": 100, "tag": "z"}},
                {"id": "new1", "text": "learned sparse index search", "metadata": {"n": 101, "tag": "z"}}]
        added = client.post("/indexes/flat/documents", json={"documents": docs}).json()
        assert added == {"added": 2, "replaced": 0, "deleted": 0, "not_found": [], "documents": 26}
        got = client.get("/indexes/flat/documents/notes/a b.txt").json()
        assert got == {"id": "notes/a b.txt", "text": docs[0]["text"], "metadata": docs[0]["metadata"]}
        hits = client.post("/indexes/flat/search", json={"query": "vaccine dose", "k": 30, "where": 'tag = "z"'}).json()
        assert {h["id"] for h in hits["hits"]} == {"notes/a b.txt", "new1"}

        assert_error(client.post("/indexes/flat/documents", json={"documents": docs[:1]}), 409, "notes/a b.txt")
        replaced = client.post("/indexes/flat/documents", json={"documents": [
            {"id": "new1", "text": "red green blue", "metadata": None}], "upsert": True}).json()
        assert (replaced["added"], replaced["replaced"], replaced["documents"]) == (1, 1, 26)
        assert client.get("/indexes/flat/documents/new1").json()["text"] == "red green blue"

        deleted = client.request("DELETE", "/indexes/flat/documents", json={"ids": ["new1", "d0", "ghost"]}).json()
        assert (deleted["deleted"], deleted["not_found"], deleted["documents"]) == (2, ["ghost"], 24)
        assert_error(client.get("/indexes/flat/documents/d0"), 404, "d0")
        assert_error(client.get("/indexes/flat/documents/..%2F..%2Fetc%2Fpasswd"), 404)
        odd = ["x' OR '1'='1", "../../outside", "d1; DROP TABLE documents; --", "%s%n", "é/ü?#&"]
        assert client.post("/indexes/flat/documents", json={"documents": [
            {"id": d, "text": "odd id", "metadata": {"tag": d}} for d in odd]}).json()["added"] == len(odd)
        for d in odd:  # ids and filter values are data: stored and found as given, nothing else touched
            got = client.get("/indexes/flat/documents/" + quote(d, safe="")).json()
            assert got["id"] == d and got["metadata"] == {"tag": d}
            hits = client.post("/indexes/flat/search", json={"query": "odd id", "k": 40, "where": {"tag": d}}).json()
            assert [h["id"] for h in hits["hits"]] == [d]
        assert client.request("DELETE", "/indexes/flat/documents", json={"ids": odd}).json()["deleted"] == len(odd)
        assert not (tmp_path / "outside").exists()
    reopened = Retriever.open(paths["flat"])
    assert len(reopened) == 24 and "d0" not in reopened and reopened.document("notes/a b.txt") == docs[0]["text"]


def test_concurrent_adds_and_searches_never_see_half_an_update(built, tmp_path):
    """Batches of 5 documents are added while searches run: every search sees a batch whole or not at all."""
    paths = fresh_copy(built, tmp_path)
    batches = 6
    errors: list[str] = []
    seen: list[int] = []
    done = threading.Event()
    with running_server(ServerConfig(indexes=paths)) as (url, _):
        def writer() -> None:
            with httpx.Client(base_url=url, timeout=120) as c:
                for b in range(batches):
                    docs = [{"id": f"b{b}-{i}", "text": f"apple banana fruit {VOCAB[b + i]}", "metadata": {"batch": b}}
                            for i in range(5)]
                    r = c.post("/indexes/flat/documents", json={"documents": docs})
                    if r.status_code != 200:
                        errors.append(r.text)
            done.set()

        def reader(seed: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as c:
                while not done.is_set():
                    for b in range(batches):
                        r = c.post("/indexes/flat/search", json={"query": "apple fruit", "k": 10,
                                                                 "where": {"batch": b}, "with_text": False})
                        if r.status_code == 400 and "unknown field" in r.text:
                            continue  # before the first batch, no document has the field
                        if r.status_code != 200:
                            errors.append(r.text)
                            continue
                        seen.append(len(r.json()["hits"]))
                    count = c.get("/indexes/flat").json()["documents"]
                    if (count - 24) % 5:
                        errors.append(f"index holds {count} documents mid-update")

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = httpx.get(f"{url}/indexes/flat").json()["documents"]
    assert not errors, errors[:3]
    assert final == 24 + 5 * batches
    assert seen and set(seen) <= {0, 5}, sorted(set(seen))


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_gets_one_line_errors_and_the_server_keeps_serving(server):
    client, _ = server
    search = "/indexes/flat/search"
    cases = [
        (client.post("/indexes/nope/search", json={"query": "x"}), 404, "nope"),
        (client.get("/indexes/nope"), 404, "nope"),
        (client.get("/indexes/flat/documents/ghost"), 404, "ghost"),
        (client.post(search, content=b'{"query": ', headers={"content-type": "application/json"}), 400, "JSON"),
        (client.post(search, json={"query": 5}), 422, "query"),
        (client.post(search, json={"query": "x", "k": "ten"}), 422, "k"),
        (client.post(search, json={"query": "x", "k": 0}), 422, "k"),
        (client.post(search, json={"query": "x", "k": 5000}), 422, "limit"),
        (client.post(search, json={"query": "x" * 3000}), 422, "characters"),
        (client.post(search, json={"queries": ["x"] * 65}), 422, "limit"),
        (client.post(search, json={"k": 3}), 422, "query"),
        (client.post(search, json={"query": "   "}), 400, "empty"),
        (client.post(search, json={"query": "x", "colour": "red"}), 422, "colour"),
        (client.post(search, json={"query": "x", "where": "nosuchfield = 3"}), 400, "nosuchfield"),
        (client.post(search, json={"query": "x", "where": "n >= 'a' and"}), 400),
        (client.post(search, json={"query": "x", "where": "n = 'text'"}), 400),
        (client.post(search, json={"query": "x", "subset": ["ghost"]}), 400, "ghost"),
        (client.post("/indexes/flat/documents", json={"documents": [{"id": "z", "text": "t", "metadata": [1]}]}),
         422, "metadata"),
        (client.post("/indexes/flat/documents", json={"documents": []}), 422, "documents"),
        (client.request("DELETE", "/indexes/flat/documents", json={"ids": "d1"}), 422, "ids"),
        (client.post("/rerank", json={"query": "x", "documents": ["y"] * 65}), 422, "limit"),
        (client.post("/encode", json={"texts": ["x"], "input": "both"}), 422, "input"),
    ]
    for response, status, *words in cases:
        assert_error(response, status, *words)
    assert client.get("/health").status_code == 200


def test_limits_on_bodies_and_requests_in_flight(built):
    limits = Limits(max_body_bytes=2000, max_concurrent=1)
    with running_server(ServerConfig(indexes={"flat": str(built["flat"])}, limits=limits)) as (url, _):
        big = {"documents": [{"id": "x", "text": "apple " * 1000}]}
        assert_error(httpx.post(f"{url}/indexes/flat/documents", json=big), 413, "2000 bytes")

        def chunks(n: int, hold: threading.Event | None = None):  # a body with no Content-Length
            yield b'{"query": "apple", "k": 2'
            if hold is not None:
                hold.wait(30)
            yield b" " * n + b"}"

        assert_error(httpx.post(f"{url}/indexes/flat/search", content=chunks(5000),
                                headers={"content-type": "application/json"}), 413)

        # A slow request holds the only slot while its body trickles in, and /health is refused meanwhile. Under
        # load the first /health can reach the server before the slow request does and take the slot itself: the
        # slow request is then refused (and answered once its body is sent), so that round is tried again.
        for _ in range(5):
            release = threading.Event()
            slow: dict = {}
            thread = threading.Thread(target=lambda: slow.setdefault("r", httpx.post(
                f"{url}/indexes/flat/search", content=chunks(10, release), headers={"content-type": "application/json"},
                timeout=60)))
            thread.start()
            refused = None
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    answer = httpx.get(f"{url}/health")
                    if answer.status_code == 503:
                        refused = answer
                        break
                    time.sleep(0.05)
            finally:
                release.set()
                thread.join()
            if refused is not None and slow["r"].status_code == 200:
                break
        assert refused is not None, "no /health was refused while a request held the only slot"
        assert_error(refused, 503, "in flight")
        assert refused.headers["retry-after"] == "1"
        assert slow["r"].status_code == 200 and len(slow["r"].json()["hits"]) == 2
        assert httpx.get(f"{url}/health").status_code == 200


def test_api_key_guards_writes_and_optionally_reads(built, tmp_path):
    paths = fresh_copy(built, tmp_path)
    doc = {"documents": [{"id": "k1", "text": "apple banana"}]}
    with running_server(ServerConfig(indexes=paths, api_key="s3cret-key")) as (url, _):
        add = f"{url}/indexes/flat/documents"
        assert_error(httpx.post(add, json=doc), 401, "API key")
        assert_error(httpx.post(add, json=doc, headers={"x-api-key": "s3cret-kex"}), 403, "wrong API key")
        assert_error(httpx.request("DELETE", add, json={"ids": ["d1"]}), 401)
        assert httpx.post(add, json=doc, headers={"authorization": "Bearer s3cret-key"}).status_code == 200
        assert httpx.request("DELETE", add, json={"ids": ["k1"]}, headers={"x-api-key": "s3cret-key"}).json()[
            "deleted"] == 1
        assert httpx.post(f"{url}/indexes/flat/search", json={"query": "apple"}).status_code == 200
    with running_server(ServerConfig(indexes=paths, api_key="s3cret-key", protect_search=True)) as (url, _):
        assert_error(httpx.post(f"{url}/indexes/flat/search", json={"query": "apple"}), 401)
        assert_error(httpx.get(f"{url}/indexes"), 401)
        assert httpx.get(f"{url}/health").status_code == 200
        ok = httpx.post(f"{url}/indexes/flat/search", json={"query": "apple"}, headers={"x-api-key": "s3cret-key"})
        assert ok.status_code == 200


# ------------------------------------------------------------------------------------------------ the process


def test_cli_refuses_bad_setups_in_one_line(tmp_path, capsys):
    from latelex.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("latelex: error:") and "\n" not in err
    with pytest.raises(SystemExit):
        main(["serve", str(tmp_path), "--protect-search"])
    assert "API key" in capsys.readouterr().err


def test_acknowledged_adds_survive_kill_9(built, tmp_path):
    """Every add the server answered 2xx is in the index after a kill -9 of the server; so is its text."""
    paths = fresh_copy(built, tmp_path)
    port = free_port()
    child = start_cli_server([f"flat={paths['flat']}", "-q"], port)
    acknowledged: list[dict] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for b in range(4):
                docs = [{"id": f"k{b}-{i}", "text": f"vaccine trial {VOCAB[b * 3 + i]}"} for i in range(3)]
                if client.post("/indexes/flat/documents", json={"documents": docs}).status_code == 200:
                    acknowledged.extend(docs)
            assert len(acknowledged) == 12
            unanswered = threading.Thread(target=lambda: _quietly(lambda: client.post(
                "/indexes/flat/documents", json={"documents": [{"id": "late", "text": "late document"}]})))
            unanswered.start()
            time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
            unanswered.join()
    finally:
        child.kill()
        child.wait()
    reopened = Retriever.open(paths["flat"], load_encoder=False)
    assert all(reopened.document(d["id"]) == d["text"] for d in acknowledged)
    assert len(reopened) in (24 + 12, 24 + 13)  # the unanswered add is all there or not at all
    assert Retriever.inspect(paths["flat"], verify=True)["documents"] == len(reopened)


def _quietly(call) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass


def test_sigterm_finishes_the_request_in_flight(built, tmp_path):
    paths = fresh_copy(built, tmp_path)
    port = free_port()
    child = start_cli_server([f"flat={paths['flat']}", "-q"], port)
    release = threading.Event()
    answer: dict = {}

    def body():
        yield b'{"documents": [{"id": "inflight", "text": "apple banana fruit"}]'
        release.wait(30)
        yield b"}"

    def send() -> None:
        answer["r"] = httpx.post(f"http://127.0.0.1:{port}/indexes/flat/documents", content=body(),
                                 headers={"content-type": "application/json"}, timeout=60)

    thread = threading.Thread(target=send)
    try:
        thread.start()
        time.sleep(0.5)  # the request has started: its body is still coming
        child.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert child.poll() is None, "the server quit with a request in flight"
        release.set()
        thread.join(60)
        # uvicorn re-raises SIGTERM once it has shut down gracefully, so the exit status is the signal's
        assert child.wait(60) in (0, -signal.SIGTERM)
    finally:
        release.set()
        child.kill()
    assert answer["r"].status_code == 200, answer["r"].text
    assert json.loads(answer["r"].text)["added"] == 1
    assert Retriever.open(paths["flat"], load_encoder=False).document("inflight") == "apple banana fruit"
