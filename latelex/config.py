"""Frozen configuration dataclasses.

Configurations are plain values: built explicitly, compared by value, written to manifests as JSON and
read back with :func:`config_from_dict`, which refuses unknown keys instead of ignoring a misspelling.
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import ConfigError

#: Characters whose tokens ColBERT drops from documents (Stanford ColBERT's ``mask_punctuation``).
PUNCTUATION: tuple[str, ...] = tuple(string.punctuation)


@dataclass(frozen=True)
class ColBERTConfig:
    """How a ColBERT encoder turns text into token vectors.

    Defaults are ColBERTv2's: 32 query tokens padded with [MASK] (query augmentation), 180 document
    tokens, markers ``[unused0]``/``[unused1]`` inserted after [CLS], punctuation dropped from documents,
    a 128-dimensional projection without bias, L2-normalised vectors compared by cosine (dot product).

    ``dim=None`` means no projection: vectors keep the backbone's hidden width (a plain encoder).
    A marker of ``None`` inserts no marker token.
    """

    query_maxlen: int = 32
    doc_maxlen: int = 180
    dim: int | None = 128
    query_marker: str | None = "[unused0]"
    doc_marker: str | None = "[unused1]"
    query_augmentation: bool = True
    attend_to_mask_tokens: bool = False
    skiplist: tuple[str, ...] = PUNCTUATION
    similarity: Literal["cosine", "l2"] = "cosine"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.query_maxlen < 2 or self.doc_maxlen < 2:
            raise ConfigError("query_maxlen and doc_maxlen must be at least 2 tokens")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"dim must be a positive integer or None, not {self.dim}")
        if self.similarity not in ("cosine", "l2"):
            raise ConfigError(f"similarity must be 'cosine' or 'l2', not {self.similarity!r}")
        object.__setattr__(self, "skiplist", tuple(self.skiplist))


@dataclass(frozen=True)
class SpladeConfig:
    """How a SPLADE encoder turns text into a sparse vector over the vocabulary.

    ``pooling``: ``"max"`` (SPLADE v2 and ++) or ``"sum"`` (SPLADE v1) of log(1 + relu(logits)).
    ``top_k`` keeps only the k largest weights of each vector; ``threshold`` drops weights at or below it.
    ``memory_budget_mb`` bounds the (batch x length x vocabulary) activation tensor of one forward pass.
    """

    query_maxlen: int = 64
    doc_maxlen: int = 256
    pooling: Literal["max", "sum"] = "max"
    query_top_k: int | None = None
    doc_top_k: int | None = None
    threshold: float = 0.0
    memory_budget_mb: int = 256

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "sum"):
            raise ConfigError(f"pooling must be 'max' or 'sum', not {self.pooling!r}")
        if self.query_maxlen < 2 or self.doc_maxlen < 2:
            raise ConfigError("query_maxlen and doc_maxlen must be at least 2 tokens")
        for name in ("query_top_k", "doc_top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive integer or None, not {value}")
        if self.threshold < 0:
            raise ConfigError(f"threshold must be >= 0, not {self.threshold}")
        if self.memory_budget_mb < 1:
            raise ConfigError("memory_budget_mb must be at least 1")


#: Inference backends an encoder can run its forward pass on.
BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino")
#: Quantisations the graph backends offer. int8 on onnx: dynamic quantisation of the weight matrices; on openvino:
#: static quantisation of weights and activations, calibrated once on fixed texts (:mod:`.encoders.static_int8`).
QUANTIZATIONS: tuple[str, ...] = ("int8",)
#: Keys of an encoder spec that say how it runs, not what it computes: indexes ignore them when they compare encoders.
RUNTIME_SPEC_KEYS: tuple[str, ...] = ("backend", "quantize", "int8_weights")


@dataclass(frozen=True)
class BackendConfig:
    """Which runtime computes an encoder's forward pass.

    ``backend``: ``"torch"`` (the transformers model itself), ``"onnx"`` (an exported graph run by onnxruntime,
    verified against torch when it is exported) or ``"openvino"`` (the same float32 graph run by OpenVINO Runtime on
    the CPU, in bfloat16 where the CPU computes it natively; verified too). ``quantize``: ``None``, or ``"int8"``:
    on onnx, weights quantised to int8 (dynamic quantisation); on openvino, weights and activations in int8 (static
    quantisation calibrated on fixed texts); either is faster and verified within a looser tolerance. Tokenisation and everything
    after the forward pass are the same code for every backend.
    """

    backend: Literal["torch", "onnx", "openvino"] = "torch"
    quantize: Literal["int8"] | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {self.backend!r}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ConfigError(f"quantize must be None or 'int8', not {self.quantize!r}")
        if self.quantize is not None and self.backend == "torch":
            raise ConfigError(f"quantize={self.quantize!r} needs backend='onnx' or 'openvino'; pass one or drop "
                              f"quantize")

    @property
    def engine(self) -> str | None:
        """What runs the exported graph: ``"onnxruntime"`` or ``"openvino"``; None on torch."""
        return {"onnx": "onnxruntime", "openvino": "openvino"}.get(self.backend)

    def spec_fields(self) -> dict[str, Any]:
        """What an encoder spec records about the backend: nothing for torch (so that specs from before backends
        existed stay equal), ``backend`` and ``quantize`` for onnx."""
        if self.backend == "torch":
            return {}
        return {"backend": self.backend, "quantize": self.quantize}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "BackendConfig":
        """The backend an encoder spec records (torch when it records none)."""
        return cls(spec.get("backend") or "torch", spec.get("quantize"))


def same_encoder(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two encoder specs describe the same model and settings, whatever backend runs them: vectors from
    one may be mixed with vectors from the other (the backends agree within their verified tolerance)."""
    if a is None or b is None:
        return a is b
    return _identity(a) == _identity(b)


def _identity(spec: dict[str, Any]) -> dict[str, Any]:
    from .models import recorded_name

    out = {k: v for k, v in spec.items() if k not in RUNTIME_SPEC_KEYS}
    if isinstance(out.get("model"), str):  # an older manifest's unversioned built-in name is its first version
        out["model"] = recorded_name(out["model"])
    return out


def env_choice(name: str, choices: tuple[str, ...], default: str = "auto") -> str:
    """The environment variable ``name`` stripped and lower-cased, ``default`` when unset or empty; a one-line
    ConfigError when it is not one of ``choices`` (for the variables that force a hardware path)."""
    import os

    value = os.environ.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {os.environ[name]!r}")
    return value


C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, refusing keys ``cls`` does not have."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
        )
    return cls(**data)


def config_replace(config: C, **changes: Any) -> C:
    """A copy of ``config`` with ``changes`` applied; unknown names raise :class:`ConfigError`."""
    if not changes:
        return config
    return config_from_dict(type(config), {**config_to_dict(config), **changes})


__all__ = [
    "BACKENDS",
    "BackendConfig",
    "PUNCTUATION",
    "QUANTIZATIONS",
    "RUNTIME_SPEC_KEYS",
    "env_choice",
    "same_encoder",
    "ColBERTConfig",
    "SpladeConfig",
    "config_to_dict",
    "config_from_dict",
    "config_replace",
]
