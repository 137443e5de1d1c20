"""Documents with metadata from BEIR folders, JSONL, ColBERT TSVs and text folders; the --metadata file."""

from __future__ import annotations

import json

import pytest

from latelex.data.auto import read_collection_documents, read_documents, read_metadata_file
from latelex.data.beir import read_beir_corpus, read_beir_documents
from latelex.errors import DuplicateIdError, FormatError, InputError
from latelex.types import Document


def _jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    _jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "1", "title": "Cells", "text": "The cell is small.", "metadata": {"year": 2020, "url": "u1"}},
            {"_id": 2, "title": "", "text": "No title here.", "metadata": {}},
            {"_id": "3", "text": "Clash.", "source": "top", "metadata": {"source": "nested", "tags": ["a", "b"]}},
            {"_id": "4", "title": " ", "text": "Nothing else."},
            {"_id": "5", "text": "Odd metadata.", "metadata": "a string"},
        ],
    )
    return folder


def test_beir_metadata_is_merged_and_title_kept(beir):
    docs = list(read_beir_documents(beir))
    assert docs == [
        Document("1", "Cells The cell is small.", {"title": "Cells", "year": 2020, "url": "u1"}),
        Document("2", "No title here.", None),
        Document("3", "Clash.", {"source": "top", "tags": ["a", "b"]}),
        Document("4", "Nothing else.", None),
        Document("5", "Odd metadata.", {"metadata": "a string"}),
    ]
    # Same ids and texts as the (id, text) readers, which stay as they were.
    pairs = [(d.id, d.text) for d in docs]
    assert list(read_beir_corpus(beir)) == pairs
    assert list(read_documents(beir)) == pairs
    assert list(read_collection_documents(beir)) == docs


def test_jsonl_metadata(tmp_path):
    path = tmp_path / "docs.jsonl"
    _jsonl(
        path,
        [
            {"id": "a", "contents": "alpha text", "title": "Alpha", "lang": "en", "score": 1.5, "ok": True},
            {"docid": 7, "text": "beta", "extra": None, "nested": {"k": [1, 2]}},
            {"pid": "c", "text": "gamma"},
        ],
    )
    docs = list(read_collection_documents(path))
    assert docs == [
        Document("a", "Alpha alpha text", {"title": "Alpha", "lang": "en", "score": 1.5, "ok": True}),
        Document("7", "beta", {"extra": None, "nested": {"k": [1, 2]}}),
        Document("c", "gamma", None),
    ]
    assert list(read_documents(path)) == [(d.id, d.text) for d in docs]


def test_tsv_title_column(tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_text("id\ttext\ttitle\n0\tfirst text\tFirst\n1\tsecond text\n2\tthird text\t \n3\tfourth\tLast\n",
                    encoding="utf-8")
    docs = list(read_collection_documents(path))
    assert docs == [
        Document("0", "First | first text", {"title": "First"}),
        Document("1", "second text", None),
        Document("2", "third text", None),
        Document("3", "Last | fourth", {"title": "Last"}),
    ]
    assert list(read_documents(path)) == [(d.id, d.text) for d in docs]


def test_tsv_errors_are_the_collection_reader_errors(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("0\tok\n0\tagain\n", encoding="utf-8")
    with pytest.raises(DuplicateIdError, match=r"bad\.tsv:2"):
        list(read_collection_documents(path))
    path.write_text("0\tok\n1\ta\tb\tc\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.tsv:2"):
        list(read_collection_documents(path))
    path.write_text("id\ttext\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        list(read_collection_documents(path))


def test_text_folder(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "one.md").write_text("# One", encoding="utf-8")
    (tmp_path / "notes" / "two.txt").write_text("two", encoding="utf-8")
    docs = list(read_collection_documents(tmp_path / "notes"))
    assert [(d.id, d.text, d.metadata["path"]) for d in docs] == [("one.md", "# One", "one.md"), ("two.txt", "two", "two.txt")]
    # read_documents keeps its formats: a folder without corpus.jsonl is still refused there.
    with pytest.raises(FormatError, match="corpus.jsonl"):
        read_documents(tmp_path / "notes")


def test_folder_with_nothing_readable(tmp_path):
    (tmp_path / "x.pdf").write_text("pdf", encoding="utf-8")
    with pytest.raises(FormatError, match=r"corpus\.jsonl or text files; accepted: .*\.txt/\.md/\.markdown/\.rst"):
        read_collection_documents(tmp_path)


def test_metadata_file(tmp_path):
    path = tmp_path / "meta.jsonl"
    _jsonl(
        path,
        [
            {"_id": "a", "year": 2020, "tags": ["x"]},
            {"doc_id": 5, "metadata": {"year": 1999}, "lang": "de"},
            {"pid": "c"},
        ],
    )
    assert read_metadata_file(path) == {"a": {"year": 2020, "tags": ["x"]}, "5": {"lang": "de", "year": 1999}, "c": {}}


@pytest.mark.parametrize(
    "lines,error,message",
    [
        (['{"_id": "a"}', "[1, 2]"], FormatError, r"meta\.jsonl:2: metadata must be a JSON object$"),
        (['"text"'], FormatError, r"meta\.jsonl:1: metadata must be a JSON object$"),
        (["{not json"], FormatError, r"meta\.jsonl:1: invalid JSON"),
        (['{"year": 1}'], FormatError, r"meta\.jsonl:1: metadata object has no _id / id / doc_id / docid / pid"),
        (['{"id": true}'], FormatError, r"meta\.jsonl:1: document id must be"),
        (['{"id": "a"}', '{"_id": "a"}'], DuplicateIdError, r"meta\.jsonl:2: duplicate document id 'a'"),
        (['{"id": "a"}', "", '{"id": "b"}'], FormatError, r"meta\.jsonl:2: blank line"),
        ([], InputError, r"meta\.jsonl is empty"),
    ],
)
def test_metadata_file_errors(tmp_path, lines, error, message):
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(error, match=message) as info:
        read_metadata_file(path)
    assert "\n" not in str(info.value)


def test_metadata_file_missing(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_metadata_file(tmp_path / "nope.jsonl")
