"""Token-level explanations (Retriever.explain and `latelex search --explain`) for every family: contributions sum
to the score, match the search's score, and point at the right characters (tiny random models, a handful of docs)."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from latelex import ColBERT, Contribution, Explanation, Retriever, Splade
from latelex.cli import main
from latelex.errors import InputError
from latelex.index.plaid import PlaidConfig
from latelex.scoring.maxsim import maxsim_pairwise
from latelex.search.explain import document_tokens, query_tokens, special_tokens
from tiny_models import WORDS, build_tokenizer

VOCAB = [w for w in WORDS if len(w) > 2 and w not in ("vaccine", "apple")]
QUERY = "vaccine dose trial"
# "vaccine" occurs once, capitalised, at a known place; punctuation (the skiplist) around it
NEEDLE = "Blood tests, heart data: the new Vaccine was good."
NEEDLE_AT = NEEDLE.index("Vaccine")


def make_docs(n: int, seed: int = 0, length: int = 14) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    docs = [(f"d{i}", " ".join(rng.choice(VOCAB) for _ in range(length)) + (", and more." if i % 2 else ""))
            for i in range(n)]
    return docs + [("needle", NEEDLE)]


@pytest.fixture(scope="module")
def colbert(tiny_bert):
    """Markers, [MASK] augmentation (32 query tokens) and the punctuation skiplist: ColBERT's defaults."""
    return ColBERT.from_backbone(tiny_bert, dim=16, seed=1)


@pytest.fixture(scope="module")
def identity_colbert(tmp_path_factory):
    """A ColBERT whose token vectors depend on the token alone (no layers, no position embeddings): a query token's
    best match is the same token wherever it occurs in the document."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("identity-bert")
    tokenizer = build_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=0, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = BertModel(config)
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(str(folder))
    return ColBERT.from_backbone(folder, dim=16, seed=2)


@pytest.fixture(scope="module")
def splade(tiny_mlm):
    return Splade.from_pretrained(tiny_mlm)


@pytest.fixture(scope="module")
def flat(colbert, tmp_path_factory):
    return Retriever.build(tmp_path_factory.mktemp("flat") / "i", colbert, make_docs(8), kind="flat")


def _surface(token: str) -> str:
    return token[2:] if token.startswith("##") else token


def _check_colbert(e: Explanation, encoder) -> None:
    assert e.family == "colbert" and isinstance(e.contributions[0], Contribution)
    assert len(e.contributions) == encoder.encode_queries([e.query])[0].shape[0]
    assert [c.query_position for c in e.contributions] == list(range(len(e.contributions)))
    assert e.score == pytest.approx(sum(c.score for c in e.contributions), abs=1e-9)
    special = special_tokens(encoder)
    for c in e.contributions:
        if c.doc_token in special:
            assert c.spans == ()
        else:
            (s, t), = c.spans
            assert e.text[s:t].lower() == _surface(c.doc_token)


# ---------------------------------------------------------------------- ColBERT


@pytest.mark.parametrize("which", ["colbert", "plain"])
def test_document_tokens_line_up_with_the_encoders_vectors(which, colbert, tiny_bert):
    encoder = colbert if which == "colbert" else ColBERT.from_pretrained(tiny_bert)  # plain: no markers, no skiplist
    # an unknown character ([UNK]), punctuation (the skiplist), and a text longer than doc_maxlen (truncated)
    for text in [NEEDLE, "apple, banana; 中 fruits!!", " ".join(["cancer risk, study."] * 60)]:
        tokens, spans = document_tokens(encoder, text)
        vectors = encoder.encode_documents([text])[0]
        assert len(tokens) == len(spans) == vectors.shape[0]
        assert torch.allclose(vectors, encoder.encode_documents([text, "other text"])[0], atol=1e-5)  # as batched
        assert (spans[0], tokens[0]) == (None, "[CLS]") and (spans[-1], tokens[-1]) == (None, "[SEP]")
        for token, span in zip(tokens, spans):
            if token == "[UNK]":
                assert text[span[0]:span[1]] == "中"
            elif span is not None:
                assert text[span[0]:span[1]].lower() == _surface(token)
            else:
                assert token in special_tokens(encoder)
    assert len(query_tokens(encoder, QUERY)) == encoder.encode_queries([QUERY])[0].shape[0]


def test_flat_explanation_sums_to_the_search_score(flat, colbert):
    for hit in flat.search(QUERY, k=3) + flat.search(QUERY, k=1, subset=["needle"]):
        e = flat.explain(QUERY, hit.doc_id)
        _check_colbert(e, colbert)
        assert len(e.contributions) == 32 and e.contributions[-1].query_token == "[MASK]"
        assert e.score == pytest.approx(hit.score, abs=1e-4)
        assert e.text == flat.document(hit.doc_id) and e.passage is None and e.passage_span is None
    # the same number from the scoring module, on the encoder's own vectors at the index's float16 precision
    text = flat.document("needle")
    Q = colbert.encode_queries([QUERY])[0]
    D = colbert.encode_documents([text])[0].half().float()
    assert flat.explain(QUERY, "needle").score == pytest.approx(float(maxsim_pairwise(Q[None], D[None])[0]), abs=1e-5)


def test_l2_similarity(tiny_bert, tmp_path):
    encoder = ColBERT.from_backbone(tiny_bert, dim=16, seed=3, similarity="l2")
    r = Retriever.build(tmp_path / "l2", encoder, make_docs(4), kind="flat")
    for hit in r.search(QUERY, k=2):
        e = r.explain(QUERY, hit.doc_id)
        _check_colbert(e, encoder)
        assert all(c.score <= 1e-6 for c in e.contributions)  # -||q - d||^2
        assert e.score == pytest.approx(hit.score, abs=1e-4)


def test_plaid_explains_the_re_encoded_text(flat, colbert, tmp_path):
    plaid = Retriever.build(tmp_path / "p", colbert, make_docs(8), kind="plaid", engine_config=PlaidConfig(nbits=4))
    for hit in plaid.search(QUERY, k=2):
        e = plaid.explain(QUERY, hit.doc_id)
        _check_colbert(e, colbert)
        assert e == flat.explain(QUERY, hit.doc_id)  # the score is the exact MaxSim, whatever the codec
        assert e.score == pytest.approx(hit.score, rel=0.05)


def test_a_query_word_points_at_its_only_occurrence(identity_colbert, tmp_path):
    r = Retriever.build(tmp_path / "i", identity_colbert, make_docs(4), kind="flat")
    e = r.explain(QUERY, "needle")
    _check_colbert(e, identity_colbert)
    vaccine, = [c for c in e.contributions if c.query_token == "vaccine"]
    assert vaccine.doc_token == "vaccine" and vaccine.spans == ((NEEDLE_AT, NEEDLE_AT + len("vaccine")),)
    assert vaccine.score == pytest.approx(1.0, abs=1e-3)
    assert e.score == pytest.approx(r.search(QUERY, k=5, subset=["needle"])[0].score, abs=1e-4)


def test_chunked_explanation_points_inside_the_best_passage(colbert, tmp_path):
    long = [(d, f"{t} {t} {t}") for d, t in make_docs(3, length=10)]
    r = Retriever.build(tmp_path / "c", colbert, long, kind="flat", chunking=(12, 3))
    for hit in r.search(QUERY, k=4):
        e = r.explain(QUERY, hit.doc_id)
        _check_colbert(e, colbert)
        assert (e.passage, e.passage_span) == (hit.passage, hit.span)
        assert e.score == pytest.approx(hit.score, abs=1e-4)
        a, b = e.passage_span
        assert all(a <= s < t <= b for c in e.contributions for s, t in c.spans)
    assert r.explain(QUERY, "d0").passage_span[1] <= len(r.document("d0"))


# ---------------------------------------------------------------------- SPLADE and BM25


def test_splade_terms_multiply_to_the_sparse_score(splade, tmp_path):
    r = Retriever.build(tmp_path / "s", splade, make_docs(6), kind="sparse")
    for hit in r.search("vaccine dose trial apple", k=3):
        e = r.explain("vaccine dose trial apple", hit.doc_id)
        assert e.family == "splade" and e.contributions
        assert e.score == pytest.approx(hit.score, abs=1e-4)
        assert e.score == pytest.approx(sum(c.score for c in e.contributions), abs=1e-9)
        scores = [c.score for c in e.contributions]
        assert scores == sorted(scores, reverse=True)
        for c in e.contributions:
            assert c.score == pytest.approx(c.query_weight * c.doc_weight, rel=1e-6)
            assert c.doc_token == c.query_token and c.doc_position is None
            assert all(e.text[s:t].lower() == _surface(c.query_token) for s, t in c.spans)
    needle = r.explain("vaccine", "needle")
    found = {c.query_token: c.spans for c in needle.contributions}
    assert found.get("vaccine") == ((NEEDLE_AT, NEEDLE_AT + 7),)


def test_bm25_terms_sum_to_the_bm25_score(tmp_path):
    docs = make_docs(5) + [("fruit", "Apples and an apple: APPLE pie. The apple's fruits, fruit."),
                           ("runner", "Running runs; the runner ran.")]
    r = Retriever.build(tmp_path / "b", None, docs, kind="bm25")
    for query in ["apple fruit vaccine", "apple apple running the", QUERY]:
        for hit in r.search(query, k=10):
            e = r.explain(query, hit.doc_id)
            assert e.family == "text" and e.score == pytest.approx(hit.score, abs=1e-5)
            assert e.score == pytest.approx(sum(c.score for c in e.contributions), abs=1e-9)
            assert [c.score for c in e.contributions] == sorted((c.score for c in e.contributions), reverse=True)
            for c in e.contributions:
                assert c.doc_weight == c.score and c.query_weight is None and c.spans
                for s, t in c.spans:
                    assert r.index.tokenize([e.text[s:t]]) == [[c.query_token]]
    apple, = [c for c in r.explain("apple", "fruit").contributions]
    text = r.document("fruit")
    assert [text[s:t] for s, t in apple.spans] == ["Apples", "apple", "APPLE", "apple"]
    assert r.explain("apple", "d0").contributions == ()  # no shared term: score 0
    assert r.explain("apple", "d0").score == 0.0
    assert r.explain("apple apple", "fruit").score == pytest.approx(2 * r.explain("apple", "fruit").score)


# ---------------------------------------------------------------------- errors and JSON


def test_errors(flat, colbert, tmp_path):
    with pytest.raises(InputError, match="'nope'"):
        flat.explain(QUERY, "nope")
    with pytest.raises(InputError, match="empty"):
        flat.explain("   ", "d0")
    bare = Retriever.build(tmp_path / "bare", colbert, make_docs(2), kind="flat", store_text=False)
    with pytest.raises(InputError, match="store_text"):
        bare.explain(QUERY, "d0")
    with pytest.raises(InputError, match="load_encoder"):
        Retriever.open(flat.path, load_encoder=False).explain(QUERY, "d0")


def test_to_dict_is_json_with_the_field_names(flat):
    e = flat.explain(QUERY, "needle")
    data = json.loads(json.dumps(e.to_dict()))
    assert list(data) == ["doc_id", "query", "family", "score", "contributions", "text", "passage", "passage_span"]
    assert list(data["contributions"][0]) == ["query_token", "query_position", "doc_token", "doc_position", "spans",
                                              "score", "query_weight", "doc_weight"]
    assert [tuple(map(tuple, c["spans"])) for c in data["contributions"]] == [c.spans for c in e.contributions]
    assert [e2.doc_id for e2 in flat.explain_many(QUERY, ["d1", "needle"])] == ["d1", "needle"]


# ---------------------------------------------------------------------- CLI


LINE = re.compile(r"^    (\S+) -> (\S+) \[(\d+):(\d+)\] [+-]\d+\.\d\d$")


def test_cli_search_explain_prints_matched_spans(identity_colbert, tmp_path, capsys):
    r = Retriever.build(tmp_path / "i", identity_colbert, make_docs(3), kind="flat")
    assert main(["search", str(r.path), "--query", QUERY, "-k", "4", "--explain"]) == 0
    out = capsys.readouterr().out
    matched = [m.groups() for line in out.splitlines() if (m := LINE.match(line))]
    assert ("vaccine", "vaccine", str(NEEDLE_AT), str(NEEDLE_AT + 7)) in matched
    sums = [line for line in out.splitlines() if line.startswith("    score = ")]
    assert len(sums) == 4 and "query tokens 32, of which [MASK] 26:" in sums[0]
    assert float(sums[0].split()[2]) == pytest.approx(r.explain(QUERY, r.search(QUERY, k=1)[0].doc_id).score, abs=1e-4)


def test_cli_explain_for_bm25_and_bad_use(tmp_path, capsys):
    r = Retriever.build(tmp_path / "b", None, make_docs(3), kind="bm25")
    assert main(["search", str(r.path), "--query", "vaccine", "-k", "1", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "    vaccin +" in out and f"[{NEEDLE_AT}:{NEEDLE_AT + 7}]" in out
    (tmp_path / "q.tsv").write_text("q1\tvaccine\n")
    with pytest.raises(SystemExit) as usage:
        main(["search", str(r.path), "--queries", str(tmp_path / "q.tsv"), "--explain"])
    assert usage.value.code == 2
    assert "--explain" in capsys.readouterr().err
