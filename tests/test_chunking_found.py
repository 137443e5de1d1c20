"""A long document whose only match sits past doc_maxlen: found with chunking, missed without (built-in model)."""

from __future__ import annotations

import pytest

from latelex import ColBERT, Document, Retriever
from latelex.models import DEFAULT_COLBERT_MODEL

pytestmark = pytest.mark.data

FILLER = ("The committee reviewed the quarterly budget, the minutes of the previous meeting and the schedule of "
          "maintenance work on the municipal swimming pool, the library roof and the footpaths near the river. ")


def test_the_end_of_a_long_document_is_found_only_with_chunking(tmp_path):
    encoder = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu")
    budget = encoder.document_token_budget
    filler = FILLER * (2 * budget // 30 + 4)  # well past doc_maxlen
    ending = "Ulaanbaatar is the capital of Mongolia and its largest city."
    docs = [
        Document("long", filler + ending),
        Document("near", "Mongolia is a landlocked country in East Asia, between Russia and China."),
        Document("other", "The Great Barrier Reef is the largest coral reef system in the world."),
        Document("more", "Photosynthesis converts light energy into chemical energy in plants."),
    ]
    assert len(encoder.tokenizer(filler)["input_ids"]) > budget + 100
    query = "Which is the largest city of Mongolia, Ulaanbaatar?"
    plain = Retriever.build(tmp_path / "plain", encoder, docs)
    chunked = Retriever.build(tmp_path / "chunked", encoder, docs, chunking=(budget, budget // 4))
    assert plain.search(query, k=1)[0].doc_id == "near"  # the end of "long" was cut off
    top = chunked.search(query, k=1)[0]
    assert top.doc_id == "long"
    start, end = top.span
    assert ending in docs[0].text[start:end] and end == len(docs[0].text)
