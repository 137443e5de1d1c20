"""IvfPqIndex (ColBERT v1 end-to-end retrieval) held against exact MaxSim from FlatIndex, on clustered random vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

faiss = pytest.importorskip("faiss")

from latelex.errors import ConfigError, IndexFormatError, InputError  # noqa: E402
from latelex.index.flat import FlatIndex  # noqa: E402
from latelex.index.ivfpq import (  # noqa: E402
    FAISS_FILE,
    IvfPqConfig,
    IvfPqIndex,
    default_partitions,
    default_subquantizers,
)

DIM = 32


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads spin-wait; on a shared, busy machine one thread is ~10x faster for tiny data."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n_docs: int = 300, dim: int = DIM, clusters: int = 24, seed: int = 0):
    """Unit token vectors around ``clusters`` centres: (ids, per-document float32 matrices, the centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    docs = []
    for _ in range(n_docs):
        length = int(rng.integers(4, 17))
        # Each document draws its tokens from a few topics, as real passages do.
        topics = rng.choice(clusters, size=3, replace=False)
        x = centres[rng.choice(topics, size=length)] + 0.25 * rng.standard_normal((length, dim)).astype(np.float32)
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return [f"d{i}" for i in range(n_docs)], docs, centres


def queries_near(centres: np.ndarray, n: int, length: int = 8, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        topics = rng.choice(len(centres), size=2, replace=False)
        q = centres[rng.choice(topics, size=length)] + 0.3 * rng.standard_normal((length, centres.shape[1])).astype(np.float32)
        out.append((q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def corpus():
    return clustered()


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    ids, docs, _ = corpus
    root = tmp_path_factory.mktemp("ivfpq")
    ivf = IvfPqIndex.build(root / "ivf", ids, iter(docs), encoder={"family": "test"})
    flat = FlatIndex.build(root / "flat", ids, docs)
    return ivf, flat


def test_exhaustive_search_equals_exact_maxsim(built, corpus):
    ivf, flat = built
    queries = queries_near(corpus[2], 12)
    total = ivf.info()["token_vectors"]
    got = ivf.search(queries, k=15, nprobe=ivf.config.partitions, faiss_depth=total)
    want = flat.search(queries, k=15, batch_size=1)  # one query per pass, as the re-ranking scores them
    assert [[h.doc_id for h in r] for r in got] == [[h.doc_id for h in r] for r in want]
    assert [[h.score for h in r] for r in got] == [[h.score for h in r] for r in want]


def test_exhaustive_search_equals_exact_maxsim_under_l2(corpus, tmp_path):
    ids, docs, centres = corpus
    ivf = IvfPqIndex.build(tmp_path / "ivf", ids, docs, similarity="l2", config=IvfPqConfig(nbits=6))
    flat = FlatIndex.build(tmp_path / "flat", ids, docs, similarity="l2")
    queries = queries_near(centres, 6, seed=5)
    got = ivf.search(queries, k=10, nprobe=ivf.config.partitions, faiss_depth=ivf.info()["token_vectors"])
    want = flat.search(queries, k=10, batch_size=1)
    assert [[(h.doc_id, h.score) for h in r] for r in got] == [[(h.doc_id, h.score) for h in r] for r in want]


def test_default_settings_recall_exact_top10(built, corpus):
    ivf, flat = built
    queries = queries_near(corpus[2], 40, seed=2)
    got = ivf.search(queries, k=10)
    want = flat.search(queries, k=10, batch_size=1)
    recall = np.mean([len({h.doc_id for h in g} & {h.doc_id for h in w}) / 10 for g, w in zip(got, want)])
    assert recall >= 0.9
    # Candidate generation must actually prune at these settings: some query sees fewer documents than all.
    depth_one = ivf.search(queries[:5], k=len(ivf), nprobe=1, faiss_depth=1)
    assert any(len(r) < len(ivf) for r in depth_one)
    # ... and every re-ranked score is exact: it equals the flat index's score for that document.
    exact = {h.doc_id: h.score for h in flat.search(queries[:1], k=len(flat), batch_size=1)[0]}
    assert all(h.score == exact[h.doc_id] for h in got[0])


def test_few_candidates_give_fewer_hits(built, corpus):
    ivf, _ = built
    query = queries_near(corpus[2], 1, length=1, seed=3)
    hits = ivf.search(query, k=50, nprobe=1, faiss_depth=3)[0]
    assert 1 <= len(hits) <= 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_subset(built, corpus):
    ivf, flat = built
    ids = corpus[0]
    subset = ids[::7] + [ids[0]]  # a duplicate is harmless
    queries = queries_near(corpus[2], 5, seed=4)
    got = ivf.search(queries, k=8, subset=subset, nprobe=ivf.config.partitions, faiss_depth=ivf.info()["token_vectors"])
    want = flat.search(queries, k=8, subset=subset, batch_size=1)
    assert [[(h.doc_id, h.score) for h in r] for r in got] == [[(h.doc_id, h.score) for h in r] for r in want]
    allowed = set(subset)
    for hits in ivf.search(queries, k=8, subset=subset):  # default, approximate settings
        assert hits and {h.doc_id for h in hits} <= allowed
    assert ivf.search(queries, k=8, subset=[]) == [[] for _ in queries]
    with pytest.raises(InputError, match="not in the index"):
        ivf.search(queries, subset=["nope"])
    with pytest.raises(InputError, match="single string"):
        ivf.search(queries, subset="d1")


def test_reopen_and_describe(built, corpus):
    ivf, _ = built
    again = IvfPqIndex.open(ivf.path, verify=True)
    queries = queries_near(corpus[2], 4, seed=6)
    assert again.search(queries, k=10) == ivf.search(queries, k=10)
    assert again.doc_ids == corpus[0] and len(again) == 300 and again.dim == DIM
    assert again.encoder == {"family": "test"}
    manifest = json.loads((ivf.path / "manifest.json").read_text())
    assert manifest["kind"] == "ivfpq"
    assert manifest["config"]["partitions"] == again.config.partitions
    assert again.config.m == default_subquantizers(DIM) == 16
    info = again.info()
    assert info["kind"] == "ivfpq" and info["documents"] == 300
    assert info["token_vectors"] == sum(d.shape[0] for d in corpus[1])
    on_disk = sum(f.stat().st_size for f in ivf.path.iterdir())
    assert info["bytes_per_token_vector"] == pytest.approx(on_disk / info["token_vectors"])
    assert info["bytes_per_token_vector"] > 2 * DIM + info["faiss_bytes_per_token_vector"]
    assert info["config"]["nprobe"] == 32 and info["config"]["faiss_depth"] == 1024
    assert (ivf.path / FAISS_FILE).read_bytes()[:4] == b"IwPQ"  # a FAISS IVFPQ binary, not a pickle


def test_default_partitions_follow_colbert_v1_and_the_training_cap():
    assert default_partitions(1_000_000, 10**9) == 8192  # 2 ** ceil(log2(8 * 1000))
    assert default_partitions(1_000_000, 300_000) == 4096  # at most 300_000 / 40 cells, a power of two
    assert default_partitions(3000, 900) == 16
    assert default_partitions(10, 3) == 1
    assert default_subquantizers(128) == 16 and default_subquantizers(384) == 16 and default_subquantizers(30) == 15


def test_bad_configuration():
    with pytest.raises(ConfigError):
        IvfPqConfig(sample=0)
    with pytest.raises(ConfigError):
        IvfPqConfig(nprobe=0)
    with pytest.raises(ConfigError):
        IvfPqConfig(partitions=True)
    with pytest.raises(ConfigError):
        IvfPqConfig(nbits=17)


def test_bad_input(built, corpus, tmp_path):
    ivf, _ = built
    ids, docs, _ = corpus
    with pytest.raises(InputError, match="empty corpus"):
        IvfPqIndex.build(tmp_path / "empty", [], [])
    mixed = [docs[0], np.ones((3, DIM + 1), dtype=np.float32)]
    with pytest.raises(InputError, match="dimension"):
        IvfPqIndex.build(tmp_path / "mixed", ids[:2], mixed)
    with pytest.raises(InputError, match="divide"):
        IvfPqIndex.build(tmp_path / "m", ids, docs, config=IvfPqConfig(m=5))
    with pytest.raises(InputError, match="PQ centroids"):
        IvfPqIndex.build(tmp_path / "small", ids[:10], docs[:10])
    with pytest.raises(InputError, match="partitions"):
        IvfPqIndex.build(tmp_path / "cells", ids[:10], docs[:10], config=IvfPqConfig(partitions=64, nbits=2))
    for failed in ("empty", "mixed", "m", "small", "cells"):
        assert not (tmp_path / failed).exists()
    with pytest.raises(IndexFormatError, match="already exists"):
        IvfPqIndex.build(ivf.path, ids, docs)
    with pytest.raises(InputError, match="dimension"):
        ivf.search([np.ones((2, DIM + 1), dtype=np.float32)])
    with pytest.raises(InputError, match="one tensor"):
        ivf.search(torch.ones((2, 3, DIM)))
    with pytest.raises(InputError, match="k must"):
        ivf.search([docs[0]], k=0)
    with pytest.raises(InputError, match="nprobe"):
        ivf.search([docs[0]], nprobe=0)
    with pytest.raises(IndexFormatError, match="'flat'"):
        IvfPqIndex.open(built[1].path)


def test_truncated_or_corrupt_faiss_file(corpus, tmp_path):
    ids, docs, _ = corpus
    index = IvfPqIndex.build(tmp_path / "ivf", ids[:100], docs[:100], config=IvfPqConfig(nbits=4))
    path = index.path / FAISS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="truncated"):
        IvfPqIndex.open(index.path)
    corrupt = bytearray(data)
    corrupt[:4] = b"XXXX"  # same size, not a FAISS index any more
    path.write_bytes(bytes(corrupt))
    with pytest.raises(IndexFormatError, match="checksum"):
        IvfPqIndex.open(index.path, verify=True)
    with pytest.raises(IndexFormatError, match="FAISS"):
        IvfPqIndex.open(index.path)


def test_overwrite_replaces_an_index(corpus, tmp_path):
    ids, docs, _ = corpus
    first = IvfPqIndex.build(tmp_path / "ivf", ids[:100], docs[:100], config=IvfPqConfig(nbits=4))
    second = IvfPqIndex.build(first.path, ids[:120], docs[:120], config=IvfPqConfig(nbits=4), overwrite=True)
    assert len(IvfPqIndex.open(second.path)) == 120
