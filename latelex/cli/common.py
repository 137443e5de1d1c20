"""What the verbs share: the encoder options, the evaluation options, run writing, opening an index, usage errors.

Only the standard library is imported here at module level, so that ``latelex --help`` stays fast; everything
else is imported inside the function that needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: The built-in ColBERT model (latelex.models.DEFAULT_COLBERT_MODEL), spelled here so that --help needs no import.
DEFAULT_MODEL = "latelex-colbert-minilm"

EXAMPLES = """examples (offline, with the data in ../shared; the default model ships with latelex):
  latelex index runs/scifact --collection ../shared/datasets/scifact
  latelex index runs/scifact-plain --model ../shared/models/all-MiniLM-L6-v2 \\
      --collection ../shared/datasets/scifact --query-maxlen 64 --doc-maxlen 256
  latelex search runs/scifact --queries ../shared/datasets/scifact --split test \\
      --qrels ../shared/datasets/scifact --output runs/scifact.trec
  latelex search runs/scifact --query "does vitamin D lower cancer risk?" -k 5
  latelex index runs/notes --kind bm25 --collection notes/          (a folder of .txt/.md files; no model)
  latelex search runs/notes --query "release plan" --where 'path = "plans/2024.md"' -k 5
  latelex evaluate --run runs/scifact.trec --qrels ../shared/datasets/scifact --split test
"""


class UsageError(Exception):
    """A mistake in the command line that the parser could not see; ``main`` reports it as argparse does."""


def usage(message: str) -> UsageError:
    return UsageError(message)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command line: one line, no source location."""
    print(f"latelex: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------- parser pieces


def add_verb(subparsers, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    """A verb's parser, with the common epilog and a ``-q`` that may also follow the verb."""
    p = subparsers.add_parser(name, help=help_, description=description, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    return p


def add_evaluation_options(p: argparse.ArgumentParser) -> None:
    from ..evaluate.metrics import DEFAULT_METRICS

    p.add_argument("--qrels", help="relevance judgements to evaluate against: qrels file or BEIR folder (with --split)")
    p.add_argument("--split", default=None, help="BEIR split for --queries/--qrels folders (e.g. test, dev, train)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                   help=f"ir-measures names; MRR@10 and Recall@k accepted (default: {' '.join(DEFAULT_METRICS)})")


def add_encoder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder (settings default to the checkpoint's own)")
    g.add_argument("--family", choices=["colbert", "splade"], help="model family (detected from the folder when omitted)")
    g.add_argument("--query-maxlen", type=int, help="query length in tokens (ColBERT default 32, SPLADE 64)")
    g.add_argument("--doc-maxlen", type=int, help="document length in tokens (ColBERT default 180, SPLADE 256)")
    g.add_argument("--no-markers", action="store_true", help="ColBERT: insert no [Q]/[D] marker tokens")
    g.add_argument("--no-query-augmentation", action="store_true", help="ColBERT: do not pad queries with [MASK]")
    g.add_argument("--attend-to-mask-tokens", action="store_true", default=None, help="ColBERT: let query tokens attend to [MASK] padding")
    g.add_argument("--keep-punctuation", action="store_true", help="ColBERT: keep punctuation tokens in documents")
    g.add_argument("--similarity", choices=["cosine", "l2"], help="ColBERT similarity (v1 models were trained with both)")
    g.add_argument("--pooling", choices=["max", "sum"], help="SPLADE pooling: max (v2, ++) or sum (v1)")
    g.add_argument("--query-model", help="SPLADE: a separate query encoder (efficient SPLADE)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    g.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    add_backend_options(g)


def add_backend_options(p, *, recorded: bool = False) -> None:
    """``--backend`` and ``--quantize``; ``recorded``: their default is what the index records (search)."""
    default = "the backend the index was built with" if recorded else "torch"
    p.add_argument("--backend", choices=["torch", "onnx", "openvino"],
                   help=f"what runs the model: torch, an ONNX graph with onnxruntime (exported, checked against "
                        f"torch and cached on first use; needs latelex[onnx]), or the same graph with OpenVINO on "
                        f"the CPU, in bfloat16 where the CPU has it (needs latelex[openvino]) (default: {default})")
    p.add_argument("--quantize", choices=["int8"],
                   help="int8 (faster on CPU, within a looser tolerance of torch): with --backend onnx, int8 "
                        "weights; with --backend openvino, int8 weights and activations, calibrated once on fixed "
                        "texts (the fastest document encoding on CPUs with VNNI); alone, it implies --backend onnx")


# ---------------------------------------------------------------------- helpers for the handlers


def encoder_overrides(args: argparse.Namespace, family: str) -> dict[str, Any]:
    """The encoder settings that ``add_encoder_options`` flags change, as keyword arguments for the loaders."""
    out: dict[str, Any] = {}
    if args.query_maxlen is not None:
        out["query_maxlen"] = args.query_maxlen
    if args.doc_maxlen is not None:
        out["doc_maxlen"] = args.doc_maxlen
    if family == "colbert":
        if args.no_markers:
            out["query_marker"] = out["doc_marker"] = None
        if args.no_query_augmentation:
            out["query_augmentation"] = False
        if args.attend_to_mask_tokens:
            out["attend_to_mask_tokens"] = True
        if args.keep_punctuation:
            out["skiplist"] = ()
        if args.similarity:
            out["similarity"] = args.similarity
    else:
        if args.pooling:
            out["pooling"] = args.pooling
        if args.query_model:
            out["query_model"] = args.query_model
    return out


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """``backend`` and ``quantize`` keyword arguments from ``--backend`` / ``--quantize`` (empty when neither was
    given); ``--quantize`` alone means the onnx backend."""
    backend, quantize = getattr(args, "backend", None), getattr(args, "quantize", None)
    if backend is None and quantize is None:
        return {}
    if quantize is not None and backend == "torch":
        raise usage(f"--quantize {quantize} needs --backend onnx or --backend openvino")
    return {"backend": backend or "onnx", "quantize": quantize}


def load_encoder(args: argparse.Namespace):
    from ..encoders import detect_family, load_encoder as load

    family = args.family or detect_family(args.model)
    return load(args.model, family, device=args.device, **encoder_overrides(args, family), **backend_options(args))


def write_run(path: str, run, fmt: str) -> None:
    from ..data import write_ranking, write_trec_run
    from ..errors import InputError

    try:
        if fmt == "trec":
            write_trec_run(path, run, tag="latelex")
        else:
            write_ranking(path, run)
    except OSError as exc:  # name the file the user gave, not the temporary file beside it
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def load_qrels(args: argparse.Namespace):
    """The judgements ``--qrels`` names (None without it), read before any searching so that a bad file is
    reported before a run is written."""
    if not getattr(args, "qrels", None):
        return None
    from ..data import read_qrels_any

    return read_qrels_any(args.qrels, args.split)


def maybe_evaluate(args: argparse.Namespace, run, qrels=None) -> None:
    """Print the metrics of ``run`` when ``--qrels`` was given (and write them to ``--metrics-json``); ``qrels``:
    the judgements already read by :func:`load_qrels`."""
    if not args.qrels:
        return
    from ..evaluate import evaluate, format_table

    results = evaluate(run, qrels if qrels is not None else load_qrels(args), args.metrics)
    print(format_table(results))
    if getattr(args, "metrics_json", None):
        from ..fsio import atomic_write

        with atomic_write(args.metrics_json) as f:
            json.dump(results, f, indent=2)


def is_legacy_bm25_index(path: str) -> bool:
    """Whether ``path`` holds a plain BM25 index from before BM25 was a Retriever kind (manifest kind ``bm25`` at
    the top; a retriever's manifest says ``retriever``), read without opening anything else."""
    from ..index.bm25 import KIND
    from ..index.storage import MANIFEST

    manifest = Path(path).expanduser() / MANIFEST
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False  # the Retriever's own checks say what is wrong with the folder


class LegacyBM25:
    """A plain BM25 index of an older latelex, answering the part of the Retriever's search API it can (no
    metadata, no texts, no engine options), so that ``search`` and ``mine`` read the indexes users already have."""

    kind = "bm25"
    has_texts = False

    def __init__(self, index) -> None:
        self.index = index

    def _refuse_where(self, where: Any) -> None:
        if where is not None:
            raise UsageError(f"{self.index.path} is a BM25 index from an older latelex, without metadata; rebuild it "
                             f"with `latelex index DIR --kind bm25 --collection C` to filter with --where")

    def search(self, queries: list[str], k: int, *, where: Any = None, subset=None, **_: Any):
        self._refuse_where(where)
        return self.index.search_text(queries, k=k, subset=subset)

    def search_queries(self, queries, k: int = 10, *, where: Any = None, subset=None, **_: Any):
        self._refuse_where(where)
        return self.index.search_queries(queries, k=k, subset=subset)


def open_searcher(path: str, device: Any, allow_network: bool = False, backend: dict[str, Any] | None = None):
    """What ``search`` and ``mine`` search: the Retriever (or ShardedRetriever) at ``path`` (any kind, BM25
    included), or an older plain BM25 index wrapped in :class:`LegacyBM25`. ``backend``: :func:`backend_options`
    to run the index's encoder on instead of the backend the index records."""
    if is_legacy_bm25_index(path):
        from ..index.bm25 import BM25Index

        if backend:
            raise usage(f"{path} is a BM25 index, which runs no model; drop --backend and --quantize")
        return LegacyBM25(BM25Index.open(path))
    from ..search.sharded import open_any

    encoder = None
    if backend:
        encoder = _encoder_on_backend(path, device, allow_network, backend)
    return open_any(path, encoder=encoder, device=device, allow_network=allow_network)


def _encoder_on_backend(path: str, device: Any, allow_network: bool, backend: dict[str, Any]):
    """The encoder the index at ``path`` records, rebuilt on another backend (vectors of one model agree across
    backends, so an index built with torch is searched with onnx and back)."""
    from ..config import RUNTIME_SPEC_KEYS, BackendConfig
    from ..encoders import encoder_from_spec
    from ..index.storage import MANIFEST
    from ..search.shard_manifest import SHARDS_FILE, is_sharded

    try:  # a sharded index records its encoder in shards.json
        name = SHARDS_FILE if is_sharded(path) else MANIFEST
        manifest = json.loads((Path(path).expanduser() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the Retriever's own checks say what is wrong with the folder
    spec = manifest.get("encoder") if isinstance(manifest, dict) else None
    if not isinstance(spec, dict):
        raise usage(f"{path} was built without a model (BM25); drop --backend and --quantize")
    runtime = BackendConfig(backend["backend"], backend["quantize"])
    spec = {**{k: v for k, v in spec.items() if k not in RUNTIME_SPEC_KEYS}, **runtime.spec_fields()}
    return encoder_from_spec(spec, device=device, allow_network=allow_network)


def open_retriever(path: str, device: Any = None, load_encoder: bool = True):
    """The Retriever (or ShardedRetriever) at ``path``, for the verbs that change an index (``add``, ``delete``,
    ``compact``)."""
    from ..errors import InputError
    from ..search.sharded import open_any

    if is_legacy_bm25_index(path):
        raise InputError(f"{path} is a BM25 index from an older latelex, which cannot be changed in place; rebuild it "
                         f"with `latelex index {path} --kind bm25 --collection C --overwrite`")
    return open_any(path, device=device, load_encoder=load_encoder)


# ---------------------------------------------------------------------- collections


def add_collection_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--collection", required=required,
                   help="documents: a BEIR folder, a .jsonl file (keys other than id/text/title become metadata), a "
                        "collection.tsv (pid<TAB>text[<TAB>title]), or a folder of .txt/.md files")
    p.add_argument("--metadata", metavar="FILE",
                   help="JSONL of objects with an id key and metadata fields, merged over the collection's own")


def read_collection(args: argparse.Namespace) -> tuple[Any, dict | None]:
    """The documents of ``--collection`` (with their metadata) and the ``--metadata`` file's fields per id."""
    from ..data.auto import read_collection_documents, read_metadata_file

    metadata = read_metadata_file(args.metadata) if args.metadata else None
    return read_collection_documents(args.collection), metadata


def add_chunking_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chunking (index all of long documents; search returns the best passage)")
    g.add_argument("--chunk-tokens", type=int, metavar="N",
                   help="split documents into passages of N tokens of the encoder's tokenizer")
    g.add_argument("--chunk-overlap", type=int, metavar="M", help="tokens shared by consecutive passages (default 0)")


def chunking(args: argparse.Namespace):
    """The ChunkingConfig that ``--chunk-tokens`` / ``--chunk-overlap`` describe, or None (checked before any work)."""
    if args.chunk_tokens is None:
        if args.chunk_overlap is not None:
            raise usage("--chunk-overlap needs --chunk-tokens")
        return None
    from ..search.chunking import ChunkingConfig

    return ChunkingConfig(args.chunk_tokens, args.chunk_overlap or 0)


def metavar(option) -> str:
    """The metavar of an engine option's flag: its name in capitals (``--centroids CENTROIDS``)."""
    return option.cli_flag.lstrip("-").replace("-", "_").upper()


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
