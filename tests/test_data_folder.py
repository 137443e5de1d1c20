"""A plain folder of text files as a collection: which files, in which order, with which ids, texts and metadata."""

from __future__ import annotations

import logging
import os
import re

import pytest

from latelex.data.folder import is_text_folder, read_folder_documents
from latelex.errors import FormatError, InputError
from latelex.types import Document


def _write(root, rel: str, content: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "docs"
    _write(root, "b.txt", "Bee text.\n")
    _write(root, "a.md", "# Title\n\nSome *markdown*.")
    _write(root, "sub/deeper/c.rst", "Deep\n====\n")
    _write(root, "sub/d.MARKDOWN", "upper-case extension")
    _write(root, "sub/notes.pdf", "not a text file")
    _write(root, "image.png", b"\x89PNG")
    _write(root, ".hidden.txt", "hidden file")
    _write(root, ".git/HEAD.txt", "hidden folder")
    _write(root, "with space.txt", "ünïcode ✓")
    return root


def test_reads_text_files_sorted_with_metadata(folder):
    docs = list(read_folder_documents(folder))
    assert [d.id for d in docs] == ["a.md", "b.txt", "sub/d.MARKDOWN", "sub/deeper/c.rst", "with space.txt"]
    by_id = {d.id: d for d in docs}
    assert by_id["a.md"].text == "# Title\n\nSome *markdown*."
    assert by_id["with space.txt"].text == "ünïcode ✓"
    meta = by_id["sub/deeper/c.rst"].metadata
    assert set(meta) == {"path", "size", "modified"}
    assert meta["path"] == "sub/deeper/c.rst"
    assert meta["size"] == len("Deep\n====\n".encode())
    assert by_id["with space.txt"].metadata["size"] == len("ünïcode ✓".encode())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["modified"])
    assert all(isinstance(d, Document) for d in docs)


def test_modified_is_utc(folder):
    os.utime(folder / "b.txt", (0, 86400 + 3661))
    (doc,) = [d for d in read_folder_documents(folder) if d.id == "b.txt"]
    assert doc.metadata["modified"] == "1970-01-02T01:01:01Z"


def test_empty_files_are_skipped_with_one_warning(tmp_path, caplog):
    _write(tmp_path, "full.txt", "text")
    _write(tmp_path, "empty.txt", "")
    _write(tmp_path, "blank.md", " \n\t\n")
    with caplog.at_level(logging.WARNING, logger="latelex.data.folder"):
        docs = list(read_folder_documents(tmp_path))
    assert [d.id for d in docs] == ["full.txt"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "2 empty" in warnings[0]


def test_only_empty_files_is_an_error(tmp_path):
    _write(tmp_path, "empty.txt", "")
    with pytest.raises(InputError, match="empty"):
        list(read_folder_documents(tmp_path))


def test_folder_without_text_files_names_the_extensions(tmp_path):
    _write(tmp_path, "x.pdf", "pdf")
    _write(tmp_path, ".hidden.txt", "hidden")
    with pytest.raises(InputError, match=r"\.txt, \.md, \.markdown or \.rst") as info:
        read_folder_documents(tmp_path)
    assert "\n" not in str(info.value)
    assert not is_text_folder(tmp_path)


def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        read_folder_documents(tmp_path / "nope")
    _write(tmp_path, "a.txt", "x")
    with pytest.raises(InputError, match="expected a folder"):
        read_folder_documents(tmp_path / "a.txt")


def test_non_utf8_file_is_a_format_error_naming_it(tmp_path):
    _write(tmp_path, "good.txt", "fine")
    _write(tmp_path, "latin1.txt", "line one\ncaf\xe9".encode("latin-1"))
    with pytest.raises(FormatError, match=r"latin1\.txt:2: not valid UTF-8 \(byte 0xe9") as info:
        list(read_folder_documents(tmp_path))
    assert "\n" not in str(info.value)


def test_bom_is_dropped(tmp_path):
    _write(tmp_path, "bom.txt", b"\xef\xbb\xbfhello")
    assert [d.text for d in read_folder_documents(tmp_path)] == ["hello"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_symlinks_do_not_lead_outside(tmp_path):
    outside = tmp_path / "outside"
    _write(outside, "secret.txt", "outside the folder")
    root = tmp_path / "root"
    _write(root, "real/inner.txt", "inside")
    try:
        (root / "link-out.txt").symlink_to(outside / "secret.txt")
        (root / "link-in.txt").symlink_to(root / "real" / "inner.txt")
        (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    except OSError:
        pytest.skip("cannot create symbolic links here")
    docs = {d.id: d.text for d in read_folder_documents(root)}
    assert docs == {"link-in.txt": "inside", "real/inner.txt": "inside"}
