"""Chunking: token windows of the encoder's own tokenizer, their spans, and the budget the encoders really keep."""

from __future__ import annotations

import logging
import random
import warnings

import pytest
import torch
from transformers import AutoTokenizer

from latelex.encoders.colbert import ColBERT
from latelex.encoders.splade import Splade
from latelex.errors import ConfigError
from latelex.search.chunking import (
    ChunkingConfig,
    Passage,
    count_truncated,
    document_tokens,
    split_document,
    split_documents,
)
from tiny_models import WORDS


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(str(tiny_bert))


def _long_text(n_words: int, seed: int = 0) -> str:
    """Words of the tiny vocabulary plus unknown words (split into letter pieces), punctuation and odd spacing."""
    rng = random.Random(seed)
    pieces = []
    for _ in range(n_words):
        word = rng.choice(WORDS) if rng.random() < 0.7 else "".join(rng.choice("xyzqk") for _ in range(rng.randint(2, 6)))
        pieces.append(word + rng.choice([" ", " ", "  ", ", ", ".\n", "\t"]))
    return "  " + "".join(pieces)


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def test_config_is_checked():
    assert ChunkingConfig(64, 16).stride == 48
    with pytest.raises(ConfigError, match=r"^chunk overlap \(64\) must be smaller than the chunk size \(64 tokens\)$"):
        ChunkingConfig(64, 64)
    with pytest.raises(ConfigError):
        ChunkingConfig(0)
    with pytest.raises(ConfigError):
        ChunkingConfig(8, -1)
    with pytest.raises(ConfigError):
        ChunkingConfig(8.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("tokens,overlap", [(16, 0), (16, 5), (7, 6), (1, 0), (50, 10)])
def test_windows_cover_the_text_with_exact_overlap(tokenizer, tokens, overlap):
    text = _long_text(300)
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = ids["offset_mapping"]
    n = len(offsets)
    passages = split_document("d", text, tokenizer, ChunkingConfig(tokens, overlap))
    stride = tokens - overlap
    assert len(passages) == 1 + max(0, -(-(n - tokens) // stride))
    for i, p in enumerate(passages):
        assert p.doc_id == "d" and p.number == i
        assert 0 <= p.start < p.end <= len(text)
        assert p.text == text[p.start : p.end]
        first, last = i * stride, min(i * stride + tokens, n) - 1
        assert (p.start, p.end) == (offsets[first][0], offsets[last][1])
        assert _count(tokenizer, p.text) <= tokens
    assert passages[0].start == offsets[0][0] and passages[-1].end == offsets[-1][1]
    for a, b in zip(passages, passages[1:]):
        if overlap:
            shared = [s for s in offsets if a.start <= s[0] and s[1] <= a.end and b.start <= s[0] and s[1] <= b.end]
            assert len(shared) == overlap
        else:
            assert a.end <= b.start and not text[a.end : b.start].strip()
    # Stitched from the passages' own texts (each without what the previous one already holds), the passages
    # give back the text; every non-blank character lies in some passage.
    stitched, cursor = passages[0].text, passages[0].end
    for p in passages[1:]:
        stitched += text[cursor : p.start] + p.text[max(0, cursor - p.start) :]
        cursor = p.end
    assert stitched == text.strip()
    covered = set()
    for p in passages:
        covered.update(range(p.start, p.end))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())


def test_short_and_empty_texts_are_one_passage(tokenizer):
    config = ChunkingConfig(32, 8)
    text = "  The cell is small.  "
    assert split_document("a", text, tokenizer, config) == [Passage("a", 0, text, 0, len(text))]
    assert split_document("b", "", tokenizer, config) == [Passage("b", 0, "", 0, 0)]
    assert split_document("c", " \n ", tokenizer, config) == [Passage("c", 0, " \n ", 0, 3)]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_long_text_has_no_length_warning(tiny_bert):
    fresh = AutoTokenizer.from_pretrained(str(tiny_bert))  # transformers warns once per tokenizer object
    records = _Records()
    library = logging.getLogger("transformers")  # it does not propagate to the root logger
    library.addHandler(records)
    try:
        text = "the cell " * 2000  # 4000 tokens, far beyond model_max_length (512)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            passages = split_document("d", text, fresh, ChunkingConfig(500, 100))
            assert count_truncated([text], fresh, 500) == 1
            assert list(split_documents([("d", text)], fresh, ChunkingConfig(500, 100))) == passages
        assert len(passages) == 10
        assert not [m for m in records.messages if "sequence length" in m]
        fresh(text)  # the check does see the warning where it is not silenced
        assert [m for m in records.messages if "sequence length" in m]
    finally:
        library.removeHandler(records)


def test_split_documents_matches_split_document(tokenizer):
    docs = [(f"d{i}", _long_text(5 + 40 * (i % 4), seed=i)) for i in range(30)]
    config = ChunkingConfig(24, 6)
    expected = [p for doc_id, text in docs for p in split_document(doc_id, text, tokenizer, config)]
    assert list(split_documents(docs, tokenizer, config)) == expected


def test_count_truncated(tokenizer):
    texts = ["the cell " * 5, "the cell " * 10, "cell", "the cell is " * 20]  # 10, 20, 1 and 60 tokens
    assert count_truncated(texts, tokenizer, 20) == 1
    assert count_truncated(texts, tokenizer, 19) == 2
    assert count_truncated(texts, tokenizer, 100) == 0
    assert count_truncated(iter(texts * 600), tokenizer, 10) == 2 * 600


def test_colbert_budget_is_what_the_encoder_keeps(tiny_bert, tokenizer):
    model = ColBERT.from_backbone(tiny_bert, dim=8, doc_maxlen=40)
    budget = document_tokens(model)
    assert budget == 40 - 3  # [CLS], [D] and [SEP]
    text = " ".join(["cell", "protein", "gene"] * 50)  # no punctuation: the skiplist drops nothing
    assert _count(tokenizer, text) > budget
    (long,) = model.encode_documents([text])
    assert long.shape[0] == budget + 3
    # A text of exactly the budget is kept whole; its vectors are those of the long text's kept prefix.
    (fits,) = model.encode_documents([" ".join(text.split()[:budget])])
    assert fits.shape[0] == budget + 3
    torch.testing.assert_close(fits, long)
    # Chunked to the budget, every passage is encoded whole.
    passages = split_document("d", text, tokenizer, ChunkingConfig(budget, 4))
    assert count_truncated([p.text for p in passages], model.tokenizer, budget) == 0
    assert [v.shape[0] for v in model.encode_documents([p.text for p in passages])] == [
        _count(tokenizer, p.text) + 3 for p in passages
    ]


def test_splade_budget_is_what_the_encoder_keeps(tiny_mlm):
    model = Splade.from_pretrained(tiny_mlm, doc_maxlen=24)
    budget = document_tokens(model)
    assert budget == 24 - 2  # [CLS] and [SEP]
    prefix = ["cell"] * budget
    # A new word right after the budget is dropped; one inside the budget changes the vector.
    cut, whole = model.encode_documents([" ".join(prefix + ["apple"]), " ".join(prefix)])
    assert cut.ids.tolist() == whole.ids.tolist() and cut.weights.tolist() == whole.weights.tolist()
    inside, without = model.encode_documents([" ".join(prefix[1:] + ["apple"]), " ".join(prefix[1:])])
    assert inside.ids.tolist() != without.ids.tolist() or inside.weights.tolist() != without.weights.tolist()
