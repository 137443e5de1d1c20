"""Would this teacher help? Score candidate distillation teachers on the default model's selection dev set.

Distillation (``latelex mine --teacher``, ``latelex train --loss kl``) can only lift the student towards a teacher
that ranks better than the student does. This prints, on the set the default model is selected on (nfcorpus dev,
re-ranking BM25's top 50; ``scripts/train_default_model.py``), the nDCG@10 of the student, of each teacher alone
and of each teacher fused with the student (per-query min-max normalised scores, ``(1 - w) * student + w *
teacher``, the best ``w`` of 0.1 ... 0.9: an ensemble as a teacher)::

    .venv/bin/python scripts/dev_teachers.py                                   # BM25 and splade-tiny
    .venv/bin/python scripts/dev_teachers.py --cross-encoder DIR               # and a cross-encoder checkpoint
    .venv/bin/python scripts/dev_teachers.py --student ../shared/models/all-MiniLM-L6-v2 --set query_maxlen=64

About 11 minutes on 2 CPU cores for the default teachers (measured 2026-12-04); a cross-encoder scores 324 x 50 pairs on top of that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from train_default_model import SHARED, nfcorpus_dev, parse_settings  # noqa: E402

from latelex.errors import LatelexError  # noqa: E402
from latelex.evaluate.metrics import evaluate  # noqa: E402
from latelex.search.fusion import score_fusion  # noqa: E402
from latelex.types import Hit, Run  # noqa: E402

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def ndcg(run: Run, qrels) -> float:
    return float(evaluate({q: hits[:10] for q, hits in run.items()}, qrels, ["nDCG@10"])["nDCG@10"])


def ranked(scores: dict[str, dict[str, float]]) -> Run:
    """A run from ``{qid: {pid: score}}``, best first."""
    return {q: sorted((Hit(p, s) for p, s in by_pid.items()), key=lambda h: (-h.score, h.doc_id))
            for q, by_pid in scores.items()}


def student_run(dev, model: str, overrides: dict) -> Run:
    from latelex.encoders.colbert import ColBERT
    from latelex.search.rerank import rerank

    return rerank(ColBERT.from_pretrained(model, **overrides), dev.queries, dev.candidates, dev.documents)


def bm25_run(dev) -> Run:
    from latelex.train.mine import BM25Retriever

    return BM25Retriever.build(dev.documents).search_queries(dict(dev.queries), k=50)


def splade_run(dev, model: Path) -> Run:
    from latelex.encoders.splade import Splade
    from latelex.scoring.sparse import sparse_dot

    encoder = Splade.from_pretrained(model, query_maxlen=64, doc_maxlen=256)
    qids = [q for q in dev.queries if dev.candidates.get(q)]
    pids = sorted({p for q in qids for p in dev.candidates[q]})
    column = {p: i for i, p in enumerate(pids)}
    products = sparse_dot(encoder.encode_queries([dev.queries[q] for q in qids]),
                          encoder.encode_documents([dev.documents[p] for p in pids]))
    return ranked({q: {p: float(products[i, column[p]]) for p in dev.candidates[q]} for i, q in enumerate(qids)})


def cross_encoder_run(dev, model: str) -> Run:
    from latelex.train.mine import CrossEncoderTeacher

    teacher = CrossEncoderTeacher.from_pretrained(model)
    pairs = [(q, p) for q in dev.queries for p in dev.candidates.get(q, [])]
    values = teacher.score([dev.queries[q] for q, _ in pairs], [dev.documents[p] for _, p in pairs])
    scores: dict[str, dict[str, float]] = {}
    for (q, p), s in zip(pairs, values.tolist()):
        scores.setdefault(q, {})[p] = s
    return ranked(scores)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="latelex-colbert-minilm", help="the ColBERT model to distil into")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="student settings to change (JSON values)")
    p.add_argument("--splade", default=str(SHARED / "models" / "splade-tiny"), help="a SPLADE teacher ('' to skip)")
    p.add_argument("--cross-encoder", help="a sequence-classification checkpoint to score as a teacher")
    args = p.parse_args()
    overrides = parse_settings(args.set)
    dev = nfcorpus_dev(50)
    try:
        student = student_run(dev, args.student, overrides)
        teachers = {"BM25 (the candidates' own scores)": bm25_run(dev)}
        if args.splade:
            teachers["SPLADE " + Path(args.splade).name] = splade_run(dev, Path(args.splade))
        if args.cross_encoder:
            teachers["cross-encoder " + Path(args.cross_encoder).name] = cross_encoder_run(dev, args.cross_encoder)
    except LatelexError as exc:
        raise SystemExit(f"error: {exc}") from None
    rows = [("student " + args.student, ndcg(student, dev.qrels), "", "")]
    for name, run in teachers.items():
        by_weight = {w: ndcg(score_fusion([student, run], [1 - w, w]), dev.qrels) for w in WEIGHTS}
        best = max(by_weight, key=by_weight.get)
        rows.append((name, ndcg(run, dev.qrels), f"{by_weight[best]:.4f}", f"{best}"))
    print("nfcorpus dev (324 judged queries, BM25 top 50 re-ranked), nDCG@10")
    print(f"{'system':<44} {'alone':>7} {'fused with student':>19} {'w':>4}")
    for name, alone, with_student, w in rows:
        print(f"{name:<44} {alone:>7.4f} {with_student:>19} {w:>4}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
