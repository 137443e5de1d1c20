"""Single-query latency, end to end: encoding and search of one query at a time, per encoder backend.

    .venv/bin/python bench/bench_query_latency.py --index DIR      # a SciFact index built by `latelex index`

One thread (torch, onnxruntime, OpenVINO and PLAID), warm (four queries first), the 300 SciFact test queries one
at a time: for each backend (torch, onnx float32, onnx int8, openvino; openvino is skipped when it is not
installed) the p50 / p95 of encoding (``Retriever.encode_queries`` of one text), of search (``Retriever.search``
with the encoded query, k=10, no texts) and of their sum, and how many of the torch backend's top-10 ids each
backend returns. The backends take turns query by query, so that a change in the machine's load falls on all of
them alike. The ONNX graphs are exported (and verified) before timing starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, print_table  # noqa: E402

BACKENDS = {"torch": {}, "onnx fp32": {"backend": "onnx"}, "onnx int8": {"backend": "onnx", "quantize": "int8"},
            "openvino": {"backend": "openvino"}, "openvino int8": {"backend": "openvino", "quantize": "int8"}}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="a retriever index of SciFact")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    args = parser.parse_args()

    import torch

    from latelex import Retriever
    from latelex.config import RUNTIME_SPEC_KEYS
    from latelex.data.auto import read_queries_any
    from latelex.encoders import encoder_from_spec
    from latelex.errors import ConfigError

    torch.set_num_threads(args.threads)
    queries = [text for _, text in read_queries_any(SHARED / "datasets" / "scifact", split="test")]
    spec = {k: v for k, v in Retriever.inspect(args.index)["encoder"].items() if k not in RUNTIME_SPEC_KEYS}
    retrievers = {}
    for name in args.backends:
        try:
            encoder = encoder_from_spec({**spec, **BACKENDS[name]})  # the runtimes take torch's thread count
        except ConfigError as exc:  # a runtime that is not installed here
            print(f"{name}: not measured ({exc})", file=sys.stderr)
            continue
        retrievers[name] = Retriever.open(args.index, encoder=encoder)
    for r in retrievers.values():
        for q in queries[:4]:
            r.search(q, k=10, with_text=False)
    times = {name: {"encode": [], "search": [], "sum": []} for name in retrievers}
    tops: dict[str, list[list[str]]] = {name: [] for name in retrievers}
    for q in queries:
        for name, r in retrievers.items():
            start = time.perf_counter()
            encoded = r.encode_queries([q])
            middle = time.perf_counter()
            hits = r.search(q, k=10, with_text=False, encoded=encoded)
            end = time.perf_counter()
            times[name]["encode"].append((middle - start) * 1000)
            times[name]["search"].append((end - middle) * 1000)
            times[name]["sum"].append((end - start) * 1000)
            tops[name].append([h.doc_id for h in hits])
    info = Retriever.inspect(args.index)
    print(f"machine: {machine()}")
    print(f"index: {info['kind']}, {info['documents']} documents, model {spec.get('model')}; {len(queries)} queries, "
          f"one at a time, {args.threads} thread(s)")
    reference = tops.get("torch")
    rows = []
    for name, t in times.items():
        agree = (sum(len(set(a) & set(b)) for a, b in zip(tops[name], reference)) / (10 * len(queries))
                 if reference else float("nan"))
        rows.append([name] + [f"{percentile(t[part], 50):.1f} / {percentile(t[part], 95):.1f}"
                              for part in ("encode", "search", "sum")] + [f"{agree:.3f}"])
    print_table(["backend", "encode p50 / p95 ms", "search p50 / p95 ms", "sum p50 / p95 ms",
                 "top-10 shared with torch"], rows)


if __name__ == "__main__":
    main()
