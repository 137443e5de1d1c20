"""A resumed PLAID build trusts what it staged only if the input is the same: other vectors under the same ids
start over from the first chunk that differs (the stale-resume reproduction: 100 of 300 documents kept old vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from latelex.index.plaid import PlaidConfig, PlaidIndex

DIM = 16
CONFIG = PlaidConfig(chunk_size=100, n_centroids=32, seed=0)


def corpus(seed: int, n: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(n):
        m = rng.normal(size=(int(rng.integers(4, 12)), DIM)).astype(np.float32)
        mats.append(m / np.linalg.norm(m, axis=1, keepdims=True))
    return mats


def queries(n: int = 20) -> list[np.ndarray]:
    return corpus(99, n)


def crashing(mats, after: int):
    for i, m in enumerate(mats):
        if i == after:
            raise KeyboardInterrupt("killed")
        yield m


def rankings(index):
    return [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in index.search(queries(), k=10, threads=1)]


@pytest.mark.parametrize("source", ["generator", "sequence"])
@pytest.mark.parametrize("sample_fraction", [None, 0.1])
def test_resume_with_other_vectors_equals_a_clean_build(source, sample_fraction, tmp_path, monkeypatch):
    config = PlaidConfig(chunk_size=100, n_centroids=32, seed=0, sample_fraction=sample_fraction)
    ids = [f"d{i}" for i in range(300)]
    old, new = corpus(1), corpus(1)
    new[100:200] = corpus(2)[100:200]  # the second chunk changed between the crash and the resume
    if source == "generator":
        with pytest.raises(KeyboardInterrupt):  # dies after spilling two chunks
            PlaidIndex.build(tmp_path / "idx", ids, crashing(old, 250), config=config)
        resumed = PlaidIndex.build(tmp_path / "idx", ids, iter(new), config=config)
    else:  # dies while compressing the third chunk: the codec and two chunks are staged
        import latelex.index.plaid.build as build

        real, calls = build.compress_chunk, []

        def dies(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(build, "compress_chunk", dies)
        with pytest.raises(KeyboardInterrupt):
            PlaidIndex.build(tmp_path / "idx", ids, list(old), config=config)
        monkeypatch.undo()
        resumed = PlaidIndex.build(tmp_path / "idx", ids, list(new), config=config)
    clean = PlaidIndex.build(tmp_path / "clean", ids, list(new), config=config)
    assert rankings(resumed) == rankings(clean)
    for doc_id in ("d150", "d250"):
        assert np.allclose(resumed.decompressed(doc_id), clean.decompressed(doc_id))


def test_resume_with_the_same_vectors_reuses_the_staged_work(tmp_path):
    ids = [f"d{i}" for i in range(300)]
    mats = corpus(1)
    with pytest.raises(KeyboardInterrupt):
        PlaidIndex.build(tmp_path / "idx", ids, crashing(mats, 250), config=CONFIG)
    staging = tmp_path / ".idx.plaid-build"
    spilled = {p.name: p.stat().st_mtime_ns for p in staging.glob("raw-*.npy")}
    assert len(spilled) == 4  # two chunks: vectors + lengths
    resumed = PlaidIndex.build(tmp_path / "idx", ids, iter(mats), config=CONFIG)
    clean = PlaidIndex.build(tmp_path / "clean", ids, list(mats), config=CONFIG)
    assert rankings(resumed) == rankings(clean)
    assert not staging.exists()
