"""Frozen training configurations: :class:`TrainConfig` (ColBERT) and :class:`SpladeTrainConfig` (SPLADE).

Both are plain values: written into every checkpoint as JSON and read back with
:func:`latelex.config.config_from_dict`, which refuses unknown keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

LOSSES = ("ce", "kl", "margin_mse", "score_mse")
REGULARISERS = ("flops", "l1")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


def _non_negative_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, not {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How a ColBERT model is trained.

    ``batch_size`` examples make one optimizer step, split into ``accumulation_steps`` micro-batches of
    ``batch_size // accumulation_steps`` examples (and, under torchrun, over the processes first); in-batch
    negatives are drawn from the micro-batch. Each example is a query and ``nway`` passages, the positive first.

    ``loss``: ``"ce"`` softmax cross-entropy over the example's passages (pairwise softmax for nway=2) plus,
    with ``in_batch_negatives``, every other passage of the micro-batch; ``"kl"`` KL divergence to the teacher's
    score distribution at ``temperature``; ``"margin_mse"`` MSE between the student's and the teacher's
    positive-minus-negative margins; ``"score_mse"`` MSE between the student's and the teacher's scores
    themselves (direct score matching). Distillation losses are mixed with the cross-entropy as
    ``alpha * distillation + (1 - alpha) * ce``. Teacher scores come from the training data (``[qid, [pid, score],
    ...]`` examples) or from a teacher model run during training (``Trainer.create(..., teacher=...)``); with the
    latter and ``distill_in_batch``, ``kl`` and ``score_mse`` compare each query's scores over every passage of the
    micro-batch (B * W of them, as the in-batch cross-entropy does) instead of its own W. The cross-entropy divides the scores by ``ce_temperature``
    first: 1.0 is ColBERT's own loss on raw MaxSim sums; a smaller value sharpens the softmax, which matters
    when queries are short and their MaxSim sums therefore span a narrow range.

    Learning rate: linear warm-up over ``warmup_steps``, then linear decay to 0 at ``total_steps``
    (``decay="linear"``) or constant. ``amp`` enables mixed precision on CUDA (bfloat16 where supported, else
    float16 with loss scaling); it has no effect on the CPU. ``checkpoint_every`` / ``eval_every`` / ``log_every``
    of 0 turn the action off; a final checkpoint is always written at ``total_steps``.

    ``dropout=False`` keeps the trained modules in eval mode (no dropout): usual for adapter training, and two to
    three times faster on the CPU, where dropout and the attention kernels it forces are slow.
    """

    output_dir: str
    lr: float = 1e-5
    batch_size: int = 32
    nway: int = 2
    accumulation_steps: int = 1
    total_steps: int = 1000
    warmup_steps: int = 0
    decay: Literal["linear", "constant"] = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    loss: Literal["ce", "kl", "margin_mse", "score_mse"] = "ce"
    in_batch_negatives: bool = True
    distill_in_batch: bool = False
    temperature: float = 1.0
    ce_temperature: float = 1.0
    alpha: float = 1.0
    amp: bool = True
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    eval_every: int = 0
    eval_metric: str = "nDCG@10"
    eval_k: int = 100
    log_every: int = 10
    dropout: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ConfigError("output_dir must be a non-empty path")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, not {self.lr!r}")
        for name in ("batch_size", "nway", "accumulation_steps", "total_steps", "keep_checkpoints"):
            _positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "log_every", "seed"):
            _non_negative_int(name, getattr(self, name))
        _positive_int("eval_k", self.eval_k)
        if self.batch_size % self.accumulation_steps:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of accumulation_steps {self.accumulation_steps}; "
                "choose sizes that divide evenly"
            )
        if self.decay not in ("linear", "constant"):
            raise ConfigError(f"decay must be 'linear' or 'constant', not {self.decay!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.loss == "margin_mse" and self.nway < 2:
            raise ConfigError("margin_mse needs nway >= 2 (a positive and at least one negative)")
        if self.distill_in_batch and not (self.in_batch_negatives and self.loss in ("kl", "score_mse")):
            raise ConfigError("distill_in_batch needs in_batch_negatives=True and loss 'kl' or 'score_mse'")
        if self.loss == "ce" and self.nway < 2 and not self.in_batch_negatives:
            raise ConfigError("with nway=1 the ce loss has no negatives; set in_batch_negatives=True or nway >= 2")
        for name in ("temperature", "ce_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number > 0, not {value!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], not {self.alpha!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, not {self.weight_decay!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None, not {self.max_grad_norm!r}")

    @property
    def micro_batch_size(self) -> int:
        """Examples per forward pass in a single process."""
        return self.batch_size // self.accumulation_steps

    @property
    def distillation(self) -> bool:
        """Whether the loss needs teacher scores."""
        return self.loss in ("kl", "margin_mse", "score_mse")


@dataclass(frozen=True)
class SpladeTrainConfig(TrainConfig):
    """How a SPLADE model is trained: :class:`TrainConfig` plus sparsity regularisation.

    ``regulariser``: ``"flops"`` (sum over terms of the squared mean activation, SPLADE's FLOPS loss) or ``"l1"``
    (mean L1 norm of the vectors), applied to queries with ``lambda_q`` and to documents with ``lambda_d``.
    Both lambdas follow the SPLADE papers' quadratic warm-up ``lambda_t = lambda * min(1, (t / T)^2)`` with
    ``T = lambda_warmup_steps`` (None: a third of ``total_steps``; 0: no warm-up).
    """

    lambda_q: float = 3e-4
    lambda_d: float = 1e-4
    regulariser: Literal["flops", "l1"] = "flops"
    lambda_warmup_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.regulariser not in REGULARISERS:
            raise ConfigError(f"regulariser must be 'flops' or 'l1', not {self.regulariser!r}")
        for name in ("lambda_q", "lambda_d"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if self.lambda_warmup_steps is not None:
            _non_negative_int("lambda_warmup_steps", self.lambda_warmup_steps)

    @property
    def lambda_warmup(self) -> int:
        """T of the quadratic lambda warm-up, in optimizer steps."""
        if self.lambda_warmup_steps is None:
            return max(1, self.total_steps // 3)
        return self.lambda_warmup_steps


__all__ = ["TrainConfig", "SpladeTrainConfig", "LOSSES", "REGULARISERS"]
