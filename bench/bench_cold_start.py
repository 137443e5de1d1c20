"""Cold start: the wall time of a one-off ``latelex search INDEX --query ...`` in a fresh process, for an index
whose encoder runs on ONNX, with and without the fast open (a cached graph whose sidecar records the model files
it came from opens without the torch model; see ``latelex.encoders.onnx_cache``).

    .venv/bin/python bench/bench_cold_start.py --index runs/scifact-v2-int8
    .venv/bin/python bench/bench_cold_start.py --index runs/scifact-splade --runs 5

"full load" runs first remove the recorded sources from the graphs' sidecars (what a cache written before the fast
open looked like), so the process loads the torch model, checks the graph and records the sources again; "fast
open" runs follow each of them, on the record just written. The two alternate, and each row gives the median and
the range over ``--runs`` runs. The index must have been searched once on this machine (the graphs cached).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, print_table  # noqa: E402


def graph_folder(index: Path) -> tuple[Path, dict]:
    """The ONNX cache folder of the index's encoder, as the encoder finds it (default ``onnx_dir``), and the
    encoder's spec."""
    from latelex import Retriever
    from latelex.encoders.loading import resolve_model_dir
    from latelex.encoders.onnx_cache import cache_folder

    spec = Retriever.inspect(index)["encoder"]
    if not spec or spec.get("backend") != "onnx":
        raise SystemExit(f"{index}: its encoder does not run on ONNX (build it with --backend onnx)")
    name = spec["model"]
    return cache_folder(resolve_model_dir(name), Path(name).expanduser().exists()), spec


def forget_sources(folder: Path) -> int:
    """Remove the recorded sources from every sidecar in ``folder``; how many had them."""
    from latelex.fsio import atomic_write

    count = 0
    for sidecar in folder.glob("*.json"):
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.pop("sources", None) is not None:
            with atomic_write(sidecar) as f:
                json.dump(meta, f, indent=2)
            count += 1
    return count


def one_search(index: Path, query: str) -> float:
    command = [sys.executable, "-m", "latelex.cli", "-q", "search", str(index), "--query", query, "-k", "10"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"latelex search failed: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--query", default="vitamin D deficiency and cancer risk")
    args = parser.parse_args()

    folder, spec = graph_folder(args.index)
    one_search(args.index, args.query)  # the graphs are cached and their sources recorded
    times: dict[str, list[float]] = {"full load": [], "fast open": []}
    for _ in range(args.runs):
        if not forget_sources(folder):
            raise SystemExit(f"{folder}: no sidecar records its sources; is this the encoder's cache folder?")
        times["full load"].append(one_search(args.index, args.query))
        times["fast open"].append(one_search(args.index, args.query))
    print(f"machine: {machine()}")
    print(f"index: {args.index} (encoder {spec.get('family')} {spec.get('model')}, backend {spec.get('backend')}, "
          f"quantize {spec.get('quantize')}); graphs in {folder}; one query, a fresh process per run")
    full = statistics.median(times["full load"])
    print_table(["start", "wall s (median)", "range", "vs full load"],
                [[name, f"{statistics.median(t):.2f}", f"{min(t):.2f}-{max(t):.2f}", f"{full / statistics.median(t):.2f}x"]
                 for name, t in times.items()])


if __name__ == "__main__":
    main()
