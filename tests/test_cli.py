"""End to end through the command line with tiny random models: index -> search -> evaluate, rerank, errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from latelex.cli import main
from latelex.encoders.colbert import ColBERT
from latelex.encoders.splade import Splade
from latelex.data import read_trec_run, read_ranking
from latelex.search.retriever import Retriever
from tiny_models import WORDS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(7)
    docs = {f"d{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for i in range(60)}
    queries = {f"q{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for i in range(8)}
    qrels = {q: {f"d{rng.randrange(60)}": 1} for q in queries}
    (root / "collection.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in docs.items()))
    (root / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    (root / "qrels.tsv").write_text("".join(f"{q}\t0\t{d}\t1\n" for q, dd in qrels.items() for d in dd))
    return root, docs, queries, qrels


@pytest.fixture(scope="module")
def colbert_model(tiny_bert, tmp_path_factory):
    return ColBERT.from_backbone(tiny_bert, dim=16, seed=1).save(tmp_path_factory.mktemp("m") / "colbert")


def _exact_scores(model, docs, text):
    """{doc id: exact MaxSim score} computed with a plain loop in float32."""
    q = model.encode_queries([text])[0]
    d = model.encode_documents(list(docs.values()))
    return {doc_id: float((q @ x.T).max(1).values.sum()) for doc_id, x in zip(docs, d)}


def _assert_exact(hits, exact, k, rel=1e-3):
    """Hits carry their exact scores and are the k best, up to a relative ``rel`` (the index stores fp16)."""
    best = sorted(exact.values(), reverse=True)[:k]
    assert len(hits) == min(k, len(exact))
    for hit, want in zip(hits, best):
        assert hit.score == pytest.approx(exact[hit.doc_id], rel=rel)
        assert hit.score == pytest.approx(want, rel=rel)


def test_ivfpq_with_exhaustive_settings_is_exact(corpus, colbert_model, tmp_path):
    root, docs, queries, _ = corpus
    idx = tmp_path / "ivfpq"
    assert main(["-q", "index", str(idx), "--model", str(colbert_model), "--collection", str(root / "collection.tsv"),
                 "--kind", "ivfpq", "--partitions", "4", "--sample", "1.0"]) == 0
    out = tmp_path / "run.trec"
    assert main(["-q", "search", str(idx), "--queries", str(root / "queries.tsv"), "-k", "10", "--output", str(out),
                 "--nprobe", "4", "--faiss-depth", "100000"]) == 0
    run = read_trec_run(out)
    model = ColBERT.from_pretrained(colbert_model)
    for qid, text in queries.items():
        _assert_exact(run[qid], _exact_scores(model, docs, text), k=10)


def test_plaid_through_the_cli_agrees_with_exact(corpus, colbert_model, tmp_path, capsys):
    root, docs, queries, _ = corpus
    idx = tmp_path / "plaid"
    assert main(["-q", "index", str(idx), "--model", str(colbert_model), "--collection", str(root / "collection.tsv"),
                 "--kind", "plaid", "--nbits", "4", "--centroids", "16"]) == 0
    capsys.readouterr()
    assert main(["info", str(idx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "plaid" and info["documents"] == 60 and info["bytes_per_token_vector"] > 0
    assert info["centroid_scores"] == "float32" and "16 centroids" in info["centroid_scores_reason"]  # too few for int8
    out = tmp_path / "run.trec"
    assert main(["-q", "search", str(idx), "--queries", str(root / "queries.tsv"), "-k", "10", "--output", str(out),
                 "--ncells", "16", "--centroid-score-threshold", "-10", "--ndocs", "60"]) == 0
    run = read_trec_run(out)
    # Quality of PLAID against exact MaxSim is held in tests/test_plaid_*.py (on data where it is well posed: this
    # tiny random head scores every document within the compression error); here: the CLI runs the engine with
    # the knobs given, and its scores approximate the exact ones of the same documents.
    engine = Retriever.open(idx).index  # the PLAID engine of the index's one segment
    model = ColBERT.from_pretrained(colbert_model)
    for qid, text in queries.items():
        direct = engine.search(model.encode_queries([text]), k=10, ncells=16, centroid_score_threshold=-10, ndocs=60)[0]
        assert [h.doc_id for h in run[qid]] == [h.doc_id for h in direct]
        exact = _exact_scores(model, docs, text)
        for hit in run[qid]:
            assert hit.score == pytest.approx(exact[hit.doc_id], rel=0.05)


def test_colbert_index_search_evaluate(corpus, colbert_model, tmp_path, capsys):
    root, docs, queries, qrels = corpus
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(colbert_model), "--collection", str(root / "collection.tsv")]) == 0
    assert main(["info", str(idx), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["kind"] == "flat" and info["documents"] == 60 and info["encoder"]["family"] == "colbert"
    out = tmp_path / "run.trec"
    metrics = tmp_path / "m.json"
    assert main(["-q", "search", str(idx), "--queries", str(root / "queries.tsv"), "-k", "60", "--output", str(out),
                 "--qrels", str(root / "qrels.tsv"), "--metrics", "nDCG@10", "MRR@10", "--metrics-json", str(metrics)]) == 0
    run = read_trec_run(out)
    model = ColBERT.from_pretrained(colbert_model)
    for qid, text in queries.items():
        _assert_exact(run[qid], _exact_scores(model, docs, text), k=60)
    values = json.loads(metrics.read_text())
    assert set(values) == {"nDCG@10", "MRR@10"} and 0 <= values["nDCG@10"] <= 1
    assert main(["evaluate", "--run", str(out), "--qrels", str(root / "qrels.tsv"), "--metrics", "nDCG@10", "MRR@10"]) == 0
    printed = capsys.readouterr().out
    assert f"{values['nDCG@10']:.4f}" in printed
    reopened = Retriever.open(idx)
    assert reopened.document("d3") == docs["d3"]
    assert main(["search", str(idx), "--query", queries["q0"], "-k", "3"]) == 0
    assert "d" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["sparse", "inverted"])
def test_splade_index_matches_dense_dot_product(kind, corpus, tiny_mlm, tmp_path):
    root, docs, queries, _ = corpus
    idx = tmp_path / "sp"
    assert main(["-q", "index", str(idx), "--model", str(tiny_mlm), "--family", "splade", "--kind", kind,
                 "--collection", str(root / "collection.tsv")]) == 0
    out = tmp_path / "run.tsv"
    assert main(["-q", "search", str(idx), "--queries", str(root / "queries.tsv"), "-k", "5", "--output", str(out),
                 "--format", "colbert"]) == 0
    run = read_ranking(out)
    model = Splade.from_pretrained(tiny_mlm)
    D = model.encode_documents(list(docs.values())).to_scipy().toarray()
    Q = model.encode_queries(list(queries.values())).to_scipy().toarray()
    dense = Q.astype(np.float64) @ D.T.astype(np.float64)
    for row, qid in enumerate(queries):
        want = [list(docs)[i] for i in np.argsort(-dense[row], kind="stable")[:5]]
        assert [h.doc_id for h in run[qid]] == want


@pytest.mark.parametrize("form", ["trec", "topk", "top1000"])
def test_rerank_formats(form, corpus, colbert_model, tmp_path):
    root, docs, queries, _ = corpus
    rng = random.Random(3)
    cands = {q: rng.sample(list(docs), 12) for q in queries}
    path = tmp_path / f"cands.{form}"
    if form == "trec":
        path.write_text("".join(f"{q} Q0 {d} {r} {100 - r} bm25\n" for q, ds in cands.items() for r, d in enumerate(ds, 1)))
        extra = ["--queries", str(root / "queries.tsv"), "--collection", str(root / "collection.tsv")]
    elif form == "topk":
        path.write_text("".join(f"{q}\t{d}\t{r}\n" for q, ds in cands.items() for r, d in enumerate(ds, 1)))
        extra = ["--queries", str(root / "queries.tsv"), "--collection", str(root / "collection.tsv")]
    else:
        path.write_text("".join(f"{q}\t{d}\t{queries[q]}\t{docs[d]}\n" for q, ds in cands.items() for d in ds))
        extra = []
    out = tmp_path / "reranked.trec"
    assert main(["-q", "rerank", "--model", str(colbert_model), "--candidates", str(path), "--output", str(out), *extra]) == 0
    run = read_trec_run(out)
    model = ColBERT.from_pretrained(colbert_model)
    for q, ds in cands.items():
        _assert_exact(run[q], _exact_scores(model, {d: docs[d] for d in ds}, queries[q]), k=12, rel=1e-5)


def test_user_mistakes_are_one_line_and_leave_nothing(corpus, colbert_model, tmp_path, capsys):
    root, *_ = corpus
    idx = tmp_path / "idx"
    assert main(["index", str(idx), "--model", str(tmp_path / "missing"), "--collection", str(root / "collection.tsv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and not idx.exists()

    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert main(["index", str(idx), "--model", str(colbert_model), "--collection", str(empty)]) == 1
    assert "empty" in capsys.readouterr().err and not idx.exists()

    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"1\tfine text\n2\tbad \xff\xfe bytes\n")
    assert main(["-q", "index", str(idx), "--model", str(colbert_model), "--collection", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.tsv:2" in err and "UTF-8" in err and not idx.exists()
    assert list(tmp_path.glob(".idx*")) == []

    assert main(["-q", "index", str(idx), "--model", str(colbert_model), "--collection", str(root / "collection.tsv")]) == 0
    before = sorted(p.name for p in idx.rglob("*"))
    assert main(["-q", "index", str(idx), "--model", str(colbert_model), "--collection", str(root / "collection.tsv")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in idx.rglob("*")) == before

    assert main(["search", str(tmp_path / "nowhere"), "--query", "x"]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["search", str(root), "--query", "x"]) == 1
    assert "manifest" in capsys.readouterr().err


def test_interrupted_build_publishes_nothing(corpus, colbert_model, tmp_path, monkeypatch):
    root, docs, *_ = corpus
    model = ColBERT.from_pretrained(colbert_model)
    calls = {"n": 0}
    real = model.encode_documents

    def failing(texts, on_batch=None, **kw):
        def advance(n):  # interrupted after the first batch of 10, mid-encoding
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            if on_batch is not None:
                on_batch(n)
        return real(texts, on_batch=advance, **kw)

    monkeypatch.setattr(model, "encode_documents", failing)
    with pytest.raises(KeyboardInterrupt):
        Retriever.build(tmp_path / "idx", model, docs.items(), batch_size=10, show_progress=False)
    assert calls["n"] == 2
    assert not (tmp_path / "idx").exists() and list(tmp_path.iterdir()) == []


def test_help_is_there(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for verb in ("index", "search", "rerank", "evaluate", "info"):
        assert verb in text
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "--qrels" in capsys.readouterr().out


def test_mine_then_train_through_the_cli(corpus, tiny_bert, tmp_path, capsys):
    root, docs, queries, qrels = corpus
    mined = tmp_path / "mined.jsonl"
    assert main(["mine", "--queries", str(root / "queries.tsv"), "--qrels", str(root / "qrels.tsv"),
                 "--collection", str(root / "collection.tsv"), "--output", str(mined), "--nway", "3",
                 "--ranks", "1", "20"]) == 0
    lines = [json.loads(line) for line in mined.read_text().splitlines()]
    assert lines and all(len(row) == 4 and row[1] in qrels[row[0]] for row in lines)
    assert all(not set(row[2:]) & set(qrels[row[0]]) for row in lines)
    out = tmp_path / "train"
    assert main(["-q", "train", str(out), "--model", str(tiny_bert), "--triples", str(mined), "--queries",
                 str(root / "queries.tsv"), "--collection", str(root / "collection.tsv"), "--nway", "3",
                 "--steps", "3", "--batch-size", "4", "--lr", "1e-3", "--dim", "8", "--no-markers",
                 "--checkpoint-every", "2", "--ce-temperature", "0.5"]) == 0
    from latelex.train.checkpoint import list_checkpoints, load_checkpoint

    assert load_checkpoint(list_checkpoints(out)[-1]).state["config"]["ce_temperature"] == 0.5
    model = ColBERT.from_pretrained(out / "final-model")
    assert model.dim == 8 and model.encode_queries(["a cell"])[0].shape[1] == 8
    lora = tmp_path / "lora"
    assert main(["-q", "train", str(lora), "--model", str(tiny_bert), "--triples", str(mined), "--queries",
                 str(root / "queries.tsv"), "--collection", str(root / "collection.tsv"), "--nway", "3",
                 "--steps", "2", "--batch-size", "4", "--lr", "1e-3", "--dim", "8", "--lora-rank", "2",
                 "--no-dropout"]) == 0
    adapted = ColBERT.from_pretrained(lora / "final-model")  # saved whole, adapters folded into the weights
    assert adapted.encode_queries(["a cell"])[0].shape[1] == 8
    missing = tmp_path / "bad.jsonl"
    missing.write_text('["q0", "d1", "no-such-doc"]\n')
    assert main(["-q", "train", str(tmp_path / "t2"), "--model", str(tiny_bert), "--triples", str(missing), "--queries",
                 str(root / "queries.tsv"), "--collection", str(root / "collection.tsv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "no-such-doc" in err[-1] and not (tmp_path / "t2" / "final-model").exists()


def test_bm25_index_search_and_fusion_through_the_cli(corpus, colbert_model, tmp_path, capsys):
    """BM25 needs no model; fused runs hold the union of the members' documents, ordered by RRF."""
    from latelex.search.fusion import reciprocal_rank_fusion

    root, docs, queries, _ = corpus
    bm25_dir, colbert_dir = tmp_path / "bm25", tmp_path / "colbert"
    assert main(["-q", "index", str(bm25_dir), "--kind", "bm25", "--collection", str(root / "collection.tsv")]) == 0
    capsys.readouterr()
    assert main(["-q", "info", str(bm25_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == len(docs)
    bm25_run, colbert_run, fused = tmp_path / "bm25.trec", tmp_path / "colbert.trec", tmp_path / "fused.trec"
    assert main(["-q", "search", str(bm25_dir), "--queries", str(root / "queries.tsv"), "-k", "10",
                 "--output", str(bm25_run)]) == 0
    expected = Retriever.open(bm25_dir).search_queries(queries, k=10)
    assert Retriever.open(bm25_dir).encoder is None
    got = read_trec_run(bm25_run)
    assert {q: [h.doc_id for h in hits] for q, hits in got.items()} == \
        {q: [h.doc_id for h in hits] for q, hits in expected.items() if hits}
    assert main(["-q", "index", str(colbert_dir), "--model", str(colbert_model), "--collection",
                 str(root / "collection.tsv")]) == 0
    assert main(["-q", "search", str(colbert_dir), "--queries", str(root / "queries.tsv"), "-k", "10",
                 "--output", str(colbert_run)]) == 0
    assert main(["-q", "fuse", str(bm25_run), str(colbert_run), "--output", str(fused),
                 "--qrels", str(root / "qrels.tsv")]) == 0
    assert "nDCG@10" in capsys.readouterr().out
    want = reciprocal_rank_fusion([read_trec_run(bm25_run), read_trec_run(colbert_run)])
    assert {q: [h.doc_id for h in hits] for q, hits in read_trec_run(fused).items()} == \
        {q: [h.doc_id for h in hits] for q, hits in want.items()}
    with pytest.raises(SystemExit):
        main(["-q", "search", str(bm25_dir), "--queries", str(root / "queries.tsv"), "--ndocs", "5",
              "--output", str(tmp_path / "x.trec")])
    err = capsys.readouterr().err.strip().splitlines()
    assert "--ndocs applies to plaid indexes" in err[-1] and "is a bm25 index" in err[-1]
    assert not (tmp_path / "x.trec").exists()
    with pytest.raises(SystemExit):
        main(["-q", "fuse", str(bm25_run), "--output", str(tmp_path / "y.trec")])
    assert "at least two run files" in capsys.readouterr().err


def test_every_verb_module_registers_its_verb_and_help_imports_no_torch():
    """latelex/cli/ holds one module per verb (register + run), listed once in VERBS; --help stays torch-free."""
    import subprocess
    import sys

    from latelex.cli import VERBS, build_parser

    names = [verb.__name__.rsplit(".", 1)[1] for verb in VERBS]
    assert names == ["index", "search", "add", "delete", "compact", "rerank", "evaluate", "info", "fuse", "train",
                     "mine", "serve"]
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(subparsers.choices) == names
    for name, verb in zip(names, VERBS):
        assert subparsers.choices[name].get_default("func") is verb.run
    probe = ("import runpy, sys\n"
             "sys.argv = ['latelex', '--help']\n"
             "try:\n    runpy.run_module('latelex.cli', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
             "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "COMMAND" in done.stdout and done.stdout.strip().endswith("False")
