"""Self-distillation: a ColBERT encoder or index as teacher, online in-batch distillation, pseudo-queries, PCA heads.

All on tiny random BERTs: the teacher is a plain encoder (its normalised hidden states), the student a ColBERT head
on another random backbone, so the two start far apart and training has something to close.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latelex.data import IdExample
from latelex.encoders.colbert import ColBERT
from latelex.errors import ConfigError, InputError
from latelex.train import ColBERTTrainer, TrainConfig, TrainingData, mine_hard_negatives
from latelex.train.data import read_examples
from latelex.train.losses import kl_distillation
from latelex.train.pseudo import pseudo_queries, split_sentences
from latelex.train.teachers import IndexTeacher, MaxSimTeacher, load_teacher
from tiny_models import build_bert

TOPICS = [
    "apple banana fruit", "cancer risk patients", "vaccine virus trial", "brain heart blood",
    "sparse index search", "gene protein cell", "drug dose treatment", "red green blue",
]
DOCS = {f"d{i}": f"{t} {t} study results" for i, t in enumerate(TOPICS)}
QUERIES = {f"q{i}": f"what about {t}" for i, t in enumerate(TOPICS)}
QRELS = {f"q{i}": {f"d{i}": 1} for i in range(len(TOPICS))}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models train fastest on one thread


@pytest.fixture(scope="module")
def teacher_bert(tmp_path_factory):
    """A second tiny random BERT (another seed than ``tiny_bert``): the teacher's backbone."""
    return build_bert(tmp_path_factory.mktemp("teacher-bert"), seed=7)


def teacher(teacher_bert) -> MaxSimTeacher:
    return MaxSimTeacher.from_pretrained(teacher_bert, device="cpu", query_maxlen=16, doc_maxlen=24)


def student(tiny_bert) -> ColBERT:
    return ColBERT.from_backbone(tiny_bert, dim=16, seed=0, device="cpu", query_maxlen=16, doc_maxlen=24)


def data() -> TrainingData:
    examples = [IdExample(f"q{i}", (f"d{i}", f"d{(i + 1) % 8}"), None) for i in range(8)]
    return TrainingData.from_examples(examples, QUERIES, DOCS, nway=2)


def config(tmp_path, **changes) -> TrainConfig:
    settings = dict(output_dir=str(tmp_path / "run"), lr=5e-3, batch_size=8, nway=2, total_steps=30, log_every=1,
                    decay="constant", dropout=False, loss="kl", alpha=1.0, distill_in_batch=True)
    settings.update(changes)
    return TrainConfig(**settings)


def batch_kl(trainer, t: MaxSimTeacher) -> float:
    """KL(teacher || student) over every in-batch pair of the whole training set, with the trainer's weights."""
    batch = trainer.data.batch(list(range(len(trainer.data))))
    with torch.no_grad():
        scores, _, _ = trainer._scores(batch)
    return float(kl_distillation(scores, t.score_matrix(batch.queries, batch.passages)))


# ---------------------------------------------------------------------------------------------------- teachers


def test_maxsim_teacher_scores_pairs_and_matrices_alike(teacher_bert):
    t = teacher(teacher_bert)
    queries = [QUERIES["q0"], QUERIES["q0"], QUERIES["q3"]]
    passages = [DOCS["d0"], DOCS["d5"], DOCS["d3"]]
    pairs = t.score(queries, passages)
    matrix = t.score_matrix([QUERIES["q0"], QUERIES["q3"]], [DOCS["d0"], DOCS["d5"], DOCS["d3"]]).numpy()
    assert pairs.shape == (3,) and matrix.shape == (2, 3)
    np.testing.assert_allclose(pairs, [matrix[0, 0], matrix[0, 1], matrix[1, 2]], atol=1e-4)
    # the reference: MaxSim written out from the encoder's own vectors
    q = t.encoder.encode_queries([QUERIES["q3"]])[0]
    d = t.encoder.encode_documents([DOCS["d3"]])[0]
    assert pairs[2] == pytest.approx(float((q @ d.T).max(dim=1).values.sum()), abs=1e-4)


def test_index_teacher_equals_the_model_on_a_flat_index(teacher_bert, tmp_path):
    from latelex.search.retriever import Retriever

    t = teacher(teacher_bert)
    Retriever.build(tmp_path / "teacher-index", t.encoder, DOCS.items(), kind="flat")
    by_index = load_teacher(tmp_path / "teacher-index")
    assert isinstance(by_index, IndexTeacher)
    queries = [QUERIES["q1"], QUERIES["q1"], QUERIES["q6"]]
    ids = ["d1", "d2", "d6"]
    # the flat index keeps float16 vectors: scores agree to float16 precision (relative 1e-4)
    np.testing.assert_allclose(by_index.score_ids(queries, ids), t.score(queries, [DOCS[i] for i in ids]), rtol=1e-4)
    with pytest.raises(InputError, match="not in the index"):
        by_index.score_ids(["x"], ["nope"])


def test_load_teacher_tells_a_colbert_model_from_a_cross_encoder(teacher_bert, tiny_cross_encoder):
    from latelex.train.mine import CrossEncoderTeacher

    assert isinstance(load_teacher(teacher_bert), MaxSimTeacher)
    assert isinstance(load_teacher(tiny_cross_encoder), CrossEncoderTeacher)


@pytest.mark.parametrize("by_index", [False, True])
def test_mining_writes_maxsim_teacher_scores(teacher_bert, tiny_bert, tmp_path, by_index):
    from latelex.search.retriever import Retriever

    t = teacher(teacher_bert)
    retriever = Retriever.build(tmp_path / "student-index", student(tiny_bert), DOCS.items(), kind="flat")
    if by_index:
        Retriever.build(tmp_path / "teacher-index", t.encoder, DOCS.items(), kind="flat")
        scorer, documents = load_teacher(tmp_path / "teacher-index"), None
    else:
        scorer, documents = t, DOCS
    out = tmp_path / "mined.jsonl"
    result = mine_hard_negatives(retriever, QUERIES, QRELS, out, nway=3, ranks=(1, 8), teacher=scorer,
                                 documents=documents)
    assert result.scored and result.examples == 8
    for _, e in read_examples(out):
        expected = t.score([QUERIES[e.qid]] * 3, [DOCS[p] for p in e.pids])
        np.testing.assert_allclose(e.scores, expected, rtol=1e-4)  # float16 vectors in the teacher index


def test_cli_mine_with_a_colbert_teacher(teacher_bert, tmp_path):
    from latelex.cli import main

    collection = tmp_path / "collection.tsv"
    collection.write_text("".join(f"{d}\t{t}\n" for d, t in DOCS.items()), encoding="utf-8")
    queries = tmp_path / "queries.tsv"
    # every query shares "study" with every document, so that BM25 ranks all of them
    queries.write_text("".join(f"{q}\t{t} study\n" for q, t in QUERIES.items()), encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("".join(f"{q}\t0\t{d}\t1\n" for q, rel in QRELS.items() for d in rel), encoding="utf-8")
    out = tmp_path / "mined.jsonl"
    assert main(["mine", "--queries", str(queries), "--qrels", str(qrels), "--collection", str(collection),
                 "--output", str(out), "--nway", "3", "--ranks", "1", "8", "--teacher", str(teacher_bert)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(isinstance(r[1], list) and len(r[1]) == 2 for r in rows)


def test_cli_train_with_an_online_teacher(tiny_bert, teacher_bert, tmp_path, capsys):
    from latelex.cli import main

    collection = tmp_path / "collection.tsv"
    collection.write_text("".join(f"{d}\t{t}\n" for d, t in DOCS.items()), encoding="utf-8")
    queries = tmp_path / "queries.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()), encoding="utf-8")
    triples = tmp_path / "triples.jsonl"
    triples.write_text("".join(json.dumps([f"q{i}", f"d{i}", f"d{(i + 1) % 8}"]) + "\n" for i in range(8)))
    common = ["-q", "train", str(tmp_path / "out"), "--model", str(tiny_bert), "--triples", str(triples), "--queries",
              str(queries), "--collection", str(collection), "--steps", "2", "--batch-size", "8", "--dim", "16"]
    assert main(common + ["--teacher", str(teacher_bert), "--loss", "kl", "--distill-in-batch"]) == 0
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and np.isfinite(log[-1]["kl"])
    with pytest.raises(SystemExit) as exit:
        main(common + ["--distill-in-batch", "--loss", "kl"])
    assert exit.value.code == 2 and "--distill-in-batch needs --teacher" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("loss", ["kl", "score_mse"])
def test_a_student_moves_toward_its_teacher(tiny_bert, teacher_bert, tmp_path, loss):
    t = teacher(teacher_bert)
    trainer = ColBERTTrainer.create(student(tiny_bert), data(), config(tmp_path, loss=loss), teacher=t)
    kl_before = batch_kl(trainer, t)
    records = [trainer.train_step() for _ in range(30)]
    assert all(np.isfinite(r[loss]) for r in records)
    assert np.mean([r[loss] for r in records[-5:]]) < 0.5 * np.mean([r[loss] for r in records[:5]]), \
        [round(r[loss], 4) for r in records]
    assert batch_kl(trainer, t) < 0.5 * kl_before


def test_in_batch_distillation_compares_every_pair_of_the_batch(tiny_bert, teacher_bert, tmp_path):
    """With distill_in_batch the KL covers the (B, B * W) matrix; without it, each query's own W passages."""
    t = teacher(teacher_bert)
    batch = data().batch(list(range(8)))
    target = t.score_matrix(batch.queries, batch.passages)
    for in_batch in (True, False):
        trainer = ColBERTTrainer.create(student(tiny_bert), data(), config(tmp_path, distill_in_batch=in_batch),
                                        teacher=t)
        with torch.no_grad():
            _, parts = trainer._loss(batch)
            scores, _, _ = trainer._scores(batch)
        rows = torch.arange(8)
        if in_batch:
            expected = kl_distillation(scores, target)
        else:
            expected = kl_distillation(scores.view(8, 8, 2)[rows, rows], target.view(8, 8, 2)[rows, rows])
        assert parts["kl"] == pytest.approx(float(expected), rel=1e-4)


def test_teacher_configuration_errors(tiny_bert, teacher_bert, tmp_path):
    t = teacher(teacher_bert)
    with pytest.raises(ConfigError, match="distill_in_batch needs a teacher"):
        ColBERTTrainer.create(student(tiny_bert), data(), config(tmp_path))
    with pytest.raises(ConfigError, match="only used by a distillation loss"):
        ColBERTTrainer.create(student(tiny_bert), data(), config(tmp_path, loss="ce", distill_in_batch=False),
                              teacher=t)
    with pytest.raises(ConfigError, match="distill_in_batch needs in_batch_negatives"):
        config(tmp_path, in_batch_negatives=False)
    with pytest.raises(ConfigError, match="distill_in_batch needs in_batch_negatives"):
        config(tmp_path, loss="margin_mse")


# ---------------------------------------------------------------------------------------------------- pseudo-queries


def test_pseudo_queries_cut_a_title_or_a_sentence_out_of_the_document():
    docs = [
        ("a", "Vitamin D and bone density in older adults", "We measured bone density. Vitamin D helped a lot here."),
        ("b", "", "Goldfish live for many years in ponds. They grow large when fed well. Small tanks stunt them badly."),
        ("c", "", "Too short."),
    ]
    cut = pseudo_queries(docs, 10, seed=3)
    by_doc = {q.doc_id: q for q in cut}
    assert set(by_doc) == {"a", "b"}  # c allows no cut
    assert by_doc["a"].kind == "title" and by_doc["a"].text == docs[0][1]
    assert by_doc["a"].passage == docs[0][2] and by_doc["a"].qid == "a#title"
    b = by_doc["b"]
    assert b.kind == "sentence" and b.text in split_sentences(docs[1][2]) and b.text not in b.passage
    assert sorted(split_sentences(b.passage) + [b.text]) == sorted(split_sentences(docs[1][2]))
    assert pseudo_queries(docs, 10, seed=3) == cut  # seeded
    first = pseudo_queries(docs, 10, kinds=("first",), seed=0)
    assert {q.doc_id: q.text for q in first} == {"a": "We measured bone density.",
                                                  "b": "Goldfish live for many years in ponds."}
    with pytest.raises(InputError, match="kinds must be among"):
        pseudo_queries(docs, 1, kinds=("summary",))
    with pytest.raises(InputError, match="count must be a positive integer"):
        pseudo_queries(docs, 0)


# ---------------------------------------------------------------------------------------------------- PCA heads


def test_pca_projection_is_orthonormal_and_keeps_scores_at_full_width(tiny_bert, tmp_path):
    from latelex.encoders.pca import fit_pca_projection, pca_model

    plain = ColBERT.from_pretrained(tiny_bert, device="cpu", query_maxlen=16, doc_maxlen=24)
    hidden = plain.backbone.config.hidden_size
    weight = fit_pca_projection(plain, list(DOCS.values()), 8)
    assert weight.shape == (8, hidden)
    torch.testing.assert_close(weight @ weight.T, torch.eye(8), atol=1e-5, rtol=0)
    # the first direction carries the most energy of the token vectors it was fitted on
    vectors = torch.cat(plain.encode_documents(list(DOCS.values())))
    energy = ((vectors @ weight.T) ** 2).mean(dim=0)
    assert bool(torch.all(energy[:-1] >= energy[1:] - 1e-6))
    # at full width the projection is a rotation: MaxSim scores are those of the plain encoder
    folder = pca_model(tiny_bert, list(DOCS.values()), tmp_path / "pca-full", dim=hidden, query_maxlen=16,
                       doc_maxlen=24)
    rotated = ColBERT.from_pretrained(folder, device="cpu")
    a = MaxSimTeacher(plain).score(list(QUERIES.values()), list(DOCS.values()))
    b = MaxSimTeacher(rotated).score(list(QUERIES.values()), list(DOCS.values()))
    np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(ConfigError, match="exceeds the encoder's width"):
        fit_pca_projection(plain, list(DOCS.values()), hidden + 1)
    with pytest.raises(ConfigError, match="on a plain encoder"):
        fit_pca_projection(rotated, list(DOCS.values()), 4)


def test_pca_model_saved_against_a_base_holds_only_the_projection(tiny_bert, tmp_path):
    from latelex.encoders.pca import pca_model

    folder = pca_model(tiny_bert, list(DOCS.values()), tmp_path / "pca", dim=8, base={"path": str(tiny_bert)},
                       query_maxlen=16, doc_maxlen=24)
    assert sorted(p.name for p in folder.iterdir()) == ["latelex_model.json", "projection.safetensors"]
    model = ColBERT.from_pretrained(folder, device="cpu")
    assert model.config.dim == 8 and model.encode_documents(["apple banana"])[0].shape[1] == 8


def test_the_shipped_pca_model_loads_by_name():
    from latelex.models import PCA_COLBERT_MODEL

    model = ColBERT.from_pretrained(PCA_COLBERT_MODEL, device="cpu")
    assert model.config.dim == 128 and model.lora is None
    vectors = model.encode_documents(["vitamin D and bone density"])[0]
    assert vectors.shape[1] == 128
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(len(vectors)), atol=1e-5, rtol=0)
