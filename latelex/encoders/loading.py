"""Finding and loading model folders: local paths always, Hugging Face Hub names where there is network.

Inside :func:`local_files_only` (which :func:`latelex.encoders.encoder_from_spec` enters unless told otherwise, so
that opening an index never reaches for the network) a Hub name resolves only from the local cache; a name not in it
raises :class:`ModelNotLocalError`.

Weights are read from safetensors; a legacy ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``,
which refuses to execute code. Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ModelError

logger = logging.getLogger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "artifact.metadata", "*/*.json", "*/*.safetensors"]
_HUB_LEGACY_PATTERNS = ["pytorch_model.bin", "*/pytorch_model.bin"]


class MissingWeightsError(ModelError):
    """A model folder that loads but lacks weights the model needs (e.g. a checkpoint without an MLM head)."""


class ModelNotLocalError(ModelError):
    """A Hub model asked for inside :func:`local_files_only` that is not in the local cache; ``name`` is its name."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


_LOCAL_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("latelex_local_files_only", default=False)


@contextlib.contextmanager
def local_files_only(enabled: bool = True) -> Iterator[None]:
    """Within the block (in this thread or task), Hub names resolve from the local cache only, never the network."""
    token = _LOCAL_ONLY.set(bool(enabled) or _LOCAL_ONLY.get())
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of a model given as a path or a Hub name.

    A name of a model that ships with latelex (``latelex-colbert-minilm``) gives its folder in the package. A path
    that exists is used as is. Otherwise the name is fetched from the Hugging Face Hub (honouring
    ``HF_HUB_OFFLINE`` and the local cache). Raises :class:`ModelError` with what to do when neither works.
    """
    from ..models import BUILTIN_MODELS, builtin_name

    builtin = BUILTIN_MODELS.get(builtin_name(str(name_or_path)))
    if builtin is not None:
        if not (builtin / "latelex_model.json").exists():
            raise ModelError(f"the built-in model {name_or_path} is missing from {builtin}; reinstall latelex")
        return builtin
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is a file; pass the model's folder")
        return path.resolve()
    name = str(name_or_path)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_local or name.count("/") > 1:
        raise ModelError(f"model folder {name} does not exist; check the path")
    offline = _LOCAL_ONLY.get()
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_PATTERNS,
                                  local_files_only=offline)
        if not weight_files(Path(local)):  # an older repository that ships only pytorch_model.bin
            local = snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_PATTERNS + _HUB_LEGACY_PATTERNS,
                                      local_files_only=offline)
    except Exception as exc:
        if offline:
            raise ModelNotLocalError(
                f"{name} is not on this machine; download it first (e.g. `huggingface-cli download {name}`)", name
            ) from None  # the hub client raises many types; all mean "not available"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"model {name!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({reason[:160]}); pass a local path, or check the name and your network"
        ) from None
    return Path(local)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, with a one-line :class:`ModelError` if it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} should hold a JSON object")
    return data


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bars and warnings for the duration of a load (nothing to do, and
    nothing imported, while transformers is not loaded: an encoder opened on a cached ONNX graph runs without it)."""
    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(model_dir: Path):
    """The fast tokenizer stored in ``model_dir`` (tokenizer.json, or vocab.txt for WordPiece models)."""
    from transformers import AutoTokenizer

    if not any((model_dir / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ModelError(f"{model_dir} has no tokenizer (tokenizer.json or vocab.txt); is it a model folder?")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer in {model_dir}: {str(exc).splitlines()[0][:200]}") from None
    if tokenizer.pad_token_id is None:
        raise ModelError(f"the tokenizer in {model_dir} has no padding token; set pad_token in tokenizer_config.json")
    return tokenizer


def load_transformer(model_dir: Path, *, masked_lm: bool = False) -> torch.nn.Module:
    """The transformers backbone in ``model_dir``: a bare encoder, or with its MLM head if ``masked_lm``.

    Missing weights (a folder without the expected parts) raise :class:`ModelError`; extra weights that belong
    to other heads (a ColBERT projection, a pooler) are left to the caller.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    if not (model_dir / "config.json").exists():
        raise ModelError(f"{model_dir} has no config.json; pass a transformers model folder")
    if not weight_files(model_dir):
        raise ModelError(f"{model_dir} has no weights (model.safetensors or pytorch_model.bin)")
    cls = AutoModelForMaskedLM if masked_lm else AutoModel
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
            model, info = cls.from_pretrained(str(model_dir), config=config, output_loading_info=True,
                                              local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the model in {model_dir}: {str(exc).splitlines()[0][:200]}") from None
    missing = [k for k in info.get("missing_keys", []) if not _optional_key(k)]
    if missing:
        what = "a masked-language-model head" if masked_lm and any("cls" in k or "head" in k for k in missing) else "weights"
        raise MissingWeightsError(
            f"{model_dir} lacks {what} the model needs ({len(missing)} missing, e.g. {missing[0]}); "
            "is this the right kind of model?"
        )
    model.eval()
    return model


def _optional_key(key: str) -> bool:
    return key.endswith(("position_ids", "pooler.dense.weight", "pooler.dense.bias")) or "pooler" in key


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a model folder: safetensors (single or sharded) first, else pytorch_model.bin."""
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        return [model_dir / s for s in shards]
    legacy = model_dir / "pytorch_model.bin"
    return [legacy] if legacy.exists() else []


def read_state_dict(model_dir: Path, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors stored in a model folder's weight files (only ``keys`` if given), without executing code."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for file in weight_files(model_dir):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for k in f.keys():
                    if keys is None or k in keys:
                        out[k] = f.get_tensor(k)
        else:
            try:
                state = torch.load(str(file), map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ModelError(f"cannot read {file} safely: {str(exc).splitlines()[0][:200]}") from None
            out.update({k: v for k, v in state.items() if keys is None or k in keys})
    return out


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
