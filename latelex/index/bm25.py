"""A BM25 index: a thin, persistent wrapper over `bm25s <https://github.com/xhluca/bm25s>`_.

bm25s computes every (term, document) BM25 contribution at build time and keeps them as a term-major sparse
matrix, so a query is scored by summing the posting lists of its terms. This module adds what a latelex index
needs around it: string document ids, a frozen :class:`BM25Config`, input checks with one-line errors,
deterministic top-k with a ``subset`` filter, and an atomically published directory.

On disk (kind ``"bm25"``, format 1)::

    manifest.json                   written last: config, counts, bm25s version, size and SHA-256 of every file
    doc_ids_blob.npy                UTF-8 document ids, concatenated
    doc_ids_offsets.npy             (N + 1,) int64 offsets into the blob
    bm25s/data.csc.index.npy        (nnz,) float32 BM25 contributions, term-major       } written by bm25s's own
    bm25s/indices.csc.index.npy     (nnz,) int32 document numbers                        } ``BM25.save`` with
    bm25s/indptr.csc.index.npy      (V + 1,) posting-list offsets per term               } allow_pickle=False:
    bm25s/vocab.index.json          {term: term number}                                  } plain .npy arrays
    bm25s/params.index.json         k1, b, delta, method, dtypes, document count         } and JSON
    bm25s/nonoccurrence_array.index.npy   (V,) float32, only for "bm25l" and "bm25+"

An index built with :class:`CollectionStatistics` (``build(..., statistics=...)``; the shards of a sharded BM25
index) scores its documents with another collection's document count, average length and document frequencies
instead of its own, so that its scores equal those of one index over that whole collection; its manifest records
them (``collection``: documents, tokens, terms).

Opening never unpickles: arrays are read with ``allow_pickle=False`` and memory-mapped, the rest is JSON.
Text is tokenised by ``bm25s.tokenize`` (scikit-learn's ``\\b\\w\\w+\\b`` pattern), optionally lower-cased, with
English stopwords removed and words reduced by PyStemmer's Snowball stemmer, the same way for documents and
queries.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import config_from_dict, config_to_dict
from ..errors import ConfigError, IndexFormatError, InputError
from ..fsio import file_sha256
from ..npyio import load_npy
from ..types import Hit, Run
from . import storage
from .ids import check_doc_ids, query_pairs, subset_positions

KIND = "bm25"
FORMAT_VERSION = 1
#: Sub-directory holding bm25s's own saved files.
BM25S_DIR = "bm25s"
_BM25S_ARRAYS = {
    "bm25s_data": "data.csc.index.npy",
    "bm25s_indices": "indices.csc.index.npy",
    "bm25s_indptr": "indptr.csc.index.npy",
}
_BM25S_NONOCCURRENCE = ("bm25s_nonoccurrence", "nonoccurrence_array.index.npy")
_BM25S_JSON = ("vocab.index.json", "params.index.json")
_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


@dataclass(frozen=True)
class BM25Config:
    """How texts are tokenised and scored.

    ``method``: bm25s's BM25 variant (``"lucene"``, ``"robertson"``, ``"atire"``, ``"bm25l"``, ``"bm25+"``), with
    parameters ``k1`` (term-frequency saturation), ``b`` (length normalisation) and ``delta`` (used by
    ``"bm25l"`` and ``"bm25+"`` only). ``stopwords``: ``"en"`` drops bm25s's English stopword list, ``None`` keeps
    every word. ``stemmer``: ``"english"`` applies PyStemmer's Snowball stemmer, ``None`` none. ``lowercase``
    lower-cases texts before splitting them. The defaults (English stopwords, Snowball stemmer, Lucene BM25 with
    k1 = 1.5, b = 0.75) are the ones behind the BM25 reference figures of the shared datasets.
    """

    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    delta: float = 0.5
    stopwords: str | None = "en"
    stemmer: str | None = "english"
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"BM25 method must be one of {', '.join(_METHODS)}, not {self.method!r}")
        for name in ("k1", "b", "delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"BM25 {name} must be a finite number, not {value!r}")
            object.__setattr__(self, name, float(value))
        if self.k1 < 0:
            raise ConfigError(f"BM25 k1 must be >= 0, not {self.k1}")
        if not 0.0 <= self.b <= 1.0:
            raise ConfigError(f"BM25 b must lie in [0, 1], not {self.b}")
        if self.delta < 0:
            raise ConfigError(f"BM25 delta must be >= 0, not {self.delta}")
        if self.stopwords not in ("en", None):
            raise ConfigError(f"BM25 stopwords must be 'en' or None, not {self.stopwords!r}")
        if self.stemmer not in ("english", None):
            raise ConfigError(f"BM25 stemmer must be 'english' or None, not {self.stemmer!r}")
        if not isinstance(self.lowercase, bool):
            raise ConfigError(f"BM25 lowercase must be true or false, not {self.lowercase!r}")


@dataclass(frozen=True)
class CollectionStatistics:
    """What BM25 scores depend on beyond a document's own terms: the number of ``documents``, their total length
    in terms (``tokens``; the average length is ``tokens / documents``) and each term's document frequency
    (``document_frequencies``: ``{term: documents containing it}``), as :class:`BM25Index` tokenises texts.

    Made by :func:`collection_statistics`; statistics of disjoint parts of a collection add up (``a + b``) to the
    statistics of the whole. Plain values, so they pickle (a shard on another process receives them).
    """

    documents: int
    tokens: int
    document_frequencies: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("documents", "tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"collection statistics: {name} must be a non-negative integer, not {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.document_frequencies, Mapping):
            raise InputError("collection statistics: document_frequencies must map terms to document counts")

    def __add__(self, other: "CollectionStatistics") -> "CollectionStatistics":
        if not isinstance(other, CollectionStatistics):
            return NotImplemented
        merged = Counter(self.document_frequencies)
        merged.update(other.document_frequencies)
        return CollectionStatistics(self.documents + other.documents, self.tokens + other.tokens, dict(merged))

    @property
    def average_length(self) -> float:
        """Average document length in terms (0 for no documents)."""
        return self.tokens / self.documents if self.documents else 0.0

    def summary(self) -> dict[str, int]:
        """What an index's manifest records of them: documents, tokens and the number of terms."""
        return {"documents": self.documents, "tokens": self.tokens, "terms": len(self.document_frequencies)}


def collection_statistics(texts: Sequence[str], config: BM25Config | None = None) -> CollectionStatistics:
    """The :class:`CollectionStatistics` of ``texts`` as an index of ``config`` tokenises them (the same call as
    :meth:`BM25Index.build`: a text with no indexable word counts as a document of length 0)."""
    config = BM25Config() if config is None else config
    if not isinstance(config, BM25Config):
        raise InputError(f"config must be a BM25Config or None, not {type(config).__name__}")
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string")
    if not texts:
        return CollectionStatistics(0, 0, {})
    tokens = _tokenize_corpus(_import_bm25s(), texts, config)
    terms = {i: term for term, i in tokens.vocab.items()}
    counts: Counter = Counter()
    for ids in tokens.ids:
        counts.update(set(ids))
    return CollectionStatistics(len(texts), sum(len(ids) for ids in tokens.ids),
                                {terms[i]: n for i, n in counts.items()})


class BM25Index:
    """Lexical top-k search with BM25 over N texts. Build with :meth:`build`, reopen with :meth:`open`,
    query with :meth:`search_text` (texts) or :meth:`search_queries` (``{qid: text}``, returns a run).

    The constructor only stores fields; :meth:`open` loads them.
    """

    #: checksums of large memory-mapped arrays still to check, set by open() and checked at the first search
    _lazy: storage.LazyChecks | None = None

    def __init__(self, path: Path, manifest: dict[str, Any], config: BM25Config, model: Any,
                 ids_blob: np.ndarray, ids_offsets: np.ndarray) -> None:
        self.path = path
        self._manifest = manifest
        self.config = config
        self._model = model  # a bm25s.BM25 over memory-mapped arrays
        self._ids_blob = ids_blob
        self._ids_offsets = ids_offsets
        self._doc_ids: list[str] | None = None
        self._positions: dict[str, int] | None = None
        self._stemmer: Any = None

    # ------------------------------------------------------------------ building and opening

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        *,
        config: BM25Config | None = None,
        overwrite: bool = False,
        statistics: CollectionStatistics | None = None,
    ) -> "BM25Index":
        """Tokenise ``texts`` (one per id of ``doc_ids``), index them with bm25s and publish the index at ``path``.

        The directory is built beside ``path`` and moved into place only when complete; an existing ``path`` is
        an error unless ``overwrite``, and is left untouched if the build fails. Raises :class:`InputError` for an
        empty corpus, a text that is not a string, or as many ids as texts not given, and
        :class:`DuplicateIdError` for an id given twice. A text with no indexable word (blank, or only
        stopwords) is kept: it simply never matches.

        ``statistics``: score with these collection statistics (of a collection these texts are part of, from
        :func:`collection_statistics` with the same ``config``) instead of the texts' own, so that every score equals
        the one an index of that whole collection gives (a shard of a sharded index). For ``"bm25l"`` and ``"bm25+"``
        the index then also knows every term of the collection (their non-occurrence score counts for every query
        term). Raises :class:`InputError` when they do not cover the texts (fewer documents, or a term the texts
        hold more often than they count).
        """
        config = BM25Config() if config is None else config
        if not isinstance(config, BM25Config):
            raise InputError(f"config must be a BM25Config or None, not {type(config).__name__}")
        doc_ids = check_doc_ids(doc_ids)
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings, not a single string")
        texts = list(texts)
        if len(texts) != len(doc_ids):
            raise InputError(f"{len(doc_ids)} document ids but {len(texts)} texts; pass one text per id")
        if not texts:
            raise InputError("empty corpus: a BM25 index needs at least one document")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"document {doc_ids[i]!r} has a {type(text).__name__} text, not a string")

        if statistics is not None and not isinstance(statistics, CollectionStatistics):
            raise InputError(f"statistics must be CollectionStatistics or None, not {type(statistics).__name__}")

        bm25s = _import_bm25s()
        tokens = _tokenize_corpus(bm25s, texts, config)
        if statistics is None:
            model = bm25s.BM25(k1=config.k1, b=config.b, delta=config.delta, method=config.method)
        else:
            tokens, model = _model_with_statistics(bm25s, config, tokens, statistics)
        model.index(tokens, show_progress=False)
        blob, offsets = storage.encode_strings(doc_ids)

        with storage.staged_directory(path, overwrite=overwrite) as tmp:
            model.save(str(tmp / BM25S_DIR), allow_pickle=False, show_progress=False)
            if (tmp / BM25S_DIR / "corpus.jsonl").exists():
                raise IndexFormatError("internal error: bm25s saved a corpus; BM25Index stores ids only")
            arrays = {
                "doc_ids_blob": storage.save_array(tmp, "doc_ids_blob", blob),
                "doc_ids_offsets": storage.save_array(tmp, "doc_ids_offsets", offsets),
            }
            names = dict(_BM25S_ARRAYS)
            if config.method in ("bm25l", "bm25+"):
                names[_BM25S_NONOCCURRENCE[0]] = _BM25S_NONOCCURRENCE[1]
            for name, file in names.items():
                arrays[name] = _array_entry(tmp, f"{BM25S_DIR}/{file}")
            files = {file: _file_entry(tmp, f"{BM25S_DIR}/{file}") for file in _BM25S_JSON}
            storage.write_manifest(
                tmp,
                kind=KIND,
                format_version=FORMAT_VERSION,
                arrays=arrays,
                files=files,
                config=config_to_dict(config),
                counts={
                    "documents": len(doc_ids),
                    "vocabulary": len(model.vocab_dict),
                    "nnz": int(arrays["bm25s_data"]["shape"][0]),
                },
                bm25s_version=_bm25s_version(bm25s),
                **({} if statistics is None else {"collection": statistics.summary()}),
            )
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "BM25Index":
        """Open the index in ``path`` with its arrays memory-mapped; ``verify`` also checks every checksum."""
        path = Path(path).expanduser().resolve()
        manifest = storage.read_manifest(path, (KIND,), max_version=FORMAT_VERSION)
        try:
            config = config_from_dict(BM25Config, manifest["config"])
            n = int(manifest["counts"]["documents"])
            files = dict(manifest["files"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise IndexFormatError(f"{path}/manifest.json lacks a valid config, counts or files ({exc}); "
                                   "rebuild the index") from None
        _check_bm25s_names(path, manifest)
        lazy = storage.LazyChecks()  # the large arrays: checked at the first search
        arrays = {name: storage.load_array(path, manifest, name, verify=verify, lazy=lazy) for name in manifest["arrays"]}
        for name in ("doc_ids_blob", "doc_ids_offsets", *_BM25S_ARRAYS):
            if name not in arrays:
                raise IndexFormatError(f"{path}: manifest lists no array {name!r}; rebuild the index")
        for file in _BM25S_JSON:
            entry = files.get(file)
            if entry is None:
                raise IndexFormatError(f"{path}: manifest lists no file {file!r}; rebuild the index")
            _check_file(path, entry, verify)
        ids_blob, ids_offsets = arrays["doc_ids_blob"], arrays["doc_ids_offsets"]
        if ids_offsets.shape != (n + 1,) or int(ids_offsets[-1]) != ids_blob.shape[0]:
            raise IndexFormatError(f"{path}: the document ids do not agree with the manifest's counts; rebuild the index")

        bm25s = _import_bm25s()
        try:
            model = _load_bm25s_model(bm25s, path / BM25S_DIR, arrays)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise IndexFormatError(f"{path}/{BM25S_DIR} cannot be read by bm25s ({exc}); rebuild the index") from None
        indptr = model.scores["indptr"]
        if int(model.scores["num_docs"]) != n or int(indptr[-1]) != model.scores["data"].shape[0]:
            raise IndexFormatError(f"{path}: the bm25s arrays do not agree with the manifest's counts; rebuild the index")
        index = cls(path, manifest, config, model, ids_blob, ids_offsets)
        index._lazy = lazy
        return index

    # ------------------------------------------------------------------ properties

    @property
    def manifest(self) -> dict[str, Any]:
        """The index's manifest (kind, format version, config, counts, bm25s version, checksums)."""
        return self._manifest

    @property
    def doc_ids(self) -> list[str]:
        """The document ids, in index order (decoded on first use)."""
        if self._doc_ids is None:
            self._doc_ids = storage.decode_strings(self._ids_blob, self._ids_offsets)
        return self._doc_ids

    @property
    def vocab_size(self) -> int:
        """Number of distinct (stemmed) terms, including bm25s's empty-token placeholder."""
        return int(self._manifest["counts"]["vocabulary"])

    def __len__(self) -> int:
        return int(self._ids_offsets.shape[0]) - 1

    def __repr__(self) -> str:
        c = self.config
        return (f"BM25Index({str(self.path)!r}, documents={len(self)}, method={c.method!r}, k1={c.k1}, b={c.b}, "
                f"stopwords={c.stopwords!r}, stemmer={c.stemmer!r})")

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary: kind, documents, vocabulary, stored scores, config, bm25s version, bytes on disk."""
        return {
            "kind": KIND,
            "format_version": int(self._manifest.get("format_version", FORMAT_VERSION)),
            "documents": len(self),
            "vocab_size": self.vocab_size,
            "nnz": int(self._manifest["counts"]["nnz"]),
            "config": config_to_dict(self.config),
            "bm25s_version": self._manifest.get("bm25s_version"),
            **({"collection": self._manifest["collection"]} if self._manifest.get("collection") else {}),
            "bytes_on_disk": sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file()),
        }

    # ------------------------------------------------------------------ search

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """The terms of each text as this index sees them (lower-cased, stopwords removed, stemmed)."""
        _check_queries(texts)
        bm25s = _import_bm25s()
        return bm25s.tokenize(list(texts), lower=self.config.lowercase, stopwords=_stopwords(self.config),
                              stemmer=self._query_stemmer(), return_ids=False, show_progress=False)

    def scores(self, text: str) -> np.ndarray:
        """(N,) float32 BM25 score of every document for one query text, in index order (0 where no term matches,
        plus the constant non-occurrence term for ``"bm25l"`` and ``"bm25+"``)."""
        ids = self._term_ids(self.tokenize([text])[0])
        if self._lazy is not None:
            self._lazy.ensure_all()
        if ids.size == 0:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self._model.get_scores_from_ids(ids.tolist()), dtype=np.float32)

    def search_text(self, queries: Sequence[str], k: int = 10, subset: Sequence[str] | None = None) -> list[list[Hit]]:
        """The ``k`` best documents for each query text by BM25, best first (ties: earlier document first).

        Only documents containing at least one query term are returned, so a list can be shorter than ``k``; a
        query whose terms are all stopwords or absent from the corpus gets an empty list. ``subset``: rank only
        these document ids (an unknown id raises :class:`InputError`; an empty subset gives empty lists).
        A query that is blank or not a string raises :class:`InputError`; no queries give no lists.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        allowed = self._subset_mask(subset)
        if self._lazy is not None:
            self._lazy.ensure_all()
        ids = self.doc_ids
        data, indices, indptr = (self._model.scores[name] for name in ("data", "indices", "indptr"))
        results: list[list[Hit]] = []
        for terms in self.tokenize(queries):
            term_ids = self._term_ids(terms)
            if term_ids.size == 0:
                results.append([])
                continue
            matched = np.unique(np.concatenate([indices[indptr[t] : indptr[t + 1]] for t in term_ids]))
            if allowed is not None:
                matched = matched[allowed[matched]]
            if matched.size == 0:
                results.append([])
                continue
            full = self._model.get_scores_from_ids(term_ids.tolist())
            positions, best = _top_k(matched, np.asarray(full[matched], dtype=np.float32), int(k))
            results.append([Hit(ids[p], s) for p, s in zip(positions.tolist(), best.tolist())])
        return results

    def search_queries(self, queries: Mapping[str, str] | Iterable[tuple[str, str]], k: int = 10, *,
                       subset: Sequence[str] | None = None) -> Run:
        """Search identified queries (``{qid: text}`` or ``(qid, text)`` pairs); returns a run ``{qid: hits}``.

        The same call shape as :meth:`latelex.search.retriever.Retriever.search_queries`, so a BM25 index can be
        a member of a :class:`latelex.search.hybrid.HybridSearcher`.
        """
        pairs = query_pairs(queries)
        return dict(zip([q for q, _ in pairs], self.search_text([t for _, t in pairs], k=k, subset=subset)))

    def term_contributions(self, text: str, doc_id: str) -> list[tuple[str, float]]:
        """How each term of the query ``text`` adds to the BM25 score of document ``doc_id``: ``(term, contribution)``
        pairs in the order the terms first occur in the query, for the terms the document contains.

        A term repeated in the query counts once per repeat (as :meth:`search_text` scores it), so its contribution
        is that many times its stored weight. For ``"bm25l"`` and ``"bm25+"`` every query term of the index's
        vocabulary also adds its constant non-occurrence score, so a term the document lacks is listed too. The
        contributions sum to ``scores(text)`` at the document (to float32 rounding).

        Raises:
            InputError: ``text`` is blank or ``doc_id`` is not in the index.
        """
        terms = self.tokenize([text])[0]
        position = self._position(doc_id)
        if self._lazy is not None:
            self._lazy.ensure_all()
        vocab = self._model.vocab_dict
        data, indices, indptr = (self._model.scores[name] for name in ("data", "indices", "indptr"))
        nonoccurrence = self._model.nonoccurrence_array
        counts: dict[str, int] = {}
        for term in terms:
            if term and term in vocab:
                counts[term] = counts.get(term, 0) + 1
        out = []
        for term, count in counts.items():
            t = vocab[term]
            start, stop = int(indptr[t]), int(indptr[t + 1])
            hits = np.flatnonzero(np.asarray(indices[start:stop]) == position)
            weight = float(data[start + int(hits[0])]) if hits.size else 0.0
            if nonoccurrence is not None:
                weight += float(nonoccurrence[t])
            if hits.size or weight != 0.0:
                out.append((term, count * weight))
        return out

    def term_spans(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """Where each term of ``text`` occurs in it: ``{term: [(start, end), ...]}``, the character spans of the words
        this index's tokenisation turns into that term (the same split, lower-casing, stopwords and stemming as
        documents and queries; stopwords have no term)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, not {type(text).__name__}")
        words = list(re.finditer(_token_pattern(), text))
        if not words:
            return {}
        out: dict[str, list[tuple[int, int]]] = {}
        for match, terms in zip(words, self.tokenize([m.group() for m in words])):
            for term in terms:
                if term:
                    out.setdefault(term, []).append((match.start(), match.end()))
        return out

    # ------------------------------------------------------------------ helpers

    def _position(self, doc_id: str) -> int:
        if self._positions is None:
            self._positions = {d: i for i, d in enumerate(self.doc_ids)}
        position = self._positions.get(doc_id) if isinstance(doc_id, str) else None
        if position is None:
            raise InputError(f"no document {doc_id!r} in {self.path}")
        return position

    def _term_ids(self, terms: list[str]) -> np.ndarray:
        vocab = self._model.vocab_dict
        return np.asarray([vocab[t] for t in terms if t and t in vocab], dtype=np.int64)

    def _query_stemmer(self) -> Any:
        if self._stemmer is None and self.config.stemmer is not None:
            self._stemmer = _make_stemmer(self.config)
        return self._stemmer

    def _subset_mask(self, subset: Sequence[str] | None) -> np.ndarray | None:
        if subset is None:
            return None
        if self._positions is None:
            self._positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        mask = np.zeros(len(self), dtype=bool)
        mask[subset_positions(subset, self._positions)] = True
        return mask


def _top_k(positions: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of (M,) ``scores`` at ascending (M,) ``positions``: best first, ties by lower position.

    numpy only (no torch import for a lexical search): a partition finds the k-th best score, then the few
    scores at or above it are sorted by (score descending, position ascending).
    """
    if scores.shape[0] > k:
        threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        keep = scores >= threshold
        positions, scores = positions[keep], scores[keep]
    order = np.lexsort((positions, -scores))[:k]
    return positions[order], scores[order]


def _import_bm25s():
    try:
        import bm25s
    except ImportError:
        raise InputError("BM25 needs the bm25s package: pip install 'bm25s>=0.3' PyStemmer") from None
    import logging

    # bm25s sets its own logger to DEBUG, which prints "Building index ..." lines through any handler (even under -q)
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _load_bm25s_model(bm25s: Any, directory: Path, arrays: dict[str, np.ndarray]) -> Any:
    """The ``bm25s.BM25`` saved in ``directory``, as ``bm25s.BM25.load(mmap=True)`` makes it (the same parameters,
    vocabulary and attributes) but over ``arrays``, the score arrays latelex has already opened and checked.

    bm25s's own loader reads its ``.npy`` files with ``np.load``, whose header parser (``ast.literal_eval``) can fail
    with ``SystemError`` while another thread parses (CPython 3.11, see :mod:`latelex.npyio`): a sharded index opens
    its shards from several threads. Reading every array through :func:`latelex.npyio.load_npy` avoids it, and the
    arrays are mapped once, not twice."""
    params = json.loads((directory / "params.index.json").read_text(encoding="utf-8"))
    vocab = json.loads((directory / "vocab.index.json").read_text(encoding="utf-8"))
    if not isinstance(params, dict) or not isinstance(vocab, dict):
        raise ValueError("params.index.json and vocab.index.json must each hold a JSON object")
    original_version = params.pop("version", None)
    num_docs = params.pop("num_docs", None)
    model = bm25s.BM25(**params)
    model.vocab_dict = vocab
    model._original_version = original_version
    model.unique_token_ids_set = set(vocab.values())
    model.scores = {"data": arrays["bm25s_data"], "indices": arrays["bm25s_indices"],
                    "indptr": arrays["bm25s_indptr"], "num_docs": num_docs}
    if model.method in model.methods_requiring_nonoccurrence:
        if _BM25S_NONOCCURRENCE[0] not in arrays:
            raise KeyError(f"{_BM25S_NONOCCURRENCE[1]} (method {model.method!r} needs it)")
        model.nonoccurrence_array = arrays[_BM25S_NONOCCURRENCE[0]]
    else:
        model.nonoccurrence_array = None
    return model


def _tokenize_corpus(bm25s: Any, texts: list[str], config: BM25Config) -> Any:
    """``texts`` as bm25s indexes them: term ids per text and the vocabulary (``bm25s.tokenization.Tokenized``)."""
    return bm25s.tokenize(texts, lower=config.lowercase, stopwords=_stopwords(config), stemmer=_make_stemmer(config),
                          return_ids=True, show_progress=False)


def _model_with_statistics(bm25s: Any, config: BM25Config, tokens: Any,
                           statistics: CollectionStatistics) -> tuple[Any, Any]:
    """The tokens (vocabulary widened to the collection's for "bm25l" and "bm25+") and an unbuilt bm25s model that
    scores them with ``statistics`` (see :func:`_collection_model_class`)."""
    frequencies = statistics.document_frequencies
    terms = {i: term for term, i in tokens.vocab.items()}
    local: Counter = Counter()
    for ids in tokens.ids:
        local.update(set(ids))
    if statistics.documents < len(tokens.ids) or statistics.tokens < sum(len(ids) for ids in tokens.ids):
        raise InputError(f"the collection statistics ({statistics.documents} documents, {statistics.tokens} terms) do "
                         f"not cover these {len(tokens.ids)} texts; compute them over a collection that includes them")
    for i, n in local.items():
        if frequencies.get(terms[i], 0) < n:
            raise InputError(f"the collection statistics count term {terms[i]!r} in {frequencies.get(terms[i], 0)} "
                             f"documents, but these texts hold it in {n}; compute them over a collection that includes "
                             f"these texts, with the same BM25 configuration")
    vocab = dict(tokens.vocab)
    if config.method in ("bm25l", "bm25+"):  # every query term adds its non-occurrence score, present here or not
        for term in sorted(frequencies):
            if term and term not in vocab:
                vocab[term] = len(vocab)
    frequency_of_id = {i: int(frequencies.get(term, 0)) for term, i in vocab.items()}
    model = _collection_model_class(bm25s)(k1=config.k1, b=config.b, delta=config.delta, method=config.method)
    # np.float64, as bm25s's own mean is: the same dtype promotion, so the same float32 contributions
    model.collection = (statistics.documents, np.float64(statistics.tokens) / statistics.documents, frequency_of_id)
    return type(tokens)(ids=tokens.ids, vocab=vocab), model


_COLLECTION_MODEL: Any = None


def _collection_model_class(bm25s: Any) -> Any:
    """A ``bm25s.BM25`` whose :meth:`build_index_from_ids` (bm25s's documented extension point) takes the document
    count, average length and document frequencies from ``collection`` instead of the corpus it indexes.

    It is bm25s's own method with those three inputs replaced, calling the same ``bm25s.scoring`` functions, so that
    with a collection's statistics a part of it gets exactly the contributions an index of the whole would store
    for its documents (and with the part's own statistics, bm25s's: the tests compare the arrays byte for byte).
    """
    global _COLLECTION_MODEL
    if _COLLECTION_MODEL is not None:
        return _COLLECTION_MODEL
    from bm25s import scoring

    needed = ("_calculate_doc_freqs", "_build_idf_array", "_build_nonoccurrence_array",
              "_build_scores_and_indices_for_matrix", "_select_idf_scorer", "_select_tfc_scorer")
    missing = [name for name in needed if not hasattr(scoring, name)]
    if missing:
        raise InputError(f"BM25 with collection statistics (a sharded BM25 index) needs bm25s >= 0.3, whose "
                         f"bm25s.scoring has {missing[0]}; pip install -U bm25s")

    class CollectionBM25(bm25s.BM25):
        #: (documents, average length as np.float64, {term id: document frequency}) of the whole collection
        collection: Any = None

        def build_index_from_ids(self, unique_token_ids, corpus_token_ids, show_progress=True, leave_progress=False):
            n_docs, avg_doc_len, frequency_of_id = self.collection
            local = scoring._calculate_doc_freqs(corpus_tokens=corpus_token_ids, unique_tokens=unique_token_ids,
                                                 show_progress=False)
            doc_frequencies = {t: frequency_of_id[t] for t in local}
            idf_fn = scoring._select_idf_scorer(self.idf_method)
            if self.method in self.methods_requiring_nonoccurrence:
                self.nonoccurrence_array = scoring._build_nonoccurrence_array(
                    doc_frequencies=doc_frequencies, n_docs=n_docs, compute_idf_fn=idf_fn,
                    calculate_tfc_fn=scoring._select_tfc_scorer(self.method), l_d=avg_doc_len, l_avg=avg_doc_len,
                    k1=self.k1, b=self.b, delta=self.delta, dtype=self.dtype)
            else:
                self.nonoccurrence_array = None
            idf_array = scoring._build_idf_array(doc_frequencies=doc_frequencies, n_docs=n_docs,
                                                 compute_idf_fn=idf_fn, dtype=self.dtype)
            # the local frequencies size its arrays (one entry per (document, term) of this corpus)
            scores_flat, doc_idx, vocab_idx = scoring._build_scores_and_indices_for_matrix(
                corpus_token_ids=corpus_token_ids, idf_array=idf_array, avg_doc_len=avg_doc_len,
                doc_frequencies=local, k1=self.k1, b=self.b, delta=self.delta, show_progress=False,
                leave_progress=False, dtype=self.dtype, int_dtype=self.int_dtype, method=self.method,
                nonoccurrence_array=self.nonoccurrence_array)
            data, indices, indptr = self._np_csc(data=scores_flat, rows=doc_idx, cols=vocab_idx,
                                                 shape=(len(corpus_token_ids), len(unique_token_ids)))
            return {"data": data.astype(self.dtype), "indices": indices, "indptr": indptr,
                    "num_docs": len(corpus_token_ids)}

    _COLLECTION_MODEL = CollectionBM25
    return CollectionBM25


def _token_pattern() -> str:
    """The word pattern ``bm25s.tokenize`` splits texts with (its default, which :class:`BM25Index` uses)."""
    import inspect

    return inspect.signature(_import_bm25s().tokenize).parameters["token_pattern"].default


def _bm25s_version(bm25s: Any) -> str:
    return str(getattr(bm25s, "__version__", "unknown"))


def _stopwords(config: BM25Config) -> str | None:
    return "en" if config.stopwords == "en" else None


def _make_stemmer(config: BM25Config) -> Any:
    if config.stemmer is None:
        return None
    try:
        import Stemmer
    except ImportError:
        raise InputError("the 'english' stemmer needs PyStemmer: pip install PyStemmer, or use stemmer=None") from None
    return Stemmer.Stemmer(config.stemmer)


def _file_entry(directory: Path, relative: str) -> dict[str, Any]:
    path = directory / relative
    return {"file": relative, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _array_entry(directory: Path, relative: str) -> dict[str, Any]:
    """The manifest entry (as :func:`storage.save_array` makes it) of an .npy file bm25s wrote."""
    array = load_npy(directory / relative, mmap=True)
    if array.dtype == object:
        raise IndexFormatError(f"internal error: bm25s wrote {relative} with dtype object")
    return {"dtype": array.dtype.str, "shape": list(array.shape), **_file_entry(directory, relative)}


def _check_file(directory: Path, entry: dict[str, Any], verify: bool) -> None:
    """Size, and SHA-256 when ``verify`` or when the file is small, of a bm25s JSON file the manifest lists (under
    the one name bm25s reads it from)."""
    if not isinstance(entry, dict) or entry.get("file") not in {f"{BM25S_DIR}/{f}" for f in _BM25S_JSON}:
        raise IndexFormatError(f"{directory}/{storage.MANIFEST} names a bm25s file other than the ones bm25s reads; "
                               "the index is damaged or not from latelex")
    storage.check_file(directory, {"files": {"entry": entry}}, "entry", verify=verify)


def _check_bm25s_names(directory: Path, manifest: dict[str, Any]) -> None:
    """The manifest's bm25s arrays must be the files bm25s itself opens, so that their checks cover what is read."""
    expected = {**_BM25S_ARRAYS, _BM25S_NONOCCURRENCE[0]: _BM25S_NONOCCURRENCE[1]}
    for name, file in expected.items():
        entry = manifest["arrays"].get(name)
        if entry is not None and (not isinstance(entry, dict) or entry.get("file") != f"{BM25S_DIR}/{file}"):
            shown = entry.get("file") if isinstance(entry, dict) else entry
            raise IndexFormatError(f"{directory}/{storage.MANIFEST} names {shown!r} for {name}, not the file bm25s "
                                   "reads; the index is damaged or not from latelex")


def _check_queries(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InputError("pass a list of query texts, not a single string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"query {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"query {i} is empty; remove empty queries or give them text")


__all__ = ["BM25Config", "BM25Index", "CollectionStatistics", "collection_statistics"]
