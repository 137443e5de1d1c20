"""Training: ColBERT and SPLADE trainers, their losses, training data, checkpoints, and hard-negative mining.

Names are imported lazily so that importing :mod:`latelex.train` loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "latelex.train.config",
    "SpladeTrainConfig": "latelex.train.config",
    "TrainingData": "latelex.train.data",
    "DevSet": "latelex.train.data",
    "TrainBatch": "latelex.train.data",
    "read_examples": "latelex.train.data",
    "read_teacher_scores": "latelex.train.data",
    "Trainer": "latelex.train.colbert_trainer",
    "TrainResult": "latelex.train.colbert_trainer",
    "ColBERTTrainer": "latelex.train.colbert_trainer",
    "SpladeTrainer": "latelex.train.splade_trainer",
    "mine_hard_negatives": "latelex.train.mine",
    "MiningResult": "latelex.train.mine",
    "BM25Retriever": "latelex.train.mine",
    "CrossEncoderTeacher": "latelex.train.mine",
    "MaxSimTeacher": "latelex.train.teachers",
    "IndexTeacher": "latelex.train.teachers",
    "load_teacher": "latelex.train.teachers",
    "PseudoQuery": "latelex.train.pseudo",
    "pseudo_queries": "latelex.train.pseudo",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latelex.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
