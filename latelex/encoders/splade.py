"""SPLADE: learned sparse representations from a masked-language-model head.

A text of L tokens goes through a ``*ForMaskedLM`` transformer, giving logits of shape (L, V) over the
vocabulary of V terms. The weight of term j is ``pool_i log(1 + relu(logits[i, j]))`` over the text's tokens i
(padding excluded), with ``pool`` = max (SPLADE v2, SPLADE++) or sum (SPLADE v1). Most weights are zero, so
the result is a sparse vector over the vocabulary, scored by dot product.

Checkpoint formats read by :meth:`Splade.from_pretrained`:

- a transformers ``*ForMaskedLM`` folder (naver/splade* models and plain MLMs), older BERT names included;
- a sentence-transformers ``SparseEncoder`` folder (``modules.json``: MLMTransformer + SpladePooling, or a
  Router with query and document routes);
- Efficient SPLADE: a document encoder plus a separate ``query_model``;
- latelex's own format written by :meth:`Splade.save` (``latelex_model.json`` beside the weights).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import BackendConfig, SpladeConfig, config_from_dict, config_replace, config_to_dict
from ..errors import ConfigError, InputError, ModelError
from ..fsio import staged_folder
from ..types import SparseBatch, SparseVector
from . import batching
from .loading import (
    MissingWeightsError,
    load_tokenizer,
    load_transformer,
    pick_device,
    quiet_transformers,
    read_json,
    resolve_model_dir,
)

logger = logging.getLogger(__name__)

#: Manifest of a model saved by :meth:`Splade.save`.
MANIFEST = "latelex_model.json"
FORMAT = "latelex-splade"
FORMAT_VERSION = 1
_ACTIVATIONS = ("relu", "log1p_relu")
_MLM_ARCHITECTURES = ("ForMaskedLM", "ForPreTraining", "LMHeadModel")


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a checkpoint are and what its own files say about encoding."""

    doc_dir: Path
    query_dir: Path | None = None
    config: SpladeConfig | None = None  # settings the checkpoint declares (None: library defaults)
    activation: str = "relu"
    declared_pooling: str | None = None


class Splade:
    """A SPLADE encoder: texts in, sparse vectors over the model's vocabulary out.

    Build it with :meth:`from_pretrained` (or :meth:`from_spec`); the constructor only stores its fields.
    ``model`` encodes documents, and queries too unless a separate ``query_model`` is given (Efficient SPLADE).
    ``activation`` is ``"relu"`` (log(1 + relu(x)), every SPLADE) or ``"log1p_relu"`` (log(1 + log(1 + relu(x))),
    OpenSearch's variant, read from sentence-transformers checkpoints). ``runtime``: the backend that runs the
    forward pass (torch unless :meth:`from_pretrained` was asked for onnx).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        config: SpladeConfig,
        *,
        query_model: torch.nn.Module | None = None,
        query_tokenizer: Any = None,
        name: str | None = None,
        query_name: str | None = None,
        activation: str = "relu",
        device: torch.device | None = None,
        runtime: BackendConfig | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.query_model = query_model
        self.query_tokenizer = query_tokenizer
        self.name = name
        self.query_name = query_name
        self.activation = activation
        self.device = device if device is not None else torch.device("cpu")
        self.runtime = runtime or BackendConfig()
        self._graphs: dict[str, Any] = {}  # "document" / "query": the OnnxGraph that replaces that model (onnx)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        query_model: str | os.PathLike | None = None,
        config: SpladeConfig | None = None,
        device: str | torch.device | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        onnx_dir: str | os.PathLike | None = None,
        **overrides: Any,
    ) -> "Splade":
        """Load a SPLADE encoder from a local folder or a Hugging Face Hub name.

        ``query_model``: a separate query encoder (Efficient SPLADE); it must share the vocabulary.
        ``config``: the whole configuration; by default, what the checkpoint declares (pooling and lengths of
        sentence-transformers and latelex folders) over :class:`SpladeConfig`'s defaults. ``overrides`` are
        :class:`SpladeConfig` fields applied last (``doc_top_k=200``); an unknown name raises ConfigError.
        ``device``: where the model runs (default: CUDA when available, else CPU).
        ``backend="onnx"``: run the MLM head, activation and pooling as an ONNX graph with onnxruntime (exported,
        verified against torch and cached on first use; see :mod:`latelex.encoders.onnx_backend`; a later load from
        the same model files opens the cached graphs without loading the torch model), on the CPU
        unless ``device`` names a GPU onnxruntime can use; ``quantize="int8"`` quantises its weights;
        ``onnx_dir``: where to cache the graphs (default: ``onnx/`` in a writable local model folder, else the
        user cache).
        """
        if config is not None and not isinstance(config, SpladeConfig):
            raise ConfigError(f"config must be a SpladeConfig, not {type(config).__name__}")
        runtime = BackendConfig(backend, quantize)
        if runtime.engine:
            from .onnx_backend import require_engine

            require_engine(runtime.engine)
        directory = resolve_model_dir(name_or_path)
        layout = _read_layout(directory)
        settings = config_replace(config or layout.config or SpladeConfig(), **overrides)
        if layout.declared_pooling is not None and settings.pooling != layout.declared_pooling:
            logger.warning(
                "%s was trained with %s pooling but is configured for %s pooling; its scores will differ",
                directory, layout.declared_pooling, settings.pooling,
            )
        q_model = q_tokenizer = q_name = q_root = None
        q_dir = layout.query_dir
        if query_model is not None:
            q_root = resolve_model_dir(query_model)
            q_layout = _read_layout(q_root)
            q_dir = q_layout.query_dir or q_layout.doc_dir
            q_name = _spec_name(query_model, q_root)
        name = _spec_name(name_or_path, directory)
        digest = None
        if runtime.engine:
            from .onnx_cache import source_digest

            # once: to find the graphs, or to record them
            digest = source_digest([p for p in (directory, layout.doc_dir, q_root, q_dir) if p is not None])
            fast = cls._from_recorded_graphs(layout, q_dir, settings, name, q_name, runtime, directory,
                                             Path(name_or_path).expanduser().exists(), device, onnx_dir, digest)
            if fast is not None:
                return fast
        model = _load_mlm(layout.doc_dir)
        tokenizer = load_tokenizer(layout.doc_dir)
        if q_dir is not None:
            q_model = _load_mlm(q_dir)
            q_tokenizer = load_tokenizer(q_dir)
            q_vocab, d_vocab = _output_size(q_model), _output_size(model)
            if q_vocab != d_vocab:
                raise ModelError(
                    f"the query encoder {q_dir} has a vocabulary of {q_vocab} terms but the document encoder "
                    f"{layout.doc_dir} has {d_vocab}; a query and a document encoder must share one vocabulary"
                )

        encoder = cls(
            model,
            tokenizer,
            settings,
            query_model=q_model,
            query_tokenizer=q_tokenizer,
            name=name,
            query_name=q_name,
            activation=layout.activation,
            runtime=runtime,
        )
        if runtime.engine:
            local = Path(name_or_path).expanduser().exists()
            return encoder._use_onnx(directory, local, device, onnx_dir, source_digest=digest)
        return encoder.to(pick_device(device))

    @classmethod
    def _from_recorded_graphs(cls, layout: _Layout, q_dir: Path | None, settings: SpladeConfig, name: str,
                              q_name: str | None, runtime: BackendConfig, directory: Path, local: bool, device: Any,
                              onnx_dir: Any, digest: str) -> "Splade | None":
        """The encoder over cached graphs (the document one, and the query one of a separate query encoder) whose
        sidecars record that they were exported from these very model files (``digest``, their
        :func:`~.onnx_cache.source_digest`), built without loading the torch models or importing transformers;
        None when one is missing or its tokenizer, read without transformers, does not reproduce the one recorded
        with it (:mod:`.rust_tokenizer`). The caller then loads the models in full."""
        from .onnx_backend import GraphBackbone, graph_device, open_by_sources
        from .onnx_cache import cache_folder
        from .rust_tokenizer import RustTokenizer

        folder = cache_folder(directory, local, onnx_dir)
        found: dict[str, tuple[Any, Any, Any]] = {}
        for part, part_dir in (("document", layout.doc_dir), ("query", q_dir)):
            if part_dir is None:
                continue
            tokenizer = RustTokenizer.load(part_dir)
            if tokenizer is None:
                return None
            opened = open_by_sources(folder, _graph_stem(part, settings.pooling, layout.activation, runtime),
                                     digest, "weights", graph_device(device, runtime.engine), runtime.engine,
                                     runtime.quantize)
            if opened is None:
                return None
            graph, meta = opened
            shape = meta["sources"].get("backbone")
            if not tokenizer.matches(meta["sources"].get("tokens") or {}) or not isinstance(shape, dict) \
                    or not isinstance(shape.get("vocab_size"), int):
                return None
            found[part] = (GraphBackbone(shape), tokenizer, graph)
        model, tokenizer, _ = found["document"]
        q_model, q_tokenizer, _ = found.get("query", (None, None, None))
        encoder = cls(model, tokenizer, settings, query_model=q_model, query_tokenizer=q_tokenizer, name=name,
                      query_name=q_name, activation=layout.activation, device=torch.device("cpu"), runtime=runtime)
        encoder._graphs = {part: graph for part, (_, _, graph) in found.items()}
        return encoder

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, device: str | torch.device | None = None) -> "Splade":
        """Reopen the encoder described by :meth:`spec` (as stored in an index manifest), on the backend it
        records (torch when it records none)."""
        if not isinstance(spec, dict) or spec.get("family") != "splade" or "model" not in spec:
            family = spec.get("family") if isinstance(spec, dict) else None
            raise ModelError(f"not a SPLADE encoder spec (family {family!r}); pass the dict Splade.spec() returned")
        config = config_from_dict(SpladeConfig, dict(spec.get("config") or {}))
        runtime = BackendConfig.from_spec(spec)
        return cls.from_pretrained(spec["model"], query_model=spec.get("query_model"), config=config, device=device,
                                   backend=runtime.backend, quantize=runtime.quantize)

    def to(self, device: str | torch.device) -> "Splade":
        """Move the model(s) to ``device``; returns self. An onnx-backed encoder stays where it was loaded."""
        if self._graphs:
            if torch.device(device) == self.device:
                return self
            raise ModelError(f"an encoder on the onnx backend stays where it was loaded; load it again with "
                             f"device={str(device)!r}")
        self.device = torch.device(device)
        self.model.to(self.device)
        if self.query_model is not None:
            self.query_model.to(self.device)
        return self

    # ------------------------------------------------------------------ description

    @property
    def vocab_size(self) -> int:
        """V, the number of terms of the output vectors (the MLM head's output size)."""
        return _output_size(self.model)

    def spec(self) -> dict[str, Any]:
        """A JSON-ready description that :meth:`from_spec` reopens: family, model, query model, config (and, on
        the onnx backend, ``backend`` and ``quantize``, which indexes record but do not count when they compare
        encoders)."""
        from .onnx_backend import spec_fields

        return {
            "family": "splade",
            "model": self.name,
            "query_model": self.query_name,
            "config": config_to_dict(self.config),
            **spec_fields(self.runtime),
        }

    @property
    def backend(self) -> str:
        """``"torch"`` or ``"onnx"``: what runs the forward pass."""
        return self.runtime.backend

    @property
    def quantize(self) -> str | None:
        """``"int8"`` for int8-quantised ONNX graphs, else None."""
        return self.runtime.quantize

    def __repr__(self) -> str:
        c = self.config
        query = ""
        if self.query_model is not None:
            query = f", query_model={self.query_name or 'bundled'!r}"
        backend = "" if self.backend == "torch" else f", backend={self.backend!r}"
        if self.quantize:
            backend += f", quantize={self.quantize!r}"
        return (
            f"Splade(model={self.name!r}{query}, pooling={c.pooling!r}, query_maxlen={c.query_maxlen}, "
            f"doc_maxlen={c.doc_maxlen}, vocab_size={self.vocab_size}, device={str(self.device)!r}{backend})"
        )

    def explain(self, vector: SparseVector, top: int | None = None) -> list[tuple[str, float]]:
        """The readable view of ``vector``: ``(token, weight)`` pairs by weight descending (``top`` first only)."""
        ids = np.asarray(vector.ids)
        weights = np.asarray(vector.weights, dtype=np.float32)
        order = np.lexsort((ids, -weights))
        if top is not None:
            order = order[: max(0, int(top))]
        chosen = [int(i) for i in ids[order]]
        tokens = self.tokenizer.convert_ids_to_tokens(chosen) if chosen else []
        return [
            (tok if isinstance(tok, str) else f"[{i}]", float(w))
            for tok, i, w in zip(tokens, chosen, weights[order])
        ]

    # ------------------------------------------------------------------ encoding

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool | None = None
    ) -> SparseBatch:
        """Encode queries (with the query encoder if there is one), truncated at ``config.query_maxlen`` tokens.

        Returns a :class:`SparseBatch` of len(texts) vectors over :attr:`vocab_size` terms, in input order.
        A query longer than the limit is truncated, with one warning per call naming how many were.
        """
        model = self.query_model if self.query_model is not None else self.model
        tokenizer = self.query_tokenizer if self.query_model is not None else self.tokenizer
        return self._encode(
            texts, model, tokenizer, self.config.query_maxlen, self.config.query_top_k,
            batch_size=batch_size, show_progress=show_progress, kind="queries",
        )

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        show_progress: bool | None = None,
        on_batch: batching.BatchCallback | None = None,
    ) -> SparseBatch:
        """Encode documents, silently truncated at ``config.doc_maxlen`` tokens (:attr:`document_token_budget`
        content tokens).

        Returns a :class:`SparseBatch` of len(texts) vectors over :attr:`vocab_size` terms, in input order.
        ``on_batch``: called after each batch with the number of texts it held (for a caller's own progress bar;
        with a hook the encoder draws no bar of its own unless ``show_progress=True``).
        """
        return self._encode(
            texts, self.model, self.tokenizer, self.config.doc_maxlen, self.config.doc_top_k,
            batch_size=batch_size, show_progress=show_progress, kind="documents", on_batch=on_batch,
        )

    @property
    def document_token_budget(self) -> int:
        """How many content tokens of a document the encoder keeps: ``doc_maxlen`` (capped at the model's limit)
        less the tokenizer's special tokens ([CLS], [SEP]); later tokens are truncated."""
        limit = min(self.config.doc_maxlen, _length_limit(self.model, self.tokenizer))
        return limit - int(self.tokenizer.num_special_tokens_to_add(pair=False))

    def _encode(self, texts, model, tokenizer, maxlen: int, top_k: int | None, *, batch_size: int,
                show_progress: bool | None, kind: str, on_batch: batching.BatchCallback | None = None) -> SparseBatch:
        texts = _check_texts(texts, kind)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
        vocab = _output_size(model)
        if not texts:
            return SparseBatch.from_vectors([], vocab)
        limit = min(maxlen, _length_limit(model, tokenizer))
        budget = self.config.memory_budget_mb * (1 << 20)
        pad_id = int(tokenizer.pad_token_id)
        vectors: list[SparseVector | None] = [None] * len(texts)
        truncated = 0
        amp = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), amp, batching.batch_progress(len(texts), f"Encoding {kind}", show_progress,
                                                                  on_batch) as advance:
            for batch in batching.length_sorted_batches(texts, batch_size):
                token_ids, n_long = _tokenize(tokenizer, [texts[i] for i in batch], limit, kind == "queries")
                truncated += n_long
                for rows in _row_groups(token_ids, vocab, budget):
                    input_ids, mask = _pad([token_ids[r] for r in rows], pad_id, self.device)
                    pooled = self._pool(model, input_ids, mask)
                    for r, vector in zip(rows, _sparsify(pooled, top_k, self.config.threshold)):
                        vectors[int(batch[r])] = vector
                advance(len(batch))
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} queries are longer than {limit} tokens and were truncated; "
                "raise query_maxlen to keep them whole",
                stacklevel=3,
            )
        return SparseBatch.from_vectors(vectors, vocab)  # type: ignore[arg-type]

    def _pool(self, model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled SPLADE weights (B, V) float32 of token ids (B, L) with attention mask (B, L).

        The only (B, L, V) tensors are the logits and their float32 copy (the same tensor on CPU); the caller
        sizes B so that B * L * V * 4 bytes stays within the memory budget. On the onnx backend the model's
        graph computes the same pooled weights.
        """
        graph = self._graphs.get("query" if model is self.query_model else "document")
        if graph is not None:
            return graph.run({"input_ids": input_ids, "attention_mask": mask})
        return _pool_weights(model, input_ids, mask, self.config.pooling, self.activation)

    # ------------------------------------------------------------------ onnx backend

    def _use_onnx(self, directory: Path, local: bool, device: Any, onnx_dir: Any,
                  source_digest: str | None = None) -> "Splade":
        """Run each model's forward pass, activation and pooling as a (cached, verified) ONNX graph from now on,
        and free the torch weights. ``source_digest``: that of the files the weights were read from; each graph's
        sidecar then records it, so that the next load finds the graphs without loading the torch models
        (:meth:`_from_recorded_graphs`)."""
        from .onnx_backend import GraphRequest, graph_device, load_graph, release_weights, source_record
        from .onnx_cache import cache_folder, weights_digest
        from .rust_tokenizer import token_check

        where = graph_device(device, self.runtime.engine)
        self.device = torch.device("cpu")
        folder = cache_folder(directory, local, onnx_dir)
        parts = [("document", self.model, self.tokenizer)]
        if self.query_model is not None:
            parts.append(("query", self.query_model, self.query_tokenizer))
        for part, model, tokenizer in parts:
            model.float()
            rows = _tokenize(tokenizer, ["learned sparse", "a longer example text, to pad"], 512, False)[0]
            input_ids, mask = _pad(rows, int(tokenizer.pad_token_id), self.device)
            example = {"input_ids": input_ids, "attention_mask": mask}
            stem = _graph_stem(part, self.config.pooling, self.activation, self.runtime)
            key = {"family": "splade", "part": part, "weights": weights_digest([(part, model)]),
                   "model_config": model.config.to_json_string(use_diff=False), "inputs": list(example),
                   "pooling": self.config.pooling, "activation": self.activation}
            sources = None
            if source_digest is not None:
                limit = _length_limit(model, tokenizer)
                lengths = {min(self.config.query_maxlen, limit), min(self.config.doc_maxlen, limit), 8, 32, 128}
                positions = getattr(model.config, "max_position_embeddings", None)
                shape = {"vocab_size": _output_size(model),
                         "max_position_embeddings": positions if isinstance(positions, int) else None}
                # each length and one past it: queries are tokenised one token past their limit to detect the long
                checked = sorted(lengths | {n + 1 for n in lengths})
                sources = source_record(source_digest, token_check(tokenizer, checked), shape)
            module = _PooledWeights(model, self.config.pooling, self.activation)
            request = GraphRequest(module, example, "weights", folder, stem, key, self.name or str(directory), sources,
                                   calibration=self._calibration(part, model, tokenizer))
            self._graphs[part] = load_graph(
                request, self.quantize, where,
                lambda graph, model=model, tokenizer=tokenizer: self._verify_onnx(graph, model, tokenizer),
                self.runtime.engine)
        release_weights(self.model, self.query_model)
        return self

    def _calibration(self, part: str, model: torch.nn.Module, tokenizer: Any) -> Callable[[], list[dict]]:
        """What makes the calibration feeds of one part's graph for static int8: fixed documents and queries for
        the document model (queries too when it encodes them), fixed queries for a separate query model."""
        from .static_int8 import calibration_batches

        limit = _length_limit(model, tokenizer)
        pad_id = int(tokenizer.pad_token_id)

        def token_ids(texts: list[str], query: bool) -> list[list[int]]:
            maxlen = self.config.query_maxlen if query else self.config.doc_maxlen
            return _tokenize(tokenizer, texts, min(maxlen, limit), False)[0]

        def collate(rows: list[list[int]], query: bool) -> dict[str, torch.Tensor]:
            return dict(zip(("input_ids", "attention_mask"), _pad(rows, pad_id, torch.device("cpu"))))

        documents = part == "document"
        queries = part == "query" or self.query_model is None
        return lambda: calibration_batches(token_ids, collate, documents, queries)

    def _verify_onnx(self, graph: Any, model: torch.nn.Module, tokenizer: Any):
        """Compare ``graph``'s pooled weights (B, V) with torch's on the verification queries and documents, in
        batches of 3 (so that batches of several lengths and a batch of one are run). Sparsification (threshold,
        top-k) is the same code after either backend."""
        from .onnx_backend import VERIFICATION_DOCUMENTS, VERIFICATION_QUERIES, compare

        texts = list(VERIFICATION_QUERIES) + list(VERIFICATION_DOCUMENTS)
        limit = min(self.config.doc_maxlen, _length_limit(model, tokenizer))
        rows = _tokenize(tokenizer, texts, limit, False)[0]
        reference, candidate = [], []
        with torch.inference_mode():
            for start in range(0, len(rows), 3):
                input_ids, mask = _pad(rows[start : start + 3], int(tokenizer.pad_token_id), self.device)
                reference.append(_pool_weights(model, input_ids, mask, self.config.pooling, self.activation))
                candidate.append(graph.run({"input_ids": input_ids, "attention_mask": mask}))
        return compare(reference, candidate, self.quantize, self.runtime.engine)

    # ------------------------------------------------------------------ saving

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Save in latelex's format: the MLM (safetensors), its tokenizer, an optional ``query/`` encoder and
        ``latelex_model.json`` with the configuration. Written beside ``path`` and moved into place when complete.

        Returns the absolute path. :meth:`from_pretrained` reads the folder back to identical vectors; it is
        also a plain transformers ``*ForMaskedLM`` folder.
        """
        if self._graphs:
            raise ModelError("this encoder runs on the onnx backend and holds no torch weights, so it cannot be saved; "
                             "load it with backend='torch' for that")
        final = Path(path).expanduser().resolve()
        if final.exists() and not overwrite:
            raise InputError(f"{final} already exists; pass overwrite=True or choose another path")
        with staged_folder(final, tag="saving") as tmp:
            with quiet_transformers():
                self.model.save_pretrained(str(tmp))
                self.tokenizer.save_pretrained(str(tmp))
                if self.query_model is not None:
                    self.query_model.save_pretrained(str(tmp / "query"))
                    self.query_tokenizer.save_pretrained(str(tmp / "query"))
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "config": config_to_dict(self.config),
                "query_encoder": "query/" if self.query_model is not None else None,
                "activation": self.activation,
            }
            with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
        return final


# ---------------------------------------------------------------------- the forward pass


def _pool_weights(model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, pooling: str,
                  activation: str) -> torch.Tensor:
    """Pooled SPLADE weights (B, V) float32 of token ids (B, L) with attention mask (B, L): the forward pass that
    both backends run (the onnx backend as an exported graph of this function)."""
    logits = model(input_ids=input_ids, attention_mask=mask).logits  # (B, L, V)
    if pooling == "max":
        # log1p(relu(.)) is monotone, so max-pool the logits first and transform only (B, V): two passes over
        # the (B, L, V) tensor instead of five. Padding becomes -inf, which relu turns into 0.
        pooled = logits.float().masked_fill_(~mask.bool().unsqueeze(-1), float("-inf")).amax(dim=1)
        return _activate(pooled, activation)
    weights = _activate(logits.float(), activation)
    weights.mul_(mask.unsqueeze(-1).to(weights.dtype))  # padding -> 0
    return weights.sum(dim=1)


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """log(1 + relu(x)) in place (twice for the ``log1p_relu`` activation); -inf maps to 0."""
    x.relu_().log1p_()
    if activation == "log1p_relu":
        x.log1p_()
    return x


class _PooledWeights(torch.nn.Module):
    """:func:`_pool_weights` of one model as a module, for export: (B, L) token ids and mask to (B, V) weights."""

    def __init__(self, model: torch.nn.Module, pooling: str, activation: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.activation = activation

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _pool_weights(self.model, input_ids, attention_mask, self.pooling, self.activation)


# ---------------------------------------------------------------------- checkpoint layouts


def _spec_name(name_or_path: str | os.PathLike, directory: Path) -> str:
    """The absolute folder for a local model, the name as given for a Hub model."""
    return str(directory) if Path(name_or_path).expanduser().exists() else str(name_or_path)


def _read_layout(directory: Path) -> _Layout:
    if (directory / MANIFEST).exists():
        return _read_latelex(directory)
    if (directory / "modules.json").exists():
        return _read_sentence_transformers(directory)
    return _Layout(doc_dir=directory)


def _read_latelex(directory: Path) -> _Layout:
    path = directory / MANIFEST
    manifest = read_json(path)
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{path} describes a {manifest.get('format')!r} model, not a latelex SPLADE model")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path} is in format version {version!r}; this latelex reads up to {FORMAT_VERSION}: upgrade latelex"
        )
    if not isinstance(manifest.get("config"), dict):
        raise ModelError(f"{path} has no config object; save the model again")
    config = config_from_dict(SpladeConfig, manifest["config"])
    activation = manifest.get("activation", "relu")
    if activation not in _ACTIVATIONS:
        raise ModelError(f"{path}: unknown activation {activation!r}; expected one of {', '.join(_ACTIVATIONS)}")
    query_dir = None
    if manifest.get("query_encoder"):
        query_dir = _subfolder(directory, str(manifest["query_encoder"]), path)
    return _Layout(directory, query_dir, config, activation, config.pooling)


def _subfolder(root: Path, relative: str, source: Path) -> Path:
    """``root / relative``, refusing paths that leave ``root`` (a model folder must not point elsewhere)."""
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise ModelError(f"{source} points outside its folder ({relative!r}); refusing to load it")
    if not target.is_dir():
        raise ModelError(f"{source} names the folder {relative!r}, which is missing")
    return target


def _read_modules(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            modules = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        raise ModelError(f"{path} should hold a non-empty list of modules")
    return modules


def _short(module_type: str) -> str:
    return str(module_type).rsplit(".", 1)[-1]


def _read_sentence_transformers(directory: Path) -> _Layout:
    modules_path = directory / "modules.json"
    modules = _read_modules(modules_path)
    if len(modules) == 1 and _short(modules[0].get("type", "")) == "Router":
        return _read_router(directory, _subfolder(directory, modules[0].get("path", ""), modules_path))
    steps = [(_short(m.get("type", "")), _subfolder(directory, m.get("path", ""), modules_path)) for m in modules]
    side = _read_pipeline(steps, modules_path, "document")
    return _Layout(side.model_dir, None, side.config(), side.activation, side.pooling)


@dataclass(frozen=True)
class _Side:
    model_dir: Path
    pooling: str
    activation: str
    max_length: int | None

    def config(self, query_length: int | None = None) -> SpladeConfig:
        defaults = SpladeConfig()
        q = query_length if query_length is not None else self.max_length
        return SpladeConfig(
            pooling=self.pooling,
            query_maxlen=q if q is not None and q >= 2 else defaults.query_maxlen,
            doc_maxlen=self.max_length if self.max_length is not None and self.max_length >= 2 else defaults.doc_maxlen,
        )


def _read_pipeline(steps: list[tuple[str, Path]], source: Path, side: str) -> _Side:
    """One route of a sentence-transformers SparseEncoder: an MLM transformer followed by SpladePooling."""
    names = [name for name, _ in steps]
    if names and names[0] == "SparseStaticEmbedding":
        raise ModelError(
            f"{source}: the {side} side is a SparseStaticEmbedding (inference-free SPLADE), which latelex "
            "does not support yet"
        )
    if len(steps) != 2 or not names[0].endswith("Transformer") or names[1] != "SpladePooling":
        raise ModelError(
            f"{source}: the {side} modules are {' -> '.join(names) or 'none'}, not a SPLADE pipeline "
            "(MLMTransformer -> SpladePooling)"
        )
    pooling_config = steps[1][1] / "config.json"
    settings = read_json(pooling_config) if pooling_config.exists() else {}
    pooling = settings.get("pooling_strategy", "max")
    activation = settings.get("activation_function", "relu")
    if pooling not in ("max", "sum") or activation not in _ACTIVATIONS:
        raise ModelError(
            f"{pooling_config}: unsupported SpladePooling (pooling_strategy {pooling!r}, activation_function "
            f"{activation!r}); latelex reads max or sum pooling with relu or log1p_relu"
        )
    st_config = steps[0][1] / "sentence_bert_config.json"
    max_length = read_json(st_config).get("max_seq_length") if st_config.exists() else None
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)):
        raise ModelError(f"{st_config}: max_seq_length should be an integer, not {max_length!r}")
    return _Side(steps[0][1], pooling, activation, max_length)


def _read_router(directory: Path, router_dir: Path) -> _Layout:
    config_path = router_dir / "router_config.json"
    if not config_path.exists():
        config_path = router_dir / "config.json"
    router = read_json(config_path)
    types, structure = router.get("types"), router.get("structure")
    if not isinstance(types, dict) or not isinstance(structure, dict):
        raise ModelError(f"{config_path} lacks the router's 'types' and 'structure'")
    if "query" not in structure or "document" not in structure:
        raise ModelError(
            f"{config_path} routes {', '.join(sorted(map(str, structure))) or 'nothing'}; "
            "a SPLADE router needs a 'query' and a 'document' route"
        )

    def steps(route: str) -> list[tuple[str, Path]]:
        ids = structure[route]
        if not isinstance(ids, list) or any(i not in types for i in ids):
            raise ModelError(f"{config_path}: route {route!r} names modules missing from 'types'")
        return [(_short(types[i]), _subfolder(router_dir, i, config_path)) for i in ids]

    document = _read_pipeline(steps("document"), config_path, "document")
    if structure["query"] == structure["document"]:
        return _Layout(document.model_dir, None, document.config(), document.activation, document.pooling)
    query = _read_pipeline(steps("query"), config_path, "query")
    if (query.pooling, query.activation) != (document.pooling, document.activation):
        raise ModelError(
            f"{config_path}: the query route pools with {query.pooling}/{query.activation} and the document "
            f"route with {document.pooling}/{document.activation}; latelex needs one pooling for both"
        )
    return _Layout(document.model_dir, query.model_dir, document.config(query.max_length), document.activation,
                   document.pooling)


def _load_mlm(directory: Path) -> torch.nn.Module:
    """The ``*ForMaskedLM`` model in ``directory``, with a one-line ModelError when it has no MLM head."""
    try:
        return load_transformer(directory, masked_lm=True)
    except MissingWeightsError:
        config_path = directory / "config.json"
        architectures = read_json(config_path).get("architectures") or [] if config_path.exists() else []
        if any(str(a).endswith(_MLM_ARCHITECTURES) for a in architectures):
            raise
        described = ", ".join(map(str, architectures)) or "no architecture"
        raise ModelError(
            f"{directory} has no masked-language-model head ({described}); "
            "SPLADE needs a checkpoint saved with its MLM head, such as a *ForMaskedLM model"
        ) from None


def _graph_stem(part: str, pooling: str, activation: str, runtime: BackendConfig) -> str:
    """The name of the cached graph of one part ("document" or "query") of a SPLADE encoder (OpenVINO's entries
    apart from onnxruntime's)."""
    from .onnx_backend import stem_tail

    return f"latelex-splade-{part}-{pooling}-{activation}-{stem_tail(runtime)}"


def _output_size(model: torch.nn.Module) -> int:
    getter = getattr(model, "get_output_embeddings", None)  # absent on the stand-in of a graph opened fast
    head = getter() if getter is not None else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _length_limit(model: torch.nn.Module, tokenizer: Any) -> int:
    """The most tokens the model takes: the tokenizer's limit when it states one, else the position table."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 2 <= limit < 1_000_000:
        return limit
    positions = getattr(model.config, "max_position_embeddings", None)
    return int(positions) if isinstance(positions, int) and positions >= 2 else 512


# ---------------------------------------------------------------------- encoding helpers


def _check_texts(texts: Sequence[str], kind: str) -> list[str]:
    noun = kind[:-3] + "y" if kind == "queries" else kind[:-1]
    if isinstance(texts, str):
        raise InputError(f"pass a list of {kind}, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{noun} at position {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"{noun} at position {i} is empty or whitespace; every {noun} needs text")
    return texts


def _tokenize(tokenizer: Any, texts: list[str], limit: int, detect: bool) -> tuple[list[list[int]], int]:
    """Token ids (special tokens included) of ``texts`` cut at ``limit``, and how many needed cutting.

    With ``detect``, texts are first tokenised one token past the limit: those that reach it are longer than
    the limit, and only they are tokenised again at the limit.
    """
    kwargs = dict(truncation=True, padding=False, return_attention_mask=False, return_token_type_ids=False)
    if not detect:
        return list(tokenizer(texts, max_length=limit, **kwargs)["input_ids"]), 0
    with quiet_transformers():
        ids = list(tokenizer(texts, max_length=limit + 1, **kwargs)["input_ids"])
    long = [i for i, row in enumerate(ids) if len(row) > limit]
    if long:
        again = tokenizer([texts[i] for i in long], max_length=limit, **kwargs)["input_ids"]
        for i, row in zip(long, again):
            ids[i] = row
    return ids, len(long)


def _row_groups(token_ids: list[list[int]], vocab: int, budget_bytes: int) -> list[list[int]]:
    """Split a batch into groups of rows whose float32 (rows x length x vocab) logits fit ``budget_bytes``.

    Rows are taken longest first, so each group pads only to its own longest row; a group has at least one row.
    """
    order = sorted(range(len(token_ids)), key=lambda r: -len(token_ids[r]))
    groups, start = [], 0
    while start < len(order):
        length = max(1, len(token_ids[order[start]]))
        rows = max(1, budget_bytes // (length * vocab * 4))
        groups.append(order[start : start + rows])
        start += rows
    return groups


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids (B, L) int64 and attention mask (B, L) int64, L = the longest row."""
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _sparsify(pooled: torch.Tensor, top_k: int | None, threshold: float) -> list[SparseVector]:
    """Sparse vectors of pooled weights (B, V): weights <= ``threshold`` dropped, then the ``top_k`` largest kept."""
    if threshold > 0:
        pooled = pooled.masked_fill(pooled <= threshold, 0.0)
    if top_k is not None and top_k < pooled.shape[1]:
        values, ids = pooled.topk(top_k, dim=1)
        pooled = torch.zeros_like(pooled).scatter_(1, ids, values)
    pooled = pooled.cpu()
    rows, cols = pooled.nonzero(as_tuple=True)  # row-major: ids ascend within each row
    weights = pooled[rows, cols].numpy().astype(np.float32, copy=False)
    cols_np = cols.numpy().astype(np.int32)
    ends = np.cumsum(torch.bincount(rows, minlength=pooled.shape[0]).numpy())
    starts = ends - np.diff(np.concatenate([[0], ends]))
    return [SparseVector(cols_np[a:b], weights[a:b]) for a, b in zip(starts, ends)]


__all__ = ["Splade"]
