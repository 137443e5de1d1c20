"""The openvino backend: the exported graph run by OpenVINO Runtime agrees with torch (within its cosine bound; it
computes in bfloat16 where the CPU has it), its cache entries are kept apart from onnxruntime's and reused, it
opens fast from a recorded graph, indexes built on another backend are searched with it, and the CLI reaches it
(tiny random models)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the openvino backend exports with onnx: pip install 'latelex[openvino]'")
pytest.importorskip("openvino", reason="the openvino backend needs openvino: pip install 'latelex[openvino]'")

from latelex import ColBERT, Retriever, Splade  # noqa: E402
from latelex.cli import main  # noqa: E402
from latelex.encoders import colbert as colbert_module  # noqa: E402
from latelex.encoders import onnx_backend  # noqa: E402
from latelex.encoders.rust_tokenizer import RustTokenizer  # noqa: E402
from latelex.errors import ConfigError  # noqa: E402
from latelex.types import Document  # noqa: E402
from emulated_cpu import needs_qemu, run_on_haswell  # noqa: E402
from tiny_models import MIXED_TEXTS as TEXTS  # noqa: E402
from tiny_models import WORDS, build_bert  # noqa: E402
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than.*truncated:UserWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = build_bert(tmp_path_factory.mktemp("ov-bert") / "bert")
    return ColBERT.from_backbone(base, dim=16, seed=3, doc_maxlen=48).save(tmp_path_factory.mktemp("ov") / "model")


def mean_cosine(reference, candidate) -> float:
    ref = torch.cat([r.reshape(-1, r.shape[-1]) for r in reference]).double()
    got = torch.cat([c.reshape(-1, c.shape[-1]) for c in candidate]).double()
    return float(torch.nn.functional.cosine_similarity(ref, got, dim=1).mean())


def dense(batch) -> torch.Tensor:
    """A SparseBatch as a dense (N, vocab) float64 tensor."""
    return torch.from_numpy(batch.to_scipy().toarray()).double()


def test_colbert_on_openvino_matches_torch_and_is_cached_apart(model_dir, exports, monkeypatch):
    reference = ColBERT.from_pretrained(model_dir)
    onnx = ColBERT.from_pretrained(model_dir, backend="onnx")
    encoder = ColBERT.from_pretrained(model_dir, backend="openvino")
    assert encoder.backend == "openvino" and encoder.spec()["backend"] == "openvino"
    assert isinstance(encoder._graph, onnx_backend.OpenVinoGraph) and encoder._graph.precision in ("bf16", "f32")
    assert encoder._graph.path.name == "latelex-colbert-fp32-openvino.onnx" != onnx._graph.path.name
    assert encoder._graph.verification["metric"] == "mean_cosine"
    assert encoder._graph.verification["value"] >= onnx_backend.OPENVINO_MIN_MEAN_COSINE
    assert len(exports) == 2  # one graph per engine
    for encode in ("encode_queries", "encode_documents"):
        want, got = getattr(reference, encode)(TEXTS, batch_size=2), getattr(encoder, encode)(TEXTS, batch_size=2)
        assert [w.shape for w in want] == [g.shape for g in got]
        assert mean_cosine(want, got) >= onnx_backend.OPENVINO_MIN_MEAN_COSINE
    # reused: no export again, and from the recorded sources without the torch model
    monkeypatch.setattr(colbert_module, "load_transformer", lambda *a, **k: pytest.fail("the torch model was loaded"))
    again = ColBERT.from_pretrained(model_dir, backend="openvino")
    assert len(exports) == 2 and isinstance(again.tokenizer, RustTokenizer)
    assert all(torch.equal(a, b) for a, b in zip(again.encode_documents(TEXTS), encoder.encode_documents(TEXTS)))


def test_one_graph_serves_several_threads(model_dir):
    from concurrent.futures import ThreadPoolExecutor

    encoder = ColBERT.from_pretrained(model_dir, backend="openvino")
    alone = [encoder.encode_queries([t])[0] for t in TEXTS]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda t: encoder.encode_queries([t])[0], TEXTS * 4))
    assert all(torch.equal(a, b) for a, b in zip(alone * 4, together))


def test_splade_on_openvino_matches_torch(tmp_path, exports):
    mlm = build_bert(tmp_path / "mlm", masked_lm=True)
    reference = Splade.from_pretrained(mlm, doc_maxlen=48)
    encoder = Splade.from_pretrained(mlm, doc_maxlen=48, backend="openvino")
    assert isinstance(encoder._graphs["document"], onnx_backend.OpenVinoGraph)
    for encode in ("encode_queries", "encode_documents"):
        want, got = dense(getattr(reference, encode)(TEXTS)), dense(getattr(encoder, encode)(TEXTS))
        cosine = torch.nn.functional.cosine_similarity(want, got, dim=1)
        assert float(cosine.mean()) >= onnx_backend.OPENVINO_MIN_MEAN_COSINE
    Splade.from_pretrained(mlm, doc_maxlen=48, backend="openvino")
    assert len(exports) == 1


def test_an_index_built_on_onnx_is_searched_on_openvino(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    docs = [Document(f"d{i}", " ".join(rng.choice(WORDS, 12))) for i in range(40)]
    queries = ["cancer risk study", "protein gene cells", "apple banana fruit"]
    built = Retriever.build(tmp_path / "i", ColBERT.from_pretrained(model_dir, backend="onnx"), docs, kind="flat")
    want = [[h.doc_id for h in hits] for hits in built.search(queries, k=3)]
    reopened = Retriever.open(tmp_path / "i", encoder=ColBERT.from_pretrained(model_dir, backend="openvino"))
    got = [[h.doc_id for h in hits] for hits in reopened.search(queries, k=3)]
    assert sum(len(set(a) & set(b)) for a, b in zip(got, want)) >= 8  # bfloat16 may swap a near tie
    Retriever.build(tmp_path / "o", reopened.encoder, docs, kind="flat")
    assert Retriever.inspect(tmp_path / "o")["encoder"]["backend"] == "openvino"
    assert Retriever.open(tmp_path / "o").encoder.backend == "openvino"


def test_settings_and_a_missing_runtime_are_one_line_errors(model_dir, monkeypatch):
    with pytest.raises(ConfigError, match="needs backend='onnx' or 'openvino'"):
        ColBERT.from_pretrained(model_dir, backend="torch", quantize="int8")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        ColBERT.from_pretrained(model_dir, backend="openvino", device="cuda")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'latelex\[openvino\]'") as info:
        ColBERT.from_pretrained(model_dir, backend="openvino")
    assert "\n" not in str(info.value)


def test_cli_backend_openvino(model_dir, tmp_path, capsys):
    collection = tmp_path / "c.tsv"
    collection.write_text("\n".join(f"d{i}\t{t}" for i, t in enumerate(TEXTS)) + "\n")
    assert main(["-q", "index", str(tmp_path / "idx"), "--model", str(model_dir), "--kind", "flat", "--collection",
                 str(collection), "--backend", "openvino"]) == 0
    assert Retriever.inspect(tmp_path / "idx")["encoder"]["backend"] == "openvino"
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--query", "cancer risk", "-k", "2"]) == 0
    assert "d1" in capsys.readouterr().out
    assert main(["-q", "index", str(tmp_path / "q"), "--model", str(model_dir), "--kind", "flat", "--collection",
                 str(collection), "--backend", "openvino", "--quantize", "int8"]) == 0
    assert Retriever.inspect(tmp_path / "q")["encoder"]["quantize"] == "int8"
    with pytest.raises(SystemExit) as exited:  # a usage error, as argparse reports one
        main(["index", str(tmp_path / "x"), "--model", str(model_dir), "--collection", str(collection),
              "--backend", "torch", "--quantize", "int8"])
    assert exited.value.code == 2 and "--quantize int8 needs --backend onnx or --backend openvino" in \
        capsys.readouterr().err


def test_another_openvino_version_reopens_through_the_full_load(model_dir, monkeypatch):
    ColBERT.from_pretrained(model_dir, backend="openvino")  # cached, with its sources recorded
    loaded = []
    real = colbert_module.load_transformer
    monkeypatch.setattr(colbert_module, "load_transformer", lambda *a, **k: loaded.append(1) or real(*a, **k))
    ColBERT.from_pretrained(model_dir, backend="openvino")
    assert loaded == []  # the fast open
    monkeypatch.setattr(onnx_backend, "_engine_parts", lambda engine: {"engine": "openvino", "openvino": "0.0"}
                        if engine == "openvino" else {})
    encoder = ColBERT.from_pretrained(model_dir, backend="openvino")
    assert loaded == [1]  # checked again on "this" OpenVINO
    assert encoder._graph.verification["value"] >= onnx_backend.OPENVINO_MIN_MEAN_COSINE


EMULATED_ENCODE = """
import json, sys
from latelex import ColBERT
from tiny_models import MIXED_TEXTS
encoder = ColBERT.from_pretrained(sys.argv[1], backend="openvino")
vectors = encoder.encode_documents(MIXED_TEXTS, batch_size=2)
print(json.dumps({"precision": encoder._graph.precision, "graph": str(encoder._graph.path),
                  "vectors": [v.tolist() for v in vectors]}))
"""


@needs_qemu
def test_a_cpu_without_bf16_runs_the_graph_in_float32(model_dir, tmp_path):
    # The bfloat16 choice is a capability check (OpenVINO's OPTIMIZATION_CAPABILITIES): under `qemu-x86_64 -cpu
    # Haswell` OpenVINO sees a CPU without AVX-512 BF16 or AMX, so the same cached graph must run in float32 there and
    # match torch as float32 does.
    graph = ColBERT.from_pretrained(model_dir, backend="openvino")._graph.path  # exported here, opened there
    written = graph.stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    found = run_on_haswell(EMULATED_ENCODE, [str(model_dir)], env)
    assert found["precision"] == "f32" and found["graph"] == str(graph) and graph.stat().st_mtime_ns == written
    reference = ColBERT.from_pretrained(model_dir).encode_documents(TEXTS, batch_size=2)
    got = [torch.tensor(v) for v in found["vectors"]]
    assert [g.shape for g in got] == [r.shape for r in reference]
    assert mean_cosine(reference, got) > 0.999999  # float32 throughout (bfloat16 gives about 0.99998 here)
