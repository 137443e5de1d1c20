"""The ONNX backend: an encoder's forward pass exported to ONNX, optionally quantised to int8, verified against torch,
cached, and run with onnxruntime; and the openvino backend: the same float32 graph run by OpenVINO Runtime on the
CPU (:class:`OpenVinoGraph`), in bfloat16 where the CPU computes it natively (AVX-512 BF16, AMX), verified by mean
cosine (at least :data:`OPENVINO_MIN_MEAN_COSINE`) and cached in entries of its own.

Only the forward pass is exported: for ColBERT the backbone and its projection (token ids to unnormalised token
vectors, (B, L) to (B, L, dim)), for SPLADE the MLM head with its activation and pooling (token ids to pooled
vocabulary weights, (B, L) to (B, V)). Tokenisation, markers, query augmentation, skiplist masks, normalisation
and sparsification stay the encoders' own code, shared by both backends. Batch and sequence axes are dynamic, so a
single query runs at its own length.

:func:`load_graph` exports a graph only when the cache (:mod:`.onnx_cache`) holds no valid one, optimises it with
onnxruntime's full graph optimisation at load time, and checks a new graph before keeping it: on the fixed
:data:`VERIFICATION_QUERIES` and :data:`VERIFICATION_DOCUMENTS` the final outputs of the two backends must agree:

- float32: the largest absolute difference is at most :data:`FP32_MAX_ABS_DIFF` times ``max(1, largest |value|)``
  (on unit token vectors and on SPLADE weights alike);
- int8: the mean cosine similarity of corresponding outputs (each token vector for ColBERT, each text's weight
  vector for SPLADE) is at least :data:`INT8_MIN_MEAN_COSINE`.

int8 means dynamic quantisation of the weights on onnxruntime (:func:`quantize_int8`; run with uint8 weights
converted at load time on CPUs whose uint8 x int8 kernels saturate, :mod:`.ort_int8`), and static quantisation of
weights and activations on OpenVINO (:mod:`.static_int8`: NNCF, calibrated once on fixed texts given by the
encoder as ``GraphRequest.calibration``); both are cached as ONNX files.

A graph that fails is not kept and the load raises a one-line :class:`ModelError`.

A ColBERT model loaded by name or folder also records in the graph's sidecar the files it was read from
(``GraphRequest.sources``, :func:`source_record`); the next load that finds the same files and library versions opens the graph
without loading the torch model or importing transformers (:func:`open_by_sources`, :mod:`.rust_tokenizer`),
which takes a one-off ``latelex search --query`` from about 8 s to about 3 s on two cores.

The optimised graph is not saved: onnxruntime's full optimisation may lay the graph out for this CPU, so the
portable graph is cached and optimised again (in well under a second) by every process that loads it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import ConfigError, ModelError
from ..fsio import file_lock
from . import onnx_cache

logger = logging.getLogger(__name__)

#: ONNX opset of exported graphs.
OPSET = 17
#: Version of the export recipe (wrapping, input names, quantisation settings); part of every cache key.
RECIPE_VERSION = 1
#: float32 graphs: the largest absolute difference from torch allowed, relative to max(1, largest |value|).
FP32_MAX_ABS_DIFF = 1e-4
#: int8 graphs: the least mean cosine similarity to torch's outputs allowed.
INT8_MIN_MEAN_COSINE = 0.98
#: Graphs run by OpenVINO (in bfloat16 where the CPU computes it natively): the least mean cosine allowed.
OPENVINO_MIN_MEAN_COSINE = 0.999
#: How long a process waits for another that is exporting the same graph.
EXPORT_LOCK_TIMEOUT_S = 1800.0

#: Fixed queries of varied length that every newly exported graph is checked on.
VERIFICATION_QUERIES: tuple[str, ...] = (
    "what is late interaction?",
    "cells",
    "does vitamin D lower the risk of cancer in older patients, and at which dose?",
    "Protein folding: 3 models compared (2019-2024)",
)
#: Fixed documents of varied length (the last longer than most models' document limit) for the same check.
VERIFICATION_DOCUMENTS: tuple[str, ...] = (
    "A short document.",
    "Late interaction keeps one small vector per token; a query token is matched with the most similar document "
    "token and the best matches are summed.",
    "Sparse retrieval: a masked-language-model head gives weights over the vocabulary, and most are zero.",
    " ".join(["The study followed 1,204 patients for five years, measuring blood pressure, heart rate and the dose "
              "of each drug; results were compared with a placebo group of similar age and health."] * 12),
    "naïve café résumé — 東京 ünïcödé, symbols #@% and numbers 3.14159",
)


def require_onnxruntime():
    """The onnxruntime module, or a one-line ConfigError saying how to install it."""
    try:
        if importlib.util.find_spec("onnx") is None:  # the exporter needs it (found, not imported: 0.7 s saved)
            raise ImportError("onnx")
        import onnxruntime
    except ImportError:
        raise ConfigError("backend='onnx' needs the onnx and onnxruntime packages; install them with "
                          "pip install 'latelex[onnx]'") from None
    return onnxruntime


def require_openvino():
    """The openvino module (and the onnx exporter found), or a one-line ConfigError saying how to install them."""
    try:
        if importlib.util.find_spec("onnx") is None:
            raise ImportError("onnx")
        import openvino
    except ImportError:
        raise ConfigError("backend='openvino' needs the onnx and openvino packages; install them with "
                          "pip install 'latelex[openvino]'") from None
    return openvino


def require_engine(engine: str):
    """The runtime module of ``engine`` ("onnxruntime" or "openvino"), or a one-line ConfigError."""
    return require_openvino() if engine == "openvino" else require_onnxruntime()


def graph_device(device: str | torch.device | None, engine: str = "onnxruntime") -> torch.device:
    """Where ``engine`` runs a graph: :func:`onnx_device` for onnxruntime; OpenVINO runs on the CPU only."""
    if engine != "openvino":
        return onnx_device(device)
    if device is not None and torch.device(device).type != "cpu":
        raise ConfigError(f"the openvino backend runs on the CPU, not {device}; pass device='cpu' or "
                          f"backend='onnx'")
    return torch.device("cpu")


def onnx_device(device: str | torch.device | None) -> torch.device:
    """Where onnxruntime runs a graph: the CPU unless ``device`` names a CUDA device and this onnxruntime has CUDA."""
    if device is None:
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cpu":
        return device
    providers = require_onnxruntime().get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in providers:
        return device
    raise ConfigError(f"onnxruntime here cannot run on {device} (providers: {', '.join(providers)}); pass "
                      f"device='cpu' or install onnxruntime-gpu")


def runtime_versions() -> dict[str, str]:
    """The versions that shape an exported or quantised graph (part of every cache key)."""
    from importlib import metadata

    from .. import __version__

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:  # the openvino backend runs without it
        ort_version = "none"
    return {"latelex": __version__, "torch": torch.__version__.split("+")[0], "onnx": metadata.version("onnx"),
            "onnxruntime": ort_version, "opset": str(OPSET), "recipe": str(RECIPE_VERSION)}


def stem_tail(runtime: Any) -> str:
    """The end of a cache entry's name for a ``BackendConfig``: the quantisation, and ``-openvino`` for OpenVINO's
    entries (kept apart from onnxruntime's)."""
    return f"{runtime.quantize or 'fp32'}{'-openvino' if runtime.engine == 'openvino' else ''}"


def spec_fields(runtime: Any) -> dict[str, str]:
    """What an encoder spec records of its ``BackendConfig``: :meth:`~latelex.config.BackendConfig.spec_fields`, and
    for an onnxruntime int8 graph the weights its kernels took on the machine that encodes (``int8_weights``,
    ``"int8"`` or ``"uint8"``: :func:`int8_weights`), for ``latelex info``."""
    out = dict(runtime.spec_fields())
    if runtime.quantize and runtime.engine == "onnxruntime":
        out["int8_weights"] = int8_weights()
    return out


def int8_weights() -> str:
    """The weights onnxruntime's kernels take for int8 graphs on this CPU: ``"int8"``, or ``"uint8"`` where its
    uint8 x int8 kernels saturate and the session converts the weights when it loads the graph (:mod:`.ort_int8`)."""
    from .ort_int8 import weights

    return weights().weights


def _engine_parts(engine: str) -> dict[str, str]:
    """What an OpenVINO graph's cache key adds (nothing for onnxruntime, whose keys stay as they were)."""
    if engine != "openvino":
        return {}
    return {"engine": "openvino", "openvino": str(require_openvino().__version__)}


def source_versions(engine: str = "onnxruntime", quantize: str | None = None) -> dict[str, str]:
    """:func:`runtime_versions`, the transformers version (which shapes how a backbone is loaded and exported),
    for OpenVINO its version, and for OpenVINO's int8 the calibration recipe and NNCF's version: what a graph found
    by its sources (:func:`open_by_sources`) must have been exported and checked with. Read from package metadata,
    so that transformers is not imported."""
    from importlib import metadata

    try:
        transformers = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        transformers = "none"
    return {**runtime_versions(), "transformers": transformers, **_engine_parts(engine),
            **_static_parts(quantize, engine)}


# ---------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verification:
    """How a graph's outputs compared with torch's on the verification texts."""

    passed: bool
    metric: str  # "max_abs_diff" (float32) or "mean_cosine" (int8)
    value: float
    bound: float
    outputs: int  # how many vectors were compared

    def describe(self) -> str:
        relation = "<=" if self.metric == "max_abs_diff" else ">="
        return f"{self.metric} {self.value:.3g} (needs {relation} {self.bound:g}) over {self.outputs} vectors"


def compare(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor], quantize: str | None,
            engine: str = "onnxruntime") -> Verification:
    """Compare torch's outputs with a graph's: matrices (rows are vectors) or vectors, pairwise. float32 graphs on
    onnxruntime by the largest difference; int8 graphs, and graphs on OpenVINO (which may compute in bfloat16), by
    the mean cosine."""
    lossy = bool(quantize) or engine == "openvino"
    metric = "mean_cosine" if lossy else "max_abs_diff"
    bound = (INT8_MIN_MEAN_COSINE if quantize else OPENVINO_MIN_MEAN_COSINE) if lossy else FP32_MAX_ABS_DIFF
    if len(reference) != len(candidate) or any(r.shape != c.shape for r, c in zip(reference, candidate)):
        return Verification(False, "shape", math.nan, 0.0, len(reference))
    ref = torch.cat([r.reshape(-1, r.shape[-1]).double() for r in reference]) if reference else torch.zeros(0, 1)
    got = torch.cat([c.reshape(-1, c.shape[-1]).double() for c in candidate]) if candidate else torch.zeros(0, 1)
    if not torch.isfinite(got).all():
        return Verification(False, metric, math.nan, bound, ref.shape[0])
    if not lossy:
        scale = max(1.0, float(ref.abs().max()) if ref.numel() else 1.0)
        value = float((ref - got).abs().max()) / scale if ref.numel() else 0.0
        return Verification(value <= bound, metric, value, bound, ref.shape[0])
    norms = ref.norm(dim=1) * got.norm(dim=1)
    both_zero = (ref.norm(dim=1) == 0) & (got.norm(dim=1) == 0)
    cosine = torch.where(norms > 0, (ref * got).sum(dim=1) / norms.clamp_min(1e-30), both_zero.double())
    value = float(cosine.mean()) if cosine.numel() else 1.0
    return Verification(value >= bound, metric, value, bound, ref.shape[0])


# ---------------------------------------------------------------------- running


class OnnxGraph:
    """An onnxruntime session over one exported graph: named (B, L) int64 inputs in, one float32 tensor out."""

    def __init__(self, session: Any, path: Path, inputs: tuple[str, ...], output: str,
                 verification: dict[str, Any] | None = None) -> None:
        self.session = session
        self.path = path
        self.inputs = inputs
        self.output = output
        self.verification = verification

    def run(self, feeds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The graph's output for ``feeds`` (each (B, L) int64; other keys are ignored), as a CPU float32 tensor."""
        arrays = {name: feeds[name].detach().cpu().numpy() for name in self.inputs}
        return torch.from_numpy(self.session.run([self.output], arrays)[0])

    def __repr__(self) -> str:
        return f"OnnxGraph({str(self.path)!r})"


class OpenVinoGraph:
    """The same exported graph compiled by OpenVINO Runtime for the CPU: named (B, L) int64 inputs in, one float32
    tensor out, as :class:`OnnxGraph`. It computes in bfloat16 where the CPU does so natively (``precision``), else
    in float32. One infer request, so calls from several threads take turns."""

    def __init__(self, compiled: Any, path: Path, inputs: tuple[str, ...], output: str, precision: str,
                 verification: dict[str, Any] | None = None) -> None:
        import threading

        self.path = path
        self.inputs = inputs
        self.output = output
        self.precision = precision
        self.verification = verification
        self._port = next(o for o in compiled.outputs if output in o.get_names())
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The graph's output for ``feeds`` (each (B, L) int64; other keys are ignored), as a CPU float32 tensor."""
        arrays = {name: feeds[name].detach().cpu().numpy() for name in self.inputs}
        with self._lock:
            out = self._request.infer(arrays)[self._port]
            return torch.from_numpy(out.astype("float32", copy=True))  # the request reuses its output buffer

    def __repr__(self) -> str:
        return f"OpenVinoGraph({str(self.path)!r}, precision={self.precision!r})"


#: The onnxruntime session option (``kOrtSessionOptionsAvx2PrecisionMode``) under which the session converts int8
#: weights to uint8 when it loads a graph (``w + 128``, the zero point moved with it: the same products), so that its
#: exact uint8 x uint8 kernels run instead of saturating uint8 x int8 ones. It also converts them on CPUs whose
#: kernels are exact (on an AVX-512 VNNI EPYC one query took 5.5 ms with it against 3.5 ms without, with identical
#: outputs), so it is set only where :mod:`.ort_int8` finds the uint8 x int8 kernels inexact.
X64_QUANT_PRECISION = "session.x64quantprecision"


def converts_weights(quantize: str | None, engine: str) -> bool:
    """Whether sessions of this graph convert its int8 weights to uint8 here (:data:`X64_QUANT_PRECISION`): int8
    graphs on onnxruntime where :mod:`.ort_int8` chose uint8. ConfigError for an invalid override: callers ask
    before they open a cached graph, so that a typo cannot pass for an unreadable cache entry."""
    return bool(quantize) and engine == "onnxruntime" and int8_weights() == "uint8"


def open_graph(path: Path, device: torch.device, inputs: tuple[str, ...], output: str,
               engine: str = "onnxruntime", uint8_weights: bool = False) -> "OnnxGraph | OpenVinoGraph":
    """An onnxruntime session over ``path`` with full graph optimisation and torch's CPU thread count, converting an
    int8 graph's weights to uint8 with ``uint8_weights`` (:func:`converts_weights`); with ``engine="openvino"``, the
    graph compiled by OpenVINO Runtime for the CPU instead (:func:`_open_openvino`)."""
    if engine == "openvino":
        return _open_openvino(path, inputs, output)
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no per-session warnings on stderr
    # Memory patterns plan buffers for one input shape; every batch here has its own, and with them MiniLM's peak
    # memory at batch 32 x 256 tokens was 1,092 MiB, without them 845 MiB, at the same speed.
    options.enable_mem_pattern = False
    if uint8_weights:
        options.add_session_config_entry(X64_QUANT_PRECISION, "1")
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    session = ort.InferenceSession(str(path), options, providers=providers)
    names = tuple(i.name for i in session.get_inputs())
    if set(names) != set(inputs) or output not in {o.name for o in session.get_outputs()}:
        raise ModelError(f"{path} takes {', '.join(names)}, not {', '.join(inputs)}")
    return OnnxGraph(session, path, names, output)


def _open_openvino(path: Path, inputs: tuple[str, ...], output: str) -> OpenVinoGraph:
    """``path`` compiled by OpenVINO for the CPU at torch's thread count, for latency (one batch at a time), in
    bfloat16 where the CPU lists it among its capabilities (AVX-512 BF16, AMX), else float32."""
    ov = require_openvino()
    core = ov.Core()
    precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    config = {"INFERENCE_NUM_THREADS": max(1, torch.get_num_threads()), "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    names = tuple(i.get_any_name() for i in compiled.inputs)
    if set(names) != set(inputs) or not any(output in o.get_names() for o in compiled.outputs):
        raise ModelError(f"{path} takes {', '.join(names)}, not {', '.join(inputs)}")
    return OpenVinoGraph(compiled, path, names, output, precision)


# ---------------------------------------------------------------------- exporting


def export_onnx(module: torch.nn.Module, example: Mapping[str, torch.Tensor], output: str, path: Path) -> None:
    """Export ``module`` (called with ``example``'s tensors as positional arguments, in order) to ``path``, with
    dynamic batch and sequence axes on every input and the output."""
    module.eval()  # the exporter restores the module's mode afterwards, recursively: it must be eval to begin with
    names = list(example)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad(), eager_attention(module):
        warnings.simplefilter("ignore")  # tracer and deprecation notices about the exporter itself
        torch.onnx.export(module, tuple(example[n] for n in names), str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=[output], dynamic_axes=axes, do_constant_folding=True)


@contextlib.contextmanager
def eager_attention(module: torch.nn.Module):
    """Within the block, the transformers models in ``module`` use their plain ("eager") attention.

    Traced, torch's fused attention (sdpa) becomes a graph that holds more intermediate tensors: on MiniLM at batch
    32 x 256 tokens it raised peak memory by a third (1,357 against 1,074 MiB) and was slower. The eager graph
    computes the same values; verification compares it with the model's usual attention.
    """
    changed = []
    for sub in module.modules():
        setter = getattr(sub, "set_attn_implementation", None)
        config = getattr(sub, "config", None)
        current = getattr(config, "_attn_implementation", None)
        if setter is None or current in (None, "eager") or any(sub is m for m, _ in changed):
            continue
        try:
            with _quiet_transformers_logging():
                setter("eager")
        except Exception:  # a model without an eager path keeps its own
            continue
        changed.append((sub, current))
    try:
        yield
    finally:
        for sub, previous in reversed(changed):
            with contextlib.suppress(Exception), _quiet_transformers_logging():
                sub.set_attn_implementation(previous)


def _quiet_transformers_logging():
    from .loading import quiet_transformers

    return quiet_transformers()


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of ``source``'s MatMul weights (QInt8, per output channel), written to ``target``.
    On CPUs whose uint8 x int8 kernels saturate, sessions convert these weights to uint8 when they load the graph
    (:func:`open_graph`, :mod:`.ort_int8`), so one cached graph serves every CPU.

    Per-channel scales keep MiniLM's token vectors at a mean cosine of about 0.993 to float32 (0.957 per tensor).
    The graph goes through onnxruntime's quantisation pre-processing first (shape inference and basic fusions).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.name + ".pre.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True)
    finally:
        prepared.unlink(missing_ok=True)


@dataclass(frozen=True)
class GraphRequest:
    """One graph to load or export: the module to export, an example batch and where the cache entry lives.

    ``key_parts`` must name everything that changes the graph: the weights' digest, the family and its head
    settings, the inputs (:func:`load_graph` adds the quantisation and the library versions).
    """

    module: torch.nn.Module
    example: Mapping[str, torch.Tensor]
    output: str
    folder: Path
    stem: str
    key_parts: Mapping[str, Any]
    source: str  # the model's name, for messages
    #: What the entry's sidecar records of the files the weights came from (:func:`source_record`), kept by
    #: :func:`load_graph` whenever the entry is valid, for :func:`open_by_sources`; None: nothing recorded.
    sources: Mapping[str, Any] | None = None
    #: The calibration feeds of a statically quantised graph (openvino with int8): batches of (B, L) inputs named
    #: as ``example``'s, made only when the graph is exported (:func:`.static_int8.calibration_batches`).
    calibration: Callable[[], Sequence[Mapping[str, Any]]] | None = None


def _static_parts(quantize: str | None, engine: str) -> dict[str, str]:
    """What a statically quantised graph's cache key adds: the calibration recipe and NNCF's version."""
    if not (quantize and engine == "openvino"):
        return {}
    from importlib import metadata

    from .static_int8 import CALIBRATION_VERSION

    try:
        nncf_version = metadata.version("nncf")
    except metadata.PackageNotFoundError:
        nncf_version = "none"
    return {"calibration": str(CALIBRATION_VERSION), "nncf": nncf_version}


def load_graph(request: GraphRequest, quantize: str | None, device: torch.device,
               verify: Callable[[OnnxGraph], Verification], engine: str = "onnxruntime") -> OnnxGraph:
    """The cached graph for ``request`` when the cache holds a valid one; else export it (and quantise it), check
    it with ``verify`` and cache it. Raises :class:`ModelError` when export or verification fails. ``engine``:
    what runs it, onnxruntime or OpenVINO (whose entries are kept apart: their key names the engine)."""
    require_engine(engine)
    uint8_weights = converts_weights(quantize, engine)  # before any cache entry is opened (see there)
    parts = {**request.key_parts, "quantize": quantize, "per_channel": bool(quantize), **runtime_versions(),
             **_engine_parts(engine), **_static_parts(quantize, engine)}
    if request.sources is not None:  # the versions a fast open must find: this engine's
        request = replace(request, sources={**request.sources, "versions": source_versions(engine, quantize)})
    key = onnx_cache.cache_key(parts)
    folder, stem = request.folder, request.stem
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the ONNX cache folder {folder} ({exc.strerror or exc}); set LATELEX_CACHE "
                         f"to a writable folder") from None
    inputs = tuple(request.example)
    with file_lock(folder / f".{stem}.lock", EXPORT_LOCK_TIMEOUT_S):
        reason = onnx_cache.check_entry(folder, stem, key)
        if reason is None:
            path = onnx_cache.entry_paths(folder, stem)[0]
            try:
                graph = open_graph(path, device, inputs, request.output, engine, uint8_weights)
                graph.verification = onnx_cache.read_sidecar(folder, stem).get("verification")
            except Exception as exc:  # onnxruntime and OpenVINO raise their own types for unreadable graphs
                reason = f"{engine} cannot load it ({_first_line(exc)})"
            else:
                if request.sources is not None:
                    _keep_sources(folder, stem, request.sources)
                return graph
        if reason != "not exported yet":
            logger.warning("rebuilding the ONNX graph %s in %s: %s", stem, folder, reason)
        onnx_cache.discard_entry(folder, stem)
        return _export_verified(request, quantize, device, verify, parts, key, engine)


def open_by_sources(folder: Path, stem: str, digest: str, output: str, device: torch.device,
                    engine: str = "onnxruntime",
                    quantize: str | None = None) -> tuple[OnnxGraph, dict[str, Any]] | None:
    """The cached graph ``stem`` in ``folder`` and its sidecar, when the sidecar records that it was exported from
    model files whose :func:`~.onnx_cache.source_digest` is ``digest`` with today's :func:`source_versions`;
    None otherwise (the caller then loads the torch model and :func:`load_graph`)."""
    require_engine(engine)
    uint8_weights = converts_weights(quantize, engine)  # before any cache entry is opened (see there)
    if not onnx_cache.entry_paths(folder, stem)[1].exists():
        return None
    try:
        with file_lock(folder / f".{stem}.lock", EXPORT_LOCK_TIMEOUT_S):
            meta = onnx_cache.find_by_sources(folder, stem, digest, source_versions(engine, quantize))
            if meta is None:
                return None
            inputs = tuple(meta.get("key_parts", {}).get("inputs") or ())
            graph = open_graph(onnx_cache.entry_paths(folder, stem)[0], device, inputs, output, engine, uint8_weights)
    except Exception:  # an unreadable folder or graph: the full load reports it, or rebuilds the entry
        return None
    graph.verification = meta.get("verification")
    return graph, meta


def _keep_sources(folder: Path, stem: str, sources: Mapping[str, Any]) -> None:
    """Record ``sources`` in the valid entry's sidecar (the caller holds its lock); a sidecar that cannot be
    written is left as it is, and the next load is then a full one again."""
    try:
        onnx_cache.record_sources(folder, stem, dict(sources))
    except (OSError, ValueError) as exc:
        logger.info("could not record the sources of %s in %s: %s", stem, folder, exc)


def _export_verified(request: GraphRequest, quantize: str | None, device: torch.device,
                     verify: Callable[[OnnxGraph], Verification], parts: dict[str, Any], key: str,
                     engine: str = "onnxruntime") -> OnnxGraph:
    folder, stem = request.folder, request.stem
    tag = f".{stem}.{os.getpid()}.tmp"
    exported = folder / f"{tag}.onnx"
    quantized = folder / f"{tag}.int8.onnx"
    static = quantize == "int8" and engine == "openvino"
    if static:
        _check_static_ready(request)  # before the export's work, not after it
    try:
        started = time.perf_counter()
        try:
            export_onnx(request.module, request.example, request.output, exported)
            built = exported
            if static:
                from .static_int8 import quantize_static

                with _quiet_quantizer():  # NNCF's ONNX path runs onnxruntime.quantization helpers too
                    quantize_static(exported, quantized, request.calibration())
                built = quantized
            elif quantize == "int8":
                with _quiet_quantizer():
                    quantize_int8(exported, quantized)
                built = quantized
            graph = open_graph(built, device, tuple(request.example), request.output, engine,
                               converts_weights(quantize, engine))
        except (ModelError, ConfigError):
            raise
        except Exception as exc:  # the exporter and onnxruntime raise many types
            raise ModelError(f"cannot export {request.source} to ONNX ({_first_line(exc)}); "
                             f"use backend='torch'") from None
        result = verify(graph)
        if not result.passed:
            what = "int8 " if quantize else ""
            via = " run by OpenVINO" if engine == "openvino" else ""
            raise ModelError(f"the {what}ONNX graph of {request.source}{via} does not match torch "
                             f"({result.describe()}); use backend='torch'{' or drop quantize' if quantize else ''}")
        meta = {"key": key, "key_parts": parts, "stem": stem, "verification": asdict(result),
                **({} if request.sources is None else {"sources": dict(request.sources)}),
                "export_seconds": round(time.perf_counter() - started, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        graph.path = onnx_cache.publish_entry(folder, stem, built, meta)
        graph.verification = asdict(result)
        logger.info("exported %s to %s (%s)", request.source, graph.path, result.describe())
        return graph
    finally:
        for leftover in (exported, quantized):
            leftover.unlink(missing_ok=True)


def _check_static_ready(request: GraphRequest) -> None:
    """What the openvino backend's int8 (static quantisation) needs besides a graph: NNCF installed and the
    request's calibration feeds; a one-line :class:`ModelError` for what is missing."""
    from .static_int8 import require_nncf

    require_nncf()
    if request.calibration is None:
        raise ModelError(f"{request.source} has no calibration texts for int8 on openvino; use backend='onnx' "
                         f"with quantize='int8'")


@contextlib.contextmanager
def _quiet_quantizer():
    """Hold back what onnxruntime.quantization logs on the root logger (per-tensor notes and advice), and keep its
    module-level ``logging.info`` calls from configuring the root logger of the application as a side effect."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in str(record.pathname)

    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)  # logging.info() calls basicConfig() on a root logger without handlers
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
        if placeholder is not None:
            root.removeHandler(placeholder)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def source_record(digest: str, tokens: dict[str, Any], backbone: dict[str, Any]) -> dict[str, Any]:
    """What a graph's sidecar records of its sources (``GraphRequest.sources``): the
    :func:`~.onnx_cache.source_digest` of the model files, what the model's tokenizer gave (``tokens``, from
    :func:`~.rust_tokenizer.token_check`) and the backbone's config values the encoder reads (``backbone``, for
    :class:`GraphBackbone`). :func:`load_graph` adds today's :func:`source_versions` for the engine that runs it."""
    return {"digest": digest, "tokens": tokens, "backbone": dict(backbone)}


class GraphBackbone(torch.nn.Module):
    """Stands in for a transformers backbone whose forward pass is a cached ONNX graph, when the encoder was built
    without loading it (:func:`open_by_sources`): the config values the encoder reads (hidden size, positions), as
    recorded from the real backbone, and no weights."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = SimpleNamespace(**dict(config))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelError("this encoder runs on the onnx backend and holds no torch weights; load it with "
                         "backend='torch' to run the model in torch")


def release_weights(*modules: torch.nn.Module | None) -> None:
    """Free the torch weights of modules whose work an ONNX graph now does (their shapes and configs stay)."""
    for module in modules:
        if module is not None:
            module.to("meta")


__all__ = ["FP32_MAX_ABS_DIFF", "INT8_MIN_MEAN_COSINE", "OPSET", "GraphRequest", "OnnxGraph", "Verification",
           "compare", "export_onnx", "load_graph", "onnx_device", "open_by_sources", "quantize_int8",
           "require_onnxruntime", "source_record", "source_versions"]
