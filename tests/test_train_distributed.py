"""Data-parallel training under torchrun: two CPU processes (gloo) train to the weights one process reaches.

With in-batch negatives off, each process's loss is the mean over its half of the batch and DistributedDataParallel
averages the gradients, so two processes take exactly the optimizer steps of one process over the whole batch. The
command is ``latelex train`` itself, so the test also holds the CLI's part: one report, one final model, one log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from latelex.cli import main

TOPICS = [
    "apple banana fruit", "cancer risk patients", "vaccine virus trial", "brain heart blood",
    "sparse index search", "gene protein cell", "drug dose treatment", "red green blue",
]
STEPS = 3

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no gloo process groups",
)


def triples(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, topic in enumerate(TOPICS):
            f.write(f"what about {topic}\t{topic} {topic} study results\t{TOPICS[(i + 1) % len(TOPICS)]} study\n")
    return path


def train_args(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return ["train", str(out), "--model", str(model), "--triples", str(data), "--steps", str(STEPS), "--lr", "1e-3",
            "--batch-size", "8", "--no-dropout", "--no-in-batch-negatives", "--query-maxlen", "16", "--doc-maxlen",
            "24", "--dim", "16", "--checkpoint-every", "2", *extra]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in ("model", "projection") for k, v in load_file(folder / f"{name}.safetensors").items()}


def test_two_processes_train_like_one(tiny_bert, tmp_path):
    data = triples(tmp_path / "triples.tsv")
    assert main(train_args(tmp_path / "one", tiny_bert, data)) == 0

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                                       os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "latelex.cli", *train_args(tmp_path / "two", tiny_bert, data, "--accumulation", "2")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    # one process reported, wrote the final model and the log
    assert done.stdout.count("trained 3 steps") == 1, done.stdout
    assert "over 2 process(es)" in done.stderr
    two = tmp_path / "two"
    records = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [STEPS]  # logged at the last step, by one process
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-2", "step-3"]

    # the same weights as one process over the whole batch, and not the starting weights
    one, both = weights(tmp_path / "one" / "final-model"), weights(two / "final-model")
    assert one.keys() == both.keys()
    start = load_file(tiny_bert / "model.safetensors")
    assert any(not torch.allclose(one[f"model.{k}"], v) for k, v in start.items() if f"model.{k}" in one)
    for k in one:
        torch.testing.assert_close(both[k], one[k], rtol=1e-4, atol=1e-5)
    # the logged loss is the whole batch's (both processes' shares), as one process logs it
    alone = json.loads((tmp_path / "one" / "log.jsonl").read_text().splitlines()[-1])
    assert records[-1]["loss"] == pytest.approx(alone["loss"], rel=1e-5)
