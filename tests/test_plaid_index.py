"""PlaidIndex on clustered random vectors: parity with exact MaxSim, updates, crash recovery, refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from latelex.errors import DuplicateIdError, IndexFormatError, InputError
from latelex.index.plaid import PlaidConfig, PlaidIndex
from latelex.index.plaid import build as plaid_build
from latelex.index.plaid.search import PAD_TOKENS
from latelex.index.storage import MANIFEST

DIM = 16
TINY = {"name": "tiny", "dim": DIM}  # the encoder spec the test indexes record
CONFIG = PlaidConfig(nbits=2, chunk_size=50, n_centroids=32)
GENEROUS = dict(ncells=10**6, centroid_score_threshold=-1e9, ndocs=10**6)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_docs(n: int, seed: int = 0, n_clusters: int = 24, prefix: str = "doc", centers_seed: int = 99,
              dim: int = DIM) -> tuple[list[str], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(centers_seed).standard_normal((n_clusters, dim))
    docs = []
    for _ in range(n):
        length = int(rng.integers(2, 16))
        x = centers[rng.integers(0, n_clusters, length)] + 0.35 * rng.standard_normal((length, dim))
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return [f"{prefix}-{i}" for i in range(n)], docs


def make_queries(n: int = 8, seed: int = 7) -> list[torch.Tensor]:
    _, docs = make_docs(n, seed=seed)
    return [torch.from_numpy(d[:6]) for d in docs]


def brute_force(index: PlaidIndex, queries, k: int, ids: list[str] | None = None) -> list[list[tuple[str, float]]]:
    """Exact MaxSim over the index's own decompressed vectors, float64, ties by index position."""
    ids = index.doc_ids if ids is None else ids
    vectors = [index.decompressed(d).astype(np.float64) for d in ids]
    out = []
    for q in queries:
        q = q.numpy().astype(np.float64)
        scores = [float((q @ v.T).max(axis=1).sum()) for v in vectors]
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:k]
        out.append([(ids[i], scores[i]) for i in order])
    return out


def assert_hits(hits, expected):
    assert [[h.doc_id for h in row] for row in hits] == [[d for d, _ in row] for row in expected]
    for row, want in zip(hits, expected):
        np.testing.assert_allclose([h.score for h in row], [s for _, s in want], rtol=1e-4, atol=1e-4)


def ranking(hits):
    return [[(h.doc_id, round(h.score, 4)) for h in row] for row in hits]


@pytest.fixture(scope="module")
def corpus():
    return make_docs(160)


@pytest.fixture
def built(tmp_path, corpus) -> PlaidIndex:
    ids, docs = corpus
    return PlaidIndex.build(tmp_path / "idx", ids, docs, config=CONFIG, encoder=TINY)


# --- build and search ----------------------------------------------------------------------------------


def test_generous_search_equals_exact_maxsim_over_decompressed_vectors(built):
    queries = make_queries()
    assert_hits(built.search(queries, k=10, **GENEROUS), brute_force(built, queries, 10))


def test_query_lengths_around_the_padding_width_score_exactly(built):
    # The kernels pad queries to a multiple of search.PAD_TOKENS; lengths on both sides of it must score the same.
    _, docs = make_docs(12, seed=11)
    rows = np.concatenate(docs)
    lengths = [1, PAD_TOKENS - 1, PAD_TOKENS, PAD_TOKENS + 1, 2 * PAD_TOKENS + 1]
    queries = [torch.from_numpy(rows[:n].copy()) for n in lengths]
    assert_hits(built.search(queries, k=10, **GENEROUS), brute_force(built, queries, 10))


@pytest.mark.parametrize("dim,nbits", [(40, 2), (64, 2), (48, 4)])
def test_residual_widths_with_and_without_a_remainder_score_exactly(tmp_path, dim, nbits):
    # The exact stage sums one query-table row per residual byte, whatever the width: 10, 16 and 24 bytes per
    # vector, at 2 and 4 bits.
    ids, docs = make_docs(40, seed=dim, n_clusters=12, dim=dim)
    index = PlaidIndex.build(tmp_path / "w", ids, docs, config=PlaidConfig(nbits=nbits, n_centroids=8))
    queries = [torch.from_numpy(docs[i][:5].copy()) for i in (0, 7, 19)]
    assert_hits(index.search(queries, k=10, **GENEROUS), brute_force(index, queries, 10))


@pytest.mark.parametrize("block", [1, 40, 1 << 18], ids=["a document per block", "a few per block", "one block"])
def test_the_exact_stage_scores_the_same_in_blocks_of_lookups(built, block, monkeypatch):
    # The exact stage gathers residual lookups in blocks of documents; block edges must not change a score.
    from latelex.index.plaid import search as S

    monkeypatch.setattr(S, "LOOKUP_BLOCK", block)
    queries = make_queries()
    assert_hits(built.search(queries, k=10, **GENEROUS), brute_force(built, queries, 10))


def test_the_pruned_pass_scores_the_same_through_inverted_lists_and_token_codes(built):
    # pruned_interaction reads the kept centroids' inverted lists when they are shorter than the candidates' token
    # codes; both reads must give exactly the scores of the token loop, whichever it picks.
    from latelex.index.plaid import search as S

    data = built._search_data()
    n = len(built)
    paths = set()
    for threshold in (-1e9, 0.2, 0.6, 0.9, 1e9):
        for Q in make_queries():
            scores = S.centroid_scores(data, S.pad_query(Q), Q.shape[0], threshold)
            for docs in (np.arange(n), np.arange(1, n, 3), np.array([5, 80, 159])):
                args = (scores.cells, scores.cell_scale, Q.shape[0])
                by_codes = S.centroid_interaction(*args, data.codes, data.doc_offsets, docs, scores.keep)
                by_lists = S.interaction_by_lists(*args, scores.keep, data.ivf_offsets, data.ivf_docs, docs, n)
                picked = S.pruned_interaction(*args, data.codes, data.doc_offsets, docs, scores.keep, data.ivf_offsets,
                                              data.ivf_docs)
                np.testing.assert_array_equal(by_lists, by_codes)
                np.testing.assert_array_equal(picked, by_codes)
                paths.add(S.lists_are_shorter(data.doc_offsets, docs, scores.keep, data.ivf_offsets))
    assert paths == {True, False}  # both reads were picked


@pytest.mark.parametrize("path", ["float32", "int8", "u8s8"])
def test_every_centroid_score_path_returns_float32_maxsim(built, path, monkeypatch):
    # Where an integer product measures faster, candidates are ranked on 8-bit centroid scores; the exact stage
    # must still add residuals to float32 ones. Every path is forced here, whatever this CPU has.
    monkeypatch.setenv("LATELEX_PLAID_CENTROIDS", path)
    data = built._search_data()
    assert (data.centroids_i8 is not None, data.centroids_u8 is not None) == (path == "int8", path == "u8s8")
    _, docs = make_docs(12, seed=11)
    rows = np.concatenate(docs)
    queries = make_queries() + [torch.from_numpy(rows[:n].copy()) for n in (1, PAD_TOKENS + 1)]
    exact = brute_force(built, queries, 10)
    assert_hits(built.search(queries, k=10, **GENEROUS), exact)
    for got, want in zip(built.search(queries, k=10), exact):  # default settings: the same scores where found
        want = dict(want)
        for h in got:
            if h.doc_id in want:
                assert h.score == pytest.approx(want[h.doc_id], abs=1e-4)


def test_default_search_finds_most_of_the_exact_top_k(built):
    queries = make_queries(20)
    exact = brute_force(built, queries, 10)
    got = built.search(queries, k=10)
    recall = np.mean([len({h.doc_id for h in g} & {d for d, _ in e}) / 10 for g, e in zip(got, exact)])
    assert recall >= 0.8
    for row in got:
        assert len(row) == 10 and all(a.score >= b.score for a, b in zip(row, row[1:]))


def test_decompressed_vectors_are_the_codec_round_trip(built, corpus):
    ids, docs = corpus
    codec = built.codec
    x = docs[5].astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(built.decompressed(ids[5]), codec.decompress(*codec.compress(x)), atol=1e-6)


def test_generator_and_list_give_the_same_index(tmp_path, corpus, built):
    ids, docs = corpus
    other = PlaidIndex.build(tmp_path / "gen", ids, (torch.from_numpy(d) for d in docs), config=CONFIG)
    queries = make_queries()
    assert ranking(other.search(queries, k=10)) == ranking(built.search(queries, k=10))
    np.testing.assert_array_equal(np.load(other.path / "centroids.npy"), np.load(built.path / "centroids.npy"))
    assert not list(tmp_path.glob(".*plaid-build"))


def test_reopen_and_info(built):
    again = PlaidIndex.open(built.path, verify=True)
    info = again.info()
    assert info["kind"] == "plaid" and info["documents"] == 160 and info["dim"] == DIM and info["nbits"] == 2
    assert info["token_vectors"] == sum(d.shape[0] for d in make_docs(160)[1])
    assert info["encoder"] == {"name": "tiny", "dim": DIM} and info["config"]["chunk_size"] == 50
    assert info["chunks"] == 4 and info["n_centroids"] == 32 and info["drift"] == 1.0
    total = sum(f.stat().st_size for f in built.path.iterdir())
    assert info["bytes_per_token_vector"] == pytest.approx(total / info["token_vectors"])
    assert again.doc_ids == built.doc_ids and len(again) == 160


@pytest.mark.parametrize("path", ["float32", "int8", "u8s8"])
def test_threads_do_not_change_results(built, path, monkeypatch):
    monkeypatch.setenv("LATELEX_PLAID_CENTROIDS", path)  # the integer kernels run from several threads at once too
    queries = make_queries(12)
    assert ranking(built.search(queries, k=5, threads=3)) == ranking(built.search(queries, k=5, threads=1))


def test_subset(built, corpus):
    ids, _ = corpus
    queries = make_queries(4)
    small = ids[10:30:3]
    hits = built.search(queries, k=5, subset=small)
    assert_hits(hits, brute_force(built, queries, 5, ids=small))
    large = ids[::2]  # more than ndocs: goes through the inverted lists, filtered
    for row in built.search(queries, k=5, subset=large, ndocs=8):
        assert {h.doc_id for h in row} <= set(large)
    assert built.search(queries, k=5, subset=[]) == [[] for _ in queries]
    with pytest.raises(InputError, match="not in the index"):
        built.search(queries, k=5, subset=["nope"])


def test_search_refuses_bad_queries_and_settings(built):
    with pytest.raises(InputError, match="dimension"):
        built.search([torch.zeros(3, DIM + 1)])
    with pytest.raises(InputError, match="one tensor"):
        built.search(torch.zeros(2, 3, DIM))
    with pytest.raises(InputError, match="k must"):
        built.search(make_queries(1), k=0)
    with pytest.raises(InputError, match="ncells"):
        built.search(make_queries(1), ncells=0)


# --- incremental updates -------------------------------------------------------------------------------


def test_add_then_search_equals_building_from_scratch_with_the_same_codec(tmp_path):
    ids, docs = make_docs(200, seed=3)
    grown = PlaidIndex.build(tmp_path / "grown", ids[:120], docs[:120], config=CONFIG)
    grown.add(ids[120:], docs[120:], encoder=grown.encoder)
    assert len(grown) == 200 and grown.doc_ids == ids
    # From scratch, with the centroids and buckets the grown index uses (what compression allows to match).
    plaid_build.build_index(tmp_path / "scratch", ids, docs, config=CONFIG, encoder=None, overwrite=False,
                            show_progress=False, codec=grown.codec)
    scratch = PlaidIndex.open(tmp_path / "scratch")
    queries = make_queries(10, seed=11)
    for settings in ({}, GENEROUS):
        assert ranking(grown.search(queries, k=10, **settings)) == ranking(scratch.search(queries, k=10, **settings))
    assert_hits(grown.search(queries, k=10, **GENEROUS), brute_force(grown, queries, 10))
    reopened = PlaidIndex.open(grown.path, verify=True)
    assert ranking(reopened.search(queries, k=10)) == ranking(grown.search(queries, k=10))


def test_add_then_search_is_close_to_a_retrained_build(tmp_path):
    ids, docs = make_docs(200, seed=3)
    grown = PlaidIndex.build(tmp_path / "grown", ids[:120], docs[:120], config=CONFIG)
    grown.add(ids[120:], docs[120:], encoder=grown.encoder)
    fresh = PlaidIndex.build(tmp_path / "fresh", ids, docs, config=CONFIG)
    queries = make_queries(20, seed=11)
    a = grown.search(queries, k=10, **GENEROUS)
    b = fresh.search(queries, k=10, **GENEROUS)
    overlap = np.mean([len({h.doc_id for h in x} & {h.doc_id for h in y}) / 10 for x, y in zip(a, b)])
    assert overlap >= 0.8


def test_delete_hides_documents_and_persists(built, corpus):
    ids, docs = corpus
    queries = make_queries()
    top = [row[0].doc_id for row in built.search(queries, k=3)]
    gone = sorted(set(top))
    built.delete(gone)
    assert len(built) == 160 - len(gone)
    for row in built.search(queries, k=10, **GENEROUS):
        assert not {h.doc_id for h in row} & set(gone)
    reopened = PlaidIndex.open(built.path, verify=True)
    assert reopened.doc_ids == [d for d in ids if d not in gone]
    assert_hits(reopened.search(queries, k=10, **GENEROUS), brute_force(reopened, queries, 10))
    assert reopened.info()["deleted_documents"] == len(gone)
    # A deleted id can come back.
    reopened.add([gone[0]], [docs[ids.index(gone[0])]], encoder=TINY)
    assert gone[0] in reopened.doc_ids
    with pytest.raises(InputError, match="not in the index"):
        reopened.delete(["nope"])


def test_rebuild_drops_deleted_documents_and_retrains(built, corpus):
    ids, docs = corpus
    built.delete(ids[:40])
    built.add([f"new-{i}" for i in range(30)], make_docs(30, seed=5)[1], encoder=TINY)
    live = built.doc_ids
    fresh_vectors = [docs[ids.index(d)] if d in ids else make_docs(30, seed=5)[1][int(d.split("-")[1])] for d in live]
    built.rebuild(fresh_vectors)
    assert built.doc_ids == live and built.info()["deleted_documents"] == 0 and built.info()["chunks"] == 3
    queries = make_queries()
    assert_hits(built.search(queries, k=10, **GENEROUS), brute_force(built, queries, 10))
    built.rebuild()  # from its own decompressed vectors
    assert built.doc_ids == live


def test_drift_shows_when_added_documents_come_from_elsewhere(built):
    built.add(*make_docs(20, seed=4, prefix="same"), encoder=TINY)
    assert built.info()["drift"] < 1.3
    built.add(*make_docs(40, seed=4, prefix="other", centers_seed=123), encoder=TINY)
    assert built.info()["drift"] > 1.5


def test_info_tells_when_the_collection_has_outgrown_its_codec(tmp_path):
    from latelex.index.plaid.config import colbert_n_centroids

    ids, docs = make_docs(60, seed=5)
    index = PlaidIndex.build(tmp_path / "grow", ids, docs, config=PlaidConfig(nbits=2), encoder=TINY)
    trained = index.info()["n_centroids"]
    assert index.info()["fresh_n_centroids"] <= trained  # as built: sized for itself
    more_ids, more = make_docs(400, seed=6, prefix="more")
    index.add(more_ids, more, encoder=TINY)
    info = index.info()
    assert info["n_centroids"] == trained  # an add keeps the codec ...
    assert info["fresh_n_centroids"] == colbert_n_centroids(info["token_vectors"]) > trained  # ... a rebuild would grow it
    index.rebuild()
    assert index.info()["n_centroids"] == index.info()["fresh_n_centroids"]
    assert PlaidIndex.build(tmp_path / "fixed", ids, docs, config=CONFIG, encoder=TINY).info()["fresh_n_centroids"] == 32


def test_an_emptied_index_gives_no_hits_as_every_kind_does(built, corpus):
    built.delete(corpus[0])
    assert built.search(make_queries(2)) == [[], []]
    assert PlaidIndex.open(built.path).search(make_queries(1), k=5) == [[]]


def test_add_refuses_other_dims_encoders_and_duplicates(built, corpus):
    with pytest.raises(InputError, match="dimension"):
        built.add(["x"], [np.ones((3, DIM * 2), dtype=np.float32)], encoder=TINY)
    with pytest.raises(InputError, match="different encoder"):
        built.add(["x"], [np.ones((3, DIM), dtype=np.float32)], encoder={"name": "other"})
    with pytest.raises(DuplicateIdError):
        built.add([corpus[0][0]], [corpus[1][0]], encoder=TINY)
    with pytest.raises(InputError, match="pass encoder="):
        built.add(["x"], [np.ones((3, DIM), dtype=np.float32)])
    with pytest.raises(InputError, match="embeddings"):
        built.add(["x", "y"], [corpus[1][0]], encoder=TINY)
    assert len(PlaidIndex.open(built.path, verify=True)) == 160


def test_a_crash_during_add_leaves_the_old_index(built, corpus, monkeypatch):
    import latelex.index.plaid.index as plaid_index

    queries = make_queries()
    before = ranking(built.search(queries, k=10))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plaid_index, "commit_manifest", boom)
    with pytest.raises(OSError):
        built.add(["x"], [np.ones((3, DIM), dtype=np.float32)], encoder=TINY)
    monkeypatch.undo()
    reopened = PlaidIndex.open(built.path, verify=True)
    assert len(reopened) == 160 and ranking(reopened.search(queries, k=10)) == before
    assert list(built.path.glob("chunk-00004.*"))  # the orphaned new chunk ...
    reopened.add(["x"], [np.ones((3, DIM), dtype=np.float32)], encoder=TINY)
    assert len(reopened) == 161  # ... was replaced by a complete one
    named = {e["file"] for e in reopened.manifest["arrays"].values()}
    assert {p.name for p in built.path.iterdir()} == named | {MANIFEST}


# --- crash, resume and refusals ------------------------------------------------------------------------


def test_a_crashed_build_resumes_after_the_last_finished_chunk(tmp_path, corpus, built, monkeypatch):
    ids, docs = corpus
    real = plaid_build.write_chunk
    calls = []

    def crash_after_two(directory, name, arrays, chunk_ids):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(name)
        return real(directory, name, arrays, chunk_ids)

    monkeypatch.setattr(plaid_build, "write_chunk", crash_after_two)
    target = tmp_path / "crashy"
    with pytest.raises(KeyboardInterrupt):
        PlaidIndex.build(target, ids, (d for d in docs), config=CONFIG)
    assert not target.exists()
    with pytest.raises(IndexFormatError, match="manifest"):
        PlaidIndex.open(plaid_build.staging_path(target))  # the half-built directory is not an index

    resumed_calls = []

    def count(directory, name, arrays, chunk_ids):
        resumed_calls.append(name)
        return real(directory, name, arrays, chunk_ids)

    monkeypatch.setattr(plaid_build, "write_chunk", count)
    index = PlaidIndex.build(target, ids, (d for d in docs), config=CONFIG)
    assert resumed_calls == ["chunk-00002", "chunk-00003"]
    queries = make_queries()
    assert ranking(index.search(queries, k=10, **GENEROUS)) == ranking(built.search(queries, k=10, **GENEROUS))
    assert not plaid_build.staging_path(target).exists()


def test_a_different_build_does_not_resume_a_stale_one(tmp_path, corpus, monkeypatch):
    ids, docs = corpus
    real = plaid_build.write_chunk

    def crash(*args):
        raise RuntimeError("crash")

    monkeypatch.setattr(plaid_build, "write_chunk", crash)
    with pytest.raises(RuntimeError):
        PlaidIndex.build(tmp_path / "x", ids, docs, config=CONFIG)
    monkeypatch.setattr(plaid_build, "write_chunk", real)
    index = PlaidIndex.build(tmp_path / "x", ids[:100], docs[:100], config=CONFIG)
    assert len(index) == 100


def test_truncated_file_is_refused(built):
    path = built.path / "chunk-00001.residuals.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(IndexFormatError, match="truncated; rebuild"):
        PlaidIndex.open(built.path)


def test_corrupt_file_is_caught_on_open_or_at_first_read(built, monkeypatch):
    monkeypatch.setattr("latelex.index.storage.SMALL_FILE_BYTES", 0)  # as if every array were large (> 4 MiB)
    path = built.path / "chunk-00000.codes.npy"
    original = path.read_bytes()
    raw = bytearray(original)
    raw[-2] ^= 1  # low bit of the last code: still a valid centroid id
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):  # the codes are read whole on open: hashed as read
        PlaidIndex.open(built.path)
    path.write_bytes(original)
    path = built.path / "chunk-00000.residuals.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    damaged = PlaidIndex.open(built.path)  # the residuals are memory-mapped: sizes match, not hashed yet
    with pytest.raises(IndexFormatError, match="checksum"):
        damaged.decompressed(damaged.doc_ids[0])
    with pytest.raises(IndexFormatError, match="checksum"):
        PlaidIndex.open(built.path, verify=True)


def test_newer_format_version_is_refused(built):
    manifest = json.loads((built.path / MANIFEST).read_text())
    manifest["format_version"] = 99
    (built.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="upgrade latelex"):
        PlaidIndex.open(built.path)


def test_foreign_and_flat_directories_are_refused(tmp_path, corpus):
    from latelex.index.flat import FlatIndex

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    with pytest.raises(IndexFormatError, match="not a latelex index"):
        PlaidIndex.open(tmp_path / "foreign")
    ids, docs = corpus
    FlatIndex.build(tmp_path / "flat", ids[:5], docs[:5])
    with pytest.raises(IndexFormatError, match="'flat' index"):
        PlaidIndex.open(tmp_path / "flat")
    with pytest.raises(IndexFormatError, match="non-empty directory"):
        PlaidIndex.build(tmp_path / "foreign", ids, docs, config=CONFIG, overwrite=True)
    assert (tmp_path / "foreign" / "notes.txt").exists()


def test_build_refuses_bad_input(tmp_path, corpus, built):
    ids, docs = corpus
    with pytest.raises(InputError, match="empty corpus"):
        PlaidIndex.build(tmp_path / "a", [], [])
    with pytest.raises(InputError, match="embeddings"):
        PlaidIndex.build(tmp_path / "a", ids, docs[:-1], config=CONFIG)
    with pytest.raises(InputError, match="dimension"):
        PlaidIndex.build(tmp_path / "a", ids[:2], [docs[0], np.ones((2, DIM + 8), np.float32)],
                         config=PlaidConfig(n_centroids=2))
    with pytest.raises(DuplicateIdError):
        PlaidIndex.build(tmp_path / "a", ["a", "a"], docs[:2])
    with pytest.raises(IndexFormatError, match="already exists"):
        PlaidIndex.build(built.path, ids, docs, config=CONFIG)
    bad = [d.copy() for d in docs]
    bad[3][0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        PlaidIndex.build(tmp_path / "b", ids, bad, config=CONFIG)


def test_overwrite_replaces_an_index_atomically(tmp_path, corpus, built):
    ids, docs = corpus
    again = PlaidIndex.build(built.path, ids[:60], docs[:60], config=CONFIG, overwrite=True)
    assert len(again) == 60 and len(PlaidIndex.open(built.path)) == 60
    shutil.rmtree(built.path)


def test_decompressed_vectors_are_unit_length_and_format_1_indexes_still_search(built):
    queries = make_queries()
    assert built.codec.unit_norm
    np.testing.assert_allclose(np.linalg.norm(built.decompressed(built.doc_ids[3]), axis=1), 1.0, atol=2e-3)
    # A format-1 index (written before unit-length decoding) has no "unit_norm": it decodes as it always did.
    manifest = json.loads((built.path / MANIFEST).read_text())
    manifest["format_version"] = 1
    del manifest["unit_norm"]
    for name in [n for n in manifest["arrays"] if n.endswith(".scales")]:
        del manifest["arrays"][name]
        (built.path / f"{name}.npy").unlink()
    (built.path / MANIFEST).write_text(json.dumps(manifest))
    old = PlaidIndex.open(built.path)
    assert not old.codec.unit_norm
    lengths = np.linalg.norm(old.decompressed(old.doc_ids[3]), axis=1)
    assert np.abs(lengths - 1.0).max() > 1e-3
    assert_hits(old.search(queries, k=10, **GENEROUS), brute_force(old, queries, 10))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_query_with_non_finite_values_is_refused(built, value):
    query = make_queries()[0].numpy().copy()
    query[-1, 2] = value
    for given in (query, torch.from_numpy(query)):
        with pytest.raises(InputError, match="query 1 has NaN or infinite values"):
            built.search([make_queries()[0], given], k=3)
