"""Every Python block of the README runs as written, on a small SciFact (so that the examples cannot break again),
and the README's table of index kinds is the registry's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_table_of_kinds_is_the_registry():
    from latelex.index.registry import markdown_table

    assert markdown_table() in README


def small_scifact(target: Path, documents: int = 300) -> Path:
    """A BEIR folder with the first ``documents`` SciFact abstracts and the test queries judged within them."""
    source = shared_path("datasets", "scifact")
    target.mkdir(parents=True)
    lines = (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:documents]
    (target / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ids = {json.loads(line)["_id"] for line in lines}
    (target / "qrels").mkdir()
    qrels = (source / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept = [qrels[0]] + [row for row in qrels[1:] if row.split("\t")[1] in ids]
    (target / "qrels" / "test.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    qids = {row.split("\t")[0] for row in kept[1:]}
    queries = [q for q in (source / "queries.jsonl").read_text(encoding="utf-8").splitlines() if json.loads(q)["_id"] in qids]
    (target / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    return target


@pytest.mark.data
@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_block_runs(number, tmp_path):
    code = BLOCKS[number]
    code = code.replace('"../shared/datasets/scifact"', repr(str(small_scifact(tmp_path / "scifact"))))
    code = code.replace('"../shared/models/', '"' + str(shared_path("models")) + "/")
    assert "../shared" not in code, "a README block names a ../shared path this test does not shrink"
    if SERVER_URL in code:  # a client block: build the index it names with the README's own block, then serve it
        served = _serve_the_notes_index(tmp_path)
        try:
            code = code.replace(SERVER_URL, f"http://127.0.0.1:{served.port}")
            done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=900)
        finally:
            served.kill()
            served.wait()
    else:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


SERVER_URL = "http://127.0.0.1:8000"


def _serve_the_notes_index(tmp_path: Path):
    from server_helpers import free_port, start_cli_server

    builder = next(b for b in BLOCKS if 'Retriever.build("runs/notes"' in b)
    built = subprocess.run([sys.executable, "-c", builder], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    port = free_port()
    child = start_cli_server([f"notes={tmp_path / 'runs' / 'notes'}", "-q"], port)
    child.port = port
    return child
