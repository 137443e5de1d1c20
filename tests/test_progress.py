"""Progress reporting: ``show_progress=False`` draws nothing, and ``on_batch`` reports every encoded batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latelex.encoders.batching import batch_progress, progress
from latelex.encoders.colbert import ColBERT
from latelex.encoders.splade import Splade
from latelex.index.plaid.config import PlaidConfig
from latelex.index.plaid.index import PlaidIndex

TEXTS = [f"the cell {'protein ' * (i % 7)}study {i}" for i in range(23)]


@pytest.fixture(scope="module")
def colbert(tiny_bert):
    return ColBERT.from_backbone(tiny_bert, dim=8)


@pytest.fixture(scope="module")
def splade(tiny_mlm):
    return Splade.from_pretrained(tiny_mlm)


def _embeddings(n: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = torch.from_numpy(rng.standard_normal((3 + i % 5, 16)).astype(np.float32))
        out.append(torch.nn.functional.normalize(m, dim=-1))
    return out


@pytest.mark.parametrize("as_iterable", [False, True])
def test_plaid_build_without_progress_writes_nothing(tmp_path, capfd, as_iterable):
    embeddings = _embeddings(1200)  # above the default threshold for drawing a bar
    ids = [f"d{i}" for i in range(len(embeddings))]
    source = iter(embeddings) if as_iterable else embeddings
    config = PlaidConfig(chunk_size=500)
    PlaidIndex.build(tmp_path / "index", ids, source, config=config, show_progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_plaid_build_draws_one_compression_bar(tmp_path, capfd):
    embeddings = _embeddings(300)
    ids = [f"d{i}" for i in range(len(embeddings))]
    PlaidIndex.build(tmp_path / "index", ids, iter(embeddings), config=PlaidConfig(chunk_size=100), show_progress=True)
    _, err = capfd.readouterr()
    assert "Compressing PLAID index" in err and "/300 " in err and "/600" not in err  # one bar, one count


@pytest.mark.parametrize("which", ["colbert", "splade"])
def test_encode_documents_without_progress_writes_nothing(request, capfd, which):
    model = request.getfixturevalue(which)
    capfd.readouterr()  # whatever building the tiny model printed
    model.encode_documents(TEXTS * 50, batch_size=64, show_progress=False)  # 1150 texts: a bar by default
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("which", ["colbert", "splade"])
def test_on_batch_reports_each_batch(request, capfd, which):
    model = request.getfixturevalue(which)
    capfd.readouterr()  # whatever building the tiny model printed
    seen: list[int] = []
    model.encode_documents(TEXTS, batch_size=5, on_batch=seen.append)
    assert seen == [5, 5, 5, 5, 3]
    _, err = capfd.readouterr()
    assert err == ""  # with a hook the caller draws the bar


def test_one_outer_bar_over_several_calls(colbert, capfd):
    capfd.readouterr()
    with progress(len(TEXTS), "Encoding documents", True) as bar:
        for start in range(0, len(TEXTS), 10):
            colbert.encode_documents(TEXTS[start : start + 10], batch_size=4, on_batch=bar.update)
        assert bar.n == len(TEXTS)
    _, err = capfd.readouterr()
    assert "Encoding documents" in err and f"/{len(TEXTS)} " in err and "/10 " not in err  # only the outer bar


def test_batch_progress_calls_the_hook_and_its_own_bar(capfd):
    seen: list[int] = []
    with batch_progress(7, "Work", True, seen.append) as advance:
        advance(3)
        advance(4)
    assert seen == [3, 4]
    assert "Work" in capfd.readouterr().err


@pytest.mark.parametrize("show", [None, False])
def test_batch_progress_without_a_bar_still_calls_the_hook(capfd, show):
    # Short runs (and show=False) build no bar at all; the hook must still see every batch.
    seen: list[int] = []
    with batch_progress(7, "Work", show, seen.append) as advance:
        advance(3)
        advance(4)
    with batch_progress(2, "Alone", show) as advance:  # no hook: advancing is allowed and does nothing
        advance(2)
    assert seen == [3, 4]
    assert capfd.readouterr().err == ""
