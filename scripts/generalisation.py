"""Score ColBERT models on the selection sets of the default-model work: whole collections, never re-ranking.

Sets (from ../shared/datasets, read in place):

- ``nfcorpus-dev``: the 324 judged nfcorpus dev queries ranked over the whole collection (3,633 documents);
- ``dl19``: the 43 judged TREC DL 2019 queries over the 5,000-passage MS MARCO subset;
- ``scifact-test`` (with ``--scifact``): the 300 SciFact test queries over its 5,183 abstracts, through a PLAID
  index at the default settings (the figure the model card reports), never used to select anything.

Every set is searched through ``Retriever.build`` + ``search_queries`` (flat: exact MaxSim) and scored by
``latelex.evaluate``: nDCG@10 and Recall@100. One JSON line per model and set, then a markdown table::

    .venv/bin/python scripts/generalisation.py --models minilm-384 latelex-colbert-minilm latelex-colbert-minilm-pca

``minilm-384`` names the untrained all-MiniLM-L6-v2 token vectors (384 dims, the plain-encoder settings of the
default model). ``--fit-pca DIR`` first writes the PCA model that ships as ``latelex-colbert-minilm-pca``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from latelex.data import read_documents, read_qrels_any, read_queries_any  # noqa: E402

#: the plain-encoder settings every model here is compared under (as the default model ships)
SETTINGS = dict(query_marker=None, doc_marker=None, query_augmentation=False, skiplist=(), query_maxlen=64,
                doc_maxlen=256)

SETS = {
    "nfcorpus-dev": ("nfcorpus", "dev", "flat"),
    "dl19": ("msmarco-dl19-subset", "test", "flat"),
    "scifact-test": ("scifact", "test", "plaid"),
}

PCA_CORPORA = ("scifact", "nfcorpus", "msmarco-dl19-subset")


def load_set(name: str) -> tuple[dict[str, str], dict, dict[str, str]]:
    """``(queries, qrels, documents)`` of a selection set: only judged queries."""
    folder, split, _ = SETS[name]
    path = SHARED / "datasets" / folder
    qrels = read_qrels_any(path, split)
    queries = {q: t for q, t in read_queries_any(path, split) if q in qrels}
    return queries, qrels, dict(read_documents(path))


def load_encoder(name: str):
    """A ColBERT encoder by name: ``minilm-384`` is the untrained backbone the default model is built on."""
    from latelex.encoders.colbert import ColBERT

    if name == "minilm-384":
        from latelex.encoders.colbert_checkpoints import resolve_base
        from latelex.models import BASE_BACKBONE, DEFAULT_COLBERT_DIR

        return ColBERT.from_pretrained(resolve_base(dict(BASE_BACKBONE), DEFAULT_COLBERT_DIR), **SETTINGS)
    return ColBERT.from_pretrained(name)


def score(encoder, name: str, workdir: Path) -> dict[str, float]:
    """nDCG@10, RR@10 and R@100 of ``encoder`` on set ``name``, its index built in ``workdir``."""
    from latelex.evaluate import evaluate
    from latelex.search.retriever import Retriever

    queries, qrels, docs = load_set(name)
    kind = SETS[name][2]
    index = Retriever.build(workdir / name, encoder, docs.items(), kind=kind, store_text=False, overwrite=True)
    run = index.search_queries(queries, k=100)
    values = evaluate(run, qrels, ["nDCG@10", "RR@10", "R@100"])
    return {k: round(float(v), 4) for k, v in values.items()}


def fit_pca(output: Path, per_corpus: int, seed: int) -> Path:
    """The shipped PCA model: ``per_corpus`` documents drawn from each corpus of ../shared/datasets (documents
    only: no query or judgment is read), 128 dimensions, a reference to the pinned backbone."""
    from latelex.encoders.colbert_checkpoints import resolve_base
    from latelex.encoders.pca import pca_model
    from latelex.models import BASE_BACKBONE, DEFAULT_COLBERT_DIR

    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for corpus in PCA_CORPORA:
        docs = dict(read_documents(SHARED / "datasets" / corpus))
        ids = sorted(docs)
        texts += [docs[ids[int(i)]] for i in rng.choice(len(ids), size=min(per_corpus, len(ids)), replace=False)]
    backbone = resolve_base(dict(BASE_BACKBONE), DEFAULT_COLBERT_DIR)
    return pca_model(backbone, texts, output, dim=128, base=dict(BASE_BACKBONE), overwrite=True, seed=seed, **SETTINGS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["minilm-384", "latelex-colbert-minilm"],
                   help="model names or folders; minilm-384 is the untrained backbone")
    p.add_argument("--sets", nargs="+", default=["nfcorpus-dev", "dl19"], choices=sorted(SETS))
    p.add_argument("--scifact", action="store_true", help="also SciFact test through PLAID (reporting only)")
    p.add_argument("--fit-pca", metavar="DIR", help="first fit and write the PCA model (128 dims) into DIR")
    p.add_argument("--pca-docs", type=int, default=300, help="documents per corpus for the PCA fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="append the JSON lines to this file too")
    args = p.parse_args()
    if not (SHARED / "datasets").is_dir():
        raise SystemExit(f"error: {SHARED / 'datasets'} is missing; these sets are read from ../shared")
    sets = list(args.sets) + (["scifact-test"] if args.scifact and "scifact-test" not in args.sets else [])
    if args.fit_pca:
        started = time.time()
        path = fit_pca(Path(args.fit_pca), args.pca_docs, args.seed)
        print(json.dumps({"fitted": str(path), "seconds": round(time.time() - started, 1)}), flush=True)
    rows = []
    for model in args.models:
        encoder = load_encoder(model)
        with tempfile.TemporaryDirectory() as tmp:
            for name in sets:
                started = time.time()
                values = score(encoder, name, Path(tmp))
                row = {"model": model, "set": name, **values, "seconds": round(time.time() - started, 1)}
                rows.append(row)
                line = json.dumps(row)
                print(line, flush=True)
                if args.output:
                    with open(args.output, "a", encoding="utf-8") as f:
                        f.write(line + "\n")
    print("\n| model | " + " | ".join(f"{s} nDCG@10 | {s} R@100" for s in sets) + " |")
    print("|---|" + "---|---|" * len(sets))
    for model in args.models:
        cells = []
        for s in sets:
            row = next(r for r in rows if r["model"] == model and r["set"] == s)
            cells += [f"{row['nDCG@10']:.4f}", f"{row['R@100']:.4f}"]
        print(f"| {model} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
