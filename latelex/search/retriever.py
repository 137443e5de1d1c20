"""The high-level object: an encoder bound to an index and a document store, reopened from a path alone.

Layout of a retriever directory (published atomically; ``manifest.json`` written last)::

    manifest.json           kind "retriever": encoder spec, index kind, counts, document-store arrays
    index/                  the engine's own directory (flat, sparse, ...) with its own manifest
    doc_text_bytes.npy      UTF-8 document texts, concatenated (optional)
    doc_text_offsets.npy    (N + 1,) int64 offsets into the bytes
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import InputError, LatelexError
from ..index import storage
from ..index.ids import query_pairs
from ..types import Hit, Run

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Index kinds each encoder family can be served from; the first is the default.
INDEX_KINDS = {"colbert": ("flat", "plaid", "ivfpq"), "splade": ("sparse", "inverted")}


def _family(encoder: Any) -> str:
    return encoder.spec()["family"]


def _engine_class(kind: str):
    """The index class of ``kind``; imported lazily so that an unused engine's dependencies are not needed."""
    if kind == "flat":
        from ..index.flat import FlatIndex as engine
    elif kind == "ivfpq":
        from ..index.ivfpq import IvfPqIndex as engine
    elif kind == "plaid":
        from ..index.plaid import PlaidIndex as engine
    elif kind == "sparse":
        from ..index.sparse import SparseIndex as engine
    elif kind == "inverted":
        from ..index.inverted import InvertedIndex as engine
    else:
        raise InputError(f"unknown index kind {kind!r}; use one of {', '.join(k for ks in INDEX_KINDS.values() for k in ks)}")
    return engine


def _open_engine(kind: str, path: Path):
    return _engine_class(kind).open(path)


class Retriever:
    """Encoder + index + documents. Build with :meth:`build`, reopen with :meth:`open`, query with :meth:`search`."""

    def __init__(self, path: Path, encoder: Any, index: Any, manifest: dict[str, Any], texts: tuple[Any, Any] | None) -> None:
        self.path = path
        self.encoder = encoder
        self.index = index
        self.manifest = manifest
        self._texts = texts
        self._positions: dict[str, int] | None = None

    # ------------------------------------------------------------------ build / open

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        encoder: Any,
        collection: Iterable[tuple[str, str]],
        *,
        kind: str | None = None,
        overwrite: bool = False,
        store_text: bool = True,
        batch_size: int = 32,
        chunk_size: int = 4096,
        show_progress: bool | None = None,
        engine_config: Any = None,
    ) -> "Retriever":
        """Encode ``collection`` (``(doc_id, text)`` pairs) and build an index of ``kind`` at ``path``.

        ``kind`` defaults to ``"flat"`` for ColBERT and ``"sparse"`` for SPLADE; ``engine_config`` is the engine's
        own configuration (``PlaidConfig``, ``IvfPqConfig``, ``InvertedConfig``). Nothing is written at ``path``
        unless the whole build succeeds; an existing index there is replaced only with ``overwrite``.
        """
        family = _family(encoder)
        kind = kind or INDEX_KINDS[family][0]
        if kind not in INDEX_KINDS[family]:
            raise InputError(f"a {family} encoder cannot build a {kind!r} index; use one of {', '.join(INDEX_KINDS[family])}")
        doc_ids, texts = [], []
        for doc_id, text in collection:
            doc_ids.append(doc_id)
            texts.append(text)
        if not doc_ids:
            raise InputError("the collection is empty; give at least one document")
        if kind == "plaid" and encoder.config.similarity != "cosine":
            raise InputError("a plaid index supports cosine similarity only; use --kind flat or ivfpq for l2 models")
        spec = encoder.spec()
        with storage.staged_directory(path, overwrite=overwrite) as tmp:
            options: dict[str, Any] = {"encoder": spec}
            if engine_config is not None:
                options["config"] = engine_config
            engine = _engine_class(kind)
            if family == "colbert":

                def embeddings():
                    from ..encoders.batching import progress

                    with progress(len(texts), "Encoding documents", show_progress) as bar:
                        for start in range(0, len(texts), chunk_size):
                            chunk = texts[start : start + chunk_size]
                            yield from encoder.encode_documents(chunk, batch_size=batch_size, show_progress=False)
                            bar.update(len(chunk))

                if kind in ("flat", "ivfpq"):
                    options["similarity"] = encoder.config.similarity
                engine.build(tmp / "index", doc_ids, embeddings(), **options)
            else:
                vectors = encoder.encode_documents(texts, batch_size=batch_size, show_progress=show_progress)
                engine.build(tmp / "index", doc_ids, vectors, **options)
            arrays = {}
            if store_text:
                blob, offsets = storage.encode_strings(texts)
                arrays["doc_text_bytes"] = storage.save_array(tmp, "doc_text_bytes", blob)
                arrays["doc_text_offsets"] = storage.save_array(tmp, "doc_text_offsets", offsets)
            storage.write_manifest(
                tmp, "retriever", FORMAT_VERSION, arrays,
                encoder=spec, index={"kind": kind, "path": "index"}, counts={"documents": len(doc_ids)},
            )
        return cls.open(path, encoder=encoder)

    @classmethod
    def open(cls, path: str | os.PathLike, *, encoder: Any = None, device: Any = None) -> "Retriever":
        """Reopen a retriever from its directory; the encoder is rebuilt from the manifest unless given."""
        path, manifest, index, texts = _open_parts(path)
        if encoder is None:
            from ..encoders import encoder_from_spec

            encoder = encoder_from_spec(manifest["encoder"], device=device)
        elif encoder.spec()["family"] != manifest["encoder"].get("family"):
            raise InputError(f"{path} was built with a {manifest['encoder'].get('family')} encoder, not {encoder.spec()['family']}")
        return cls(path, encoder, index, manifest, texts)

    @staticmethod
    def inspect(path: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
        """What ``latelex info`` prints, read without loading the encoder; ``verify`` checks every checksum."""
        path, manifest, index, _ = _open_parts(path)
        if verify:
            storage.verify_index(path, manifest)
            storage.verify_index(path / manifest["index"]["path"], index.manifest)
        out: dict[str, Any] = {"path": str(path), "latelex_version": manifest.get("latelex_version")}
        out.update(index.info())
        out["encoder"] = manifest["encoder"]
        out["bytes_on_disk_with_texts"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return out

    # ------------------------------------------------------------------ search

    def search(self, texts: Sequence[str], k: int = 10, *, subset: Sequence[str] | None = None, batch_size: int = 64,
               show_progress: bool | None = None, **engine_options: Any) -> list[list[Hit]]:
        """The top ``k`` documents for each query text, best first.

        ``engine_options`` go to the index's own ``search`` (e.g. ``mode="approximate"`` for an inverted index).
        """
        if k < 1:
            raise InputError(f"k must be at least 1, not {k}")
        if len(texts) == 0:
            return []
        encoded = self.encoder.encode_queries(list(texts), batch_size=batch_size, show_progress=show_progress)
        return self.index.search(encoded, k=k, subset=subset, **engine_options)

    def search_queries(self, queries: Mapping[str, str] | Iterable[tuple[str, str]], k: int = 10, *,
                       subset: Sequence[str] | None = None, batch_size: int = 64, show_progress: bool | None = None,
                       **engine_options: Any) -> Run:
        """Search many identified queries (``{qid: text}`` or ``(qid, text)`` pairs); returns a run ``{qid: hits}``."""
        pairs = query_pairs(queries)
        qids = [q for q, _ in pairs]
        hits = self.search([t for _, t in pairs], k=k, subset=subset, batch_size=batch_size, show_progress=show_progress,
                           **engine_options)
        return dict(zip(qids, hits))

    # ------------------------------------------------------------------ documents

    def document(self, doc_id: str) -> str:
        """The stored text of ``doc_id`` (raises if the index was built without ``store_text``)."""
        if self._texts is None:
            raise LatelexError(f"{self.path} was built without document texts (store_text=False)")
        if self._positions is None:
            self._positions = {d: i for i, d in enumerate(self.index.doc_ids)}
        position = self._positions.get(doc_id)
        if position is None:
            raise InputError(f"no document {doc_id!r} in {self.path}")
        blob, offsets = self._texts
        return bytes(blob[int(offsets[position]) : int(offsets[position + 1])]).decode("utf-8")

    @property
    def has_texts(self) -> bool:
        """Whether the index keeps document texts (see :meth:`document`)."""
        return self._texts is not None

    def __len__(self) -> int:
        return len(self.index)

    def info(self) -> dict[str, Any]:
        """Kind, counts, encoder and sizes, as ``latelex info`` prints them."""
        return self.inspect(self.path)

    def __repr__(self) -> str:
        return f"Retriever(path={str(self.path)!r}, documents={len(self)}, index={self.manifest['index']['kind']}, encoder={self.encoder!r})"


def _open_parts(path: str | os.PathLike):
    path = Path(path).expanduser().resolve()
    manifest = storage.read_manifest(path, ("retriever",), FORMAT_VERSION)
    index = _open_engine(manifest["index"]["kind"], path / manifest["index"]["path"])
    texts = None
    if "doc_text_bytes" in manifest["arrays"]:
        texts = (
            storage.load_array(path, manifest, "doc_text_bytes"),
            storage.load_array(path, manifest, "doc_text_offsets"),
        )
    return path, manifest, index, texts
