"""ColBERT encoder: tokenisation rules, checkpoint formats against hand-built references, save/load, errors."""

from __future__ import annotations

import json
import shutil
import string
import warnings

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertModel

from latelex.config import ColBERTConfig
from latelex.encoders.colbert import ColBERT
from latelex.errors import ConfigError, InputError, ModelError

QUERIES = ["what is a cell?", "does the vaccine dose change the risk of heart disease"]
DOCS = ["The cell is small.", "A large study of patients: the drug, the dose, and the effect!", "apple"]


def _reference(folder, ids: list[list[int]], attention: list[list[int]], weight: torch.Tensor | None, keep: list[list[bool]]):
    """Vectors computed by hand: backbone -> projection -> L2 normalise -> keep rows."""
    model = BertModel.from_pretrained(str(folder)).eval()
    out = []
    with torch.no_grad():
        for row_ids, row_att, row_keep in zip(ids, attention, keep):
            hidden = model(input_ids=torch.tensor([row_ids]), attention_mask=torch.tensor([row_att])).last_hidden_state[0]
            if weight is not None:
                hidden = hidden @ weight.T
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
            out.append(hidden[torch.tensor(row_keep)])
    return out


def _query_ids(tok, text, maxlen, marker_id, attend=False):
    body = tok(text, add_special_tokens=False)["input_ids"][: maxlen - 3]
    ids = [tok.cls_token_id, marker_id, *body, tok.sep_token_id]
    att = [1] * len(ids)
    pad = maxlen - len(ids)
    return ids + [tok.mask_token_id] * pad, att + [1 if attend else 0] * pad


def _doc_ids(tok, text, maxlen, marker_id):
    body = tok(text, add_special_tokens=False)["input_ids"][: maxlen - 3]
    ids = [tok.cls_token_id, marker_id, *body, tok.sep_token_id]
    punct = {tok.convert_tokens_to_ids(c) for c in string.punctuation}
    return ids, [1] * len(ids), [i not in punct for i in ids]


@pytest.fixture(scope="module")
def stanford_folder(tiny_bert, tmp_path_factory):
    """A Stanford-format checkpoint: HF_ColBERT state dict (bert.* + linear.weight) and artifact.metadata."""
    folder = tmp_path_factory.mktemp("stanford")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(tiny_bert / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["HF_ColBERT"]
    (folder / "config.json").write_text(json.dumps(config))
    state = {f"bert.{k}": v.contiguous() for k, v in BertModel.from_pretrained(str(tiny_bert)).state_dict().items()}
    torch.manual_seed(1)
    state["linear.weight"] = torch.randn(16, 32)
    save_file(state, str(folder / "model.safetensors"))
    metadata = {"query_maxlen": 12, "doc_maxlen": 20, "dim": 16, "similarity": "cosine", "attend_to_mask_tokens": False,
                "mask_punctuation": True, "query_token_id": "[unused0]", "doc_token_id": "[unused1]"}
    (folder / "artifact.metadata").write_text(json.dumps(metadata))
    return folder


@pytest.fixture(scope="module")
def pylate_folder(tiny_bert, tmp_path_factory):
    """A PyLate folder: Transformer + Dense modules, prefix tokens '[Q] '/'[D] ' added to the vocabulary."""
    folder = tmp_path_factory.mktemp("pylate")
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    tok.add_tokens(["[Q] ", "[D] "])
    model = BertModel.from_pretrained(str(tiny_bert))
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]))
    (folder / "1_Dense").mkdir()
    (folder / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 8, "bias": False, "activation_function": "torch.nn.modules.linear.Identity"}))
    torch.manual_seed(2)
    save_file({"linear.weight": torch.randn(8, 32)}, str(folder / "1_Dense" / "model.safetensors"))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 10, "document_length": 24,
        "attend_to_expansion_tokens": True, "skiplist_words": list(string.punctuation), "do_query_expansion": True,
    }))
    return folder


def test_plain_encoder_is_normalised_hidden_states(tiny_bert):
    model = ColBERT.from_pretrained(tiny_bert)
    assert model.projection is None and model.dim == 32
    assert "no projection" in repr(model)
    tok = model.tokenizer
    docs = model.encode_documents(DOCS)
    ids = [tok(t)["input_ids"] for t in DOCS]
    ref = _reference(tiny_bert, ids, [[1] * len(i) for i in ids], None, [[True] * len(i) for i in ids])
    for got, want in zip(docs, ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    queries = model.encode_queries(QUERIES)
    assert [q.shape[0] for q in queries] == [len(tok(t)["input_ids"]) for t in QUERIES]


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_stanford_checkpoint_vectors(stanford_folder):
    model = ColBERT.from_pretrained(stanford_folder)
    assert model.checkpoint_format == "stanford"
    assert (model.config.query_maxlen, model.config.doc_maxlen, model.dim) == (12, 20, 16)
    tok = model.tokenizer
    from safetensors import safe_open

    with safe_open(str(stanford_folder / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("linear.weight")
    q_marker, d_marker = tok.convert_tokens_to_ids("[unused0]"), tok.convert_tokens_to_ids("[unused1]")
    qs = [_query_ids(tok, t, 12, q_marker) for t in QUERIES]
    ref_q = _reference(stanford_folder, [i for i, _ in qs], [a for _, a in qs], weight, [[True] * 12 for _ in qs])
    for got, want in zip(model.encode_queries(QUERIES), ref_q):
        assert got.shape == (12, 16)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    ds = [_doc_ids(tok, t, 20, d_marker) for t in DOCS]
    ref_d = _reference(stanford_folder, [d[0] for d in ds], [d[1] for d in ds], weight, [d[2] for d in ds])
    for got, want in zip(model.encode_documents(DOCS), ref_d):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_pylate_checkpoint_vectors(pylate_folder):
    model = ColBERT.from_pretrained(pylate_folder)
    assert model.checkpoint_format == "pylate"
    c = model.config
    assert (c.query_maxlen, c.doc_maxlen, c.dim, c.query_marker, c.attend_to_mask_tokens) == (10, 24, 8, "[Q] ", True)
    tok = model.tokenizer
    from safetensors import safe_open

    with safe_open(str(pylate_folder / "1_Dense" / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("linear.weight")
    q_marker, d_marker = tok.convert_tokens_to_ids("[Q] "), tok.convert_tokens_to_ids("[D] ")
    assert q_marker != tok.unk_token_id and d_marker != tok.unk_token_id
    qs = [_query_ids(tok, t, 10, q_marker, attend=True) for t in QUERIES]
    ref_q = _reference(pylate_folder, [i for i, _ in qs], [a for _, a in qs], weight, [[True] * 10 for _ in qs])
    for got, want in zip(model.encode_queries(QUERIES), ref_q):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    ds = [_doc_ids(tok, t, 24, d_marker) for t in DOCS]
    ref_d = _reference(pylate_folder, [d[0] for d in ds], [d[1] for d in ds], weight, [d[2] for d in ds])
    for got, want in zip(model.encode_documents(DOCS), ref_d):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mask_tokens_not_attended_by_default(stanford_folder):
    model = ColBERT.from_pretrained(stanford_folder)
    batch = model.tokenize_queries(["a cell"])
    ids, att = batch["input_ids"][0].tolist(), batch["attention_mask"][0].tolist()
    tok = model.tokenizer
    assert ids[:2] == [tok.cls_token_id, tok.convert_tokens_to_ids("[unused0]")]
    assert ids[-1] == tok.mask_token_id and att[-1] == 0 and len(ids) == 12
    attending = ColBERT.from_pretrained(stanford_folder, attend_to_mask_tokens=True)
    assert attending.tokenize_queries(["a cell"])["attention_mask"].all()
    a, b = model.encode_queries(["a cell"])[0], attending.encode_queries(["a cell"])[0]
    assert not torch.allclose(a, b)


def test_documents_drop_punctuation_and_padding(stanford_folder):
    model = ColBERT.from_pretrained(stanford_folder)
    vectors = model.encode_documents(["apple , banana !", "apple banana"])
    assert vectors[0].shape[0] == vectors[1].shape[0] == 5  # [CLS] [D] apple banana [SEP]
    keep = ColBERT.from_pretrained(stanford_folder, skiplist=())
    assert keep.encode_documents(["apple , banana !"])[0].shape[0] == 7


def test_batching_does_not_change_vectors(stanford_folder):
    model = ColBERT.from_pretrained(stanford_folder)
    together = model.encode_documents(DOCS, batch_size=3)
    alone = [model.encode_documents([d], batch_size=1)[0] for d in DOCS]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*truncated")
@pytest.mark.parametrize("which", ["stanford", "pylate", "new"])
def test_save_and_reload_identical(which, stanford_folder, pylate_folder, tiny_bert, tmp_path):
    if which == "new":
        model = ColBERT.from_backbone(tiny_bert, dim=24, seed=3, similarity="l2")
    else:
        model = ColBERT.from_pretrained(stanford_folder if which == "stanford" else pylate_folder)
    saved = model.save(tmp_path / "saved")
    again = ColBERT.from_pretrained(saved)
    assert again.checkpoint_format == "latelex" and again.config == model.config
    for a, b in zip(model.encode_queries(QUERIES) + model.encode_documents(DOCS),
                    again.encode_queries(QUERIES) + again.encode_documents(DOCS)):
        assert torch.equal(a, b)
    rebuilt = ColBERT.from_spec(model.spec())
    assert torch.equal(rebuilt.encode_documents(DOCS)[1], model.encode_documents(DOCS)[1])


def test_save_refuses_to_overwrite(tiny_bert, tmp_path):
    model = ColBERT.from_backbone(tiny_bert, dim=8)
    model.save(tmp_path / "m")
    with pytest.raises(ModelError, match="already exists"):
        model.save(tmp_path / "m")


def test_long_query_is_truncated_with_one_warning(stanford_folder):
    model = ColBERT.from_pretrained(stanford_folder)
    long = " ".join(["cell"] * 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = model.encode_queries([long, long])
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    assert vectors[0].shape[0] == 12


def test_bad_inputs(tiny_bert, tmp_path, stanford_folder):
    with pytest.raises(ModelError, match="does not exist"):
        ColBERT.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError):
        ColBERT.from_pretrained(tmp_path / "empty")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_bert / "config.json", no_weights / "config.json")
    shutil.copy(tiny_bert / "tokenizer.json", no_weights / "tokenizer.json")
    with pytest.raises(ModelError, match="no weights"):
        ColBERT.from_pretrained(no_weights)
    model = ColBERT.from_pretrained(stanford_folder)
    with pytest.raises(InputError, match="empty"):
        model.encode_documents(["fine", "   "])
    with pytest.raises(InputError, match="list"):
        model.encode_queries("a single string")
    with pytest.raises(ConfigError, match="projects to dim 16"):
        ColBERT.from_pretrained(stanford_folder, dim=32)
    with pytest.raises(ConfigError, match="unknown"):
        ColBERT.from_pretrained(stanford_folder, query_max_len=3)
    with pytest.raises(ModelError, match="not a token"):
        ColBERT.from_pretrained(stanford_folder, query_marker="[NOT-A-TOKEN]")
    with pytest.raises(ConfigError, match="has no projection"):
        ColBERT.from_pretrained(tiny_bert, dim=128)


def test_config_values_are_checked():
    with pytest.raises(ConfigError):
        ColBERTConfig(similarity="dot")
    with pytest.raises(ConfigError):
        ColBERTConfig(query_maxlen=1)
