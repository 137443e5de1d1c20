"""Which weights onnxruntime's kernels take for the onnx backend's int8 graphs here: int8 or uint8, by measurement.

onnxruntime's dynamic quantisation computes ``uint8 activations x int8 weights`` (U8S8). On x86 CPUs without VNNI
(AVX2-only CPUs, and AVX-512 without VNNI) its MLAS kernels add pairs of 8-bit products in 16 bits with saturation
(``vpmaddubsw``), so products of large activations and weights come out wrong, as onnxruntime's quantisation guide
says. Under QEMU emulating an AVX2-only CPU (``qemu-x86_64 -cpu Haswell``), MatMulInteger of uint8 by int8 values
gave errors of 3,576,907 on products up to 9,681,337; ``uint8 x uint8`` (U8U8, which MLAS widens to 16 bits before
multiplying) was exact there. onnxruntime's session option ``session.x64quantprecision``
(:data:`.onnx_backend.X64_QUANT_PRECISION`) converts a graph's constant int8 weights to uint8 when the session loads
it (``w + 128``, with the zero point: the same products), so that U8U8 kernels run, exactly. It converts them on
CPUs with VNNI too, where it only costs time (one query 5.5 ms against 3.5 ms, identical outputs), so it is set
only where this module finds U8S8 inexact. The cached graph is the same on every CPU.

Mean cosine of the built-in ColBERT model's int8 token vectors to torch's, over the same first 100 SciFact test
queries and 30 abstracts (``scripts/int8_fidelity.py``):

=====================================================  ===========  ===========
int8 graph, CPU                                        queries      documents
=====================================================  ===========  ===========
AVX-512 VNNI EPYC                                      0.99290      0.99205
emulated AVX2, int8 weights (saturating)               0.99171      0.99062
emulated AVX2, weights converted to uint8 at load      0.99268      0.99149
=====================================================  ===========  ===========

The vectors of an int8 graph still differ between the two CPUs beyond these products: with the weights converted,
the emulated AVX2 CPU's agree with the EPYC's at a mean cosine of 0.9915 (queries) and 0.9889 (documents), while
float32 graphs agree to five decimals. The cause was not found (onnxruntime's DynamicQuantizeLinear alone gave
identical outputs on both).

:func:`weights` decides: int8 where onnxruntime's U8S8 product is exact on this CPU (:func:`kernel_exact`, checked
on random and extreme values, for one row and for several: MLAS has matrix-vector kernels of its own), else uint8
where U8U8 is exact, else int8 (nothing better is available, and the reason says so). The environment variable
``LATELEX_ONNX_INT8_WEIGHTS=int8|uint8|auto`` (default auto) forces a choice (int8 where speed matters more than
exactness). The check takes a few milliseconds once per process, after onnxruntime is imported; nothing here runs
on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

ENV_VAR = "LATELEX_ONNX_INT8_WEIGHTS"
CHOICES = ("int8", "uint8", "auto")

#: A serialised ONNX model (IR 7, opset 13) of two MatMulInteger nodes on the same uint8 input ``a`` (m, k): by the
#: int8 matrix ``s`` (k, n) to ``as`` and by the uint8 matrix ``u`` (k, n) to ``au``, both int32 (m, n). Written
#: as bytes so that the check needs onnxruntime only (importing the onnx package takes about a second);
#: ``tests/test_ort_int8.py`` reads it back with onnx and checks that it is this graph.
PROBE_MODEL = bytes.fromhex(
    "080712076c6174656c65783ab2010a190a01610a017312026173220d4d61744d756c496e74656765720a190a01610a017512"
    "026175220d4d61744d756c496e7465676572120570726f62655a150a016112100a0e0802120a0a0312016d0a0312016b5a15"
    "0a017312100a0e0803120a0a0312016b0a0312016e5a150a017512100a0e0802120a0a0312016b0a0312016e62160a026173"
    "12100a0e0806120a0a0312016d0a0312016e62160a02617512100a0e0806120a0a0312016d0a0312016e42040a00100d"
)

#: The inner dimension and output columns of the checked products, and the row counts (1: MLAS's matrix-vector
#: kernels; 8: its matrix kernels).
PROBE_K = 64
PROBE_N = 16
PROBE_ROWS = (1, 8)


@dataclass(frozen=True)
class WeightChoice:
    """The weights onnxruntime's kernels take for int8 graphs here (``"int8"``, or ``"uint8"`` converted at load) and
    why (one line)."""

    weights: str
    reason: str


def override() -> str:
    """``LATELEX_ONNX_INT8_WEIGHTS`` lower-cased (``"auto"`` when unset or empty); ConfigError for another value."""
    from ..config import env_choice

    return env_choice(ENV_VAR, CHOICES)


def weights() -> WeightChoice:
    """The weight type for int8 graphs on onnxruntime here: forced by ``LATELEX_ONNX_INT8_WEIGHTS``, else measured
    (once per process) by :func:`kernel_exact`."""
    forced = override()
    if forced != "auto":
        return WeightChoice(forced, f"forced by {ENV_VAR}={forced}")
    return _measured()


@lru_cache(maxsize=1)
def _measured() -> WeightChoice:
    if kernel_exact("int8"):
        return WeightChoice("int8", "onnxruntime's uint8 x int8 products are exact on this CPU")
    if kernel_exact("uint8"):
        return WeightChoice("uint8", "onnxruntime's uint8 x int8 products saturate on this CPU (int8 kernels "
                                     "without VNNI); uint8 x uint8 products are exact, so int8 graphs' weights are "
                                     "converted to uint8 when they load")
    return WeightChoice("int8", "onnxruntime's uint8 x int8 and uint8 x uint8 products are both inexact on this CPU; "
                                "weights stay int8")


@lru_cache(maxsize=None)
def kernel_exact(weight_type: str) -> bool:
    """Whether onnxruntime's MatMulInteger of uint8 activations by ``weight_type`` (``"int8"`` or ``"uint8"``)
    weights gives exact int32 products on this CPU, compared with int64 products on random values and on the
    extremes (255 by +-127, 127 by +-127 alternating, and for uint8 weights 255 by 255), at one row and at several."""
    import numpy as np

    session = _probe_session()
    rng = np.random.default_rng(0)
    signed = weight_type == "int8"
    low, high = (-127, 127) if signed else (0, 255)
    random_w = rng.integers(low, high + 1, (PROBE_K, PROBE_N))
    extreme_w = np.full((PROBE_K, PROBE_N), high)
    extreme_w[:, 1::2] = low  # columns of the lowest value: large products of both signs
    extreme_w[1::2, 2::4] = low  # and columns where the sign alternates along k
    for w in (random_w, extreme_w):
        for rows in PROBE_ROWS:
            for a in (rng.integers(0, 256, (rows, PROBE_K)), np.full((rows, PROBE_K), 255),
                      np.where(rng.random((rows, PROBE_K)) < 0.5, 255, 127)):
                feeds = {"a": a.astype(np.uint8), "s": np.zeros((PROBE_K, PROBE_N), np.int8),
                         "u": np.zeros((PROBE_K, PROBE_N), np.uint8)}
                feeds["s" if signed else "u"] = w.astype(np.int8 if signed else np.uint8)
                got = session.run(["as" if signed else "au"], feeds)[0]
                if not np.array_equal(got.astype(np.int64), a.astype(np.int64) @ w.astype(np.int64)):
                    return False
    return True


@lru_cache(maxsize=1)
def _probe_session():  # one session for both weight types' checks
    from .onnx_backend import require_onnxruntime

    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(PROBE_MODEL, options, providers=["CPUExecutionProvider"])


__all__ = ["CHOICES", "ENV_VAR", "PROBE_MODEL", "WeightChoice", "kernel_exact", "override", "weights"]
