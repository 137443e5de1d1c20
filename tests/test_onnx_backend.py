"""The onnx backend: exported encoders agree with torch, the graph cache is reused and repaired, indexes built on one
backend are searched with the other, and the CLI flags reach the encoder (tiny random models; the built-in model
once)."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the onnx backend needs onnx: pip install 'latelex[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime: pip install 'latelex[onnx]'")

from latelex import ColBERT, Retriever, Splade  # noqa: E402
from latelex.cli import main  # noqa: E402
from latelex.config import BackendConfig, same_encoder  # noqa: E402
from latelex.encoders import encoder_from_spec, onnx_backend  # noqa: E402
from latelex.encoders.onnx_cache import cache_folder  # noqa: E402
from latelex.errors import ConfigError, InputError, ModelError  # noqa: E402
from latelex.index.token_vectors import check_same_encoder  # noqa: E402
from latelex.types import Document  # noqa: E402
from tiny_models import WORDS, build_bert  # noqa: E402

TEXTS = [
    "cells",
    "what is the risk of cancer for patients in this study",
    "apple banana fruit, red & green!",
    " ".join(WORDS),  # longer than the document limit below: truncated
    "the protein gene",
    "late interaction token vectors score each document by the best match of every query token",
    "x",
]
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than.*truncated:UserWarning")

QUERIES = ["cancer risk study", "protein gene cells", "apple banana fruit", "search query document retrieval",
           "vaccine dose trial", "blood heart brain"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A private copy of a tiny BertModel, so that its onnx/ cache folder is this module's own."""
    return build_bert(tmp_path_factory.mktemp("onnx-bert") / "bert")


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return build_bert(tmp_path_factory.mktemp("onnx-mlm") / "mlm", masked_lm=True)


@pytest.fixture(scope="module")
def colbert_torch(bert_dir):
    return ColBERT.from_backbone(bert_dir, dim=16, seed=1, doc_maxlen=48)


@pytest.fixture(scope="module")
def colbert_onnx(bert_dir):
    return ColBERT.from_backbone(bert_dir, dim=16, seed=1, doc_maxlen=48, backend="onnx")


@pytest.fixture(scope="module")
def splade_torch(mlm_dir):
    return Splade.from_pretrained(mlm_dir, doc_maxlen=48)


@pytest.fixture(scope="module")
def splade_onnx(mlm_dir):
    return Splade.from_pretrained(mlm_dir, doc_maxlen=48, backend="onnx")


def dense(batch, vocab: int) -> torch.Tensor:
    out = torch.zeros(len(batch), vocab, dtype=torch.float64)
    for row, vector in enumerate(batch):
        out[row, torch.as_tensor(np.asarray(vector.ids), dtype=torch.long)] = torch.as_tensor(
            np.asarray(vector.weights), dtype=torch.float64)
    return out


def assert_vectors_match(reference, candidate, quantize=None):
    """Same shapes; float32 within FP32_MAX_ABS_DIFF of torch, int8 at a mean cosine >= INT8_MIN_MEAN_COSINE."""
    assert [tuple(r.shape) for r in reference] == [tuple(c.shape) for c in candidate]
    result = onnx_backend.compare(reference, candidate, quantize)
    assert result.passed, result.describe()


# ---------------------------------------------------------------------- agreement with torch


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_colbert_onnx_matches_torch_for_queries_and_documents_of_any_length(colbert_torch, colbert_onnx, batch_size):
    assert colbert_onnx.backend == "onnx" and colbert_onnx.quantize is None
    for encode in ("encode_queries", "encode_documents"):
        reference = getattr(colbert_torch, encode)(TEXTS, batch_size=batch_size)
        candidate = getattr(colbert_onnx, encode)(TEXTS, batch_size=batch_size)
        assert_vectors_match(reference, candidate)
        assert max(float((r - c).abs().max()) for r, c in zip(reference, candidate)) <= onnx_backend.FP32_MAX_ABS_DIFF


def test_colbert_without_projection_or_augmentation_matches_torch(bert_dir):
    """A plain encoder (no projection: vectors at the backbone's width) with queries at their own length."""
    torch_enc = ColBERT.from_pretrained(bert_dir, query_augmentation=False)
    onnx_enc = ColBERT.from_pretrained(bert_dir, query_augmentation=False, backend="onnx")
    assert onnx_enc.projection is None and onnx_enc.dim == torch_enc.dim == 32
    assert_vectors_match(torch_enc.encode_queries(TEXTS, batch_size=2), onnx_enc.encode_queries(TEXTS, batch_size=2))
    assert_vectors_match(torch_enc.encode_documents(TEXTS), onnx_enc.encode_documents(TEXTS))


def test_a_single_query_runs_at_its_own_length(bert_dir, colbert_onnx, monkeypatch):
    plain = ColBERT.from_pretrained(bert_dir, query_augmentation=False, backend="onnx")
    shapes = []
    for encoder in (plain, colbert_onnx):
        def recording(feeds, real=encoder._graph.run):
            shapes.append(tuple(feeds["input_ids"].shape))
            return real(feeds)

        monkeypatch.setattr(encoder._graph, "run", recording)
    query = "protein gene cells"
    own = len(plain.tokenizer(query)["input_ids"])
    assert plain.encode_queries([query])[0].shape[0] == own
    colbert_onnx.encode_queries([query])
    # no padding to a batch: the plain query at its own length; with augmentation, the [MASK]-padded query_maxlen
    assert shapes == [(1, own), (1, colbert_onnx.config.query_maxlen)]


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_splade_onnx_matches_torch_for_varied_lengths_and_batches(mlm_dir, splade_torch, splade_onnx, pooling):
    torch_enc = splade_torch if pooling == "max" else Splade.from_pretrained(mlm_dir, doc_maxlen=48, pooling="sum")
    onnx_enc = splade_onnx if pooling == "max" else Splade.from_pretrained(mlm_dir, doc_maxlen=48, pooling="sum",
                                                                           backend="onnx")
    vocab = torch_enc.vocab_size
    assert onnx_enc.vocab_size == vocab
    for batch_size in (1, 4, 32):
        for encode in ("encode_queries", "encode_documents"):
            reference = dense(getattr(torch_enc, encode)(TEXTS, batch_size=batch_size), vocab)
            candidate = dense(getattr(onnx_enc, encode)(TEXTS, batch_size=batch_size), vocab)
            scale = max(1.0, float(reference.abs().max()))
            assert float((reference - candidate).abs().max()) <= onnx_backend.FP32_MAX_ABS_DIFF * scale


def test_int8_stays_within_its_bound(bert_dir, mlm_dir, colbert_torch, splade_torch):
    colbert = ColBERT.from_backbone(bert_dir, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")
    assert colbert.quantize == "int8" and colbert._graph.verification["metric"] == "mean_cosine"
    assert colbert._graph.verification["value"] >= onnx_backend.INT8_MIN_MEAN_COSINE
    assert_vectors_match(colbert_torch.encode_documents(TEXTS), colbert.encode_documents(TEXTS), "int8")
    assert_vectors_match(colbert_torch.encode_queries(TEXTS), colbert.encode_queries(TEXTS), "int8")
    splade = Splade.from_pretrained(mlm_dir, doc_maxlen=48, backend="onnx", quantize="int8")
    vocab = splade_torch.vocab_size
    reference = dense(splade_torch.encode_documents(TEXTS), vocab)
    assert_vectors_match(list(reference), list(dense(splade.encode_documents(TEXTS), vocab)), "int8")
    # the int8 graph is smaller than the float32 one beside it
    sizes = {p.name: p.stat().st_size for p in (bert_dir / "onnx").glob("latelex-colbert-seed1-*.onnx")}
    assert sizes["latelex-colbert-seed1-int8.onnx"] < sizes["latelex-colbert-seed1-fp32.onnx"]


def test_the_builtin_model_runs_on_onnx():
    from latelex.fsio import user_cache_dir
    from latelex.models import DEFAULT_COLBERT_DIR, DEFAULT_COLBERT_MODEL

    texts = ["does vitamin D lower cancer risk?", "Vitamin D and cancer: a randomised trial in 25,871 adults."]
    reference = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu")
    encoder = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, backend="onnx")  # its LoRA adapters merged, then exported
    assert encoder.spec() == {**reference.spec(), "backend": "onnx", "quantize": None}
    assert_vectors_match(reference.encode_queries(texts[:1]), encoder.encode_queries(texts[:1]))
    assert_vectors_match(reference.encode_documents(texts), encoder.encode_documents(texts))
    # a built-in model's graph goes to the user cache, never into the installed package
    assert not (DEFAULT_COLBERT_DIR / "onnx").exists()
    assert encoder._graph.path.is_relative_to(user_cache_dir() / "onnx")


# ---------------------------------------------------------------------- the cache


def test_the_cache_is_reused_and_records_the_key_and_verification(bert_dir, exports):
    folder = bert_dir / "onnx"
    ColBERT.from_backbone(bert_dir, dim=8, seed=5, backend="onnx")
    assert len(exports) == 1
    again = ColBERT.from_backbone(bert_dir, dim=8, seed=5, backend="onnx")
    assert len(exports) == 1  # the second load exported nothing
    sidecar = json.loads((folder / "latelex-colbert-seed5-fp32.json").read_text())
    assert sidecar["verification"]["passed"] and sidecar["verification"]["value"] <= onnx_backend.FP32_MAX_ABS_DIFF
    assert sidecar["key_parts"]["family"] == "colbert" and len(sidecar["key"]) == 64
    assert again._graph.verification == sidecar["verification"]
    assert not list(folder.glob("*.tmp*")) and not list(folder.glob(".*lock"))


@pytest.mark.parametrize("damage", ["stale key", "truncated", "garbage", "no sidecar"])
def test_a_stale_or_corrupt_cache_is_rebuilt_with_one_log_line(bert_dir, exports, caplog, damage):
    ColBERT.from_backbone(bert_dir, dim=8, seed=6, backend="onnx")
    graph = bert_dir / "onnx" / "latelex-colbert-seed6-fp32.onnx"
    sidecar = graph.with_suffix(".json")
    if damage == "stale key":
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "key": "0" * 64}))
    elif damage == "truncated":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif damage == "garbage":
        graph.write_bytes(b"\x00garbage" * (graph.stat().st_size // 8))
    else:
        sidecar.unlink()
    exports.clear()
    with caplog.at_level(logging.WARNING, logger="latelex.encoders.onnx_backend"):
        encoder = ColBERT.from_backbone(bert_dir, dim=8, seed=6, backend="onnx")
    assert len(exports) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "latelex.encoders.onnx_backend"]
    assert len(lines) == 1 and "rebuilding the ONNX graph latelex-colbert-seed6-fp32" in lines[0]
    assert encoder.encode_queries(["cells"])[0].shape == (32, 8)
    exports.clear()
    ColBERT.from_backbone(bert_dir, dim=8, seed=6, backend="onnx")
    assert exports == []  # repaired: used as is again


def test_new_weights_in_the_same_folder_make_the_cache_stale(tmp_path, exports, caplog):
    model = build_bert(tmp_path / "mlm", masked_lm=True, seed=1)
    first = Splade.from_pretrained(model, backend="onnx").encode_documents(["apple banana"])
    build_bert(model, masked_lm=True, seed=2)  # retrained in place
    with caplog.at_level(logging.WARNING, logger="latelex.encoders.onnx_backend"):
        second = Splade.from_pretrained(model, backend="onnx").encode_documents(["apple banana"])
    assert len(exports) == 2
    assert any("stale key" in r.getMessage() for r in caplog.records)
    reference = Splade.from_pretrained(model).encode_documents(["apple banana"])
    vocab = first.vocab_size
    assert torch.allclose(dense(second, vocab), dense(reference, vocab), atol=1e-4)
    assert not torch.allclose(dense(first, vocab), dense(second, vocab), atol=1e-4)


def test_a_failed_verification_is_a_one_line_model_error_and_nothing_is_kept(bert_dir, monkeypatch):
    monkeypatch.setattr(onnx_backend, "FP32_MAX_ABS_DIFF", -1.0)
    with pytest.raises(ModelError, match=r"does not match torch \(max_abs_diff .*\); use backend='torch'$") as info:
        ColBERT.from_backbone(bert_dir, dim=8, seed=7, backend="onnx")
    assert "\n" not in str(info.value)
    assert not list((bert_dir / "onnx").glob("*seed7*")) and not list((bert_dir / "onnx").glob(".*seed7*"))


def test_the_cache_folder_is_beside_a_writable_model_else_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATELEX_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    assert cache_folder(model, local=True) == model / "onnx"
    assert cache_folder(model, local=False).parent == tmp_path / "cache" / "onnx"  # a Hub download or built-in
    assert cache_folder(model, local=True, override=tmp_path / "mine") == tmp_path / "mine"
    model.chmod(0o555)  # a read-only folder (root could still write into it: its mode says not to)
    try:
        assert cache_folder(model, local=True).parent == tmp_path / "cache" / "onnx"
    finally:
        model.chmod(0o755)
    monkeypatch.delenv("LATELEX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder(model, local=False).parent == tmp_path / "xdg" / "latelex" / "onnx"


def test_a_read_only_model_folder_caches_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATELEX_CACHE", str(tmp_path / "cache"))
    model = build_bert(tmp_path / "ro", masked_lm=True)
    model.chmod(0o555)
    try:
        encoder = Splade.from_pretrained(model, backend="onnx")
    finally:
        model.chmod(0o755)
    assert not (model / "onnx").exists()
    assert encoder._graphs["document"].path.is_relative_to(tmp_path / "cache" / "onnx")
    chosen = Splade.from_pretrained(model, backend="onnx", onnx_dir=tmp_path / "mine")  # a folder of one's choice
    assert chosen._graphs["document"].path.parent == tmp_path / "mine"


# ---------------------------------------------------------------------- specs, indexes and refusals


def test_spec_records_the_backend_and_rebuilds_it(colbert_torch, colbert_onnx, splade_torch, splade_onnx):
    assert "backend" not in colbert_torch.spec() and "backend" not in splade_torch.spec()  # torch specs are as before
    assert colbert_onnx.spec()["backend"] == "onnx" and splade_onnx.spec()["quantize"] is None
    assert same_encoder(colbert_torch.spec(), colbert_onnx.spec())
    assert same_encoder(splade_torch.spec(), splade_onnx.spec())
    assert not same_encoder(colbert_torch.spec(), {**colbert_onnx.spec(), "model": "another"})
    rebuilt = encoder_from_spec({**colbert_onnx.spec(), "quantize": "int8"})
    assert (rebuilt.backend, rebuilt.quantize) == ("onnx", "int8") and "quantize='int8'" in repr(rebuilt)
    assert encoder_from_spec(splade_onnx.spec()).backend == "onnx"
    assert encoder_from_spec(colbert_torch.spec()).backend == "torch"
    # an index's check of new vectors' encoder ignores the backend, not the model
    check_same_encoder(colbert_torch.spec(), colbert_onnx.spec(), "idx")
    with pytest.raises(InputError, match="different encoder"):
        check_same_encoder(colbert_torch.spec(), {**colbert_onnx.spec(), "config": {}}, "idx")


@pytest.mark.parametrize("family,kind", [("colbert", "plaid"), ("colbert", "flat"), ("splade", "inverted")])
def test_an_index_built_with_torch_is_searched_with_onnx(family, kind, colbert_torch, colbert_onnx, splade_torch,
                                                         splade_onnx, tmp_path):
    torch_enc, onnx_enc = (colbert_torch, colbert_onnx) if family == "colbert" else (splade_torch, splade_onnx)
    rng = np.random.default_rng(0)
    docs = [Document(f"d{i}", " ".join(rng.choice(WORDS, 12))) for i in range(40)]
    built = Retriever.build(tmp_path / "i", torch_enc, docs, kind=kind)
    want = [[h.doc_id for h in hits] for hits in built.search(QUERIES, k=5)]
    reopened = Retriever.open(tmp_path / "i", encoder=onnx_enc)
    got = [[h.doc_id for h in hits] for hits in reopened.search(QUERIES, k=5)]
    assert got == want
    assert "backend" not in Retriever.inspect(tmp_path / "i")["encoder"]  # built with torch
    # and the other way round: an index built on onnx records it, reopens on onnx, and torch searches it alike
    Retriever.build(tmp_path / "o", onnx_enc, docs, kind=kind)
    assert Retriever.inspect(tmp_path / "o")["encoder"]["backend"] == "onnx"
    onnx_again = Retriever.open(tmp_path / "o")
    assert onnx_again.encoder.backend == "onnx"
    assert [[h.doc_id for h in hits] for hits in onnx_again.search(QUERIES, k=5)] == want
    torch_again = Retriever.open(tmp_path / "o", encoder=torch_enc)
    assert [[h.doc_id for h in hits] for hits in torch_again.search(QUERIES, k=5)] == want
    # adding through another backend is allowed too (the same model within the verified tolerance)
    assert reopened.add([Document("new", docs[0].text)]).added == 1
    assert {h.doc_id for h in reopened.search(docs[0].text, k=2)} == {"d0", "new"}


def test_backend_settings_are_checked_before_anything_loads(bert_dir, monkeypatch):
    with pytest.raises(ConfigError, match="needs backend='onnx'"):
        ColBERT.from_pretrained(bert_dir, quantize="int8")
    with pytest.raises(ConfigError, match="backend must be one of"):
        Splade.from_pretrained(bert_dir, backend="tensorrt")
    with pytest.raises(ConfigError, match="quantize must be None or 'int8'"):
        BackendConfig("onnx", "int4")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'latelex\[onnx\]'"):
        ColBERT.from_pretrained(bert_dir, backend="onnx")


def test_an_onnx_encoder_cannot_be_saved_trained_or_moved(colbert_onnx, splade_onnx, tmp_path):
    with pytest.raises(ModelError, match="backend='torch'"):
        colbert_onnx.save(tmp_path / "c")
    with pytest.raises(ModelError, match="backend='torch'"):
        splade_onnx.save(tmp_path / "s")
    with pytest.raises(ModelError, match="backend='torch'"):
        colbert_onnx.add_lora()
    with pytest.raises(ModelError, match="load it again"):
        colbert_onnx.to("meta")
    from latelex.train.colbert_trainer import ColBERTTrainer
    from latelex.train.config import TrainConfig

    with pytest.raises(ConfigError, match="torch backend"):
        ColBERTTrainer.create(colbert_onnx, None, TrainConfig(output_dir=str(tmp_path / "t")))


# ---------------------------------------------------------------------- the command line


def test_cli_flags_reach_the_encoder(bert_dir, tmp_path, capsys):
    model = ColBERT.from_backbone(bert_dir, dim=16, seed=1).save(tmp_path / "model")
    (tmp_path / "docs.tsv").write_text("".join(f"d{i}\t{' '.join(WORDS[i:i + 8])}\n" for i in range(20)))
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(model), "--collection", str(tmp_path / "docs.tsv"),
                 "--kind", "flat", "--quantize", "int8"]) == 0
    assert "backend='onnx', quantize='int8'" in capsys.readouterr().err  # --quantize alone means onnx
    assert Retriever.inspect(idx)["encoder"]["backend"] == "onnx"
    assert main(["info", str(idx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder_backend"] == "onnx (int8)"
    assert info["onnx_int8_weights"].startswith(onnx_backend.int8_weights() + " on this CPU (")
    # the weight type that encoded the documents is recorded, and does not count when encoders are compared
    assert info["encoder"]["int8_weights"] == onnx_backend.int8_weights()
    assert info["onnx_int8_weights"].endswith(f"the index was built with {onnx_backend.int8_weights()} weights")
    assert same_encoder(info["encoder"], {k: v for k, v in info["encoder"].items() if k != "int8_weights"})
    assert (model / "onnx" / "latelex-colbert-int8.onnx").exists()
    for flags in ([], ["--backend", "torch"], ["--backend", "onnx"]):
        assert main(["-q", "search", str(idx), "--query", "cancer risk study", "-k", "3", *flags]) == 0
        assert "d" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a usage error
        main(["-q", "index", str(tmp_path / "x"), "--model", str(model), "--collection", str(tmp_path / "docs.tsv"),
              "--backend", "torch", "--quantize", "int8"])
    with pytest.raises(SystemExit):
        main(["-q", "search", str(idx), "--query", "x", "--backend", "tensorrt"])
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "o"), "--model", str(model), "--triples", str(tmp_path / "t.jsonl"),
              "--backend", "onnx"])
    shutil.rmtree(idx)
