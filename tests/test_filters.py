from __future__ import annotations

import json
import operator
import random
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latelex.errors import InputError
from latelex.search.filters import (
    FIELD_TYPES,
    And,
    Compare,
    Exists,
    Filter,
    FilterError,
    In,
    IsNull,
    Not,
    Or,
    as_filter,
    compile_filter,
    field_types,
    format_field,
    merge_field_types,
    parse_field,
    parse_filter,
)

INJECTION = "'); DROP TABLE documents; --"


# ------------------------------------------------------------------------------------ the plain-Python reference

MISSING = object()


def lookup(metadata, path):
    value = metadata
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def same(value, literal):
    return kind(value) == kind(literal) and value == literal  # True == 1 in Python: the kinds must agree too


ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def evaluate(node, metadata) -> bool:
    """The documented semantics of a filter, over a metadata dict (or None)."""
    if isinstance(node, (Compare, In)):
        value = lookup(metadata, node.path)
        if value is MISSING or value is None:
            return False
        if isinstance(node, In):
            return any(same(value, v) for v in node.values) != node.negated
        if node.op == "=":
            return same(value, node.value)
        if node.op == "!=":
            return not same(value, node.value)
        return kind(value) == kind(node.value) in ("number", "string") and ORDER[node.op](value, node.value)
    if isinstance(node, Exists):
        return lookup(metadata, node.path) is not MISSING
    if isinstance(node, IsNull):
        return (lookup(metadata, node.path) in (MISSING, None)) != node.negated
    if isinstance(node, Not):
        return not evaluate(node.item, metadata)
    if isinstance(node, And):
        return all(evaluate(item, metadata) for item in node.items)
    if isinstance(node, Or):
        return any(evaluate(item, metadata) for item in node.items)
    raise TypeError(node)


# ------------------------------------------------------------------------------------------------ the documents

STRINGS = ["", "a", "b", "pubmed", "pmc", "é", "a'b", 'q"x', "Z", "zz", "1", "true", INJECTION, "back\\slash"]
NUMBERS = [-2, -1.5, 0, 0.0, 0.5, 1, 2, 2.5, 3, 2010, 2015, 2020, 1e-3, -0.25]


def random_metadata(rng: random.Random):
    if rng.random() < 0.06:
        return None
    maybe = lambda: rng.random() < 0.7  # noqa: E731
    doc = {}
    if maybe():
        doc["year"] = rng.choice([None, 2010, 2012, 2015, 2015, 2018, 2020])
    if maybe():
        doc["score"] = rng.choice(NUMBERS)
    if maybe():
        doc["source"] = rng.choice(STRINGS + [None])
    if maybe():
        doc["flag"] = rng.choice([True, False, None])
    if maybe():
        author = {}
        if maybe():
            author["name"] = rng.choice(STRINGS)
        if maybe():
            author["age"] = rng.choice([30, 41, 41.0, None])
        doc["author"] = rng.choice([author, author, None])
    if maybe():
        doc["tags"] = rng.sample(STRINGS, rng.randint(0, 3))
    if maybe():
        doc["mix"] = rng.choice([1, 0, 1.0, 2.5, "1", "a", True, False, None, [], [1], {"k": 1}, {}])
    if maybe():
        doc["mix2"] = rng.choice([1, 2, "a", "b", True])
    if maybe():
        doc["file name"] = rng.choice(STRINGS)
    if maybe():
        doc['a"b'] = rng.choice([1, 2, 3])
    if maybe():
        doc["é"] = rng.choice(STRINGS)
    if maybe():
        doc["x.y"] = rng.choice([True, False])
    if maybe():
        doc[INJECTION] = rng.choice(STRINGS)
    if maybe():
        doc["back\\slash"] = rng.choice([1, 2])
    if maybe():
        doc["nothing"] = None
    if maybe():
        doc["in"] = rng.choice([1, 2])
    if maybe():
        doc["2020"] = rng.choice(NUMBERS)
    if maybe():
        doc["weird key"] = {"in": rng.choice(NUMBERS), 'a"b': {"é": rng.choice(STRINGS)}}
    return doc


def make_db(metadata):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE documents (row INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, text TEXT, metadata TEXT)")
    for row, meta in enumerate(metadata):
        # Half the rows as Python's default (non-ASCII escaped, \u00e9), half with raw UTF-8: keys must work in both.
        stored = None if meta is None else json.dumps(meta, ensure_ascii=row % 2 == 0)
        db.execute("INSERT INTO documents VALUES (?, ?, ?, ?)", (row, f"d{row}", "text", stored))
    return db


DOCS = [random_metadata(random.Random(1000 + i)) for i in range(60)]
DB = make_db(DOCS)
SCHEMA = field_types(DOCS)


def selected(where, db=DB, fields=SCHEMA, column="metadata"):
    sql, params = compile_filter(where, fields, column)
    return sorted(row for (row,) in db.execute(f"SELECT row FROM documents WHERE {sql}", params))


def expected(where, docs=DOCS):
    node = as_filter(where)
    return [row for row, meta in enumerate(docs) if evaluate(node, meta)]


def test_sqlite_has_json_functions():
    assert sqlite3.sqlite_version_info >= (3, 9), sqlite3.sqlite_version
    db = sqlite3.connect(":memory:")
    row = db.execute("""SELECT json_extract('{"a": {"b": 2}}', '$."a"."b"'), json_type('{"t": true}', '$."t"')""")
    assert row.fetchone() == (2, "true")


def test_schema_of_the_test_documents():
    assert SCHEMA["year"] == "number"  # null mixes with numbers without making the field mixed
    assert SCHEMA["author"] == "object" and SCHEMA["author.name"] == "string" and SCHEMA["author.age"] == "number"
    assert SCHEMA["tags"] == "array" and SCHEMA["mix"] == "mixed" and SCHEMA["nothing"] == "null"
    assert SCHEMA["flag"] == "boolean" and SCHEMA["`x.y`"] == "boolean"
    for name in ["`file name`", '`a"b`', "`é`", "`in`", "`2020`", "`weird key`.`in`", '`weird key`.`a"b`.`é`',
                 "`back\\\\slash`", format_field((INJECTION,))]:
        assert name in SCHEMA, name
    assert list(SCHEMA) == sorted(SCHEMA)


# -------------------------------------------------------------------------------------------------- random filters

def literals(field_kind):
    by_kind = {"number": st.sampled_from(NUMBERS + [7, -0.0, 2014.5]), "string": st.sampled_from(STRINGS + ["c"]),
               "boolean": st.booleans()}
    if field_kind == "mixed":
        return st.one_of(*by_kind.values())
    return by_kind[field_kind]


@st.composite
def conditions(draw):
    name = draw(st.sampled_from(sorted(SCHEMA)))
    field_kind = SCHEMA[name]
    path = parse_field(name)
    shapes = ["exists", "is null", "is not null"]
    if field_kind not in ("null", "array", "object"):
        shapes += ["=", "!=", "in", "not in"] * 3
        if field_kind != "boolean":
            shapes += ["<", "<=", ">", ">="] * 2
    shape = draw(st.sampled_from(shapes))
    if shape == "exists":
        return Exists(path)
    if shape in ("is null", "is not null"):
        return IsNull(path, shape == "is not null")
    if shape in ("in", "not in"):
        return In(path, tuple(draw(st.lists(literals(field_kind), max_size=4))), shape == "not in")
    literal = literals(field_kind)
    if shape in ("<", "<=", ">", ">="):
        literal = literal.filter(lambda v: not isinstance(v, bool))
    return Compare(path, shape, draw(literal))


filters = st.recursive(
    conditions(),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=2, max_size=4).map(lambda items: Or(tuple(items))),
        children.map(Not),
    ),
    max_leaves=10,
)

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(filters)
def test_sql_selects_what_the_reference_selects(node):
    text = str(node)
    assert parse_filter(text) == node  # writing a filter and reading it back gives the same tree
    assert selected(text) == expected(node), text


def test_random_filters_are_not_trivial():
    """The generator reaches filters that select some but not all rows (else the parity test proves little)."""
    node = Or((Compare(("year",), ">=", 2015), In(("mix",), (1, "a", True))))
    rows = selected(node)
    assert 0 < len(rows) < len(DOCS) and rows == expected(node)


@pytest.mark.parametrize("where", [
    "year >= 2015 and source in ['pubmed', 'pmc']",
    "author.name = 'a' or author.age > 35",
    "mix = 1", "mix = 1.0", "mix = true", "mix != true", "mix = '1'", "mix > 0", "mix < 'b'", "mix is null",
    "mix exists", "not mix = 1", "mix in []", "mix not in []", "mix2 in [1, 'a', true, false]",
    "tags exists", "tags is not null", "author is null", "nothing exists", "nothing is not null",
    "`é` = 'é'", "`weird key`.`a\"b`.`é` = 'é'", "`weird key`.`in` <= 0.5", "`x.y` = false", "`in` = 2",
    "flag != true", "not flag = true", "`2020` >= -1.5 and `2020` < 2.5", "score = 0", "score = 1e-3",
    "source > ''", "source >= 'a\\'b'", "not (source = 'pubmed' or source = 'pmc')",
])
def test_documented_cases(where):
    assert selected(where) == expected(where)


def test_semantics_by_hand():
    docs = [{"x": 1}, {"x": True}, {"x": None}, {}, None, {"x": "1"}, {"x": 2.0}, {"x": [1]}]
    db = make_db(docs)
    fields = field_types(docs)
    assert fields == {"x": "mixed"}
    rows = lambda where: selected(where, db, fields)  # noqa: E731
    assert rows("x = true") == [1]  # the number 1 is not true
    assert rows("x = 1") == [0]  # nor is true the number 1, nor "1"
    assert rows("x != 1") == [1, 5, 6, 7]  # != needs a value: not null, not missing
    assert rows("not x = 1") == [1, 2, 3, 4, 5, 6, 7]  # not negates a false comparison
    assert rows("x in []") == []
    assert rows("x not in []") == [0, 1, 5, 6, 7]
    assert rows("x exists") == [0, 1, 2, 5, 6, 7]
    assert rows("x is null") == [2, 3, 4]
    assert rows("x is not null") == [0, 1, 5, 6, 7]
    assert rows("x >= 1") == [0, 6]  # orderings compare numbers with numbers only
    assert rows({"x": [1, True]}) == [0, 1]
    assert rows({}) == list(range(len(docs)))


# -------------------------------------------------------------------------------------------------------- parsing

def test_precedence_not_and_or():
    assert parse_filter("a = 1 or b = 2 and not c = 3") == Or((
        Compare(("a",), "=", 1),
        And((Compare(("b",), "=", 2), Not(Compare(("c",), "=", 3)))),
    ))
    assert parse_filter("(a = 1 or b = 2) and c = 3") == And((
        Or((Compare(("a",), "=", 1), Compare(("b",), "=", 2))), Compare(("c",), "=", 3),
    ))
    assert parse_filter("not not a = 1") == Not(Not(Compare(("a",), "=", 1)))
    assert parse_filter("a = 1 and b = 2 and c = 3").items == parse_filter("a=1 AND b==2 And c=3").items


def test_keywords_are_case_insensitive():
    assert parse_filter("NOT a IN [1] Or b NOT IN [] AND c EXISTS and d IS NOT NULL or e Is Null") == Or((
        Not(In(("a",), (1,))),
        And((In(("b",), (), True), Exists(("c",)), IsNull(("d",), True))),
        IsNull(("e",)),
    ))
    assert parse_filter("x = TRUE or x = False") == Or((Compare(("x",), "=", True), Compare(("x",), "=", False)))


@pytest.mark.parametrize("text, value", [
    ('"plain"', "plain"), ("'single'", "single"), (r'"a\"b"', 'a"b'), (r"'a\'b'", "a'b"), (r'"\\"', "\\"),
    (r'"\n\t\r\b\f\/"', "\n\t\r\b\f/"), (r'"\u00e9"', "é"), (r'"\ud83d\ude00"', "\U0001F600"), ('"é"', "é"),
    ("\"it's\"", "it's"), ("'say \"hi\"'", 'say "hi"'),
    ("0", 0), ("-7", -7), ("2.5", 2.5), ("-.5", -0.5), (".5", 0.5), ("1e3", 1000.0), ("-2.5E-3", -0.0025),
    ("1e+2", 100.0), ("9223372036854775807", 2**63 - 1), ("true", True), ("false", False),
])
def test_literals(text, value):
    node = parse_filter(f"x = {text}")
    assert node == Compare(("x",), "=", value)
    assert type(node.value) is type(value)


def test_fields():
    assert parse_filter("author.name = 'x'").path == ("author", "name")
    assert parse_filter("`file name` = 'x'").path == ("file name",)
    assert parse_filter(r"`a\`b`.`c.d`.in = 1").path == ("a`b", "c.d", "in")  # a keyword after a dot is a key
    assert parse_filter('`a"b` = 1').path == ('a"b',)
    assert parse_filter("`` exists").path == ("",)
    for path in [("year",), ("author", "name"), ("file name",), ('a"b',), ("in",), ("2020",), ("a`b", "\\", "é"),
                 ("",), ("x.y",), (INJECTION,), ("new\nline",)]:
        assert parse_field(format_field(path)) == path
    assert format_field(("author", "name")) == "author.name"
    assert format_field(("file name",)) == "`file name`"
    assert format_field(("and",)) == "`and`"


def test_writing_back():
    text = "year >= 2015 and (source in [\"pubmed\", \"pmc\"] or not `file name` != \"a\\\"b\") and x.y is not null"
    node = parse_filter(text)
    assert str(node) == text
    assert str(parse_filter("a = 1 or (b = 2 or c = 3)")) == "a = 1 or (b = 2 or c = 3)"  # keeps the tree
    assert str(parse_filter("not (a = 1 and b = 2)")) == "not (a = 1 and b = 2)"


def test_literal_kinds_stay_apart_in_equality():
    assert Compare(("x",), "=", 1) != Compare(("x",), "=", True)
    assert In(("x",), (0,)) != In(("x",), (False,))
    assert Compare(("x",), "=", 1) == Compare(("x",), "=", 1.0)  # numbers are numbers
    assert len({Compare(("x",), "=", 1), Compare(("x",), "=", True)}) == 2


def test_nodes_are_immutable_and_validated():
    node = parse_filter("x = 1")
    with pytest.raises(AttributeError):
        node.value = 2  # type: ignore[misc]
    assert In(["a"], [1, 2]).values == (1, 2)  # lists become tuples
    for build in [
        lambda: Compare(("x",), "~", 1), lambda: Compare(("x",), "=", None), lambda: Compare("x", "=", 1),
        lambda: Compare((), "=", 1), lambda: Compare(("x",), "=", float("nan")), lambda: Compare(("x",), "=", 2**64),
        lambda: Compare(("x",), "<", True), lambda: Compare(("x",), "=", [1]), lambda: In(("x",), "ab"),
        lambda: In(("x",), (None,)), lambda: Not("x = 1"), lambda: And(("x = 1",)), lambda: Compare((1,), "=", 1),
    ]:
        with pytest.raises(FilterError) as info:
            build()
        assert "\n" not in str(info.value)


PARSE_ERRORS = [
    ("year >= and x = 1", "column 9: expected a value after '>='"),
    ("", "empty"),
    ("   ", "empty"),
    ("x =", "found the end of the filter"),
    ("x = null", "is null"),
    ("x in [1, null]", "is null"),
    ("in = 1", "backquote"),
    ("x < true", "does not order booleans"),
    ("(x = 1", "expected ')' to close the '(' at column 1"),
    ("x = 1)", "expected 'and', 'or' or the end"),
    ("x = 'abc", "unterminated string"),
    ("`abc = 1", "unterminated name"),
    ("x = 1 y = 2", "column 7"),
    ("x not = 1", "expected 'in' after 'x not'"),
    ('x = "\\q"', "unknown escape"),
    ('x = "\\u12"', "4 hex digits"),
    ('x = "\\ud800"', "lone surrogate"),
    ("x = 99999999999999999999", "64-bit"),
    ("x = 1e999", "finite"),
    ("x ! 1", "unexpected character '!'"),
    ("x = 1 & y = 2", "unexpected character '&'"),
    ("a.5 = 1", "field name after '.'"),
    ("a. = 1", "field name after '.'"),
    ("x in [1 2]", "expected ',' or ']'"),
    ("x in 1", "expected '['"),
    ("x in [1,,2]", "expected a value in the list"),
    ("x = 1abc", "bad number"),
    ("x = 1.2.3", "bad number"),
    ("x", "expected an operator after field 'x'"),
    ("x is", "expected 'null'"),
    ("x is not 1", "expected 'null'"),
    ("= 1", "expected a field name"),
    ("x = y", "expected a value"),
    ("x = 1 and", "expected a field name"),
    ("not", "expected a field name"),
    ("()", "expected a field name"),
    ("x = 1\nand y", "expected an operator"),
    ("x = \u0663", "unexpected character"),  # an Arabic-Indic digit is not a number here
    ("x = 1\u2028or y", "expected an operator"),  # a Unicode line separator does not break the message
    ("not " * 101 + "x = 1", "nested"),
    ("(" * 150 + "x = 1" + ")" * 150, "nested"),
]


@pytest.mark.parametrize("expr, fragment", PARSE_ERRORS)
def test_parse_errors_are_one_line(expr, fragment):
    with pytest.raises(FilterError) as info:
        parse_filter(expr)
    message = str(info.value)
    assert isinstance(info.value, InputError)
    assert len(message.splitlines()) == 1 and fragment in message, message
    assert message.startswith("bad filter")
    if expr.strip():
        assert "column" in message
        if len(expr) <= 200:
            assert message.endswith(" in: " + "".join(c if c.isprintable() else " " for c in expr)), message
        else:  # a long filter is cut to the part around the column
            assert "..." in message and len(message) < 300, message


def test_parse_error_column_and_expression():
    with pytest.raises(FilterError, match=r"^bad filter at column 9: expected a value after '>=' .*found 'and' "
                                          r"in: year >= and x = 1$"):
        parse_filter("year >= and x = 1")
    with pytest.raises(FilterError, match="must be a string"):
        parse_filter(5)  # type: ignore[arg-type]


def test_wide_filters_run_in_sqlite():
    wide_or = " or ".join(f"year = {2000 + i}" for i in range(3000))
    assert selected(wide_or) == expected(wide_or)
    long_in = "score not in [" + ", ".join(str(i / 4) for i in range(5000)) + "]"
    assert selected(long_in) == expected(long_in)
    with pytest.raises(FilterError, match="SQL parameters"):
        compile_filter(In(("year",), tuple(range(40000))), SCHEMA)


# -------------------------------------------------------------------------------------------------- the schema

def test_field_types():
    docs = [
        {"year": 2015, "title": "a", "nested": {"name": "x", "n": 1}, "tags": ["a", {"b": 1}], "flag": True,
         "maybe": None, "both": 1, "later": None},
        {"year": None, "title": "b", "nested": {"name": None, "deeper": {"k": [1]}}, "flag": False, "both": "one",
         "later": 2.5, "odd key": 1, "dot.key": {"x": 1}},
        None,
        {},
    ]
    assert field_types(docs) == {
        "`dot.key`": "object", "`dot.key`.x": "number", "`odd key`": "number", "both": "mixed", "flag": "boolean",
        "later": "number", "maybe": "null", "nested": "object", "nested.deeper": "object",
        "nested.deeper.k": "array", "nested.n": "number", "nested.name": "string", "tags": "array",
        "title": "string", "year": "number",
    }
    assert field_types([{"a": {"b": 1}}, {"a": 2}]) == {"a": "mixed", "a.b": "number"}
    assert field_types([]) == {}
    assert field_types(iter([{"a": 1.5}, {"a": 2}])) == {"a": "number"}
    for bad in [[5], [{"a": {1, 2}}], [{1: "x"}], [{"a": {"b": object()}}]]:
        with pytest.raises(InputError) as info:
            field_types(bad)
        assert "\n" not in str(info.value)


def test_merge_field_types():
    a = field_types([{"x": 1, "y": None, "z": "s"}])
    b = field_types([{"x": "s", "y": True, "w": None}])
    assert merge_field_types(a, b) == {"w": "null", "x": "mixed", "y": "boolean", "z": "string"}
    assert merge_field_types(a, b) == field_types([{"x": 1, "y": None, "z": "s"}, {"x": "s", "y": True, "w": None}])
    assert merge_field_types({}, a) == a and merge_field_types(a, {}) == a
    assert merge_field_types({"m": "mixed"}, {"m": "null"}) == {"m": "mixed"}
    with pytest.raises(InputError, match="kinds are"):
        merge_field_types({"x": "int"}, {})
    assert set(FIELD_TYPES) == {"string", "number", "boolean", "null", "array", "object", "mixed"}


def test_merging_in_batches_gives_the_schema_of_all():
    rng = random.Random(7)
    for _ in range(50):
        docs = [random_metadata(rng) for _ in range(6)]
        cut = rng.randint(0, 6)
        assert merge_field_types(field_types(docs[:cut]), field_types(docs[cut:])) == field_types(docs)


# ---------------------------------------------------------------------------------------------- compile checks

COMPILE_ERRORS = [
    ("yeer = 2015", "unknown field 'yeer' in the filter; did you mean 'year'?"),
    ("author.nam exists", "did you mean 'author.name'?"),
    ("year = '2015'", "field 'year' holds numbers; compare it with a number, not a string"),
    ("year in [2015, '2016']", "field 'year' holds numbers; compare it with a number, not a string"),
    ("source = 1", "holds strings; compare it with a string, not a number"),
    ("flag = 1", "holds booleans; compare it with a boolean (true or false), not a number"),
    ("flag < 1", "holds booleans"),
    ("source != true", "not a boolean"),
    ("tags = 'a'", "field 'tags' holds arrays; test it only with 'exists' or 'is [not] null'"),
    ("author > 'a'", "holds objects"),
    ("nothing = 1", "holds only nulls"),
    ("nothing in []", "holds only nulls"),
    ("file_name is null", "`file name`"),  # listed as a known field, since it is close
]


@pytest.mark.parametrize("expr, fragment", COMPILE_ERRORS)
def test_compile_errors_are_one_line(expr, fragment):
    with pytest.raises(FilterError) as info:
        compile_filter(expr, SCHEMA)
    assert "\n" not in str(info.value) and fragment in str(info.value), str(info.value)


def test_unknown_field_lists_at_most_ten_known_fields():
    fields = {f"f{i:02d}": "number" for i in range(15)}
    with pytest.raises(FilterError) as info:
        compile_filter("zzz = 1", fields)
    message = str(info.value)
    assert "f09" in message and "f10" not in message and "(and 5 more)" in message and "\n" not in message
    with pytest.raises(FilterError, match="no document here has metadata fields"):
        compile_filter("x = 1", {})


def test_mixed_fields_take_any_scalar():
    for where in ["mix = 1", "mix = 'a'", "mix = false", "mix < 2", "mix >= 'a'", "mix in [1, 'a', true]"]:
        compile_filter(where, SCHEMA)


def test_compile_checks_its_arguments():
    for column in ["metadata; DROP TABLE documents", "a b", "", "1x", None, 'x"']:
        with pytest.raises(FilterError, match="identifier"):
            compile_filter("year = 1", SCHEMA, column)  # type: ignore[arg-type]
    with pytest.raises(FilterError, match="must map"):
        compile_filter("year = 1", ["year"])  # type: ignore[arg-type]
    with pytest.raises(FilterError, match="kind 'int'"):
        compile_filter("year = 1", {"year": "int"})
    with pytest.raises(FilterError, match="where must be"):
        compile_filter(5, SCHEMA)  # type: ignore[arg-type]


def test_other_column_name():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE documents (row INTEGER PRIMARY KEY, meta_2 TEXT)")
    db.executemany("INSERT INTO documents VALUES (?, ?)", [(0, '{"a": 1}'), (1, '{"a": 2}'), (2, None)])
    sql, params = compile_filter("a >= 2 or a is null", {"a": "number"}, column="meta_2")
    assert [r for (r,) in db.execute(f"SELECT row FROM documents WHERE {sql}", params)] == [1, 2]


def test_compiled_expression_is_never_null():
    """Every compiled expression is 0 or 1 on every row, so NOT and the caller's own SQL see two values."""
    for where in ["year = 2015", "year != 2015", "year in [2015]", "year not in [2015]", "mix = true",
                  "`weird key`.`in` > 0", "author.name is null", "tags exists", "mix2 in [1, 'a', true]"]:
        sql, params = compile_filter(where, SCHEMA)
        values = {v for (v,) in DB.execute(f"SELECT {sql} FROM documents", params)}
        assert values <= {0, 1}, where


# ------------------------------------------------------------------------------------------------------ as_filter

def test_as_filter():
    node = as_filter({"source": "pubmed", "year": [2019, 2020], "author.name": "a", "`file name`": None})
    assert node == And((
        Compare(("source",), "=", "pubmed"), In(("year",), (2019, 2020)), Compare(("author", "name"), "=", "a"),
        IsNull(("file name",)),
    ))
    assert as_filter({"x": True}) == Compare(("x",), "=", True)
    assert as_filter({}) == And(())
    ready = parse_filter("x = 1")
    assert as_filter(ready) is ready
    assert as_filter("x = 1") == ready
    assert isinstance(as_filter({"x": (1, 2)}), Filter)
    where = {"source": ["pubmed", "pmc"], "flag": True}
    assert selected(where) == expected(where)


@pytest.mark.parametrize("where, fragment", [
    ({"file name": 1}, "backquote"),
    ({"x": {"a": 1}}, "must be a string, a number or a boolean"),
    ({"x": [None]}, "is null"),
    ({"x": float("inf")}, "finite"),
    ({1: 1}, "field name must be a string"),
    ({"": 1}, "empty"),
    (5, "where must be"),
    (None, "where must be"),
])
def test_as_filter_errors(where, fragment):
    with pytest.raises(FilterError) as info:
        as_filter(where)
    assert "\n" not in str(info.value) and fragment in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------------------------ injection

@pytest.mark.parametrize("where", [
    f"`{INJECTION}` = \"{INJECTION}\"",
    f"`{INJECTION}` != '{INJECTION.replace(chr(39), chr(92) + chr(39))}'",
    {format_field((INJECTION,)): [INJECTION, "a"]},
    f"source = \"{INJECTION}\" or tags exists",
    '`a"b` = 1 or `a"b` in [2]',
    '`weird key`.`a"b`.`é` = "é"',
    "`back\\\\slash` = 1",
    "source = 'x\" OR 1=1 --'",
])
def test_injection_is_data(where):
    sql, params = compile_filter(where, SCHEMA)
    for text in [INJECTION, "DROP", 'a"b', "é", "back", "OR 1=1"]:
        assert text not in sql, (text, sql)
    assert "'" not in sql.replace("'integer'", "").replace("'real'", "").replace("'text'", "").replace(
        "'true'", "").replace("'false'", "").replace("'null'", "").replace("'object'", "").replace("''", "")
    assert selected(where) == expected(where)
    assert DB.execute("SELECT count(*) FROM documents").fetchone() == (len(DOCS),)
    assert DB.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("documents",)]


def test_injection_rows_are_found():
    """The injection key and value are really looked up (the test above would pass on a filter matching nothing)."""
    where = f"`{INJECTION}` = \"{INJECTION}\" or `a\"b` = 1"
    assert selected(where) == expected(where) != []


def alternating(levels, leaf, width):
    """``levels`` nested groups alternating or / and, each of ``width`` conditions with the deeper group first."""
    node = parse_filter(leaf)
    for level in range(levels):
        group = Or if level % 2 == 0 else And
        node = group((node,) + tuple(parse_filter(leaf) for _ in range(width - 1)))
    return node


def test_the_deepest_filter_allowed_runs_in_sqlite():
    from latelex.search.filters import MAX_SQL_LEVELS

    for leaf in ['not `weird key`.`a"b`.`é` not in ["a", "b"]', "mix in [1, 'a', true]", "not `x.y` != true"]:
        for width in (2, 32):
            node = alternating(MAX_SQL_LEVELS, leaf, width)
            assert selected(node) == expected(node)
        with pytest.raises(FilterError, match="flatten it"):
            compile_filter(alternating(MAX_SQL_LEVELS + 1, leaf, 2), SCHEMA)
    # not, double negation and parentheses do not count
    where = "not " * 45 + "(" * 45 + "year = 2015 or (year = 2010 or (not not not year = 2012))" + ")" * 45
    assert selected(where) == expected(where)


def test_a_string_holding_json_is_not_an_object():
    docs = [{"s": '{"k": 1}', 'q"': '{"k": 1}'}, {"s": {"k": 1}, 'q"': {"k": 1}}]
    db = make_db(docs)
    fields = field_types(docs)
    assert selected("s.k = 1", db, fields) == [1]
    assert selected('`q"`.k = 1', db, fields) == [1]  # looked up with json_each, which must check the type too
    assert selected('`q"` = \'{"k": 1}\'', db, fields) == [0]


def test_as_filter_error_names_the_key():
    with pytest.raises(FilterError, match=r"^where\['year'\]: a filter value must be"):
        as_filter({"year": {"min": 2015}})
