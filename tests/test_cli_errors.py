"""Smaller CLI promises: bad --qrels is reported before a run is written, a non-UTF-8 --subset file is a file:line
error, an unwritable --output names the file given, run files get ordinary modes, -q prints no library chatter."""

from __future__ import annotations

import os
import stat

import pytest

from latelex.cli import main


@pytest.fixture()
def bm25_index(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "apple banana"}\n{"_id": "b", "text": "cancer risk"}\n')
    (tmp_path / "q.tsv").write_text("q1\tapple\n")
    assert main(["-q", "index", str(tmp_path / "idx"), "--kind", "bm25", "--collection", str(corpus)]) == 0
    return tmp_path


def test_bad_qrels_are_reported_before_the_run_is_written(bm25_index, capsys):
    (bm25_index / "bad.qrels").write_text("a\tnot a valid\n")
    run = bm25_index / "run.trec"
    assert main(["-q", "search", str(bm25_index / "idx"), "--queries", str(bm25_index / "q.tsv"), "--qrels",
                 str(bm25_index / "bad.qrels"), "--output", str(run)]) == 1
    assert not run.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_subset_and_output_errors_are_one_line_naming_the_file(bm25_index, capsys):
    (bm25_index / "sub.txt").write_bytes(b"\xff\xfe\n")
    assert main(["-q", "search", str(bm25_index / "idx"), "--queries", str(bm25_index / "q.tsv"), "--subset",
                 str(bm25_index / "sub.txt")]) == 1
    err = capsys.readouterr().err.strip()
    assert "sub.txt:1" in err and "UTF-8" in err and len(err.splitlines()) == 1
    target = bm25_index / "no-such-dir-file" / "run.trec"
    (bm25_index / "no-such-dir-file").write_text("a file, not a folder")
    assert main(["-q", "search", str(bm25_index / "idx"), "--queries", str(bm25_index / "q.tsv"), "--output",
                 str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"cannot write {target}" in err and ".tmp" not in err


def test_run_files_get_ordinary_modes_and_quiet_is_quiet(bm25_index, capsys):
    run = bm25_index / "run.trec"
    assert main(["-q", "search", str(bm25_index / "idx"), "--queries", str(bm25_index / "q.tsv"), "--output", str(run)]) == 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(run.stat().st_mode) == 0o666 & ~umask
    capsys.readouterr()
    assert main(["-q", "index", str(bm25_index / "idx2"), "--kind", "bm25", "--collection", str(bm25_index / "c.jsonl")]) == 0
    assert capsys.readouterr().err == ""
