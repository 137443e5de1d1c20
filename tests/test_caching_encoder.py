"""CachingEncoder: each distinct document text encoded once, results equal to the wrapped encoder's, and an index
built through it records the wrapped encoder's spec."""

from __future__ import annotations

import torch

from latelex import ColBERT, Retriever
from latelex.encoders.caching import CachingEncoder

TEXTS = ["apple banana fruit", "gene protein cell", "apple banana fruit", "blood brain heart virus"]


def test_encodes_each_text_once_and_equals_the_encoder(tiny_bert, tmp_path):
    inner = ColBERT.from_pretrained(tiny_bert)
    enc = CachingEncoder(inner)
    seen = []
    got = enc.encode_documents(TEXTS, on_batch=seen.append)
    assert enc.encoded == 3 and seen == [4]
    again = enc.encode_documents(TEXTS[:2])
    assert enc.encoded == 3
    want = inner.encode_documents(TEXTS)
    for a, b in zip(got, want):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-5)
    assert again[0] is got[0]
    enc.cache_queries = True
    q1 = enc.encode_queries(["apple"])
    q2 = enc.encode_queries(["apple"])
    assert q1[0] is q2[0]
    r = Retriever.build(tmp_path / "idx", enc, TEXTS[:2] + TEXTS[3:])
    assert r.manifest["encoder"] == inner.spec()
    assert enc.inner is inner
