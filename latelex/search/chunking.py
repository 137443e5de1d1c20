"""Splitting long documents into overlapping passages that fit an encoder.

An encoder keeps only the first :func:`document_tokens` tokens of a document and silently drops the rest. To index
all of a long document, split it into windows of at most ``tokens`` tokens of the encoder's own tokenizer, each
window starting ``tokens - overlap`` tokens after the previous one, and index the windows as passages; a search
then scores a document by its best passage. Each :class:`Passage` keeps its character span in the document
text, so a hit can point at the part of the document that matched.

Windows are counted in tokens of the whole document, without special tokens. A window boundary can fall inside a
word that the tokenizer splits into several pieces; the passage's text is then cut there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from ..errors import ConfigError, InputError, ModelError

__all__ = ["ChunkingConfig", "Passage", "split_document", "split_documents", "document_tokens", "count_truncated"]

#: Texts tokenised per call of the fast tokenizer in :func:`split_documents` and :func:`count_truncated`.
_TOKENIZE_BATCH = 1024


@dataclass(frozen=True)
class ChunkingConfig:
    """How to split documents: windows of ``tokens`` tokens, consecutive windows sharing ``overlap`` tokens.

    Raises:
        ConfigError: ``tokens < 1``, or ``overlap`` negative or not smaller than ``tokens``.
    """

    tokens: int
    overlap: int = 0

    def __post_init__(self) -> None:
        for name in ("tokens", "overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"chunk {name} must be an integer, not {value!r}")
        if self.tokens < 1:
            raise ConfigError(f"chunk size must be at least 1 token, not {self.tokens}")
        if self.overlap < 0:
            raise ConfigError(f"chunk overlap must be 0 or more tokens, not {self.overlap}")
        if self.overlap >= self.tokens:
            raise ConfigError(
                f"chunk overlap ({self.overlap}) must be smaller than the chunk size ({self.tokens} tokens)"
            )

    @property
    def stride(self) -> int:
        """Tokens from the start of one window to the start of the next: ``tokens - overlap``."""
        return self.tokens - self.overlap


@dataclass(frozen=True)
class Passage:
    """One window of a document: the ``number``-th (from 0) of document ``doc_id``.

    ``start``, ``end``: the character span ``[start, end)`` of the window in the document text, and
    ``text == document_text[start:end]``.
    """

    doc_id: str
    number: int
    text: str
    start: int
    end: int


def _check_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("chunking needs a fast (Rust) tokenizer with offset mappings; this model's tokenizer is slow")


def _offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character offsets of each text's tokens (no special tokens, no truncation, no length warning)."""
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return encoded["offset_mapping"]


def _windows(doc_id: str, text: str, offsets: Sequence[tuple[int, int]], config: ChunkingConfig) -> list[Passage]:
    n = len(offsets)
    if n <= config.tokens:
        return [Passage(doc_id, 0, text, 0, len(text))]
    passages: list[Passage] = []
    first = 0
    while True:
        last = min(first + config.tokens, n)
        start = offsets[first][0]
        end = max(stop for _, stop in offsets[first:last])
        passages.append(Passage(doc_id, len(passages), text[start:end], start, end))
        if last == n:
            return passages
        first += config.stride


def split_document(doc_id: str, text: str, tokenizer: Any, config: ChunkingConfig) -> list[Passage]:
    """The passages of one document: windows of ``config.tokens`` tokens of ``tokenizer``, ``config.stride`` apart.

    A text of at most ``config.tokens`` tokens (an empty or blank text included) is one passage spanning the
    whole text, ``[0, len(text))``. A longer text gives windows whose spans run from their first token's start
    to their last token's end; consecutive windows share exactly ``config.overlap`` tokens and the last window
    ends at the last token.

    Raises:
        ModelError: the tokenizer is not a fast tokenizer (offsets are needed).
    """
    _check_tokenizer(tokenizer)
    return _windows(doc_id, text, _offsets(tokenizer, [text])[0], config)


def split_documents(
    documents: Iterable[tuple[str, str]], tokenizer: Any, config: ChunkingConfig
) -> Iterator[Passage]:
    """Stream the passages of ``(doc id, text)`` pairs in order, as :func:`split_document` gives them.

    The texts are tokenised in batches, which is several times faster than one call per document.
    """
    _check_tokenizer(tokenizer)
    batch: list[tuple[str, str]] = []
    for pair in documents:
        batch.append(pair)
        if len(batch) == _TOKENIZE_BATCH:
            yield from _split_batch(batch, tokenizer, config)
            batch = []
    if batch:
        yield from _split_batch(batch, tokenizer, config)


def _split_batch(batch: list[tuple[str, str]], tokenizer: Any, config: ChunkingConfig) -> Iterator[Passage]:
    offsets = _offsets(tokenizer, [text for _, text in batch])
    for (doc_id, text), spans in zip(batch, offsets):
        yield from _windows(doc_id, text, spans, config)


def document_tokens(encoder: Any) -> int:
    """How many content tokens of a document ``encoder`` keeps (its ``document_token_budget``).

    For ColBERT that is ``doc_maxlen`` less [CLS], the [D] marker and [SEP]; for SPLADE ``doc_maxlen`` less
    [CLS] and [SEP] (both capped at what the model takes). It is the largest chunk size that loses nothing.

    Raises:
        InputError: ``encoder`` does not say how many tokens it keeps.
    """
    budget = getattr(encoder, "document_token_budget", None)
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise InputError(f"{type(encoder).__name__} does not say how many document tokens it keeps; chunking needs a ColBERT or Splade encoder")
    return budget


def count_truncated(texts: Iterable[str], tokenizer: Any, budget: int) -> int:
    """How many of ``texts`` have more than ``budget`` tokens (special tokens not counted), that is, would be cut.

    Texts are tokenised in batches, each only up to ``budget + 1`` tokens.
    """
    if budget < 0:
        raise InputError(f"a token budget must be 0 or more, not {budget}")
    count = 0
    batch: list[str] = []

    def flush() -> int:
        ids = tokenizer(
            batch,
            add_special_tokens=False,
            truncation=True,
            max_length=budget + 1,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        return sum(1 for row in ids if len(row) > budget)

    for text in texts:
        batch.append(text)
        if len(batch) == _TOKENIZE_BATCH:
            count += flush()
            batch = []
    if batch:
        count += flush()
    return count
