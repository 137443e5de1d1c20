"""kill -9 trials of a retriever's changes: a child process changes an index and is killed at a random instant;
the parent checks that the index opens, passes verification, holds exactly the old or the new documents, and that
every live id's vectors come from its own stored text.

Used by tests/test_retriever_crash.py (a bounded number of trials) and scripts/kill_trials.py (the full sweep).
Run as ``python tests/crash_trials.py worker INDEX KIND OP MODEL`` for the child.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OPS = ("add", "delete", "upsert", "compact", "overwrite")
#: also "build": a first build at a path where nothing is yet (the old state is no index at all)
KINDS = ("flat", "plaid", "inverted")
WORDS = ("cell protein gene cancer risk study patients treatment effect disease blood brain heart virus vaccine drug "
         "dose trial results data model search query document retrieval token vector score index sparse dense apple "
         "banana fruit healthy red green blue small large").split()


def text_of(doc_id: str, version: int) -> str:
    """A text whose length in tokens differs between versions of one document."""
    rng = random.Random(f"{doc_id}/{version}")
    return " ".join(rng.choice(WORDS) for _ in range(3 + 3 * version + int(doc_id[1:]) % 3))


def base_docs() -> list[tuple[str, str, dict]]:
    return [(f"d{i}", text_of(f"d{i}", 0), {"v": 0}) for i in range(40)]


def change(op: str) -> tuple[list, list]:
    """(documents written, ids deleted) by ``op`` on the base documents."""
    if op == "add":
        return [(f"d{i}", text_of(f"d{i}", 0), {"v": 0}) for i in range(40, 70)], []
    if op == "delete":
        return [], [f"d{i}" for i in range(0, 40, 4)]
    if op == "upsert":
        return [(f"d{i}", text_of(f"d{i}", 1), {"v": 1}) for i in range(0, 40, 3)], []
    if op == "overwrite":
        return [(f"d{i}", text_of(f"d{i}", 2), {"v": 2}) for i in range(20, 60)], []
    return [], []


def expected_states(op: str) -> tuple[dict | None, dict]:
    old = {d: (t, m) for d, t, m in base_docs()}
    if op == "build":
        return None, old
    docs, gone = change(op)
    if op == "overwrite":
        return old, {d: (t, m) for d, t, m in docs}
    new = dict(old)
    for d in gone:
        new.pop(d)
    new.update({d: (t, m) for d, t, m in docs})
    return old, new


def encoder_for(kind: str, models: dict[str, str]):
    from latelex import ColBERT, Splade

    return Splade.from_pretrained(models["mlm"]) if kind == "inverted" else ColBERT.from_pretrained(models["bert"])


def build_template(root: Path, kind: str, models: dict[str, str]) -> Path:
    from latelex import Retriever

    path = root / f"template-{kind}"
    if not path.exists():
        Retriever.build(path, encoder_for(kind, models), base_docs(), kind=kind)
    return path


def worker(index: str, kind: str, op: str, models_json: str) -> None:
    from latelex import Retriever

    models = json.loads(models_json)
    encoder = encoder_for(kind, models)
    retriever = None if op == "build" else Retriever.open(index, encoder=encoder)
    docs, gone = change(op)
    print("READY", flush=True)
    if os.environ.get("LATELEX_WORKER_WAIT"):  # fault injection attaches strace now, then says go
        sys.stdin.readline()
    if op == "add":
        retriever.add(docs)
    elif op == "delete":
        retriever.delete(gone)
    elif op == "upsert":
        retriever.upsert(docs)
    elif op == "compact":
        retriever.compact()
    elif op == "overwrite":
        Retriever.build(index, encoder, docs, kind=kind, overwrite=True)
    elif op == "build":
        Retriever.build(index, encoder, base_docs(), kind=kind)
    print("DONE", flush=True)


def _inconsistent(retriever, encoder, kind: str, found: dict) -> str | None:
    """The first live id whose engine vectors were not made from its stored text (None: every one was)."""
    ids = sorted(found)
    texts = [found[d][0] for d in ids]
    fresh = encoder.encode_documents(texts)
    queries = encoder.encode_queries(texts) if kind == "inverted" else None
    for i, doc_id in enumerate(ids):
        segment = next(s for s in retriever._state.segments if doc_id in s.live_ids())
        engine = segment.engine
        if kind == "plaid":
            ok = engine.decompressed(doc_id).shape[0] == fresh[i].shape[0]
        elif kind == "flat":
            import torch

            position = engine.doc_ids.index(doc_id)
            rows = engine._vectors[engine._offsets[position] : engine._offsets[position + 1]]
            stored = torch.from_numpy(np.asarray(rows, dtype=np.float32))
            ok = stored.shape == fresh[i].shape and bool(torch.allclose(stored, fresh[i], atol=2e-2))
        else:
            from latelex.types import SparseBatch

            query = SparseBatch.from_vectors([queries[i]], queries.vocab_size)
            score = engine.search(query, k=1, subset=[doc_id])[0][0].score
            exact = queries[i].dot(fresh[i])
            ok = abs(score - exact) <= 0.05 * max(1.0, abs(exact))
        if not ok:
            return doc_id
    return None


def check(index: Path, kind: str, models: dict[str, str], op: str, acknowledged: bool) -> str:
    """``"old"`` or ``"new"`` (the state found), or a description of what is wrong."""
    from latelex import Retriever
    from latelex.errors import LatelexError

    old, new = expected_states(op)
    if old is None and not index.exists():  # a first build that died: nothing at the path is the old state
        if acknowledged:
            return "an acknowledged build was lost"
        Retriever.build(index, encoder_for(kind, models), base_docs(), kind=kind)  # the next build goes through ...
        leftovers = [p.name for p in index.parent.iterdir() if p.name.startswith(f".{index.name}.")]
        return "old" if not leftovers else f"old, but the next build left {leftovers}"  # ... and clears the rest
    try:
        Retriever.inspect(index, verify=True)
        encoder = encoder_for(kind, models)
        retriever = Retriever.open(index, encoder=encoder)
    except LatelexError as exc:
        return f"unreadable: {exc}"
    found = {}
    for doc_id in retriever.doc_ids:
        doc = retriever.get(doc_id)
        found[doc_id] = (doc.text, doc.metadata)
    state = "new" if found == new else "old" if found == old else None
    if state is None:
        return f"mixed state: {len(found)} documents, {len(set(found) ^ set(new))} differ from the new state"
    if acknowledged and state != "new" and old != new:
        return "an acknowledged change was lost"
    wrong = _inconsistent(retriever, encoder, kind, found)
    if wrong is not None:
        return f"document {wrong!r}: its vectors do not come from its text"
    try:  # one more change goes through
        retriever.add([("extra", "apple banana fruit", {"v": 9})])
        retriever.delete(["extra"])
    except LatelexError as exc:
        return f"the next change failed: {exc}"
    return state


def trial(root: Path, kind: str, op: str, models: dict[str, str], rng: random.Random, op_seconds: float) -> tuple[str, bool]:
    """One kill -9 trial; returns (outcome, whether the kill landed before the child finished)."""
    template = build_template(root, kind, models)
    index = root / f"trial-{kind}-{op}"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(template, index)
    child = subprocess.Popen([sys.executable, str(Path(__file__)), "worker", str(index), kind, op, json.dumps(models)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "READY":
        child.kill()
        return f"worker failed to start: {line!r}", False
    time.sleep(rng.uniform(0, op_seconds * 1.2))
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    child.wait()
    acknowledged = "DONE" in rest
    return check(index, kind, models, op, acknowledged), not acknowledged


def time_op(root: Path, kind: str, op: str, models: dict[str, str]) -> float:
    """Seconds the child spends on ``op`` (READY to DONE), to aim the kills inside it: the faster of two runs, since
    the first may compile numba kernels into the cache and last many times longer than a trial's change."""
    return min(_time_op_once(root, kind, op, models) for _ in range(2))


def _time_op_once(root: Path, kind: str, op: str, models: dict[str, str]) -> float:
    template = build_template(root, kind, models)
    index = root / f"timing-{kind}-{op}"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(template, index)
    child = subprocess.Popen([sys.executable, str(Path(__file__)), "worker", str(index), kind, op, json.dumps(models)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None
    child.stdout.readline()
    start = time.monotonic()
    child.stdout.readline()
    seconds = time.monotonic() - start  # before wait(): the child's interpreter exit lasts longer than most changes
    child.wait()
    return max(0.05, seconds)


def sweep(root: Path, models: dict[str, str], trials: int, kinds=KINDS, ops=OPS, seed: int = 0,
          report=None) -> dict:
    """``{(kind, op): {outcome: count}}`` plus how many kills landed mid-change; ``report(kind, op, counts)`` is
    called as each row completes."""
    rng = random.Random(seed)
    results: dict = {}
    for kind in kinds:
        for op in ops:
            seconds = time_op(root, kind, op, models)
            counts: dict[str, int] = {}
            for _ in range(trials):
                outcome, mid = trial(root, kind, op, models, rng, seconds)
                counts[outcome] = counts.get(outcome, 0) + 1
                counts["killed mid-change"] = counts.get("killed mid-change", 0) + int(mid)
            results[(kind, op)] = counts
            if report is not None:
                report(kind, op, counts)
    return results


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    sys.path.insert(0, str(HERE))
    worker(*sys.argv[2:6])
