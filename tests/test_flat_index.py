"""FlatIndex: build, open, exact search against a brute-force ranking, and every refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latelex.errors import DuplicateIdError, IndexFormatError, InputError
from latelex.index.flat import FlatIndex
from latelex.types import Hit

DIM = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation, painful on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_corpus(n: int = 40, seed: int = 0, dim: int = DIM) -> tuple[list[str], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ids = [f"doc-{i}" for i in range(n)]
    lengths = torch.randint(1, 20, (n,), generator=gen).tolist()
    docs = [torch.nn.functional.normalize(torch.randn(length, dim, generator=gen), dim=-1) for length in lengths]
    return ids, docs


def make_queries(n: int = 5, seed: int = 1, dim: int = DIM) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (n,), generator=gen).tolist()
    return [torch.nn.functional.normalize(torch.randn(length, dim, generator=gen), dim=-1) for length in lengths]


def brute_force(queries, ids, docs, k, similarity="cosine") -> list[list[tuple[str, float]]]:
    """Rank with the float16-rounded vectors the index stores, float64 arithmetic, ties by position."""
    rankings = []
    for q in queries:
        q = q.double()
        scores = []
        for d in docs:
            d = d.half().double()
            sim = q @ d.T if similarity == "cosine" else -((q[:, None] - d[None]) ** 2).sum(-1)
            scores.append(float(sim.max(dim=1).values.sum()))
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:k]
        rankings.append([(ids[i], scores[i]) for i in order])
    return rankings


def assert_same_ranking(hits: list[list[Hit]], expected: list[list[tuple[str, float]]]) -> None:
    assert len(hits) == len(expected)
    for got, want in zip(hits, expected):
        assert [h.doc_id for h in got] == [doc_id for doc_id, _ in want]
        np.testing.assert_allclose([h.score for h in got], [s for _, s in want], rtol=1e-4, atol=1e-4)


@pytest.fixture
def corpus():
    return make_corpus()


@pytest.fixture
def built(tmp_path, corpus) -> FlatIndex:
    ids, docs = corpus
    return FlatIndex.build(tmp_path / "idx", ids, docs, encoder={"name": "tiny", "dim": DIM})


# --- build, open, search -------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["cosine", "l2"])
def test_build_open_search_matches_brute_force(tmp_path, corpus, similarity):
    ids, docs = corpus
    index = FlatIndex.build(tmp_path / "idx", ids, docs, similarity=similarity)
    queries = make_queries()
    expected = brute_force(queries, ids, docs, 7, similarity)
    assert_same_ranking(index.search(queries, k=7), expected)
    assert_same_ranking(index.search(queries, k=7, batch_size=2), expected)
    reopened = FlatIndex.open(tmp_path / "idx", verify=True)
    assert_same_ranking(reopened.search(queries, k=7), expected)
    assert reopened.similarity == similarity


def test_search_with_chunks_that_split_documents(built, corpus, monkeypatch):
    import latelex.scoring.maxsim as maxsim

    monkeypatch.setattr(maxsim, "PACKED_CHUNK_BYTES_PER_THREAD", 1000)  # a few rows per chunk
    ids, docs = corpus
    queries = make_queries()
    assert_same_ranking(built.search(queries, k=40), brute_force(queries, ids, docs, 40))


def test_properties_and_info(built, corpus, tmp_path):
    ids, docs = corpus
    tokens = sum(d.shape[0] for d in docs)
    assert len(built) == len(ids) and built.doc_ids == ids and built.dim == DIM
    assert built.encoder == {"name": "tiny", "dim": DIM}
    manifest = built.manifest
    assert manifest["kind"] == "flat" and manifest["format_version"] == 1
    assert manifest["counts"] == {"documents": len(ids), "token_vectors": tokens}
    info = built.info()
    on_disk = sum(f.stat().st_size for f in (tmp_path / "idx").iterdir())
    assert info["kind"] == "flat" and info["documents"] == len(ids) and info["token_vectors"] == tokens
    assert info["dim"] == DIM and info["bytes_on_disk"] == on_disk
    assert info["bytes_per_token_vector"] == pytest.approx(on_disk / tokens)
    vectors = np.load(tmp_path / "idx" / "vectors.npy", allow_pickle=False)
    assert vectors.dtype == np.float16 and vectors.shape == (tokens, DIM)
    np.testing.assert_array_equal(vectors, torch.cat(docs).half().numpy())
    assert FlatIndex.build(tmp_path / "plain", ids, docs).encoder is None


def test_k_larger_than_collection_and_ties(tmp_path):
    same = torch.nn.functional.normalize(torch.ones(2, DIM), dim=-1)
    ids = ["c", "a", "b"]
    index = FlatIndex.build(tmp_path / "idx", ids, [same, same, same])
    hits = index.search([same[:1]], k=10)[0]
    assert [h.doc_id for h in hits] == ["c", "a", "b"]  # equal scores: index order
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_subset_restricts_search(built, corpus, monkeypatch):
    ids, docs = corpus
    queries = make_queries()
    chosen = [ids[i] for i in (3, 4, 5, 17, 30, 31, 39, 0)]
    positions = sorted({ids.index(c) for c in chosen})
    expected = brute_force(queries, [ids[i] for i in positions], [docs[i] for i in positions], 4)
    assert_same_ranking(built.search(queries, k=4, subset=chosen + chosen[:2]), expected)
    # Tiny gather budget: the subset is scored in several groups, some contiguous, some copied.
    import latelex.index.flat as flat

    monkeypatch.setattr(flat, "GATHER_BYTES", 1)
    assert_same_ranking(built.search(queries, k=4, subset=chosen), expected)
    contiguous = ids[10:20]
    assert_same_ranking(
        built.search(queries, k=3, subset=contiguous), brute_force(queries, contiguous, docs[10:20], 3)
    )
    assert built.search(queries, k=3, subset=[]) == [[] for _ in queries]
    with pytest.raises(InputError, match="not in the index: 'nope'"):
        built.search(queries, subset=["doc-1", "nope"])


def test_generator_input_and_numpy_and_float16(tmp_path, corpus):
    ids, docs = corpus
    index = FlatIndex.build(tmp_path / "gen", (i for i in ids), (d.half().numpy() for d in docs))
    queries = make_queries()
    assert_same_ranking(index.search([q.numpy() for q in queries], k=5), brute_force(queries, ids, docs, 5))


def test_reopen_in_a_fresh_process(built, corpus):
    ids, docs = corpus
    queries = make_queries(2)
    code = (
        "import sys, json, torch\n"
        "from latelex.index.flat import FlatIndex\n"
        "torch.set_num_threads(1)\n"
        "index = FlatIndex.open(sys.argv[1], verify=True)\n"
        "qs = [torch.tensor(q) for q in json.loads(sys.argv[2])]\n"
        "print(json.dumps([[h.doc_id, h.score] for h in index.search(qs, k=3)[0]]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code, str(built.path), json.dumps([queries[0].tolist()])],
        capture_output=True, text=True, check=True, cwd=root,
    )
    got = json.loads(out.stdout)
    want = brute_force(queries[:1], ids, docs, 3)[0]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-4)


# --- on-disk safety ------------------------------------------------------------------------------------


def test_existing_path_needs_overwrite_and_stays_readable(built, tmp_path):
    ids, docs = make_corpus(5, seed=9)
    with pytest.raises(IndexFormatError, match="already exists"):
        FlatIndex.build(tmp_path / "idx", ids, docs)
    assert len(FlatIndex.open(tmp_path / "idx")) == 40
    # A failed rebuild with overwrite also leaves the old index in place.
    with pytest.raises(InputError):
        FlatIndex.build(tmp_path / "idx", ids, docs[:-1] + [torch.zeros(0, DIM)], overwrite=True)
    assert len(FlatIndex.open(tmp_path / "idx", verify=True)) == 40
    assert len(FlatIndex.build(tmp_path / "idx", ids, docs, overwrite=True)) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_overwrite_refuses_a_directory_that_is_not_an_index(tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    ids, docs = make_corpus(3)
    with pytest.raises(IndexFormatError, match="not an index"):
        FlatIndex.build(precious, ids, docs, overwrite=True)
    assert (precious / "todo.txt").read_text() == "keep me"


def test_truncated_vectors_fail_on_open(built):
    path = built.path / "vectors.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(IndexFormatError, match="truncated"):
        FlatIndex.open(built.path)


def test_corrupted_vectors_fail_verification(built, monkeypatch):
    monkeypatch.setattr("latelex.index.storage.SMALL_FILE_BYTES", 0)  # as if vectors.npy were large (> 4 MiB)
    path = built.path / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    FlatIndex.open(built.path)  # sizes still match
    with pytest.raises(IndexFormatError, match="checksum"):
        FlatIndex.open(built.path, verify=True)


def test_directory_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="manifest"):
        FlatIndex.open(tmp_path / "empty")
    with pytest.raises(IndexFormatError, match="not a directory"):
        FlatIndex.open(tmp_path / "missing")


def test_newer_format_version_says_upgrade(built):
    manifest_path = built.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="upgrade latelex"):
        FlatIndex.open(built.path)


def test_other_kind_is_refused(built):
    manifest_path = built.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["kind"] = "plaid"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="'plaid' index"):
        FlatIndex.open(built.path)


# --- bad input -----------------------------------------------------------------------------------------


def test_build_rejects_bad_input(tmp_path):
    ids, docs = make_corpus(4)
    path = tmp_path / "idx"
    cases = [
        (InputError, "empty corpus", [], []),
        (InputError, "only 3 embeddings", ids, docs[:3]),
        (InputError, "more embeddings", ids[:3], docs),
        (DuplicateIdError, "'doc-1' appears twice", ["doc-0", "doc-1", "doc-1", "doc-3"], docs),
        (InputError, "document 'doc-2' has no token vectors", ids, [docs[0], docs[1], torch.zeros(0, DIM), docs[3]]),
        (InputError, "'doc-1' has vectors of dimension 8", ids, [docs[0], torch.ones(2, 8), docs[2], docs[3]]),
        (InputError, "'doc-3' has NaN", ids, docs[:3] + [torch.full((2, DIM), float("nan"))]),
        (InputError, "'doc-0' has NaN", ids, [torch.full((1, DIM), float("inf"))] + docs[1:]),
        (InputError, "beyond float16", ids, [torch.full((1, DIM), 1e6)] + docs[1:]),
        (InputError, "tokens, dim", ids, [docs[0][0]] + docs[1:]),
        (InputError, "not a torch tensor", ids, [[1.0, 2.0]] + docs[1:]),
        (InputError, "position 1", ["a", 2, "c", "d"], docs),
        (InputError, "position 2 is empty", ["a", "b", "", "d"], docs),
        (InputError, "single string", "abcd", docs),
    ]
    for error, message, bad_ids, bad_docs in cases:
        with pytest.raises(error, match=message):
            FlatIndex.build(path, bad_ids, bad_docs)
        assert not path.exists()
    with pytest.raises(InputError, match="similarity"):
        FlatIndex.build(path, ids, docs, similarity="dot")
    with pytest.raises(InputError, match="JSON"):
        FlatIndex.build(path, ids, docs, encoder={"model": object()})
    assert not path.exists() and not list(tmp_path.iterdir())


def test_search_rejects_bad_input(built):
    q = make_queries(1)[0]
    with pytest.raises(InputError, match="query 1 has vectors of dimension 8, but the index has dimension 16"):
        built.search([q, torch.randn(3, 8)])
    with pytest.raises(InputError, match="k must be"):
        built.search([q], k=0)
    with pytest.raises(InputError, match="no token vectors"):
        built.search([torch.zeros(0, DIM)])
    with pytest.raises(InputError, match="NaN"):
        built.search([torch.full((2, DIM), float("nan"))])
    with pytest.raises(InputError, match="sequence"):
        built.search(q)
    assert built.search([]) == []
