from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator

import pytest

from latelex.data import (
    IdExample,
    iter_lines,
    read_collection,
    read_id_triples,
    read_qrels,
    read_queries,
    read_ranking,
    read_text_triples,
    read_top1000,
    read_topk,
    write_ranking,
)
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Hit


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@contextlib.contextmanager
def raises_at(exc: type[Exception], path: Path, line: int, *fragments: str) -> Iterator[pytest.ExceptionInfo]:
    """Expect ``exc`` with a one-line message that names ``path:line`` and every fragment."""
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- iter_lines


def test_iter_lines_strips_bom_and_crlf(tmp_path):
    path = write(tmp_path, "a.tsv", b"\xef\xbb\xbfone\r\ntwo\nthree")
    assert list(iter_lines(path)) == [(1, "one"), (2, "two"), (3, "three")]


def test_iter_lines_keeps_unicode_line_separators_inside_a_line(tmp_path):
    path = write(tmp_path, "a.tsv", "a\u2028b\x85c\nd\n")
    assert list(iter_lines(path)) == [(1, "a\u2028b\x85c"), (2, "d")]


def test_iter_lines_reports_bad_utf8_with_line(tmp_path):
    path = write(tmp_path, "bad.tsv", b"ok\nstill ok\nbad \xff byte\n")
    lines = iter_lines(path)
    assert next(lines) == (1, "ok")
    with raises_at(FormatError, path, 3, "not valid UTF-8", "0xff"):
        list(lines)


def test_iter_lines_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file") as info:
        iter_lines(tmp_path / "absent.tsv")
    assert not isinstance(info.value, FormatError)
    with pytest.raises(InputError, match="is a folder"):
        iter_lines(tmp_path)


# ---------------------------------------------------------------- collection and queries


def test_read_collection_plain_header_title_and_trailing_blanks(tmp_path):
    path = write(tmp_path, "collection.tsv", "id\ttext\ttitle\n0\tfirst passage\n1\t second \tA Title\n7\tx\t\n\n \n")
    assert list(read_collection(path)) == [("0", "first passage"), ("1", "A Title | second"), ("7", "x")]


def test_read_collection_crlf_and_bom(tmp_path):
    path = write(tmp_path, "c.tsv", b"\xef\xbb\xbf10\talpha\r\n11\tbeta\r\n")
    assert list(read_collection(path)) == [("10", "alpha"), ("11", "beta")]


def test_header_is_only_skipped_on_the_first_line(tmp_path):
    path = write(tmp_path, "c.tsv", "0\ta\nid\tb\n")
    assert list(read_collection(path)) == [("0", "a"), ("id", "b")]


@pytest.mark.parametrize(
    "content, line, fragment",
    [
        ("0\tok\n1 no tab here\n", 2, "pid<TAB>text"),
        ("0\tok\n1\ta\tb\tc\n", 2, "found 4"),
        ("0\tok\n\tno pid\n", 2, "empty pid"),
        ("0\tok\n1\t   \n", 2, "empty text"),
        ("0\tok\n1\t\tTitle only\n", 2, "empty text"),
        ("0\tok\n\n1\tlater\n", 2, "blank line"),
        ("0\tok\n1 2\tid with space\n", 2, "whitespace"),
    ],
)
def test_read_collection_malformed_lines(tmp_path, content, line, fragment):
    path = write(tmp_path, "collection.tsv", content)
    with raises_at(FormatError, path, line, fragment):
        list(read_collection(path))


def test_read_collection_duplicate_pid(tmp_path):
    path = write(tmp_path, "collection.tsv", "0\ta\n1\tb\n0\tc\n")
    with raises_at(DuplicateIdError, path, 3, "'0'", "line 1"):
        list(read_collection(path))


@pytest.mark.parametrize("content", ["", "\n\n", "id\ttext\n"])
def test_read_collection_empty_is_input_error(tmp_path, content):
    path = write(tmp_path, "collection.tsv", content)
    with pytest.raises(InputError, match="is empty") as info:
        list(read_collection(path))
    assert not isinstance(info.value, FormatError)


def test_read_collection_missing_file_raises_on_call(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_collection(tmp_path / "nope.tsv")


def test_read_queries(tmp_path):
    path = write(tmp_path, "queries.tsv", "qid\tquery\n1\twhat is a cell?\n2\tgene risk\n")
    assert list(read_queries(path)) == [("1", "what is a cell?"), ("2", "gene risk")]
    dup = write(tmp_path, "dup.tsv", "1\ta\n1\tb\n")
    with raises_at(DuplicateIdError, dup, 2, "'1'"):
        list(read_queries(dup))
    three = write(tmp_path, "three.tsv", "1\ta\tb\n")
    with raises_at(FormatError, three, 1, "qid<TAB>text"):
        list(read_queries(three))


def test_read_queries_streams(tmp_path):
    path = write(tmp_path, "queries.tsv", "1\ta\n2\tb\n3\n")
    queries = read_queries(path)
    assert next(queries) == ("1", "a")
    assert next(queries) == ("2", "b")
    with raises_at(FormatError, path, 3):
        next(queries)


# ---------------------------------------------------------------- rankings


def test_read_topk_orders_by_rank(tmp_path):
    path = write(tmp_path, "ranking.tsv", "q1\tp3\t3\nq1\tp1\t1\nq2\tp9\t1\nq1\tp2\t2\n")
    assert read_topk(path) == {"q1": ["p1", "p2", "p3"], "q2": ["p9"]}
    assert list(read_topk(path)) == ["q1", "q2"]


def test_read_topk_two_columns_keeps_file_order(tmp_path):
    path = write(tmp_path, "topk.tsv", "q1\tp3\nq1\tp1\n")
    assert read_topk(path) == {"q1": ["p3", "p1"]}


def test_read_ranking_scores(tmp_path):
    with_scores = write(tmp_path, "a.tsv", "q\tb\t2\t10.5\nq\ta\t1\t11.25\n")
    assert read_ranking(with_scores) == {"q": [Hit("a", 11.25), Hit("b", 10.5)]}
    without = write(tmp_path, "b.tsv", "q\tb\t2\nq\ta\t1\n")
    assert read_ranking(without) == {"q": [Hit("a", -1.0), Hit("b", -2.0)]}


@pytest.mark.parametrize(
    "content, line, fragment",
    [
        ("q\tp\t1\nq\tp2\tx\n", 2, "rank must be an integer"),
        ("q\tp\t1\t1.0\nq\tp2\t2\tabc\n", 2, "score must be a number"),
        ("q\tp\t1\t1.0\nq\tp2\t2\tnan\n", 2, "NaN"),
        ("q\tp\t1\t1.0\t5\n", 1, "found 5"),
        ("q\n", 1, "found 1"),
    ],
)
def test_read_topk_malformed(tmp_path, content, line, fragment):
    path = write(tmp_path, "ranking.tsv", content)
    with raises_at(FormatError, path, line, fragment):
        read_topk(path)


def test_read_topk_duplicate_pair(tmp_path):
    path = write(tmp_path, "ranking.tsv", "q\tp\t1\nq\tp\t2\n")
    with raises_at(DuplicateIdError, path, 2, "'p'"):
        read_topk(path)


def test_write_ranking_round_trip(tmp_path):
    run = {"q2": [Hit("d1", 3.0), Hit("d2", 1 / 3), Hit("d3", 1 / 3)], "q1": [Hit("x", -0.1)]}
    path = tmp_path / "out" / "ranking.tsv"
    write_ranking(path, run)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "q2\td1\t1\t3.0"
    assert lines[1].split("\t")[:3] == ["q2", "d2", "2"]
    assert read_ranking(path) == run
    assert list(read_ranking(path)) == ["q2", "q1"]


def test_write_ranking_failure_leaves_old_file(tmp_path):
    path = tmp_path / "ranking.tsv"
    path.write_text("old content\n", encoding="utf-8")
    bad = {"q1": [Hit("d1", 2.0)], "q2": [Hit("d2", 1.0), Hit(5, 0.5)]}  # type: ignore[arg-type]
    with pytest.raises(InputError, match="document id 5"):
        write_ranking(path, bad)
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert sorted(os.listdir(tmp_path)) == ["ranking.tsv"]


def test_write_ranking_interrupted_leaves_old_file(tmp_path, monkeypatch):
    import latelex.data.colbert as colbert

    path = tmp_path / "ranking.tsv"
    path.write_text("old\n", encoding="utf-8")
    calls = {"n": 0}

    def failing(score: float) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return repr(score)

    monkeypatch.setattr(colbert, "format_score", failing)
    with pytest.raises(OSError, match="disk full"):
        write_ranking(path, {"q": [Hit("a", 2.0), Hit("b", 1.0)]})
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["ranking.tsv"]


@pytest.mark.parametrize(
    "run, fragment",
    [
        ({"q": [Hit("a", 1.0), Hit("b", 2.0)]}, "not sorted"),
        ({"q": [Hit("a", float("nan"))]}, "NaN"),
        ({"q": [Hit("a b", 1.0)]}, "whitespace"),
        ({"": [Hit("a", 1.0)]}, "query id"),
        ({"q": [("a", 1.0)]}, "expected a Hit"),
    ],
)
def test_write_ranking_rejects_bad_runs(tmp_path, run, fragment):
    with pytest.raises(InputError, match=fragment):
        write_ranking(tmp_path / "r.tsv", run)
    assert not (tmp_path / "r.tsv").exists()


# ---------------------------------------------------------------- top1000, qrels, triples


def test_read_top1000(tmp_path):
    path = write(tmp_path, "top1000.dev", "1\t10\twhat is x\tx is a letter\n1\t11\twhat is x\tanother\n")
    assert list(read_top1000(path)) == [
        ("1", "10", "what is x", "x is a letter"),
        ("1", "11", "what is x", "another"),
    ]
    bad = write(tmp_path, "bad", "1\t10\twhat\tok\n1\t11\twhat\n")
    with raises_at(FormatError, bad, 2, "query<TAB>passage"):
        list(read_top1000(bad))


def test_read_qrels_tabs_and_spaces(tmp_path):
    path = write(tmp_path, "qrels.tsv", "1\t0\t10\t1\n1 0 11 0\n\n2\t0\t10\t2\r\n")
    assert read_qrels(path) == {"1": {"10": 1, "11": 0}, "2": {"10": 2}}


def test_read_qrels_errors(tmp_path):
    dup = write(tmp_path, "dup.tsv", "1 0 10 1\n1 0 10 1\n")
    with raises_at(DuplicateIdError, dup, 2, "'10'"):
        read_qrels(dup)
    grade = write(tmp_path, "grade.tsv", "1 0 10 high\n")
    with raises_at(FormatError, grade, 1, "integer"):
        read_qrels(grade)
    three = write(tmp_path, "three.tsv", "1 0 10 1\n1 10 1\n")
    with raises_at(FormatError, three, 2, "expected 4 columns"):
        read_qrels(three)
    with pytest.raises(InputError, match="is empty"):
        read_qrels(write(tmp_path, "empty.tsv", "\n"))


def test_read_text_triples(tmp_path):
    path = write(tmp_path, "triples.tsv", "q one\tpos one\tneg one\nq two\tpos\tneg\n")
    assert list(read_text_triples(path)) == [("q one", "pos one", "neg one"), ("q two", "pos", "neg")]
    bad = write(tmp_path, "bad.tsv", "q\tp\tn\nq\t\tn\n")
    with raises_at(FormatError, bad, 2, "empty positive"):
        list(read_text_triples(bad))
    short = write(tmp_path, "short.tsv", "q\tp\n")
    with raises_at(FormatError, short, 1, "found 2"):
        list(read_text_triples(short))


def test_read_id_triples_shapes(tmp_path):
    path = write(
        tmp_path,
        "triples.jsonl",
        '[1, 2, 3]\n["q7", "p1", "p2", "p3", 4]\n[5, [10, 0.5], ["11", -2], [12, 1e3]]\n[9, 8]\n',
    )
    assert list(read_id_triples(path)) == [
        IdExample("1", ("2", "3"), None),
        IdExample("q7", ("p1", "p2", "p3", "4"), None),
        IdExample("5", ("10", "11", "12"), (0.5, -2.0, 1000.0)),
        IdExample("9", ("8",), None),
    ]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("[1, 2, 3", "invalid JSON"),
        ('{"qid": 1}', "JSON list"),
        ("[1]", "JSON list"),
        ("[1, 2, [3, 0.5]]", "mixes"),
        ("[1, [2, 0.5, 7]]", "[pid, score]"),
        ('[1, [2, "high"]]', "score must be a finite number"),
        ("[true, 2, 3]", "qid must be an integer or a string"),
        ("[1, 2.5, 3]", "pid must be an integer or a string"),
        ('[1, "", 3]', "empty pid"),
    ],
)
def test_read_id_triples_malformed(tmp_path, bad, fragment):
    path = write(tmp_path, "triples.jsonl", "[1, 2, 3]\n" + bad + "\n")
    with raises_at(FormatError, path, 2, fragment):
        list(read_id_triples(path))


def test_frozen_id_example():
    example = IdExample("1", ("2",), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.qid = "3"  # type: ignore[misc]
