"""Shared bits of the benchmark scripts: machine description, table printing, the shared data folder."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

SHARED = Path(os.environ.get("LATELEX_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def machine() -> str:
    """One line naming the CPU, its core count, the Python and the torch version, and the precision of PLAID's
    candidate-stage centroid scores on this CPU at torch's current thread count, with the measurement behind it, and
    the onnx backend's int8 weight type here (:func:`onnx_int8_weights`)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from latelex.index.plaid.cpu_paths import centroid_path, isa_caps

    decision = centroid_path(16384, 128)  # a typical index's shape, at this thread count (measured, or cached)
    scores = f"PLAID centroid scores {decision.path} ({decision.reason})"
    if isa_caps():  # e.g. ONEDNN_MAX_CPU_ISA=AVX2: torch's kernels run as on a CPU without AVX-512
        scores += f"; torch's instruction sets capped: {isa_caps()}"
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"Python {platform.python_version()}; {scores}{onnx_int8_weights()}")


def onnx_int8_weights() -> str:
    """'; onnx int8 weights W (why)' where onnxruntime is installed: the weights onnxruntime's kernels take for the
    onnx backend's int8 graphs on this CPU (latelex.encoders.ort_int8); empty otherwise."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return ""
    from latelex.encoders.ort_int8 import weights

    choice = weights()
    return f"; onnx int8 weights {choice.weights} ({choice.reason})"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def scifact_texts(limit: int | None = None) -> list[str]:
    """SciFact documents as the benchmarks encode them: title + " " + text."""
    from latelex.data import read_documents

    folder = SHARED / "datasets" / "scifact"
    if not folder.exists():
        raise SystemExit(f"{folder} is absent: the benchmark needs the shared datasets (set LATELEX_SHARED)")
    texts = [text for _, text in read_documents(folder)]
    return texts[:limit] if limit else texts


def scifact_test(limit: int | None = None) -> tuple[list, dict[str, str], dict[str, dict[str, int]]]:
    """SciFact's corpus (Documents), test queries ``{qid: text}`` and test qrels; with ``limit``, the first ``limit``
    documents and the queries with a relevant document among them (a smoke run)."""
    from latelex.data.auto import read_collection_documents
    from latelex.data.beir import BeirDataset

    folder = SHARED / "datasets" / "scifact"
    if not folder.exists():
        raise SystemExit(f"{folder} is absent: this script needs the shared datasets (set LATELEX_SHARED)")
    data = BeirDataset(folder, split="test")
    docs = list(read_collection_documents(folder))
    queries, qrels = dict(data.queries()), data.qrels()
    if limit:
        docs = docs[:limit]
        kept = {d.id for d in docs}
        qrels = {q: rel for q, rel in ((q, {d: r for d, r in rel.items() if d in kept}) for q, rel in qrels.items())
                 if rel}
        queries = {q: t for q, t in queries.items() if q in qrels}
        if not qrels:
            raise SystemExit(f"no test query has a relevant document among the first {limit}; raise --limit")
    return docs, queries, qrels
