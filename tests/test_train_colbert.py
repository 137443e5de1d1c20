"""ColBERT training on a tiny random BERT: the loss goes down, resume is exact, bad input fails before step 0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latelex.data import IdExample
from latelex.encoders.colbert import ColBERT
from latelex.errors import ConfigError, FormatError, InputError
from latelex.train import ColBERTTrainer, DevSet, TrainConfig, TrainingData
from latelex.train.checkpoint import list_checkpoints, load_checkpoint
from latelex.train.data import read_examples, read_teacher_scores

TOPICS = [
    "apple banana fruit", "cancer risk patients", "vaccine virus trial", "brain heart blood",
    "sparse index search", "gene protein cell", "drug dose treatment", "red green blue",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models train fastest on one thread


def corpus():
    """8 queries, each with one positive (its topic words) and a negative (the next topic)."""
    documents, queries, examples = {}, {}, []
    for i, topic in enumerate(TOPICS):
        documents[f"d{i}"] = f"{topic} {topic} study results"
        queries[f"q{i}"] = f"what about {topic}"
    for i in range(len(TOPICS)):
        examples.append(IdExample(f"q{i}", (f"d{i}", f"d{(i + 1) % len(TOPICS)}"), None))
    return queries, documents, examples


def model(tiny_bert, **overrides) -> ColBERT:
    return ColBERT.from_backbone(tiny_bert, dim=16, seed=0, device="cpu", query_maxlen=16, doc_maxlen=24, **overrides)


def config(tmp_path, name="run", **changes) -> TrainConfig:
    settings = dict(output_dir=str(tmp_path / name), lr=2e-3, batch_size=8, nway=2, total_steps=6, log_every=1)
    settings.update(changes)
    return TrainConfig(**settings)


def data(nway=2, scores=False) -> TrainingData:
    queries, documents, examples = corpus()
    if scores:
        examples = [IdExample(e.qid, e.pids, (2.0, -1.0)) for e in examples]
    return TrainingData.from_examples(examples, queries, documents, nway=nway)


def no_dropout(encoder: ColBERT) -> ColBERT:
    for m in encoder.backbone.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return encoder


def test_loss_goes_down(tiny_bert, tmp_path):
    trainer = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, total_steps=15, decay="constant"))
    losses = [trainer.train_step()["loss"] for _ in range(15)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("in_batch", [True, False])
def test_ce_temperature_divides_the_scores(tiny_bert, tmp_path, in_batch):
    from latelex.train import losses

    trainer = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, ce_temperature=0.25, dropout=False,
                                                                     in_batch_negatives=in_batch))
    batch = trainer.data.batch(list(range(8)))
    with torch.no_grad():
        loss, _ = trainer._loss(batch)
        scores, _, _ = trainer.net(batch)
    expected = losses.in_batch_cross_entropy(scores * 4, 2) if in_batch else losses.nway_cross_entropy(scores * 4)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, losses.in_batch_cross_entropy(scores, 2) if in_batch
                              else losses.nway_cross_entropy(scores))
    for bad in (0, -1.0, True):
        with pytest.raises(ConfigError, match="ce_temperature must be a number > 0"):
            config(tmp_path, ce_temperature=bad)


@pytest.mark.parametrize("loss", ["kl", "margin_mse"])
def test_distillation_losses_train(tiny_bert, tmp_path, loss):
    trainer = ColBERTTrainer.create(model(tiny_bert), data(scores=True), config(tmp_path, loss=loss, total_steps=10,
                                                                              decay="constant"))
    before = trainer.parameters()
    records = [trainer.train_step() for _ in range(10)]
    assert all(np.isfinite(r[loss]) for r in records)
    assert np.mean([r[loss] for r in records[-3:]]) < np.mean([r[loss] for r in records[:3]])
    after = trainer.parameters()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_gradient_accumulation_matches_one_big_batch(tiny_bert, tmp_path):
    results = []
    for accumulation in (1, 2):
        cfg = config(tmp_path, f"acc{accumulation}", accumulation_steps=accumulation, in_batch_negatives=False,
                     max_grad_norm=None, lr=1e-3)
        trainer = ColBERTTrainer.create(no_dropout(model(tiny_bert)), data(), cfg)
        trainer.train_step()
        results.append(trainer.parameters())
    start = no_dropout(model(tiny_bert))
    moved = any(not torch.allclose(results[0][k], v) for k, v in
                {f"backbone.{k}": v for k, v in start.backbone.state_dict().items()}.items())
    assert moved
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)


def test_checkpoint_resume_is_exact(tiny_bert, tmp_path):
    # uninterrupted: 6 steps
    full = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, "full"))
    full_losses = [full.train_step()["loss"] for _ in range(6)]

    # interrupted: 3 steps and a checkpoint, then a fresh process-like restart from the same base model
    first = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, "cut", checkpoint_every=3))
    first.train(steps=3)
    params_at_3 = first.parameters()
    optimizer_at_3 = first.optimizer.state_dict()
    rng_at_3 = torch.get_rng_state().clone()
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-3"]

    torch.manual_seed(1234)  # scramble the generator: resume must restore it
    resumed = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, "cut", checkpoint_every=3), resume=True)
    assert resumed.step == 3
    assert torch.equal(torch.get_rng_state(), rng_at_3)
    now = resumed.parameters()
    assert all(torch.equal(params_at_3[k], now[k]) for k in params_at_3)
    restored = resumed.optimizer.state_dict()
    assert restored["param_groups"] == optimizer_at_3["param_groups"]
    for i, values in optimizer_at_3["state"].items():
        for name, tensor in values.items():
            assert torch.equal(restored["state"][i][name], tensor), (i, name)

    rest = [resumed.train_step()["loss"] for _ in range(3)]
    assert rest == full_losses[3:]  # bit for bit, dropout included
    final, ref = resumed.parameters(), full.parameters()
    assert all(torch.equal(final[k], ref[k]) for k in ref)


def test_checkpoint_has_no_pickles_and_keeps_newest(tiny_bert, tmp_path):
    trainer = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, checkpoint_every=2, keep_checkpoints=2))
    result = trainer.train()
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["step-4", "step-6"]
    assert result.last_checkpoint.name == "step-6"
    files = {p.name for p in result.last_checkpoint.iterdir()}
    assert files == {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json"}
    state = load_checkpoint(result.last_checkpoint).state
    assert state["step"] == 6 and state["identity"]["family"] == "colbert"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and all("loss" in r for r in log)


def test_resume_from_another_model_fails_before_training(tiny_bert, tmp_path):
    trainer = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, checkpoint_every=2, total_steps=2))
    trainer.train()
    other = ColBERT.from_backbone(tiny_bert, dim=8, seed=0, device="cpu", query_maxlen=16, doc_maxlen=24)
    with pytest.raises(InputError, match="checkpoint of another model"):
        ColBERTTrainer.create(other, data(), config(tmp_path, checkpoint_every=2, total_steps=2), resume=True)
    with pytest.raises(InputError, match="seed"):
        ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, seed=5, total_steps=2), resume=True)


def test_dev_evaluation_keeps_best_model(tiny_bert, tmp_path):
    queries, documents, _ = corpus()
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(TOPICS))}
    dev = DevSet.create(queries, qrels, documents)
    trainer = ColBERTTrainer.create(model(tiny_bert), data(), config(tmp_path, eval_every=3, eval_metric="RR@10"),
                                    dev=dev)
    result = trainer.train()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    dev_values = [r["dev_RR@10"] for r in log if "dev_RR@10" in r]
    assert len(dev_values) == 2 and result.best_metric == max(dev_values)
    assert 0 < result.best_metric <= 1
    best = ColBERT.from_pretrained(result.best_model, device="cpu")
    assert best.dim == 16
    assert json.loads((result.best_model / "latelex_training.json").read_text())["value"] == result.best_metric


# ---------------------------------------------------------------------- data and input checks


def test_id_files_all_shapes_and_nested_teacher(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text('[1, 10, 11, 12]\n["q2", [10, 0.5], [11, -1]]\n["q3", [[10, 3.0], ["11", 2]]]\n')
    rows = [e for _, e in read_examples(path)]
    assert rows[0] == IdExample("1", ("10", "11", "12"), None)
    assert rows[1] == IdExample("q2", ("10", "11"), (0.5, -1.0))
    assert rows[2] == IdExample("q3", ("10", "11"), (3.0, 2.0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('["q", [[1, 2], 3]]\n')
    with pytest.raises(FormatError, match="bad.jsonl:1"):
        list(read_examples(bad))
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text('["q1", [["d0", 1.5], ["d1", 0.5]]]\n["q1", [["d2", 0.1]]]\n')
    assert read_teacher_scores(teacher) == {"q1": {"d0": 1.5, "d1": 0.5, "d2": 0.1}}


def test_bad_training_input_is_one_line_error(tiny_bert, tmp_path):
    queries, documents, _ = corpus()
    triples = tmp_path / "triples.jsonl"
    triples.write_text('["q0", "d0", "d1"]\n["q1", "d1", "nope"]\n')
    with pytest.raises(InputError, match=r"triples.jsonl:2: passage 'nope' is not in the collection") as e:
        TrainingData.from_id_triples(triples, queries, documents)
    assert "\n" not in str(e.value)
    triples.write_text('["qx", "d0", "d1"]\n')
    with pytest.raises(InputError, match="query 'qx' is not among the queries"):
        TrainingData.from_id_triples(triples, queries, documents)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        TrainingData.from_id_triples(empty, queries, documents)
    triples.write_text('["q0", "d0", "d1"]\n')
    with pytest.raises(InputError, match="nway=3 needs 3"):
        TrainingData.from_id_triples(triples, queries, documents, nway=3)
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text('["q0", [["d0", 1.0], ["d5", 0.0]]]\n')
    with pytest.raises(InputError, match="no score for query 'q0' and passage 'd1'"):
        TrainingData.from_id_triples(triples, queries, documents, teacher_scores=teacher)
    plain = TrainingData.from_id_triples(triples, queries, documents)
    with pytest.raises(InputError, match="distils teacher scores"):
        ColBERTTrainer.create(model(tiny_bert), plain, config(tmp_path, loss="kl", batch_size=1))
    with pytest.raises(ConfigError, match="nway=3"):
        ColBERTTrainer.create(model(tiny_bert), plain, config(tmp_path, nway=3))
    with pytest.raises(ConfigError, match="unknown TrainConfig option"):
        from latelex.config import config_from_dict

        config_from_dict(TrainConfig, {"output_dir": "x", "learning_rate": 1})


def test_text_triples(tiny_bert, tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("apple fruit\tapple banana fruit\tcancer risk\nvirus trial\tvaccine virus trial\tred blue\n")
    d = TrainingData.from_text_triples(path)
    assert len(d) == 2 and d.batch([1]).passages == ["vaccine virus trial", "red blue"]
    trainer = ColBERTTrainer.create(model(tiny_bert), d, config(tmp_path, batch_size=2, total_steps=1))
    assert np.isfinite(trainer.train_step()["loss"])


def test_example_order_is_seeded_and_covers_every_epoch():
    d = data()
    first = d.positions(seed=3, start=0, count=16)
    assert sorted(first[:8]) == list(range(8)) and sorted(first[8:]) == list(range(8))
    assert d.positions(seed=3, start=5, count=6) == first[5:11]
    assert first != d.positions(seed=4, start=0, count=16)
