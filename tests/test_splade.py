from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from latelex.config import SpladeConfig
from latelex.encoders.splade import Splade
from latelex.errors import ConfigError, InputError, ModelError
from latelex.types import SparseBatch

from tiny_models import WORDS, build_bert

QUERIES = ["what causes cancer?", "healthy fruit", "neural search with sparse vectors", "how does a vaccine work"]
DOCS = [
    "The study of cancer risk in patients given a new drug.",
    "An apple a day: fruits are good for health.",
    "Learned sparse retrieval scores a document by a dot product of vectors.",
    "A vaccine trains the immune system; this trial measured its effect.",
    "red",
]


@pytest.fixture(scope="module")
def splade(tiny_mlm) -> Splade:
    return Splade.from_pretrained(tiny_mlm, device="cpu")


def dense(batch: SparseBatch) -> np.ndarray:
    return batch.to_scipy().toarray()


def reference(model_dir: Path, texts: list[str], pooling: str, max_length: int) -> np.ndarray:
    """SPLADE weights computed the plain way: full logits, log1p(relu), padding masked, pooled over tokens."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
    pooled = weights.max(dim=1).values if pooling == "max" else weights.sum(dim=1)
    return pooled.numpy()


def assert_well_formed(batch: SparseBatch, n: int, vocab: int) -> None:
    assert len(batch) == n and batch.vocab_size == vocab
    assert batch.indptr.dtype == np.int64 and batch.indices.dtype == np.int32 and batch.values.dtype == np.float32
    assert np.all(batch.values > 0)
    for v in batch:
        assert np.all(np.diff(v.ids) > 0)


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_matches_plain_reference(tiny_mlm, pooling):
    encoder = Splade.from_pretrained(tiny_mlm, pooling=pooling, device="cpu")
    docs = encoder.encode_documents(DOCS, batch_size=2)
    queries = encoder.encode_queries(QUERIES)
    assert_well_formed(docs, len(DOCS), encoder.vocab_size)
    np.testing.assert_allclose(dense(docs), reference(tiny_mlm, DOCS, pooling, 256), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense(queries), reference(tiny_mlm, QUERIES, pooling, 64), rtol=1e-5, atol=1e-5)


def test_memory_budget_splits_batches_without_changing_vectors(tiny_mlm):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(n))) for n in (250, 280, 200, 300, 30, 260)]
    small = Splade.from_pretrained(tiny_mlm, device="cpu", doc_maxlen=400, memory_budget_mb=1)
    calls: list[tuple[int, int]] = []
    small.model.register_forward_hook(lambda mod, args, kwargs, out: calls.append(tuple(kwargs["input_ids"].shape)),
                                      with_kwargs=True)
    split = small.encode_documents(texts, batch_size=6)
    whole = Splade.from_pretrained(tiny_mlm, device="cpu", doc_maxlen=400).encode_documents(texts, batch_size=6)
    vocab = small.vocab_size
    assert len(calls) > 1 and all(rows * length * vocab * 4 <= (1 << 20) for rows, length in calls)
    assert sum(rows for rows, _ in calls) == len(texts)
    np.testing.assert_allclose(dense(split), dense(whole), rtol=1e-5, atol=1e-6)


def test_top_k_and_threshold_pruning(tiny_mlm, splade):
    full = dense(splade.encode_documents(DOCS))
    pruned = Splade.from_pretrained(tiny_mlm, device="cpu", doc_top_k=5, query_top_k=3)
    top = pruned.encode_documents(DOCS)
    assert all(len(v) == 5 for v in top)
    for row, v in zip(full, top):
        np.testing.assert_allclose(np.sort(v.weights), np.sort(row)[-5:], rtol=1e-6)
    assert all(len(v) == 3 for v in pruned.encode_queries(QUERIES))

    threshold = float(np.median(full[full > 0]))
    cut = Splade.from_pretrained(tiny_mlm, device="cpu", threshold=threshold).encode_documents(DOCS)
    assert np.all(cut.values > threshold)
    expected = np.where(full > threshold, full, 0.0)
    np.testing.assert_allclose(dense(cut), expected, rtol=1e-6)


def test_results_come_back_in_input_order(splade):
    together = dense(splade.encode_documents(DOCS, batch_size=2))
    one_by_one = np.vstack([dense(splade.encode_documents([d])) for d in DOCS])
    reversed_ = dense(splade.encode_documents(DOCS[::-1], batch_size=3))[::-1]
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together, reversed_, rtol=1e-5, atol=1e-6)


def test_empty_inputs(splade):
    with pytest.raises(InputError, match="position 1"):
        splade.encode_documents(["fine", "   ", "also fine"])
    with pytest.raises(InputError, match="position 0"):
        splade.encode_queries([""])
    with pytest.raises(InputError, match="single string"):
        splade.encode_queries("what is a cell")
    empty = splade.encode_queries([])
    assert len(empty) == 0 and empty.vocab_size == splade.vocab_size


def test_long_queries_warn_once_per_call(tiny_mlm):
    encoder = Splade.from_pretrained(tiny_mlm, device="cpu", query_maxlen=8)
    long_query = "the risk of cancer in patients with a heart disease and a brain virus"
    with pytest.warns(UserWarning, match="3 of 4 queries") as record:
        out = encoder.encode_queries([long_query, long_query + " now", "cell", long_query + " too"])
    assert len([w for w in record if "truncated" in str(w.message)]) == 1
    # The truncated query is the encoding of its first 8 tokens (special tokens included).
    ids = encoder.tokenizer(long_query, truncation=True, max_length=8)["input_ids"]
    clipped = encoder.tokenizer.decode(ids[1:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = encoder.encode_queries([clipped, "cell"])
        encoder.encode_documents([long_query])  # documents are cut silently
    np.testing.assert_allclose(dense(out)[0], dense(short)[0], rtol=1e-5, atol=1e-6)


def test_save_and_reload_gives_identical_vectors(tiny_mlm, tmp_path):
    encoder = Splade.from_pretrained(tiny_mlm, device="cpu", pooling="sum", doc_top_k=7, doc_maxlen=32)
    target = encoder.save(tmp_path / "saved")
    manifest = json.loads((target / "latelex_model.json").read_text())
    assert manifest["format"] == "latelex-splade" and manifest["format_version"] == 1
    assert manifest["query_encoder"] is None and manifest["config"]["pooling"] == "sum"
    assert (target / "model.safetensors").exists() and not list(target.glob("*.bin"))
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no temporary folder left behind

    again = Splade.from_pretrained(target, device="cpu")
    assert again.config == encoder.config
    for a, b in ((encoder.encode_documents(DOCS), again.encode_documents(DOCS)),
                 (encoder.encode_queries(QUERIES), again.encode_queries(QUERIES))):
        assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.values, b.values)

    with pytest.raises(InputError, match="already exists"):
        encoder.save(target)
    encoder.save(target, overwrite=True)
    assert Splade.from_pretrained(target, device="cpu").config == encoder.config


def test_spec_round_trip(tiny_mlm, splade):
    spec = splade.spec()
    assert spec == json.loads(json.dumps(spec))
    assert spec["family"] == "splade" and spec["model"] == str(Path(tiny_mlm).resolve())
    assert spec["query_model"] is None
    again = Splade.from_spec(spec, device="cpu")
    assert again.config == splade.config
    np.testing.assert_array_equal(dense(again.encode_queries(QUERIES)), dense(splade.encode_queries(QUERIES)))
    with pytest.raises(ModelError):
        Splade.from_spec({"family": "colbert", "model": "x"})


def test_separate_query_encoder(tiny_mlm, splade, tmp_path):
    other = build_bert(tmp_path / "query-mlm", masked_lm=True, seed=1)
    pair = Splade.from_pretrained(tiny_mlm, query_model=other, device="cpu")
    alone = Splade.from_pretrained(other, device="cpu")
    np.testing.assert_allclose(dense(pair.encode_queries(QUERIES)), dense(alone.encode_queries(QUERIES)), atol=1e-6)
    np.testing.assert_allclose(dense(pair.encode_documents(DOCS)), dense(splade.encode_documents(DOCS)), atol=1e-6)
    assert pair.spec()["query_model"] == str(other.resolve())
    assert "query_model" in repr(pair)

    saved = pair.save(tmp_path / "pair")
    assert json.loads((saved / "latelex_model.json").read_text())["query_encoder"] == "query/"
    reloaded = Splade.from_pretrained(saved, device="cpu")
    assert reloaded.query_model is not None
    np.testing.assert_array_equal(dense(reloaded.encode_queries(QUERIES)), dense(pair.encode_queries(QUERIES)))

    # A query encoder over another vocabulary is refused.
    from transformers import BertConfig, BertForMaskedLM

    bigger = tmp_path / "bigger"
    shutil.copytree(other, bigger)
    config = BertConfig.from_pretrained(str(other))
    config.vocab_size += 10
    BertForMaskedLM(config).save_pretrained(str(bigger))
    with pytest.raises(ModelError, match="share one vocabulary"):
        Splade.from_pretrained(tiny_mlm, query_model=bigger, device="cpu")


def write_sparse_encoder(root: Path, mlm: Path, pooling: str, max_length: int | None) -> Path:
    """A sentence-transformers SparseEncoder folder: the MLM at the root, then a SpladePooling module."""
    shutil.copytree(mlm, root)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"},
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_SpladePooling").mkdir()
    (root / "1_SpladePooling" / "config.json").write_text(
        json.dumps({"pooling_strategy": pooling, "activation_function": "relu", "word_embedding_dimension": None})
    )
    if max_length is not None:
        settings = {"max_seq_length": max_length, "do_lower_case": False}
        (root / "sentence_bert_config.json").write_text(json.dumps(settings))
    return root


def test_sentence_transformers_sparse_encoder_folder(tiny_mlm, tmp_path):
    folder = write_sparse_encoder(tmp_path / "st", tiny_mlm, "sum", 16)
    encoder = Splade.from_pretrained(folder, device="cpu")
    assert encoder.config.pooling == "sum"
    assert encoder.config.doc_maxlen == 16 and encoder.config.query_maxlen == 16
    plain = Splade.from_pretrained(tiny_mlm, device="cpu", pooling="sum", doc_maxlen=16)
    np.testing.assert_allclose(dense(encoder.encode_documents(DOCS)), dense(plain.encode_documents(DOCS)), atol=1e-6)
    # Explicit settings still win over what the folder declares.
    assert Splade.from_pretrained(folder, device="cpu", doc_maxlen=32).config.doc_maxlen == 32


def write_router(root: Path, mlm: Path, query: str) -> Path:
    """A SparseEncoder whose single Router module sends queries and documents through different modules."""
    root.mkdir()
    types = {
        "document_0_MLMTransformer": "sentence_transformers.sparse_encoder.models.MLMTransformer",
        "document_1_SpladePooling": "sentence_transformers.sparse_encoder.models.SpladePooling",
    }
    if query == "static":
        types["query_0_SparseStaticEmbedding"] = "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding"
        query_route = ["query_0_SparseStaticEmbedding"]
    else:
        types["query_0_MLMTransformer"] = types["document_0_MLMTransformer"]
        types["query_1_SpladePooling"] = types["document_1_SpladePooling"]
        query_route = ["query_0_MLMTransformer", "query_1_SpladePooling"]
    for name in types:
        if name.endswith("MLMTransformer"):
            shutil.copytree(mlm, root / name)
        else:
            (root / name).mkdir()
            (root / name / "config.json").write_text(json.dumps({"pooling_strategy": "max"}))
    router = {
        "types": types,
        "structure": {"query": query_route, "document": ["document_0_MLMTransformer", "document_1_SpladePooling"]},
        "parameters": {"default_route": "document"},
    }
    (root / "router_config.json").write_text(json.dumps(router))
    (root / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Router"}])
    )
    return root


def test_sentence_transformers_router(tiny_mlm, splade, tmp_path):
    asymmetric = Splade.from_pretrained(write_router(tmp_path / "two", tiny_mlm, "mlm"), device="cpu")
    assert asymmetric.query_model is not None
    np.testing.assert_allclose(
        dense(asymmetric.encode_queries(QUERIES)), dense(splade.encode_queries(QUERIES)), atol=1e-6
    )
    with pytest.raises(ModelError, match="SparseStaticEmbedding.*not support"):
        Splade.from_pretrained(write_router(tmp_path / "static", tiny_mlm, "static"), device="cpu")


def test_folders_that_are_not_splade(tiny_bert, tmp_path):
    with pytest.raises(ModelError, match="masked-language-model head"):
        Splade.from_pretrained(tiny_bert, device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        Splade.from_pretrained(tmp_path / "nowhere", device="cpu")


def test_configuration_errors(tiny_mlm):
    with pytest.raises(ConfigError, match="poolling"):
        Splade.from_pretrained(tiny_mlm, poolling="max")
    with pytest.raises(ConfigError):
        Splade.from_pretrained(tiny_mlm, pooling="mean")
    encoder = Splade.from_pretrained(tiny_mlm, config=SpladeConfig(doc_maxlen=20), doc_top_k=4, device="cpu")
    assert encoder.config.doc_maxlen == 20 and encoder.config.doc_top_k == 4
    text = repr(encoder)
    assert "pooling='max'" in text and "doc_maxlen=20" in text and f"vocab_size={encoder.vocab_size}" in text


def test_explain(splade):
    vector = splade.encode_queries(["cancer"])[0]
    pairs = splade.explain(vector)
    assert len(pairs) == len(vector)
    weights = [w for _, w in pairs]
    assert weights == sorted(weights, reverse=True)
    assert all(isinstance(t, str) for t, _ in pairs)
    assert splade.explain(vector, top=3) == pairs[:3]


# ---------------------------------------------------------------------- the real checkpoint


@pytest.fixture(scope="module")
def splade_tiny():
    from conftest import shared_path

    return shared_path("models", "splade-tiny")


@pytest.mark.data
def test_splade_tiny_loads_every_weight(splade_tiny):
    from latelex.encoders.loading import read_state_dict

    encoder = Splade.from_pretrained(splade_tiny, device="cpu")
    stored = read_state_dict(splade_tiny)
    model = encoder.model
    assert encoder.vocab_size == 30522
    word = model.get_input_embeddings().weight
    assert torch.equal(model.get_output_embeddings().weight, word)
    assert torch.equal(word, stored["bert.embeddings.word_embeddings.weight"])
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, tensor in stored.items():
        renamed = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        assert torch.equal(params[renamed], tensor), name
    assert torch.equal(model.cls.predictions.decoder.bias, stored["cls.predictions.bias"])


@pytest.mark.data
def test_splade_tiny_encodes_sensibly(splade_tiny, tmp_path):
    from latelex.index.sparse import SparseIndex

    encoder = Splade.from_pretrained(splade_tiny, device="cpu")
    queries = encoder.encode_queries(["what causes lung cancer?", "how do vaccines work"])
    top = [token for token, _ in encoder.explain(queries[0], top=8)]
    assert "cancer" in top and "lung" in top
    assert "vaccine" in [token for token, _ in encoder.explain(queries[1], top=8)]
    docs = [
        "Smoking is the leading cause of lung cancer.",
        "Vaccines train the immune system to recognise a virus.",
        "Bananas are a good source of potassium.",
    ]
    index = SparseIndex.build(tmp_path / "idx", ["smoke", "vax", "fruit"], encoder.encode_documents(docs),
                              encoder=encoder.spec())
    hits = index.search(queries, k=2)
    assert [h[0].doc_id for h in hits] == ["smoke", "vax"]
    assert Splade.from_spec(index.encoder, device="cpu").config == encoder.config
