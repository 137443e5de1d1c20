"""The openvino backend's int8: a statically quantised graph (NNCF, calibrated on fixed texts) that agrees with
torch within int8's cosine bound, holds int8 QuantizeLinear pairs on its products, is cached apart and reused,
prints nothing, sends no telemetry, and says in one line what is missing (tiny random models)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("openvino", reason="the openvino backend needs openvino: pip install 'latelex[openvino]'")
pytest.importorskip("nncf", reason="openvino int8 needs NNCF: pip install 'latelex[openvino]'")
onnx = pytest.importorskip("onnx")

from latelex import ColBERT, Splade  # noqa: E402
from latelex.encoders import onnx_backend, static_int8  # noqa: E402
from latelex.errors import ModelError  # noqa: E402
from tiny_models import MIXED_TEXTS as TEXTS  # noqa: E402
from tiny_models import build_bert  # noqa: E402
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than.*truncated:UserWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = build_bert(tmp_path_factory.mktemp("ov8-bert") / "bert")
    return ColBERT.from_backbone(base, dim=16, seed=5, doc_maxlen=48, query_augmentation=True,
                                 query_maxlen=12).save(tmp_path_factory.mktemp("ov8") / "model")


def cosines(reference, candidate) -> torch.Tensor:
    ref = torch.cat([r.reshape(-1, r.shape[-1]) for r in reference]).double()
    got = torch.cat([c.reshape(-1, c.shape[-1]) for c in candidate]).double()
    return torch.nn.functional.cosine_similarity(ref, got, dim=1)


def test_calibration_texts_are_fixed_prose():
    documents, queries = static_int8.calibration_texts()
    assert (documents, queries) == static_int8.calibration_texts()
    assert len(documents) == static_int8.CALIBRATION_DOCUMENTS and len(queries) == static_int8.CALIBRATION_QUERIES
    words = [len(d.split()) for d in documents]
    assert min(words) >= 120 and max(words) <= 250
    assert all(1 <= len(q.split()) <= 16 for q in queries) and len(set(queries)) == len(queries)
    assert not any(">>>" in t or "\n" in t for t in documents + queries)


def test_calibration_batches_are_padded_as_encoding_pads(model_dir):
    encoder = ColBERT.from_pretrained(model_dir)
    batches = encoder._calibration_batches()
    documents, queries = static_int8.calibration_texts()
    size = static_int8.CALIBRATION_BATCH
    assert len(batches) == -(-len(documents) // size) + -(-len(queries) // size)
    doc_batches = batches[: -(-len(documents) // size)]
    assert all(b["input_ids"].shape[1] <= 48 for b in doc_batches)
    assert doc_batches[0]["input_ids"].shape[1] >= doc_batches[-1]["input_ids"].shape[1]  # longest first
    query_batches = batches[len(doc_batches):]
    assert all(b["input_ids"].shape[1] == 12 for b in query_batches)  # augmented queries: query_maxlen
    assert any((b["input_ids"] == encoder.tokenizer.mask_token_id).any() for b in query_batches)


def test_colbert_int8_on_openvino_matches_torch_is_quantised_and_cached(model_dir, exports, capfd):
    reference = ColBERT.from_pretrained(model_dir)
    capfd.readouterr()
    encoder = ColBERT.from_pretrained(model_dir, backend="openvino", quantize="int8")
    out, err = capfd.readouterr()
    assert out == "" and "nncf" not in err.lower()  # NNCF's tables and progress bars are held back
    graph = encoder._graph
    assert isinstance(graph, onnx_backend.OpenVinoGraph)
    assert graph.path.name == "latelex-colbert-int8-openvino.onnx"
    ops = {node.op_type for node in onnx.load(str(graph.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert graph.verification["passed"] and graph.verification["value"] >= onnx_backend.INT8_MIN_MEAN_COSINE
    assert encoder.spec()["backend"] == "openvino" and encoder.spec()["quantize"] == "int8"
    for encode in ("encode_queries", "encode_documents"):
        want, got = getattr(reference, encode)(TEXTS, batch_size=2), getattr(encoder, encode)(TEXTS, batch_size=2)
        assert [w.shape for w in want] == [g.shape for g in got]
        assert float(cosines(want, got).mean()) >= onnx_backend.INT8_MIN_MEAN_COSINE
    assert len(exports) == 1
    again = ColBERT.from_pretrained(model_dir, backend="openvino", quantize="int8")
    assert len(exports) == 1 and again._graph.path == graph.path
    fp32 = ColBERT.from_pretrained(model_dir, backend="openvino")
    assert fp32._graph.path.name == "latelex-colbert-fp32-openvino.onnx" and len(exports) == 2


def test_splade_int8_on_openvino_matches_torch(tmp_path, exports):
    mlm = build_bert(tmp_path / "mlm", masked_lm=True)
    reference = Splade.from_pretrained(mlm, doc_maxlen=48)
    encoder = Splade.from_pretrained(mlm, doc_maxlen=48, backend="openvino", quantize="int8")
    graph = encoder._graphs["document"]
    assert isinstance(graph, onnx_backend.OpenVinoGraph) and "int8-openvino" in graph.path.name
    for encode in ("encode_queries", "encode_documents"):
        want, got = getattr(reference, encode)(TEXTS), getattr(encoder, encode)(TEXTS)
        dense_want, dense_got = (torch.from_numpy(b.to_scipy().toarray()).double() for b in (want, got))
        cosine = torch.nn.functional.cosine_similarity(dense_want, dense_got, dim=1)
        assert float(cosine.mean()) >= onnx_backend.INT8_MIN_MEAN_COSINE
    assert len(exports) == 1


def test_a_missing_nncf_is_a_one_line_error(tmp_path, monkeypatch, exports):
    base = build_bert(tmp_path / "bert")
    model = ColBERT.from_backbone(base, dim=8, seed=9).save(tmp_path / "model")
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if it were not installed
    with pytest.raises(ModelError, match=r"pip install 'latelex\[openvino\]'") as info:
        ColBERT.from_pretrained(model, backend="openvino", quantize="int8")
    assert "\n" not in str(info.value)
    assert exports == []  # said before the export's work


def test_nncf_is_imported_with_its_telemetry_off():
    """Outside pytest (NNCF turns its telemetry off by itself under pytest), in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("NNCF_CI", "NNCF_DEV")}
    code = ("import os, sys; from latelex.encoders.static_int8 import import_nncf; import_nncf(); "
            "from nncf.telemetry.wrapper import NNCFTelemetryStub, telemetry; "
            "assert 'pytest' not in sys.modules; assert isinstance(telemetry, NNCFTelemetryStub), telemetry; "
            "assert 'NNCF_CI' not in os.environ; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"  # and nothing else: NNCF's import-time log line is held back


def test_another_calibration_or_nncf_version_exports_again(model_dir, exports, monkeypatch):
    ColBERT.from_pretrained(model_dir, backend="openvino", quantize="int8")  # cached (or exported once)
    before = len(exports)
    real = onnx_backend._static_parts
    monkeypatch.setattr(onnx_backend, "_static_parts", lambda q, e: {**real(q, e), "nncf": "0.0"} if real(q, e) else {})
    encoder = ColBERT.from_pretrained(model_dir, backend="openvino", quantize="int8")
    assert len(exports) == before + 1  # the stale entry was rebuilt, not used
    assert encoder._graph.verification["passed"]
    assert real("int8", "openvino")["calibration"] == str(static_int8.CALIBRATION_VERSION)
    assert real("int8", "onnxruntime") == {} and real(None, "openvino") == {}  # other entries' keys are unchanged
