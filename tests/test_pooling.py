"""Token pooling at indexing (``pool_factor``): the pooling function, and the Retriever and CLI that index with it
(tiny random models)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latelex import ColBERT, Retriever, Splade
from latelex.cli import main
from latelex.errors import ConfigError, InputError
from latelex.index import registry
from latelex.index.plaid import PlaidConfig
from latelex.scoring.pooling import pool_documents, pool_tokens, pooled_count
from latelex.types import Document
from tiny_models import WORDS

VOCAB = [w for w in WORDS if len(w) > 2]


def unit(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)


def make_docs(n: int, seed: int = 0, start: int = 0) -> list[Document]:
    rng = random.Random(seed)
    return [Document(f"d{i}", " ".join(rng.choice(VOCAB) for _ in range(rng.randint(6, 24))), {"n": i})
            for i in range(start, start + n)]


def pooled_lengths(encoder, texts, factor) -> list[int]:
    return [pooled_count(m.shape[0], factor) for m in encoder.encode_documents(texts)]


@pytest.fixture(scope="module")
def colbert(tiny_bert):
    return ColBERT.from_pretrained(tiny_bert)


# ---------------------------------------------------------------------- pool_tokens


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 300), factor=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_count_bound_and_unit_norm(n, factor, seed):
    m = unit(n, seed=seed)
    pooled = pool_tokens(m, factor)
    assert pooled.shape == (min(n, math.ceil(n / factor)), 16) == (pooled_count(n, factor), 16)
    assert pooled.dtype == m.dtype
    if n:
        assert torch.allclose(pooled.norm(dim=1), torch.ones(pooled.shape[0]), atol=1e-5)


def test_factor_one_is_the_identity_and_tiny_documents_are_kept():
    m = unit(37)
    assert pool_tokens(m, 1) is m
    docs = [unit(5, seed=1), unit(9, seed=2)]
    assert all(a is b for a, b in zip(pool_documents(docs, 1), docs))
    one = unit(1)
    assert pool_tokens(one, 2) is one and pool_tokens(one, 3) is one
    empty = torch.zeros(0, 16)
    assert pool_tokens(empty, 2).shape == (0, 16)
    two = unit(2)
    merged = pool_tokens(two, 2)  # ceil(2 / 2) = 1: the normalised mean
    assert merged.shape == (1, 16)
    assert torch.allclose(merged[0], torch.nn.functional.normalize(two.mean(0), dim=0), atol=1e-6)
    assert pool_tokens(unit(3), 2).shape == (2, 16)  # ceil, not floor: 3 tokens keep 2 vectors


def test_duplicate_tokens_are_merged_in_document_order():
    u = unit(6, seed=3)
    doubled = u.repeat_interleave(2, dim=0)  # a a b b c c ...
    assert torch.allclose(pool_tokens(doubled, 2), u, atol=1e-6)
    scattered = torch.cat([u, u])  # a b c ... a b c ...: each cluster is placed at its first token
    assert torch.allclose(pool_tokens(scattered, 2), u, atol=1e-6)
    tripled = u[:4].repeat(3, 1)
    assert torch.allclose(pool_tokens(tripled, 3), u[:4], atol=1e-6)


def test_means_without_normalisation_and_well_separated_clusters():
    # two tight groups far apart: pooled to 2 vectors, each the plain mean of its group
    a = torch.tensor([[10.0, 0.0], [10.2, 0.0], [9.9, 0.1]])
    b = torch.tensor([[0.0, -5.0], [0.1, -5.2], [0.0, -4.9]])
    m = torch.cat([a[:2], b, a[2:]])
    pooled = pool_tokens(m, 3, normalize=False)
    assert torch.allclose(pooled, torch.stack([a.mean(0), b.mean(0)]), atol=1e-6)


def test_pooling_is_deterministic_and_keeps_dtype_and_device():
    m = unit(180, dim=32, seed=5)
    first = pool_tokens(m, 2)
    assert torch.equal(first, pool_tokens(m.clone(), 2))
    half = pool_tokens(m.half(), 2)
    assert half.dtype == torch.float16 and half.shape == first.shape and half.device == m.device


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_invalid_pool_factor(bad):
    with pytest.raises(ConfigError, match="pool_factor"):
        pool_tokens(unit(4), bad)
    with pytest.raises(ConfigError, match="pool_factor"):
        pool_documents([unit(4)], bad)


def test_invalid_matrices():
    with pytest.raises(InputError, match=r"\(L, dim\)"):
        pool_tokens(unit(4)[0], 2)
    with pytest.raises(InputError, match=r"\(L, dim\)"):
        pool_tokens(np.zeros((4, 3), dtype=np.float32), 2)
    bad = unit(4)
    bad[1, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        pool_tokens(bad, 2)
    assert np.int64(2) and pool_tokens(unit(4), np.int64(2)).shape == (2, 16)  # numpy integers are integers


# ---------------------------------------------------------------------- the Retriever


@pytest.mark.parametrize("kind", ["flat", "plaid"])
@pytest.mark.parametrize("factor", [2, 3])
def test_search_through_a_pooled_index(kind, factor, colbert, tmp_path):
    docs = make_docs(30)
    config = PlaidConfig(nbits=4) if kind == "plaid" else None
    r = Retriever.build(tmp_path / "i", colbert, docs, kind=kind, engine_config=config, pool_factor=factor)
    info = r.info()
    assert r.pool_factor == factor == info["pool_factor"] == r.manifest["pool_factor"]
    assert info["token_vectors"] == sum(pooled_lengths(colbert, [d.text for d in docs], factor))
    hits = r.search([d.text for d in docs], k=3)
    assert all(len(h) == 3 for h in hits)
    top1 = sum(h[0].doc_id == d.id for h, d in zip(hits, docs))
    if kind == "flat":  # a query identical to a document finds it first
        assert top1 == len(docs)
        # exact MaxSim of the (unpooled) query against the pooled document: queries are never pooled
        q = colbert.encode_queries([docs[4].text])[0]
        d = pool_tokens(colbert.encode_documents([docs[4].text])[0], factor)
        assert hits[4][0].score == pytest.approx(float((q @ d.T).max(1).values.sum()), rel=2e-3)
    else:
        assert top1 >= len(docs) - 2
    again = Retriever.open(tmp_path / "i", encoder=colbert)
    assert again.pool_factor == factor


def test_unpooled_indexes_record_factor_one(colbert, tmp_path):
    r = Retriever.build(tmp_path / "i", colbert, make_docs(5))
    assert r.pool_factor == 1 and r.info()["pool_factor"] == 1 and r.manifest["pool_factor"] == 1
    assert r.info()["token_vectors"] == sum(pooled_lengths(colbert, [d.text for d in make_docs(5)], 1))


def test_adds_upserts_and_compaction_pool_with_the_index_factor(colbert, tmp_path):
    a, b = make_docs(12), make_docs(6, seed=1, start=12)
    plaid = Retriever.build(tmp_path / "plaid", colbert, a, kind="plaid", engine_config=PlaidConfig(nbits=4),
                            pool_factor=2)
    before = plaid.info()["token_vectors"]
    reopened = Retriever.open(tmp_path / "plaid", encoder=colbert)  # the factor comes from the manifest
    assert reopened.add(b).added == 6
    assert reopened.info()["token_vectors"] == before + sum(pooled_lengths(colbert, [d.text for d in b], 2))

    flat = Retriever.build(tmp_path / "flat", colbert, a, kind="flat", pool_factor=3)
    flat.add(b)
    info = flat.info()
    assert info["pool_factor"] == 3 and info["segments"] == 2
    assert info["segment_token_vectors"] == [sum(pooled_lengths(colbert, [d.text for d in a], 3)),
                                             sum(pooled_lengths(colbert, [d.text for d in b], 3))]
    changed = Document("d0", "apple banana fruit apple banana fruit red green blue", {"n": 0})
    assert flat.upsert([changed]).replaced == 1
    assert flat.info()["segment_token_vectors"][-1] == pooled_lengths(colbert, [changed.text], 3)[0]
    flat.compact()
    live = [flat.get(i) for i in flat.doc_ids]
    info = flat.info()
    assert info["segments"] == 1 and info["pool_factor"] == 3
    assert info["token_vectors"] == sum(pooled_lengths(colbert, [d.text for d in live], 3))
    assert flat.search(changed.text, k=1)[0].doc_id == "d0"


def test_chunking_and_pooling_compose(colbert, tmp_path):
    from latelex.search.chunking import ChunkingConfig, split_documents

    docs = make_docs(8)
    chunking = ChunkingConfig(8, 2)
    r = Retriever.build(tmp_path / "i", colbert, docs, chunking=chunking, pool_factor=2)
    passages = [p.text for p in split_documents(((d.id, d.text) for d in docs), colbert.tokenizer, chunking)]
    info = r.info()
    assert info["passages"] == len(passages) > len(docs)
    assert info["token_vectors"] == sum(pooled_lengths(colbert, passages, 2))  # each passage pooled on its own
    hit = r.search(docs[3].text, k=1)[0]
    assert hit.doc_id == "d3" and hit.passage is not None


@pytest.mark.parametrize("kind", ["ivfpq", "sparse", "inverted", "bm25"])
def test_kinds_that_do_not_pool_refuse_a_factor(kind, colbert, tiny_mlm, tmp_path):
    encoder = {"colbert": colbert, "splade": None, "text": None}[registry.kind(kind).family]
    if registry.kind(kind).family == "splade":
        encoder = Splade.from_pretrained(tiny_mlm)
    with pytest.raises(InputError) as err:
        Retriever.build(tmp_path / "i", encoder, make_docs(4), kind=kind, pool_factor=2)
    message = str(err.value)
    assert "\n" not in message and "flat and plaid" in message and kind in message
    assert not (tmp_path / "i").exists()
    assert set(registry.pooling_kinds()) == {"flat", "plaid"}


def test_build_checks_the_factor(colbert, tmp_path):
    for bad in (0, 2.0, "2"):
        with pytest.raises(ConfigError, match="pool_factor"):
            Retriever.build(tmp_path / "i", colbert, make_docs(3), pool_factor=bad)
    assert not (tmp_path / "i").exists()


# ---------------------------------------------------------------------- the command line


def test_cli_pool_factor(colbert, tmp_path, capsys):
    docs = make_docs(20)
    collection = tmp_path / "collection.tsv"
    collection.write_text("".join(f"{d.id}\t{d.text}\n" for d in docs[:15]))
    more = tmp_path / "more.tsv"
    more.write_text("".join(f"{d.id}\t{d.text}\n" for d in docs[15:]))
    model = colbert.save(tmp_path / "model")
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(model), "--collection", str(collection), "--kind", "plaid",
                 "--nbits", "4", "--pool-factor", "2"]) == 0
    assert "pool factor 2" in capsys.readouterr().out
    assert main(["info", str(idx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pool_factor"] == 2
    assert info["token_vectors"] == sum(pooled_lengths(colbert, [d.text for d in docs[:15]], 2))
    assert main(["-q", "add", str(idx), "--collection", str(more)]) == 0
    capsys.readouterr()
    assert main(["info", str(idx)]) == 0
    assert "pool_factor" in capsys.readouterr().out
    assert Retriever.inspect(idx)["token_vectors"] == sum(pooled_lengths(colbert, [d.text for d in docs], 2))

    for argv, needle in ((["--kind", "bm25", "--pool-factor", "2"], "--kind flat or plaid, not bm25"),
                         (["--kind", "ivfpq", "--model", str(model), "--pool-factor", "3"], "not ivfpq"),
                         (["--model", str(model), "--pool-factor", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exit_:
            main(["-q", "index", str(tmp_path / "other"), "--collection", str(collection), *argv])
        assert exit_.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
