"""Building on Ray (``build_on_ray``, ``latelex index --ray``) gives the index one process builds.

Two encoder workers on the session's local Ray cluster, small chunks and the tiny models: every kind that has an
encoder is compared array by array with a single-process build (same ids, lengths and codec; vectors within
1e-3) and by its search results; a worker killed mid-build is restarted by Ray and its chunks retried; a build
interrupted after some chunks resumes without encoding them again; an unreachable address is one line, at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latelex import ColBERT, Retriever, Splade
from latelex.cli import main
from latelex.distributed.cluster import ClusterError, RayConfig, _check_reachable
from latelex.distributed.encode import JOURNAL, ChunkStore, RayEncoder, work_dir_for
from latelex.distributed.indexing import build_on_ray
from latelex.errors import InputError
from latelex.index.plaid.config import PlaidConfig

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["apple banana fruit", "cancer risk patients", "vaccine virus trial", "brain heart blood",
          "sparse index search", "gene protein cell", "drug dose treatment", "red green blue"]
DOCS = [(f"d{i:03d}", f"{TOPICS[i % 8]} study {i} with {TOPICS[(i * 3) % 8]} and notes number {i * 7}"
         + " more words" * (i % 5)) for i in range(72)]
QUERIES = ["apple fruit", "virus trial", "gene cell", "red blue", "drug treatment"]
CHUNK = 8  # 9 chunks of 72 documents
PLAID = PlaidConfig(nbits=2, n_centroids=16, chunk_size=20)  # 4 PLAID chunks: compressed by Ray tasks


@pytest.fixture(scope="module")
def colbert(tiny_bert):
    return ColBERT.from_pretrained(tiny_bert, device="cpu")


@pytest.fixture(scope="module")
def splade(tiny_mlm):
    return Splade.from_pretrained(tiny_mlm, device="cpu")


def on_ray(**fields) -> RayConfig:
    return RayConfig(**{"workers": 2, "chunk_size": CHUNK, **fields})


def segment(retriever: Retriever) -> Path:
    return retriever.path / retriever.manifest["index"]["segments"][0]["path"]


def assert_same_index(single: Retriever, distributed: Retriever) -> None:
    """Same manifest encoder, same arrays (integers equal, floats within 1e-3), same search results."""
    assert distributed.manifest["encoder"] == single.manifest["encoder"]
    assert distributed.manifest["index"]["kind"] == single.manifest["index"]["kind"]
    assert distributed.doc_ids == single.doc_ids
    a, b = segment(single), segment(distributed)
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*.npy"))
    assert names and names == sorted(str(p.relative_to(b)) for p in b.rglob("*.npy"))
    for name in names:
        x = np.load(a / name, allow_pickle=False)
        y = np.load(b / name, allow_pickle=False)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), atol=1e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)
    hits = [[(h.doc_id, round(h.score, 3)) for h in row] for row in single.search(QUERIES, k=5)]
    assert [[(h.doc_id, round(h.score, 3)) for h in row] for row in distributed.search(QUERIES, k=5)] == hits
    assert not work_dir_for(distributed.path).exists()  # the chunks are removed once the index is published


def build(path: Path, encoder, kind: str, ray=None, **options) -> Retriever:
    config = PLAID if kind == "plaid" else None
    if ray is None:
        return Retriever.build(path, encoder, DOCS, kind=kind, engine_config=config, show_progress=False, **options)
    return build_on_ray(path, encoder, DOCS, ray=ray, kind=kind, engine_config=config, show_progress=False,
                        **options)


@pytest.mark.parametrize("kind", ["flat", "plaid"])
def test_colbert_kinds_equal_a_single_process_build(ray_cluster, colbert, kind, tmp_path, monkeypatch):
    compressed = []
    real_map = RayEncoder.map_chunks

    def counting(self, fn, items):
        for out in real_map(self, fn, items):
            compressed.append(1)
            yield out

    monkeypatch.setattr(RayEncoder, "map_chunks", counting)
    single = build(tmp_path / "single", colbert, kind)
    distributed = build(tmp_path / "ray", colbert, kind, ray=on_ray())
    assert distributed.encoder is colbert  # the retriever holds the encoder it was given, not the Ray wrapper
    assert_same_index(single, distributed)
    assert len(compressed) == (4 if kind == "plaid" else 0)  # PLAID's chunks were compressed by Ray tasks


@pytest.mark.parametrize("kind", ["sparse", "inverted"])
def test_splade_kinds_equal_a_single_process_build(ray_cluster, splade, kind, tmp_path):
    single = build(tmp_path / "single", splade, kind)
    distributed = build(tmp_path / "ray", splade, kind, ray=on_ray())
    assert_same_index(single, distributed)


@pytest.mark.parametrize("restarts", [3, 0])
def test_a_killed_worker_is_restarted_and_its_chunks_retried(ray_cluster, colbert, restarts, tmp_path, monkeypatch):
    """SIGKILL to a worker while chunks are in flight on it: Ray restarts it and retries them; with no restarts
    allowed, the build stops with one line and keeps its finished chunks for the next run."""
    real_save = RayEncoder._save_chunk
    killed = []

    def save_then_kill(self, store, key, arrays, documents):
        real_save(self, store, key, arrays, documents)
        if not killed:  # after the first chunk: each worker still holds a chunk in flight
            killed.append(self.worker_pids[0])
            os.kill(self.worker_pids[0], signal.SIGKILL)

    monkeypatch.setattr(RayEncoder, "_save_chunk", save_then_kill)
    target = tmp_path / "ray"
    if restarts == 0:
        with pytest.raises(ClusterError, match="run the same build again to resume") as died:
            build(target, colbert, "flat", ray=on_ray(chunk_size=4, max_restarts=0))
        assert "\n" not in str(died.value) and not target.exists()
        assert (work_dir_for(target) / JOURNAL).read_text().count("\n") >= 1
        return
    distributed = build(target, colbert, "flat", ray=on_ray(chunk_size=4))
    assert killed
    assert_same_index(build(tmp_path / "single", colbert, "flat"), distributed)


def test_an_interrupted_build_resumes_without_encoding_finished_chunks(ray_cluster, colbert, tmp_path, monkeypatch,
                                                                       caplog):
    real_save = RayEncoder._save_chunk
    saved = []

    def save_three_then_die(self, store, key, arrays, documents):
        if len(saved) == 3:
            raise RuntimeError("the driver died")
        real_save(self, store, key, arrays, documents)
        saved.append(key)

    monkeypatch.setattr(RayEncoder, "_save_chunk", save_three_then_die)
    target = tmp_path / "ray"
    with pytest.raises(RuntimeError, match="the driver died"):
        build(target, colbert, "plaid", ray=on_ray())
    assert not target.exists()  # nothing published
    journal = work_dir_for(target) / JOURNAL
    assert [json.loads(line)["chunk"] for line in journal.read_text().splitlines()] == saved

    encoded = []

    def count(self, store, key, arrays, documents):
        encoded.append(key)
        real_save(self, store, key, arrays, documents)

    monkeypatch.setattr(RayEncoder, "_save_chunk", count)
    with caplog.at_level(logging.INFO, logger="latelex.distributed.encode"):
        distributed = build(target, colbert, "plaid", ray=on_ray())
    assert len(encoded) == len(DOCS) // CHUNK - 3 and not set(encoded) & set(saved)
    assert any("resumed 3 of 9 chunks" in r.getMessage() for r in caplog.records)
    assert_same_index(build(tmp_path / "single", colbert, "plaid"), distributed)


def test_only_chunks_with_other_texts_are_encoded_again(ray_cluster, colbert, splade, tmp_path):
    wrapped = RayEncoder(colbert, on_ray(workers=1), tmp_path / "work")
    texts = [t for _, t in DOCS[:16]]
    first = wrapped.encode_documents(texts)
    assert wrapped.last_run == {"chunks": 2, "resumed": 0, "encoded": 2, "documents": 16}
    again = wrapped.encode_documents(texts[:8] + ["an edited document"] + texts[9:])
    wrapped.close()
    assert wrapped.last_run["resumed"] == 1 and wrapped.last_run["encoded"] == 1
    assert len(first) == len(again) == 16 and first[3].shape == again[3].shape
    np.testing.assert_array_equal(first[3].numpy(), again[3].numpy())
    assert not np.array_equal(first[8].numpy(), again[8].numpy()) or first[8].shape != again[8].shape
    # a chunk's fingerprint covers the encoder: the same texts under another encoder are another chunk
    assert ChunkStore(tmp_path / "a", colbert.spec()).key(texts) != ChunkStore(tmp_path / "b", splade.spec()).key(texts)


def test_cli_index_with_ray(ray_cluster, tiny_bert, tmp_path):
    collection = tmp_path / "collection.tsv"
    collection.write_text("".join(f"{d}\t{t}\n" for d, t in DOCS), encoding="utf-8")
    target = tmp_path / "idx"
    assert main(["-q", "index", str(target), "--model", str(tiny_bert), "--collection", str(collection),
                 "--ray", "--ray-workers", "2", "--ray-chunk-size", "16"]) == 0
    retriever = Retriever.open(target)
    assert len(retriever) == len(DOCS) and retriever.kind == "flat"
    assert not work_dir_for(target.resolve()).exists()


def test_a_sharded_build_on_ray_equals_one_in_process(ray_cluster, colbert, tiny_bert, tmp_path):
    from latelex import ShardedRetriever

    single = ShardedRetriever.build(tmp_path / "single", colbert, DOCS, shards=3, kind="flat", show_progress=False)
    distributed = build_on_ray(tmp_path / "ray", colbert, DOCS, ray=on_ray(chunk_size=8), shards=3, kind="flat",
                               show_progress=False)
    assert isinstance(distributed, ShardedRetriever) and distributed.encoder is colbert
    assert [len(s.read("doc_ids")) for s in distributed.shards] == [len(s.read("doc_ids")) for s in single.shards]
    for query in QUERIES:
        want = [(h.doc_id, round(h.score, 3)) for h in single.search(query, k=6)]
        assert [(h.doc_id, round(h.score, 3)) for h in distributed.search(query, k=6)] == want
    assert not work_dir_for(distributed.path).exists()
    collection = tmp_path / "collection.tsv"
    collection.write_text("".join(f"{d}\t{t}\n" for d, t in DOCS), encoding="utf-8")
    assert main(["-q", "index", str(tmp_path / "cli"), "--model", str(tiny_bert), "--collection", str(collection),
                 "--ray", "--ray-workers", "2", "--shards", "2"]) == 0
    assert ShardedRetriever.inspect(tmp_path / "cli")["shards"] == 2
    single.close()
    distributed.close()


def test_cli_refuses_ray_flags_that_do_not_apply(tmp_path, capsys):
    collection = tmp_path / "c.tsv"
    collection.write_text("d1\tsome text\n", encoding="utf-8")
    for argv, message in ((["--ray-workers", "2"], "--ray-workers needs --ray"),
                          (["--ray", "--kind", "bm25"], "has no model"),
                          (["--ray", "--ray-chunk-size", "0"], "chunk_size must be a positive")):
        with pytest.raises(SystemExit):
            main(["-q", "index", str(tmp_path / "x"), "--collection", str(collection), *argv])
        assert message in capsys.readouterr().err


def test_ray_needs_an_encoder(tmp_path):
    with pytest.raises(InputError, match="has no encoder"):
        build_on_ray(tmp_path / "x", None, DOCS, kind="bm25", ray=True)


def test_an_unreachable_address_is_one_line_at_once(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ClusterError) as refused:
        _check_reachable("127.0.0.1:1", 5.0)
    assert "127.0.0.1:1" in str(refused.value) and "\n" not in str(refused.value)
    with socket.socket() as listener:  # a port that answers, but not as a Ray head
        listener.bind(("0.0.0.0", 0))  # every address: Ray dials 127.0.0.1 as this node's own address
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ClusterError, match="no Ray head answered") as silent:
            _check_reachable(address, 1.0)
    assert "\n" not in str(silent.value)


def test_cli_with_an_unreachable_address_fails_in_one_line(tiny_bert, tmp_path):
    """In a fresh process (this one's Ray is already connected): exit 1 and one line, well before Ray's own retries
    (many minutes) would give up."""
    pytest.importorskip("ray")
    collection = tmp_path / "collection.tsv"
    collection.write_text("d1\tsome text\nd2\tother text\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "latelex.cli", "-q", "index", str(tmp_path / "idx"), "--model",
                             str(tiny_bert), "--collection", str(collection), "--ray", "127.0.0.1:1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("latelex: error")]
    assert len(errors) == 1 and "127.0.0.1:1" in errors[0] and "ray start --head" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "idx").exists()
