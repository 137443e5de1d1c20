"""Encoding throughput and peak memory: latelex's ColBERT encoder against sentence-transformers' encode.

Both encode the same SciFact documents (title + " " + text, 256 tokens at most) with the same model,
all-MiniLM-L6-v2, batch size and thread count, each in a fresh process so that each peak memory is its own.
sentence-transformers is measured twice: returning token embeddings (the same work as ColBERT encoding)
and returning its default pooled sentence embeddings.

    python bench/bench_encode.py                 # whole corpus (5,183 documents)
    python bench/bench_encode.py --limit 1000    # a quicker run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, machine, peak_rss_mb, print_table, scifact_texts  # noqa: E402

MODEL = SHARED / "models" / "all-MiniLM-L6-v2"


def worker(system: str, limit: int | None, batch_size: int, threads: int, max_length: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    texts = scifact_texts(limit)
    if system == "latelex":
        from latelex.encoders.colbert import ColBERT

        model = ColBERT.from_pretrained(MODEL, doc_maxlen=max_length, query_maxlen=64)
        model.encode_documents(texts[:batch_size], batch_size=batch_size, show_progress=False)  # warm-up
        start = time.perf_counter()
        out = model.encode_documents(texts, batch_size=batch_size, show_progress=False)
        seconds = time.perf_counter() - start
        tokens = sum(int(x.shape[0]) for x in out)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(MODEL), device="cpu")
        model.max_seq_length = max_length
        output_value = "token_embeddings" if system == "st-tokens" else "sentence_embedding"
        model.encode(texts[:batch_size], batch_size=batch_size, output_value=output_value)
        start = time.perf_counter()
        out = model.encode(texts, batch_size=batch_size, output_value=output_value, show_progress_bar=False)
        seconds = time.perf_counter() - start
        tokens = sum(int(x.shape[0]) for x in out) if system == "st-tokens" else len(out)
    return {"system": system, "docs": len(texts), "seconds": seconds, "docs_per_s": len(texts) / seconds,
            "peak_rss_mb": peak_rss_mb(), "vectors": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.limit, args.batch_size, args.threads, args.max_length)))
        return
    results = {}
    for system in ("latelex", "st-tokens", "st-pooled"):
        cmd = [sys.executable, __file__, "--worker", system, "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--max-length", str(args.max_length)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{system} failed:\n{proc.stderr[-2000:]}")
        results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = results["latelex"]
    rows = []
    labels = {"latelex": "latelex ColBERT.encode_documents", "st-tokens": "sentence-transformers encode (token_embeddings)",
              "st-pooled": "sentence-transformers encode (pooled)"}
    for system, r in results.items():
        rows.append([labels[system], f"{r['docs']}", f"{r['seconds']:.1f}", f"{r['docs_per_s']:.1f}",
                     f"{ours['docs_per_s'] / r['docs_per_s']:.2f}x", f"{r['peak_rss_mb']:.0f}",
                     f"{r['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x"])
    print(f"all-MiniLM-L6-v2 on SciFact, max {args.max_length} tokens, batch {args.batch_size}, {args.threads} threads")
    print(f"machine: {machine()}")
    print_table(["system", "docs", "seconds", "docs/s", "latelex speed-up", "peak RSS MiB", "RSS vs latelex"], rows)


if __name__ == "__main__":
    main()
