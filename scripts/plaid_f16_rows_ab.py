"""The exact stage's float32 centroid rows gathered from float16 or float32 centroids, A/B, as a user's single query
runs: each of the 300 SciFact test queries is encoded, then searched by ``PlaidIndex.search`` with one of the two
gathers, the gathers taking turns query by query (the order alternating by round), one thread. The encoding in
between evicts the search's arrays from the caches, as it does in use. Prints the p50 and mean of each gather, the
ratio of their p50s, and whether the two gathers gave the same top 10 and scores (both run on every query once).

    .venv/bin/python scripts/plaid_f16_rows_ab.py --index runs/scifact-v2-int8

Only integer centroid paths gather rows (``latelex info`` names the path; ``LATELEX_PLAID_CENTROIDS`` forces one).
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
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries; the first is not timed")
    args = parser.parse_args()

    import torch

    from latelex import Retriever
    from latelex.data.auto import read_queries_any

    torch.set_num_threads(1)
    texts = [t for _, t in read_queries_any(SHARED / "datasets" / "scifact", split="test")]
    retriever = Retriever.open(args.index)
    index = retriever.index
    data = index._search_data()
    half = data.centroids_f16
    if half is None:
        raise SystemExit(f"{args.index}: no float16 gather here (float32 centroid path, or centroids not float16)")
    gathers = {"float16": half, "float32": None}
    times: dict[str, list[float]] = {name: [] for name in gathers}
    differ = 0
    for r in range(args.rounds):
        for i, text in enumerate(texts):
            Q = torch.as_tensor(np.asarray(retriever.encode_queries([text])[0], dtype=np.float32))
            names = list(gathers) if (i + r) % 2 == 0 else list(gathers)[::-1]
            data.centroids_f16 = gathers[names[0]]
            start = time.perf_counter()
            hits = index.search([Q], k=10, threads=1)[0]
            elapsed = time.perf_counter() - start
            if r:
                times[names[0]].append(elapsed)
            if r == 0:  # both gathers on every query, untimed: the scores must be the same bits
                data.centroids_f16 = gathers[names[1]]
                other = index.search([Q], k=10, threads=1)[0]
                differ += [(h.doc_id, h.score) for h in hits] != [(h.doc_id, h.score) for h in other]
    data.centroids_f16 = half
    print(machine())
    print(f"{args.index}, {index.info()['centroid_scores']} centroid scores; each query encoded, then searched; "
          f"{len(texts)} queries x {args.rounds - 1} timed rounds, 1 thread")
    a, b = (np.array(times[n]) for n in gathers)
    for name, values in times.items():
        print(f"{name} rows: search p50 {np.median(values) * 1e3:.3f} ms, mean {np.mean(values) * 1e3:.3f} ms")
    print(f"float16 / float32: ratio of p50s {np.median(a) / np.median(b):.3f}; queries whose top 10 or scores "
          f"differ between the gathers: {differ} of {len(texts)}")


if __name__ == "__main__":
    main()
