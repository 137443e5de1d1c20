"""What a retriever accepts as documents, turned into :class:`~latelex.types.Document` with one-line errors."""

from __future__ import annotations

import uuid
from typing import Any, Iterable, Mapping

from ..errors import DuplicateIdError, InputError
from ..types import Document
from .docstore import check_metadata


def generated_id() -> str:
    """A fresh id for a document given as a bare string (RAGatouille's convention: a UUID4)."""
    return uuid.uuid4().hex


def as_document(item: Any, position: int) -> Document:
    """One document from a :class:`Document`, a bare text (id generated), ``(id, text)``, ``(id, text, metadata)``
    or a mapping with ``id`` (or ``_id`` / ``doc_id``), ``text`` and optional ``metadata``."""
    if isinstance(item, Document):
        doc = item
    elif isinstance(item, str):
        doc = Document(generated_id(), item)
    elif isinstance(item, Mapping):
        key = next((k for k in ("id", "_id", "doc_id") if k in item), None)
        if key is None or "text" not in item:
            raise InputError(f"document at position {position} is a mapping without 'id' and 'text' keys")
        doc = Document(item[key], item["text"], item.get("metadata"))
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        doc = Document(item[0], item[1], item[2] if len(item) == 3 else None)
    else:
        raise InputError(f"document at position {position} is a {type(item).__name__}; give a text, (id, text), "
                         f"(id, text, metadata), a dict or a latelex.Document")
    if not isinstance(doc.id, str) or not doc.id:
        raise InputError(f"document at position {position} has id {doc.id!r}; ids are non-empty strings")
    if not isinstance(doc.text, str):
        raise InputError(f"document {doc.id!r} has a {type(doc.text).__name__} text, not a string")
    check_metadata(doc.metadata, doc.id)
    return doc


def as_documents(items: Iterable[Any], metadata: Mapping[str, dict] | None = None) -> list[Document]:
    """Every item as a Document (see :func:`as_document`), ids unique; ``metadata`` (``{id: fields}``) is merged
    over each document's own fields."""
    if isinstance(items, (str, bytes)):
        raise InputError("documents must be a list (of texts, (id, text) pairs or Documents), not a single string")
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        doc = as_document(item, position)
        first = seen.setdefault(doc.id, position)
        if first != position:
            raise DuplicateIdError(f"document id {doc.id!r} appears twice (positions {first} and {position}); "
                                   f"ids must be unique")
        if metadata and doc.id in metadata:
            extra = check_metadata(metadata[doc.id], doc.id)
            doc = Document(doc.id, doc.text, {**(doc.metadata or {}), **(extra or {})})
        docs.append(doc)
    return docs


def as_ids(doc_ids: Iterable[Any]) -> list[str]:
    """``doc_ids`` as a list of distinct id strings, in order (what ``delete`` takes); a single string or a
    non-string id is an :class:`InputError`."""
    if isinstance(doc_ids, str):
        raise InputError("doc_ids must be a list of document ids, not a single string")
    ids = list(dict.fromkeys(doc_ids))
    for i, d in enumerate(ids):
        if not isinstance(d, str):
            raise InputError(f"document id at position {i} is a {type(d).__name__}, not a string")
    return ids
