"""Query padding width for PLAID's kernels, A/B: ``PlaidIndex.search`` with queries padded to a multiple of each
given width (``latelex.index.plaid.search.PAD_TOKENS``), the widths taking turns query by query (the order
alternating) over the 300 SciFact test queries, one thread, so that a change in the machine's load falls on all of
them alike. Prints the p50 of each round per width and the median of the per-query time ratios.

    .venv/bin/python scripts/plaid_pad_ab.py --index runs/scifact-v2-int8 --widths 16 8

The index is the quickstart's (``latelex index runs/scifact-v2-int8 --kind plaid --collection
../shared/datasets/scifact --backend onnx --quantize int8``). Run it under the ISA caps of
``latelex.index.plaid.cpu_paths.ISA_CAPS`` to see another instruction set (with ``NUMBA_CACHE_DIR`` set apart).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="a retriever index of SciFact (kind plaid)")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 8], help="padding widths (the first is the base)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import torch

    from latelex import Retriever
    from latelex.data.auto import read_queries_any
    from latelex.index.plaid import search as S

    torch.set_num_threads(1)
    texts = [t for _, t in read_queries_any(SHARED / "datasets" / "scifact", split="test")]
    retriever = Retriever.open(args.index)
    encoded = [torch.as_tensor(np.asarray(q, dtype=np.float32)) for q in retriever.encode_queries(texts)]
    index = retriever.index
    times: dict[int, list[float]] = {w: [] for w in args.widths}
    rankings: dict[int, list[list[str]]] = {w: [] for w in args.widths}
    for r in range(args.rounds):
        for i, Q in enumerate(encoded):
            for width in (args.widths if (i + r) % 2 == 0 else args.widths[::-1]):
                S.PAD_TOKENS = width
                start = time.perf_counter()
                hits = index.search([Q], k=10, threads=1)[0]
                times[width].append(time.perf_counter() - start)
                if r == 0:
                    rankings[width].append([h.doc_id for h in hits])
    print(machine())
    base = args.widths[0]
    for width, values in times.items():
        rounds = np.array(values).reshape(args.rounds, -1)
        ratio = np.median(np.array(values) / np.array(times[base]))
        same = sum(a == b for a, b in zip(rankings[width], rankings[base]))
        print(f"width {width}: p50 per round " + " ".join(f"{np.median(x) * 1e3:.2f}" for x in rounds)
              + f" ms; median per-query ratio to width {base}: {ratio:.3f}; identical top 10: {same} of {len(encoded)}")


if __name__ == "__main__":
    main()
