"""Sharded indexes without Ray: the merged top k of the exact kinds equals one index's (BM25 through the whole
collection's statistics), updates go to the owning shard, explain, the manifest checks, a given partition, the CLI."""

from __future__ import annotations

import hashlib
import json
import random
import shutil

import numpy as np
import pytest

from latelex import ColBERT, Retriever, ShardedRetriever, Splade
from latelex.cli import main
from latelex.errors import DuplicateIdError, IndexFormatError, InputError
from latelex.index import registry
from latelex.index.bm25 import BM25Config, BM25Index, CollectionStatistics, collection_statistics
from latelex.search.shard_handle import LocalShard, ShardHandle
from latelex.search.shard_manifest import SHARDS_FILE, hash_shard
from latelex.types import Document
from tiny_models import WORDS

VOCAB = [w for w in WORDS if len(w) > 2]
QUERIES = ["cancer risk study", "protein gene cells", "apple banana fruit healthy", "search query document retrieval",
           "vaccine dose trial", "blood heart brain", "learned sparse index", "red green blue"]
EXACT = ["flat", "sparse", "inverted", "bm25"]
SHARDS = 3


def make_docs(n: int, seed: int = 0, start: int = 0) -> list[Document]:
    rng = random.Random(seed)
    return [Document(f"d{i}", " ".join(rng.choice(VOCAB) for _ in range(rng.randint(4, 24))),
                     {"n": i, "even": i % 2 == 0, "tag": rng.choice(["x", "y", "z"])})
            for i in range(start, start + n)]


DOCS = make_docs(60)


@pytest.fixture(scope="module")
def colbert(tiny_bert):
    return ColBERT.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def splade(tiny_mlm):
    return Splade.from_pretrained(tiny_mlm)


def encoder_for(kind, colbert, splade):
    return {"colbert": colbert, "splade": splade, "text": None}[registry.kind(kind).family]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, colbert, splade):
    """kind -> (one Retriever, a ShardedRetriever of 3 shards) over DOCS, built once per module (read only)."""
    root = tmp_path_factory.mktemp("sharded")
    built = {}

    def get(kind):
        if kind not in built:
            encoder = encoder_for(kind, colbert, splade)
            single = Retriever.build(root / f"{kind}-single", encoder, DOCS, kind=kind)
            sharded = ShardedRetriever.build(root / f"{kind}-sharded", encoder, DOCS, kind=kind, shards=SHARDS)
            built[kind] = (single, sharded)
        return built[kind]

    yield get
    for single, sharded in built.values():
        single.close()
        sharded.close()


def assert_same_top_k(got, want, reference, tol=1e-5):
    """``got`` (sharded) and ``want`` (one index) list the same hits with the same scores, up to the order of equal
    scores; ``reference``: the one index's full ranking, which the group of equal scores cut at k comes from."""
    assert len(got) == len(want)
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=tol)
    if not got:
        return
    last = got[-1].score
    inner = lambda hits: {h.doc_id for h in hits if abs(h.score - last) > tol}  # noqa: E731
    assert inner(got) == inner(want)
    tied = {h.doc_id for h in reference if abs(h.score - last) <= tol}
    assert {h.doc_id for h in got if abs(h.score - last) <= tol} <= tied


def assert_rankings_agree(sharded, single, k=10, **options):
    got = sharded.search(QUERIES, k=k, **options)
    want = single.search(QUERIES, k=k, **options)
    full = single.search(QUERIES, k=len(DOCS) + 20, **options)
    assert any(want), "the queries must match something"
    for g, w, f in zip(got, want, full):
        assert_same_top_k(g, w, f)
    return got


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", EXACT)
def test_sharded_top_k_equals_one_index(kind, pairs):
    single, sharded = pairs(kind)
    sizes = sharded.info()["shard_documents"]
    assert len(sizes) == SHARDS and all(s > 0 for s in sizes) and sum(sizes) == len(sharded) == len(DOCS)
    options = {"mode": "exact"} if kind == "inverted" else {}
    for k in (1, 5, 10):
        got = assert_rankings_agree(sharded, single, k=k, **options)
        assert all(len(hits) == k for hits in got if kind != "bm25")
    # the hits come from several shards, with their texts and metadata
    hits = sharded.search(QUERIES[0], k=20)
    assert {hash_shard(h.doc_id, SHARDS) for h in hits} == set(range(SHARDS))
    by_id = {d.id: d for d in DOCS}
    assert all(h.text == by_id[h.doc_id].text and h.metadata == by_id[h.doc_id].metadata for h in hits)


@pytest.mark.parametrize("kind", EXACT)
def test_where_and_subset_agree_with_one_index(kind, pairs):
    single, sharded = pairs(kind)
    got = assert_rankings_agree(sharded, single, k=5, where="even = true and tag != 'z'")
    assert all(h.metadata["even"] and h.metadata["tag"] != "z" for hits in got for h in hits)
    subset = ["d1", "d4", "d9", "d16", "d25", "d36", "d49", "d50", "d57"]
    assert len({hash_shard(d, SHARDS) for d in subset}) == SHARDS
    got = assert_rankings_agree(sharded, single, k=4, subset=subset)
    assert all(h.doc_id in subset for hits in got for h in hits)
    got = assert_rankings_agree(sharded, single, k=3, subset=subset, where={"even": True})
    assert all(h.doc_id in {"d4", "d16", "d36", "d50"} for hits in got for h in hits)
    assert sharded.search(QUERIES, k=3, subset=[]) == [[] for _ in QUERIES]
    with pytest.raises(InputError, match=r"subset names 2 document id\(s\) not in the index: 'nope', 'gone'"):
        sharded.search(QUERIES, k=3, subset=["d1", "nope", "gone"])
    with pytest.raises(InputError, match=r"subset names 2 document id\(s\) not in the index: 'nope', 'gone'"):
        single.search(QUERIES, k=3, subset=["d1", "nope", "gone"])


def test_search_shapes_options_and_one_encoding(pairs, colbert, monkeypatch):
    single, sharded = pairs("flat")
    one = sharded.search(QUERIES[1], k=3)
    assert isinstance(one, list) and all(h.doc_id for h in one)
    assert [h.doc_id for h in one] == [h.doc_id for h in sharded.search([QUERIES[1]], k=3)[0]]
    assert sharded.search([], k=3) == []
    run = sharded.search_queries({"a": QUERIES[0], "b": QUERIES[1]}, k=4)
    assert set(run) == {"a", "b"} and all(h.text is None for h in run["a"])
    with pytest.raises(InputError, match="takes no search option 'ncells'"):
        sharded.search(QUERIES, k=3, ncells=4)
    with pytest.raises(InputError, match="k must be a positive integer"):
        sharded.search(QUERIES, k=0)
    calls = []
    original = colbert.encode_queries
    monkeypatch.setattr(colbert, "encode_queries", lambda *a, **kw: calls.append(a) or original(*a, **kw))
    sharded.search(QUERIES, k=3)
    assert len(calls) == 1  # encoded once, sent to every shard encoded
    encoded = sharded.encode_queries(QUERIES[:2])
    assert len(calls) == 2
    assert sharded.search(QUERIES[:2], k=3, encoded=encoded) == sharded.search(QUERIES[:2], k=3)


def test_every_call_goes_through_the_shard_handles(pairs, tmp_path):
    _, built = pairs("bm25")
    seen = []

    class Recording(LocalShard):
        def read(self, method, /, *args, **kwargs):
            seen.append(("read", self.number, method, kwargs.get("encoded") is not None))
            return super().read(method, *args, **kwargs)

        def write(self, method, /, *args, **kwargs):
            seen.append(("write", self.number, method, False))
            return super().write(method, *args, **kwargs)

    def opener(number, path, encoder):
        return Recording.open(number, path, encoder)

    copy = tmp_path / "copy"
    shutil.copytree(built.path, copy)
    with ShardedRetriever.open(copy, shard_opener=opener, max_workers=2) as sharded:
        assert all(isinstance(s, Recording) and isinstance(s, ShardHandle) for s in sharded.shards)
        assert [s.number for s in sharded.shards] == list(range(SHARDS))
        sharded.search(QUERIES[:2], k=3)
        assert sorted(n for kind, n, m, enc in seen if m == "search" and enc) == list(range(SHARDS))
        sharded.delete(["d1"])
        assert ("write", hash_shard("d1", SHARDS), "delete", False) in seen
        with pytest.raises(InputError, match="does not read with 'add'"):
            sharded.shards[0].read("add", [])


# ---------------------------------------------------------------------- BM25's collection statistics


@pytest.mark.parametrize("method", ["lucene", "bm25+"])
def test_bm25_with_its_own_statistics_is_byte_identical(method, tmp_path):
    texts = [d.text for d in DOCS] + ["the of and"]  # a text of stopwords only: a document of length 0
    ids = [f"t{i}" for i in range(len(texts))]
    config = BM25Config(method=method)
    plain = BM25Index.build(tmp_path / "plain", ids, texts, config=config)
    stats = collection_statistics(texts, config)
    assert stats.documents == len(texts) and stats.tokens > 0 and "cancer" in stats.document_frequencies
    with_stats = BM25Index.build(tmp_path / "stats", ids, texts, config=config, statistics=stats)
    for name in ("bm25s_data", "bm25s_indices", "bm25s_indptr"):
        a = np.load(plain.path / plain.manifest["arrays"][name]["file"])
        b = np.load(with_stats.path / with_stats.manifest["arrays"][name]["file"])
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert "collection" not in plain.manifest and "collection" not in plain.info()
    assert with_stats.manifest["collection"] == {"documents": len(texts), "tokens": stats.tokens,
                                                 "terms": len(stats.document_frequencies)}


def test_bm25_shards_score_with_the_collection_statistics(tmp_path):
    texts = [d.text for d in DOCS]
    config = BM25Config(method="bm25l")  # non-occurrence scores: every shard must know every term
    whole = BM25Index.build(tmp_path / "whole", [d.id for d in DOCS], texts, config=config)
    stats = collection_statistics(texts, config)
    halves = [[d for d in DOCS if hash_shard(d.id, 2) == n] for n in range(2)]
    parts = [collection_statistics([d.text for d in half], config) for half in halves]
    assert parts[0] + parts[1] == stats
    shards = [BM25Index.build(tmp_path / f"s{n}", [d.id for d in half], [d.text for d in half], config=config,
                              statistics=stats) for n, half in enumerate(halves)]
    own = BM25Index.build(tmp_path / "own", [d.id for d in halves[0]], [d.text for d in halves[0]], config=config)
    for query in QUERIES:
        want = {h.doc_id: h.score for h in whole.search_text([query], k=100)[0]}
        got = {h.doc_id: h.score for s in shards for h in s.search_text([query], k=100)[0]}
        assert got == pytest.approx(want, abs=1e-6) and set(got) == set(want)
    # without them a shard scores differently (that is the point)
    alone = {h.doc_id: h.score for h in own.search_text([QUERIES[0]], k=100)[0]}
    assert any(abs(alone[d] - s) > 1e-3 for d, s in {h.doc_id: h.score for h in
                                                     shards[0].search_text([QUERIES[0]], k=100)[0]}.items())
    with pytest.raises(InputError, match="do not cover"):
        BM25Index.build(tmp_path / "bad", ["a", "b"], ["cancer", "risk"], statistics=CollectionStatistics(1, 1, {}))
    with pytest.raises(InputError, match="count term 'cancer'"):
        BM25Index.build(tmp_path / "bad", ["a"], ["cancer"], statistics=CollectionStatistics(5, 50, {"risk": 2}))


# ---------------------------------------------------------------------- updates


@pytest.mark.parametrize("kind", ["bm25", "flat"])
def test_updates_go_to_the_owner_shard_and_rank_like_one_index(kind, colbert, tmp_path):
    encoder = None if kind == "bm25" else colbert
    single = Retriever.build(tmp_path / "single", encoder, DOCS, kind=kind)
    sharded = ShardedRetriever.build(tmp_path / "sharded", encoder, DOCS, kind=kind, shards=SHARDS)
    new = [Document("new-apple", "apple apple banana fruit fruit healthy", {"n": 100, "even": True, "tag": "x"}),
           Document("new-vaccine", "vaccine vaccine dose trial", {"n": 101, "even": False, "tag": "y"}),
           *make_docs(6, seed=5, start=200)]
    assert len({hash_shard(d.id, SHARDS) for d in new}) > 1  # the change spans shards
    result = sharded.add(new)
    assert result == single.add(new) and result.added == len(new)
    assert len(sharded) == len(DOCS) + len(new) == sum(sharded.info()["shard_documents"])
    for d in new:  # each landed in its hash shard only
        assert [s.read("__contains__", d.id) for s in sharded.shards] == \
            [n == hash_shard(d.id, SHARDS) for n in range(SHARDS)]
    found = sharded.search("apple banana fruit healthy", k=100)
    assert "new-apple" in {h.doc_id for h in found}
    reference = single.search("apple banana fruit healthy", k=100)
    assert_same_top_k(found, reference, reference)
    if kind == "bm25":
        assert found[0].doc_id == "new-apple"
    assert_rankings_agree(sharded, single)
    # delete: gone from its shard and from the results
    gone = ["new-apple", "d3", "d10", "d41"]
    result = sharded.delete(gone + ["nope"])
    assert (result.deleted, result.not_found) == (4, ("nope",)) and result == single.delete(gone + ["nope"])
    assert all(d not in sharded for d in gone) and "d4" in sharded
    assert all(h.doc_id not in gone for hits in sharded.search(QUERIES, k=30) for h in hits)
    assert len(sharded) == len(DOCS) + len(new) - 4
    assert_rankings_agree(sharded, single)
    # upsert: replaced in place (its shard), new ones added
    changed = [Document("d5", "red green blue red green", {"n": 5, "even": False, "tag": "z"}),
               Document("fresh", "brain heart blood")]
    result = sharded.upsert(changed)
    assert (result.added, result.replaced) == (2, 1) and result == single.upsert(changed)
    assert sharded.get("d5").text == "red green blue red green" and sharded.document("fresh") == "brain heart blood"
    assert_rankings_agree(sharded, single)
    # add of an id already in a shard fails like Retriever.add, and adds nothing
    before = len(sharded)
    with pytest.raises(DuplicateIdError, match="'d7' is already in"):
        sharded.add([Document("other", "apple"), Document("d7", "apple")])
    assert len(sharded) == before and "other" not in sharded
    sharded.compact()
    assert sharded.info()["tombstones"] == 0 and len(sharded) == before
    assert_rankings_agree(sharded, single)
    if kind == "bm25":  # every shard scores with the statistics of the collection as it is now
        infos = sharded.info()["shard_info"]
        assert {json.dumps(i["collection"]) for i in infos} == {json.dumps(
            {"documents": before, "tokens": sharded.info()["collection"]["tokens"],
             "terms": sharded.info()["collection"]["terms"]})}
        assert sharded.info()["collection"]["documents"] == len(single)
    sharded.close()


@pytest.mark.parametrize("kind", ["bm25", "flat"])
def test_explain_equals_one_index(kind, pairs):
    single, sharded = pairs(kind)
    query = QUERIES[2]
    ids = [h.doc_id for h in single.search(query, k=6)]
    assert len({hash_shard(d, SHARDS) for d in ids}) > 1
    for doc_id in ids[:3]:
        a, b = single.explain(query, doc_id), sharded.explain(query, doc_id)
        assert b.score == pytest.approx(a.score, abs=1e-5) and b.doc_id == doc_id
        assert [(c.query_token, c.score) for c in b.contributions] == \
            [(c.query_token, pytest.approx(c.score, abs=1e-5)) for c in a.contributions]
    many = sharded.explain_many(query, list(reversed(ids)))
    assert [e.doc_id for e in many] == list(reversed(ids))
    assert [e.score for e in many] == pytest.approx([e.score for e in single.explain_many(query, list(reversed(ids)))])
    with pytest.raises(InputError, match="no document 'nope'"):
        sharded.explain(query, "nope")


# ---------------------------------------------------------------------- the manifest and its checks


def test_manifest_hash_and_info(pairs):
    _, sharded = pairs("flat")
    manifest = json.loads((sharded.path / SHARDS_FILE).read_text())
    assert manifest["format"] == "latelex-shards" and manifest["shards"] == SHARDS and manifest["kind"] == "flat"
    assert manifest["partition"]["scheme"] == "hash" and len(manifest["build_id"]) >= 16
    assert manifest["shard_dirs"] == ["shard-000", "shard-001", "shard-002"]
    assert manifest["encoder"] == sharded.encoder.spec()
    for n in range(SHARDS):
        marker = json.loads((sharded.path / f"shard-00{n}" / "shard.json").read_text())
        assert (marker["build_id"], marker["number"], marker["shards"]) == (manifest["build_id"], n, SHARDS)
    want = int.from_bytes(hashlib.blake2b("d17".encode(), digest_size=8).digest(), "big") % SHARDS
    assert hash_shard("d17", SHARDS) == want
    assert hash_shard("é", 7) == int.from_bytes(hashlib.blake2b("é".encode(), digest_size=8).digest(), "big") % 7
    for n, shard in enumerate(sharded.shards):
        assert all(hash_shard(d, SHARDS) == n for d in shard.read("doc_ids"))
    info = sharded.info()
    assert info["sharded"] and info["documents"] == len(DOCS) and info["shards"] == SHARDS
    assert sorted(sharded.doc_ids) == sorted(d.id for d in DOCS)
    assert ShardedRetriever.inspect(sharded.path)["shard_documents"] == info["shard_documents"]
    assert sharded.refresh() is False and sharded.kind == "flat" and sharded.spec.name == "flat"


@pytest.fixture
def flat_copy(pairs, tmp_path):
    _, sharded = pairs("flat")
    copy = tmp_path / "copy"
    shutil.copytree(sharded.path, copy)
    return copy


def test_a_missing_shard_is_named(flat_copy):
    shutil.rmtree(flat_copy / "shard-001")
    with pytest.raises(IndexFormatError, match=r"shard 1 of .* is missing .* restore"):
        ShardedRetriever.open(flat_copy)
    assert main(["info", str(flat_copy)]) == 1


def test_a_shard_of_another_build_is_refused(flat_copy, colbert, tmp_path):
    other = ShardedRetriever.build(tmp_path / "other", colbert, DOCS[:30], shards=2)
    other.close()
    shutil.rmtree(flat_copy / "shard-001")
    shutil.copytree(other.path / "shard-001", flat_copy / "shard-001")
    with pytest.raises(IndexFormatError, match="is shard 1 of another sharded build"):
        ShardedRetriever.open(flat_copy)


def test_shards_with_different_encoders_are_refused(flat_copy):
    manifest_path = flat_copy / "shard-002" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["encoder"] = {**manifest["encoder"], "model": "someone/else", "dim": 7}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"shard-002 was built with another encoder \(someone/else\)"):
        ShardedRetriever.open(flat_copy)


def test_bad_builds_say_what_to_do_and_leave_nothing(tmp_path, monkeypatch):
    target = tmp_path / "idx"
    for shards in (0, -1, True, 2.0):
        with pytest.raises(InputError, match="shards must be a positive integer"):
            ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=shards)
    with pytest.raises(InputError, match="shard numbers run from 0 to 1"):
        ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=2, partition={"d1": 2})
    with pytest.raises(InputError, match="gives no shard to 59 document"):
        ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=2, partition={"d1": 1})
    with pytest.raises(InputError, match="shard 1 would hold no documents"):
        ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=2, partition={d.id: 0 for d in DOCS})
    with pytest.raises(InputError, match="cannot build a 'flat' index"):
        ShardedRetriever.build(target, None, DOCS, kind="flat", shards=2)
    # a build that fails part way publishes nothing
    calls = []
    original = Retriever.build.__func__

    def failing(cls, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(Retriever, "build", classmethod(failing))
    with pytest.raises(OSError, match="disk full"):
        ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=3)
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == []
    monkeypatch.undo()
    built = ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=2)
    built.close()
    with pytest.raises(IndexFormatError, match="already exists"):
        ShardedRetriever.build(target, None, DOCS, kind="bm25", shards=2)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="is not an index; refusing"):
        ShardedRetriever.build(tmp_path / "stuff", None, DOCS, kind="bm25", shards=2, overwrite=True)
    # overwrite replaces a plain index with a sharded one, and a sharded one with another
    Retriever.build(tmp_path / "plain", None, DOCS, kind="bm25").close()
    with ShardedRetriever.build(tmp_path / "plain", None, DOCS[:20], kind="bm25", shards=2, overwrite=True) as again:
        assert len(again) == 20 and not (tmp_path / "plain" / "manifest.json").exists()
    with ShardedRetriever.build(target, None, DOCS[:10], kind="bm25", shards=2, overwrite=True) as again:
        assert len(again) == 10


def test_a_given_partition_places_documents_and_routes_changes(tmp_path):
    partition = {d.id: int(d.id[1:]) % 2 for d in DOCS}  # even numbers in shard 0, odd in shard 1
    sharded = ShardedRetriever.build(tmp_path / "given", None, DOCS, kind="bm25", shards=2, partition=partition)
    single = Retriever.build(tmp_path / "single", None, DOCS, kind="bm25")
    assert sharded.partition == "given" and sharded.manifest["partition"]["scheme"] == "given"
    for n, shard in enumerate(sharded.shards):
        assert sorted(shard.read("doc_ids")) == sorted(d for d, s in partition.items() if s == n)
    assert_rankings_agree(sharded, single)
    # an id whose hash shard is not its given shard: found, replaced and deleted where it is
    moved = next(d.id for d in DOCS if hash_shard(d.id, 2) != partition[d.id])
    assert moved in sharded and sharded.owner(moved) == partition[moved]
    changed = [Document(moved, "apple banana apple")]
    assert sharded.upsert(changed).replaced == 1 == single.upsert(changed).replaced
    assert sharded.shards[partition[moved]].read("get", moved).text == "apple banana apple"
    assert not sharded.shards[1 - partition[moved]].read("__contains__", moved)
    assert sharded.search_queries({"q": "subset"}, k=2, subset=[moved]) == {"q": []}
    assert sharded.search("banana apple", k=1, subset=[moved, "d2"])[0].doc_id == moved
    # a new id goes to its hash shard
    assert sharded.add([Document("brand-new", "vaccine trial")]).added == 1
    assert sharded.shards[hash_shard("brand-new", 2)].read("__contains__", "brand-new")
    single.add([Document("brand-new", "vaccine trial")])
    assert sharded.delete([moved]).deleted == 1 and moved not in sharded
    single.delete([moved])
    assert_rankings_agree(sharded, single)
    sharded.close()
    single.close()


def test_plaid_shards_open_search_and_describe(colbert, tmp_path):
    from latelex.index.plaid import PlaidConfig

    sharded = ShardedRetriever.build(tmp_path / "plaid", colbert, DOCS[:40], kind="plaid", shards=2,
                                     engine_config=PlaidConfig(nbits=4))
    info = sharded.info()
    assert info["kind"] == "plaid" and info["documents"] == 40 and len(info["shard_info"]) == 2
    assert all(i["kind"] == "plaid" and i["documents"] > 0 for i in info["shard_info"])
    hits = sharded.search(QUERIES[0], k=5)
    assert len(hits) == 5 and len({h.doc_id for h in hits}) == 5
    assert sharded.add(make_docs(4, seed=9, start=300)).added == 4 and len(sharded) == 44
    sharded.close()
    with ShardedRetriever.open(tmp_path / "plaid") as again:  # the encoder comes back from shards.json
        assert again.encoder.spec() == colbert.spec() and len(again) == 44


# ---------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    (root / "collection.tsv").write_text("".join(f"{d.id}\t{d.text}\n" for d in DOCS))
    (root / "more.tsv").write_text("x1\tapple banana fruit apple banana\nx2\tvaccine dose\n")
    (root / "queries.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(QUERIES)))
    return root


def run_cli(argv):
    """``main``'s exit status, usage errors (argparse exits with 2) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_cli_verbs_on_a_sharded_index(collection, tmp_path, capsys):
    idx = tmp_path / "sh"
    assert main(["-q", "index", str(idx), "--kind", "bm25", "--collection", str(collection / "collection.tsv"),
                 "--shards", "3"]) == 0
    assert "(bm25, no model, 3 shards)" in capsys.readouterr().out
    assert (idx / SHARDS_FILE).exists() and sorted(p.name for p in idx.glob("shard-*")) == \
        ["shard-000", "shard-001", "shard-002"]
    assert main(["info", str(idx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sharded"] and info["shards"] == 3 and info["documents"] == len(DOCS)
    assert main(["info", str(idx)]) == 0
    assert "shard shard-002" in capsys.readouterr().out
    assert main(["search", str(idx), "--query", "apple banana fruit", "-k", "3", "--explain"]) == 0
    out = capsys.readouterr().out
    single = Retriever.build(tmp_path / "single", None, DOCS, kind="bm25")
    best = single.search("apple banana fruit", k=1)[0]
    assert f"{best.score:10.4f}  {best.doc_id}" in out and "score = " in out
    run = tmp_path / "run.trec"
    assert main(["-q", "search", str(idx), "--queries", str(collection / "queries.tsv"), "-k", "5", "--output",
                 str(run)]) == 0
    assert len(run.read_text().splitlines()) >= 5
    assert main(["-q", "add", str(idx), "--collection", str(collection / "more.tsv")]) == 0
    assert "added 2 documents" in capsys.readouterr().out
    assert main(["search", str(idx), "--query", "apple banana fruit", "-k", "1"]) == 0
    assert "x1" in capsys.readouterr().out
    assert main(["delete", str(idx), "x1", "d0", "nope"]) == 0
    assert f"deleted 2 documents from {idx} ({len(DOCS)} left); 1 id not found" in capsys.readouterr().out
    assert main(["delete", str(idx), "d1", "nope", "--strict"]) == 1
    assert "nothing was deleted" in capsys.readouterr().err
    assert main(["compact", str(idx)]) == 0
    assert f"{len(DOCS)} documents in 3 segments" in capsys.readouterr().out
    with ShardedRetriever.open(idx) as sharded:
        assert "x1" not in sharded and "x2" in sharded and "d1" in sharded and len(sharded) == len(DOCS)


def test_cli_partition_file_and_mistakes(collection, tmp_path, capsys):
    tsv = collection / "collection.tsv"
    idx = tmp_path / "given"
    partition = tmp_path / "partition.tsv"
    partition.write_text("".join(f"{d.id}\t{i % 2}\n" for i, d in enumerate(DOCS)))
    assert main(["-q", "index", str(idx), "--kind", "bm25", "--collection", str(tsv), "--shards", "2",
                 "--partition", str(partition)]) == 0
    with ShardedRetriever.open(idx) as sharded:
        assert sharded.partition == "given" and sharded.shards[1].read("doc_ids")[:2] == ["d1", "d3"]
    jsonl = tmp_path / "partition.jsonl"
    jsonl.write_text("".join(json.dumps({"id": d.id, "shard": 0 if i < 30 else 1}) + "\n" for i, d in enumerate(DOCS)))
    assert main(["-q", "index", str(idx), "--kind", "bm25", "--collection", str(tsv), "--shards", "2",
                 "--partition", str(jsonl), "--overwrite"]) == 0
    with ShardedRetriever.open(idx) as sharded:
        assert sharded.info()["shard_documents"] == [30, 30]
    capsys.readouterr()
    mistakes = [
        (["--shards", "0"], "--shards must be at least 1"),
        (["--partition", str(partition)], "--partition needs --shards"),
        (["--shards", "3", "--partition", str(partition), "--overwrite"], "shard 2 would hold no documents"),
        (["--shards", "2"], "already exists"),
        ([], "is a sharded index; rebuild it with --shards N --overwrite"),
    ]
    for extra, message in mistakes:
        assert run_cli(["-q", "index", str(idx), "--kind", "bm25", "--collection", str(tsv), *extra]) in (1, 2)
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    bad = tmp_path / "bad.tsv"
    bad.write_text("d1\tone\n")
    assert main(["-q", "index", str(tmp_path / "x"), "--kind", "bm25", "--collection", str(tsv), "--shards", "2",
                 "--partition", str(bad)]) == 1
    assert f"{bad}:1: expected id<TAB>shard" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_search_loads_the_encoder_from_the_shard_manifest(collection, tiny_bert, tmp_path, capsys):
    model = ColBERT.from_backbone(tiny_bert, dim=16, seed=1).save(tmp_path / "colbert")
    idx = tmp_path / "flat"
    assert main(["-q", "index", str(idx), "--model", str(model), "--collection", str(collection / "collection.tsv"),
                 "--shards", "2"]) == 0
    capsys.readouterr()
    assert main(["search", str(idx), "--query", "protein gene cells", "-k", "2"]) == 0
    out = capsys.readouterr().out
    single = Retriever.build(tmp_path / "single", ColBERT.from_pretrained(model), DOCS)
    best = single.search("protein gene cells", k=1)[0]
    assert best.doc_id in out and f"{best.score:10.4f}" in out


def test_the_server_serves_a_sharded_index_in_threads(pairs, tmp_path):
    """`latelex serve` on a sharded directory (no Ray): the same answers as the library, and writes routed."""
    import httpx

    from latelex.server import ServerConfig

    from server_helpers import running_server

    single, sharded = pairs("flat")
    copy = tmp_path / "served"
    shutil.copytree(sharded.path, copy)
    with running_server(ServerConfig(indexes={"docs": str(copy)})) as (base, service):
        for query in QUERIES[:2]:
            body = httpx.post(f"{base}/indexes/docs/search", json={"query": query, "k": 5}, timeout=60).json()
            want = sharded.search(query, k=5)
            assert [h["id"] for h in body["hits"]] == [h.doc_id for h in want]
            assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in want], abs=1e-5)
        added = httpx.post(f"{base}/indexes/docs/documents", timeout=60,
                           json={"documents": [{"id": "new-1", "text": "apple banana fruit healthy"}]})
        assert added.status_code == 200, added.text
        assert added.json()["documents"] == len(DOCS) + 1
        info = httpx.get(f"{base}/indexes/docs", timeout=60).json()
        assert info["sharded"] is True and info["documents"] == len(DOCS) + 1
    reopened = ShardedRetriever.open(copy, encoder=sharded.encoder)
    try:
        assert "new-1" in reopened and reopened.owner("new-1") == hash_shard("new-1", reopened.manifest["shards"])
    finally:
        reopened.close()
