"""Shards served by Ray actors (a real local Ray cluster, the ``ray_cluster`` fixture): they answer as the shards
opened in this process do, writes are routed to the owning shard's actor and seen by every replica, a shard actor
killed during searches is restarted with no search failing, and ``latelex serve --ray`` serves a sharded index
through the same HTTP API."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import httpx
import pytest

from latelex import ColBERT, ShardedRetriever
from latelex.errors import InputError
from latelex.search.shard_manifest import hash_shard

from server_helpers import free_port, start_cli_server

WORDS = ("cell protein gene cancer risk study patients treatment effect disease blood brain heart virus vaccine "
         "drug dose trial apple banana fruit healthy red green blue").split()
DOCS = [(f"d{i}", " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 5)), {"group": i % 3})
        for i in range(48)]
QUERIES = ["protein gene", "apple banana", "heart disease risk", "vaccine dose trial"]


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return ColBERT.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def sharded(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("ray-shards") / "index"
    ShardedRetriever.build(path, encoder, DOCS, shards=3, kind="flat", show_progress=False).close()
    return path


def _copy(sharded, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(sharded, target)
    return target


def _opener(replicas=1):
    from latelex.distributed.shard_actors import ReplicaConfig, ray_shard_opener

    return ray_shard_opener(ReplicaConfig(replicas=replicas, cpus_per_replica=0.25))


def _pairs(hits):
    return [(h.doc_id, round(h.score, 4)) for h in hits]


def test_ray_shards_answer_as_local_shards(ray_cluster, sharded, encoder):
    local = ShardedRetriever.open(sharded, encoder=encoder)
    remote = ShardedRetriever.open(sharded, encoder=encoder, shard_opener=_opener(replicas=2))
    try:
        assert len(remote) == len(local) == len(DOCS)
        for query in QUERIES:
            want = local.search(query, k=8)
            got = remote.search(query, k=8)
            assert _pairs(got) == _pairs(want) and len(got) == 8
            assert [h.text for h in got] == [h.text for h in want]
            assert _pairs(remote.search(query, k=5, where="group = 1")) == _pairs(local.search(query, k=5, where="group = 1"))
            assert all(h.metadata["group"] == 1 for h in remote.search(query, k=5, where="group = 1"))
        hit = local.search(QUERIES[0], k=1)[0]
        assert remote.explain(QUERIES[0], hit.doc_id).to_dict() == local.explain(QUERIES[0], hit.doc_id).to_dict()
        assert remote.get("d5") == local.get("d5")
        # an error inside an actor arrives as the library's own one-line error
        with pytest.raises(InputError) as caught:
            remote.search(QUERIES[0], where="no_such_field = 1")
        assert "\n" not in str(caught.value)
    finally:
        remote.close()
        local.close()


def test_writes_are_routed_to_the_owner_shard_and_seen_by_every_replica(ray_cluster, sharded, encoder, tmp_path):
    path = _copy(sharded, tmp_path)
    remote = ShardedRetriever.open(path, encoder=encoder, shard_opener=_opener(replicas=2))
    try:
        new = [("n1", "zebra giraffe savanna", {"group": 9}), ("n2", "giraffe neck tall", {"group": 9})]
        result = remote.add(new)
        assert result.added == 2
        for _ in range(4):  # reads alternate between the two replicas: both see the commit
            assert {h.doc_id for h in remote.search("giraffe savanna", k=3, where="group = 9")} == {"n1", "n2"}
        assert remote.delete(["n1", "d0"]).deleted == 2
        for _ in range(4):
            assert [h.doc_id for h in remote.search("giraffe", k=5, where="group = 9")] == ["n2"]
    finally:
        remote.close()
    local = ShardedRetriever.open(path, encoder=encoder)
    try:
        shards = local.shards
        assert shards[hash_shard("n2", len(shards))].read("__contains__", "n2")
        assert sum(s.read("__contains__", "n2") for s in shards) == 1
        assert "n1" not in local and "d0" not in local and len(local) == len(DOCS) - 1 + 1
    finally:
        local.close()


def test_a_shard_actor_killed_during_searches_is_restarted(ray_cluster, sharded, encoder):
    remote = ShardedRetriever.open(sharded, encoder=encoder, shard_opener=_opener(replicas=1))
    errors: list[BaseException] = []
    answers: list[list[str]] = []
    want = [h.doc_id for h in remote.search(QUERIES[0], k=10)]
    victim = remote.shards[1]
    (old_pid,) = victim.pids()

    def searches():
        for _ in range(40):
            try:
                answers.append([h.doc_id for h in remote.search(QUERIES[0], k=10)])
            except BaseException as exc:  # noqa: BLE001 - counted, asserted below
                errors.append(exc)

    try:
        thread = threading.Thread(target=searches)
        thread.start()
        while len(answers) < 5 and thread.is_alive():
            time.sleep(0.01)
        os.kill(old_pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert errors == []
        assert len(answers) == 40 and all(a == want for a in answers)
        (new_pid,) = victim.pids()
        assert new_pid != old_pid  # Ray restarted the actor; it reopened the shard
        assert [h.doc_id for h in remote.search(QUERIES[0], k=10)] == want
    finally:
        remote.close()


def test_serve_ray_serves_a_sharded_index_over_http(ray_cluster, sharded, encoder, tmp_path):
    path = _copy(sharded, tmp_path)
    address = ray_cluster.get_runtime_context().gcs_address
    port = free_port()
    child = start_cli_server(["--ray", address, "--replicas", "2", "--replica-cpus", "0.25", f"docs={path}"], port)
    try:
        base = f"http://127.0.0.1:{port}"
        local = ShardedRetriever.open(sharded, encoder=encoder)
        for query in QUERIES[:2]:
            body = httpx.post(f"{base}/indexes/docs/search", json={"query": query, "k": 6}, timeout=60).json()
            assert [(h["id"], round(h["score"], 4)) for h in body["hits"]] == _pairs(local.search(query, k=6))
        local.close()
        added = httpx.post(f"{base}/indexes/docs/documents",
                           json={"documents": [{"id": "z1", "text": "zebra stripes"}]}, timeout=60)
        assert added.status_code == 200, added.text
        assert added.json()["documents"] == len(DOCS) + 1
        assert httpx.get(f"{base}/indexes", timeout=60).json()[0]["documents"] == len(DOCS) + 1
        body = httpx.post(f"{base}/indexes/docs/search", json={"query": "zebra stripes", "k": 1}, timeout=60).json()
        assert body["hits"][0]["id"] == "z1"
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)


def test_serve_ray_refuses_a_single_index(ray_cluster, encoder, tmp_path):
    from latelex import Retriever
    from latelex.cli import main

    Retriever.build(tmp_path / "plain", encoder, DOCS[:5], show_progress=False).close()
    address = ray_cluster.get_runtime_context().gcs_address
    assert main(["serve", "--ray", address, str(tmp_path / "plain")]) != 0
