"""Training checkpoints without pickles: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``<output_dir>/checkpoints/step-<N>/``::

    model.safetensors       the trained modules' weights (shared tensors stored once, aliases in the JSON)
    optimizer.safetensors   the optimizer's per-parameter tensors (``state.<i>.<name>``)
    rng.safetensors         torch CPU and CUDA generator states
    trainer_state.json      written last: format, step, model identity, config, optimizer scalars and
                            param groups, loss scaler, Python and NumPy RNG states, best dev metric

It is staged in a temporary folder and moved into place with ``os.replace``, so a folder that has
``trainer_state.json`` is complete. The model identity (family, base model, parameter names and shapes) is
compared on resume so that a checkpoint of another model fails before any training step.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import InputError, ModelError
from ..fsio import staged_folder

FORMAT = "latelex-train-checkpoint"
FORMAT_VERSION = 1
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back: ``state`` (the JSON), ``weights`` (name -> tensor, aliases expanded),
    ``optimizer`` (a ``torch.optim.Optimizer.state_dict()``), ``rng`` (name -> uint8 tensor)."""

    path: Path
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.state["step"])


# ---------------------------------------------------------------------- identity


def model_identity(family: str, base: str, modules: Mapping[str, torch.nn.Module]) -> dict[str, Any]:
    """What must match for a resume: the family, the base model and a digest of parameter names and shapes."""
    digest = hashlib.sha256()
    count = 0
    for prefix in sorted(modules):
        for name, param in modules[prefix].named_parameters():
            digest.update(f"{prefix}.{name}:{tuple(param.shape)};".encode())
            count += param.numel()
    return {"family": family, "base": str(base), "parameters": count, "shape_digest": digest.hexdigest()[:16]}


def check_identity(checkpoint: Checkpoint, identity: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` when ``checkpoint`` was written for another model than ``identity`` describes."""
    stored = checkpoint.state.get("identity", {})
    for key in ("family", "base", "shape_digest"):
        if stored.get(key) != identity.get(key):
            raise InputError(
                f"{checkpoint.path} is a checkpoint of another model ({key} {stored.get(key)!r}, this model has "
                f"{identity.get(key)!r}); resume with the model it was trained from or start a new output_dir"
            )


# ---------------------------------------------------------------------- tensors


def _unique_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors with shared storage (tied embeddings) kept once: ``(unique tensors, {alias: kept name})``."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        kept[name] = tensor.detach().cpu().contiguous()
    return kept, aliases


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{path} cannot be read ({str(exc).splitlines()[0][:120]}); the checkpoint is damaged") from None


def _split_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def _join_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


# ---------------------------------------------------------------------- RNG


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random generator's state: tensors (torch CPU, CUDA) and JSON (Python, NumPy's global generator)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Put the generators back in the state :func:`capture_rng` returned."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------- save / load


def save_checkpoint(
    path: str | os.PathLike,
    *,
    weights: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    state: Mapping[str, Any],
) -> Path:
    """Write a checkpoint folder atomically (replacing one already there); returns its absolute path.

    ``weights``: a model state dict; ``optimizer_state``: ``optimizer.state_dict()``; ``state``: JSON-ready
    trainer state, which must hold ``step`` and ``identity``. RNG states are captured here.
    """
    final = Path(path).expanduser().resolve()
    with staged_folder(final, tag="saving") as tmp:
        unique, aliases = _unique_tensors(weights)
        _save_tensors(tmp / "model.safetensors", unique)
        opt_tensors, opt_meta = _split_optimizer(optimizer_state)
        _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
        rng_tensors, rng_meta = capture_rng()
        _save_tensors(tmp / "rng.safetensors", rng_tensors)
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **state,
            "weight_aliases": aliases,
            "optimizer": opt_meta,
            "rng": rng_meta,
        }
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
            json.dump(document, f)
            f.flush()
            os.fsync(f.fileno())
    return final


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    Raises :class:`InputError` for a folder that is not a complete checkpoint or one from a newer latelex.
    """
    folder = Path(path).expanduser().resolve()
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        raise InputError(f"{folder} is not a training checkpoint (no {STATE_FILE}); pass a step-<N> folder or an output_dir")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {state_path} ({exc}); the checkpoint is damaged") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{state_path} is not a latelex training checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(f"{state_path} has format version {version!r}; this latelex reads up to {FORMAT_VERSION}: upgrade latelex")
    weights = _load_tensors(folder / "model.safetensors")
    for alias, name in state.get("weight_aliases", {}).items():
        weights[alias] = weights[name]
    optimizer = _join_optimizer(_load_tensors(folder / "optimizer.safetensors"), state["optimizer"])
    rng = _load_tensors(folder / "rng.safetensors")
    return Checkpoint(folder, state, weights, optimizer, rng)


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders under ``output_dir/checkpoints``, oldest step first."""
    root = Path(output_dir).expanduser() / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child.resolve()))
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | os.PathLike | bool, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder a ``resume`` argument names: True = latest in ``output_dir`` (None if there is none),
    a path = that checkpoint folder, or the latest checkpoint of that output folder."""
    if resume is False or resume is None:
        return None
    if resume is True:
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if (path / STATE_FILE).is_file():
        return path.resolve()
    found = list_checkpoints(path)
    if not found:
        raise InputError(f"{path} holds no training checkpoint; pass a step-<N> folder or an output_dir with checkpoints")
    return found[-1]


__all__ = [
    "Checkpoint",
    "check_identity",
    "capture_rng",
    "list_checkpoints",
    "load_checkpoint",
    "model_identity",
    "resolve_resume",
    "restore_rng",
    "save_checkpoint",
]
