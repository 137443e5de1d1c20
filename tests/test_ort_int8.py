"""The onnx backend's int8 weight type, chosen by measurement (:mod:`latelex.encoders.ort_int8`): the probe graph is
what it says, the choice follows the kernels' exactness, uint8 weights are converted at load from the one cached graph
and match torch, and on an emulated AVX2-only CPU (QEMU) onnxruntime's real AVX2 kernels saturate (unless the weights
are converted) and torch's int8 product does not."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx backend needs onnx: pip install 'latelex[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime: pip install 'latelex[onnx]'")

from latelex import ColBERT, Splade  # noqa: E402
from latelex.encoders import onnx_backend, ort_int8  # noqa: E402
from latelex.errors import ConfigError  # noqa: E402
from latelex.index.plaid.cpu_paths import ISA_CAPS  # noqa: E402
from emulated_cpu import needs_qemu, run_on_haswell  # noqa: E402
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
    assert onnx_backend.int8_weights() == choice.weights


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


def precision_mode(graph) -> str:
    """The session option under which onnxruntime converts int8 weights to uint8 at load ('' when unset)."""
    try:
        return graph.session.get_session_options().get_session_config_entry(onnx_backend.X64_QUANT_PRECISION)
    except RuntimeError:  # "does not have configuration with key"
        return ""


def test_uint8_weights_are_converted_at_load_from_the_one_cached_graph(tmp_path, monkeypatch):
    bert = build_bert(tmp_path / "bert")
    reference = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48)
    encoders, outputs = {}, {}
    for weights in ("uint8", "int8"):
        monkeypatch.setenv(ort_int8.ENV_VAR, weights)
        encoder = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")
        encoders[weights] = encoder
        assert precision_mode(encoder._graph) == ("1" if weights == "uint8" else "")
        assert encoder.spec()["int8_weights"] == weights
        outputs[weights] = [encoder.encode_queries(TEXTS), encoder.encode_documents(TEXTS)]
        for got, want in zip(outputs[weights], (reference.encode_queries(TEXTS), reference.encode_documents(TEXTS))):
            result = onnx_backend.compare(want, got, "int8")
            assert result.passed, result.describe()
    # one cached graph serves both: the second load opened the first one's entry
    assert encoders["uint8"]._graph.path == encoders["int8"]._graph.path
    assert encoders["int8"]._graph.path.name == "latelex-colbert-seed1-int8.onnx"
    if ort_int8.kernel_exact("int8"):  # both exact here: the conversion computes the same products
        for a, b in zip(outputs["uint8"], outputs["int8"]):
            assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
    # an fp32 graph is never opened under the option
    monkeypatch.setenv(ort_int8.ENV_VAR, "uint8")
    assert precision_mode(ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx")._graph) == ""


def test_splade_int8_runs_with_converted_weights(tmp_path, monkeypatch):
    mlm = build_bert(tmp_path / "mlm", masked_lm=True)
    reference = Splade.from_pretrained(mlm, doc_maxlen=48)
    monkeypatch.setenv(ort_int8.ENV_VAR, "uint8")
    encoder = Splade.from_pretrained(mlm, doc_maxlen=48, backend="onnx", quantize="int8")
    assert precision_mode(encoder._graphs["document"]) == "1"
    vocab = reference.vocab_size

    def dense(batch):
        out = np.zeros((len(batch), vocab))
        for row, vector in enumerate(batch):
            out[row, np.asarray(vector.ids)] = np.asarray(vector.weights)
        return [torch.from_numpy(out)]

    want, got = dense(reference.encode_documents(TEXTS)), dense(encoder.encode_documents(TEXTS))
    result = onnx_backend.compare(want, got, "int8")
    assert result.passed, result.describe()


QEMU_PROBE = """
import json, sys
import numpy as np, onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto
from latelex.encoders import onnx_backend, ort_int8
from latelex.index.plaid import cpu_paths
import torch
# a graph with constant int8 weights, as quantised graphs hold them: exact with the weights converted at load?
rng = np.random.default_rng(0)
w = rng.integers(-127, 128, (64, 16)).astype(np.int8)
w[:, ::2] = 127
a = np.where(rng.random((8, 64)) < 0.5, 255, rng.integers(0, 256, (8, 64))).astype(np.uint8)
graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, ["m", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", 16])],
                          [numpy_helper.from_array(w, "w")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7).SerializeToString()
exact = {}
for converted in (False, True):
    options = ort.SessionOptions()
    if converted:
        options.add_session_config_entry(onnx_backend.X64_QUANT_PRECISION, "1")
    y = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    exact[str(converted)] = bool(np.array_equal(y.astype(np.int64), a.astype(np.int64) @ w.astype(np.int64)))
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "u8s8": ort_int8.kernel_exact("int8"),
                  "u8u8": ort_int8.kernel_exact("uint8"), "weights": ort_int8.weights().weights,
                  "constant_weights_exact": exact, "plaid_levels": cpu_paths.int8_levels(128),
                  "plaid_u8s8_problem": cpu_paths.u8s8_problem(128)}))
"""


@needs_qemu
def test_real_avx2_kernels_under_an_emulated_avx2_cpu(monkeypatch):
    # QEMU reports a Haswell CPU (AVX2, FMA, no AVX-512, no VNNI) to the process: onnxruntime, oneDNN and ATen pick
    # their kernels from that, as on an AVX2-only machine; no instruction-set cap is involved.
    monkeypatch.delenv(ort_int8.ENV_VAR, raising=False)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "LATELEX_PLAID_CENTROIDS"):
        monkeypatch.delenv(name, raising=False)
    found = run_on_haswell(QEMU_PROBE, timeout=600)
    assert found["capability"] == "AVX2"
    assert not found["u8s8"] and found["u8u8"]  # onnxruntime's U8S8 kernels saturate there; U8U8 is exact
    assert found["weights"] == "uint8"
    # an int8 graph's constant weights saturate as they are, and are exact once the session converts them
    assert found["constant_weights_exact"] == {"False": False, "True": True}
    # torch._int_mm is exact over the full range there: torch reaches oneDNN's int8 kernels only on CPUs with VNNI,
    # so their saturation shows only when ONEDNN_MAX_CPU_ISA caps such a CPU (test_cpu_paths' AVX2 test)
    assert found["plaid_levels"] == 127
    # PLAID's u8s8 product (oneDNN's matmul, whose AVX2 kernel these CPUs run) is exact there
    assert found["plaid_u8s8_problem"] == ""


def test_a_bad_override_keeps_the_cached_graph(tmp_path, monkeypatch):
    bert = build_bert(tmp_path / "bert")
    monkeypatch.delenv(ort_int8.ENV_VAR, raising=False)
    graph = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")._graph.path
    monkeypatch.setenv(ort_int8.ENV_VAR, "int4")
    with pytest.raises(ConfigError, match=ort_int8.ENV_VAR):
        ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")
    assert graph.exists()  # a typo is not an unreadable entry: nothing was discarded or exported again
    monkeypatch.delenv(ort_int8.ENV_VAR)
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda *a, **k: pytest.fail("re-exported a valid entry"))
    again = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48, backend="onnx", quantize="int8")
    assert again._graph.path == graph


EMULATED_INT8_ENCODE = """
import json, sys
from latelex import ColBERT
texts = json.loads(sys.argv[2])
encoder = ColBERT.from_pretrained(sys.argv[1], backend="onnx", quantize="int8")
print(json.dumps({"weights": encoder.spec()["int8_weights"], "graph": str(encoder._graph.path),
                  "queries": [v.tolist() for v in encoder.encode_queries(texts)],
                  "documents": [v.tolist() for v in encoder.encode_documents(texts)]}))
"""


@needs_qemu
def test_an_avx2_only_cpu_encodes_with_the_cached_int8_graph_as_torch_does(tmp_path, monkeypatch):
    # The whole int8 encoder on an emulated AVX2-only CPU: the graph cached here is opened there, the weights are
    # converted to uint8 by the choice made there (its U8S8 kernels saturate), and the vectors pass the same check
    # against torch as here; with exact integer products on both CPUs they are the same as this CPU's.
    monkeypatch.delenv(ort_int8.ENV_VAR, raising=False)
    bert = build_bert(tmp_path / "bert")
    model = ColBERT.from_backbone(bert, dim=16, seed=1, doc_maxlen=48).save(tmp_path / "model")
    here = ColBERT.from_pretrained(model, backend="onnx", quantize="int8")
    written = here._graph.path.stat().st_mtime_ns
    env = {k: v for k, v in os.environ.items() if k not in ISA_CAPS}  # no cap: the emulated CPU's own kernels
    found = run_on_haswell(EMULATED_INT8_ENCODE, [str(model), json.dumps(TEXTS)], env)
    assert found["weights"] == "uint8" and found["graph"] == str(here._graph.path)
    assert here._graph.path.stat().st_mtime_ns == written  # opened there as cached here, not exported again
    reference = ColBERT.from_pretrained(model)
    for kind, want in (("queries", reference.encode_queries(TEXTS)), ("documents", reference.encode_documents(TEXTS))):
        got = [torch.tensor(v) for v in found[kind]]
        result = onnx_backend.compare(want, got, "int8")
        assert result.passed, result.describe()
        if ort_int8.kernel_exact("int8"):
            mine = getattr(here, f"encode_{kind}")(TEXTS)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, mine))
