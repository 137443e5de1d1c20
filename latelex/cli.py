"""The ``latelex`` command line: a thin shell over the Python API, verb for verb.

    latelex index    DIR --model M --collection C     encode a collection and build an index
    latelex search   DIR --queries Q [--qrels R]      search (and evaluate), write a run file
    latelex rerank   --model M --candidates F ...     re-rank another system's candidates with ColBERT
    latelex evaluate --run F --qrels R                score a run file
    latelex fuse     RUN RUN ... --output F           fuse runs (RRF or weighted scores): hybrid retrieval
    latelex info     DIR                              describe an index
    latelex train    OUT --model M --triples F ...    train ColBERT or SPLADE from triples
    latelex mine     --queries Q --qrels R ...        mine hard negatives into n-way training files

Library errors print one line and exit with status 1; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

#: The built-in ColBERT model (latelex.models.DEFAULT_COLBERT_MODEL), spelled here so that --help needs no import.
DEFAULT_MODEL = "latelex-colbert-minilm"

EXAMPLES = """examples (offline, with the data in ../shared; the default model ships with latelex):
  latelex index runs/scifact --collection ../shared/datasets/scifact
  latelex index runs/scifact-plain --model ../shared/models/all-MiniLM-L6-v2 \\
      --collection ../shared/datasets/scifact --query-maxlen 64 --doc-maxlen 256
  latelex search runs/scifact --queries ../shared/datasets/scifact --split test \\
      --qrels ../shared/datasets/scifact --output runs/scifact.trec
  latelex search runs/scifact --query "does vitamin D lower cancer risk?" -k 5
  latelex evaluate --run runs/scifact.trec --qrels ../shared/datasets/scifact --split test
"""


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
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


def _encoder_overrides(args: argparse.Namespace, family: str) -> dict[str, Any]:
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


def _load_encoder(args: argparse.Namespace):
    from .encoders import detect_family, load_encoder

    family = args.family or detect_family(args.model)
    return load_encoder(args.model, family, device=args.device, **_encoder_overrides(args, family))


def _write_run(path: str, run, fmt: str) -> None:
    from .data import write_ranking, write_trec_run

    if fmt == "trec":
        write_trec_run(path, run, tag="latelex")
    else:
        write_ranking(path, run)


def _maybe_evaluate(args: argparse.Namespace, run) -> None:
    if not args.qrels:
        return
    from .data import read_qrels_any
    from .evaluate import evaluate, format_table

    results = evaluate(run, read_qrels_any(args.qrels, args.split), args.metrics)
    print(format_table(results))
    if getattr(args, "metrics_json", None):
        from .fsio import atomic_write

        with atomic_write(args.metrics_json) as f:
            json.dump(results, f, indent=2)


# ---------------------------------------------------------------------- verbs


def _is_bm25_index(path: str) -> bool:
    """Whether ``path`` holds a BM25 index (its manifest's kind), read without opening anything else."""
    from .index.bm25 import KIND
    from .index.storage import MANIFEST

    manifest = Path(path).expanduser() / MANIFEST
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False  # the Retriever's own checks say what is wrong with the folder


def _open_searcher(path: str, device: Any):
    """A BM25 index or a Retriever (encoder + index): both answer ``search_queries(queries, k, subset=...)``."""
    if _is_bm25_index(path):
        from .index.bm25 import BM25Index

        return BM25Index.open(path)
    from .search.retriever import Retriever

    return Retriever.open(path, device=device)


def cmd_index(args: argparse.Namespace) -> int:
    from .data import read_documents
    from .search.retriever import Retriever

    if args.kind == "bm25":
        from .index.bm25 import BM25Index

        _engine_config(args)  # refuses engine options that do not apply
        pairs = list(read_documents(args.collection))
        index = BM25Index.build(args.index, [d for d, _ in pairs], [t for _, t in pairs], overwrite=args.overwrite)
        print(f"indexed {len(index)} documents into {args.index} (BM25, no model)")
        return 0
    encoder = _load_encoder(args)
    print(f"encoder: {encoder!r}", file=sys.stderr)
    retriever = Retriever.build(
        args.index, encoder, read_documents(args.collection), kind=args.kind, overwrite=args.overwrite,
        store_text=not args.no_store_text, batch_size=args.batch_size, show_progress=not args.quiet,
        engine_config=_engine_config(args),
    )
    info = retriever.info()
    print(f"indexed {info.get('documents', len(retriever))} documents into {retriever.path}")
    return 0


_SEARCH_OPTIONS = ("mode", "query_terms", "depth", "ncells", "centroid_score_threshold", "ndocs", "nprobe", "faiss_depth")


def _engine_config(args: argparse.Namespace):
    """The engine configuration the index command's options describe (None: the engine's defaults)."""
    from .config import config_replace

    if args.kind == "plaid":
        from .index.plaid import PlaidConfig

        changes = {"nbits": args.nbits, "n_centroids": args.centroids}
        return config_replace(PlaidConfig(), **{k: v for k, v in changes.items() if v is not None})
    if args.kind == "ivfpq":
        from .index.ivfpq import IvfPqConfig

        changes = {"partitions": args.partitions, "sample": args.sample}
        return config_replace(IvfPqConfig(), **{k: v for k, v in changes.items() if v is not None})
    for name in ("nbits", "centroids", "partitions", "sample"):
        if getattr(args, name) is not None:
            raise _usage(f"--{name} applies to --kind plaid or ivfpq")
    return None


def cmd_search(args: argparse.Namespace) -> int:
    from .data import read_queries_any
    from .search.retriever import Retriever

    if not args.query and not args.queries:
        raise _usage("search needs --query TEXT or --queries FILE")
    retriever = _open_searcher(args.index, args.device)
    bm25 = not isinstance(retriever, Retriever)
    if args.query:
        found = retriever.search_text(args.query, k=args.k) if bm25 else retriever.search(args.query, k=args.k)
        for text, hits in zip(args.query, found):
            print(f"query: {text}")
            for rank, hit in enumerate(hits, 1):
                snippet = ""
                if not bm25 and retriever.has_texts:
                    snippet = " " + retriever.document(hit.doc_id)[:100].replace("\n", " ")
                print(f"{rank:>4}  {hit.score:10.4f}  {hit.doc_id}{snippet}")
        return 0
    subset = None
    if args.subset:
        subset = [line.strip() for line in Path(args.subset).read_text(encoding="utf-8").splitlines() if line.strip()]
    options = {name: getattr(args, name) for name in _SEARCH_OPTIONS if getattr(args, name) is not None}
    queries = read_queries_any(args.queries, args.split)
    if bm25:
        if options:
            raise _usage(f"--{next(iter(options)).replace('_', '-')} does not apply to a BM25 index")
        run = retriever.search_queries(queries, k=args.k, subset=subset)
    else:
        run = retriever.search_queries(queries, k=args.k, subset=subset, batch_size=args.batch_size,
                                       show_progress=not args.quiet, **options)
    if args.output:
        _write_run(args.output, run, args.format)
        print(f"wrote {len(run)} rankings to {args.output}", file=sys.stderr)
    _maybe_evaluate(args, run)
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from .data import read_candidates, read_documents, read_queries_any
    from .search.rerank import rerank

    candidates = read_candidates(args.candidates)
    queries = candidates.queries
    if args.queries:
        queries = dict(read_queries_any(args.queries, args.split))
    if queries is None:
        raise _usage(f"{args.candidates} carries no query texts; pass --queries")
    documents = candidates.passages
    if args.collection:
        wanted = {d for pids in candidates.pids_by_query.values() for d in pids}
        documents = {d: t for d, t in read_documents(args.collection) if d in wanted}
    if documents is None:
        raise _usage(f"{args.candidates} carries no passages; pass --collection")
    encoder = _load_encoder(args)
    if encoder.spec()["family"] != "colbert":
        raise _usage("re-ranking uses a ColBERT model; pass a ColBERT checkpoint or --family colbert")
    run = rerank(encoder, queries, candidates.pids_by_query, documents, k=args.k, batch_size=args.batch_size,
                 show_progress=not args.quiet)
    _write_run(args.output, run, args.format)
    print(f"wrote {len(run)} re-ranked lists to {args.output}", file=sys.stderr)
    _maybe_evaluate(args, run)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import read_qrels_any, read_run_any
    from .evaluate import evaluate, format_table

    run = read_run_any(args.run)
    results = evaluate(run, read_qrels_any(args.qrels, args.split), args.metrics, per_query=args.per_query,
                       ignore_identical_ids=args.ignore_identical_ids)
    if args.per_query:
        for metric, values in results.items():
            for qid, value in values.items():
                print(f"{metric}\t{qid}\t{value:.4f}")
    else:
        print(format_table(results))
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from .data import read_run_any
    from .search.fusion import reciprocal_rank_fusion, score_fusion

    if len(args.runs) < 2:
        raise _usage("fuse needs at least two run files")
    runs = [read_run_any(path) for path in args.runs]
    if args.method == "rrf":
        run = reciprocal_rank_fusion(runs, k=args.rrf_k, weights=args.weights, depth=args.depth)
    else:
        run = score_fusion(runs, weights=args.weights, normalization=args.normalization, depth=args.depth)
    if args.k is not None:
        run = {qid: hits[: args.k] for qid, hits in run.items()}
    _write_run(args.output, run, args.format)
    print(f"wrote {len(run)} fused rankings to {args.output}", file=sys.stderr)
    _maybe_evaluate(args, run)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .search.retriever import Retriever

    if _is_bm25_index(args.index):
        from .index.bm25 import BM25Index

        info = {"path": str(Path(args.index).expanduser().resolve()), **BM25Index.open(args.index, verify=args.verify).info()}
    else:
        info = Retriever.inspect(args.index, verify=args.verify)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                value = json.dumps(value)
            print(f"{key:<28} {value}")
    return 0


def _is_id_triples(path: str) -> bool:
    from .data.lines import iter_lines

    if path.endswith(".jsonl"):
        return True
    for _, line in iter_lines(path):
        if line.strip():
            return line.lstrip().startswith("[")
    return False


def cmd_train(args: argparse.Namespace) -> int:
    from .config import config_replace
    from .data import read_documents, read_qrels_any, read_queries_any
    from .train.config import SpladeTrainConfig, TrainConfig
    from .train.data import DevSet, TrainingData

    family = args.family or "colbert"
    if _is_id_triples(args.triples):
        if not args.queries or not args.collection:
            raise _usage("id triples need --queries and --collection to look their texts up")
        data = TrainingData.from_id_triples(args.triples, args.queries, args.collection, nway=args.nway,
                                            teacher_scores=args.teacher_scores)
    else:
        data = TrainingData.from_text_triples(args.triples)
    settings = dict(output_dir=str(args.output), lr=args.lr, batch_size=args.batch_size, nway=args.nway,
                    accumulation_steps=args.accumulation, total_steps=args.steps, warmup_steps=args.warmup,
                    loss=args.loss, in_batch_negatives=not args.no_in_batch_negatives, seed=args.seed,
                    temperature=args.temperature, ce_temperature=args.ce_temperature, alpha=args.alpha,
                    checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, dropout=not args.no_dropout)
    dev = None
    if args.dev_queries:
        if not args.dev_qrels:
            raise _usage("--dev-queries needs --dev-qrels")
        dev = DevSet.create(dict(read_queries_any(args.dev_queries, args.dev_split)),
                            read_qrels_any(args.dev_qrels, args.dev_split),
                            dict(read_documents(args.dev_collection or args.collection)))
    if family == "colbert":
        from .encoders.colbert import ColBERT
        from .encoders.colbert_checkpoints import read_checkpoint
        from .encoders.loading import resolve_model_dir
        from .train.colbert_trainer import ColBERTTrainer as trainer_cls

        overrides = _encoder_overrides(args, family)
        if read_checkpoint(resolve_model_dir(args.model)).projection is not None:
            encoder = ColBERT.from_pretrained(args.model, device=args.device, **overrides)
        else:
            encoder = ColBERT.from_backbone(args.model, dim=args.dim, seed=args.seed, device=args.device, **overrides)
        if args.lora_rank:
            from .encoders.lora import LoRAConfig

            encoder.add_lora(LoRAConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank), seed=args.seed)
        config = config_replace(TrainConfig(output_dir=str(args.output)), **settings)
    else:
        if args.lora_rank:
            raise _usage("--lora-rank applies to ColBERT training")
        from .encoders.splade import Splade
        from .train.splade_trainer import SpladeTrainer as trainer_cls

        encoder = Splade.from_pretrained(args.model, device=args.device, **_encoder_overrides(args, family))
        config = config_replace(SpladeTrainConfig(output_dir=str(args.output)), **settings, lambda_q=args.lambda_q,
                                lambda_d=args.lambda_d, regulariser=args.regulariser)
    trainer = trainer_cls.create(encoder, data, config, dev=dev, resume=args.resume, device=args.device)
    # Under torchrun every process runs this command; the first one alone reports and writes the final model
    # (the processes hold the same weights, and two writers of one folder would race).
    lead = trainer.rank == 0
    if lead:
        print(f"training {encoder!r} on {len(data)} examples over {trainer.world_size} process(es)", file=sys.stderr)
    result = trainer.train()
    if lead:
        final = encoder.save(Path(args.output) / "final-model", overwrite=True)
        print(f"trained {result.step} steps; final model: {final}")
        if result.best_model is not None:
            print(f"best dev {config.eval_metric}: {result.best_metric:.4f} ({result.best_model})")
    trainer.close()
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from .data import read_documents, read_qrels_any, read_queries_any
    from .train.mine import BM25Retriever, CrossEncoderTeacher, mine_hard_negatives

    queries = dict(read_queries_any(args.queries, args.split))
    qrels = read_qrels_any(args.qrels or args.queries, args.split)
    documents = None
    if args.index:
        from .search.retriever import Retriever

        retriever = Retriever.open(args.index, device=args.device)
    else:
        if not args.collection:
            raise _usage("mining needs --index DIR (ColBERT or SPLADE) or --collection for BM25")
        documents = dict(read_documents(args.collection))
        retriever = BM25Retriever.build(documents)
    teacher = None
    if args.teacher:
        if documents is None:
            if not args.collection:
                raise _usage("a --teacher needs --collection to read passage texts")
            documents = dict(read_documents(args.collection))
        teacher = CrossEncoderTeacher.from_pretrained(args.teacher, device=args.device)
    result = mine_hard_negatives(retriever, queries, qrels, args.output, nway=args.nway, ranks=tuple(args.ranks),
                                 examples_per_query=args.examples_per_query, seed=args.seed, teacher=teacher,
                                 documents=documents)
    print(f"wrote {result.examples} examples for {result.queries} queries to {result.path}")
    return 0


# ---------------------------------------------------------------------- parser


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .evaluate.metrics import DEFAULT_METRICS

    parser = argparse.ArgumentParser(
        prog="latelex", description="Neural search with ColBERT late interaction and SPLADE.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"latelex {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
        return p

    def add_eval(p: argparse.ArgumentParser) -> None:
        p.add_argument("--qrels", help="relevance judgements to evaluate against: qrels file or BEIR folder (with --split)")
        p.add_argument("--split", default=None, help="BEIR split for --queries/--qrels folders (e.g. test, dev, train)")
        p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                       help=f"ir-measures names; MRR@10 and Recall@k accepted (default: {' '.join(DEFAULT_METRICS)})")

    p = add("index", "encode a collection and build an index",
            "Encode a collection (ColBERT TSV, JSONL or BEIR folder) and build an index at DIR.")
    p.add_argument("index", metavar="DIR", help="where to write the index (a directory)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model folder or Hugging Face Hub name (default: {DEFAULT_MODEL}, the built-in offline ColBERT model)")
    p.add_argument("--collection", required=True, help="collection.tsv (pid<TAB>text), documents .jsonl, or a BEIR folder")
    p.add_argument("--kind", choices=["flat", "plaid", "ivfpq", "sparse", "inverted", "bm25"],
                   help="index kind. ColBERT: flat (exact MaxSim, the default), plaid (ColBERTv2 residual compression "
                        "and PLAID search), ivfpq (ColBERT v1: faiss IVFPQ candidates + exact MaxSim). SPLADE: sparse "
                        "(exact matrix product, the default), inverted (dynamic pruning; exact or approximate). "
                        "bm25: BM25 through bm25s (English stopwords, Snowball stemmer), no model needed")
    g = p.add_argument_group("engine options")
    g.add_argument("--nbits", type=int, choices=[1, 2, 4], help="plaid: bits per residual dimension (default 2)")
    g.add_argument("--centroids", type=int, help="plaid: number of centroids (default: ColBERTv2's formula)")
    g.add_argument("--partitions", type=int, help="ivfpq: IVF partitions (default scaled to the collection)")
    g.add_argument("--sample", type=float, help="ivfpq: fraction of token vectors to train on (default 0.3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at DIR")
    p.add_argument("--no-store-text", action="store_true", help="do not keep document texts in the index")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_index)

    p = add("search", "search an index (and evaluate)",
            "Search an index with one or more --query texts (printed), or a --queries file (written as a run).")
    p.add_argument("index", metavar="DIR", help="an index built by `latelex index`")
    p.add_argument("--query", action="append", help="a query text to search and print (repeatable)")
    p.add_argument("--queries", help="queries: qid<TAB>text TSV, .jsonl, TREC topics, or a BEIR folder (with --split)")
    p.add_argument("-k", "--k", type=int, default=100, help="results per query (default 100)")
    p.add_argument("--output", help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    p.add_argument("--subset", help="file of document ids (one per line) to restrict the search to")
    p.add_argument("--mode", choices=["exact", "approximate"], help="inverted index: exact top-k or approximate")
    p.add_argument("--ncells", type=int, help="plaid: centroids probed per query token (default by k, as ColBERT)")
    p.add_argument("--centroid-score-threshold", type=float, help="plaid: centroid pruning threshold (default by k)")
    p.add_argument("--ndocs", type=int, help="plaid: documents decompressed and scored exactly (default by k)")
    p.add_argument("--nprobe", type=int, help="ivfpq: partitions probed per query token (default 32)")
    p.add_argument("--faiss-depth", type=int, help="ivfpq: nearest token vectors per query token (default 1024)")
    p.add_argument("--query-terms", type=int, help="inverted, approximate: keep the heaviest N query terms")
    p.add_argument("--depth", type=int, help="inverted, approximate: postings read per query term")
    p.add_argument("--metrics-json", help="also write the metrics as JSON here")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64, help="queries per forward pass (default 64)")
    add_eval(p)
    p.set_defaults(func=cmd_search)

    p = add("rerank", "re-rank another system's candidates with ColBERT",
            "Re-rank candidates from a ColBERT top-k TSV (qid pid rank), an MS MARCO top1000 file "
            "(qid pid query passage) or a TREC run, encoding the documents on the fly.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"ColBERT model folder or Hugging Face Hub name (default: {DEFAULT_MODEL})")
    p.add_argument("--candidates", required=True, help="top-k TSV, top1000 file or TREC run")
    p.add_argument("--queries", help="queries (needed unless the candidates file carries them)")
    p.add_argument("--collection", help="collection (needed unless the candidates file carries passages)")
    p.add_argument("--output", required=True, help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    p.add_argument("-k", "--k", type=int, default=None, help="keep the top k per query (default: all candidates)")
    p.add_argument("--metrics-json", help="also write the metrics as JSON here")
    add_eval(p)
    _add_encoder_options(p)
    p.set_defaults(func=cmd_rerank)

    p = add("evaluate", "score a run file", "Score a TREC run or ColBERT ranking TSV against qrels.")
    p.add_argument("--run", required=True, help="TREC run or ColBERT ranking TSV")
    p.add_argument("--per-query", action="store_true", help="print one line per metric and query")
    p.add_argument("--ignore-identical-ids", action="store_true", help="drop hits whose id equals the query id (BEIR)")
    add_eval(p)
    p.set_defaults(func=cmd_evaluate)

    p = add("info", "describe an index", "Print an index's kind, counts, sizes, encoder and configuration.")
    p.add_argument("index", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true", help="also check every array's SHA-256 against the manifest")
    p.set_defaults(func=cmd_info)

    p = add("fuse", "fuse run files (hybrid retrieval)",
            "Fuse two or more run files (TREC runs or ColBERT ranking TSVs from any system: BM25, SPLADE, ColBERT) "
            "by reciprocal-rank fusion or a weighted sum of normalised scores.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run files to fuse")
    p.add_argument("--method", choices=["rrf", "score"], default="rrf", help="rrf (default) or weighted score fusion")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per run (default: 1 each)")
    p.add_argument("--rrf-k", type=float, default=60, help="RRF constant k (default 60, as in Cormack et al.)")
    p.add_argument("--normalization", choices=["minmax", "zscore", "none"], default="minmax",
                   help="score fusion: per-query score normalisation (default minmax)")
    p.add_argument("--depth", type=int, help="use only the first N hits of each run's list")
    p.add_argument("-k", "--k", type=int, default=None, help="keep the top k fused hits per query (default: all)")
    p.add_argument("--output", required=True, help="run file to write")
    p.add_argument("--format", choices=["trec", "colbert"], default="trec", help="run format: TREC or ColBERT ranking TSV")
    add_eval(p)
    p.set_defaults(func=cmd_fuse)

    p = add("train", "train ColBERT or SPLADE from triples",
            "Train from text triples (query<TAB>positive<TAB>negative) or id triples / n-way JSONL "
            "([qid, pid+, pid-, ...] or with teacher scores [qid, [pid, score], ...]). Checkpoints every N steps; "
            "--resume continues exactly where a run stopped. The final model is saved to OUT/final-model.")
    p.add_argument("output", metavar="OUT", help="output folder (checkpoints, log.jsonl, best-model, final-model)")
    p.add_argument("--model", required=True, help="backbone or checkpoint to start from (folder or Hub name)")
    p.add_argument("--triples", required=True, help="training triples: TSV of texts or JSONL of ids")
    p.add_argument("--queries", help="queries for id triples")
    p.add_argument("--collection", help="collection for id triples")
    p.add_argument("--teacher-scores", help="JSONL [qid, [[pid, score], ...]] of teacher scores for distillation")
    p.add_argument("--nway", type=int, default=2, help="passages per example: 1 positive + nway-1 negatives (default 2)")
    p.add_argument("--loss", choices=["ce", "kl", "margin_mse"], default="ce", help="ce (softmax over n-way), kl or margin_mse distillation")
    p.add_argument("--no-in-batch-negatives", action="store_true", help="score only each example's own passages")
    p.add_argument("--temperature", type=float, default=1.0, help="kl: temperature of both score distributions (default 1)")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="kl / margin_mse: loss = alpha * distillation + (1 - alpha) * ce (default 1)")
    p.add_argument("--ce-temperature", type=float, default=1.0,
                   help="ce: divide scores by this before the softmax (default 1, ColBERT's loss)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps, then linear decay")
    p.add_argument("--accumulation", type=int, default=1, help="gradient accumulation micro-batches per step")
    p.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable checkpoint every N steps")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate on the dev set every N steps, keeping the best model")
    p.add_argument("--dev-queries", help="dev queries (BEIR folder with --dev-split, TSV, JSONL)")
    p.add_argument("--dev-qrels", help="dev qrels")
    p.add_argument("--dev-split", help="BEIR split of the dev set (e.g. dev)")
    p.add_argument("--dev-collection", help="dev collection (default: --collection)")
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=128, help="ColBERT: projection size for a new head (default 128)")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="ColBERT: train rank-N LoRA adapters (alpha 2N) and the projection on a frozen backbone (default 0: "
                        "train every weight)")
    p.add_argument("--no-dropout", action="store_true", help="train in eval mode (no dropout): 2-3x faster on CPU")
    p.add_argument("--lambda-q", type=float, default=3e-4, help="SPLADE: query regularisation weight")
    p.add_argument("--lambda-d", type=float, default=1e-4, help="SPLADE: document regularisation weight")
    p.add_argument("--regulariser", choices=["flops", "l1"], default="flops", help="SPLADE regulariser")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_train)

    p = add("mine", "mine hard negatives into n-way training files",
            "Retrieve for every judged query with an index (ColBERT or SPLADE, --index) or BM25 (--collection), "
            "sample negatives from ranks A..B that are not judged relevant, optionally score them with a "
            "cross-encoder --teacher, and write JSONL training tuples.")
    p.add_argument("--queries", required=True, help="training queries (BEIR folder with --split, TSV, JSONL)")
    p.add_argument("--qrels", help="qrels (default: the --queries BEIR folder)")
    p.add_argument("--split", help="BEIR split (e.g. train)")
    p.add_argument("--index", help="a latelex index to retrieve with (otherwise BM25 over --collection)")
    p.add_argument("--collection", help="collection (for BM25 and for a teacher)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--nway", type=int, default=8, help="passages per tuple (default 8)")
    p.add_argument("--ranks", type=int, nargs=2, default=[1, 100], metavar=("A", "B"), help="sample negatives from ranks A..B")
    p.add_argument("--examples-per-query", type=int, default=1)
    p.add_argument("--teacher", help="cross-encoder (sequence-classification checkpoint) to score the tuples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, ...")
    p.set_defaults(func=cmd_mine)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import LatelexError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "evaluate" and not args.qrels:
        parser.error("evaluate needs --qrels")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="latelex: %(message)s")

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"latelex: warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        return int(args.func(args) or 0)
    except _UsageError as exc:
        parser.error(str(exc))
    except LatelexError as exc:
        print(f"latelex: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"latelex: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("latelex: interrupted; nothing was published", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
