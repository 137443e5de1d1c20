"""How close an encoder backend's token vectors are to torch's, on the CPU this runs on (or the one QEMU emulates).

int8 kernels differ between CPUs (with and without VNNI), so the same int8 graph can compute other vectors on
another machine. ``encode`` writes the built-in model's token vectors for the first SciFact test queries and
abstracts, with the backend given, to a file; ``compare`` prints the cosine of each token vector to the reference's
(mean, 1st percentile, minimum), for queries and documents apart.

    .venv/bin/python scripts/int8_fidelity.py encode --backend torch --out runs/fid-torch.npz
    .venv/bin/python scripts/int8_fidelity.py encode --backend onnx --quantize int8 --out runs/fid-onnx-int8.npz
    # the same graph on an emulated AVX2-only CPU (apt-get install qemu-user; about 100x slower: keep it small)
    qemu-x86_64 -cpu Haswell .venv/bin/python scripts/int8_fidelity.py encode --backend onnx --quantize int8 \\
        --queries 30 --documents 10 --out runs/fid-onnx-int8-avx2.npz
    .venv/bin/python scripts/int8_fidelity.py compare runs/fid-torch.npz runs/fid-onnx-int8.npz \\
        runs/fid-onnx-int8-avx2.npz

The graph is read from latelex's cache (export it natively first: exporting under QEMU takes very long); a
``LATELEX_ONNX_INT8_WEIGHTS`` set for ``encode`` picks the weight type as it does everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import scifact_test  # noqa: E402


def encode(args: argparse.Namespace) -> int:
    import torch

    from latelex import ColBERT

    torch.set_num_threads(1)
    encoder = ColBERT.from_pretrained(args.model, backend=args.backend, quantize=args.quantize)
    corpus, queries, _ = scifact_test()
    texts = list(queries.values())[: args.queries]
    documents = [d.text for d in corpus[: args.documents]]
    q = encoder.encode_queries(texts, show_progress=False)
    d = encoder.encode_documents(documents, show_progress=False) if documents else []
    about = {"backend": args.backend, "quantize": args.quantize,
             "torch_capability": torch.backends.cpu.get_cpu_capability()}
    if args.backend == "onnx" and args.quantize:
        from latelex.encoders.ort_int8 import weights

        about["onnx_int8_weights"] = weights().weights
    np.savez(args.out, queries=np.concatenate([x.numpy() for x in q]),
             documents=np.concatenate([x.numpy() for x in d]) if d else np.zeros((0, 1), np.float32),
             about=json.dumps(about))
    print(f"{args.out}: {len(q)} queries, {len(d)} documents; {about}")
    return 0


def compare(args: argparse.Namespace) -> int:
    reference = np.load(args.reference)
    files = {name: np.load(name) for name in args.candidates}
    # every row over the same vectors: those of the first texts, as many as the smallest file holds
    common = {part: min(len(f[part]) for f in [reference, *files.values()]) for part in ("queries", "documents")}
    print(f"reference {args.reference}: {reference['about']}; the first {common['queries']} query and "
          f"{common['documents']} document token vectors of every file")
    for name, found in files.items():
        for part in ("queries", "documents"):
            a, b, n = reference[part], found[part], common[part]
            if not n or a.shape[1] != b.shape[1]:
                continue
            a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            print(f"{name} {part:<9} {n:>6} vectors  mean cosine {cos.mean():.5f}  p1 {np.percentile(cos, 1):.4f}  "
                  f"min {cos.min():.4f}  ({found['about']})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    e = verbs.add_parser("encode", help="write token vectors of SciFact test queries and abstracts")
    e.add_argument("--model", default="latelex-colbert-minilm-v2")
    e.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    e.add_argument("--quantize", choices=["int8"])
    e.add_argument("--queries", type=int, default=300)
    e.add_argument("--documents", type=int, default=100)
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(func=encode)
    c = verbs.add_parser("compare", help="cosines of token vectors to a reference file's")
    c.add_argument("reference", type=Path)
    c.add_argument("candidates", type=Path, nargs="+")
    c.set_defaults(func=compare)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
