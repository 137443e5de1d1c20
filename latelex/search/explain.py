"""Why a document scored what it did: each query token's (or term's) share of the score and where it points in the text.

* **ColBERT** (flat, PLAID, IVFPQ): the document text is encoded again as indexing encodes it (doc_maxlen, [D]
  marker, punctuation skiplist) and the query as search encodes it ([MASK] augmentation included). For each query
  token, its :class:`Contribution` is its best similarity with any kept document token (MaxSim), with that token's
  character span in the text; the contributions sum to the exact MaxSim of the re-encoded text, its vectors taken
  at the float16 precision token-vector indexes store (so the score is the flat index's; a PLAID hit's score,
  computed from compressed vectors, differs slightly). An index built with token pooling (``pool_factor`` above 1)
  stores cluster means, not these vectors: its scores differ more, and the explanation is the unpooled document's.
* **SPLADE** (sparse, inverted): one contribution per vocabulary term the query and document vectors share,
  ``query weight * document weight``, with the spans of the document's word-pieces equal to that term (none for an
  expansion term the text lacks).
* **BM25**: one contribution per query term the document contains, its BM25 weight from the index's own statistics,
  with the spans of the words that the index's tokenisation turns into that term.

For a chunked index the document is split as the build split it, every passage is scored, and the best passage is
explained (``passage``, ``passage_span``); spans are offsets in the whole document text either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, ModelError
from ..index.token_vectors import VECTOR_DTYPE

__all__ = ["Contribution", "Explanation", "explain", "special_tokens", "query_tokens", "document_tokens"]

Span = tuple[int, int]


@dataclass(frozen=True)
class Contribution:
    """One query token's (ColBERT) or one shared term's (SPLADE, BM25) share of a document's score.

    ``query_token``: the query token as the tokenizer writes it (``"[MASK]"``, ``"vitamin"``, ``"##s"``), or the
    term. ``query_position``: ColBERT, the token's index in the encoded query (its row among the query vectors);
    SPLADE, the term's rank in the query vector by weight (0: heaviest); BM25, the term's rank in query order among
    the terms the document contains (0: the first). ``doc_token``: the matched document token (ColBERT) or the term.
    ``doc_position``: ColBERT, the matched token's index among the document's (passage's) kept vectors; ``None``
    otherwise. ``spans``: character ``(start, end)`` spans in the document text: the matched token's (ColBERT; empty
    for [CLS], [D], [SEP]), or every occurrence of the term (SPLADE, BM25; may be empty). ``score``: the share of the
    score. ``query_weight``: the query term's weight (SPLADE), else ``None``; ``doc_weight``: the document term's
    weight (SPLADE) or BM25 weight (BM25, equal to ``score``), else ``None``.
    """

    query_token: str
    query_position: int
    doc_token: str | None
    doc_position: int | None
    spans: tuple[Span, ...]
    score: float
    query_weight: float | None = None
    doc_weight: float | None = None


@dataclass(frozen=True)
class Explanation:
    """Why ``doc_id`` scored ``score`` for ``query``: ``score == sum(c.score for c in contributions)``.

    ``family``: ``"colbert"``, ``"splade"`` or ``"text"`` (BM25). ``contributions``: ColBERT, one per query token in
    query order; SPLADE and BM25, one per shared term, largest first. ``text``: the document text the spans index.
    ``passage`` / ``passage_span``: for a chunked index, the best passage's number and character span in ``text``.
    """

    doc_id: str
    query: str
    family: str
    score: float
    contributions: tuple[Contribution, ...]
    text: str | None
    passage: int | None = None
    passage_span: Span | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly the field names as keys (tuples become lists)."""
        return {
            "doc_id": self.doc_id,
            "query": self.query,
            "family": self.family,
            "score": self.score,
            "contributions": [
                {
                    "query_token": c.query_token,
                    "query_position": c.query_position,
                    "doc_token": c.doc_token,
                    "doc_position": c.doc_position,
                    "spans": [list(s) for s in c.spans],
                    "score": c.score,
                    "query_weight": c.query_weight,
                    "doc_weight": c.doc_weight,
                }
                for c in self.contributions
            ],
            "text": self.text,
            "passage": self.passage,
            "passage_span": None if self.passage_span is None else list(self.passage_span),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Explanation":
        """The inverse of :meth:`to_dict` (lists back to tuples); what :class:`latelex.client.Client` returns."""
        contributions = tuple(
            Contribution(c["query_token"], int(c["query_position"]), c.get("doc_token"), c.get("doc_position"),
                         tuple((int(a), int(b)) for a, b in c.get("spans") or ()), float(c["score"]),
                         c.get("query_weight"), c.get("doc_weight"))
            for c in data["contributions"])
        span = data.get("passage_span")
        return cls(data["doc_id"], data["query"], data["family"], float(data["score"]), contributions,
                   data.get("text"), passage=data.get("passage"),
                   passage_span=None if span is None else (int(span[0]), int(span[1])))


def explain(retriever: Any, query: str, doc_id: str) -> Explanation:
    """Explain ``doc_id``'s score for ``query`` in ``retriever`` (see :meth:`Retriever.explain`).

    Raises:
        InputError: the query is empty, ``doc_id`` is not in the index, the index keeps no texts, or it was opened
            without its encoder.
    """
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty; give a non-empty query text to explain")
    family = retriever.spec.family
    if family != "text" and retriever.encoder is None:
        raise InputError(f"{retriever.path} was opened without its encoder (load_encoder=False); reopen it with the "
                         f"encoder to explain scores")
    doc = retriever.get(doc_id)
    if not retriever.has_texts or doc.text is None:
        raise InputError(f"{retriever.path} was built without document texts (store_text=False) and explain needs "
                         f"them; rebuild the index with its texts")
    text = doc.text
    if family == "text":
        return _explain_bm25(retriever.index, query, doc_id, text)
    chunking = retriever.chunking
    if chunking is None:
        windows = [(0, len(text))]
    else:
        from .chunking import split_document

        windows = [(p.start, p.end) for p in split_document(doc_id, text, retriever.encoder.tokenizer, chunking)]
    passages = [text[a:b] for a, b in windows]
    scorer = _colbert_passages if family == "colbert" else _splade_passages
    scored = scorer(retriever.encoder, query, passages)
    best = max(range(len(scored)), key=lambda i: (_total(scored[i]), -i))
    start = windows[best][0]
    contributions = tuple(_shifted(c, start) for c in scored[best]) if start else tuple(scored[best])
    return Explanation(doc_id, query, family, _total(contributions), contributions, text,
                       passage=best if chunking is not None else None,
                       passage_span=windows[best] if chunking is not None else None)


def _total(contributions: Sequence[Contribution]) -> float:
    return float(sum(c.score for c in contributions))


def _shifted(c: Contribution, offset: int) -> Contribution:
    """``c`` with its spans moved by ``offset`` characters (from a passage's text to the document's)."""
    return replace(c, spans=tuple((a + offset, b + offset) for a, b in c.spans))


def special_tokens(encoder: Any) -> frozenset[str]:
    """The token texts ``encoder`` adds around a text's own: its tokenizer's special tokens ([CLS], [SEP], [MASK],
    [PAD], ...; not [UNK], which stands for text) and, for ColBERT, the query and document markers. Empty without an
    encoder (BM25)."""
    if encoder is None:
        return frozenset()
    tokenizer = encoder.tokenizer
    tokens = set(getattr(tokenizer, "all_special_tokens", ())) - {getattr(tokenizer, "unk_token", None)}
    config = encoder.config
    for marker in (getattr(config, "query_marker", None), getattr(config, "doc_marker", None)):
        if marker:
            tokens.update((marker, marker.strip()))
    return frozenset(tokens)


# ---------------------------------------------------------------------- ColBERT


def query_tokens(encoder: Any, query: str) -> list[str]:
    """The tokens of ``query`` that the ColBERT ``encoder`` gives a vector each, in the order of
    ``encoder.encode_queries([query])[0]``'s rows: [CLS], the [Q] marker, word-pieces, [SEP], then [MASK]s with
    query augmentation."""
    batch = encoder.tokenize_queries([query])
    keep = encoder.query_keep_mask(batch)[0]
    ids = batch["input_ids"][0][keep].tolist()
    return list(encoder.tokenizer.convert_ids_to_tokens(ids))


def document_tokens(encoder: Any, text: str) -> tuple[list[str], list[Span | None]]:
    """The tokens of ``text`` that the ColBERT ``encoder`` keeps a vector for, in the order of
    ``encoder.encode_documents([text])[0]``'s rows, and each one's character span in ``text`` (``None`` for special
    tokens: [CLS], the [D] marker, [SEP]). Truncation, marker and punctuation skiplist are the encoder's own.

    Raises:
        ModelError: the tokenizer is not a fast tokenizer (no offsets), or its tokens do not line up with the
            encoder's (a tokenizer this module does not understand).
    """
    tokenizer = encoder.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("explaining scores needs a fast (Rust) tokenizer with offset mappings; this model's "
                         "tokenizer is slow")
    content = encoder.document_token_budget + int(tokenizer.num_special_tokens_to_add(pair=False))
    encoded = tokenizer(text, truncation=True, max_length=content, add_special_tokens=True,
                        return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = list(encoded["input_ids"])
    offsets: list[Span | None] = [None if special else (int(a), int(b))
                                  for (a, b), special in zip(encoded["offset_mapping"], encoded["special_tokens_mask"])]
    marker = encoder.config.doc_marker
    if marker is not None:
        starts = {t for t in (tokenizer.cls_token_id, tokenizer.bos_token_id) if t is not None}
        at = 1 if ids and ids[0] in starts else 0
        ids.insert(at, int(tokenizer.convert_tokens_to_ids(marker)))
        offsets.insert(at, None)
    batch = encoder.tokenize_documents([text])
    if batch["input_ids"][0].tolist() != ids:
        raise ModelError("the tokenizer's offsets do not line up with the encoder's document tokens, so explain "
                         "cannot place this model's tokens in the text; please report the model")
    keep = encoder.document_keep_mask(batch)[0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    return ([t for t, k in zip(tokens, keep) if k], [o for o, k in zip(offsets, keep) if k])


def _colbert_passages(encoder: Any, query: str, passages: list[str]) -> list[list[Contribution]]:
    """For each passage text, one contribution per query token: its best document token and similarity."""
    import torch

    Q = encoder.encode_queries([query])[0].float()  # (Lq, dim)
    q_tokens = query_tokens(encoder, query)
    if len(q_tokens) != Q.shape[0]:
        raise ModelError("the query's tokens do not line up with its vectors, so explain cannot name them; "
                         "please report the model")
    out = []
    for text, D in zip(passages, encoder.encode_documents(passages)):
        d_tokens, d_spans = document_tokens(encoder, text)
        if len(d_tokens) != D.shape[0]:
            raise ModelError("the document's tokens do not line up with its vectors, so explain cannot place "
                             "them; please report the model")
        # (Ld, dim) at the precision the token-vector indexes store (float16), so that the score is the flat index's
        D = torch.from_numpy(D.float().numpy().astype(VECTOR_DTYPE)).float()
        S = Q @ D.T  # (Lq, Ld)
        if encoder.config.similarity == "l2":  # -||q - d||^2, as latelex.scoring.maxsim computes it
            S = 2 * S - (D * D).sum(-1).unsqueeze(0) - (Q * Q).sum(-1).unsqueeze(1)
        best, where = torch.max(S, dim=1)
        rows = []
        for i, (value, j) in enumerate(zip(best.tolist(), where.tolist())):
            span = d_spans[j]
            rows.append(Contribution(q_tokens[i], i, d_tokens[j], j, () if span is None else (span,), float(value)))
        out.append(rows)
    return out


# ---------------------------------------------------------------------- SPLADE


def _splade_passages(encoder: Any, query: str, passages: list[str]) -> list[list[Contribution]]:
    """For each passage text, one contribution per term the query and passage vectors share, largest first."""
    q = encoder.encode_queries([query])[0]
    q_ids, q_weights = np.asarray(q.ids), np.asarray(q.weights, dtype=np.float32)
    q_rank = {int(t): r for r, t in enumerate(q_ids[np.lexsort((q_ids, -q_weights))])}
    tokenizer = encoder.tokenizer
    out = []
    for text, d in zip(passages, encoder.encode_documents(passages)):
        common, iq, idoc = np.intersect1d(q_ids, np.asarray(d.ids), assume_unique=True, return_indices=True)
        qw = q_weights[iq].astype(np.float64)
        dw = np.asarray(d.weights, dtype=np.float32)[idoc].astype(np.float64)
        scores = qw * dw
        order = np.lexsort((common, -scores))
        names = tokenizer.convert_ids_to_tokens([int(t) for t in common[order]]) if order.size else []
        spans = _piece_spans(encoder, text)
        rows = []
        for name, k in zip(names, order.tolist()):
            term = int(common[k])
            name = name if isinstance(name, str) else f"[{term}]"  # as Splade.explain names an id with no token
            rows.append(Contribution(name, q_rank[term], name, None, tuple(spans.get(term, ())), float(scores[k]),
                                     float(qw[k]), float(dw[k])))
        out.append(rows)
    return out


def _piece_spans(encoder: Any, text: str) -> dict[int, list[Span]]:
    """``{token id: spans}`` of the word-pieces of ``text`` the SPLADE encoder reads (special tokens left out)."""
    tokenizer = encoder.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        return {}
    content = encoder.document_token_budget + int(tokenizer.num_special_tokens_to_add(pair=False))
    encoded = tokenizer(text, truncation=True, max_length=content, add_special_tokens=True,
                        return_offsets_mapping=True, return_special_tokens_mask=True)
    out: dict[int, list[Span]] = {}
    for ident, (a, b), special in zip(encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"]):
        if not special:
            out.setdefault(int(ident), []).append((int(a), int(b)))
    return out


# ---------------------------------------------------------------------- BM25


def _explain_bm25(engine: Any, query: str, doc_id: str, text: str) -> Explanation:
    pairs = engine.term_contributions(query, doc_id)
    spans = engine.term_spans(text)
    order = sorted(range(len(pairs)), key=lambda i: (-pairs[i][1], i))
    contributions = tuple(
        Contribution(pairs[i][0], i, pairs[i][0], None, tuple(spans.get(pairs[i][0], ())), pairs[i][1],
                     None, pairs[i][1])
        for i in order
    )
    return Explanation(doc_id, query, "text", _total(contributions), contributions, text)
