"""Losses held against plain loop references, and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from latelex.errors import InputError
from latelex.train import losses
from latelex.train.colbert_trainer import lr_at
from latelex.train.config import TrainConfig


def softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)


def test_nway_cross_entropy(scores):
    s, _ = scores
    ref = sum(-math.log(softmax(row.tolist())[0]) for row in s) / 4
    assert float(losses.nway_cross_entropy(s)) == pytest.approx(ref, rel=1e-6)


def test_in_batch_cross_entropy():
    g = torch.Generator().manual_seed(1)
    B, W = 3, 2
    s = torch.randn(B, B * W, generator=g)
    ref = sum(-math.log(softmax(s[i].tolist())[i * W]) for i in range(B)) / B
    assert float(losses.in_batch_cross_entropy(s, W)) == pytest.approx(ref, rel=1e-5)
    # one example: in-batch equals n-way
    one = s[:1, :W]
    assert float(losses.in_batch_cross_entropy(one, W)) == pytest.approx(float(losses.nway_cross_entropy(one)))
    with pytest.raises(InputError, match="columns"):
        losses.in_batch_cross_entropy(s, 3)


def test_kl_distillation(scores):
    s, t = scores
    for temp in (1.0, 2.0):
        ref = 0.0
        for srow, trow in zip(s.tolist(), t.tolist()):
            ps = softmax([x / temp for x in srow])
            pt = softmax([x / temp for x in trow])
            ref += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
        ref = ref / 4 * temp**2
        assert float(losses.kl_distillation(s, t, temp)) == pytest.approx(ref, rel=1e-5)
    assert float(losses.kl_distillation(t, t)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.kl_distillation(t + 5.0, t)) == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    with pytest.raises(InputError, match="differ in shape"):
        losses.kl_distillation(s, t[:, :2])


def test_margin_mse(scores):
    s, t = scores
    terms = [((sr[0] - sr[j]) - (tr[0] - tr[j])) ** 2 for sr, tr in zip(s.tolist(), t.tolist()) for j in (1, 2)]
    assert float(losses.margin_mse(s, t)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert float(losses.margin_mse(t + 1.0, t)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="W >= 2"):
        losses.margin_mse(s[:, :1], t[:, :1])


def test_flops_and_l1():
    a = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 2.0]])
    # FLOPS: sum_j (mean_i a_ij)^2 = 1.5^2 + 0.5^2 + 2^2
    assert float(losses.flops(a)) == pytest.approx(1.5**2 + 0.5**2 + 2.0**2)
    assert float(losses.l1(a)) == pytest.approx((3.0 + 5.0) / 2)
    with pytest.raises(InputError):
        losses.flops(a[0])


def test_losses_are_differentiable(scores):
    s, t = scores
    s = s.clone().requires_grad_(True)
    (losses.nway_cross_entropy(s) + losses.kl_distillation(s, t) + losses.margin_mse(s, t) + losses.flops(s.abs())).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_quadratic_warmup():
    assert losses.quadratic_warmup(0.5, 0, 10) == 0.0
    assert losses.quadratic_warmup(0.5, 5, 10) == pytest.approx(0.5 * 0.25)
    assert losses.quadratic_warmup(0.5, 10, 10) == 0.5
    assert losses.quadratic_warmup(0.5, 50, 10) == 0.5
    assert losses.quadratic_warmup(0.5, 3, 0) == 0.5


def test_learning_rate_schedule():
    c = TrainConfig(output_dir="x", lr=1.0, total_steps=10, warmup_steps=4)
    values = [lr_at(c, s) for s in range(1, 11)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0) and values[-1] == pytest.approx(1 / 6)
    assert all(a > b for a, b in zip(values[4:], values[5:]))
    flat = TrainConfig(output_dir="x", lr=1.0, total_steps=10, decay="constant")
    assert {lr_at(flat, s) for s in range(1, 11)} == {1.0}
