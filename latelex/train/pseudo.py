"""Pseudo-queries: unlabelled training queries made from the documents themselves.

Any collection becomes training data without a single judged query. For each sampled document one query is cut out
of it (the inverse cloze task of Lee et al. 2019, and the title-as-query pairs of many dense-retrieval recipes):

- ``"title"``: the document's title is the query and its text (without the title) the positive passage;
- ``"sentence"``: a sentence drawn at random from the text is the query and the rest of the text the positive;
- ``"first"``: the first sentence is the query and the rest the positive.

The query's words are removed from its positive, so that the pair is not matched by copying. With a teacher
(``latelex.train.teachers``) the labels matter less than the teacher's scores of each query against the batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError

KINDS = ("title", "sentence", "first")

#: a sentence ends at . ! or ? followed by white space and an upper-case letter, a digit or a quote
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class PseudoQuery:
    """One pseudo-query: ``qid``, its ``text``, the ``doc_id`` it was cut from and the ``passage`` left (the
    positive), with ``kind`` saying how it was cut."""

    qid: str
    text: str
    doc_id: str
    passage: str
    kind: str


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (a light rule: a full stop, ! or ? followed by a capital, digit or quote)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def pseudo_queries(
    documents: Iterable[tuple[str, str, str]],
    count: int,
    *,
    kinds: Sequence[str] = ("title", "sentence"),
    seed: int = 0,
    min_words: int = 4,
    max_words: int = 32,
    prefix: str = "",
) -> list[PseudoQuery]:
    """Up to ``count`` pseudo-queries from ``(doc_id, title, text)`` triples, one per sampled document (seeded).

    ``kinds`` lists the cuts to use, in order of preference: a document with a title of ``min_words`` to
    ``max_words`` words gives a ``"title"`` query when that kind is allowed, otherwise a ``"sentence"`` (or
    ``"first"``) query of that length whose removal leaves at least ``min_words`` words. Documents that allow no cut
    are skipped. Query ids are ``prefix + doc_id + "#" + kind``.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InputError(f"pseudo-query kinds must be among {', '.join(KINDS)}, not {list(kinds)!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"count must be a positive integer, not {count!r}")
    if not 1 <= min_words <= max_words:
        raise InputError(f"need 1 <= min_words <= max_words, not {min_words} and {max_words}")
    docs = list(documents)
    rng = np.random.default_rng(seed)
    out: list[PseudoQuery] = []
    for position in rng.permutation(len(docs)):
        if len(out) >= count:
            break
        doc_id, title, text = docs[int(position)]
        cut = _cut(title or "", text or "", kinds, rng, min_words, max_words)
        if cut is not None:
            kind, query, passage = cut
            out.append(PseudoQuery(f"{prefix}{doc_id}#{kind}", query, str(doc_id), passage, kind))
    return out


def _cut(title: str, text: str, kinds: Sequence[str], rng: np.random.Generator, lo: int, hi: int):
    for kind in kinds:
        if kind == "title":
            if lo <= len(title.split()) <= hi and len(text.split()) >= lo:
                return "title", title.strip(), text.strip()
            continue
        sentences = split_sentences(text)
        if len(sentences) < 2:
            continue
        choices = [0] if kind == "first" else list(range(len(sentences)))
        usable = [i for i in choices if lo <= len(sentences[i].split()) <= hi]
        if not usable:
            continue
        i = usable[int(rng.integers(len(usable)))] if kind == "sentence" else usable[0]
        rest = " ".join(s for j, s in enumerate(sentences) if j != i)
        if len(rest.split()) < lo:
            continue
        passage = f"{title.strip()} {rest}".strip() if title.strip() else rest
        return kind, sentences[i], passage
    return None


__all__ = ["KINDS", "PseudoQuery", "pseudo_queries", "split_sentences"]
