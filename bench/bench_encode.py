"""Encoding throughput and peak memory: latelex's ColBERT encoder against sentence-transformers' encode.

Both encode the same SciFact documents (title + " " + text, 256 tokens at most) with the same model,
all-MiniLM-L6-v2, batch size and thread count, each in a fresh process so that each peak memory is its own.
sentence-transformers is measured twice: returning token embeddings (the same work as ColBERT encoding)
and returning its default pooled sentence embeddings.

latelex is measured on each backend: torch, onnx (float32), onnx with int8 weights, openvino (the float32 graph
run by OpenVINO, in bfloat16 where the CPU has it) and openvino int8 (weights and activations in int8, calibrated
by NNCF; both skipped when openvino is not installed). The ONNX graphs are
exported (and verified) by a separate process first, so the measured processes load them from the cache, as every
load after the first does; "load s" is the time to a ready encoder. sentence-transformers' own ONNX backend
(``backend="onnx"``, and int8 through ``export_dynamic_quantized_onnx_model`` with the quantisation config that
matches this CPU: avx512_vnni, avx512 or avx2) is measured when it is installed (it needs ``optimum-onnx``);
otherwise its rows say why not.

sentence-transformers' ONNX backend needs transformers < 4.58 and latelex needs 5 or later, so the
sentence-transformers rows can run under another Python (``--st-python``, or ``$LATELEX_ST_PYTHON``), whose
environment was made like this (torch from the same local file as latelex's)::

    python3.11 -m venv /tmp/st-onnx-venv
    /tmp/st-onnx-venv/bin/pip install torch==2.13.0
    /tmp/st-onnx-venv/bin/pip install "sentence-transformers==5.1.2" "optimum-onnx[onnxruntime]==0.1.0" \
        "transformers>=4.55,<4.58"

Every row encodes the same texts (written to a file by the driver), in a fresh process of its own.

    python bench/bench_encode.py                 # whole corpus (5,183 documents)
    python bench/bench_encode.py --limit 1000    # a quicker run
    python bench/bench_encode.py --st-python /tmp/st-onnx-venv/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, machine, peak_rss_mb, print_table, scifact_texts  # noqa: E402

MODEL = SHARED / "models" / "all-MiniLM-L6-v2"

#: latelex rows: system name -> (backend, quantize).
LATELEX = {"latelex": ("torch", None), "latelex-onnx": ("onnx", None), "latelex-onnx-int8": ("onnx", "int8"),
           "latelex-openvino": ("openvino", None), "latelex-openvino-int8": ("openvino", "int8")}
#: sentence-transformers rows: system name -> (output value, backend, int8).
ST = {"st-tokens": ("token_embeddings", "torch", False), "st-pooled": ("sentence_embedding", "torch", False),
      "st-onnx": ("sentence_embedding", "onnx", False), "st-onnx-int8": ("sentence_embedding", "onnx", True)}
LABELS = {
    "latelex": "latelex ColBERT.encode_documents (torch)",
    "latelex-onnx": "latelex ColBERT.encode_documents (onnx fp32)",
    "latelex-onnx-int8": "latelex ColBERT.encode_documents (onnx int8)",
    "latelex-openvino": "latelex ColBERT.encode_documents (openvino)",
    "latelex-openvino-int8": "latelex ColBERT.encode_documents (openvino static int8)",
    "st-tokens": "sentence-transformers encode (token_embeddings)",
    "st-pooled": "sentence-transformers encode (pooled)",
    "st-onnx": "sentence-transformers encode (pooled, backend=onnx)",
    "st-onnx-int8": "sentence-transformers encode (pooled, onnx int8)",
}


class Unavailable(Exception):
    """A row that cannot be measured in this environment (the message says why)."""


def st_int8_config() -> str:
    """The quantisation config of ``export_dynamic_quantized_onnx_model`` that suits this CPU."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def st_onnx_model(max_length: int, int8: bool, work: Path):
    """sentence-transformers' ONNX backend on the model (a copy in ``work``, as it writes its ONNX files beside the
    model), int8-quantised with its own helper when ``int8``."""
    import shutil

    import importlib

    try:
        importlib.import_module("optimum.onnxruntime")
    except ImportError as exc:
        raise Unavailable(f"needs optimum-onnx, not installed here ({exc}); it requires transformers<4.58 and "
                          f"latelex needs transformers>=5: pass --st-python (see the docstring)") from None
    from sentence_transformers import SentenceTransformer

    folder = work / "st-model"
    if not folder.exists():
        shutil.copytree(MODEL, folder)
    model = SentenceTransformer(str(folder), device="cpu", backend="onnx")
    if int8:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        config = st_int8_config()
        export_dynamic_quantized_onnx_model(model, config, str(folder))
        model = SentenceTransformer(str(folder), device="cpu", backend="onnx",
                                    model_kwargs={"file_name": f"onnx/model_qint8_{config}.onnx"})
    model.max_seq_length = max_length
    return model


def load_latelex(system: str, max_length: int):
    from latelex.encoders.colbert import ColBERT

    from latelex.errors import ConfigError

    backend, quantize = LATELEX[system]
    try:
        return ColBERT.from_pretrained(MODEL, doc_maxlen=max_length, query_maxlen=64, backend=backend,
                                       quantize=quantize)
    except ConfigError as exc:  # a runtime that is not installed here
        raise Unavailable(str(exc)) from None


def worker(system: str, batch_size: int, threads: int, max_length: int, work: Path) -> dict:
    import torch

    torch.set_num_threads(threads)
    texts = json.loads((work / "texts.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    if system in LATELEX:
        try:
            model = load_latelex(system, max_length)
        except Unavailable as exc:
            return {"system": system, "unavailable": str(exc)}
        load = time.perf_counter() - started
        model.encode_documents(texts[:batch_size], batch_size=batch_size, show_progress=False)  # warm-up
        start = time.perf_counter()
        out = model.encode_documents(texts, batch_size=batch_size, show_progress=False)
        seconds = time.perf_counter() - start
        tokens = sum(int(x.shape[0]) for x in out)
    else:
        output_value, backend, int8 = ST[system]
        if backend == "onnx":
            try:
                model = st_onnx_model(max_length, int8, work)
            except Unavailable as exc:
                return {"system": system, "unavailable": str(exc)}
        else:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(MODEL), device="cpu", backend="torch")
            model.max_seq_length = max_length
        load = time.perf_counter() - started
        model.encode(texts[:batch_size], batch_size=batch_size, output_value=output_value)
        start = time.perf_counter()
        out = model.encode(texts, batch_size=batch_size, output_value=output_value, show_progress_bar=False)
        seconds = time.perf_counter() - start
        tokens = sum(int(x.shape[0]) for x in out) if system == "st-tokens" else len(out)
    versions = {}
    if system in ST:
        import sentence_transformers
        import transformers

        versions = {"sentence-transformers": sentence_transformers.__version__, "transformers": transformers.__version__}
        if backend == "onnx":
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
            versions["int8 config"] = st_int8_config() if int8 else "-"
    return {"system": system, "docs": len(texts), "seconds": seconds, "docs_per_s": len(texts) / seconds,
            "peak_rss_mb": peak_rss_mb(), "vectors": tokens, "load_s": load, "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--systems", nargs="+", choices=list(LABELS), default=list(LABELS),
                        help="rows to measure (default: all)")
    parser.add_argument("--st-python", default=os.environ.get("LATELEX_ST_PYTHON") or sys.executable,
                        help="the Python that runs the sentence-transformers rows (default: $LATELEX_ST_PYTHON, else "
                             "this one)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:  # export (and verify) a latelex ONNX graph into the cache, outside the measured process
        import torch

        torch.set_num_threads(args.threads)
        with contextlib.suppress(Unavailable):  # the worker reports it
            load_latelex(args.prepare, args.max_length)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch_size, args.threads, args.max_length, Path(args.work))))
        return
    if "latelex" not in args.systems:
        args.systems.insert(0, "latelex")  # the reference of the ratios
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as work:
        (Path(work) / "texts.json").write_text(json.dumps(scifact_texts(args.limit)), encoding="utf-8")
        # latelex's ONNX graphs of a read-only model folder go to the user cache: here, a private one
        env = {**os.environ, "LATELEX_CACHE": os.environ.get("LATELEX_CACHE") or str(Path(work) / "cache")}
        for system in args.systems:
            common = ["--batch-size", str(args.batch_size), "--threads", str(args.threads),
                      "--max-length", str(args.max_length), "--work", work]
            python = sys.executable if system in LATELEX else args.st_python
            if LATELEX.get(system, ("torch",))[0] in ("onnx", "openvino"):
                proc = subprocess.run([sys.executable, __file__, "--prepare", system, *common], capture_output=True,
                                      text=True, env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"{system} (export) failed:\n{proc.stderr[-2000:]}")
            proc = subprocess.run([python, __file__, "--worker", system, *common], capture_output=True,
                                  text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{system} failed:\n{proc.stderr[-2000:]}")
            results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = results["latelex"]
    st_torch = results.get("st-tokens") if "unavailable" not in results.get("st-tokens", {"unavailable": 1}) else None
    rows, notes = [], []
    for system, r in results.items():
        if "unavailable" in r:
            rows.append([LABELS[system]] + ["-"] * 8)
            notes.append(f"{LABELS[system]}: not measured: {r['unavailable']}")
            continue
        vs_st = f"{r['docs_per_s'] / st_torch['docs_per_s']:.2f}x" if st_torch else "-"
        rows.append([LABELS[system], f"{r['docs']}", f"{r['load_s']:.1f}", f"{r['seconds']:.1f}",
                     f"{r['docs_per_s']:.1f}", vs_st, f"{r['docs_per_s'] / ours['docs_per_s']:.2f}x",
                     f"{r['peak_rss_mb']:.0f}", f"{r['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x"])
        if r.get("versions"):
            notes.append(f"{LABELS[system]}: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()))
    print(f"all-MiniLM-L6-v2 on SciFact, max {args.max_length} tokens, batch {args.batch_size}, {args.threads} threads")
    print(f"machine: {machine()}")
    print_table(["system", "docs", "load s", "seconds", "docs/s", "speed vs st torch (tokens)",
                 "speed vs latelex torch", "peak RSS MiB", "RSS vs latelex torch"], rows)
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
