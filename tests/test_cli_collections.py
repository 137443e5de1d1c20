"""Collections through the command line: metadata and --where, add / upsert / delete / compact, folders of text
files, BM25 as an ordinary kind, chunking, and flags derived from the registry of index kinds. Tiny random models,
fewer than 50 documents."""

from __future__ import annotations

import json
import random
import re

import pytest

from latelex.cli import main
from latelex.data import read_trec_run
from latelex.search.retriever import Retriever
from tiny_models import WORDS

HIT = re.compile(r"^\s+(\d+)\s+(-?[\d.]+)\s+(\S+)(.*)$")


def _hits(out: str) -> list[tuple[str, str]]:
    """(doc id, rest of the line) of every hit line ``latelex search --query`` printed."""
    return [(m.group(3), m.group(4)) for line in out.splitlines() if (m := HIT.match(line))]


def _error(capsys) -> str:
    """The one line a failed command wrote to stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 or lines[-2].startswith("usage:") or lines[0].startswith("usage:"), lines
    return lines[-1]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """30 documents as JSONL with extra keys (metadata), a --metadata file for five of them, queries and qrels."""
    root = tmp_path_factory.mktemp("collection")
    rng = random.Random(11)
    docs = {}
    with open(root / "docs.jsonl", "w") as f:
        for i in range(30):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))
            meta = {"year": 2010 + i % 10, "source": "pubmed" if i % 2 else "arxiv", "lang": "en", "n": i}
            docs[f"d{i}"] = (text, meta)
            f.write(json.dumps({"id": f"d{i}", "text": text, **meta}) + "\n")
    topics = {f"d{i}": {"topic": "fruit"} for i in (1, 4, 9, 16, 25)}
    (root / "meta.jsonl").write_text("".join(json.dumps({"id": d, **m}) + "\n" for d, m in topics.items()))
    queries = {f"q{i}": " ".join(rng.choice(WORDS) for _ in range(3)) for i in range(6)}
    (root / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    (root / "qrels.tsv").write_text("".join(f"{q}\t0\td{rng.randrange(30)}\t1\n" for q in queries))
    return root, docs, topics, queries


def _matching(docs, test) -> set[str]:
    return {d for d, (_, meta) in docs.items() if test(meta)}


def test_metadata_and_where(collection, tiny_bert, tmp_path, capsys):
    root, docs, topics, queries = collection
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(tiny_bert), "--collection", str(root / "docs.jsonl"),
                 "--metadata", str(root / "meta.jsonl")]) == 0
    captured = capsys.readouterr()
    assert "indexed 30 documents" in captured.out and "Encoding" not in captured.err  # -q: no progress bar
    assert Retriever.open(idx).get("d4").metadata == {**docs["d4"][1], "topic": "fruit"}

    where = 'source = "pubmed" and year >= 2015'
    assert main(["search", str(idx), "--query", "cancer risk", "-k", "30", "--where", where]) == 0
    hits = _hits(capsys.readouterr().out)
    assert {d for d, _ in hits} == _matching(docs, lambda m: m["source"] == "pubmed" and m["year"] >= 2015)
    first_id, first_rest = hits[0]
    meta = docs[first_id][1]
    assert f"year={meta['year']} source=pubmed lang=en +1 more" in first_rest  # the first 3 fields, compactly

    assert main(["search", str(idx), "--query", "fruit", "-k", "30", "--where", 'topic = "fruit"']) == 0
    out = capsys.readouterr().out
    assert {d for d, _ in _hits(out)} == set(topics)
    assert docs["d4"][0][:40] in out  # the text snippet under the hit

    run_file = tmp_path / "run.trec"
    assert main(["-q", "search", str(idx), "--queries", str(root / "queries.tsv"), "-k", "30", "--where",
                 "year < 2013", "--output", str(run_file)]) == 0
    run = read_trec_run(run_file)
    assert set(run) == set(queries)
    assert all({h.doc_id for h in hits} == _matching(docs, lambda m: m["year"] < 2013) for hits in run.values())

    capsys.readouterr()
    assert main(["search", str(idx), "--query", "x", "--where", "year >>= 3"]) == 1
    assert "year" in _error(capsys)


def test_progress_bars_unless_quiet(collection, tiny_bert, tmp_path, capsys):
    root, *_ = collection
    assert main(["index", str(tmp_path / "idx"), "--model", str(tiny_bert), "--collection",
                 str(root / "docs.jsonl")]) == 0
    assert "Encoding documents" in capsys.readouterr().err


def test_add_upsert_delete_compact(collection, tiny_bert, tmp_path, capsys):
    root, docs, *_ = collection
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(tiny_bert), "--collection", str(root / "docs.jsonl")]) == 0
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"id": "n1", "text": "banana apple fruit healthy", "source": "added"}) + "\n"
                   + json.dumps({"id": "n2", "text": "green red blue", "source": "added"}) + "\n")
    capsys.readouterr()
    assert main(["-q", "add", str(idx), "--collection", str(new)]) == 0
    assert capsys.readouterr().out.strip() == f"added 2 documents to {idx} (32 in all)"
    assert main(["search", str(idx), "--query", "banana apple fruit", "-k", "5", "--where", 'source = "added"']) == 0
    assert {d for d, _ in _hits(capsys.readouterr().out)} == {"n1", "n2"}
    assert main(["search", str(idx), "--query", "banana apple fruit healthy", "-k", "40"]) == 0
    assert "n1" in {d for d, _ in _hits(capsys.readouterr().out)}

    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"id": "d3", "text": "small large new old", "source": "replaced"}) + "\n")
    assert main(["-q", "add", str(idx), "--collection", str(clash)]) == 1
    line = _error(capsys)
    assert "'d3'" in line and "upsert" in line
    assert Retriever.open(idx).get("d3").text == docs["d3"][0]
    assert main(["-q", "add", str(idx), "--collection", str(clash), "--upsert"]) == 0
    assert capsys.readouterr().out.strip() == f"added 1 document to {idx}, replacing 1 (32 in all)"
    got = Retriever.open(idx).get("d3")
    assert got.text == "small large new old" and got.metadata == {"source": "replaced"}

    ids = tmp_path / "ids.txt"
    ids.write_text("d5\n\nd6\n")
    assert main(["delete", str(idx), "d7", "n2", "nope", "--ids", str(ids)]) == 0
    assert capsys.readouterr().out.strip() == f"deleted 4 documents from {idx} (28 left); 1 id not found: 'nope'"
    assert main(["delete", str(idx), "d8", "nope", "gone", "--strict"]) == 1
    line = _error(capsys)
    assert "2 ids not in" in line and "'nope'" in line and "nothing was deleted" in line
    after = Retriever.open(idx)
    assert len(after) == 28 and "d8" in after and "d5" not in after
    with pytest.raises(SystemExit):
        main(["delete", str(idx)])
    assert "needs document ids" in _error(capsys)

    assert after.info()["segments"] == 3  # the build, the add, the upsert
    assert main(["-q", "compact", str(idx)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"compacted {idx}: 28 documents in 1 segment (was 3") and "deleted entries dropped" in out
    compacted = Retriever.open(idx)
    assert compacted.info()["segments"] == 1 and compacted.info()["tombstones"] == 0 and len(compacted) == 28
    assert main(["search", str(idx), "--query", "banana apple fruit healthy", "-k", "40"]) == 0
    found = {d for d, _ in _hits(capsys.readouterr().out)}
    assert "n1" in found and not found & {"d5", "d6", "d7", "n2"}


def test_text_folder_with_bm25(tmp_path, capsys):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("the apple and the banana are fruit\n")
    (folder / "sub" / "b.md").write_text("# Vaccines\nA vaccine trial reduced the risk of disease.\n")
    (folder / "c.txt").write_text("protein gene expression in cancer cells\n")
    (folder / "skip.bin").write_text("not a text file")
    idx = tmp_path / "bm25"
    assert main(["-q", "index", str(idx), "--kind", "bm25", "--collection", str(folder)]) == 0
    assert "indexed 3 documents" in capsys.readouterr().out
    assert main(["search", str(idx), "--query", "vaccine risk", "-k", "3"]) == 0
    out = capsys.readouterr().out
    hits = _hits(out)
    assert hits[0][0] == "sub/b.md" and "path=sub/b.md" in hits[0][1]
    assert "A vaccine trial reduced the risk of disease." in out
    assert main(["search", str(idx), "--query", "apple cancer vaccine", "-k", "3", "--where", 'path != "c.txt"']) == 0
    assert {d for d, _ in _hits(capsys.readouterr().out)} == {"a.txt", "sub/b.md"}
    assert Retriever.open(idx).encoder is None

    assert main(["-q", "index", str(tmp_path / "x"), "--kind", "bm25", "--collection", str(folder),
                 "--chunk-tokens", "8"]) == 1
    assert "bm25" in _error(capsys) and not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["-q", "index", str(tmp_path / "x"), "--kind", "bm25", "--model", "m", "--collection", str(folder)])
    assert "--model does not apply to --kind bm25" in _error(capsys)


def test_mine_with_a_bm25_index_and_an_older_plain_bm25_index(collection, tmp_path, capsys):
    from latelex.index.bm25 import BM25Index

    root, docs, _, queries = collection
    idx = tmp_path / "bm25"
    assert main(["-q", "index", str(idx), "--kind", "bm25", "--collection", str(root / "docs.jsonl")]) == 0
    old = tmp_path / "old-bm25"
    BM25Index.build(old, list(docs), [t for t, _ in docs.values()])
    outputs = []
    for index in (idx, old):
        mined = tmp_path / f"{index.name}.jsonl"
        assert main(["-q", "mine", "--queries", str(root / "queries.tsv"), "--qrels", str(root / "qrels.tsv"),
                     "--index", str(index), "--output", str(mined), "--nway", "3", "--ranks", "1", "30"]) == 0
        rows = [json.loads(line) for line in mined.read_text().splitlines()]
        assert rows and all(len(r) == 4 and r[0] in queries and all(p in docs for p in r[1:]) for r in rows)
        outputs.append(rows)
    assert outputs[0] == outputs[1]  # the same BM25, the same seed: the same tuples

    capsys.readouterr()
    runs = []
    for index in (idx, old):
        out = tmp_path / f"{index.name}.trec"
        assert main(["-q", "search", str(index), "--queries", str(root / "queries.tsv"), "-k", "10",
                     "--output", str(out)]) == 0
        runs.append({q: [h.doc_id for h in hits] for q, hits in read_trec_run(out).items()})
    assert runs[0] == runs[1]
    assert main(["search", str(old), "--query", "cancer risk", "-k", "3"]) == 0
    assert len(_hits(capsys.readouterr().out)) == 3
    with pytest.raises(SystemExit):
        main(["search", str(old), "--query", "cancer", "--where", "year > 2012"])
    assert "older latelex" in _error(capsys)
    assert main(["add", str(old), "--collection", str(root / "docs.jsonl")]) == 1
    assert "rebuild it" in _error(capsys)


def test_chunking(collection, tiny_bert, tmp_path, capsys):
    root, docs, *_ = collection
    idx = tmp_path / "chunked"
    assert main(["-q", "index", str(idx), "--model", str(tiny_bert), "--collection", str(root / "docs.jsonl"),
                 "--chunk-tokens", "8", "--chunk-overlap", "2"]) == 0
    assert "passages" in capsys.readouterr().out
    assert Retriever.open(idx).chunking.tokens == 8
    assert main(["search", str(idx), "--query", "cancer risk", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    spans = [(m.group(3), m.group(4), lines[i + 1].strip()) for i, line in enumerate(lines) if (m := HIT.match(line))]
    assert len(spans) == 3
    for doc_id, rest, snippet in spans:
        start, end = map(int, re.search(r"\[passage \d+, chars (\d+)-(\d+)\]", rest).groups())
        assert snippet == " ".join(docs[doc_id][0][start:end].split())

    for overlap in ("8", "9"):
        assert main(["-q", "index", str(tmp_path / "x"), "--model", str(tiny_bert), "--collection",
                     str(root / "docs.jsonl"), "--chunk-tokens", "8", "--chunk-overlap", overlap]) == 1
        assert "must be smaller than the chunk size" in _error(capsys)
    with pytest.raises(SystemExit):
        main(["-q", "index", str(tmp_path / "x"), "--model", str(tiny_bert), "--collection",
              str(root / "docs.jsonl"), "--chunk-overlap", "2"])
    assert "--chunk-overlap needs --chunk-tokens" in _error(capsys)
    assert not (tmp_path / "x").exists()


def test_engine_flags_follow_the_registry(collection, tiny_bert, tmp_path, capsys):
    from latelex.index import registry

    root, *_ = collection
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    help_text = capsys.readouterr().out
    for name, spec in registry.KINDS.items():
        assert name in help_text
    for option, _ in registry.all_build_options().values():
        assert option.cli_flag in help_text
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = capsys.readouterr().out
    assert all(o.cli_flag in help_text for o, _ in registry.all_search_options().values())

    for argv, message in [
        (["--nbits", "2"], "--nbits applies to --kind plaid, not flat"),
        (["--kind", "flat", "--centroids", "4"], "--centroids applies to --kind plaid, not flat"),
        (["--kind", "plaid", "--sample", "0.5"], "--sample applies to --kind ivfpq, not plaid"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["-q", "index", str(tmp_path / "x"), "--model", str(tiny_bert), "--collection",
                  str(root / "docs.jsonl"), *argv])
        assert exc.value.code == 2 and _error(capsys).endswith(message)
    assert not (tmp_path / "x").exists()

    idx = tmp_path / "flat"
    assert main(["-q", "index", str(idx), "--model", str(tiny_bert), "--collection", str(root / "docs.jsonl")]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["search", str(idx), "--query", "cancer", "--nprobe", "4"])
    assert exc.value.code == 2 and _error(capsys).endswith(f"--nprobe applies to ivfpq indexes; {idx} is a flat index")


def test_info_advises_compaction_once_a_plaid_collection_outgrows_its_codec(collection, tiny_bert, tmp_path, capsys):
    root, *_ = collection
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(idx), "--model", str(tiny_bert), "--kind", "plaid",
                 "--collection", str(root / "docs.jsonl")]) == 0
    rng = random.Random(5)
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"id": f"m{i}", "text": " ".join(rng.choice(WORDS) for _ in range(25))}) + "\n"
                            for i in range(200)))
    assert main(["-q", "add", str(idx), "--collection", str(more)]) == 0
    capsys.readouterr()
    assert main(["info", str(idx)]) == 0
    advice = [line for line in capsys.readouterr().out.splitlines() if line.startswith("advice:")]
    assert len(advice) == 1 and f"latelex compact {idx}" in advice[0]
    assert main(["-q", "compact", str(idx)]) == 0
    capsys.readouterr()
    assert main(["info", str(idx)]) == 0
    assert "advice:" not in capsys.readouterr().out
