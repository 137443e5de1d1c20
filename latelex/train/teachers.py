"""Late-interaction teachers: a ColBERT encoder or a latelex index whose MaxSim scores become distillation targets.

A teacher need not be a cross-encoder. The plain 384-dimensional all-MiniLM-L6-v2 token vectors generalise better
than a 128-dimensional model trained on two collections, so distilling their scores into the smaller model
(*self-distillation*) keeps what the wide vectors know while the model shrinks.

- :class:`MaxSimTeacher` wraps any :class:`latelex.encoders.colbert.ColBERT` (a trained checkpoint or a plain
  transformers encoder). :meth:`MaxSimTeacher.score` scores (query, passage) text pairs, as
  :class:`latelex.train.mine.CrossEncoderTeacher` does, so ``latelex mine --teacher`` can write its scores into
  training files; :meth:`MaxSimTeacher.score_matrix` scores every query of a training batch against every passage
  of it, for online distillation over in-batch pairs (``Trainer.create(..., teacher=...)``).
- :class:`IndexTeacher` scores with an index built by ``latelex index`` (any ColBERT kind): queries are encoded by the
  index's encoder and scored against the stored document vectors, so no document is encoded again.

:func:`load_teacher` picks the right class for a name or path, cross-encoders included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError, ModelError


class MaxSimTeacher:
    """Scores with a ColBERT encoder's MaxSim (its own similarity, lengths and markers). Stateless between calls."""

    def __init__(self, encoder: Any, batch_size: int = 32) -> None:
        self.encoder = encoder
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, device: Any = None, batch_size: int = 32,
                        **settings: Any) -> "MaxSimTeacher":
        """A teacher from any model ``ColBERT.from_pretrained`` loads; ``settings`` are ColBERTConfig overrides."""
        from ..encoders.colbert import ColBERT

        return cls(ColBERT.from_pretrained(name_or_path, device=device, **settings), batch_size)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(N,) float32 MaxSim scores of the pairs ``(queries[i], passages[i])``; each distinct text is encoded once."""
        from ..scoring.maxsim import maxsim_packed
        from ..types import PackedEmbeddings

        if len(queries) != len(passages):
            raise InputError(f"{len(queries)} queries but {len(passages)} passages; pass one passage per query")
        if not len(queries):
            return np.zeros(0, dtype=np.float32)
        q_texts, p_texts = list(dict.fromkeys(queries)), list(dict.fromkeys(passages))
        q_vectors = self.encoder.encode_queries(q_texts, batch_size=self.batch_size, show_progress=False)
        p_vectors = self.encoder.encode_documents(p_texts, batch_size=self.batch_size, show_progress=False)
        q_vector = dict(zip(q_texts, q_vectors))
        p_vector = dict(zip(p_texts, p_vectors))
        out = np.zeros(len(queries), dtype=np.float32)
        similarity = self.encoder.config.similarity
        for query, rows in _rows_by_query(queries).items():
            docs = PackedEmbeddings.from_list([p_vector[passages[r]] for r in rows])
            out[rows] = maxsim_packed(q_vector[query], docs.vectors, docs.offsets, similarity=similarity).numpy()
        return out

    @torch.no_grad()  # not inference_mode: the scores enter the student's loss, which autograd tracks
    def score_matrix(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        """(B, N) float32 MaxSim scores of every query against every passage (a training batch's in-batch pairs)."""
        from .colbert_trainer import batch_maxsim

        return batch_maxsim(self.encoder, list(queries), list(passages)).float().cpu()


class IndexTeacher:
    """Scores with an index built by ``latelex index`` (flat, PLAID or IVFPQ): the query encoded by the index's
    encoder, each passage by its stored vectors (exact on a flat index; PLAID scores its decompressed vectors and
    always scores every document asked for; IVFPQ may miss some, which is an error). Passages are named by document
    id: use :meth:`score_ids`; an id the index does not hold is an error."""

    def __init__(self, retriever: Any) -> None:
        self.retriever = retriever

    @classmethod
    def open(cls, path: str | os.PathLike, *, device: Any = None) -> "IndexTeacher":
        from ..search.retriever import Retriever

        retriever = Retriever.open(path, device=device)
        if retriever.spec.family != "colbert":
            raise ModelError(f"{path} is a {retriever.kind} index; a teacher index must hold ColBERT vectors "
                             "(flat, plaid or ivfpq)")
        return cls(retriever)

    def score_ids(self, queries: Sequence[str], doc_ids: Sequence[str]) -> np.ndarray:
        """(N,) float32 scores of the pairs ``(queries[i], doc_ids[i])``, one search per distinct query."""
        if len(queries) != len(doc_ids):
            raise InputError(f"{len(queries)} queries but {len(doc_ids)} document ids; pass one id per query")
        out = np.zeros(len(queries), dtype=np.float32)
        for query, rows in _rows_by_query(queries).items():
            wanted = list(dict.fromkeys(doc_ids[r] for r in rows))
            hits = self.retriever.search(query, k=len(wanted), subset=wanted, with_text=False)
            found = {h.doc_id: h.score for h in hits}
            missing = next((d for d in wanted if d not in found), None)
            if missing is not None:
                raise InputError(f"the teacher index {self.retriever.path} gave no score for document {missing!r}: an "
                                 "ivfpq index scores only what its probes reach; use a flat or plaid index as teacher")
            for r in rows:
                out[r] = found[doc_ids[r]]
        return out


def _rows_by_query(queries: Sequence[str]) -> dict[str, list[int]]:
    """The positions of each distinct query text in ``queries``, in order of first appearance."""
    rows: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        rows.setdefault(q, []).append(i)
    return rows


def load_teacher(name_or_path: str | os.PathLike, *, device: Any = None) -> Any:
    """The teacher that ``name_or_path`` names: a latelex index folder (:class:`IndexTeacher`), a
    sequence-classification checkpoint (:class:`latelex.train.mine.CrossEncoderTeacher`) or any other ColBERT model
    or plain encoder (:class:`MaxSimTeacher`)."""
    path = Path(name_or_path).expanduser()
    if (path / "manifest.json").is_file():
        return IndexTeacher.open(path, device=device)
    if _is_cross_encoder(name_or_path):
        from .mine import CrossEncoderTeacher

        return CrossEncoderTeacher.from_pretrained(name_or_path, device=device)
    return MaxSimTeacher.from_pretrained(name_or_path, device=device)


def _is_cross_encoder(name_or_path: str | os.PathLike) -> bool:
    import json

    from ..encoders.loading import resolve_model_dir
    from ..models import BUILTIN_MODELS

    if str(name_or_path) in BUILTIN_MODELS:
        return False
    try:
        config = json.loads((resolve_model_dir(name_or_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, ModelError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


__all__ = ["IndexTeacher", "MaxSimTeacher", "load_teacher"]
