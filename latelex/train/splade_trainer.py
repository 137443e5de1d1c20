"""Training SPLADE: contrastive or distillation losses plus FLOPS (or L1) regularisation with quadratic warm-up.

:class:`latelex.encoders.splade.Splade` encodes under ``inference_mode`` only, so this module has its own
differentiable forward, :func:`splade_activations`, over the encoder's ``model`` (and ``query_model``) and
tokenizers. It pools exactly as the encoder does; for max pooling it takes the max of the logits first and
applies ``log(1 + relu(.))`` after, which gives the same values and gradients (the activation is monotone) while
materialising one (B, L, V) tensor fewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..types import Hit, Run
from . import losses
from .colbert_trainer import Trainer
from .config import SpladeTrainConfig
from .data import DevSet, TrainBatch


def _limit(model: torch.nn.Module, tokenizer: Any, maxlen: int) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    if not (isinstance(limit, int) and 2 <= limit < 1_000_000):
        limit = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    return min(maxlen, limit)


def splade_activations(encoder: Any, texts: Sequence[str], *, query: bool) -> torch.Tensor:
    """(B, V) float32 pooled SPLADE weights of ``texts``, differentiable (gradients flow when enabled).

    Queries use the encoder's query model and tokenizer when it has them, and ``config.query_maxlen``; documents
    ``config.doc_maxlen``. Values equal the dense form of :meth:`Splade.encode_queries` / ``encode_documents``
    before ``top_k`` and ``threshold`` are applied.
    """
    separate = query and encoder.query_model is not None
    model = encoder.query_model if separate else encoder.model
    tokenizer = encoder.query_tokenizer if separate else encoder.tokenizer
    maxlen = encoder.config.query_maxlen if query else encoder.config.doc_maxlen
    tokens = tokenizer(list(texts), truncation=True, max_length=_limit(model, tokenizer, maxlen), padding=True,
                       return_tensors="pt", return_token_type_ids=False)
    input_ids = tokens["input_ids"].to(encoder.device)
    mask = tokens["attention_mask"].to(encoder.device)
    logits = model(input_ids=input_ids, attention_mask=mask).logits.float()  # (B, L, V)
    keep = mask.bool().unsqueeze(-1)
    if encoder.config.pooling == "max":
        pooled = torch.log1p(torch.relu(logits.masked_fill(~keep, float("-inf")).amax(dim=1)))
        if encoder.activation == "log1p_relu":
            pooled = torch.log1p(pooled)
        return pooled
    weights = torch.log1p(torch.relu(logits))
    if encoder.activation == "log1p_relu":
        weights = torch.log1p(weights)
    return (weights * keep).sum(dim=1)


class SpladeTrainer(Trainer):
    """Trains a :class:`latelex.encoders.splade.Splade` (its MLM, and its query MLM if separate) with dot-product
    scores, the losses of :class:`TrainConfig` and sparsity regularisation of :class:`SpladeTrainConfig`.

    Each log record adds the unweighted regulariser of queries and documents (``flops_q`` / ``flops_d`` or
    ``l1_q`` / ``l1_d``), their current lambdas and the average number of non-zero weights per vector
    (``nnz_q`` / ``nnz_d``).
    """

    family = "splade"
    config_type = SpladeTrainConfig

    @classmethod
    def _modules(cls, encoder: Any) -> dict[str, torch.nn.Module]:
        modules = {"model": encoder.model}
        if encoder.query_model is not None:
            modules["query_model"] = encoder.query_model
        return modules

    @classmethod
    def _base_name(cls, encoder: Any) -> str:
        return str(encoder.name)

    def _scores(self, batch: TrainBatch):
        c: SpladeTrainConfig = self.config  # type: ignore[assignment]
        q = splade_activations(self.encoder, batch.queries, query=True)  # (B, V)
        d = splade_activations(self.encoder, batch.passages, query=False)  # (B * W, V)
        B, W = q.shape[0], c.nway
        if c.in_batch_negatives:
            scores = q @ d.T
        else:
            scores = (q.unsqueeze(1) * d.view(B, W, -1)).sum(-1)
        regulariser = losses.flops if c.regulariser == "flops" else losses.l1
        step = self.step + 1
        lambda_q = losses.quadratic_warmup(c.lambda_q, step, c.lambda_warmup)
        lambda_d = losses.quadratic_warmup(c.lambda_d, step, c.lambda_warmup)
        reg_q, reg_d = regulariser(q), regulariser(d)
        name = c.regulariser
        logs = {
            f"{name}_q": float(reg_q.detach()),
            f"{name}_d": float(reg_d.detach()),
            "lambda_q": lambda_q,
            "lambda_d": lambda_d,
            "nnz_q": float((q.detach() > 0).sum(dim=1).float().mean()),
            "nnz_d": float((d.detach() > 0).sum(dim=1).float().mean()),
        }
        return scores, {"reg_q": lambda_q * reg_q, "reg_d": lambda_d * reg_d}, logs

    def _dev_run(self, dev: DevSet, k: int) -> Run:
        from ..scoring.sparse import sparse_dot

        pids = sorted({p for ps in dev.candidates.values() for p in ps}) if dev.candidates else list(dev.documents)
        qids = list(dev.queries)
        docs = self.encoder.encode_documents([dev.documents[p] for p in pids], show_progress=False)
        queries = self.encoder.encode_queries([dev.queries[q] for q in qids], show_progress=False)
        scores = np.asarray(sparse_dot(queries, docs))
        position = {p: i for i, p in enumerate(pids)}
        run: Run = {}
        for row, qid in enumerate(qids):
            allowed = [position[p] for p in dev.candidates.get(qid, [])] if dev.candidates else range(len(pids))
            ranked = sorted(((float(scores[row, i]), pids[i]) for i in allowed), key=lambda t: (-t[0], t[1]))[:k]
            run[qid] = [Hit(p, s) for s, p in ranked]
        return run

    def _save_model(self, path: Path) -> Path:
        return self.encoder.save(path, overwrite=True)


__all__ = ["SpladeTrainer", "splade_activations"]
