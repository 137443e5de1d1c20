"""Opening a ColBERT encoder on a cached ONNX graph without loading the torch model: the graph's sidecar records the
model files it came from, and a load that finds the same files, library versions and tokenizer output skips
transformers entirely; anything else (changed weights, a damaged graph, a tokenizer that reads differently) falls
back to the full load (tiny random models)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnx", reason="the onnx backend needs onnx: pip install 'latelex[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime: pip install 'latelex[onnx]'")

from latelex import ColBERT, Retriever  # noqa: E402
from latelex.encoders import colbert as colbert_module  # noqa: E402
from latelex.encoders import onnx_backend, onnx_cache  # noqa: E402
from latelex.encoders.loading import load_tokenizer  # noqa: E402
from latelex.encoders.rust_tokenizer import CHECK_TEXTS, RustTokenizer, token_check  # noqa: E402
from tiny_models import WORDS, build_bert  # noqa: E402

TEXTS = ["cells", "What is the RISK of cancer, for patients?", "apple banana fruit, red & green!", " ".join(WORDS), "x"]
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than.*truncated:UserWarning")


@pytest.fixture
def model_dir(tmp_path_factory):
    """A saved ColBERT model (tiny backbone + projection) in a folder of its own, so its onnx/ cache is fresh."""
    base = build_bert(tmp_path_factory.mktemp("fast-bert") / "bert")
    return ColBERT.from_backbone(base, dim=16, seed=3, doc_maxlen=48).save(tmp_path_factory.mktemp("fast") / "model")


@pytest.fixture
def no_full_load(monkeypatch):
    """Makes a full load (torch model through transformers) fail, so that a test sees which path ran."""
    def refuse(*args, **kwargs):
        raise AssertionError("the torch model was loaded")

    def arm():
        monkeypatch.setattr(colbert_module, "load_transformer", refuse)
        monkeypatch.setattr(colbert_module, "load_tokenizer", refuse)

    return arm


def encode_all(encoder):
    return encoder.encode_queries(TEXTS) + encoder.encode_documents(TEXTS)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_recorded_graph_opens_without_the_torch_model_and_encodes_the_same(model_dir, no_full_load, exports,
                                                                            quantize):
    first = ColBERT.from_pretrained(model_dir, backend="onnx", quantize=quantize)  # exports and records the sources
    assert len(exports) == 1
    stem = f"latelex-colbert-{quantize or 'fp32'}"
    sources = json.loads((model_dir / "onnx" / f"{stem}.json").read_text())["sources"]
    assert sources["digest"] == onnx_cache.source_digest([model_dir])
    assert sources["versions"]["transformers"] and sources["tokens"]["limits"]
    assert sources["backbone"] == {"hidden_size": 32, "max_position_embeddings": first.max_positions}
    expected = encode_all(first)
    no_full_load()
    fast = ColBERT.from_pretrained(model_dir, backend="onnx", quantize=quantize)
    assert isinstance(fast.tokenizer, RustTokenizer)
    assert len(exports) == 1
    assert fast.spec() == first.spec() and fast.dim == first.dim and repr(fast) == repr(first)
    got = encode_all(fast)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert fast.document_token_budget == first.document_token_budget


def test_the_fast_tokenizer_reproduces_the_transformers_tokenizer(model_dir):
    full = load_tokenizer(model_dir)
    fast = RustTokenizer.load(model_dir)
    texts = list(CHECK_TEXTS) + TEXTS
    for limit in (None, 3, 8, 47):
        options = {} if limit is None else {"truncation": True, "max_length": limit}
        assert fast(texts, **options)["input_ids"] == full(texts, **options)["input_ids"]
    assert fast("apple", add_special_tokens=False)["input_ids"] == full("apple", add_special_tokens=False)["input_ids"]
    for name in ("pad", "cls", "sep", "mask", "unk", "bos"):
        assert getattr(fast, f"{name}_token_id") == getattr(full, f"{name}_token_id")
        assert getattr(fast, f"{name}_token") == getattr(full, f"{name}_token")
    assert fast.convert_tokens_to_ids(["apple", "no-such-token"]) == full.convert_tokens_to_ids(["apple", "no-such-token"])
    assert fast.num_special_tokens_to_add() == full.num_special_tokens_to_add()
    assert token_check(fast, [8, 47]) == token_check(full, [8, 47])
    # what it does not answer itself goes to the transformers tokenizer (offsets for explain and chunking)
    offsets = fast("apple banana", return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert [tuple(o) for o in offsets] == [(0, 5), (6, 12)]
    assert fast.convert_ids_to_tokens(full("apple")["input_ids"]) == ["[CLS]", "apple", "[SEP]"]


def test_a_folder_without_tokenizer_json_has_no_fast_tokenizer(model_dir):
    (model_dir / "tokenizer.json").unlink()
    assert RustTokenizer.load(model_dir) is None


@pytest.mark.parametrize("change", ["weights", "projection", "tokenizer record", "graph", "versions"])
def test_anything_changed_falls_back_to_the_full_load(model_dir, exports, change, monkeypatch):
    ColBERT.from_pretrained(model_dir, backend="onnx")
    graph = model_dir / "onnx" / "latelex-colbert-fp32.onnx"
    sidecar = graph.with_suffix(".json")
    if change == "weights":  # the backbone retrained in place
        build_bert(model_dir, seed=9)
    elif change == "projection":
        other = ColBERT.from_backbone(model_dir, dim=16, seed=4, doc_maxlen=48)
        other.save(model_dir.parent / "other")
        (model_dir / "projection.safetensors").write_bytes((model_dir.parent / "other" / "projection.safetensors").read_bytes())
    elif change == "tokenizer record":
        meta = json.loads(sidecar.read_text())
        meta["sources"]["tokens"]["ids"]["whole"][0] = [1, 2, 3]
        sidecar.write_text(json.dumps(meta))
    elif change == "graph":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    else:
        monkeypatch.setattr(onnx_backend, "source_versions",
                            lambda engine="onnxruntime", quantize=None: {"transformers": "0.0"})
    opened = []
    real = colbert_module.load_transformer
    monkeypatch.setattr(colbert_module, "load_transformer", lambda *a, **k: opened.append(1) or real(*a, **k))
    encoder = ColBERT.from_pretrained(model_dir, backend="onnx")
    assert opened == [1]  # the full load ran
    expected_exports = 2 if change in ("weights", "projection", "graph") else 1
    assert len(exports) == expected_exports
    reference = ColBERT.from_pretrained(model_dir)
    onnx_backend_result = onnx_backend.compare(encode_all(reference), encode_all(encoder), None)
    assert onnx_backend_result.passed, onnx_backend_result.describe()
    if change != "versions":  # the record is renewed: the next load is fast again
        again = []
        monkeypatch.setattr(colbert_module, "load_transformer", lambda *a, **k: again.append(1) or real(*a, **k))
        ColBERT.from_pretrained(model_dir, backend="onnx")
        assert again == []


def test_an_index_searched_through_a_fast_opened_encoder(model_dir, no_full_load, tmp_path):
    docs = ["apple banana fruit", "cancer risk study patients", "protein gene cells", "late interaction token vectors"]
    encoder = ColBERT.from_pretrained(model_dir, backend="onnx")
    Retriever.build(tmp_path / "idx", encoder, docs, kind="flat")
    expected = Retriever.open(tmp_path / "idx").search("protein cells", k=2)
    no_full_load()
    retriever = Retriever.open(tmp_path / "idx")
    assert isinstance(retriever.encoder.tokenizer, RustTokenizer)
    assert [(h.doc_id, round(h.score, 5)) for h in retriever.search("protein cells", k=2)] == \
        [(h.doc_id, round(h.score, 5)) for h in expected]


def test_the_source_digest_covers_what_loading_reads(tmp_path):
    folder = tmp_path / "model"
    (folder / "1_Dense").mkdir(parents=True)
    (folder / "checkpoint-100").mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "path": ""}, {"idx": 1, "path": "1_Dense"}]))
    (folder / "1_Dense" / "model.safetensors").write_bytes(b"projection")
    first = onnx_cache.source_digest([folder])
    for unread in ("README.md", "optimizer.pt", "checkpoint-100/model.safetensors", "onnx/x.onnx"):
        (folder / unread).parent.mkdir(exist_ok=True)
        (folder / unread).write_bytes(b"anything")
    assert onnx_cache.source_digest([folder]) == first  # a training run's state and the cache are not read
    (folder / "1_Dense" / "model.safetensors").write_bytes(b"another projection")
    second = onnx_cache.source_digest([folder])
    assert second != first
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert onnx_cache.source_digest([folder]) not in (first, second)


def test_a_plain_encoder_opens_fast_at_the_backbone_width(tmp_path, no_full_load):
    plain = build_bert(tmp_path / "plain")  # no projection: vectors at the hidden size
    first = ColBERT.from_pretrained(plain, query_augmentation=False, backend="onnx")
    expected = encode_all(first)
    no_full_load()
    fast = ColBERT.from_pretrained(plain, query_augmentation=False, backend="onnx")
    assert fast.dim == first.dim == 32 and fast.max_positions == first.max_positions
    assert all(torch.equal(a, b) for a, b in zip(expected, encode_all(fast)))


# --- SPLADE: the same fast open, for the document graph and a separate query encoder's graph ----------------------


def dense_rows(batch) -> torch.Tensor:
    rows = torch.zeros(len(batch), batch.vocab_size)
    for i, vector in enumerate(batch):
        rows[i, torch.as_tensor(vector.ids, dtype=torch.long)] = torch.as_tensor(vector.weights, dtype=torch.float32)
    return rows


def splade_all(encoder) -> torch.Tensor:
    return torch.cat([dense_rows(encoder.encode_queries(TEXTS)), dense_rows(encoder.encode_documents(TEXTS))])


@pytest.fixture
def no_full_splade_load(monkeypatch):
    from latelex.encoders import splade as splade_module

    def refuse(*args, **kwargs):
        raise AssertionError("the torch model was loaded")

    def arm():
        monkeypatch.setattr(splade_module, "_load_mlm", refuse)
        monkeypatch.setattr(splade_module, "load_tokenizer", refuse)

    return arm


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_recorded_splade_graph_opens_without_the_torch_model(tmp_path, no_full_splade_load, exports, quantize):
    from latelex import Splade

    mlm = build_bert(tmp_path / "mlm", masked_lm=True, seed=5)
    first = Splade.from_pretrained(mlm, doc_maxlen=48, backend="onnx", quantize=quantize)
    expected = splade_all(first)
    torch_rows = splade_all(Splade.from_pretrained(mlm, doc_maxlen=48))
    sidecar = json.loads((mlm / "onnx" / f"latelex-splade-document-max-relu-{quantize or 'fp32'}.json").read_text())
    assert sidecar["sources"]["backbone"]["vocab_size"] == first.vocab_size
    assert 49 in sidecar["sources"]["tokens"]["limits"]  # one past the document length: how long texts are found
    no_full_splade_load()
    fast = Splade.from_pretrained(mlm, doc_maxlen=48, backend="onnx", quantize=quantize)
    assert isinstance(fast.tokenizer, RustTokenizer) and len(exports) == 1
    assert fast.vocab_size == first.vocab_size and fast.document_token_budget == first.document_token_budget
    assert torch.equal(splade_all(fast), expected)
    assert [t for t, _ in fast.explain(fast.encode_documents(["apple banana"])[0], top=3)] == \
        [t for t, _ in first.explain(first.encode_documents(["apple banana"])[0], top=3)]
    if quantize is None:
        assert torch.allclose(expected, torch_rows, atol=1e-4)


def test_a_separate_query_encoder_opens_fast_too_and_a_retrained_one_falls_back(tmp_path, no_full_splade_load,
                                                                                exports, monkeypatch):
    from latelex import Splade
    from latelex.encoders import splade as splade_module

    docs = build_bert(tmp_path / "doc", masked_lm=True, seed=1)
    queries = build_bert(tmp_path / "q", masked_lm=True, seed=2)
    first = Splade.from_pretrained(docs, query_model=queries, backend="onnx")
    expected = splade_all(first)
    assert set(first._graphs) == {"document", "query"} and len(exports) == 2
    real_load = splade_module._load_mlm
    no_full_splade_load()
    fast = Splade.from_pretrained(docs, query_model=queries, backend="onnx")
    assert set(fast._graphs) == {"document", "query"} and torch.equal(splade_all(fast), expected)
    build_bert(queries, masked_lm=True, seed=3)  # the query encoder retrained in place
    loaded = []
    monkeypatch.setattr(splade_module, "_load_mlm", lambda *a, **k: loaded.append(1) or real_load(*a, **k))
    monkeypatch.setattr(splade_module, "load_tokenizer", load_tokenizer)
    renewed = Splade.from_pretrained(docs, query_model=queries, backend="onnx")
    assert loaded == [1, 1] and len(exports) == 3  # both models loaded, only the query graph exported again
    reference = Splade.from_pretrained(docs, query_model=queries)
    assert torch.allclose(splade_all(renewed), splade_all(reference), atol=1e-4)
    assert not torch.allclose(splade_all(renewed), expected, atol=1e-4)
