from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import build_bert

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def private_user_cache(tmp_path_factory):
    """latelex's user cache (PLAID's measured centroid-score paths, ``cpu-paths.json``) in a temporary folder for
    the session, never the user's own."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LATELEX_CACHE", str(tmp_path_factory.mktemp("latelex-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a tiny random BertModel with its tokenizer."""
    return build_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    """Folder of a tiny random BertForMaskedLM with its tokenizer."""
    return build_bert(tmp_path_factory.mktemp("tiny-mlm"), masked_lm=True)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: data tests need the shared models and datasets beside the repo")
    return path


@pytest.fixture(scope="session")
def scifact_minilm_cache(tmp_path_factory) -> Path:
    """A folder holding ``scifact-minilm-colbert``: SciFact indexed through the CLI with all-MiniLM-L6-v2 as a plain
    encoder (query max 64, doc max 256 tokens), built once per session (about 5 minutes on 2 cores) and shared by
    the data tests that need it (test_scifact, test_hybrid_scifact reuses it as bench/hybrid_scifact.py's cache)."""
    from latelex.cli import main

    scifact = shared_path("datasets", "scifact")
    model = shared_path("models", "all-MiniLM-L6-v2")
    cache = tmp_path_factory.mktemp("scifact-minilm")
    assert main(["-q", "index", str(cache / "scifact-minilm-colbert"), "--model", str(model), "--collection",
                 str(scifact), "--query-maxlen", "64", "--doc-maxlen", "256"]) == 0
    return cache


@pytest.fixture(scope="session")
def scifact_splade_sparse(tmp_path_factory) -> Path:
    """SciFact indexed through the CLI with splade-tiny (query max 64, doc max 256 tokens), kind sparse (the exact
    product), built once per session (about 3 minutes on 2 cores) and shared: test_scifact searches it through the
    CLI, test_inverted_scifact builds its inverted index from the document vectors it holds."""
    from latelex.cli import main

    scifact = shared_path("datasets", "scifact")
    model = shared_path("models", "splade-tiny")
    path = tmp_path_factory.mktemp("scifact-splade") / "scifact-splade-sparse"
    assert main(["-q", "index", str(path), "--model", str(model), "--collection", str(scifact), "--query-maxlen", "64",
                 "--doc-maxlen", "256", "--family", "splade", "--kind", "sparse"]) == 0
    return path


@pytest.fixture(scope="session")
def scifact_builtin():
    """(encoder, corpus documents, test queries, test qrels): SciFact with the built-in model behind a
    :class:`CachingEncoder`, so the corpus is encoded once per session (about 4 minutes on 2 cores)."""
    from latelex import ColBERT
    from latelex.data.auto import read_collection_documents
    from latelex.data.beir import BeirDataset
    from latelex.encoders.caching import CachingEncoder
    from latelex.models import DEFAULT_COLBERT_MODEL

    scifact = shared_path("datasets", "scifact")
    data = BeirDataset(scifact, split="test")
    encoder = CachingEncoder(ColBERT.from_pretrained(DEFAULT_COLBERT_MODEL, device="cpu"))
    return encoder, list(read_collection_documents(scifact)), dict(data.queries()), data.qrels()


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster for the session: a head started by ``ray.init`` with 4 logical CPUs (on 2 cores:
    enough slots for two encoder workers or a few shard actors), no dashboard; shut down at the end. Yields the
    ``ray`` module. Skips when Ray is not installed."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="latelex-tests",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """Folder of a tiny random BertForSequenceClassification (one label) with the tiny tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tiny_models import build_tokenizer

    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = build_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): tiny
    models train fastest on one thread, and on a busy 2-core machine two threads mostly spin."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def exports(monkeypatch):
    """Counts calls of the ONNX exporter (each is one graph exported): the paths it wrote."""
    from latelex.encoders import onnx_backend

    calls = []
    real = onnx_backend.export_onnx

    def counting(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_backend, "export_onnx", counting)
    return calls
