"""Low-rank adapters (LoRA) on a transformers backbone's linear layers.

A :class:`LoRALinear` adds ``(alpha / rank) * B @ A`` to a frozen linear layer's weight, with ``A`` (rank, in)
and ``B`` (out, rank); ``B`` starts at zero, so a fresh adapter leaves the model's output unchanged. Training
updates only ``A`` and ``B`` (and whatever the caller leaves trainable, e.g. a projection head), which keeps what
a trained model must ship small: for all-MiniLM-L6-v2 at rank 8 over every attention and feed-forward layer,
about 0.5M numbers.

For inference the adapters are folded into the weights (:func:`merged_state_dict`, :func:`merge_into`), so a
model with adapters runs exactly as fast as the backbone it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import ConfigError, ModelError

#: Linear layers adapted by default: every attention projection and both feed-forward layers of a BERT block
#: (``query``, ``key``, ``value``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``).
DEFAULT_TARGETS: tuple[str, ...] = ("query", "key", "value", "dense")


@dataclass(frozen=True)
class LoRAConfig:
    """Where and how large the adapters are.

    ``targets``: last components of the names of the linear layers to adapt; layers under a pooler are never
    adapted (token vectors do not pass through it). ``alpha / rank`` scales the update.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, not {self.rank!r}")
        if not self.alpha > 0:
            raise ConfigError(f"LoRA alpha must be > 0, not {self.alpha!r}")
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets:
            raise ConfigError("LoRA targets must name at least one linear layer (e.g. query, value)")

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


class LoRALinear(torch.nn.Module):
    """``base(x) + scale * (x @ A.T) @ B.T`` for x of shape (..., in_features); output (..., out_features)."""

    def __init__(self, base: torch.nn.Linear, rank: int, scale: float) -> None:
        super().__init__()
        self.base = base
        self.scale = scale
        self.lora_A = torch.nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                                     device=base.weight.device))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                                     device=base.weight.device))

    def reset(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-uniform ``A`` (as for a linear layer) and zero ``B``: the adapter starts as the identity."""
        bound = 1.0 / math.sqrt(self.lora_A.shape[1])
        with torch.no_grad():
            self.lora_A.copy_(torch.empty_like(self.lora_A, device="cpu").uniform_(-bound, bound, generator=generator))
            self.lora_B.zero_()

    def delta(self) -> torch.Tensor:
        """(out_features, in_features): what the adapter adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.base(x) + (x @ self.lora_A.t()) @ self.lora_B.t() * self.scale


def _targets(module: torch.nn.Module, config: LoRAConfig) -> list[str]:
    names = []
    for name, child in module.named_modules():
        if not isinstance(child, torch.nn.Linear) or isinstance(child, LoRALinear):
            continue
        parts = name.split(".")
        if parts[-1] in config.targets and "pooler" not in parts:
            names.append(name)
    return names


def _set_child(root: torch.nn.Module, name: str, child: torch.nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, child)


def add_lora(module: torch.nn.Module, config: LoRAConfig, *, seed: int = 0) -> list[str]:
    """Wrap the target linear layers of ``module`` in :class:`LoRALinear` and freeze every other parameter of
    ``module``. Returns the adapted layer names; raises :class:`ModelError` when no layer matches."""
    if any(isinstance(m, LoRALinear) for m in module.modules()):
        raise ModelError("this backbone already has LoRA adapters")
    names = _targets(module, config)
    if not names:
        raise ModelError(f"no linear layer of this backbone is named {', '.join(config.targets)}; choose other targets")
    for p in module.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        wrapped = LoRALinear(module.get_submodule(name), config.rank, config.scale)
        wrapped.reset(generator)
        _set_child(module, name, wrapped)
    return names


def has_lora(module: torch.nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in module.modules())


def adapter_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{"<layer>.lora_A": (rank, in), "<layer>.lora_B": (out, rank)}`` of every adapter, on the CPU."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, LoRALinear):
            out[f"{name}.lora_A"] = m.lora_A.detach().cpu().contiguous()
            out[f"{name}.lora_B"] = m.lora_B.detach().cpu().contiguous()
    return out


def merged_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict ``module`` would have without adapters, each adapted weight replaced by ``W + delta``:
    what a plain backbone of the same architecture loads."""
    state = dict(module.state_dict())
    for name, m in module.named_modules():
        if not isinstance(m, LoRALinear):
            continue
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(prefix + "base.") or k in (prefix + "lora_A", prefix + "lora_B")]:
            state.pop(key)
        with torch.no_grad():
            state[prefix + "weight"] = (m.base.weight + m.delta().to(m.base.weight.dtype)).detach()
        if m.base.bias is not None:
            state[prefix + "bias"] = m.base.bias.detach()
    return state


def merge_into(module: torch.nn.Module, adapters: Mapping[str, torch.Tensor], config: LoRAConfig) -> int:
    """Add stored adapters (from :func:`adapter_state_dict`) into the plain linear layers of ``module`` in place.

    Returns the number of layers changed; raises :class:`ModelError` when an adapter names a layer ``module``
    lacks or its shapes do not fit.
    """
    layers = sorted({k.rsplit(".", 1)[0] for k in adapters})
    for name in layers:
        a, b = adapters.get(f"{name}.lora_A"), adapters.get(f"{name}.lora_B")
        if a is None or b is None:
            raise ModelError(f"adapter of layer {name!r} lacks its A or B matrix; the adapter file is incomplete")
        try:
            layer = module.get_submodule(name)
        except AttributeError:
            raise ModelError(f"the adapters name layer {name!r}, which this backbone does not have; wrong base model") from None
        if not isinstance(layer, torch.nn.Linear) or tuple(layer.weight.shape) != (b.shape[0], a.shape[1]) \
                or a.shape[0] != b.shape[1]:
            raise ModelError(f"the adapter of layer {name!r} does not fit its weight; wrong base model")
        with torch.no_grad():
            layer.weight.add_((b.float() @ a.float() * config.scale).to(layer.weight))
    return len(layers)


__all__ = [
    "DEFAULT_TARGETS",
    "LoRAConfig",
    "LoRALinear",
    "add_lora",
    "adapter_state_dict",
    "has_lora",
    "merge_into",
    "merged_state_dict",
]
