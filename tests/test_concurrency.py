"""Concurrent writers and readers on one index: two processes adding at once both succeed in turn and every
acknowledged document is there; readers that reopen and search while commits land never see an error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from latelex import ColBERT, Retriever, Splade
from latelex.index.plaid import PlaidConfig, PlaidIndex
from tiny_models import WORDS

VOCAB = [w for w in WORDS if len(w) > 2]

WRITER = """
import json, sys
from latelex import ColBERT, Splade, Retriever
path, model, family, prefix, batches = sys.argv[1:6]
encoder = (Splade if family == "splade" else ColBERT).from_pretrained(model)
r = Retriever.open(path, encoder=encoder)
words = {words!r}
done = []
for b in range(int(batches)):
    docs = [(f"{{prefix}}-{{b}}-{{i}}", " ".join(words[(b * 5 + i * 3 + j) % len(words)] for j in range(8))) for i in range(4)]
    r.add(docs)
    done += [d for d, _ in docs]
    if b % 2:
        r.delete([docs[0][0]])
        done.remove(docs[0][0])
print(json.dumps(done))
""".format(words=VOCAB)


def docs(n: int):
    return [(f"base{i}", " ".join(VOCAB[(i * 7 + j) % len(VOCAB)] for j in range(10))) for i in range(n)]


def start_writer(path, model, family, prefix, batches):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(model), family, prefix, str(batches)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kind", ["flat", "plaid", "inverted"])
def test_two_writers_at_once_both_land(kind, tiny_bert, tiny_mlm, tmp_path):
    family, model = ("splade", tiny_mlm) if kind == "inverted" else ("colbert", tiny_bert)
    encoder = (Splade if family == "splade" else ColBERT).from_pretrained(model)
    Retriever.build(tmp_path / "idx", encoder, docs(20), kind=kind)
    writers = [start_writer(tmp_path / "idx", model, family, p, 4) for p in ("a", "b")]
    acknowledged = []
    for w in writers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-2000:]
        acknowledged += json.loads(out)
    Retriever.inspect(tmp_path / "idx", verify=True)
    r = Retriever.open(tmp_path / "idx", encoder=encoder)
    assert set(acknowledged) <= set(r.doc_ids) and len(r) == 20 + len(acknowledged)


@pytest.mark.parametrize("kind", ["plaid", "inverted"])
def test_readers_never_see_a_commit_as_damage(kind, tiny_bert, tiny_mlm, tmp_path):
    family, model = ("splade", tiny_mlm) if kind == "inverted" else ("colbert", tiny_bert)
    encoder = (Splade if family == "splade" else ColBERT).from_pretrained(model)
    Retriever.build(tmp_path / "idx", encoder, docs(30), kind=kind)
    writer = start_writer(tmp_path / "idx", model, family, "w", 16)
    rounds, errors, generations = 0, [], set()
    try:
        while rounds < 500 or writer.poll() is None:
            try:
                r = Retriever.open(tmp_path / "idx", encoder=encoder)
                hits = r.search("cancer risk study", k=5)
                assert hits and all(h.text for h in hits)
                generations.add(r.generation)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                errors.append(repr(exc))
            rounds += 1
            if rounds > 5000:
                break
    finally:
        writer.wait(timeout=600)
    assert writer.returncode == 0, writer.stderr.read()[-2000:]
    assert errors == [] and rounds >= 500
    assert len(generations) > 3  # the rounds did overlap the commits


WRITER_ENGINE = """
import sys
import numpy as np
from latelex.index.plaid import PlaidIndex
path, prefix = sys.argv[1:3]
rng = np.random.default_rng(abs(hash(prefix)) % 1000)
for b in range(8):
    index = PlaidIndex.open(path)
    mats = [rng.normal(size=(5, 16)).astype(np.float32) for _ in range(3)]
    index.add([f"{prefix}-{b}-{i}" for i in range(3)], [m / np.linalg.norm(m, axis=1, keepdims=True) for m in mats])
print("ok")
"""


def test_two_processes_adding_to_one_plaid_index(tmp_path):
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(6, 16)).astype(np.float32) for _ in range(60)]
    PlaidIndex.build(tmp_path / "idx", [f"d{i}" for i in range(60)], [m / np.linalg.norm(m, axis=1, keepdims=True) for m in mats],
                     config=PlaidConfig(n_centroids=16))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_ENGINE, str(tmp_path / "idx"), p], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in ("a", "b")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    index = PlaidIndex.open(tmp_path / "idx", verify=True)
    assert len(index) == 60 + 2 * 8 * 3
