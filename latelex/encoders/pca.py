"""A ColBERT head without training: project a plain encoder's token vectors onto their principal directions.

A plain transformers encoder already works for late interaction (its normalised hidden states are token vectors,
384 dimensions for all-MiniLM-L6-v2), but wide vectors cost index bytes and search time. :func:`fit_pca_projection`
finds the ``dim`` directions that keep most of the token vectors' energy on a sample of documents, and
:func:`pca_model` saves the plain encoder with that projection as an ordinary latelex ColBERT model folder, usable
wherever a model name or path is (``--model DIR``, ``ColBERT.from_pretrained(DIR)``, index manifests).

The principal directions are *uncentred* (eigenvectors of the second moment, not the covariance): MaxSim compares
directions through the origin, and the mean token vector is itself a direction worth keeping. The projected vectors
are re-normalised by the encoder as usual.

``latelex-colbert-minilm-pca`` (shipped with latelex) is all-MiniLM-L6-v2 with a 128-dimensional projection
fitted this way; see ``latelex/models/colbert-minilm-pca/MODEL_CARD.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError, InputError


def fit_pca_projection(encoder: Any, texts: Sequence[str], dim: int, *, max_vectors: int = 500_000,
                       seed: int = 0, batch_size: int = 32, show_progress: bool = False) -> torch.Tensor:
    """(dim, hidden) float32: the top ``dim`` uncentred principal directions of ``encoder``'s document token vectors
    over ``texts``, strongest first.

    ``encoder``: a :class:`latelex.encoders.colbert.ColBERT` without a projection (a plain encoder, whose vectors are
    its normalised hidden states). At most ``max_vectors`` token vectors (a seeded sample) enter the fit.
    """
    if encoder.projection is not None:
        raise ConfigError("fit a projection on a plain encoder (ColBERT.from_pretrained of a transformers model), "
                          "not on one that already projects its vectors")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be a positive integer, not {dim!r}")
    texts = list(texts)
    if not texts:
        raise InputError("fitting a projection needs at least one document text")
    vectors = torch.cat(encoder.encode_documents(texts, batch_size=batch_size, show_progress=show_progress))
    hidden = vectors.shape[1]
    if dim > hidden:
        raise ConfigError(f"dim {dim} exceeds the encoder's width {hidden}; choose dim <= {hidden}")
    if len(vectors) > max_vectors:
        keep = torch.randperm(len(vectors), generator=torch.Generator().manual_seed(seed))[:max_vectors]
        vectors = vectors[keep]
    second_moment = vectors.double().T @ vectors.double() / len(vectors)
    _, eigenvectors = torch.linalg.eigh(second_moment)  # ascending eigenvalues
    return eigenvectors[:, -dim:].flip(1).T.float().contiguous()


def pca_model(backbone: str | os.PathLike, texts: Sequence[str], output: str | os.PathLike, *, dim: int = 128,
              base: dict[str, Any] | None = None, overwrite: bool = False, max_vectors: int = 500_000, seed: int = 0,
              show_progress: bool = False, **settings: Any) -> Path:
    """Fit a ``dim``-dimensional PCA projection of ``backbone``'s token vectors on ``texts`` and save the encoder
    with it as a latelex ColBERT model in ``output``; returns the folder.

    ``settings``: ColBERTConfig fields (``doc_maxlen=256``, ``query_marker=None``, ...), applied both while fitting
    and in the saved model. ``base``: save only the projection and a reference to the unchanged backbone (as
    :meth:`ColBERT.save` takes it, e.g. :data:`latelex.models.BASE_BACKBONE`) instead of a copy of its weights.
    """
    from .colbert import ColBERT

    plain = ColBERT.from_pretrained(backbone, **settings)
    weight = fit_pca_projection(plain, texts, dim, max_vectors=max_vectors, seed=seed, show_progress=show_progress)
    model = ColBERT.from_backbone(backbone, dim=dim, seed=seed, config=plain.config)  # the plain encoder's settings
    with torch.no_grad():
        model.projection.weight.copy_(weight)
    return model.save(output, overwrite=overwrite, base=base)


__all__ = ["fit_pca_projection", "pca_model"]
