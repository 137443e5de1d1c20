"""PLAID against exact MaxSim on SciFact with all-MiniLM-L6-v2 token vectors (plain 384-dim and a fixed 128-dim
random projection): recall of exact top-10, nDCG@10 and bytes per vector.

The document vectors are those of the session's ``scifact_minilm_cache`` (SciFact indexed through the CLI with the
same model and lengths: a flat index, float16 vectors), so the corpus is encoded once per session for both; the
queries are encoded here. Set LATELEX_SCIFACT_VECTORS to a folder to keep the vectors between sessions (the files
are written there on first use).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import shared_path
from latelex.evaluate import evaluate
from latelex.index.flat import FlatIndex
from latelex.index.plaid import PlaidConfig, PlaidIndex
from latelex.npyio import load_npy

pytestmark = pytest.mark.data


def _encoded(folder: Path, minilm_cache: Callable[[], Path]):
    """(doc ids, doc vectors, doc offsets, query ids, query vectors, query offsets): the documents' from the CLI's
    flat index in the folder ``minilm_cache()`` gives (float32 from its float16), the queries encoded with the same
    model, once (kept in ``folder``)."""
    files = {name: folder / f"{name}.npy" for name in ("docs_vectors", "docs_offsets", "queries_vectors", "queries_offsets")}
    id_files = {prefix: folder / f"{prefix}_ids.json" for prefix in ("docs", "queries")}
    if not all(p.exists() for p in [*files.values(), *id_files.values()]):
        from latelex import ColBERT, Retriever
        from latelex.data import BeirDataset

        retriever = Retriever.open(minilm_cache() / "scifact-minilm-colbert")
        flat = retriever.index
        assert retriever.kind == "flat" and len(retriever._state.segments) == 1 and isinstance(flat, FlatIndex)
        config = retriever.manifest["encoder"]["config"]
        assert (config["query_maxlen"], config["doc_maxlen"]) == (64, 256)
        data = BeirDataset(shared_path("datasets", "scifact"), split="test")
        assert flat.doc_ids == [d for d, _ in data.corpus()]
        queries = list(data.queries())
        model = ColBERT.from_pretrained(shared_path("models", "all-MiniLM-L6-v2"), query_maxlen=64, doc_maxlen=256)
        mats = model.encode_queries([t for _, t in queries], show_progress=False)
        offsets = np.zeros(len(mats) + 1, dtype=np.int64)
        np.cumsum([m.shape[0] for m in mats], out=offsets[1:])
        np.save(files["queries_vectors"], torch.cat(mats).numpy().astype(np.float32))
        np.save(files["queries_offsets"], offsets)
        np.save(files["docs_vectors"], np.asarray(flat._vectors, dtype=np.float32))
        np.save(files["docs_offsets"], np.asarray(flat._offsets, dtype=np.int64))
        id_files["queries"].write_text(json.dumps([i for i, _ in queries]))
        id_files["docs"].write_text(json.dumps(flat.doc_ids))
    ids = {prefix: json.loads(p.read_text()) for prefix, p in id_files.items()}
    arrays = {name: load_npy(p, mmap=True) for name, p in files.items()}
    return ids, arrays


@pytest.fixture(scope="session")
def scifact(tmp_path_factory, request):
    folder = os.environ.get("LATELEX_SCIFACT_VECTORS")
    folder = Path(folder) if folder else tmp_path_factory.mktemp("scifact-minilm")
    folder.mkdir(parents=True, exist_ok=True)
    return _encoded(folder, lambda: request.getfixturevalue("scifact_minilm_cache"))


def _split(vectors: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [vectors[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _projection() -> torch.Tensor:
    from latelex import ColBERT

    model = ColBERT.from_backbone(shared_path("models", "all-MiniLM-L6-v2"), dim=128, seed=0, query_maxlen=64, doc_maxlen=256,
                                  query_marker=None, doc_marker=None, query_augmentation=False, skiplist=())
    return model, model.projection.weight.detach().float()


def _project(vectors: np.ndarray, weight: torch.Tensor) -> np.ndarray:
    # The projected model's vectors are normalize(W h); the plain ones are h / |h|, so normalize(W v) equals them.
    out = torch.nn.functional.normalize(torch.from_numpy(np.asarray(vectors, dtype=np.float32)) @ weight.T, dim=-1)
    return out.numpy()


def test_projected_vectors_equal_the_projected_encoder(scifact):
    """The 128-dim vectors the next test uses are exactly what ColBERT.from_backbone(dim=128, seed=0) encodes."""
    from latelex.data import BeirDataset

    ids, arrays = scifact
    model, weight = _projection()
    texts = dict(BeirDataset(shared_path("datasets", "scifact"), split="test").corpus())
    docs = model.encode_documents([texts[d] for d in ids["docs"][:6]], show_progress=False)
    for i, d in enumerate(docs):
        derived = _project(arrays["docs_vectors"][arrays["docs_offsets"][i] : arrays["docs_offsets"][i + 1]], weight)
        np.testing.assert_allclose(derived, d.numpy(), atol=2e-3)


def _recall(got, exact, k=10) -> float:
    return float(np.mean([len({h.doc_id for h in g[:k]} & {h.doc_id for h in e[:k]}) / k for g, e in zip(got, exact)]))


@pytest.fixture(scope="session", params=[384, 128])
def measured(request, scifact, tmp_path_factory):
    """Recall of exact top-10, nDCG@10 of PLAID and exact, and index info, for one dim (built once per session)."""
    from latelex.data import BeirDataset

    dim = request.param
    tmp_path = tmp_path_factory.mktemp(f"plaid-scifact-{dim}")
    ids, arrays = scifact
    doc_vectors, query_vectors = arrays["docs_vectors"], arrays["queries_vectors"]
    if dim == 128:
        _, weight = _projection()
        doc_vectors = np.concatenate([_project(doc_vectors[a : a + 200_000], weight) for a in range(0, len(doc_vectors), 200_000)])
        query_vectors = _project(query_vectors, weight)
    docs = _split(doc_vectors, arrays["docs_offsets"])
    queries = [torch.from_numpy(np.array(q)) for q in _split(query_vectors, arrays["queries_offsets"])]
    qrels = BeirDataset(shared_path("datasets", "scifact"), split="test").qrels()

    flat = FlatIndex.build(tmp_path / "flat", ids["docs"], docs)
    exact = flat.search(queries, k=10)
    plaid = PlaidIndex.build(tmp_path / "plaid", ids["docs"], docs, config=PlaidConfig(nbits=2))
    got = plaid.search(queries, k=10)
    # Every document scored over its decompressed vectors (a subset no larger than ndocs skips the pruning, and
    # ndocs // 4 >= N reach the exact stage): the best recall any pruning could reach with this codec.
    everything = plaid.search(queries, k=10, subset=ids["docs"], ndocs=4 * len(ids["docs"]))
    out = {
        "dim": dim,
        "recall": _recall(got, exact),
        "ceiling": _recall(everything, exact),
        "ndcg_exact": evaluate(dict(zip(ids["queries"], exact)), qrels, ["nDCG@10"])["nDCG@10"],
        "ndcg_plaid": evaluate(dict(zip(ids["queries"], got)), qrels, ["nDCG@10"])["nDCG@10"],
        "info": plaid.info(),
    }
    print(f"dim {dim}: recall@10 {out['recall']:.4f} (ceiling {out['ceiling']:.4f}), nDCG@10 {out['ndcg_plaid']:.4f} vs exact {out['ndcg_exact']:.4f}, "
          f"{out['info']['bytes_per_token_vector']:.1f} B/vector, {out['info']['n_centroids']} centroids")
    return out


def test_plaid_pruning_loses_little_beyond_the_codec(measured):
    """PLAID's defaults against an exhaustive search over the same decompressed vectors: what pruning costs."""
    assert measured["recall"] >= 0.95 * measured["ceiling"]


def test_plaid_ndcg_and_size_match_exact(measured):
    assert abs(measured["ndcg_plaid"] - measured["ndcg_exact"]) <= 0.005
    # Guard against regressions at the level measured so far (2026-11-30, Lloyd-Max buckets and unit-length
    # decoding: 0.915 at dim 128 with the random projection, ceiling 0.932; 0.943 at dim 384, ceiling 0.957).
    assert measured["recall"] >= 0.90
    if measured["dim"] == 128:
        assert measured["info"]["bytes_per_token_vector"] <= 40


@pytest.mark.xfail(strict=False, reason="issue 3 asks for 0.99; no pruning can reach it with a 2-bit codec on this data: an "
                   "exhaustive search over the decompressed vectors (the 'ceiling' above) recovers 0.945 with the built-in "
                   "model, and even 4 bits per dimension stay under 0.99 (0.981; bench/bench_plaid.py)")
def test_plaid_recovers_99_percent_of_exact_top10(measured):
    assert measured["recall"] >= 0.99


@pytest.fixture(scope="module")
def small_scifact(tmp_path_factory):
    """The built-in model's vectors of the first 200 SciFact abstracts and the first 30 test queries (about 20 s)."""
    from latelex import ColBERT
    from latelex.data import BeirDataset
    from latelex.models import DEFAULT_COLBERT_MODEL

    data = BeirDataset(shared_path("datasets", "scifact"), split="test")
    corpus, queries = list(data.corpus())[:200], list(data.queries())[:30]
    model = ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL)
    docs = model.encode_documents([t for _, t in corpus], show_progress=False)
    tq = model.encode_queries([t for _, t in queries], show_progress=False)
    tmp_path = tmp_path_factory.mktemp("plaid-scifact-200")
    ids = [d for d, _ in corpus]
    flat = FlatIndex.build(tmp_path / "flat", ids, docs)
    plaid = PlaidIndex.build(tmp_path / "plaid", ids, docs, config=PlaidConfig(nbits=2), show_progress=False)
    return flat, plaid, tq


def test_plaid_defaults_hold_on_200_abstracts(small_scifact):
    """Item 7 of the collections issue: ColBERT's ncells=1 recovered 0.75 of the exact top 10 here, some queries
    with fewer than 10 hits; the adaptive defaults score every document of so small a collection."""
    flat, plaid, queries = small_scifact
    exact = flat.search(queries, k=10)
    got = plaid.search(queries, k=10)
    assert all(len(row) == 10 for row in got)
    assert _recall(got, exact) >= 0.90
    colbert = plaid.search(queries, k=10, settings="colbert")
    assert all(len(row) == 10 for row in colbert)  # ColBERT's own settings still fill k
    assert _recall(colbert, exact) < _recall(got, exact)
