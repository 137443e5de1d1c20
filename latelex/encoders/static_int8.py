"""Static int8 quantisation for the openvino backend: weights and activations in int8, calibrated once.

``backend="openvino", quantize="int8"`` runs a graph whose matrix products (the linear layers and attention's
two products) take int8 inputs, so that OpenVINO computes them with the CPU's integer dot-product instructions
(AVX-512 VNNI, AVX-VNNI, AMX; plain AVX2 and AVX-512 otherwise). The graph is the exported float32 ONNX graph with
QuantizeLinear / DequantizeLinear pairs inserted by NNCF (the Neural Network Compression Framework, OpenVINO's own
quantisation library) in its transformer mode, which keeps softmax, layer norms and GELU in floating point. The
result is an ordinary ONNX file, cached like every other graph; OpenVINO reads its pairs as int8 operations.

On an AMD EPYC with AVX-512 VNNI and two cores, the built-in model encoded the whole SciFact corpus at 79
documents per second against 54 for OpenVINO in bfloat16 and 56 for onnxruntime's dynamic int8
(``bench/bench_encode.py``); on 512 SciFact abstracts its token vectors were at a mean cosine of 0.9961 to
float32, against 0.9923 for onnxruntime's int8 (``scripts/openvino_probe.py``).

On CPUs without VNNI the same graph computes less exact vectors: over the first 100 SciFact test queries and 30
abstracts, the mean cosine to torch's was 0.9947 (queries) and 0.9943 (documents) on an emulated AVX2-only CPU
(``qemu-x86_64 -cpu Haswell``) against 0.9969 and 0.9963 on that EPYC (``scripts/int8_fidelity.py``). NNCF's
overflow fix (7-bit weights in every layer, for the saturating 8-bit instructions of such CPUs) did worse on both
in a one-off trial on 30 queries and 10 abstracts (0.9944 and 0.9930 on either CPU), so it is not used.

**Calibration.** Activation ranges are measured on fixed texts, not on the user's collection, so that a cached
graph depends only on the model: :func:`calibration_texts` takes the prose paragraphs of the Python reference
topics that every CPython ships (``pydoc_data.topics``: the language reference's English text, licensed with
Python, read at run time and not copied here), joined into passages of 120 to 250 words for documents, and first
sentences cut to 16 words for queries. In a one-off trial (not in the repository), calibrating on 512 other
SciFact abstracts instead raised that cosine by about 0.001: in-domain calibration would gain little.

**Telemetry.** NNCF sends usage telemetry unless it believes it runs in CI; :func:`import_nncf` imports it with
``NNCF_CI`` set for the duration of the import (NNCF decides once, on import), so that latelex never sends any.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import ModelError

#: Version of the calibration texts and NNCF settings; part of the cache key of every static int8 graph.
CALIBRATION_VERSION = 1
#: How many calibration passages (documents) and sentences (queries) :func:`calibration_texts` returns.
CALIBRATION_DOCUMENTS = 160
CALIBRATION_QUERIES = 64
#: Texts per calibration batch (batches are padded to their longest text, as encoding pads them).
CALIBRATION_BATCH = 8

_PASSAGE_WORDS = (120, 250)
_QUERY_WORDS = 16


def require_nncf() -> Any:
    """The nncf module, or a one-line :class:`ModelError` naming the extra that installs it."""
    try:
        return import_nncf()
    except ImportError:
        raise ModelError("quantize='int8' with backend='openvino' needs NNCF and onnxruntime: "
                         "pip install 'latelex[openvino]'") from None


def import_nncf() -> Any:
    """``import nncf`` with its telemetry off and its import-time log line held back (see the module docstring)."""
    if sys.modules.get("nncf") is not None:
        return sys.modules["nncf"]
    before = os.environ.get("NNCF_CI")
    os.environ["NNCF_CI"] = "1"
    try:
        with _nncf_quiet():
            import nncf
    finally:
        if before is None:
            os.environ.pop("NNCF_CI", None)
        else:
            os.environ["NNCF_CI"] = before
    return nncf


@contextlib.contextmanager
def _nncf_quiet():
    """NNCF logs to stdout with a handler of its own: below errors, held back here (its progress bars are
    :func:`_no_progress_bars`'s)."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nncf_logger.setLevel(level)


def calibration_texts() -> tuple[list[str], list[str]]:
    """(documents, queries): :data:`CALIBRATION_DOCUMENTS` passages and :data:`CALIBRATION_QUERIES` sentences of
    English prose from Python's reference topics, the same on every call and every machine with the same Python
    minor version. Raises :class:`ModelError` when this Python was built without ``pydoc_data``."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ModelError("quantize='int8' with backend='openvino' calibrates on Python's pydoc_data, which this "
                         "Python lacks; use backend='onnx' with quantize='int8' instead") from None
    paragraphs = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            if block.startswith("   ") or "***" in block or "===" in block:  # code, listings and headings
                continue
            text = " ".join(block.split())
            if len(text) > 80 and sum(c.isalpha() or c == " " for c in text) / len(text) > 0.9:
                paragraphs.append(text)
    paragraphs = list(dict.fromkeys(paragraphs))  # some topics repeat others' paragraphs
    documents, current = [], []
    for paragraph in paragraphs:
        current.extend(paragraph.split())
        if len(current) >= _PASSAGE_WORDS[0]:
            documents.append(" ".join(current[: _PASSAGE_WORDS[1]]))
            current = []
    # queries: first sentences cut to _QUERY_WORDS words, as short as search queries are
    queries = [" ".join(p.split(". ")[0].rstrip(".:").split()[:_QUERY_WORDS])
               for p in paragraphs[:: max(1, len(paragraphs) // CALIBRATION_QUERIES)]]
    if len(documents) < CALIBRATION_DOCUMENTS // 2 or len(queries) < CALIBRATION_QUERIES // 2:
        raise ModelError("Python's pydoc_data holds too little text to calibrate int8 quantisation; use "
                         "backend='onnx' with quantize='int8' instead")
    step = max(1, len(documents) // CALIBRATION_DOCUMENTS)
    return documents[::step][:CALIBRATION_DOCUMENTS], queries[:CALIBRATION_QUERIES]


def quantize_static(source: Path, target: Path, batches: Iterable[Mapping[str, Any]]) -> None:
    """Write to ``target`` the float32 ONNX graph ``source`` with int8 QuantizeLinear / DequantizeLinear pairs on
    its matrix products, their activation ranges measured by running ``batches`` (feeds of (B, L) int64 arrays or
    tensors, named as the graph's inputs) through it. NNCF's transformer mode, default preset."""
    import onnx

    nncf = require_nncf()
    feeds = [{name: _array(value) for name, value in batch.items()} for batch in batches]
    if not feeds:
        raise ModelError("static int8 quantisation needs at least one calibration batch")
    model = onnx.load(str(source))
    inputs = [i.name for i in model.graph.input]
    dataset = nncf.Dataset(feeds, lambda batch: {name: batch[name] for name in inputs})
    with _nncf_quiet(), _no_progress_bars():
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    onnx.save(quantized, str(target))


def calibration_batches(token_ids: Callable[[list[str], bool], list[list[int]]],
                        collate: Callable[[list[list[int]], bool], Mapping[str, Any]],
                        documents: bool = True, queries: bool = True) -> list[Mapping[str, Any]]:
    """An encoder's calibration feeds: :func:`calibration_texts` (documents, queries or both) tokenised by
    ``token_ids(texts, query)`` and padded by ``collate(rows, query)`` as the encoder does, longest first, in
    batches of :data:`CALIBRATION_BATCH`."""
    docs, qs = calibration_texts()
    out: list[Mapping[str, Any]] = []
    for texts, query, wanted in ((docs, False, documents), (qs, True, queries)):
        if not wanted:
            continue
        rows = sorted(token_ids(texts, query), key=len, reverse=True)
        out += [collate(rows[i : i + CALIBRATION_BATCH], query) for i in range(0, len(rows), CALIBRATION_BATCH)]
    return out


@contextlib.contextmanager
def _no_progress_bars():
    """NNCF draws rich progress bars on rich's global console while it collects statistics; an application's
    output is not the place for them, so that console is a quiet one meanwhile."""
    try:
        import rich
        from rich.console import Console
    except ImportError:  # nncf without rich: nothing to hold back
        yield
        return
    saved = rich._console
    rich._console = Console(quiet=True)
    try:
        yield
    finally:
        rich._console = saved


def _array(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


__all__ = ["CALIBRATION_VERSION", "calibration_batches", "calibration_texts", "import_nncf", "quantize_static",
           "require_nncf"]
