"""Encoders: ColBERT (token vectors) and SPLADE (sparse vocabulary weights), with checkpoint formats.

:func:`load_encoder` picks the family from the model folder when the caller does not say;
:func:`encoder_from_spec` rebuilds an encoder from the description stored in an index manifest.

Every encoder runs its forward pass on a backend: ``"torch"`` (default), ``"onnx"`` (``backend="onnx"``, optionally
``quantize="int8"``): an exported graph run by onnxruntime, verified against torch and cached
(:mod:`.onnx_backend`, :mod:`.onnx_cache`), or ``"openvino"``: the same graph run by OpenVINO Runtime on the CPU
(in bfloat16 where the CPU has it), verified and cached apart. A spec records the backend; indexes do not count it
when they compare encoders, so an index built on one backend is searched on another.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from ..errors import ConfigError, ModelError

Family = Literal["colbert", "splade"]


def detect_family(name_or_path: str | os.PathLike) -> Family:
    """``"splade"`` for SPLADE checkpoints (latelex SPLADE, sentence-transformers SparseEncoder, names with
    'splade'), else ``"colbert"``. Pass the family explicitly where a folder is ambiguous (a bare MLM)."""
    from pathlib import Path

    from .loading import read_json

    path = Path(name_or_path).expanduser()
    manifest = path / "latelex_model.json"
    if manifest.exists():
        fmt = str(read_json(manifest).get("format", ""))
        return "splade" if fmt.endswith("splade") else "colbert"
    modules = path / "modules.json"
    if modules.exists():
        text = modules.read_text(encoding="utf-8", errors="replace")
        if any(marker in text for marker in ("SpladePooling", "MLMTransformer", "SparseStaticEmbedding")):
            return "splade"
    return "splade" if "splade" in str(name_or_path).lower() else "colbert"


def load_encoder(name_or_path: str | os.PathLike, family: Family | None = None, *, device: Any = None, **overrides: Any):
    """A :class:`ColBERT` or :class:`Splade` encoder for ``name_or_path`` (family detected when not given);
    ``overrides`` go to its ``from_pretrained`` (config fields, ``backend``, ``quantize``, ...)."""
    family = family or detect_family(name_or_path)
    if family == "colbert":
        from .colbert import ColBERT

        return ColBERT.from_pretrained(name_or_path, device=device, **overrides)
    if family == "splade":
        from .splade import Splade

        return Splade.from_pretrained(name_or_path, device=device, **overrides)
    raise ConfigError(f"unknown encoder family {family!r}; use 'colbert' or 'splade'")


def encoder_from_spec(spec: dict[str, Any], device: Any = None, *, allow_network: bool = False):
    """Rebuild the encoder an index manifest describes.

    Opening an index must not reach for the network on a stranger's say-so: unless ``allow_network``, a Hub name in
    ``spec`` (or a base model it names) loads from the local Hugging Face cache only, and one that is not there
    raises a one-line :class:`ModelError` saying how to download it. Local folders and built-in models load as ever.
    """
    from .loading import ModelNotLocalError, local_files_only

    family = spec.get("family") if isinstance(spec, dict) else None
    try:
        with local_files_only(not allow_network):
            if family == "colbert":
                from .colbert import ColBERT

                return ColBERT.from_spec(spec, device=device)
            if family == "splade":
                from .splade import Splade

                return Splade.from_spec(spec, device=device)
    except ModelNotLocalError as exc:
        model = str(spec.get("model"))
        missing = "which is" if exc.name == model else f"whose base model {exc.name} is"
        raise ModelError(
            f"the index was built with {model}, {missing} not on this machine; download it first "
            f"(e.g. `huggingface-cli download {exc.name}`) or pass --allow-network"
        ) from None
    raise ModelError(f"the index names no known encoder (family {family!r}); pass an encoder explicitly")
