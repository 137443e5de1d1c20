"""Training ColBERT: n-way examples, in-batch negatives, distillation, checkpoints with exact resume.

:class:`Trainer` is the loop every model family shares (optimizer, schedule, accumulation, mixed precision,
DistributedDataParallel under torchrun, logging, dev evaluation, checkpoints); :class:`ColBERTTrainer` adds how
ColBERT scores a batch (MaxSim) and ranks a dev set. :class:`latelex.train.splade_trainer.SpladeTrainer` is the
other family.

Typical use::

    data = TrainingData.from_id_triples("triples.jsonl", "queries.tsv", "collection.tsv", nway=2)
    model = ColBERT.from_backbone("bert-base-uncased", dim=128)
    trainer = ColBERTTrainer.create(model, data, TrainConfig(output_dir="runs/colbert", total_steps=1000))
    result = trainer.train()            # or trainer.train_step() one optimizer step at a time
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..config import config_to_dict
from ..errors import ConfigError, InputError
from ..types import Hit, Run
from . import checkpoint as ckpt
from . import losses
from .config import TrainConfig
from .data import DevSet, TrainBatch, TrainingData

logger = logging.getLogger("latelex.train")


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns: the last step, every logged record, the best dev metric and where the
    best model and the last checkpoint were saved (None when there was none)."""

    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_model: Path | None = None
    last_checkpoint: Path | None = None


class _Net(torch.nn.Module):
    """The trained modules under one ``nn.Module`` whose forward runs the family's scoring, so that
    DistributedDataParallel sees every parameter and every forward."""

    def __init__(self, modules: Mapping[str, torch.nn.Module], forward: Callable[..., Any]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(dict(modules))
        self._fn = forward

    def forward(self, *args: Any) -> Any:  # noqa: D102
        return self._fn(*args)


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warm-up over ``warmup_steps``, then linear decay
    that reaches 0 just after ``total_steps`` (or constant)."""
    done = step - 1
    if done < config.warmup_steps:
        return config.lr * step / config.warmup_steps
    if config.decay == "constant":
        return config.lr
    span = max(1, config.total_steps - config.warmup_steps)
    return config.lr * max(0.0, (config.total_steps - done) / span)


class Trainer:
    """The training loop shared by the model families. Build with :meth:`create`; the constructor only stores fields.

    A subclass names its ``family`` and implements :meth:`_modules`, :meth:`_scores`, :meth:`_dev_run` and
    :meth:`_save_model`.
    """

    family = ""
    config_type: type[TrainConfig] = TrainConfig

    def __init__(
        self,
        encoder: Any,
        data: TrainingData,
        config: TrainConfig,
        *,
        dev: DevSet | None,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        device: torch.device,
        rank: int,
        world_size: int,
        identity: dict[str, Any],
        joined_group: bool = False,
        teacher: Any = None,
    ) -> None:
        self.encoder = encoder
        self.data = data
        self.config = config
        self.dev = dev
        self.net = net
        self.optimizer = optimizer
        self.scaler = scaler
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.identity = identity
        self.joined_group = joined_group
        self.teacher = teacher
        self.step = 0
        self.best_metric: float | None = None
        self.history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------------ family hooks

    @classmethod
    def _modules(cls, encoder: Any) -> dict[str, torch.nn.Module]:
        """The trained modules by name."""
        raise NotImplementedError

    @classmethod
    def _base_name(cls, encoder: Any) -> str:
        raise NotImplementedError

    def _scores(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """Scores of a micro-batch, regularisers and extra log values.

        Returns ``(scores, regularisers, logs)``: with in-batch negatives ``scores`` is (B, B * W), else (B, W).
        """
        raise NotImplementedError

    def _dev_run(self, dev: DevSet, k: int) -> Run:
        raise NotImplementedError

    def _save_model(self, path: Path) -> Path:
        raise NotImplementedError

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        encoder: Any,
        data: TrainingData,
        config: TrainConfig,
        *,
        dev: DevSet | None = None,
        resume: bool | str | os.PathLike = False,
        device: str | torch.device | None = None,
        teacher: Any = None,
    ):
        """Check everything, build the optimizer and, with ``resume``, restore a checkpoint; no step is taken.

        ``resume``: False (start at step 0), True (the latest checkpoint in ``config.output_dir`` if any) or a
        checkpoint / output folder. Raises :class:`ConfigError` or :class:`InputError` with one line for a
        configuration that does not fit the data (nway, missing teacher scores, batch split) or a checkpoint of
        another model or run.

        ``teacher``: a model that scores each micro-batch during training (``score_matrix(queries, passages) ->
        (B, B * W)``, e.g. :class:`latelex.train.teachers.MaxSimTeacher`) instead of teacher scores stored in the
        data; needs a distillation loss. It is not part of a checkpoint: resume with the same teacher.
        """
        if not isinstance(config, cls.config_type):
            raise ConfigError(f"{cls.__name__} takes a {cls.config_type.__name__}, not {type(config).__name__}")
        if getattr(encoder, "backend", "torch") != "torch":
            raise ConfigError(f"training needs the torch backend, not {encoder.backend!r}; load the encoder with "
                              f"backend='torch'")
        if not isinstance(data, TrainingData):
            raise InputError(f"data must be a TrainingData, not {type(data).__name__}")
        if data.nway != config.nway:
            raise ConfigError(f"the training data has nway={data.nway} but the config says nway={config.nway}; make them agree")
        if teacher is not None and not config.distillation:
            raise ConfigError(f"a teacher is only used by a distillation loss (kl, margin_mse, score_mse), not {config.loss!r}")
        if teacher is not None and not callable(getattr(teacher, "score_matrix", None)):
            raise ConfigError(f"{type(teacher).__name__} cannot score a training batch; give a MaxSimTeacher, or mine "
                              "its scores into the training data with latelex mine --teacher")
        if config.distill_in_batch and teacher is None:
            raise ConfigError("distill_in_batch needs a teacher run during training: pass teacher=")
        if config.distillation and data.scores is None and teacher is None:
            raise InputError(
                f"loss {config.loss!r} distils teacher scores but {data.source} has none; give [qid, [pid, score], ...] "
                "examples or a teacher-score file, or use loss='ce'"
            )
        rank, local_rank, world = _distributed()
        joined = False
        if config.batch_size % (world * config.accumulation_steps):
            raise ConfigError(
                f"batch_size {config.batch_size} does not split into {world} process(es) x {config.accumulation_steps} "
                "accumulation steps; choose a multiple"
            )
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                joined = True
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank)
            device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        device = torch.device(device) if device is not None else encoder.device
        encoder.to(device)
        modules = cls._modules(encoder)
        identity = ckpt.model_identity(cls.family, cls._base_name(encoder), modules)
        resume_path = ckpt.resolve_resume(resume, config.output_dir)
        checkpoint = ckpt.load_checkpoint(resume_path) if resume_path is not None else None
        if checkpoint is not None:
            ckpt.check_identity(checkpoint, identity)
            cls._check_same_run(checkpoint, config, data)

        torch.manual_seed(config.seed + rank)
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        scaler = None
        if config.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            scaler = torch.amp.GradScaler("cuda")
        trainer = cls(encoder, data, config, dev=dev, net=None, optimizer=optimizer, scaler=scaler, device=device,  # type: ignore[arg-type]
                      rank=rank, world_size=world, identity=identity, joined_group=joined, teacher=teacher)
        net: torch.nn.Module = _Net(modules, trainer._scores)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # find_unused_parameters: backbones carry parts no retrieval head uses (BERT's pooler, an MLM's
            # unused heads), which would otherwise stall the gradient all-reduce.
            net = DistributedDataParallel(net, device_ids=[local_rank] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
        trainer.net = net
        if checkpoint is not None:
            trainer._restore(checkpoint)
        trainer._training_mode()
        return trainer

    def close(self) -> None:
        """Leave the torchrun process group that :meth:`create` joined; a no-op in a single process, or when the
        caller had set up the group before :meth:`create` (the caller then owns it). Call it once training is over,
        so that every process exits cleanly."""
        if not self.joined_group:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            # Wait for every process first: the first one may still be writing the final model, and a process that
            # tears its gloo connections down while a peer is still using the group makes the peer abort (SIGABRT).
            dist.barrier()
            dist.destroy_process_group()
        self.joined_group = False

    def _training_mode(self) -> None:
        """Train mode for the trained modules, or eval mode (no dropout) with ``config.dropout=False``."""
        for m in self._modules(self.encoder).values():
            m.train(self.config.dropout)

    @staticmethod
    def _check_same_run(checkpoint: ckpt.Checkpoint, config: TrainConfig, data: TrainingData) -> None:
        saved = checkpoint.state.get("config", {})
        for key in ("seed", "batch_size", "nway", "accumulation_steps"):
            if saved.get(key) != getattr(config, key):
                raise InputError(
                    f"{checkpoint.path} was trained with {key}={saved.get(key)!r}, not {getattr(config, key)!r}; "
                    "resume with the same setting or start a new output_dir"
                )
        if checkpoint.state.get("examples") != len(data):
            raise InputError(
                f"{checkpoint.path} was trained on {checkpoint.state.get('examples')} examples, this data has {len(data)}; "
                "resume with the same training file"
            )

    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        modules = self._modules(self.encoder)
        for prefix, module in modules.items():
            own = {k[len(prefix) + 1 :]: v for k, v in checkpoint.weights.items() if k.startswith(prefix + ".")}
            try:
                module.load_state_dict(own, strict=True)
            except RuntimeError as exc:
                raise InputError(f"{checkpoint.path}: weights do not fit this model ({str(exc).splitlines()[0][:120]})") from None
        self.optimizer.load_state_dict(checkpoint.optimizer)
        state = checkpoint.state
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_metric = state.get("best_metric")
        self.history = list(state.get("history", []))
        ckpt.restore_rng(checkpoint.rng, state["rng"])
        self.last_checkpoint = checkpoint.path
        logger.info("resumed from %s at step %d", checkpoint.path, self.step)

    # ------------------------------------------------------------------ one step

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir).expanduser()

    def _autocast(self):
        if not (self.config.amp and self.device.type == "cuda"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        scores, regularisers, logs = self.net(batch)
        B, W = len(batch.queries), c.nway
        if c.in_batch_negatives:
            ce = losses.in_batch_cross_entropy(scores / c.ce_temperature, W)
            rows = torch.arange(B, device=scores.device)
            own = scores.view(B, B, W)[rows, rows]
        else:
            own = scores
            ce = losses.nway_cross_entropy(own / c.ce_temperature)
        loss = ce
        out = {"ce": float(ce.detach())}
        if c.distillation:
            student = own
            if self.teacher is not None:
                teacher = self.teacher.score_matrix(batch.queries, batch.passages).to(own.device)  # (B, B * W)
                if c.distill_in_batch:
                    student = scores
                else:
                    teacher = teacher.view(B, B, W)[torch.arange(B), torch.arange(B)]
            else:
                teacher = torch.as_tensor(batch.scores, device=own.device)
            if c.loss == "kl":
                distill = losses.kl_distillation(student, teacher, c.temperature)
            elif c.loss == "score_mse":
                distill = losses.score_mse(student, teacher)
            else:
                distill = losses.margin_mse(student, teacher)
            loss = c.alpha * distill + (1 - c.alpha) * ce
            out[c.loss] = float(distill.detach())
        for name, value in regularisers.items():
            loss = loss + value
            out[name] = float(value.detach())
        out.update(logs)
        return loss, out

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``batch_size`` examples (all micro-batches and processes); returns its log record
        (loss, its parts, learning rate, step)."""
        c = self.config
        step = self.step + 1
        lr = lr_at(c, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        indices = self.data.positions(c.seed, self.step * c.batch_size, c.batch_size)
        per_rank = c.batch_size // self.world_size
        mine = indices[self.rank * per_rank : (self.rank + 1) * per_rank]
        micro = per_rank // c.accumulation_steps
        totals: dict[str, float] = {}
        total_loss = 0.0
        for m in range(c.accumulation_steps):
            batch = self.data.batch(mine[m * micro : (m + 1) * micro])
            last = m == c.accumulation_steps - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.net.no_sync()
            with sync:
                with self._autocast():
                    loss, parts = self._loss(batch)
                scaled = loss / c.accumulation_steps
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            total_loss += float(loss.detach()) / c.accumulation_steps
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / c.accumulation_steps
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float("nan")
        if c.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step
        if self.world_size > 1:  # log the whole batch's loss, not only this process's share of it
            total_loss, totals = self._mean_over_processes(total_loss, totals)
        record = {"step": step, "loss": total_loss, "lr": lr, **totals}
        if not math.isnan(grad_norm):
            record["grad_norm"] = grad_norm
        return record

    def _mean_over_processes(self, loss: float, parts: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The mean of a step's loss and log values over the torchrun processes (each holds an equal share)."""
        import torch.distributed as dist

        names = sorted(parts)
        values = torch.tensor([loss, *(parts[k] for k in names)], dtype=torch.float64,
                              device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(values)  # a sum: gloo has no average
        values = (values / self.world_size).tolist()
        return values[0], dict(zip(names, values[1:]))

    # ------------------------------------------------------------------ the loop

    def train(self, steps: int | None = None) -> TrainResult:
        """Train up to ``config.total_steps`` (or ``steps`` more steps), logging, evaluating and checkpointing as
        configured; a checkpoint is written at the end of ``total_steps``. Returns a :class:`TrainResult`."""
        c = self.config
        stop = c.total_steps if steps is None else min(c.total_steps, self.step + steps)
        started, examples = time.perf_counter(), 0
        saved_at = evaluated_at = -1
        first = self.step
        while self.step < stop:
            record = self.train_step()
            examples += c.batch_size
            if c.log_every and (self.step % c.log_every == 0 or self.step == stop):
                record["examples_per_s"] = examples / max(1e-9, time.perf_counter() - started)
                self._log(record)
            if self.dev is not None and c.eval_every and self.step % c.eval_every == 0:
                self.evaluate()
                evaluated_at = self.step
            if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self.save_checkpoint()
                saved_at = self.step
        if self.step == c.total_steps and self.step > first:
            if self.dev is not None and c.eval_every and evaluated_at != self.step:
                self.evaluate()
            if saved_at != self.step:
                self.save_checkpoint()
        best = self.output_dir / "best-model"
        return TrainResult(self.step, list(self.history), self.best_metric, best if best.exists() else None,
                           self.last_checkpoint)

    def _log(self, record: dict[str, float]) -> None:
        self.history.append(record)
        if self.rank != 0:
            return
        parts = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
        logger.info("step %d/%d %s", record["step"], self.config.total_steps, parts)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, float]:
        """Rank the dev set with the current weights and score it; keeps the best model in ``output_dir/best-model``.

        Returns ``{metric: value}`` (empty without a dev set). Runs on rank 0 only.
        """
        if self.dev is None or self.rank != 0:
            return {}
        from ..evaluate.metrics import evaluate as score_run

        modules = self._modules(self.encoder)
        for m in modules.values():
            m.eval()
        try:
            run = self._dev_run(self.dev, self.config.eval_k)
        finally:
            self._training_mode()
        metric = self.config.eval_metric
        value = float(score_run(run, self.dev.qrels, [metric])[metric])
        record = {"step": self.step, f"dev_{metric}": value}
        self._log(record)
        self._keep_if_best(value, {"metric": metric})
        return {metric: value}

    def _keep_if_best(self, value: float, about: dict[str, Any]) -> None:
        """Save the model as ``output_dir/best-model`` when ``value`` beats the best so far, with a
        ``latelex_training.json`` recording the step, the value and ``about`` (the metric, per-set figures)."""
        if self.best_metric is not None and value <= self.best_metric:
            return
        self.best_metric = value
        self._save_model(self.output_dir / "best-model")
        with open(self.output_dir / "best-model" / "latelex_training.json", "w", encoding="utf-8") as f:
            json.dump({"step": self.step, **about, "value": value}, f)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write a checkpoint (default ``output_dir/checkpoints/step-<N>``), keeping the newest
        ``keep_checkpoints``; only rank 0 writes. Returns the folder (None on other ranks)."""
        if self.rank != 0:
            return None
        target = Path(path) if path is not None else self.output_dir / "checkpoints" / f"step-{self.step}"
        weights = {f"{prefix}.{k}": v for prefix, m in self._modules(self.encoder).items()
                   for k, v in m.state_dict().items()}
        state = {
            "step": self.step,
            "identity": self.identity,
            "config": config_to_dict(self.config),
            "examples": len(self.data),
            "best_metric": self.best_metric,
            "history": self.history,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        saved = ckpt.save_checkpoint(target, weights=weights, optimizer_state=self.optimizer.state_dict(), state=state)
        self.last_checkpoint = saved
        if path is None:
            for old in ckpt.list_checkpoints(self.output_dir)[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return saved

    def parameters(self) -> dict[str, torch.Tensor]:
        """A detached copy of every trained parameter by name (for comparisons)."""
        return {f"{prefix}.{k}": v.detach().clone() for prefix, m in self._modules(self.encoder).items()
                for k, v in m.state_dict().items()}


class ColBERTTrainer(Trainer):
    """Trains a :class:`latelex.encoders.colbert.ColBERT` (backbone and projection) with MaxSim scores."""

    family = "colbert"

    @classmethod
    def _modules(cls, encoder: Any) -> dict[str, torch.nn.Module]:
        modules = {"backbone": encoder.backbone}
        if encoder.projection is not None:
            modules["projection"] = encoder.projection
        return modules

    @classmethod
    def _base_name(cls, encoder: Any) -> str:
        return str(encoder.source)

    def _scores(self, batch: TrainBatch):
        if self.config.in_batch_negatives:
            return batch_maxsim(self.encoder, batch.queries, batch.passages), {}, {}
        from ..scoring.maxsim import maxsim_pairwise

        Q, q_mask, D, d_mask = _encode_batch(self.encoder, batch.queries, batch.passages)
        W = self.config.nway
        Qr = Q.repeat_interleave(W, dim=0)
        scores = maxsim_pairwise(Qr, D, d_mask, q_mask.repeat_interleave(W, dim=0),
                                 similarity=self.encoder.config.similarity)
        return scores.view(len(batch.queries), W), {}, {}

    def _dev_run(self, dev: DevSet, k: int) -> Run:
        from ..scoring.maxsim import maxsim_packed
        from ..types import PackedEmbeddings

        pids = sorted({p for ps in dev.candidates.values() for p in ps}) if dev.candidates else list(dev.documents)
        qids = list(dev.queries)
        encoded = self.encoder.encode_documents([dev.documents[p] for p in pids], show_progress=False)
        queries = self.encoder.encode_queries([dev.queries[q] for q in qids], show_progress=False)
        position = {p: i for i, p in enumerate(pids)}
        everything = None if dev.candidates else PackedEmbeddings.from_list(encoded)
        similarity = self.encoder.config.similarity
        run: Run = {}
        for qid, q in zip(qids, queries):
            if everything is None:  # score only this query's candidates: a few dozen documents, not the collection
                mine = [p for p in dict.fromkeys(dev.candidates.get(qid, [])) if p in position]
                if not mine:
                    run[qid] = []
                    continue
                docs = PackedEmbeddings.from_list([encoded[position[p]] for p in mine])
            else:
                mine, docs = pids, everything
            scores = maxsim_packed(q, docs.vectors, docs.offsets, similarity=similarity).numpy()
            ranked = sorted(zip(scores.tolist(), mine), key=lambda t: (-t[0], t[1]))[:k]
            run[qid] = [Hit(p, float(s)) for s, p in ranked]
        return run

    def _save_model(self, path: Path) -> Path:
        return self.encoder.save(path, overwrite=True)


def _encode_batch(encoder: Any, queries: list[str], passages: list[str]):
    """``(Q, q_mask, D, d_mask)``: a ColBERT encoder's (B, Lq, dim) query and (N, Ld, dim) passage token vectors of
    a training batch with the masks of the tokens that count, with gradients where enabled."""
    q_tokens = encoder.tokenize_queries(queries)
    d_tokens = encoder.tokenize_documents(passages)
    Q = encoder.forward_tokens(q_tokens)
    D = encoder.forward_tokens(d_tokens)
    return Q, encoder.query_keep_mask(q_tokens).to(Q.device), D, encoder.document_keep_mask(d_tokens).to(D.device)


def batch_maxsim(encoder: Any, queries: list[str], passages: list[str]) -> torch.Tensor:
    """(B, N) MaxSim of every query against every passage of a training batch under ``encoder`` (a ColBERT), with
    gradients where enabled: the student's in-batch scores, and a :class:`latelex.train.teachers.MaxSimTeacher`'s."""
    from ..scoring.maxsim import maxsim_padded

    Q, q_mask, D, d_mask = _encode_batch(encoder, queries, passages)
    return maxsim_padded(Q, D, d_mask, q_mask, similarity=encoder.config.similarity)


__all__ = ["ColBERTTrainer", "Trainer", "TrainResult", "batch_maxsim", "lr_at"]
