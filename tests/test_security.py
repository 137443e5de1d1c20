"""A stranger's index or model folder is data, never instructions: manifests cannot name files outside their folder,
a model manifest cannot make latelex import code, opening an index never reaches for the network, pickles are
refused without running, and damage is one IndexFormatError (small arrays, arrays read whole and the FAISS file on
every open, large memory-mapped arrays on their first search or with verify=True), never a traceback or silently
different scores."""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latelex.config import ColBERTConfig, config_to_dict
from latelex.errors import IndexFormatError, ModelError
from latelex.index import storage
from latelex.index.commit import remove_unnamed
from latelex.index.flat import FlatIndex
from latelex.index.inverted import InvertedIndex
from latelex.index.sparse import SparseIndex
from latelex.index.storage import MANIFEST
from latelex.types import SparseBatch, SparseVector

DIM = 8
VOCAB = 50


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dense_docs(n: int = 30, seed: int = 0, dim: int = DIM, tokens: tuple[int, int] = (1, 12)):
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        x = rng.standard_normal((int(rng.integers(*tokens)), dim)).astype(np.float32)
        docs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return [f"d{i}" for i in range(n)], docs


def sparse_docs(n: int = 30, seed: int = 0) -> tuple[list[str], SparseBatch]:
    rng = np.random.default_rng(seed)
    vectors = []
    for _ in range(n):
        ids = np.sort(rng.choice(VOCAB, size=int(rng.integers(1, 8)), replace=False)).astype(np.int32)
        vectors.append(SparseVector(ids, (rng.random(ids.size) + 0.1).astype(np.float32)))
    return [f"d{i}" for i in range(n)], SparseBatch.from_vectors(vectors, VOCAB)


def build(kind: str, path: Path):
    if kind == "flat":
        ids, docs = dense_docs()
        return FlatIndex.build(path, ids, docs)
    if kind == "sparse":
        return SparseIndex.build(path, *sparse_docs())
    if kind == "inverted":
        return InvertedIndex.build(path, *sparse_docs())
    if kind == "bm25":
        from latelex.index.bm25 import BM25Index

        return BM25Index.build(path, [f"d{i}" for i in range(6)], [f"text number {i} about cats" for i in range(6)])
    raise AssertionError(kind)


def opener(kind: str):
    if kind == "bm25":
        from latelex.index.bm25 import BM25Index

        return BM25Index.open
    return {"flat": FlatIndex.open, "sparse": SparseIndex.open, "inverted": InvertedIndex.open}[kind]


def edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def flip(path: Path, positions) -> None:
    data = bytearray(path.read_bytes())
    for p in positions:
        data[p] ^= 0xFF
    path.write_bytes(bytes(data))


# --- item 3: every path in a manifest is data ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "sparse", "inverted", "bm25"])
@pytest.mark.parametrize("attack", ["parent", "absolute", "symlink", "dot", "backslash"])
def test_manifest_naming_a_file_outside_the_index_is_refused(tmp_path, kind, attack):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    index_dir = tmp_path / "idx"
    build(kind, index_dir)
    if attack == "symlink":  # a name inside the folder that resolves outside it
        (index_dir / "evil.npy").symlink_to(precious)
    bad = {"parent": "../precious.txt", "absolute": str(precious), "symlink": "evil.npy", "dot": "./x/../../precious.txt",
           "backslash": "..\\precious.txt"}[attack]
    section = "files" if kind == "bm25" and attack in ("parent", "absolute") else "arrays"

    def point_away(manifest):
        entries = manifest[section]
        entries[sorted(entries)[0]]["file"] = bad

    edit_manifest(index_dir, point_away)
    with pytest.raises(IndexFormatError, match="which is not a file inside the index") as info:
        opener(kind)(index_dir)
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)
    with pytest.raises(IndexFormatError):
        opener(kind)(index_dir, verify=True)
    assert precious.read_text() == "keep me"


def test_changes_to_an_inverted_index_never_remove_files_outside_it(tmp_path):
    """The old attack: a manifest entry '../precious.txt' made InvertedIndex.delete() remove that file. Opening now
    refuses such a manifest, and the cleanup only ever removes the index's own top-level names."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me too")
    index = build("inverted", tmp_path / "idx")
    (index.path / "seg-000099").symlink_to(outside, target_is_directory=True)  # own pattern, pointing away
    poisoned = json.loads((index.path / MANIFEST).read_text())  # the real one, plus names pointing away
    poisoned["arrays"].update(x={"file": "../precious.txt"}, y={"file": str(precious)}, z={"file": "../outside"})
    remove_unnamed(index.path, poisoned, re.compile(r"^(seg-\d+|tombstones-\d+\.npy)$"))
    assert not (index.path / "seg-000099").exists()  # the link went, not what it points at
    assert precious.read_text() == "keep me" and (outside / "data.txt").read_text() == "keep me too"
    index = InvertedIndex.open(index.path)
    ids, docs = sparse_docs(5, seed=3)
    index.add([f"new{i}" for i in range(5)], docs)
    index.delete(["d0", "new1"])
    assert precious.read_text() == "keep me" and (outside / "data.txt").read_text() == "keep me too"


def test_writes_into_an_index_never_follow_a_planted_link(tmp_path):
    """A new array or manifest replaces a symbolic link left under its name; the file it points at is untouched."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "x.npy").symlink_to(precious)
    (folder / f"{MANIFEST}.tmp").symlink_to(precious)
    entry = storage.save_array(folder, "x", np.arange(4))
    storage.write_manifest(folder, "flat", 1, {"x": entry})
    assert precious.read_text() == "keep me"
    assert not (folder / "x.npy").is_symlink() and np.array_equal(np.load(folder / "x.npy"), np.arange(4))
    assert json.loads((folder / MANIFEST).read_text())["arrays"]["x"] == entry


def test_inside_accepts_nested_relative_names_and_refuses_the_rest(tmp_path):
    (tmp_path / "seg-000001").mkdir()
    assert storage.inside(tmp_path, "seg-000001/fwd_indptr.npy") == tmp_path / "seg-000001" / "fwd_indptr.npy"
    for bad in ("", "/etc/passwd", "a//b.npy", "a/./b.npy", "..", "a/../../b", "a\\b", "a\0b", None, 3, ["a"]):
        with pytest.raises(IndexFormatError, match="not a file inside the index"):
            storage.inside(tmp_path, bad)


# --- item 4: a model manifest cannot run code; opening an index stays offline ------------------------------------


def adapter_model(tiny_bert: Path, folder: Path) -> Path:
    from latelex.encoders.colbert import ColBERT
    from latelex.encoders.lora import LoRAConfig

    model = ColBERT.from_backbone(tiny_bert, dim=DIM, seed=0, device="cpu", query_maxlen=8, doc_maxlen=12)
    model.add_lora(LoRAConfig(rank=2))
    return model.save(folder, base={"path": str(tiny_bert)})


PLANT = "import pathlib\npathlib.Path({marker!r}).write_text('code ran')\n"


@pytest.mark.parametrize("package", ["attackpkg.sub", "attackpkg", "attackpkg.sub.deeper"])
def test_model_manifest_naming_a_package_imports_nothing(tiny_bert, tmp_path, monkeypatch, package):
    from latelex.encoders.colbert import ColBERT

    folder = adapter_model(tiny_bert, tmp_path / "model")
    marker = tmp_path / "marker.txt"
    plant = tmp_path / "cwd" / "attackpkg"
    (plant / "sub").mkdir(parents=True)
    (plant / "__init__.py").write_text(PLANT.format(marker=str(marker)))
    (plant / "sub" / "__init__.py").write_text(PLANT.format(marker=str(marker)))
    (plant / "sub" / "model").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.syspath_prepend(".")
    monkeypatch.delitem(sys.modules, "attackpkg", raising=False)

    def name_package(manifest):
        manifest["backbone"] = {"package": package, "folder": "model", "requirement": "attackpkg==1.0"}

    path = folder / "latelex_model.json"
    manifest = json.loads(path.read_text())
    name_package(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="imports no other") as info:
        ColBERT.from_pretrained(folder, device="cpu")
    assert "\n" not in str(info.value)
    assert not marker.exists()
    assert "attackpkg" not in sys.modules


def test_the_shipped_base_package_is_found_without_importing_it(tmp_path, monkeypatch):
    """The one allowed package is located through its installed files; a same-named folder planted in the current
    directory is neither imported nor used."""
    from latelex.encoders.colbert_checkpoints import resolve_base
    from latelex.models import BASE_BACKBONE

    marker = tmp_path / "marker.txt"
    plant = tmp_path / "cwd" / BASE_BACKBONE["package"]
    (plant / BASE_BACKBONE["folder"]).mkdir(parents=True)
    (plant / "__init__.py").write_text(PLANT.format(marker=str(marker)))
    (plant / BASE_BACKBONE["folder"] / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.syspath_prepend(".")
    monkeypatch.delitem(sys.modules, BASE_BACKBONE["package"], raising=False)
    base = resolve_base(dict(BASE_BACKBONE), tmp_path)
    assert (base / "config.json").is_file() and not base.is_relative_to(tmp_path)
    assert not marker.exists() and BASE_BACKBONE["package"] not in sys.modules
    with pytest.raises(ModelError, match="imports no other"):  # another folder of the allowed package
        resolve_base({**BASE_BACKBONE, "folder": "../x"}, tmp_path)


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to resolve or connect is recorded and fails."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_an_index_naming_a_hub_model_opens_offline(tmp_path, no_network):
    from latelex.encoders import encoder_from_spec

    name = "someorg/some-model-not-cached"
    spec = {"family": "colbert", "model": name, "config": config_to_dict(ColBERTConfig(dim=DIM))}
    ids, docs = dense_docs()
    index = FlatIndex.open(FlatIndex.build(tmp_path / "idx", ids, docs, encoder=spec).path)
    with pytest.raises(ModelError) as info:
        encoder_from_spec(index.encoder, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"the index was built with {name}, which is not on this machine; download it first "
                       f"(e.g. `huggingface-cli download {name}`) or pass --allow-network")
    assert no_network == []
    splade = {"family": "splade", "model": name, "config": {}}
    with pytest.raises(ModelError, match="not on this machine"):
        encoder_from_spec(splade, device="cpu")
    assert no_network == []


def test_network_use_follows_the_flag_and_explicit_loads(monkeypatch):
    """encoder_from_spec asks the hub client for local files only unless allow_network; an explicit
    ColBERT.from_pretrained('org/name') may still download, as before."""
    import huggingface_hub

    from latelex.encoders import encoder_from_spec
    from latelex.encoders.colbert import ColBERT

    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs.get("local_files_only", False))
        raise OSError("no such repository in this test")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    spec = {"family": "colbert", "model": "someorg/x", "config": config_to_dict(ColBERTConfig(dim=DIM))}
    with pytest.raises(ModelError, match="--allow-network"):
        encoder_from_spec(spec)
    assert calls == [True]
    with pytest.raises(ModelError, match="could not be fetched"):
        encoder_from_spec(spec, allow_network=True)
    with pytest.raises(ModelError, match="could not be fetched"):
        ColBERT.from_pretrained("someorg/x", device="cpu")
    assert calls == [True, False, False]


def test_an_index_of_the_builtin_model_opens_with_the_network_blocked(no_network):
    from latelex.encoders import encoder_from_spec
    from latelex.encoders.colbert import ColBERT
    from latelex.models import DEFAULT_COLBERT_MODEL

    spec = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu").spec()
    encoder = encoder_from_spec(spec, device="cpu")
    assert encoder.dim == 128 and no_network == []


def test_a_local_model_opens_with_the_network_blocked(tiny_bert, tmp_path, no_network):
    from latelex.encoders import encoder_from_spec
    from latelex.encoders.colbert import ColBERT

    folder = adapter_model(tiny_bert, tmp_path / "model")
    spec = ColBERT.from_pretrained(folder, device="cpu").spec()
    assert encoder_from_spec(spec, device="cpu").dim == DIM and no_network == []


# --- pickles are refused without running -----------------------------------------------------------------------


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["offsets", "vectors", "doc_ids_bytes"])
@pytest.mark.parametrize("form", ["npy", "raw"])
def test_a_pickled_array_is_refused_and_runs_nothing(tmp_path, name, form):
    """The manifest is the attacker's too: its size and checksum are made to match the pickle."""
    import pickle

    from latelex.fsio import file_sha256

    marker = tmp_path / "marker.txt"
    index = build("flat", tmp_path / "idx")
    path = index.path / f"{name}.npy"
    if form == "npy":
        np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))

    def match(manifest):
        manifest["arrays"][name].update(bytes=path.stat().st_size, sha256=file_sha256(path), dtype="|O", shape=[1])

    edit_manifest(index.path, match)
    for verify in (False, True):
        with pytest.raises(IndexFormatError, match="not a valid array") as info:
            FlatIndex.open(index.path, verify=verify)
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_an_npz_archive_under_an_npy_name_is_refused(tmp_path):
    from latelex.fsio import file_sha256

    index = build("flat", tmp_path / "idx")
    path = index.path / "offsets.npy"
    with open(path, "wb") as f:
        np.savez(f, a=np.arange(3))
    edit_manifest(index.path, lambda m: m["arrays"]["offsets"].update(bytes=path.stat().st_size, sha256=file_sha256(path)))
    with pytest.raises(IndexFormatError, match="not a valid array"):
        FlatIndex.open(index.path)


# --- item 7: damage is caught --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,array", [
    ("flat", "offsets"), ("flat", "doc_ids_offsets"), ("flat", "doc_ids_bytes"), ("flat", "vectors"),
    ("sparse", "indptr"), ("sparse", "values"), ("inverted", "tombstones"), ("inverted", None),
])
def test_byte_flips_in_a_small_array_are_caught_on_open(tmp_path, kind, array):
    index = build(kind, tmp_path / "idx")
    if kind == "inverted" and array == "tombstones":
        index.delete(["d3"])
    manifest = json.loads((index.path / MANIFEST).read_text())
    name = array or sorted(manifest["arrays"])[0]
    entry = manifest["arrays"][name]
    assert entry["bytes"] <= storage.SMALL_FILE_BYTES
    path = index.path / entry["file"]
    flip(path, [entry["bytes"] - 1])
    with pytest.raises(IndexFormatError, match="checksum") as info:
        opener(kind)(index.path)
    assert "\n" not in str(info.value)


def test_byte_flips_in_a_large_array_are_caught_at_the_first_search(tmp_path):
    """Vectors over SMALL_FILE_BYTES (4 MiB) are memory-mapped and not hashed on open, to keep opening fast: the
    first search checks them before reading them (and ``verify=True``, ``--verify``, checks them on open)."""
    ids, docs = dense_docs(n=170, dim=128, tokens=(95, 105))
    index = FlatIndex.build(tmp_path / "idx", ids, docs)
    entry = index.manifest["arrays"]["vectors"]
    assert entry["bytes"] > storage.SMALL_FILE_BYTES
    query = [torch.from_numpy(docs[0][:4])]
    assert index.search(query, k=3)[0][0].doc_id == "d0"  # undamaged: the lazy check passes
    flip(index.path / entry["file"], [entry["bytes"] - 1])
    damaged = FlatIndex.open(index.path)  # a large array: not hashed on open
    for _ in range(2):  # the check is not used up by a failure
        with pytest.raises(IndexFormatError, match="checksum") as info:
            damaged.search(query, k=3)
        assert "\n" not in str(info.value)
    with pytest.raises(IndexFormatError, match="checksum"):
        FlatIndex.open(index.path, verify=True)


def _query_for(kind: str):
    if kind == "bm25":
        return ["cats number"]
    if kind in ("sparse", "inverted"):
        return SparseBatch.from_vectors([SparseVector(np.arange(VOCAB, dtype=np.int32), np.ones(VOCAB, np.float32))], VOCAB)
    return [torch.from_numpy(dense_docs()[1][0])]


@pytest.mark.parametrize("kind,array", [
    ("flat", "vectors"), ("sparse", "values"), ("inverted", "seg-0/fwd_values"), ("bm25", "bm25s_data"),
])
def test_every_kind_checks_its_memory_mapped_arrays_before_the_first_search_reads_them(tmp_path, monkeypatch, kind,
                                                                                      array):
    monkeypatch.setattr(storage, "SMALL_FILE_BYTES", 16)  # every array counts as large
    index = build(kind, tmp_path / "idx")
    manifest = json.loads((index.path / MANIFEST).read_text())
    name = array if array in manifest["arrays"] else next(n for n in manifest["arrays"] if n.endswith(array.split("/")[-1]))
    entry = manifest["arrays"][name]
    flip(index.path / entry["file"], [entry["bytes"] - 1])
    damaged = opener(kind)(index.path)
    search = damaged.search_text if kind == "bm25" else damaged.search
    with pytest.raises(IndexFormatError, match="checksum"):
        search(_query_for(kind), k=3)
    with pytest.raises(IndexFormatError, match="checksum"):
        opener(kind)(index.path, verify=True)


def test_plaid_checks_each_chunk_of_residuals_on_the_first_search_that_decompresses_it(tmp_path, monkeypatch):
    from latelex.index.plaid import PlaidConfig, PlaidIndex

    monkeypatch.setattr(storage, "SMALL_FILE_BYTES", 16)
    ids, docs = dense_docs(n=60, dim=16, tokens=(2, 10))
    index = PlaidIndex.build(tmp_path / "idx", ids, docs, config=PlaidConfig(nbits=2, n_centroids=8, chunk_size=30))
    entry = index.manifest["arrays"]["chunk-00001.residuals"]
    flip(index.path / entry["file"], [entry["bytes"] - 1])
    damaged = PlaidIndex.open(index.path)
    query = [torch.from_numpy(docs[0])]
    first, second = ids[:30], ids[30:]
    assert damaged.search(query, k=3, subset=first)[0]  # chunk 0 only: intact, and chunk 1 is not read
    with pytest.raises(IndexFormatError, match="chunk-00001.residuals.npy does not match its checksum"):
        damaged.search(query, k=3, subset=second)
    with pytest.raises(IndexFormatError, match="checksum"):
        damaged.search(query, k=3)
    with pytest.raises(IndexFormatError, match="checksum"):
        damaged.decompressed(ids[40])
    with pytest.raises(IndexFormatError, match="checksum"):
        PlaidIndex.open(index.path, verify=True)


def test_byte_flips_in_plaid_codes_are_caught_on_open(tmp_path):
    from latelex.index.plaid import PlaidConfig, PlaidIndex

    ids, docs = dense_docs(n=60, dim=16, tokens=(2, 10))
    index = PlaidIndex.build(tmp_path / "idx", ids, docs, config=PlaidConfig(nbits=2, n_centroids=8))
    path = index.path / "chunk-00000.codes.npy"
    flip(path, [path.stat().st_size - 2])
    with pytest.raises(IndexFormatError, match="checksum"):
        PlaidIndex.open(index.path)


@pytest.fixture(scope="module")
def ivfpq_index(tmp_path_factory):
    faiss = pytest.importorskip("faiss")
    from latelex.index.ivfpq import IvfPqConfig, IvfPqIndex

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    ids, docs = dense_docs(n=100, dim=16, tokens=(4, 12))
    index = IvfPqIndex.build(tmp_path_factory.mktemp("ivf") / "ivf", ids, docs, config=IvfPqConfig(nbits=4))
    faiss.omp_set_num_threads(before)
    return index.path


def test_a_damaged_faiss_file_is_one_error_on_open(ivfpq_index, tmp_path):
    import shutil

    from latelex.index.ivfpq import FAISS_FILE, IvfPqIndex

    path = tmp_path / "ivf"
    shutil.copytree(ivfpq_index, path)
    original = (path / FAISS_FILE).read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(30):  # same-size mutations: 10 flipped bytes each
        data = bytearray(original)
        for p in rng.choice(len(data), size=10, replace=False):
            data[int(p)] ^= int(rng.integers(1, 256))
        (path / FAISS_FILE).write_bytes(bytes(data))
        with pytest.raises(IndexFormatError, match="FAISS index .* does not match its checksum") as info:
            IvfPqIndex.open(path)
        assert "\n" not in str(info.value)


def test_an_unreadable_faiss_file_with_a_matching_checksum_is_one_error(ivfpq_index, tmp_path):
    """A crafted manifest can carry the checksum of a broken file: FAISS's own read errors are wrapped too."""
    import shutil

    from latelex.fsio import file_sha256
    from latelex.index.ivfpq import FAISS_FILE, IvfPqIndex

    path = tmp_path / "ivf"
    shutil.copytree(ivfpq_index, path)
    data = bytearray((path / FAISS_FILE).read_bytes())
    data[:4] = b"XXXX"
    (path / FAISS_FILE).write_bytes(bytes(data))
    edit_manifest(path, lambda m: m["files"]["faiss"].update(sha256=file_sha256(path / FAISS_FILE)))
    with pytest.raises(IndexFormatError, match="not a readable FAISS index") as info:
        IvfPqIndex.open(path)
    assert "\n" not in str(info.value)
