"""Taking learned sparse vectors to other engines and back: Anserini's JsonVectorCollection and PISA's binary
collection. Runs come back as TREC run files (:func:`latelex.data.trec.read_trec_run`).

Every function works from a :class:`~latelex.types.SparseBatch` (N vectors, CSR over V terms), N ids and the
vocabulary as a list of V token strings (``tokenizer.convert_ids_to_tokens(range(V))``). Engines store integer
impacts: a weight ``w`` becomes ``round(w * scale)`` (default scale 100, as naver/splade exports), and weights
that round to 0 are dropped.

- Anserini JsonVectorCollection: one JSON object per line, ``{"id": ..., "contents": ..., "vector": {token: int}}``,
  indexed with ``-collection JsonVectorCollection -impact -pretokenized``; queries as ``qid<TAB>tokens`` with each
  token repeated by its integer weight (``-impact -pretokenized`` topics).
- PISA binary collection ``<base>.docs`` / ``<base>.freqs`` / ``<base>.sizes`` (sequences of little-endian uint32,
  each preceded by its length; ``.docs`` starts with the one-element sequence [number of documents], then one
  sequence of document numbers per term; ``.freqs`` holds the matching integer impacts; ``.sizes`` one sequence of
  document lengths), ``<base>.documents`` (one id per line, by document number) and ``<base>.terms`` (one token
  per line, by term number; only terms with postings). Compress with ``compress_inverted_index`` and query with
  ``--scorer quantized``; queries as ``qid:token token ...`` with each token repeated by its integer weight
  (``--weighted``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import FormatError, InputError
from ..types import SparseBatch

PathLike = str | os.PathLike


def _check(ids: Sequence[str], vectors: SparseBatch, vocabulary: Sequence[str], scale: float) -> None:
    from ..scoring.sparse import check_sparse_batch

    check_sparse_batch(vectors, what="vectors", nonnegative=True)
    if isinstance(ids, str) or len(ids) != len(vectors):
        raise InputError(f"{len(ids) if not isinstance(ids, str) else 1} ids but {len(vectors)} vectors; "
                         "pass one id per vector")
    if len(vocabulary) != vectors.vocab_size:
        raise InputError(f"the vocabulary lists {len(vocabulary)} tokens but the vectors are over "
                         f"{vectors.vocab_size} terms; pass the encoder's full vocabulary")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise InputError(f"scale must be a positive number, not {scale!r}")
    for i, token in enumerate(vocabulary):
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise InputError(f"vocabulary token {i} ({token!r}) is empty or holds whitespace; "
                             "engines split queries on whitespace, so rename it")


def _integer(values: np.ndarray, scale: float) -> np.ndarray:
    return np.floor(np.asarray(values, dtype=np.float64) * scale + 0.5).astype(np.int64)


# ---------------------------------------------------------------------- Anserini


def write_json_vector_collection(path: PathLike, doc_ids: Sequence[str], vectors: SparseBatch,
                                 vocabulary: Sequence[str], *, contents: Sequence[str] | None = None,
                                 scale: float = 100) -> int:
    """Write documents as an Anserini JsonVectorCollection file (JSON lines); returns the number written.

    ``contents``: the texts to store beside the vectors (default: empty strings).
    """
    _check(doc_ids, vectors, vocabulary, scale)
    if contents is not None and len(contents) != len(vectors):
        raise InputError(f"{len(contents)} contents but {len(vectors)} vectors; pass one text per vector")
    indptr = np.asarray(vectors.indptr)
    indices = np.asarray(vectors.indices)
    weights = _integer(vectors.values, scale)
    with open(path, "w", encoding="utf-8") as f:
        for i, doc_id in enumerate(doc_ids):
            a, b = int(indptr[i]), int(indptr[i + 1])
            vector = {vocabulary[t]: w for t, w in zip(indices[a:b].tolist(), weights[a:b].tolist()) if w > 0}
            record = {"id": doc_id, "contents": "" if contents is None else contents[i], "vector": vector}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(doc_ids)


def read_json_vector_collection(path: PathLike, vocabulary: Sequence[str], *, scale: float = 100
                                ) -> tuple[list[str], SparseBatch, list[str]]:
    """Read a JsonVectorCollection file back: ``(ids, vectors (weights divided by scale), contents)``.

    A token outside ``vocabulary`` raises :class:`FormatError` naming the line.
    """
    lookup = {token: i for i, token in enumerate(vocabulary)}
    ids, texts, rows, values = [], [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id, vector = record["id"], record["vector"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise FormatError("not a JsonVectorCollection record (needs \"id\" and \"vector\")", path, number) \
                    from None
            if not isinstance(vector, dict):
                raise FormatError("\"vector\" must be an object of token: weight", path, number)
            terms, weights = [], []
            for token, weight in vector.items():
                t = lookup.get(token)
                if t is None:
                    raise FormatError(f"token {token!r} is not in the vocabulary; read with the encoder's "
                                      "vocabulary", path, number)
                if not isinstance(weight, (int, float)) or weight < 0 or weight != weight:
                    raise FormatError(f"token {token!r} has weight {weight!r}; weights must be numbers >= 0",
                                      path, number)
                terms.append(t)
                weights.append(weight)
            order = np.argsort(np.asarray(terms, dtype=np.int64), kind="stable")
            rows.append(np.asarray(terms, dtype=np.int32)[order])
            values.append((np.asarray(weights, dtype=np.float64)[order] / scale).astype(np.float32))
            ids.append(str(doc_id))
            texts.append(str(record.get("contents", "")))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([r.shape[0] for r in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    weights = np.concatenate(values) if values else np.zeros(0, np.float32)
    return ids, SparseBatch(indptr, indices, weights, len(vocabulary)), texts


def write_anserini_queries(path: PathLike, query_ids: Sequence[str], vectors: SparseBatch,
                           vocabulary: Sequence[str], *, scale: float = 100) -> int:
    """Write queries as Anserini pre-tokenised impact topics: ``qid<TAB>token token ...``, each token repeated by
    its integer weight. Returns the number written."""
    _check(query_ids, vectors, vocabulary, scale)
    with open(path, "w", encoding="utf-8") as f:
        for qid, tokens in zip(query_ids, _repeated_tokens(vectors, vocabulary, scale)):
            f.write(f"{qid}\t{tokens}\n")
    return len(query_ids)


def _repeated_tokens(vectors: SparseBatch, vocabulary: Sequence[str], scale: float) -> Iterator[str]:
    indptr, indices = np.asarray(vectors.indptr), np.asarray(vectors.indices)
    weights = _integer(vectors.values, scale)
    for i in range(len(vectors)):
        a, b = int(indptr[i]), int(indptr[i + 1])
        yield " ".join(" ".join([vocabulary[t]] * w) for t, w in zip(indices[a:b].tolist(), weights[a:b].tolist())
                       if w > 0)


# ---------------------------------------------------------------------- PISA


def _write_sequence(f, values: np.ndarray) -> None:
    np.asarray([values.shape[0]], dtype="<u4").tofile(f)
    np.asarray(values, dtype="<u4").tofile(f)


def write_pisa_collection(basename: PathLike, doc_ids: Sequence[str], vectors: SparseBatch,
                          vocabulary: Sequence[str], *, scale: float = 100) -> dict[str, int]:
    """Write PISA's binary collection (``.docs``, ``.freqs``, ``.sizes``) plus ``.documents`` and ``.terms``.

    Postings carry integer impacts ``round(w * scale)`` (zeros dropped) in place of term frequencies, for
    ``--scorer quantized``. Returns ``{"documents", "terms", "postings"}``.
    """
    from scipy.sparse import csr_matrix

    _check(doc_ids, vectors, vocabulary, scale)
    for doc_id in doc_ids:
        if not doc_id or "\n" in doc_id:
            raise InputError(f"document id {doc_id!r} is empty or holds a newline; PISA's lexicon is one id a line")
    n = len(vectors)
    weights = _integer(vectors.values, scale)
    if weights.size and int(weights.max()) > np.iinfo(np.uint32).max:
        raise InputError(f"a weight times scale {scale} exceeds 2^32; lower the scale")
    matrix = csr_matrix((weights, np.asarray(vectors.indices), np.asarray(vectors.indptr)),
                        shape=(n, vectors.vocab_size))
    matrix.eliminate_zeros()
    postings = matrix.tocsc()
    postings.sort_indices()
    base = Path(basename)
    base.parent.mkdir(parents=True, exist_ok=True)
    df = np.diff(postings.indptr)
    kept = np.flatnonzero(df > 0)
    with open(f"{base}.docs", "wb") as docs, open(f"{base}.freqs", "wb") as freqs:
        _write_sequence(docs, np.asarray([n]))
        for t in kept.tolist():
            a, b = postings.indptr[t], postings.indptr[t + 1]
            _write_sequence(docs, postings.indices[a:b])
            _write_sequence(freqs, postings.data[a:b])
    with open(f"{base}.sizes", "wb") as sizes:
        _write_sequence(sizes, np.diff(matrix.indptr))
    Path(f"{base}.documents").write_text("".join(f"{d}\n" for d in doc_ids), encoding="utf-8")
    Path(f"{base}.terms").write_text("".join(f"{vocabulary[t]}\n" for t in kept.tolist()), encoding="utf-8")
    return {"documents": n, "terms": int(kept.shape[0]), "postings": int(postings.nnz)}


def write_pisa_queries(path: PathLike, query_ids: Sequence[str], vectors: SparseBatch,
                       vocabulary: Sequence[str], *, scale: float = 100) -> int:
    """Write queries as ``qid:token token ...`` lines, each token repeated by its integer weight (PISA's
    ``--weighted`` queries). Returns the number written."""
    _check(query_ids, vectors, vocabulary, scale)
    with open(path, "w", encoding="utf-8") as f:
        for qid, tokens in zip(query_ids, _repeated_tokens(vectors, vocabulary, scale)):
            if ":" in qid:
                raise InputError(f"query id {qid!r} holds ':', which PISA reads as the id's end; rename it")
            f.write(f"{qid}:{tokens}\n")
    return len(query_ids)


def _read_sequences(path: Path) -> Iterator[np.ndarray]:
    data = np.fromfile(path, dtype="<u4")
    i = 0
    while i < data.shape[0]:
        length = int(data[i])
        if i + 1 + length > data.shape[0]:
            raise FormatError(f"a sequence of {length} numbers runs past the end of the file; re-export it", path)
        yield data[i + 1 : i + 1 + length]
        i += 1 + length


def read_pisa_collection(basename: PathLike, *, scale: float = 100) -> tuple[list[str], SparseBatch, list[str]]:
    """Read a PISA binary collection back: ``(document ids, vectors (impacts divided by scale), terms)``.

    The vectors are over the collection's own terms (``.terms`` order).
    """
    base = Path(basename)
    doc_ids = Path(f"{base}.documents").read_text(encoding="utf-8").splitlines()
    terms = Path(f"{base}.terms").read_text(encoding="utf-8").splitlines()
    sequences = _read_sequences(Path(f"{base}.docs"))
    header = next(sequences, None)
    if header is None or header.shape[0] != 1 or int(header[0]) != len(doc_ids):
        raise FormatError(f"the first sequence must be [number of documents] = [{len(doc_ids)}]", f"{base}.docs")
    doc_lists = list(sequences)
    freq_lists = list(_read_sequences(Path(f"{base}.freqs")))
    if len(doc_lists) != len(terms) or len(freq_lists) != len(terms):
        raise FormatError(f"{len(doc_lists)} document lists and {len(freq_lists)} impact lists for "
                          f"{len(terms)} terms; re-export the collection", f"{base}.docs")
    from scipy.sparse import csc_matrix

    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum([d.shape[0] for d in doc_lists], out=indptr[1:])
    rows = np.concatenate(doc_lists) if doc_lists else np.zeros(0, np.uint32)
    data = np.concatenate(freq_lists) if freq_lists else np.zeros(0, np.uint32)
    matrix = csc_matrix((data.astype(np.float64) / scale, rows.astype(np.int64), indptr),
                        shape=(len(doc_ids), len(terms))).tocsr()
    matrix.sort_indices()
    batch = SparseBatch(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32),
                        matrix.data.astype(np.float32), len(terms))
    return doc_ids, batch, terms


__all__ = [
    "write_json_vector_collection",
    "read_json_vector_collection",
    "write_anserini_queries",
    "write_pisa_collection",
    "write_pisa_queries",
    "read_pisa_collection",
]
