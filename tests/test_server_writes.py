"""Group commit in the server's writer: adds that wait together are committed together, each answered on its own."""

from __future__ import annotations

import threading
import time

import pytest

from latelex import ColBERT, Retriever
from latelex.errors import DuplicateIdError
from latelex.server.writes import GroupWriter
from latelex.types import Document


@pytest.fixture()
def retriever(tiny_bert, tmp_path):
    docs = [Document(f"d{i}", f"apple banana fruit {i}") for i in range(4)]
    return Retriever.build(tmp_path / "idx", ColBERT.from_pretrained(tiny_bert), docs)


class Gate:
    """Holds the writer's first commit until the test has queued the requests that should wait behind it."""

    def __init__(self, retriever) -> None:
        self.inner_add = retriever.add
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def add(self, docs, **kw):
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(30)
        return self.inner_add(docs, **kw)


def submit_in_thread(writer, results, key, op, **kw):
    def run():
        try:
            results[key] = writer.submit(op, **kw)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[key] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_queued(writer, n):
    deadline = time.monotonic() + 30
    while writer._queue.qsize() < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer._queue.qsize() == n


def test_adds_waiting_together_are_one_commit_and_each_is_answered_alone(retriever):
    gate = Gate(retriever)
    retriever.add = gate.add
    writer = GroupWriter(retriever).start()
    results: dict = {}
    threads = [submit_in_thread(writer, results, "first", "add", docs=[Document("a0", "red green blue")])]
    assert gate.entered.wait(30)
    for i in range(1, 6):  # queued while the first commit is held
        threads.append(submit_in_thread(writer, results, i, "add",
                                        docs=[Document(f"a{i}-{j}", f"cancer risk {i} {j}") for j in range(i)]))
        wait_queued(writer, i)
    threads.append(submit_in_thread(writer, results, "dup", "add", docs=[Document("d1", "already there")]))
    wait_queued(writer, 6)
    generation = retriever.generation
    gate.release.set()
    for t in threads:
        t.join(60)
    writer.close()
    assert results["first"].added == 1
    for i in range(1, 6):
        assert (results[i].added, results[i].replaced) == (i, 0)
    assert isinstance(results["dup"], DuplicateIdError) and "d1" in str(results["dup"])
    assert gate.calls == 2  # the first add, then the five waiting adds in one commit
    assert retriever.generation == generation + 2  # read while the first commit was held: two commits in all
    assert writer.stats == {"requests": 7, "commits": 2}
    assert len(retriever) == 4 + 1 + sum(range(1, 6))
    assert retriever.document("a3-2") == "cancer risk 3 2" and retriever.document("d1") == "apple banana fruit 1"


def test_order_holds_across_deletes_and_clashing_ids(retriever):
    gate = Gate(retriever)
    retriever.add = gate.add
    writer = GroupWriter(retriever).start()
    results: dict = {}
    threads = [submit_in_thread(writer, results, 0, "add", docs=[Document("x", "first x")])]
    assert gate.entered.wait(30)
    steps = [("delete", {"ids": ["x", "d0"]}), ("upsert", {"docs": [Document("x", "second x")]}),
             ("upsert", {"docs": [Document("x", "third x")]}), ("upsert", {"docs": [Document("y", "a y")]})]
    for n, (op, kw) in enumerate(steps, start=1):
        threads.append(submit_in_thread(writer, results, n, op, **kw))
        wait_queued(writer, n)
    gate.release.set()
    for t in threads:
        t.join(60)
    writer.close()
    assert results[1].deleted == 2
    assert (results[2].added, results[2].replaced) == (1, 0)  # x was deleted just before
    assert (results[3].added, results[3].replaced) == (1, 1)  # the same id: committed after, not with, step 2
    assert retriever.document("x") == "third x" and "d0" not in retriever and "y" in retriever


def test_a_failed_group_is_retried_request_by_request(retriever):
    gate = Gate(retriever)
    retriever.add = gate.add
    writer = GroupWriter(retriever).start()
    results: dict = {}
    threads = [submit_in_thread(writer, results, 0, "add", docs=[Document("g0", "fine")])]
    assert gate.entered.wait(30)
    threads.append(submit_in_thread(writer, results, 1, "add", docs=[Document("g1", "fine too")]))
    wait_queued(writer, 1)
    threads.append(submit_in_thread(writer, results, 2, "add",
                                    docs=[Document("g2", "twice"), Document("g2", "twice again")]))
    wait_queued(writer, 2)
    gate.release.set()
    for t in threads:
        t.join(60)
    writer.close()
    assert results[1].added == 1 and "g1" in retriever
    assert isinstance(results[2], DuplicateIdError) and "g2" not in retriever
