"""Low-rank adapters on a tiny random BERT: a fresh adapter changes nothing, saved models (whole or adapter-only
over a named base) reload to the same vectors, training touches only adapters and projection."""

from __future__ import annotations

import json

import pytest
import torch

from latelex.encoders.colbert import ColBERT
from latelex.encoders.lora import LoRAConfig, LoRALinear, adapter_state_dict, merged_state_dict
from latelex.errors import ConfigError, ModelError
from latelex.fsio import file_sha256
from latelex.train import ColBERTTrainer, TrainConfig, TrainingData
from latelex.data import IdExample

DOCS = ["the cat sat on the mat", "vitamin d and cancer risk in adults", "sparse retrieval with learned weights"]


def encoder(tiny_bert) -> ColBERT:
    return ColBERT.from_backbone(tiny_bert, dim=16, seed=0, device="cpu", query_maxlen=16, doc_maxlen=24)


def perturb(model: ColBERT) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.allclose(x, y, atol=atol) for x, y in zip(a, b))


def test_fresh_adapter_is_the_identity_and_freezes_the_backbone(tiny_bert):
    model = encoder(tiny_bert)
    before = model.encode_documents(DOCS)
    names = model.add_lora(LoRAConfig(rank=4, alpha=8))
    assert names and all(isinstance(model.backbone.get_submodule(n), LoRALinear) for n in names)
    assert not any("pooler" in n for n in names)
    assert same(before, model.encode_documents(DOCS), atol=0)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    perturb(model)
    assert not same(before, model.encode_documents(DOCS), atol=1e-4)


def test_merged_state_dict_has_the_plain_backbone_keys(tiny_bert):
    model = encoder(tiny_bert)
    plain_keys = set(model.backbone.state_dict())
    model.add_lora(LoRAConfig(rank=2))
    perturb(model)
    merged = merged_state_dict(model.backbone)
    assert set(merged) == plain_keys
    layer = next(n for n, m in model.backbone.named_modules() if isinstance(m, LoRALinear))
    module = model.backbone.get_submodule(layer)
    assert torch.allclose(merged[f"{layer}.weight"], module.base.weight + module.delta())


def test_whole_and_adapter_only_saves_reload_to_the_same_vectors(tiny_bert, tmp_path):
    model = encoder(tiny_bert)
    model.add_lora(LoRAConfig(rank=4, alpha=8))
    perturb(model)
    expected_docs = model.encode_documents(DOCS)
    expected_queries = model.encode_queries(["cancer risk"])
    whole = model.save(tmp_path / "whole")
    base = {"path": str(tiny_bert), "sha256": file_sha256(tiny_bert / "model.safetensors")}
    adapters = model.save(tmp_path / "adapters", base=base)
    assert not (adapters / "model.safetensors").exists()
    assert (adapters / "adapters.safetensors").stat().st_size < (whole / "model.safetensors").stat().st_size
    for folder in (whole, adapters):
        loaded = ColBERT.from_pretrained(folder, device="cpu")
        assert same(expected_docs, loaded.encode_documents(DOCS))
        assert same(expected_queries, loaded.encode_queries(["cancer risk"]))
    assert set(adapter_state_dict(model.backbone)) == {
        k for k in __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(adapters / "adapters.safetensors"))
    }


def test_adapter_only_model_refuses_other_base_weights(tiny_bert, tmp_path):
    model = encoder(tiny_bert)
    model.add_lora(LoRAConfig(rank=2))
    folder = model.save(tmp_path / "m", base={"path": str(tiny_bert), "sha256": "0" * 64})
    with pytest.raises(ModelError, match="not the ones"):
        ColBERT.from_pretrained(folder, device="cpu")
    manifest = json.loads((folder / "latelex_model.json").read_text())
    manifest["backbone"] = {"package": "no_such_latelex_base_package", "requirement": "no-such-base==1.0"}
    (folder / "latelex_model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="imports no other"):  # only latelex's own base package is looked up
        ColBERT.from_pretrained(folder, device="cpu")


def test_a_base_save_without_adapters_keeps_the_projection_only(tiny_bert, tmp_path):
    """No adapters: a save against a base writes the projection alone (a PCA head is one); a plain encoder, with
    neither adapters nor a projection, is its backbone and cannot be saved against one."""
    model = encoder(tiny_bert)
    folder = model.save(tmp_path / "m", base={"path": str(tiny_bert)})
    assert sorted(p.name for p in folder.iterdir()) == ["latelex_model.json", "projection.safetensors"]
    text = ["late interaction over token vectors"]
    torch.testing.assert_close(ColBERT.from_pretrained(folder, device="cpu").encode_documents(text)[0],
                               model.encode_documents(text)[0])
    with pytest.raises(ModelError, match="neither adapters nor a projection"):
        ColBERT.from_pretrained(tiny_bert, device="cpu").save(tmp_path / "plain", base={"path": str(tiny_bert)})


def test_bad_lora_settings_are_config_errors():
    with pytest.raises(ConfigError):
        LoRAConfig(rank=0)
    with pytest.raises(ConfigError):
        LoRAConfig(targets=())


def test_training_changes_only_adapters_and_projection(tiny_bert, tmp_path):
    torch.set_num_threads(1)
    model = encoder(tiny_bert)
    model.add_lora(LoRAConfig(rank=4, alpha=8))
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if not p.requires_grad}
    docs = {f"d{i}": t for i, t in enumerate(DOCS)}
    queries = {"q0": "cat mat", "q1": "cancer vitamin", "q2": "learned sparse"}
    examples = [IdExample(f"q{i}", (f"d{i}", f"d{(i + 1) % 3}"), None) for i in range(3)]
    data = TrainingData.from_examples(examples, queries, docs, nway=2)
    config = TrainConfig(output_dir=str(tmp_path / "run"), lr=5e-3, batch_size=3, total_steps=5, log_every=1,
                         dropout=False)
    trainer = ColBERTTrainer.create(model, data, config)
    projection = model.projection.weight.detach().clone()
    result = trainer.train()
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    for n, p in model.backbone.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert not torch.equal(projection, model.projection.weight)
    assert not model.backbone.training  # dropout=False keeps eval mode
