"""``latelex train OUT --model M --triples F ...``: train ColBERT or SPLADE from triples (also under torchrun)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_encoder_options, add_verb, encoder_overrides, usage


def register(subparsers) -> None:
    p = add_verb(subparsers, "train", "train ColBERT or SPLADE from triples",
                 "Train from text triples (query<TAB>positive<TAB>negative) or id triples / n-way JSONL "
                 "([qid, pid+, pid-, ...] or with teacher scores [qid, [pid, score], ...]). Checkpoints every N steps; "
                 "--resume continues exactly where a run stopped. The final model is saved to OUT/final-model.")
    p.add_argument("output", metavar="OUT", help="output folder (checkpoints, log.jsonl, best-model, final-model)")
    p.add_argument("--model", required=True, help="backbone or checkpoint to start from (folder or Hub name)")
    p.add_argument("--triples", required=True, help="training triples: TSV of texts or JSONL of ids")
    p.add_argument("--queries", help="queries for id triples")
    p.add_argument("--collection", help="collection for id triples")
    p.add_argument("--teacher-scores", help="JSONL [qid, [[pid, score], ...]] of teacher scores for distillation")
    p.add_argument("--nway", type=int, default=2, help="passages per example: 1 positive + nway-1 negatives (default 2)")
    p.add_argument("--teacher", metavar="MODEL",
                   help="a ColBERT model or plain encoder that scores every batch during training (self-distillation; "
                        "needs --loss kl, margin_mse or score_mse); instead of --teacher-scores")
    p.add_argument("--distill-in-batch", action="store_true",
                   help="with --teacher: distil each query's scores over every passage of the batch, not only its own")
    p.add_argument("--loss", choices=["ce", "kl", "margin_mse", "score_mse"], default="ce",
                   help="ce (softmax over n-way), or distillation: kl, margin_mse or score_mse (teacher scores matched)")
    p.add_argument("--no-in-batch-negatives", action="store_true", help="score only each example's own passages")
    p.add_argument("--temperature", type=float, default=1.0, help="kl: temperature of both score distributions (default 1)")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="kl / margin_mse: loss = alpha * distillation + (1 - alpha) * ce (default 1)")
    p.add_argument("--ce-temperature", type=float, default=1.0,
                   help="ce: divide scores by this before the softmax (default 1, ColBERT's loss)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps, then linear decay")
    p.add_argument("--accumulation", type=int, default=1, help="gradient accumulation micro-batches per step")
    p.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable checkpoint every N steps")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate on the dev set every N steps, keeping the best model")
    p.add_argument("--dev-queries", help="dev queries (BEIR folder with --dev-split, TSV, JSONL)")
    p.add_argument("--dev-qrels", help="dev qrels")
    p.add_argument("--dev-split", help="BEIR split of the dev set (e.g. dev)")
    p.add_argument("--dev-collection", help="dev collection (default: --collection)")
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=128, help="ColBERT: projection size for a new head (default 128)")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="ColBERT: train rank-N LoRA adapters (alpha 2N) and the projection on a frozen backbone (default 0: "
                        "train every weight)")
    p.add_argument("--no-dropout", action="store_true", help="train in eval mode (no dropout): 2-3x faster on CPU")
    p.add_argument("--lambda-q", type=float, default=3e-4, help="SPLADE: query regularisation weight")
    p.add_argument("--lambda-d", type=float, default=1e-4, help="SPLADE: document regularisation weight")
    p.add_argument("--regulariser", choices=["flops", "l1"], default="flops", help="SPLADE regulariser")
    add_encoder_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import config_replace
    from ..data import read_documents, read_qrels_any, read_queries_any
    from ..train.config import SpladeTrainConfig, TrainConfig
    from ..train.data import DevSet, TrainingData

    family = args.family or "colbert"
    if args.backend in ("onnx", "openvino") or args.quantize:
        raise usage(f"training runs on the torch backend; drop --backend {args.backend or 'onnx'} and --quantize "
                    "(use them to index or search with the trained model)")
    if is_id_triples(args.triples):
        if not args.queries or not args.collection:
            raise usage("id triples need --queries and --collection to look their texts up")
        data = TrainingData.from_id_triples(args.triples, args.queries, args.collection, nway=args.nway,
                                            teacher_scores=args.teacher_scores)
    else:
        data = TrainingData.from_text_triples(args.triples)
    settings = dict(output_dir=str(args.output), lr=args.lr, batch_size=args.batch_size, nway=args.nway,
                    accumulation_steps=args.accumulation, total_steps=args.steps, warmup_steps=args.warmup,
                    loss=args.loss, in_batch_negatives=not args.no_in_batch_negatives, seed=args.seed,
                    temperature=args.temperature, ce_temperature=args.ce_temperature, alpha=args.alpha,
                    checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, dropout=not args.no_dropout,
                    distill_in_batch=args.distill_in_batch)
    if args.teacher and args.teacher_scores:
        raise usage("give either --teacher (scores computed during training) or --teacher-scores (a file), not both")
    if args.distill_in_batch and not args.teacher:
        raise usage("--distill-in-batch needs --teacher")
    teacher = None
    if args.teacher:
        from ..train.teachers import MaxSimTeacher

        teacher = MaxSimTeacher.from_pretrained(args.teacher, device=args.device)
    dev = None
    if args.dev_queries:
        if not args.dev_qrels:
            raise usage("--dev-queries needs --dev-qrels")
        dev = DevSet.create(dict(read_queries_any(args.dev_queries, args.dev_split)),
                            read_qrels_any(args.dev_qrels, args.dev_split),
                            dict(read_documents(args.dev_collection or args.collection)))
    if family == "colbert":
        from ..encoders.colbert import ColBERT
        from ..encoders.colbert_checkpoints import read_checkpoint
        from ..encoders.loading import resolve_model_dir
        from ..train.colbert_trainer import ColBERTTrainer as trainer_cls

        overrides = encoder_overrides(args, family)
        if read_checkpoint(resolve_model_dir(args.model)).projection is not None:
            encoder = ColBERT.from_pretrained(args.model, device=args.device, **overrides)
        else:
            encoder = ColBERT.from_backbone(args.model, dim=args.dim, seed=args.seed, device=args.device, **overrides)
        if args.lora_rank:
            from ..encoders.lora import LoRAConfig

            encoder.add_lora(LoRAConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank), seed=args.seed)
        config = config_replace(TrainConfig(output_dir=str(args.output)), **settings)
    else:
        if args.lora_rank:
            raise usage("--lora-rank applies to ColBERT training")
        from ..encoders.splade import Splade
        from ..train.splade_trainer import SpladeTrainer as trainer_cls

        encoder = Splade.from_pretrained(args.model, device=args.device, **encoder_overrides(args, family))
        config = config_replace(SpladeTrainConfig(output_dir=str(args.output)), **settings, lambda_q=args.lambda_q,
                                lambda_d=args.lambda_d, regulariser=args.regulariser)
    trainer = trainer_cls.create(encoder, data, config, dev=dev, resume=args.resume, device=args.device, teacher=teacher)
    # Under torchrun every process runs this command; the first one alone reports and writes the final model
    # (the processes hold the same weights, and two writers of one folder would race).
    lead = trainer.rank == 0
    if lead:
        print(f"training {encoder!r} on {len(data)} examples over {trainer.world_size} process(es)", file=sys.stderr)
    result = trainer.train()
    if lead:
        final = encoder.save(Path(args.output) / "final-model", overwrite=True)
        print(f"trained {result.step} steps; final model: {final}")
        if result.best_model is not None:
            print(f"best dev {config.eval_metric}: {result.best_metric:.4f} ({result.best_model})")
    trainer.close()
    return 0


def is_id_triples(path: str) -> bool:
    """Whether ``path`` holds id triples / n-way JSONL (``[qid, pid, ...]`` lines) rather than text triples."""
    from ..data.lines import iter_lines

    if path.endswith(".jsonl"):
        return True
    for _, line in iter_lines(path):
        if line.strip():
            return line.lstrip().startswith("[")
    return False
