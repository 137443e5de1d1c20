from __future__ import annotations

import os
from pathlib import Path

import pytest

from latelex.data import read_trec_qrels, read_trec_run, read_trec_topics, write_trec_run
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Hit


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# ---------------------------------------------------------------- runs


def test_trec_run_round_trip_keeps_ties_and_precision(tmp_path):
    run = {
        "301": [Hit("d9", 12.5), Hit("d1", 0.1 + 0.2), Hit("d2", 0.3), Hit("d0", 0.3), Hit("d7", -1e-12)],
        "302": [Hit("x", 1.0)],
    }
    path = tmp_path / "run.txt"
    write_trec_run(path, run, tag="colbert")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "301 Q0 d9 1 12.5 colbert"
    assert [line.split()[3] for line in lines[:5]] == ["1", "2", "3", "4", "5"]
    back = read_trec_run(path)
    assert back == run
    assert list(back) == ["301", "302"]


def test_read_trec_run_orders_by_score_then_rank(tmp_path):
    path = write(
        tmp_path,
        "run.txt",
        "1 Q0 a 3 1.0 t\n1 Q0 b 1 1.0 t\n1\tQ0\tc\t9\t5\tt\n\n2 Q0 z 1 -3 other\n",
    )
    assert read_trec_run(path) == {"1": [Hit("c", 5.0), Hit("b", 1.0), Hit("a", 1.0)], "2": [Hit("z", -3.0)]}


@pytest.mark.parametrize(
    "content, line, fragment, exc",
    [
        ("1 Q0 a 1 1.0 t\n1 Q0 b 2 1.0\n", 2, "expected 6 columns", FormatError),
        ("1 Q0 a 1 1.0 t\n1 Q0 b two 1.0 t\n", 2, "rank must be an integer", FormatError),
        ("1 Q0 a 1 1.0 t\n1 Q0 b 2 high t\n", 2, "score must be a number", FormatError),
        ("1 Q0 a 1 1.0 t\n1 Q0 a 2 0.5 t\n", 2, "'a' twice", DuplicateIdError),
    ],
)
def test_read_trec_run_malformed(tmp_path, content, line, fragment, exc):
    path = write(tmp_path, "run.txt", content)
    with pytest.raises(exc, match=fragment) as info:
        read_trec_run(path)
    assert f"{path}:{line}:" in str(info.value)


def test_read_trec_run_empty(tmp_path):
    with pytest.raises(InputError, match="is empty"):
        read_trec_run(write(tmp_path, "run.txt", "\n"))


def test_write_trec_run_failure_leaves_old_file(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("1 Q0 old 1 1.0 t\n", encoding="utf-8")
    bad = {"1": [Hit("a", 1.0)], "2": [Hit(None, 0.0)]}  # type: ignore[arg-type]
    with pytest.raises(InputError, match="document id None"):
        write_trec_run(path, bad)
    assert path.read_text(encoding="utf-8") == "1 Q0 old 1 1.0 t\n"
    assert os.listdir(tmp_path) == ["run.txt"]
    with pytest.raises(InputError, match="run tag"):
        write_trec_run(path, {"1": [Hit("a", 1.0)]}, tag="two words")


def test_write_trec_run_accepts_numpy_scores(tmp_path):
    import numpy as np

    path = tmp_path / "run.txt"
    write_trec_run(path, {"1": [Hit("a", np.float32(0.5)), Hit("b", np.float64(0.25))]})  # type: ignore[arg-type]
    assert read_trec_run(path) == {"1": [Hit("a", 0.5), Hit("b", 0.25)]}


# ---------------------------------------------------------------- qrels


def test_read_trec_qrels(tmp_path):
    path = write(tmp_path, "qrels.txt", "301 0 FBIS3-10082 1\n301 0 FBIS3-10169 0\n302\t0\tx\t-1\n")
    assert read_trec_qrels(path) == {"301": {"FBIS3-10082": 1, "FBIS3-10169": 0}, "302": {"x": -1}}
    dup = write(tmp_path, "dup.txt", "301 0 a 1\n301 1 a 1\n")
    with pytest.raises(DuplicateIdError, match=r"dup.txt:2:"):
        read_trec_qrels(dup)


# ---------------------------------------------------------------- topics

ROBUST = """<top>
<num> Number: 301
<title> International Organized Crime

<desc> Description:
Identify organizations that participate in international criminal
activity, the activity, and, if possible, collaborating organizations.

<narr> Narrative:
A relevant document must as a minimum identify the organization.

</top>


<top>
<num> Number: 302 <title> Poliomyelitis and Post-Polio
<desc> Description: Is the disease of Poliomyelitis (polio) under control?
<narr> Narrative: Relevant documents should contain data.
</top>
"""


def test_read_trec_topics_sgml_fields(tmp_path):
    path = write(tmp_path, "topics.301-302.txt", "\n  " + ROBUST)
    assert list(read_trec_topics(path)) == [
        ("301", "International Organized Crime"),
        ("302", "Poliomyelitis and Post-Polio"),
    ]
    descriptions = dict(read_trec_topics(path, field="description"))
    assert descriptions["301"] == (
        "Identify organizations that participate in international criminal activity, the activity, and, "
        "if possible, collaborating organizations."
    )
    assert descriptions["302"] == "Is the disease of Poliomyelitis (polio) under control?"
    assert dict(read_trec_topics(path, field="narrative"))["302"] == "Relevant documents should contain data."


def test_read_trec_topics_closed_tags_crlf_and_old_prefixes(tmp_path):
    content = (
        "<top>\r\n<head> Tipster Topic Description\r\n<num> Number: 051\r\n<dom> Domain: International\r\n"
        "<title> Topic: Airbus Subsidies</title>\r\n<desc>Description: Airbus and the EU.</desc>\r\n"
        "<smry> Summary: skipped\r\n</top>\r\n"
    )
    path = write(tmp_path, "topics.txt", b"\xef\xbb\xbf" + content.encode())
    assert list(read_trec_topics(path)) == [("051", "Airbus Subsidies")]
    assert list(read_trec_topics(path, "description")) == [("051", "Airbus and the EU.")]


@pytest.mark.parametrize(
    "content, line, fragment, exc",
    [
        ("<top>\n<num> Number: 1\n<title> a\n", 1, "never closed", FormatError),
        ("<top>\n<title> a\n</top>\n", 1, "without a <num>", FormatError),
        ("<top>\n<num> Number: 1\n<desc> only desc\n</top>\n", 1, "no text in its <title>", FormatError),
        ("<top>\n<num> 1\n<title> a\n</top>\n<top>\n<num> 1\n<title> b\n</top>\n", 5, "'1'", DuplicateIdError),
        ("<top>\n<num> 1\n<title> a\n</top>\nstray\n", 5, "outside <top>", FormatError),
        ("<top>\n<num> 1\n<title> a\n<top>\n", 4, "missing </top>", FormatError),
        ("<top>\n<num> 1\n<title> a\n</top>\n</top>\n", 5, "without a matching <top>", FormatError),
    ],
)
def test_read_trec_topics_malformed(tmp_path, content, line, fragment, exc):
    path = write(tmp_path, "topics.txt", content)
    with pytest.raises(exc, match=fragment) as info:
        list(read_trec_topics(path))
    assert f"{path}:{line}:" in str(info.value)


def test_read_trec_topics_tsv(tmp_path):
    path = write(tmp_path, "topics.tsv", "1037798\twho is robert gray\n104861\tcost of interior concrete flooring\n")
    assert list(read_trec_topics(path)) == [
        ("1037798", "who is robert gray"),
        ("104861", "cost of interior concrete flooring"),
    ]
    with pytest.raises(InputError, match="no description field"):
        read_trec_topics(path, field="description")


def test_read_trec_topics_bad_arguments(tmp_path):
    path = write(tmp_path, "topics.txt", ROBUST)
    with pytest.raises(InputError, match="unknown topic field 'desc'"):
        read_trec_topics(path, field="desc")
    with pytest.raises(InputError, match="is empty"):
        read_trec_topics(write(tmp_path, "empty.txt", " \n\n"))
    with pytest.raises(InputError, match="no such file"):
        read_trec_topics(tmp_path / "absent.txt")
