"""``latelex info DIR [--json] [--verify]``: describe an index."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_verb, is_legacy_bm25_index


def register(subparsers) -> None:
    p = add_verb(subparsers, "info", "describe an index",
                 "Print an index's kind, counts, sizes, encoder and configuration.")
    p.add_argument("index", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true", help="also check every array's SHA-256 against the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..search.sharded import inspect_any

    if is_legacy_bm25_index(args.index):
        from ..index.bm25 import BM25Index

        info = {"path": str(Path(args.index).expanduser().resolve()), **BM25Index.open(args.index, verify=args.verify).info()}
    else:
        info = inspect_any(args.index, verify=args.verify)  # a plain or a sharded index
    encoder = info.get("encoder")
    if isinstance(encoder, dict):  # which backend ran the model that built the index (torch when none is recorded)
        backend = encoder.get("backend") or "torch"
        info["encoder_backend"] = backend + (f" ({encoder['quantize']})" if encoder.get("quantize") else "")
        if backend == "onnx" and encoder.get("quantize") == "int8":  # which int8 kernels this CPU computes exactly
            from ..encoders.ort_int8 import weights

            choice = weights()
            built = encoder.get("int8_weights")  # recorded since the choice exists
            info["onnx_int8_weights"] = (f"{choice.weights} on this CPU ({choice.reason})"
                                         + (f"; the index was built with {built} weights" if built else ""))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key == "shard_info":  # a sharded index: one line per shard (all of it with --json)
                for shard in value:
                    print(f"{'shard ' + Path(shard['path']).name:<28} {shard.get('documents')} documents, "
                          f"{shard.get('segments')} segments, {shard.get('bytes_on_disk_with_texts')} bytes")
                continue
            if isinstance(value, dict):
                value = json.dumps(value)
            print(f"{key:<28} {value}")
        if info.get("fresh_n_centroids", 0) > info.get("n_centroids", float("inf")):
            print(f"advice: the collection has outgrown its PLAID codec ({info['n_centroids']} centroids; a fresh build "
                  f"would train {info['fresh_n_centroids']}); `latelex compact {args.index}` restores a fresh build's "
                  "quality")
    return 0
