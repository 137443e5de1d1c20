"""The graph runtimes side by side: the built-in model's cached ONNX graphs run by onnxruntime (float32, int8) and by
OpenVINO Runtime (float32, and bfloat16 inference precision where the CPU has it), on the same SciFact batches.
It is how the openvino backend (``backend="openvino"``, which uses bfloat16 where the CPU has it) was judged worth
adding; ``bench/bench_encode.py`` measures the backends themselves against sentence-transformers.

    .venv/bin/pip install -e ".[openvino]"
    .venv/bin/python scripts/openvino_probe.py                 # the first 512 abstracts, batches of 32 (~2 min)
    .venv/bin/python scripts/openvino_probe.py --limit 1024 --threads 2

The openvino backend's int8 graph (weights and activations statically quantised by NNCF, ``quantize="int8"``)
is measured too, run as the backend runs it.

The documents are tokenised once by the encoder (256 tokens, sorted by length, padded per batch as encoding does);
every runtime gets the same feeds. Printed per runtime: documents per second (one warm-up batch untimed, then every
batch once), the ratio to onnxruntime int8 (latelex's fastest backend today), and the mean cosine of the token
vectors (padding excluded) to onnxruntime float32, which latelex verifies against torch within 1e-4.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import machine, print_table, scifact_texts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=512, help="SciFact documents (default 512)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: torch's)")
    args = parser.parse_args()
    try:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints
    except ImportError:
        raise SystemExit("this probe needs OpenVINO Runtime: .venv/bin/pip install -e '.[openvino]'") from None
    import torch

    from latelex import ColBERT
    from latelex.models import DEFAULT_COLBERT_MODEL

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    fp32 = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, backend="onnx")  # exports and verifies when not cached
    int8 = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, backend="onnx", quantize="int8")
    try:  # the openvino backend's static int8 graph (NNCF), exported and calibrated when not cached
        static = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, backend="openvino", quantize="int8")._graph.path
    except Exception as exc:  # noqa: BLE001 - NNCF missing or the graph failing its check: the row says why
        static, why = None, str(exc).splitlines()[0]
    texts = scifact_texts(args.limit)
    rows = fp32._token_ids(texts, query=False)
    order = np.argsort([-len(r) for r in rows], kind="stable")
    batches = []
    for start in range(0, len(order), args.batch_size):
        feeds = fp32._collate([rows[i] for i in order[start : start + args.batch_size]], query=False)
        batches.append({name: tensor.numpy() for name, tensor in feeds.items()})

    core = ov.Core()
    cpu_hints = core.get_property("CPU", props.device.capabilities)

    def openvino_runner(path: Path, precision: str):
        config = {props.inference_num_threads: threads, hints.inference_precision: precision,
                  hints.performance_mode: hints.PerformanceMode.LATENCY}
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()
        names = [i.get_any_name() for i in compiled.inputs]
        return lambda feeds: request.infer({n: feeds[n] for n in names})[compiled.outputs[0]]

    def onnxruntime_runner(graph):
        return lambda feeds: graph.run({n: torch.from_numpy(v) for n, v in feeds.items()}).numpy()

    runners = {"onnxruntime float32": onnxruntime_runner(fp32._graph), "onnxruntime int8": onnxruntime_runner(int8._graph),
               "openvino float32": openvino_runner(fp32._graph.path, "f32")}
    if "BF16" in cpu_hints:
        runners["openvino bfloat16"] = openvino_runner(fp32._graph.path, "bf16")
    if static is not None:  # its non-int8 operations in the precision the backend gives them
        runners["openvino static int8"] = openvino_runner(static, "bf16" if "BF16" in cpu_hints else "f32")
    else:
        print(f"openvino static int8: not measured ({why})", file=sys.stderr)

    outputs, speed = {}, {}
    for name, run in runners.items():
        run(batches[0])
        started = time.perf_counter()
        outputs[name] = [run(b) for b in batches]
        speed[name] = len(texts) / (time.perf_counter() - started)
        print(f"{name}: {speed[name]:.1f} docs/s", file=sys.stderr)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    reference = outputs["onnxruntime float32"]
    table = []
    for name in runners:
        cosines = [((unit(a) * unit(b)).sum(-1))[batch["attention_mask"].astype(bool)]
                   for a, b, batch in zip(outputs[name], reference, batches)]
        table.append([name, f"{speed[name]:.1f}", f"{speed[name] / speed['onnxruntime int8']:.2f}x",
                      f"{np.concatenate(cosines).mean():.5f}"])
    print(f"\nSciFact, first {len(texts)} documents, {DEFAULT_COLBERT_MODEL}, 256 tokens, batch {args.batch_size}, "
          f"{threads} threads; OpenVINO {ov.__version__}, CPU capabilities {' '.join(cpu_hints)}")
    print_table(["runtime", "docs/s", "vs onnxruntime int8", "mean cosine to onnxruntime float32"], table)
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
