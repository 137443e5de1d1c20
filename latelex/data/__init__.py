"""Reading and writing the text formats IR researchers already have.

ColBERT / MS MARCO TSVs and JSONL triples (:mod:`.colbert`), BEIR folders (:mod:`.beir`), TREC runs, qrels and
topics (:mod:`.trec`), and format detection for the command line (:mod:`.auto`). Readers stream their files and
report every malformed line as one :class:`~latelex.errors.FormatError` naming the file and the line.
"""

from __future__ import annotations

from latelex.data.auto import (
    Candidates,
    read_candidates,
    read_documents,
    read_qrels_any,
    read_queries_any,
    read_run_any,
)
from latelex.data.beir import (
    BeirDataset,
    is_beir_folder,
    read_beir_corpus,
    read_beir_qrels,
    read_beir_qrels_file,
    read_beir_queries,
)
from latelex.data.colbert import (
    IdExample,
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
from latelex.data.lines import iter_lines
from latelex.data.trec import read_trec_qrels, read_trec_run, read_trec_topics, write_trec_run

__all__ = [
    "BeirDataset",
    "Candidates",
    "IdExample",
    "is_beir_folder",
    "iter_lines",
    "read_beir_corpus",
    "read_beir_qrels",
    "read_beir_qrels_file",
    "read_beir_queries",
    "read_candidates",
    "read_collection",
    "read_documents",
    "read_id_triples",
    "read_qrels",
    "read_qrels_any",
    "read_queries",
    "read_queries_any",
    "read_ranking",
    "read_run_any",
    "read_text_triples",
    "read_top1000",
    "read_topk",
    "read_trec_qrels",
    "read_trec_run",
    "read_trec_topics",
    "write_ranking",
    "write_trec_run",
]
