"""Every MaxSim function and top-k against plain loop references on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latelex.errors import InputError
from latelex.scoring.maxsim import SEGMENT_MAX, maxsim_packed, maxsim_padded, maxsim_pairwise
from latelex.scoring.topk import topk, topk_rows

STRATEGIES = ["auto", *SEGMENT_MAX]


def ref_score(q: torch.Tensor, d: torch.Tensor, similarity: str) -> float:
    """Plain MaxSim of one query (Lq, dim) with one document (Ld, dim), in float64."""
    q, d = q.double(), d.double()
    if q.shape[0] == 0:
        return 0.0
    if d.shape[0] == 0:
        return float("-inf")
    if similarity == "cosine":
        sim = q @ d.T
    else:
        sim = -((q[:, None, :] - d[None, :, :]) ** 2).sum(-1)
    return float(sim.max(dim=1).values.sum())


def ref_matrix(queries: list[torch.Tensor], docs: list[torch.Tensor], similarity: str) -> torch.Tensor:
    return torch.tensor([[ref_score(q, d, similarity) for d in docs] for q in queries], dtype=torch.float64)


def random_docs(gen: torch.Generator, lengths: list[int], dim: int) -> list[torch.Tensor]:
    return [torch.randn(n, dim, generator=gen) for n in lengths]


def pack(docs: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.zeros(len(docs) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor([d.shape[0] for d in docs]), 0)
    vectors = torch.cat(docs) if docs else torch.zeros(0, dim)
    return vectors, offsets


def pad(mats: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max([m.shape[0] for m in mats] + [1])
    out = torch.zeros(len(mats), longest, dim)
    mask = torch.zeros(len(mats), longest, dtype=torch.bool)
    for i, m in enumerate(mats):
        out[i, : m.shape[0]] = m
        mask[i, : m.shape[0]] = True
    # Garbage in padded positions must not matter.
    out[~mask] = 7.0
    return out, mask


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> None:
    torch.testing.assert_close(actual.double(), expected, atol=tol, rtol=tol)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation, painful on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# --- padded and pairwise -------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["cosine", "l2"])
def test_padded_matches_reference_with_masks(gen, similarity):
    dim = 8
    docs = random_docs(gen, [5, 1, 9, 3], dim)
    queries = [torch.randn(n, dim, generator=gen) for n in (4, 2, 1)]
    Q, q_mask = pad(queries, dim)
    D, d_mask = pad(docs, dim)
    out = maxsim_padded(Q, D, d_mask=d_mask, q_mask=q_mask, similarity=similarity)
    assert out.shape == (3, 4)
    close(out, ref_matrix(queries, docs, similarity))


def test_padded_without_masks_and_empty_query_mask(gen):
    dim = 6
    Q = torch.randn(2, 3, dim, generator=gen)
    D = torch.randn(4, 5, dim, generator=gen)
    close(maxsim_padded(Q, D), ref_matrix(list(Q), list(D), "cosine"))
    q_mask = torch.tensor([[True, False, True], [False, False, False]])
    out = maxsim_padded(Q, D, q_mask=q_mask)
    close(out, ref_matrix([Q[0][[0, 2]], Q[1][:0]], list(D), "cosine"))
    assert torch.all(out[1] == 0)


def test_padded_fully_masked_document_scores_minus_inf(gen):
    Q = torch.randn(1, 2, 4, generator=gen)
    D = torch.randn(2, 3, 4, generator=gen)
    d_mask = torch.tensor([[True, True, True], [False, False, False]])
    out = maxsim_padded(Q, D, d_mask=d_mask)
    assert torch.isfinite(out[0, 0]) and out[0, 1] == float("-inf")


def test_padded_chunks_over_documents(gen, monkeypatch):
    import latelex.scoring.maxsim as maxsim

    monkeypatch.setattr(maxsim, "PADDED_CHUNK_BYTES", 64)  # one document per step
    Q = torch.randn(2, 3, 4, generator=gen)
    D = torch.randn(5, 6, 4, generator=gen)
    close(maxsim.maxsim_padded(Q, D, similarity="l2"), ref_matrix(list(Q), list(D), "l2"))


def test_padded_is_differentiable_and_float16_is_upcast(gen):
    Q = torch.randn(2, 3, 4, generator=gen, requires_grad=True)
    D = torch.randn(3, 5, 4, generator=gen)
    d_mask = torch.ones(3, 5, dtype=torch.bool)
    d_mask[1, 2:] = False
    maxsim_padded(Q, D, d_mask=d_mask).sum().backward()
    assert Q.grad is not None and torch.isfinite(Q.grad).all()
    half = maxsim_padded(Q.detach().half(), D.half())
    assert half.dtype == torch.float32
    close(half, ref_matrix(list(Q.detach().half().float()), list(D.half().float()), "cosine"), tol=1e-3)


@pytest.mark.parametrize("similarity", ["cosine", "l2"])
def test_pairwise_matches_reference(gen, similarity):
    dim = 5
    queries = [torch.randn(n, dim, generator=gen) for n in (3, 1, 4)]
    docs = random_docs(gen, [2, 6, 1], dim)
    Q, q_mask = pad(queries, dim)
    D, d_mask = pad(docs, dim)
    out = maxsim_pairwise(Q, D, d_mask=d_mask, q_mask=q_mask, similarity=similarity)
    expected = torch.tensor([ref_score(q, d, similarity) for q, d in zip(queries, docs)], dtype=torch.float64)
    close(out, expected)
    Qg = Q.clone().requires_grad_(True)
    maxsim_pairwise(Qg, D, d_mask=d_mask, q_mask=q_mask).sum().backward()
    assert torch.isfinite(Qg.grad).all()


def test_padded_and_pairwise_reject_bad_shapes(gen):
    with pytest.raises(InputError, match="dim"):
        maxsim_padded(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(InputError, match="similarity"):
        maxsim_padded(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), similarity="dot")
    with pytest.raises(InputError, match="d_mask"):
        maxsim_padded(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), d_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(InputError):
        maxsim_pairwise(torch.zeros(2, 2, 3), torch.zeros(1, 2, 3))


# --- packed --------------------------------------------------------------------------------------------

LENGTHS = [3, 7, 1, 12, 5, 2, 9, 4]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("similarity", ["cosine", "l2"])
@pytest.mark.parametrize("chunk_tokens", [None, 1, 4, 5, 11])
def test_packed_matches_reference(gen, strategy, similarity, chunk_tokens):
    dim = 8
    docs = random_docs(gen, LENGTHS, dim)
    vectors, offsets = pack(docs, dim)
    queries = [torch.randn(n, dim, generator=gen) for n in (4, 1, 3)]
    Q, q_mask = pad(queries, dim)
    out = maxsim_packed(
        Q, vectors, offsets, q_mask=q_mask, similarity=similarity, chunk_tokens=chunk_tokens, strategy=strategy
    )
    assert out.shape == (3, len(LENGTHS)) and out.dtype == torch.float32
    close(out, ref_matrix(queries, docs, similarity))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_packed_single_query_float16_numpy_vectors(gen, strategy):
    dim = 16
    docs = [d.half() for d in random_docs(gen, LENGTHS, dim)]
    vectors, offsets = pack(docs, dim)
    q = torch.randn(5, dim, generator=gen)
    expected = ref_matrix([q], [d.float() for d in docs], "cosine")[0]
    read_only = vectors.float().numpy().copy()
    read_only.flags.writeable = False  # like a float32 memory map
    for vecs, offs in ((vectors, offsets), (vectors.numpy(), offsets.numpy()), (read_only, offsets)):
        out = maxsim_packed(q, vecs, offs, chunk_tokens=6, strategy=strategy)
        assert out.shape == (len(LENGTHS),)
        close(out, expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_packed_single_document_longer_than_chunks(gen, strategy):
    dim = 4
    docs = random_docs(gen, [23], dim)
    vectors, offsets = pack(docs, dim)
    Q = torch.randn(2, 3, dim, generator=gen)
    for similarity in ("cosine", "l2"):
        out = maxsim_packed(Q, vectors, offsets, similarity=similarity, chunk_tokens=4, strategy=strategy)
        close(out, ref_matrix(list(Q), docs, similarity))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_packed_empty_documents_and_empty_query_mask(gen, strategy):
    dim = 4
    docs = random_docs(gen, [0, 3, 0, 0, 2, 0], dim)
    vectors, offsets = pack(docs, dim)
    queries = [torch.randn(2, dim, generator=gen), torch.zeros(0, dim)]
    Q, q_mask = pad(queries, dim)
    out = maxsim_packed(Q, vectors, offsets, q_mask=q_mask, chunk_tokens=2, strategy=strategy)
    expected = ref_matrix(queries, docs, "cosine")
    close(out, expected)
    assert out[0, 0] == float("-inf") and torch.isfinite(out[0, 1])
    assert torch.all(out[1] == 0)


def test_packed_agrees_with_padded_on_larger_random_data(gen):
    dim = 32
    lengths = torch.randint(1, 40, (60,), generator=gen).tolist()
    docs = [torch.nn.functional.normalize(d, dim=-1) for d in random_docs(gen, lengths, dim)]
    vectors, offsets = pack(docs, dim)
    Q = torch.nn.functional.normalize(torch.randn(4, 8, dim, generator=gen), dim=-1)
    D, d_mask = pad(docs, dim)
    expected = maxsim_padded(Q, D, d_mask=d_mask)
    for strategy in SEGMENT_MAX:
        close(maxsim_packed(Q, vectors, offsets, chunk_tokens=37, strategy=strategy), expected.double())


def test_packed_rejects_bad_input(gen):
    vectors, offsets = pack(random_docs(gen, [2, 3], 4), 4)
    q = torch.randn(2, 4)
    with pytest.raises(InputError, match="vectors must be"):
        maxsim_packed(torch.randn(2, 5), vectors, offsets)
    with pytest.raises(InputError, match="offsets"):
        maxsim_packed(q, vectors, torch.tensor([0, 3, 4]))
    with pytest.raises(InputError, match="strategy"):
        maxsim_packed(q, vectors, offsets, strategy="fastest")
    with pytest.raises(InputError, match="similarity"):
        maxsim_packed(q, vectors, offsets, similarity="ip")


# --- top-k ---------------------------------------------------------------------------------------------


def ref_topk(values: list[float], k: int) -> list[int]:
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def test_topk_breaks_ties_by_lower_index():
    scores = [1.0, 3.0, 2.0, 3.0, 3.0, 2.0, float("-inf"), 3.0]
    for k in range(0, 10):
        indices, values = topk(torch.tensor(scores), k)
        assert indices.tolist() == ref_topk(scores, k)
        assert values.tolist() == [scores[i] for i in ref_topk(scores, k)]
    indices, values = topk(np.array(scores, dtype=np.float32), 3)
    assert isinstance(indices, np.ndarray) and indices.tolist() == [1, 3, 4]
    assert indices.dtype == np.int64


def test_topk_rows_random_with_many_ties(gen):
    scores = torch.randint(0, 5, (6, 50), generator=gen).float()
    for k in (1, 7, 50, 80):
        indices, values = topk_rows(scores, k)
        assert indices.shape == (6, min(k, 50))
        for row in range(6):
            assert indices[row].tolist() == ref_topk(scores[row].tolist(), k)
            assert torch.equal(values[row], scores[row][indices[row]])


def test_topk_rejects_nan_and_bad_k():
    with pytest.raises(InputError, match="NaN"):
        topk(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(InputError, match="k must be"):
        topk(torch.tensor([1.0]), -1)
    with pytest.raises(InputError, match=r"\(B, N\)"):
        topk_rows(torch.tensor([1.0]), 1)
