"""SPLADE training on a tiny random MLM: differentiable activations match the encoder, regularisation and its
warm-up behave as the papers define them, the loss goes down and resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latelex.data import IdExample
from latelex.encoders.colbert import ColBERT
from latelex.encoders.splade import Splade
from latelex.errors import ConfigError, InputError
from latelex.train import ColBERTTrainer, SpladeTrainConfig, SpladeTrainer, TrainConfig, TrainingData
from latelex.train.splade_trainer import splade_activations

TOPICS = [
    "apple banana fruit", "cancer risk patients", "vaccine virus trial", "brain heart blood",
    "sparse index search", "gene protein cell", "drug dose treatment", "red green blue",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models train fastest on one thread


def data(scores: bool = False) -> TrainingData:
    documents = {f"d{i}": f"{t} {t} study results" for i, t in enumerate(TOPICS)}
    queries = {f"q{i}": f"what about {t}" for i, t in enumerate(TOPICS)}
    examples = [IdExample(f"q{i}", (f"d{i}", f"d{(i + 1) % 8}"), (3.0, 0.0) if scores else None) for i in range(8)]
    return TrainingData.from_examples(examples, queries, documents, nway=2)


def model(tiny_mlm, **overrides) -> Splade:
    return Splade.from_pretrained(tiny_mlm, device="cpu", query_maxlen=16, doc_maxlen=24, **overrides)


def config(tmp_path, name="run", **changes) -> SpladeTrainConfig:
    settings = dict(output_dir=str(tmp_path / name), lr=2e-3, batch_size=8, total_steps=6, log_every=1,
                    decay="constant", lambda_q=1e-3, lambda_d=1e-3, lambda_warmup_steps=4)
    settings.update(changes)
    return SpladeTrainConfig(**settings)


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_activations_match_the_encoder(tiny_mlm, pooling):
    enc = model(tiny_mlm, pooling=pooling)
    enc.model.eval()
    texts = ["apple banana fruit is good", "what about the virus", "red"]
    with torch.no_grad():
        for query, encode in ((True, enc.encode_queries), (False, enc.encode_documents)):
            dense = torch.as_tensor(encode(texts).to_scipy().toarray())
            ours = splade_activations(enc, texts, query=query)
            assert ours.shape == (3, enc.vocab_size)
            torch.testing.assert_close(ours, dense, rtol=1e-5, atol=1e-5)


def test_activations_are_differentiable(tiny_mlm):
    enc = model(tiny_mlm)
    out = splade_activations(enc, ["apple fruit", "virus"], query=False)
    out.sum().backward()
    grads = [p.grad for p in enc.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_loss_goes_down_and_sparsity_is_logged(tiny_mlm, tmp_path):
    trainer = SpladeTrainer.create(model(tiny_mlm), data(), config(tmp_path, total_steps=12))
    records = [trainer.train_step() for _ in range(12)]
    ce = [r["ce"] for r in records]
    assert np.mean(ce[-3:]) < 0.8 * np.mean(ce[:3]), ce
    for r in records:
        assert r["flops_q"] >= 0 and r["flops_d"] >= 0
        assert 0 < r["nnz_d"] <= trainer.encoder.vocab_size
    # quadratic warm-up of the lambdas: lambda * min(1, (t / T)^2), T = 4
    assert [r["lambda_q"] for r in records[:5]] == pytest.approx([1e-3 * min(1, (t / 4) ** 2) for t in range(1, 6)])
    assert records[0]["loss"] == pytest.approx(
        records[0]["ce"] + records[0]["lambda_q"] * records[0]["flops_q"] + records[0]["lambda_d"] * records[0]["flops_d"],
        rel=1e-5,
    )


def test_flops_regularisation_makes_vectors_sparser(tiny_mlm, tmp_path):
    nnz = {}
    for lam in (0.0, 5.0):
        cfg = config(tmp_path, f"lam{lam}", lambda_q=lam, lambda_d=lam, lambda_warmup_steps=0, total_steps=8, lr=5e-3)
        trainer = SpladeTrainer.create(model(tiny_mlm), data(), cfg)
        records = [trainer.train_step() for _ in range(8)]
        nnz[lam] = records[-1]["nnz_d"]
    assert nnz[5.0] < 0.5 * nnz[0.0], nnz


@pytest.mark.parametrize("loss", ["kl", "margin_mse"])
def test_distillation_and_l1(tiny_mlm, tmp_path, loss):
    trainer = SpladeTrainer.create(model(tiny_mlm), data(scores=True),
                                   config(tmp_path, loss=loss, regulariser="l1", in_batch_negatives=False))
    records = [trainer.train_step() for _ in range(4)]
    assert all(np.isfinite(r[loss]) and r["l1_d"] > 0 for r in records)
    assert "flops_d" not in records[0]


def test_resume_is_exact(tiny_mlm, tmp_path):
    full = SpladeTrainer.create(model(tiny_mlm), data(), config(tmp_path, "full", total_steps=4))
    reference = [full.train_step()["loss"] for _ in range(4)]
    first = SpladeTrainer.create(model(tiny_mlm), data(), config(tmp_path, "cut", total_steps=4, checkpoint_every=2))
    first.train(steps=2)
    resumed = SpladeTrainer.create(model(tiny_mlm), data(), config(tmp_path, "cut", total_steps=4, checkpoint_every=2),
                                   resume=tmp_path / "cut")
    assert resumed.step == 2
    assert [resumed.train_step()["loss"] for _ in range(2)] == reference[2:]
    ref, now = full.parameters(), resumed.parameters()
    assert all(torch.equal(ref[k], now[k]) for k in ref)
    result_dir = resumed.save_checkpoint()
    assert result_dir.name == "step-4"


def test_wrong_config_and_foreign_checkpoint(tiny_mlm, tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="SpladeTrainConfig"):
        SpladeTrainer.create(model(tiny_mlm), data(), TrainConfig(output_dir=str(tmp_path / "x"), batch_size=8))
    with pytest.raises(ConfigError, match="regulariser"):
        config(tmp_path, regulariser="l2")
    colbert = ColBERT.from_backbone(tiny_bert, dim=8, device="cpu", query_maxlen=16, doc_maxlen=24)
    ColBERTTrainer.create(colbert, data(), TrainConfig(output_dir=str(tmp_path / "c"), batch_size=8, total_steps=1)).train()
    with pytest.raises(InputError, match="another model"):
        SpladeTrainer.create(model(tiny_mlm), data(), config(tmp_path, "c", total_steps=1), resume=True)
