"""Document and query ids as every index (and the searchers over them) checks them.

The late-interaction indexes (flat, ivfpq, plaid) add their build-time checks (an empty corpus, ids already in
the index) in :mod:`latelex.index.token_vectors` on top of these.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import DuplicateIdError, InputError


def check_doc_ids(doc_ids: Sequence[str], offset: int = 0) -> list[str]:
    """The ids as a list, after checking they are non-empty, unique strings.

    ``offset``: the position of the first id in a longer stream (errors name positions in the stream).
    """
    if isinstance(doc_ids, str):
        raise InputError("doc_ids must be a list of strings, not a single string")
    doc_ids = list(doc_ids)
    seen: dict[str, int] = {}
    for i, doc_id in enumerate(doc_ids):
        if not isinstance(doc_id, str):
            raise InputError(f"document id at position {offset + i} is a {type(doc_id).__name__}, not a string")
        if not doc_id:
            raise InputError(f"document id at position {offset + i} is empty; every document needs an id")
        first = seen.setdefault(doc_id, i)
        if first != i:
            raise DuplicateIdError(f"document id {doc_id!r} appears twice (positions {offset + first} and "
                                   f"{offset + i}); ids must be unique")
    return doc_ids


def subset_positions(subset: Sequence[str], positions: Mapping[str, int]) -> np.ndarray:
    """Ascending unique positions of the ``subset`` ids, looked up in ``positions`` (id -> position)."""
    if isinstance(subset, str):
        raise InputError("subset must be a list of document ids, not a single string")
    found, unknown = [], []
    for doc_id in subset:
        i = positions.get(doc_id)
        if i is None:
            unknown.append(doc_id)
        else:
            found.append(i)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise InputError(f"subset names {len(unknown)} document id(s) not in the index: {shown}")
    return np.unique(np.asarray(found, dtype=np.int64))


def query_pairs(queries: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(qid, text)`` pairs of ``{qid: text}`` or an iterable of pairs, after checking there is at least one
    and the query ids are unique."""
    pairs = list(queries.items()) if isinstance(queries, Mapping) else list(queries)
    if not pairs:
        raise InputError("no queries to search")
    qids = [q for q, _ in pairs]
    if len(set(qids)) != len(qids):
        raise InputError("query ids must be unique")
    return pairs
