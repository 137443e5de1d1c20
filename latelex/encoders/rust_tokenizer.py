"""A model folder's tokenizer read straight from its ``tokenizer.json`` with the ``tokenizers`` library, for the
encoders' own calls, so that an encoder whose forward pass is a cached ONNX graph starts without importing
transformers (about a second of a one-off ``latelex search`` on two cores).

:class:`RustTokenizer` answers what the encoders ask of a tokenizer when they encode: token ids of texts with
the model's special tokens, truncated to a length (``__call__``), the special tokens and their ids, and
``convert_tokens_to_ids``. Anything else (offset mappings for explanations and chunking, ``all_special_tokens``,
decoding) goes to the transformers tokenizer of the same folder, loaded on first use. Whether the two agree is
not assumed: :func:`token_check` records the transformers tokenizer's ids of fixed texts when a graph is cached,
and :meth:`RustTokenizer.matches` compares before the fast tokenizer is used (see :mod:`.onnx_cache`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

#: The special-token attributes an encoder reads (``<name>_token`` and ``<name>_token_id``).
SPECIAL_NAMES = ("unk", "sep", "pad", "cls", "mask", "bos", "eos")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json or special_tokens_map.json writes it: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RustTokenizer:
    """The tokenizer of ``model_dir`` through ``tokenizers.Tokenizer`` (see the module docstring).

    Build it with :meth:`load`, which returns None where the folder has no ``tokenizer.json`` or its special
    tokens cannot be read. ``model_max_length`` is read from tokenizer_config.json as transformers reads it.
    Thread-safe: the underlying tokenizer is never reconfigured after loading.
    """

    is_fast = True
    #: As transformers reads it: ``model_max_length`` of tokenizer_config.json, else its "no limit" value.
    model_max_length = int(1e30)

    def __init__(self, model_dir: Path, backend: Any, specials: dict[str, str]) -> None:
        self.model_dir = model_dir
        self._backend = backend
        self._specials = specials
        self._added = backend.post_process(backend.encode("", add_special_tokens=False)).ids
        self._full: Any = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path) -> "RustTokenizer | None":
        """The fast tokenizer of ``model_dir``, or None when it has no tokenizer.json or no padding token."""
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            return None
        try:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(str(path))
        except Exception:  # tokenizers raises its own exception type for unreadable files
            return None
        backend.no_truncation()
        backend.no_padding()
        specials: dict[str, str] = {}
        for source in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in transformers
            config = _read_json(model_dir / source)
            for name in SPECIAL_NAMES:
                text = _token_text(config.get(f"{name}_token"))
                if text is not None:
                    specials[name] = text
        if "pad" not in specials or backend.token_to_id(specials["pad"]) is None:
            return None
        tokenizer = cls(model_dir, backend, specials)
        limit = _read_json(model_dir / "tokenizer_config.json").get("model_max_length")
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            tokenizer.model_max_length = int(limit)
        return tokenizer

    # --- what the encoders call ----------------------------------------------------------------------

    def __call__(self, text: str | Sequence[str], *, truncation: bool = False, max_length: int | None = None,
                 add_special_tokens: bool = True, **kwargs: Any) -> dict[str, Any]:
        """``{"input_ids": ...}``: one list of ids for a string, a list of them for a list of strings. With
        ``truncation`` and ``max_length`` each text keeps at most ``max_length`` ids, special tokens included
        (the text's own tokens are cut from the end). Other keyword arguments go to the transformers tokenizer."""
        if kwargs:
            return self._transformers()(text, truncation=truncation, max_length=max_length,
                                        add_special_tokens=add_special_tokens, **kwargs)
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        encodings = self._backend.encode_batch(texts, add_special_tokens=False)
        room = None
        if truncation and max_length is not None:
            room = max(0, int(max_length) - (len(self._added) if add_special_tokens else 0))
        rows = []
        for encoding in encodings:
            if room is not None and len(encoding.ids) > room:
                encoding.truncate(room)
            if add_special_tokens:
                encoding = self._backend.post_process(encoding)
            rows.append(list(encoding.ids))
        return {"input_ids": rows[0] if single else rows}

    def convert_tokens_to_ids(self, token: str | Sequence[str]) -> Any:
        if isinstance(token, str):
            ident = self._backend.token_to_id(token)
            return self.unk_token_id if ident is None else ident
        return [self.convert_tokens_to_ids(t) for t in token]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        if pair:
            return int(self._transformers().num_special_tokens_to_add(pair=True))
        return len(self._added)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally: the special tokens, then the transformers tokenizer.
        if name.endswith("_token_id") and name[: -len("_token_id")] in SPECIAL_NAMES:
            text = self._specials.get(name[: -len("_token_id")])
            return None if text is None else self._backend.token_to_id(text)
        if name.endswith("_token") and name[: -len("_token")] in SPECIAL_NAMES:
            return self._specials.get(name[: -len("_token")])
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._transformers(), name)

    def __len__(self) -> int:
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    # --- the rest, and the check ---------------------------------------------------------------------

    def _transformers(self) -> Any:
        """The transformers tokenizer of the same folder (loaded once, on first use)."""
        with self._lock:
            if self._full is None:
                from .loading import load_tokenizer

                self._full = load_tokenizer(self.model_dir)
            return self._full

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether this tokenizer gives the ids and special tokens that :func:`token_check` recorded."""
        try:
            return token_check(self, record.get("limits", ())) == record
        except Exception:  # a record of another shape: no match
            return False


#: Fixed texts on which a RustTokenizer must reproduce the transformers tokenizer's ids: case, accents,
#: punctuation, digits, unknown characters, CJK, runs of spaces, and a text long enough to be truncated.
CHECK_TEXTS: tuple[str, ...] = (
    "What is late interaction?",
    "Vitamin D deficiency: 25-hydroxyvitamin D < 20 ng/mL in 1,024 patients (p=0.03).",
    "Café naïve résumé ÀÉÎÕÜ ß œ",
    "tab\tand\nnewline   spaces",
    "中文 テキスト 한국어 emoji 🙂 ∑ ≤ →",
    "",
    " ".join(["Retrieval of long documents by the best matching passage"] * 40),
)


def token_check(tokenizer: Any, limits: Sequence[int]) -> dict[str, Any]:
    """What a tokenizer gives for :data:`CHECK_TEXTS` at each truncation length in ``limits`` (and whole), and its
    special-token ids: recorded beside a cached graph from the transformers tokenizer, compared with a
    :class:`RustTokenizer`'s before it is used."""
    limits = sorted({int(x) for x in limits})
    ids = {"whole": tokenizer(list(CHECK_TEXTS), add_special_tokens=True)["input_ids"]}
    for limit in limits:
        ids[str(limit)] = tokenizer(list(CHECK_TEXTS), truncation=True, max_length=limit,
                                    add_special_tokens=True)["input_ids"]
    ids["pieces"] = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in (".", ",", "late", "##s")]
    specials = {name: getattr(tokenizer, f"{name}_token_id", None) for name in SPECIAL_NAMES}
    return {"limits": limits, "ids": {k: [list(map(int, row)) for row in v] for k, v in ids.items()},
            "specials": {k: (None if v is None else int(v)) for k, v in specials.items()},
            "added": int(tokenizer.num_special_tokens_to_add(pair=False)),
            "model_max_length": int(getattr(tokenizer, "model_max_length", 0) or 0)}


__all__ = ["CHECK_TEXTS", "RustTokenizer", "token_check"]
