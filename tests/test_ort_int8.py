"""The onnx backend's int8 weight type, chosen by measurement (:mod:`latelex.encoders.ort_int8`): the probe graph is
what it says, the choice follows the kernels' exactness, uint8 weights make entries of their own that match torch,
and on an emulated AVX2-only CPU (QEMU) onnxruntime's real AVX2 kernels saturate and torch's int8 product does not."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx backend needs onnx: pip install 'latelex[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime: pip install 'latelex[onnx]'")

from latelex import ColBERT, Splade  # noqa: E402
from latelex.config import BackendConfig  # noqa: E402
from latelex.encoders import onnx_backend, onnx_cache, ort_int8  # noqa: E402
from latelex.errors import ConfigError  # noqa: E402
from tiny_models import WORDS, build_bert  # noqa: E402

TEXTS = ["cells", "what is the risk of cancer for patients in this study", " ".join(WORDS[:40]), "x"]


def test_the_probe_model_is_two_matmulinteger_products_of_one_uint8_input():
    model = onnx.load_from_string(ort_int8.PROBE_MODEL)
    onnx.checker.check_model(model)
    graph = model.graph
    assert [(n.op_type, list(n.input), list(n.output)) for n in graph.node] == [
        ("MatMulInteger", ["a", "s"], ["as"]), ("MatMulInteger", ["a", "u"], ["au"])]
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    P = onnx.TensorProto
    assert types == {"a": P.UINT8, "s": P.INT8, "u": P.UINT8, "as": P.INT32, "au": P.INT32}


def test_the_choice_follows_the_kernels_exactness(monkeypatch):
    monkeypatch.delenv(ort_int8.ENV_VAR, raising=False)
    assert ort_int8.kernel_exact("uint8")  # uint8 x uint8 is widened to 16 bits before multiplying: never saturates
    choice = ort_int8.weights()
    assert choice.weights == ("int8" if ort_int8.kernel_exact("int8") else "uint8")
    assert choice.reason and "\n" not in choice.reason
    tail = onnx_backend.stem_tail(BackendConfig("onnx", "int8"))
    assert tail == ("int8" if choice.weights == "int8" else "int8-u8u8")
    assert onnx_backend.stem_tail(BackendConfig("onnx")) == "fp32"
    assert onnx_backend.stem_tail(BackendConfig("openvino", "int8")) == "int8-openvino"


def test_a_saturating_kernel_is_detected(monkeypatch):
    # a model of MLAS's U8S8 kernels without VNNI: pairs of uint8 x int8 products summed in 16 bits with saturation
    import numpy as np

    class Saturating:
        def run(self, names, feeds):
            a = feeds["a"].astype(np.int64)
            w = feeds["s" if names == ["as"] else "u"].astype(np.int64)
            if names == ["au"]:
                return [(a @ w).astype(np.int32)]
            products = a[:, :, None] * w[None, :, :]  # (m, k, n)
            pairs = np.clip(products[:, 0::2] + products[:, 1::2], -32768, 32767)
            return [pairs.sum(axis=1).astype(np.int32)]

    monkeypatch.setattr(ort_int8, "_probe_session", Saturating)
    ort_int8.kernel_exact.cache_clear()
    ort_int8._measured.cache_clear()
    try:
        assert not ort_int8.kernel_exact("int8") and ort_int8.kernel_exact("uint8")
        choice = ort_int8.weights()
        assert choice.weights == "uint8" and "saturate" in choice.reason
    finally:
        ort_int8.kernel_exact.cache_clear()
        ort_int8._measured.cache_clear()


def test_the_override_forces_a_type_and_a_bad_value_is_one_line(monkeypatch):
    for value in ("int8", "uint8", " UINT8 "):
        monkeypatch.setenv(ort_int8.ENV_VAR, value)
        assert ort_int8.weights().weights == value.strip().lower()
        assert ort_int8.ENV_VAR in ort_int8.weights().reason
    monkeypatch.setenv(ort_int8.ENV_VAR, "int4")
    with pytest.raises(ConfigError, match=ort_int8.ENV_VAR):
        ort_int8.weights()


def weight_types(path) -> set[int]:
    """The element types of the quantised weights the integer MatMuls of ``path`` read."""
    graph = onnx.load(str(path)).graph
    initializers = {t.name: t.data_type for t in graph.initializer}
    return {initializers[n.input[1]] for n in graph.node
            if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") and n.input[1] in initializers}


def test_uint8_weights_are_an_entry_of_their_own_that_matches_torch(tmp_path, monkeypatch):
    bert = build_bert(tmp_path / "bert")
    reference = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48)
    graphs = {}
    for weights in ("uint8", "int8"):
        monkeypatch.setenv(ort_int8.ENV_VAR, weights)
        encoder = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")
        graphs[weights] = encoder._graph.path
        assert weight_types(encoder._graph.path) == {onnx.TensorProto.UINT8 if weights == "uint8" else onnx.TensorProto.INT8}
        for encode in ("encode_queries", "encode_documents"):
            result = onnx_backend.compare(getattr(reference, encode)(TEXTS), getattr(encoder, encode)(TEXTS), "int8")
            assert result.passed, result.describe()
    assert graphs["uint8"].name == "latelex-colbert-seed1-int8-u8u8.onnx"
    assert graphs["int8"].name == "latelex-colbert-seed1-int8.onnx"
    folder = graphs["int8"].parent
    assert onnx_cache.read_sidecar(folder, "latelex-colbert-seed1-int8-u8u8")["key_parts"]["int8_weights"] == "uint8"
    assert "int8_weights" not in onnx_cache.read_sidecar(folder, "latelex-colbert-seed1-int8")["key_parts"]
    # both entries stay valid side by side: switching back opens the cached graph without exporting
    monkeypatch.setenv(ort_int8.ENV_VAR, "uint8")
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda *a, **k: pytest.fail("re-exported a valid entry"))
    again = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")
    assert again._graph.path == graphs["uint8"]


def test_splade_with_uint8_weights_matches_torch(tmp_path, monkeypatch):
    mlm = build_bert(tmp_path / "mlm", masked_lm=True)
    reference = Splade.from_pretrained(mlm, doc_maxlen=48)
    monkeypatch.setenv(ort_int8.ENV_VAR, "uint8")
    encoder = Splade.from_pretrained(mlm, doc_maxlen=48, backend="onnx", quantize="int8")
    graph = encoder._graphs["document"]
    assert graph.path.name == "latelex-splade-document-max-relu-int8-u8u8.onnx"
    assert weight_types(graph.path) == {onnx.TensorProto.UINT8}
    vocab = reference.vocab_size

    def dense(batch):
        out = np.zeros((len(batch), vocab))
        for row, vector in enumerate(batch):
            out[row, np.asarray(vector.ids)] = np.asarray(vector.weights)
        return [torch.from_numpy(out)]

    result = onnx_backend.compare(dense(reference.encode_documents(TEXTS)), dense(encoder.encode_documents(TEXTS)), "int8")
    assert result.passed, result.describe()


QEMU_PROBE = """
import json
from latelex.encoders import ort_int8
from latelex.index.plaid import cpu_paths
import torch
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "u8s8": ort_int8.kernel_exact("int8"),
                  "u8u8": ort_int8.kernel_exact("uint8"), "weights": ort_int8.weights().weights,
                  "plaid_levels": cpu_paths.int8_levels(128)}))
"""


@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("qemu-x86_64"),
                    reason="needs an x86-64 machine and QEMU's user-mode emulator (apt-get install qemu-user)")
def test_real_avx2_kernels_under_an_emulated_avx2_cpu(monkeypatch):
    # QEMU reports a Haswell CPU (AVX2, FMA, no AVX-512, no VNNI) to the process: onnxruntime, oneDNN and ATen pick
    # their kernels from that, as on an AVX2-only machine; no instruction-set cap is involved.
    monkeypatch.delenv(ort_int8.ENV_VAR, raising=False)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "LATELEX_PLAID_CENTROIDS"):
        monkeypatch.delenv(name, raising=False)
    out = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", QEMU_PROBE], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["capability"] == "AVX2"
    assert not found["u8s8"] and found["u8u8"]  # onnxruntime's U8S8 kernels saturate there; U8U8 is exact
    assert found["weights"] == "uint8"
    # torch._int_mm is exact over the full range there: torch reaches oneDNN's int8 kernels only on CPUs with VNNI,
    # so their saturation shows only when ONEDNN_MAX_CPU_ISA caps such a CPU (test_cpu_paths' AVX2 test)
    assert found["plaid_levels"] == 127
