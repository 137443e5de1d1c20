"""What token pooling at indexing costs and saves: PLAID indexes of SciFact with ``pool_factor`` 1, 2 and 3.

The corpus (5,183 documents, title + " " + text) is encoded once with the built-in ``latelex-colbert-minilm`` and
the same vectors are reused for every factor (an encoder wrapper that remembers each text's vectors), so the rows
differ only by pooling. Each index is built through ``Retriever.build(..., kind="plaid", pool_factor=f)``, the
code path of ``latelex index --kind plaid --pool-factor f``, and searched with PLAID's default settings on the 300
test queries. Printed: factor, nDCG@10, its delta against factor 1, the engine's bytes on disk and their ratio to
factor 1, stored token vectors and their ratio, the time pooling took, and the machine.

Target: pool_factor 2 within 0.005 nDCG@10 of unpooled, at most 55 % of its bytes.

    .venv/bin/python scripts/pooling_quality.py                       # the whole corpus (encoding: ~4 min on 2 cores)
    .venv/bin/python scripts/pooling_quality.py --limit 200           # a smoke run on a subset (figures not comparable)
    .venv/bin/python scripts/pooling_quality.py --factors 1 2 --nbits 2 --json runs/pooling.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import machine, print_table, scifact_test  # noqa: E402

TARGET_DELTA = 0.005
TARGET_BYTES = 0.55


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 3], help="pool factors (default 1 2 3)")
    parser.add_argument("--nbits", type=int, default=2, choices=(1, 2, 4), help="PLAID residual bits (default 2)")
    parser.add_argument("--limit", type=int, help="index only the first N documents (a smoke run; the queries are "
                                                  "those with a relevant document among them)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="encoder backend (default torch)")
    parser.add_argument("--quantize", choices=("int8",), help="with --backend onnx: int8 weights")
    parser.add_argument("--work", type=Path, help="where to build the indexes (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    factors = list(dict.fromkeys([1, *args.factors]))  # factor 1 is the baseline every delta is against

    from latelex import ColBERT, Retriever
    from latelex.encoders.caching import CachingEncoder
    from latelex.evaluate import evaluate
    from latelex.index.plaid import PlaidConfig
    from latelex.models import DEFAULT_COLBERT_MODEL
    from latelex.scoring.pooling import pool_documents

    docs, queries, qrels = scifact_test(args.limit)
    encoder = CachingEncoder(ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device=args.device, backend=args.backend,
                                                     quantize=args.quantize))

    started = time.perf_counter()
    vectors = encoder.encode_documents([d.text for d in docs], batch_size=args.batch_size, show_progress=True)
    encode_s = time.perf_counter() - started
    print(f"encoded {len(docs)} documents ({sum(v.shape[0] for v in vectors)} token vectors) in {encode_s:.0f} s",
          file=sys.stderr)

    work = args.work or Path(tempfile.mkdtemp(prefix="latelex-pooling-"))
    rows: list[dict] = []
    try:
        for factor in factors:
            started = time.perf_counter()
            pool_documents(vectors, factor)  # timed apart: the build below pools the same vectors again
            pool_s = time.perf_counter() - started
            target = work / f"plaid-pool{factor}"
            started = time.perf_counter()
            retriever = Retriever.build(target, encoder, docs, kind="plaid", overwrite=True, store_text=False,
                                        batch_size=args.batch_size, show_progress=False,
                                        engine_config=PlaidConfig(nbits=args.nbits), pool_factor=factor)
            build_s = time.perf_counter() - started
            run = retriever.search_queries(queries, k=10, show_progress=False)
            ndcg = evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]
            info = retriever.info()
            rows.append({"pool_factor": factor, "nDCG@10": ndcg, "bytes_on_disk": int(info["bytes_on_disk"]),
                         "token_vectors": int(info["token_vectors"]), "pool_s": pool_s, "build_s": build_s})
            print(f"factor {factor}: nDCG@10 {ndcg:.4f}, {info['bytes_on_disk']:,} bytes", file=sys.stderr)
            retriever.close()
            shutil.rmtree(target, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    base = rows[0]
    for row in rows:
        row["delta"] = row["nDCG@10"] - base["nDCG@10"]
        row["bytes_ratio"] = row["bytes_on_disk"] / base["bytes_on_disk"]
        row["vectors_ratio"] = row["token_vectors"] / base["token_vectors"]
    subset = f" (first {len(docs)} documents, {len(queries)} queries: a smoke run)" if args.limit else ""
    print(f"\nSciFact test{subset}, PLAID nbits={args.nbits}, {DEFAULT_COLBERT_MODEL}, default search settings; "
          f"corpus encoded once in {encode_s:.0f} s")
    print_table(
        ["pool_factor", "nDCG@10", "delta vs 1", "index bytes", "bytes / factor 1", "stored vectors",
         "vectors / factor 1", "pooling s", "build s"],
        [[str(r["pool_factor"]), f"{r['nDCG@10']:.4f}", f"{r['delta']:+.4f}", f"{r['bytes_on_disk']:,}",
          f"{r['bytes_ratio']:.3f}", f"{r['token_vectors']:,}", f"{r['vectors_ratio']:.3f}", f"{r['pool_s']:.1f}",
          f"{r['build_s']:.1f}"] for r in rows],
    )
    two = next((r for r in rows if r["pool_factor"] == 2), None)
    if two is not None:
        met = two["delta"] >= -TARGET_DELTA and two["bytes_ratio"] <= TARGET_BYTES
        print(f"target (factor 2 within {TARGET_DELTA} nDCG@10 of factor 1, at most {TARGET_BYTES:.0%} of its bytes): "
              f"{'met' if met else 'NOT met'}{' (on a subset: not the target measurement)' if args.limit else ''}")
    print(f"machine: {machine()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "nbits": args.nbits, "documents": len(docs),
                                         "queries": len(queries), "machine": machine()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
