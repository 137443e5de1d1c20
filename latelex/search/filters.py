"""Metadata filters: a small expression language over a document's JSON metadata, compiled to parameterised SQL.

Every document may carry a JSON object of metadata. ``where=EXPR`` restricts a search to the documents whose
metadata satisfies EXPR; the same text is what ``latelex search ... --where`` takes on the command line::

    year >= 2015 and source in ["pubmed", "pmc"]
    author.name = 'Ada Lovelace' or not (peer_reviewed = true)
    `file name` != "draft.txt" and score > -1.5e-3
    tags exists and retracted is null

Grammar (keywords are case-insensitive)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" expr ")" | condition
    condition  := field op value | field ["not"] "in" "[" [value ("," value)* [","]] "]"
                | field "exists" | field "is" ["not"] "null"
    op         := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    field      := name ("." name)*        (a dot steps into a nested object: author.name)
    name       := [A-Za-z_][A-Za-z0-9_]*  (not a keyword) | `any text` (backquoted, for every other key)
    value      := "string" | 'string' | integer | float | true | false

Strings and backquoted names take the JSON backslash escapes (``\\" \\' \\` \\\\ \\/ \\n \\t \\r \\b \\f \\uXXXX``).
Numbers may be negative and have a fraction and an exponent (``-1``, ``.5``, ``2.5e-3``). The keywords ``and or
not in is null true false exists`` are reserved: a key spelt like one is backquoted (`` `in` ``).

Semantics, the same in SQL and in plain Python:

- A comparison (``= != < <= > >= in``, ``not in``) is false when the field is missing or null. So ``!=`` and
  ``not in`` need the field to hold a value: ``x != 1`` skips documents without ``x``, while ``not (x = 1)``
  includes them (``not`` negates a false comparison: every expression is plainly true or false).
- ``=`` and ``in`` hold only for a value of the same kind as the literal: a number equals a number (``1 = 1.0``),
  a string a string, a boolean a boolean. ``flag = true`` does not match a flag holding the number 1, and
  ``x != true`` does (1 is a value that is not ``true``). The orderings ``< <= > >=`` compare numbers with numbers
  and strings with strings (by code point); any other value makes them false. ``in []`` matches nothing and
  ``x not in []`` matches every document where ``x`` holds a value.
- ``x exists`` holds when the document has the key, whatever its value (null included). ``x is null`` holds when
  ``x`` is missing or null; ``x is not null`` when it holds a value. Comparing with ``null`` is an error.
- Arrays and objects can only be tested with ``exists`` and ``is [not] null``.

Limits: at most 100 nested parentheses or ``not`` in the text, and at most 20 levels of ``and`` inside ``or``
inside ``and`` ... once ``not`` is pushed down to the conditions (SQLite's parser stack holds little more); a
compiled filter takes at most 32766 SQL parameters. Each is a :class:`FilterError`, never a SQLite error.

:func:`parse_filter` turns text into an immutable tree of :class:`Filter` nodes; :func:`as_filter` also accepts a
dict of equalities (``{"source": "pubmed", "year": [2019, 2020]}``: every item must hold, a list means ``in``,
``None`` means ``is null``). :func:`field_types` and :func:`merge_field_types` keep the schema of a collection (the
kind of every field path), and :func:`compile_filter` checks a filter against that schema and compiles it to a
SQLite boolean expression plus its parameters. Field paths and values only ever travel as SQL parameters: a field
becomes ``json_type(metadata, ?)`` / ``json_extract(metadata, ?)`` with a JSON path such as ``$."author"."name"``.
SQLite compares path keys with the raw text of the stored JSON, so a key holding ``"``, ``\\``, a control or a
non-ASCII character (which a JSON writer may have escaped) is looked up with ``json_each`` instead, which decodes
keys. The metadata column must hold a JSON object or NULL; SQLite raises on malformed JSON.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

from ..errors import InputError

__all__ = [
    "FilterError",
    "Filter",
    "Compare",
    "In",
    "Exists",
    "IsNull",
    "And",
    "Or",
    "Not",
    "FIELD_TYPES",
    "parse_filter",
    "parse_field",
    "format_field",
    "as_filter",
    "field_types",
    "merge_field_types",
    "compile_filter",
]

#: The kinds :func:`field_types` reports for a field.
FIELD_TYPES = ("string", "number", "boolean", "null", "array", "object", "mixed")
#: Comparison operators of :class:`Compare` (``==`` is read as ``=``).
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
RANGE_OPERATORS = ("<", "<=", ">", ">=")
KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false", "exists"})
#: Deepest nesting of parentheses and ``not`` a filter may have.
MAX_DEPTH = 100
#: Most SQL parameters a compiled filter may need (SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32).
MAX_PARAMS = 32766

#: Deepest alternation of and / or groups a compiled filter may have (SQLite 3.40's parser stack holds ~27).
MAX_SQL_LEVELS = 20
_CHUNK = 32  # and / or operands joined flat in the SQL; more are grouped

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Keys SQLite's JSON path finds verbatim in any sane writer's output: printable ASCII except '"' and '\'.
_PATH_SAFE_KEY = re.compile(r'[ !#-\[\]-~]*')
_OPERATOR_TOKENS = ("==", "!=", "<=", ">=", "=", "<", ">")
_ESCAPES = {'"': '"', "'": "'", "`": "`", "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_PLURAL = {"string": "strings", "number": "numbers", "boolean": "booleans", "null": "only nulls",
           "array": "arrays", "object": "objects"}
_A_KIND = {"string": "a string", "number": "a number", "boolean": "a boolean (true or false)"}

Scalar = Union[str, int, float, bool]


class FilterError(InputError):
    """A filter that cannot be parsed, or that does not fit the fields of the documents it filters."""


# ---------------------------------------------------------------------------------------------------------- tree


class Filter:
    """Base class of the nodes of a parsed filter; ``str(node)`` writes it back in the filter language."""

    __slots__ = ()

    def __str__(self) -> str:
        return _render(self)


def _literal_kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _check_literal(value: object) -> Scalar:
    """``value`` if it is a literal a filter can hold, else a FilterError saying what to write instead."""
    if value is None:
        raise FilterError("null is not a value to compare with; test the field with 'is null' or 'is not null'")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FilterError(f"string {value!r} holds a lone surrogate; pass valid Unicode text") from None
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise FilterError(f"integer {value} is outside the 64-bit range; write it as a float ({float(value):g})")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"number {value} is not finite; use a finite number")
        return value
    raise FilterError(f"a filter value must be a string, a number or a boolean, not {type(value).__name__}")


def _check_path(path: object) -> tuple[str, ...]:
    if isinstance(path, str):
        raise FilterError(f"a field path is a tuple of keys, not the string {path!r}; use parse_field({path!r})")
    try:
        keys = tuple(path)  # type: ignore[arg-type]
    except TypeError:
        raise FilterError(f"a field path must be a tuple of string keys, not {type(path).__name__}") from None
    if not keys or not all(isinstance(k, str) for k in keys):
        raise FilterError(f"a field path must be a non-empty tuple of string keys, not {path!r}")
    for key in keys:
        _check_literal(key)
    return keys


def _literal_key(value: Scalar) -> tuple[str, Scalar]:
    return (_literal_kind(value), value)  # so that 1 and True (equal in Python) stay different literals


@dataclass(frozen=True, eq=False)
class Compare(Filter):
    """``field op value``: ``path`` is the field's keys (``("author", "name")``), ``op`` one of :data:`OPERATORS`."""

    path: tuple[str, ...]
    op: str
    value: Scalar

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))
        if self.op not in OPERATORS:
            raise FilterError(f"unknown comparison operator {self.op!r}; use one of {', '.join(OPERATORS)}")
        object.__setattr__(self, "value", _check_literal(self.value))
        if self.op in RANGE_OPERATORS and isinstance(self.value, bool):
            raise FilterError(f"'{self.op}' does not order booleans; compare {format_field(self.path)} with = or !=")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Compare):
            return NotImplemented
        return (self.path, self.op, _literal_key(self.value)) == (other.path, other.op, _literal_key(other.value))

    def __hash__(self) -> int:
        return hash((Compare, self.path, self.op, _literal_key(self.value)))


@dataclass(frozen=True, eq=False)
class In(Filter):
    """``field in [values]``, or ``field not in [values]`` when ``negated``."""

    path: tuple[str, ...]
    values: tuple[Scalar, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))
        if isinstance(self.values, (str, bytes)) or not isinstance(self.values, Iterable):
            raise FilterError(f"the values of 'in' must be a list or tuple, not {type(self.values).__name__}")
        object.__setattr__(self, "values", tuple(_check_literal(v) for v in self.values))
        object.__setattr__(self, "negated", bool(self.negated))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, In):
            return NotImplemented
        mine = (self.path, [_literal_key(v) for v in self.values], self.negated)
        return mine == (other.path, [_literal_key(v) for v in other.values], other.negated)

    def __hash__(self) -> int:
        return hash((In, self.path, tuple(_literal_key(v) for v in self.values), self.negated))


@dataclass(frozen=True)
class Exists(Filter):
    """``field exists``: the document has the key, whatever its value."""

    path: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))


@dataclass(frozen=True)
class IsNull(Filter):
    """``field is null`` (missing or null), or ``field is not null`` (holds a value) when ``negated``."""

    path: tuple[str, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))
        object.__setattr__(self, "negated", bool(self.negated))


def _check_items(items: object, name: str) -> tuple[Filter, ...]:
    if not isinstance(items, Iterable):
        raise FilterError(f"{name} takes a tuple of filters, not {type(items).__name__}")
    items = tuple(items)
    for item in items:
        if not isinstance(item, Filter):
            raise FilterError(f"{name} takes Filter nodes, not {type(item).__name__}; parse text with parse_filter")
    return items


@dataclass(frozen=True)
class And(Filter):
    """Every item holds. ``And(())`` matches every document."""

    items: tuple[Filter, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _check_items(self.items, "And"))


@dataclass(frozen=True)
class Or(Filter):
    """At least one item holds. ``Or(())`` matches no document."""

    items: tuple[Filter, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _check_items(self.items, "Or"))


@dataclass(frozen=True)
class Not(Filter):
    """The item does not hold."""

    item: Filter

    def __post_init__(self) -> None:
        if not isinstance(self.item, Filter):
            raise FilterError(f"Not takes a Filter node, not {type(self.item).__name__}")


# ------------------------------------------------------------------------------------------------------ writing


def _quote(text: str, quote: str) -> str:
    out = []
    for ch in text:
        if ch in (quote, "\\"):
            out.append("\\" + ch)
        elif ch in "\n\t\r\b\f":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


def format_field(path: Sequence[str]) -> str:
    """The canonical spelling of a field path in the filter language: ``("author", "name")`` -> ``author.name``,
    ``("file name",)`` -> ``\\`file name\\```. :func:`field_types` names fields this way."""
    return ".".join(
        key if _IDENT.fullmatch(key) and key.lower() not in KEYWORDS else _quote(key, "`") for key in path
    )


def _format_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _quote(value, '"')


def _render(node: Filter, parent: str = "top") -> str:
    if isinstance(node, Compare):
        return f"{format_field(node.path)} {node.op} {_format_value(node.value)}"
    if isinstance(node, In):
        values = ", ".join(_format_value(v) for v in node.values)
        return f"{format_field(node.path)} {'not in' if node.negated else 'in'} [{values}]"
    if isinstance(node, Exists):
        return f"{format_field(node.path)} exists"
    if isinstance(node, IsNull):
        return f"{format_field(node.path)} is {'not null' if node.negated else 'null'}"
    if isinstance(node, Not):
        return "not " + _render(node.item, "not")
    if isinstance(node, (And, Or)):
        word = "and" if isinstance(node, And) else "or"
        if not node.items:  # no syntax of its own; only built from Python
            return "(all documents)" if word == "and" else "(no documents)"
        if len(node.items) == 1:
            return _render(node.items[0], parent)
        text = f" {word} ".join(_render(item, word) for item in node.items)
        binds_weaker = parent == "not" or (parent == "and" and word == "or")
        return f"({text})" if binds_weaker or parent == word else text
    raise FilterError(f"not a filter node: {type(node).__name__}")


# ------------------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "quoted_name", "string", "number", "op", "punct", "end"
    value: object
    pos: int
    text: str

    def keyword(self) -> str | None:
        if self.kind == "name" and self.text.lower() in KEYWORDS:
            return self.text.lower()
        return None

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else repr(self.text)


def _shown(expr: str, pos: int) -> str:
    """The filter on one line; a long one cut to the 160 characters around ``pos``."""
    flat = "".join(ch if ch.isprintable() else " " for ch in expr)
    if len(flat) <= 200:
        return flat
    start, end = max(0, pos - 80), min(len(flat), pos + 80)
    return ("..." if start else "") + flat[start:end] + ("..." if end < len(flat) else "")


def _error(expr: str, pos: int, message: str) -> FilterError:
    return FilterError(f"bad filter at column {pos + 1}: {message} in: {_shown(expr, pos)}")


def _read_quoted(expr: str, start: int) -> tuple[str, int]:
    """The text of the quoted string or name that opens at ``start``, and the position after its closing quote."""
    quote = expr[start]
    what = "name" if quote == "`" else "string"
    out: list[str] = []
    i = start + 1
    while i < len(expr):
        ch = expr[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = expr[i + 1 : i + 2]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code == "u":
            unit, i = _read_unicode(expr, i)
            if 0xD800 <= unit <= 0xDBFF and expr[i : i + 2] == "\\u":
                low, after = _read_unicode(expr, i)
                if 0xDC00 <= low <= 0xDFFF:
                    unit, i = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00), after
            if 0xD800 <= unit <= 0xDFFF:
                raise _error(expr, i - 6, "a \\u escape names a lone surrogate; escape a pair or write the character")
            out.append(chr(unit))
        elif code == "":
            break
        else:
            raise _error(expr, i, f"unknown escape '\\{code}' in a {what}; write '\\\\' for a backslash")
    raise _error(expr, start, f"unterminated {what}; close it with {quote!r}")


def _read_unicode(expr: str, i: int) -> tuple[int, int]:
    digits = expr[i + 2 : i + 6]
    if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise _error(expr, i, "'\\u' needs 4 hex digits (\\u00e9)")
    return int(digits, 16), i + 6


def _tokens(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(expr)
    while True:
        while i < n and expr[i].isspace():
            i += 1
        if i >= n:
            tokens.append(_Token("end", None, n, ""))
            return tokens
        ch = expr[i]
        if ch in "\"'`":
            text, end = _read_quoted(expr, i)
            tokens.append(_Token("quoted_name" if ch == "`" else "string", text, i, expr[i:end]))
            i = end
            continue
        match = _NUMBER.match(expr, i) if ch in "0123456789-." else None
        if match and (ch != "." or tokens[-1:] == [] or tokens[-1].kind not in ("name", "quoted_name")):
            end = match.end()
            if end < n and (expr[end].isalnum() or expr[end] in "_.`\"'"):
                raise _error(expr, i, f"bad number {expr[i:end + 1]!r}; separate it from what follows")
            tokens.append(_Token("number", _number(expr, i, match.group()), i, match.group()))
            i = end
            continue
        match = _IDENT.match(expr, i)
        if match:
            tokens.append(_Token("name", match.group(), i, match.group()))
            i = match.end()
            continue
        op = next((op for op in _OPERATOR_TOKENS if expr.startswith(op, i)), None)
        if op:
            tokens.append(_Token("op", "=" if op == "==" else op, i, op))
            i += len(op)
            continue
        if ch in "()[],.":
            tokens.append(_Token("punct", ch, i, ch))
            i += 1
            continue
        raise _error(expr, i, f"unexpected character {ch!r}")


def _number(expr: str, pos: int, text: str) -> int | float:
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise _error(expr, pos, f"number {text} is out of range; use a finite number")
        return value
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _error(expr, pos, f"integer {text} is outside the 64-bit range; write it as a float ({float(value):g})")
    return value


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = _tokens(expr)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def error(self, message: str, token: _Token | None = None) -> FilterError:
        token = token or self.tok
        return _error(self.expr, token.pos, message)

    def take(self) -> _Token:
        token = self.tok
        if token.kind != "end":
            self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.tok.keyword() in words

    def at_punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == ch

    def expect_punct(self, ch: str, message: str) -> None:
        if not self.at_punct(ch):
            raise self.error(f"{message}, found {self.tok.describe()}")
        self.take()

    def whole(self) -> Filter:
        if self.tok.kind == "end":
            raise FilterError("bad filter: the filter is empty; write a condition such as: year >= 2015")
        node = self.or_()
        if self.tok.kind != "end":
            raise self.error(f"expected 'and', 'or' or the end of the filter, found {self.tok.describe()}")
        return node

    def or_(self) -> Filter:
        items = [self.and_()]
        while self.at_keyword("or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Filter:
        items = [self.not_()]
        while self.at_keyword("and"):
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self) -> Filter:
        if self.at_keyword("not") or self.at_punct("("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"more than {MAX_DEPTH} nested parentheses or 'not's; simplify the filter")
            if self.take().value == "(":
                opening = self.tokens[self.i - 1]
                node = self.or_()
                if not self.at_punct(")"):
                    raise self.error(f"expected ')' to close the '(' at column {opening.pos + 1}, "
                                     f"found {self.tok.describe()}")
                self.take()
            else:
                node = Not(self.not_())
            self.depth -= 1
            return node
        return self.condition()

    def field(self) -> tuple[str, ...]:
        keys = [self.name(first=True)]
        while self.at_punct("."):
            self.take()
            keys.append(self.name(first=False))
        return tuple(keys)

    def name(self, first: bool) -> str:
        token = self.tok
        if token.kind == "quoted_name" or (token.kind == "name" and (not first or token.keyword() is None)):
            self.take()
            return str(token.value)
        if token.kind == "name":
            raise self.error(f"expected a field name, found the keyword {token.describe()} "
                             f"(backquote a field spelt like a keyword: `{token.text}`)")
        if first:
            raise self.error(f"expected a field name or '(', found {token.describe()}")
        raise self.error(f"expected a field name after '.', found {token.describe()}")

    def condition(self) -> Filter:
        path = self.field()
        name = format_field(path)
        token = self.tok
        if token.kind == "op":
            self.take()
            return Compare(path, str(token.value), self.value(f"after '{token.text}'", str(token.value)))
        word = token.keyword()
        if word == "exists":
            self.take()
            return Exists(path)
        if word == "is":
            self.take()
            negated = self.at_keyword("not")
            if negated:
                self.take()
            if not self.at_keyword("null"):
                after = "is not" if negated else "is"
                raise self.error(f"expected 'null' after '{after}', found {self.tok.describe()}")
            self.take()
            return IsNull(path, negated)
        if word in ("in", "not"):
            self.take()
            if word == "not":
                if not self.at_keyword("in"):
                    raise self.error(f"expected 'in' after '{name} not', found {self.tok.describe()} "
                                     f"(to negate a condition, write: not {name} ...)")
                self.take()
            return In(path, self.values(), word == "not")
        raise self.error(f"expected an operator after field '{name}' (=, !=, <, <=, >, >=, in, not in, exists, "
                         f"is null), found {token.describe()}")

    def values(self) -> tuple[Scalar, ...]:
        self.expect_punct("[", "expected '[' to open the list after 'in'")
        values: list[Scalar] = []
        while not self.at_punct("]"):
            values.append(self.value("in the list", "in"))
            if self.at_punct(","):
                self.take()
            elif not self.at_punct("]"):
                raise self.error(f"expected ',' or ']' in the list, found {self.tok.describe()}")
        self.take()
        return tuple(values)

    def value(self, where: str, op: str) -> Scalar:
        token = self.tok
        if token.kind in ("string", "number"):
            self.take()
            return token.value  # type: ignore[return-value]
        word = token.keyword()
        if word in ("true", "false"):
            self.take()
            if op in RANGE_OPERATORS:
                raise self.error(f"'{op}' does not order booleans; use = or != with {word}", token)
            return word == "true"
        if word == "null":
            raise self.error("null is not a value to compare with; write 'field is null' or 'field is not null'")
        raise self.error(f"expected a value {where} (a \"string\", a number, true or false), "
                         f"found {token.describe()}")


def parse_filter(expr: str) -> Filter:
    """Parse a filter written in the language of the module docstring into a tree of :class:`Filter` nodes.

    Raises :class:`FilterError`, whose one-line message gives the 1-based column of the problem and the filter.
    """
    if not isinstance(expr, str):
        raise FilterError(f"a filter must be a string, not {type(expr).__name__}")
    return _Parser(expr).whole()


def parse_field(name: str) -> tuple[str, ...]:
    """The keys of a field written as in a filter: ``"author.name"`` -> ``("author", "name")``,
    ``"`file name`"`` -> ``("file name",)``. Inverse of :func:`format_field`. Raises :class:`FilterError`."""
    if not isinstance(name, str):
        raise FilterError(f"a field name must be a string, not {type(name).__name__}")
    parser = _Parser(name)
    if parser.tok.kind == "end":
        raise FilterError("bad field: the name is empty; write a key such as year or `file name`")
    path = parser.field()
    if parser.tok.kind != "end":
        raise parser.error(f"expected the end of the field name, found {parser.tok.describe()} "
                           f"(backquote a key that is not an identifier: {_quote(name, '`')})")
    return path


def as_filter(where: str | Mapping[str, object] | Filter) -> Filter:
    """A :class:`Filter` from filter text, a dict of equalities or a ready :class:`Filter` (returned as is).

    In a dict every item must hold; a key is a field as written in a filter (``"author.name"``, ``"`file name`"``);
    a scalar value means ``=``, a list or tuple means ``in`` and ``None`` means ``is null``. ``{}`` matches every
    document. Raises :class:`FilterError`.
    """
    if isinstance(where, Filter):
        return where
    if isinstance(where, str):
        return parse_filter(where)
    if isinstance(where, Mapping):
        items: list[Filter] = []
        for key, value in where.items():
            path = parse_field(key)
            try:
                if value is None:
                    items.append(IsNull(path))
                elif isinstance(value, (list, tuple)):
                    items.append(In(path, tuple(value)))
                else:
                    items.append(Compare(path, "=", value))  # type: ignore[arg-type]
            except FilterError as error:
                raise FilterError(f"where[{key!r}]: {error}") from None
        return items[0] if len(items) == 1 else And(tuple(items))
    raise FilterError(f"where must be filter text, a dict of field values or a Filter, not {type(where).__name__}")


# ------------------------------------------------------------------------------------------------------- schema


def _value_kind(value: object, path: tuple[str, ...]) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    raise InputError(f"metadata field {format_field(path)} holds a {type(value).__name__}; "
                     "metadata values must be JSON (str, int, float, bool, None, list or dict)")


def _merge_kind(a: str, b: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    return "mixed"


def _walk(metadata: Mapping, found: dict[str, str]) -> None:
    stack: list[tuple[tuple[str, ...], Mapping]] = [((), metadata)]
    while stack:
        prefix, obj = stack.pop()
        for key, value in obj.items():
            if not isinstance(key, str):
                raise InputError(f"metadata key {key!r} under {format_field(prefix) or 'the top level'} is not a "
                                 "string; JSON object keys are strings")
            path = prefix + (key,)
            name = format_field(path)
            kind = _value_kind(value, path)
            found[name] = _merge_kind(found[name], kind) if name in found else kind
            if kind == "object":
                stack.append((path, value))


def field_types(metadata: Iterable[Mapping | None]) -> dict[str, str]:
    """The kind of every field path in the documents' metadata, keyed by the field as written in a filter
    (:func:`format_field`: nested keys joined by dots, odd keys backquoted), sorted by name.

    A kind is one of :data:`FIELD_TYPES`: "string", "number", "boolean", "null", "array", "object", or "mixed"
    when documents disagree. Null mixes with anything without making it mixed (sometimes null, sometimes a
    number is "number"). Arrays are leaves; the fields of nested objects are listed as well as the object.
    ``None`` stands for a document without metadata. Raises :class:`InputError` for metadata that is not JSON.
    """
    found: dict[str, str] = {}
    for number, doc in enumerate(metadata):
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise InputError(f"the metadata of document {number} is a {type(doc).__name__}; "
                             "give a JSON object (a dict) or None")
        _walk(doc, found)
    return dict(sorted(found.items()))


def _check_schema(types: Mapping[str, str], name: str) -> None:
    if not isinstance(types, Mapping):
        raise InputError(f"{name} must map field names to kinds, not be a {type(types).__name__}")
    for field, kind in types.items():
        if kind not in FIELD_TYPES:
            raise InputError(f"{name}: field {field!r} has kind {kind!r}; kinds are {', '.join(FIELD_TYPES)}")


def merge_field_types(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, str]:
    """The schema of two collections together (as :func:`field_types` of all their documents would give),
    sorted by name; use it to update a stored schema as documents are added. Raises :class:`InputError`."""
    _check_schema(a, "a")
    _check_schema(b, "b")
    merged = dict(a)
    for field, kind in b.items():
        merged[field] = _merge_kind(merged[field], kind) if field in merged else kind
    return dict(sorted(merged.items()))


# ---------------------------------------------------------------------------------------------------- compiling

_SQL_KINDS = {"number": "IN ('integer', 'real')", "string": "= 'text'"}


class _Compiler:
    def __init__(self, fields: Mapping[str, str], column: str):
        self.fields = fields
        self.column = column
        self.params: list[object] = []

    # An accessor appends its parameters as its text is emitted, so text and parameters stay in order.
    def accessor(self, path: tuple[str, ...], what: str) -> str:
        """SQL for the JSON type (``what="type"``) or the SQL value (``"value"``) at ``path``; NULL when missing."""
        if all(_PATH_SAFE_KEY.fullmatch(key) for key in path):
            self.params.append("$" + "".join(f'."{key}"' for key in path))
            return f"json_{'type' if what == 'type' else 'extract'}({self.column}, ?)"
        # json_each decodes keys; SQLite's path lookup compares them with the raw (possibly escaped) JSON text.
        joins = [f"json_each({self.column}) AS e1"]
        conditions = ["e1.key = ?"]
        for level in range(2, len(path) + 1):  # placeholders stay in the order of the keys
            joins.append(f"json_each(e{level - 1}.value) AS e{level}")
            conditions += [f"e{level - 1}.type = 'object'", f"e{level}.key = ?"]
        self.params.extend(path)
        column = "type" if what == "type" else "atom"
        return (f"(SELECT e{len(path)}.{column} FROM {', '.join(joins)} "
                f"WHERE {' AND '.join(conditions)} LIMIT 1)")

    def has_value(self, path: tuple[str, ...]) -> str:
        return f"IFNULL({self.accessor(path, 'type')}, 'null') <> 'null'"

    def kind_test(self, path: tuple[str, ...], op: str, values: Sequence[Scalar]) -> str:
        """SQL that is 1 when the field holds a value of the kind of ``values`` (all one kind) standing in ``op``
        (``=``, ``in``, or an ordering) to them, and 0 otherwise, never NULL."""
        kind = _literal_kind(values[0])
        if kind == "boolean":
            words = sorted({"'true'" if v else "'false'" for v in values})
            return f"(IFNULL({self.accessor(path, 'type')}, '') IN ({', '.join(words)}))"
        type_sql = self.accessor(path, "type")
        value_sql = self.accessor(path, "value")
        if op == "in":
            self.params.extend(values)
            test = f"IN ({', '.join('?' * len(values))})"
        else:
            self.params.append(values[0])
            test = f"{op} ?"
        return f"COALESCE({type_sql} {_SQL_KINDS[kind]} AND {value_sql} {test}, 0)"

    def check_field(self, path: tuple[str, ...]) -> str:
        name = format_field(path)
        if name in self.fields:
            kind = self.fields[name]
            if kind not in FIELD_TYPES:
                raise FilterError(f"the schema gives field {name!r} the kind {kind!r}; "
                                  f"kinds are {', '.join(FIELD_TYPES)}")
            return kind
        known = sorted(self.fields)
        if not known:
            raise FilterError(f"unknown field {name!r} in the filter: no document here has metadata fields")
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listed = ", ".join(known[:10]) + (f" (and {len(known) - 10} more)" if len(known) > 10 else "")
        raise FilterError(f"unknown field {name!r} in the filter; {hint}known fields: {listed}")

    def check_comparable(self, path: tuple[str, ...], kind: str) -> None:
        if kind in ("null", "array", "object"):
            raise FilterError(f"field {format_field(path)!r} holds {_PLURAL[kind]}; "
                              "test it only with 'exists' or 'is [not] null'")

    def check_value(self, path: tuple[str, ...], kind: str, op: str, value: Scalar) -> None:
        self.check_comparable(path, kind)
        name = format_field(path)
        literal = _literal_kind(value)
        if kind != "mixed" and literal != kind:
            raise FilterError(f"field {name!r} holds {_PLURAL[kind]}; compare it with {_A_KIND[kind]}, "
                              f"not {_A_KIND[literal].split(' (')[0]}")
        if op in RANGE_OPERATORS and kind == "boolean":
            raise FilterError(f"field {name!r} holds booleans; compare it with = or !=, not '{op}'")

    def compile(self, node: Filter) -> str:
        """SQL for a filter in the normal form of :func:`_normal`."""
        if isinstance(node, Compare):
            kind = self.check_field(node.path)
            self.check_value(node.path, kind, node.op, node.value)
            if node.op == "!=":
                has_value = self.has_value(node.path)
                return f"({has_value} AND NOT {self.kind_test(node.path, '=', [node.value])})"
            return self.kind_test(node.path, node.op, [node.value])
        if isinstance(node, In):
            kind = self.check_field(node.path)
            self.check_comparable(node.path, kind)
            for value in node.values:
                self.check_value(node.path, kind, "in", value)
            has_value = self.has_value(node.path) if node.negated else ""
            groups: dict[str, list[Scalar]] = {}
            for value in node.values:
                groups.setdefault(_literal_kind(value), []).append(value)
            tests = [self.kind_test(node.path, "in", values) for values in groups.values()]
            matched = _join(tests, "OR", "0")
            return f"({has_value} AND NOT {matched})" if node.negated else matched
        if isinstance(node, Exists):
            self.check_field(node.path)
            return f"({self.accessor(node.path, 'type')} IS NOT NULL)"
        if isinstance(node, IsNull):
            self.check_field(node.path)
            return f"(IFNULL({self.accessor(node.path, 'type')}, 'null') {'<>' if node.negated else '='} 'null')"
        if isinstance(node, Not):
            return f"(NOT {self.compile(node.item)})"
        if isinstance(node, And):
            return _join([self.compile(item) for item in node.items], "AND", "1")
        if isinstance(node, Or):
            return _join([self.compile(item) for item in node.items], "OR", "0")
        raise FilterError(f"not a filter node: {type(node).__name__}")


def _normal(node: Filter, negate: bool = False, depth: int = 0) -> Filter:
    """The same filter with ``not`` pushed down to the conditions (De Morgan; exact, since every compiled
    condition is 0 or 1), double negations dropped and nested and-in-and / or-in-or flattened, so that the SQL
    nests only where ``and`` and ``or`` alternate."""
    if depth > 2 * MAX_DEPTH:
        raise FilterError(f"the filter nests deeper than {2 * MAX_DEPTH} levels; simplify it")
    if isinstance(node, Not):
        return _normal(node.item, not negate, depth + 1)
    if isinstance(node, (And, Or)):
        kind = type(node) if not negate else (Or if isinstance(node, And) else And)
        items: list[Filter] = []
        for item in node.items:
            item = _normal(item, negate, depth + 1)
            items.extend(item.items if type(item) is kind else (item,))  # type: ignore[union-attr]
        return items[0] if len(items) == 1 else kind(tuple(items))
    if not isinstance(node, Filter):
        raise FilterError(f"not a filter node: {type(node).__name__}")
    if negate:
        return IsNull(node.path, not node.negated) if isinstance(node, IsNull) else Not(node)
    return node


def _levels(node: Filter) -> int:
    """How deep the SQL of a normal-form filter nests and / or groups (:data:`MAX_SQL_LEVELS`)."""
    if not isinstance(node, (And, Or)):
        return 0
    width, chunks = len(node.items), 1
    while width > _CHUNK:
        width, chunks = -(-width // _CHUNK), chunks + 1
    return chunks + max((_levels(item) for item in node.items), default=0)


def _join(parts: Sequence[str], word: str, empty: str) -> str:
    """``parts`` joined by AND / OR in flat groups of at most :data:`_CHUNK` (SQLite limits the depth of an
    expression tree to 1000 and the nesting of parentheses to what its parser stack holds)."""
    if not parts:
        return empty
    while len(parts) > _CHUNK:
        parts = [f"({f' {word} '.join(parts[i:i + _CHUNK])})" for i in range(0, len(parts), _CHUNK)]
    return parts[0] if len(parts) == 1 else f"({f' {word} '.join(parts)})"


def compile_filter(
    f: Filter | str | Mapping[str, object], fields: Mapping[str, str], column: str = "metadata"
) -> tuple[str, list]:
    """Compile a filter into a SQLite boolean expression over the JSON ``column`` and its parameter list, for
    ``SELECT row FROM documents WHERE <sql>`` with those parameters. The expression is 1 or 0 for every row
    (never NULL), so it can be negated and combined safely.

    ``f`` is anything :func:`as_filter` takes. ``fields`` is the collection's schema (:func:`field_types`): every
    field the filter names must be in it, and its values must suit the field's kind ("mixed" takes any scalar);
    orderings need numbers or strings. Values and field paths are SQL parameters, never part of the SQL text.
    Needs SQLite's JSON functions (built in since SQLite 3.38). Raises :class:`FilterError` with a one-line message.
    """
    if not isinstance(column, str) or not _IDENT.fullmatch(column):
        raise FilterError(f"column must be a plain SQL identifier (letters, digits, _), not {column!r}")
    if not isinstance(fields, Mapping):
        raise FilterError(f"fields must map field names to kinds (see field_types), not be a {type(fields).__name__}")
    node = _normal(as_filter(f))
    if _levels(node) > MAX_SQL_LEVELS:
        raise FilterError(f"the filter nests 'and' inside 'or' inside 'and' ... {_levels(node)} levels deep, more "
                          f"than SQLite parses ({MAX_SQL_LEVELS}); flatten it")
    compiler = _Compiler(fields, column)
    sql = compiler.compile(node)
    if len(compiler.params) > MAX_PARAMS:
        raise FilterError(f"the filter needs {len(compiler.params)} SQL parameters, more than SQLite's "
                          f"{MAX_PARAMS}; use fewer values")
    return sql, compiler.params

