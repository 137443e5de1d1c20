"""ColBERT training throughput (examples per second): latelex's ColBERTTrainer against PyLate's trainer.

Both train the same model (all-MiniLM-L6-v2 with a new 128-dimensional projection), on the same SciFact training
triples (query, judged positive, random negative), with the same batch size, lengths (32 query tokens with
[MASK] expansion, 128 document tokens), loss (softmax cross-entropy with in-batch negatives), optimizer (AdamW,
gradient clipping at 1.0) and thread count (default 1: on a shared 2-core machine a second thread mostly spins),
each in its own fresh process. After ``--warmup`` steps, ``--steps``
optimizer steps are timed.

PyLate runs in its own virtual environment (it pins sentence-transformers and transformers versions that differ
from latelex's), driven through a subprocess worker:

    python3 -m venv /tmp/pylate-venv && /tmp/pylate-venv/bin/pip install torch==2.13.0 pylate
    python bench/bench_train.py                        # 16 examples per step, 2 warm-up + 8 timed steps
    python bench/bench_train.py --pylate-python NONE   # latelex only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, peak_rss_mb  # noqa: E402

MODEL = SHARED / "models" / "all-MiniLM-L6-v2"
DATA = SHARED / "datasets" / "scifact"


def make_triples(count: int, seed: int = 0) -> list[list[str]]:
    """``count`` (query, positive, negative) texts from SciFact's training split, negatives drawn at random."""
    import random

    from latelex.data import BeirDataset, read_beir_corpus

    if not DATA.exists():
        raise SystemExit(f"{DATA} is absent: the benchmark needs the shared datasets (set LATELEX_SHARED)")
    dataset = BeirDataset(DATA, split="train")
    corpus = dict(read_beir_corpus(DATA))
    queries = dict(dataset.queries())
    qrels = dataset.qrels()
    ids = sorted(corpus)
    rng = random.Random(seed)
    triples = []
    for qid in sorted(qrels):
        positives = [p for p, g in sorted(qrels[qid].items()) if g > 0 and p in corpus]
        if qid not in queries or not positives:
            continue
        negative = rng.choice(ids)
        while negative in positives:
            negative = rng.choice(ids)
        triples.append([queries[qid], corpus[positives[0]], corpus[negative]])
    rng.shuffle(triples)
    while len(triples) < count:
        triples += triples
    return triples[:count]


def run_latelex(spec: dict) -> dict:
    import torch

    from latelex.data import IdExample
    from latelex.encoders.colbert import ColBERT
    from latelex.train import ColBERTTrainer, TrainConfig, TrainingData

    torch.set_num_threads(spec["threads"])
    triples = spec["triples"]
    queries = {f"q{i}": t[0] for i, t in enumerate(triples)}
    documents = {}
    examples = []
    for i, (_, pos, neg) in enumerate(triples):
        documents[f"p{i}"], documents[f"n{i}"] = pos, neg
        examples.append(IdExample(f"q{i}", (f"p{i}", f"n{i}"), None))
    data = TrainingData.from_examples(examples, queries, documents, nway=2)
    model = ColBERT.from_backbone(MODEL, dim=128, seed=0, device="cpu", query_maxlen=32, doc_maxlen=spec["doc_len"],
                                  query_marker="[unused0]", doc_marker="[unused1]")
    steps = spec["warmup"] + spec["steps"]
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(output_dir=out, lr=3e-6, batch_size=spec["batch_size"], nway=2, total_steps=steps,
                             decay="constant", in_batch_negatives=True, max_grad_norm=1.0, log_every=0, seed=0)
        trainer = ColBERTTrainer.create(model, data, config)
        losses = [trainer.train_step()["loss"] for _ in range(spec["warmup"])]
        start = time.perf_counter()
        losses += [trainer.train_step()["loss"] for _ in range(spec["steps"])]
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "losses": losses, "peak_rss_mb": peak_rss_mb(), "version": _version("latelex")}


def run_pylate(spec: dict) -> dict:
    import datasets
    import torch
    from pylate import losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    triples = spec["triples"]
    dataset = datasets.Dataset.from_dict({
        "query": [t[0] for t in triples], "positive": [t[1] for t in triples], "negative": [t[2] for t in triples],
    })
    model = models.ColBERT(model_name_or_path=str(MODEL), device="cpu", query_length=32, document_length=spec["doc_len"],
                           embedding_size=128)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    steps = spec["warmup"] + spec["steps"]
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=spec["batch_size"], max_steps=steps, learning_rate=3e-6,
            lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, save_strategy="no", report_to="none",
            logging_steps=1, dataloader_num_workers=0, use_cpu=True, seed=0, disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                             loss=losses.Contrastive(model=model),
                                             data_collator=utils.ColBERTCollator(model.tokenize), callbacks=[Clock()])
        trainer.train()
        history = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    seconds = stamps[-1] - stamps[spec["warmup"] - 1]
    return {"seconds": seconds, "losses": history, "peak_rss_mb": peak_rss_mb(), "version": _version("pylate")}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def worker(system: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = run_latelex(spec) if system == "latelex" else run_pylate(spec)
    print("RESULT " + json.dumps(result))


def launch(python: str, system: str, spec_path: str) -> tuple[dict | None, str]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([python, __file__, "--worker", system, "--spec", spec_path], capture_output=True,
                          text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), ""
    tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
    return None, tail[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--doc-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pylate-python", default="/tmp/pylate-venv/bin/python")
    parser.add_argument("--worker", choices=["latelex", "pylate"])
    parser.add_argument("--spec")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.spec)
        return

    import torch

    from common import machine, print_table

    torch.set_num_threads(args.threads)  # so that the machine line names the workers' thread count

    if not MODEL.exists():
        raise SystemExit(f"{MODEL} is absent: the benchmark needs the shared models (set LATELEX_SHARED)")
    count = args.batch_size * (args.warmup + args.steps)
    spec = {"triples": make_triples(count), "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
            "doc_len": args.doc_len, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = str(Path(tmp) / "spec.json")
        Path(spec_path).write_text(json.dumps(spec), encoding="utf-8")
        ours, why = launch(sys.executable, "latelex", spec_path)
        if ours is None:
            raise SystemExit(f"latelex worker failed: {why}")
        if args.pylate_python == "NONE" or not Path(args.pylate_python).exists():
            peer, peer_why = None, f"no PyLate environment at {args.pylate_python}"
        else:
            peer, peer_why = launch(args.pylate_python, "pylate", spec_path)

    examples = args.batch_size * args.steps
    ours_rate = examples / ours["seconds"]
    rows = [["latelex ColBERTTrainer " + ours["version"], f"{ours_rate:.2f}", f"{ours['seconds']:.1f}",
             f"{ours['peak_rss_mb']:.0f}", "1.00"]]
    if peer is not None:
        peer_rate = examples / peer["seconds"]
        rows.append([f"PyLate {peer['version']} (sentence-transformers trainer)", f"{peer_rate:.2f}",
                     f"{peer['seconds']:.1f}", f"{peer['peak_rss_mb']:.0f}", f"{ours_rate / peer_rate:.2f}"])
    print(f"ColBERT training, all-MiniLM-L6-v2 -> 128 dims, SciFact train triples, batch {args.batch_size} "
          f"(in-batch negatives), query 32 / document {args.doc_len} tokens, {args.steps} timed steps after "
          f"{args.warmup} warm-up, {args.threads} threads")
    print_table(["system", "examples/s", "seconds", "peak RSS MiB", "latelex / this"], rows)
    if peer is None:
        print(f"PyLate: not run: {peer_why}")
    print("losses latelex:", " ".join(f"{x:.3f}" for x in ours["losses"]))
    if peer is not None:
        print("losses PyLate: ", " ".join(f"{x:.3f}" for x in peer["losses"]))
    print("machine:", machine())


if __name__ == "__main__":
    main()
