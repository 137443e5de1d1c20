"""The ColBERT encoder: one small L2-normalised vector per token, for late interaction (MaxSim).

Queries get a marker token after [CLS] and, with query augmentation, are padded with [MASK] up to
``query_maxlen`` so that those positions produce vectors too; documents get their own marker and lose
punctuation tokens (the skiplist). A bias-free linear layer projects the backbone's hidden states to ``dim``.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..config import BackendConfig, ColBERTConfig, config_from_dict, config_replace, config_to_dict
from ..errors import ConfigError, InputError, ModelError
from ..fsio import staged_folder
from ..models import builtin_name, recorded_name
from .batching import BatchCallback, batch_progress, batches_by_length
from .colbert_checkpoints import ADAPTERS_FILE, LATELEX_FORMAT, LATELEX_FORMAT_VERSION, LATELEX_MANIFEST, read_checkpoint
from .loading import load_tokenizer, load_transformer, pick_device, quiet_transformers, resolve_model_dir
from .rust_tokenizer import token_check

if TYPE_CHECKING:
    from .lora import LoRAConfig

logger = logging.getLogger(__name__)


class ColBERT:
    """A ColBERT late-interaction encoder over any transformers backbone (BERT, DistilBERT, MiniLM, RoBERTa, XLM-R,
    ModernBERT, ...).

    Build it with :meth:`from_pretrained` (a trained ColBERT checkpoint or a plain encoder) or
    :meth:`from_backbone` (a new projection head on any backbone). The constructor only stores fields.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        tokenizer: Any,
        projection: torch.nn.Linear | None,
        config: ColBERTConfig,
        *,
        source: str,
        checkpoint_format: str,
        device: torch.device,
        projection_init: dict[str, Any] | None = None,
        runtime: BackendConfig | None = None,
    ) -> None:
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.projection = projection
        self.config = config
        self.source = source
        self.checkpoint_format = checkpoint_format
        self.device = device
        self.projection_init = projection_init
        self.runtime = runtime or BackendConfig()
        self.lora: Any = None
        self._graph: Any = None  # the OnnxGraph that replaces the torch forward pass (backend "onnx")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        config: ColBERTConfig | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        onnx_dir: str | os.PathLike | None = None,
        **overrides: Any,
    ) -> "ColBERT":
        """Load a ColBERT checkpoint (latelex, Stanford or PyLate format) or a plain transformers encoder.

        Settings come from the checkpoint (lengths, markers, similarity, query augmentation); ``config``
        replaces them wholesale and ``overrides`` (ColBERTConfig field names) replace single ones. A plain
        encoder has no projection: its vectors are the normalised hidden states, ``dim`` = hidden size.

        ``backend="onnx"`` runs the backbone and projection as an ONNX graph with onnxruntime (exported, verified
        against torch and cached on first use; see :mod:`latelex.encoders.onnx_backend`), on the CPU unless
        ``device`` names a GPU that onnxruntime can use; ``quantize="int8"`` quantises its weights. ``onnx_dir``:
        where to cache the graph (default: ``onnx/`` in a writable local model folder, else the user cache).
        """
        runtime = _runtime(backend, quantize)
        model_dir = resolve_model_dir(name_or_path, revision=revision)
        checkpoint = read_checkpoint(model_dir)
        if config is None:
            config = config_from_dict(ColBERTConfig, {**config_to_dict(ColBERTConfig()), **checkpoint.settings})
        config = config_replace(config, **overrides)
        stored_dim = None if checkpoint.projection is None else int(checkpoint.projection.shape[0])
        if config.dim != stored_dim:
            if stored_dim is None:
                raise ConfigError(
                    f"{name_or_path} has no projection layer, so dim must be None; use ColBERT.from_backbone(..., dim={config.dim}) "
                    "to add a new projection"
                )
            raise ConfigError(f"{name_or_path} projects to dim {stored_dim}, not {config.dim}")
        local = Path(name_or_path).expanduser().exists()
        source = str(model_dir) if local else builtin_name(str(name_or_path))
        digest = None
        if runtime.engine:
            from .onnx_cache import source_digest

            digest = source_digest([model_dir, checkpoint.backbone_dir])  # once: to find the graph, or to record it
            cached = cls._from_recorded_graph(checkpoint, config, model_dir, local, source, runtime, device, onnx_dir,
                                              digest)
            if cached is not None:
                return cached
        backbone = load_transformer(checkpoint.backbone_dir)
        tokenizer = load_tokenizer(checkpoint.backbone_dir)
        if checkpoint.adapters is not None:
            from .lora import merge_into

            merge_into(backbone, checkpoint.adapters, _lora_config(checkpoint.lora, model_dir))
        projection = None
        if checkpoint.projection is not None:
            hidden = backbone.config.hidden_size
            if checkpoint.projection.shape[1] != hidden:
                raise ModelError(
                    f"{model_dir}: the projection expects width {checkpoint.projection.shape[1]} but the backbone has {hidden}"
                )
            projection = torch.nn.Linear(hidden, stored_dim, bias=False)
            with torch.no_grad():
                projection.weight.copy_(checkpoint.projection)
        model = cls(backbone, tokenizer, projection, config, source=source, checkpoint_format=checkpoint.format,
                    device=torch.device("cpu") if runtime.engine else pick_device(device), runtime=runtime)
        model._check_tokens()
        if runtime.engine:
            return model._use_onnx(model_dir, local, device, onnx_dir, source_digest=digest)
        return model.to(model.device)

    @classmethod
    def _from_recorded_graph(cls, checkpoint: Any, config: ColBERTConfig, model_dir: Path, local: bool, source: str,
                             runtime: BackendConfig, device: Any, onnx_dir: Any, digest: str) -> "ColBERT | None":
        """The encoder over a cached graph whose sidecar records that it was exported from these very model files
        (``digest``, their :func:`~.onnx_cache.source_digest`; :func:`~.onnx_cache.find_by_sources`), built without loading the torch model or importing transformers;
        None when there is none, or when the tokenizer read without transformers does not reproduce the one
        recorded with the graph (:mod:`.rust_tokenizer`). The caller then loads the model in full."""
        from .onnx_backend import GraphBackbone, graph_device, open_by_sources
        from .onnx_cache import cache_folder
        from .rust_tokenizer import RustTokenizer

        tokenizer = RustTokenizer.load(checkpoint.backbone_dir)
        if tokenizer is None:
            return None
        found = open_by_sources(cache_folder(model_dir, local, onnx_dir), _graph_stem(None, runtime),
                                digest, "token_vectors", graph_device(device, runtime.engine), runtime.engine,
                                runtime.quantize)
        if found is None:
            return None
        graph, meta = found
        if not tokenizer.matches(meta["sources"].get("tokens") or {}):
            return None
        shape = meta["sources"].get("backbone")
        if not isinstance(shape, dict):
            return None
        backbone = GraphBackbone(shape)
        projection = None
        if checkpoint.projection is not None:
            out_dim, width = (int(x) for x in checkpoint.projection.shape)
            projection = torch.nn.Linear(width, out_dim, bias=False, device="meta")
        model = cls(backbone, tokenizer, projection, config, source=source, checkpoint_format=checkpoint.format,
                    device=torch.device("cpu"), runtime=runtime)
        model._check_tokens()
        model._graph = graph
        return model

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike,
        *,
        dim: int = 128,
        seed: int = 0,
        config: ColBERTConfig | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        onnx_dir: str | os.PathLike | None = None,
        **overrides: Any,
    ) -> "ColBERT":
        """A new ColBERT head on any transformers encoder: a bias-free projection to ``dim``, initialised from ``seed``.

        This is the starting point for training, and a fixed random projection for engine tests. ``backend``,
        ``quantize`` and ``onnx_dir`` are as for :meth:`from_pretrained`.
        """
        runtime = _runtime(backend, quantize)
        model_dir = resolve_model_dir(name_or_path, revision=revision)
        config = config_replace(config or ColBERTConfig(), dim=dim, **overrides)
        backbone = load_transformer(model_dir)
        tokenizer = load_tokenizer(model_dir)
        generator = torch.Generator().manual_seed(seed)
        projection = torch.nn.Linear(backbone.config.hidden_size, dim, bias=False)
        with torch.no_grad():
            bound = 1.0 / backbone.config.hidden_size**0.5
            projection.weight.copy_(torch.empty_like(projection.weight).uniform_(-bound, bound, generator=generator))
        local = Path(name_or_path).expanduser().exists()
        source = str(model_dir) if local else builtin_name(str(name_or_path))
        model = cls(backbone, tokenizer, projection, config, source=source, checkpoint_format="new",
                    device=torch.device("cpu") if runtime.engine else pick_device(device),
                    projection_init={"init": "uniform", "seed": seed}, runtime=runtime)
        model._check_tokens()
        if runtime.engine:
            return model._use_onnx(model_dir, local, device, onnx_dir)
        return model.to(model.device)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: str | torch.device | None = None) -> "ColBERT":
        """Rebuild the encoder described by :meth:`spec` (as stored in an index manifest), on the backend it
        records (torch when it records none)."""
        if spec.get("family") != "colbert":
            raise ModelError(f"encoder spec is for {spec.get('family')!r}, not ColBERT")
        config = config_from_dict(ColBERTConfig, spec["config"])
        runtime = BackendConfig.from_spec(spec)
        options = dict(config=config, device=device, backend=runtime.backend, quantize=runtime.quantize)
        init = spec.get("projection_init")
        model = recorded_name(str(spec["model"]))  # an unversioned built-in name in an older manifest
        if init is not None:
            return cls.from_backbone(model, dim=config.dim or 128, seed=int(init["seed"]), **options)
        return cls.from_pretrained(model, **options)

    def spec(self) -> dict[str, Any]:
        """A JSON-ready description that :meth:`from_spec` turns back into this encoder. The onnx backend adds
        ``backend`` and ``quantize``, which indexes record but do not count when they compare encoders."""
        out: dict[str, Any] = {"family": "colbert", "model": self.source, "config": config_to_dict(self.config)}
        if self.projection_init is not None:
            out["projection_init"] = dict(self.projection_init)
        from .onnx_backend import spec_fields

        out.update(spec_fields(self.runtime))
        return out

    @property
    def backend(self) -> str:
        """``"torch"`` or ``"onnx"``: what runs the forward pass."""
        return self.runtime.backend

    @property
    def quantize(self) -> str | None:
        """``"int8"`` for an int8-quantised ONNX graph, else None."""
        return self.runtime.quantize

    def to(self, device: str | torch.device) -> "ColBERT":
        """Move the model to ``device`` (returns self). An onnx-backed encoder stays where it was loaded."""
        if self._graph is not None:
            if torch.device(device) == self.device:
                return self
            raise ModelError(f"an encoder on the onnx backend stays where it was loaded; load it again with "
                             f"device={str(device)!r}")
        self.device = torch.device(device)
        self.backbone.to(self.device)
        if self.projection is not None:
            self.projection.to(self.device)
        return self

    def _check_tokens(self) -> None:
        for name in ("query_marker", "doc_marker"):
            marker = getattr(self.config, name)
            if marker is not None and self._token_id(marker) is None:
                raise ModelError(
                    f"{name} {marker!r} is not a token of this model's vocabulary; pass {name}=None or a token it has"
                )
        if self.config.query_augmentation and self.tokenizer.mask_token_id is None:
            raise ModelError("query augmentation needs a [MASK] token and this tokenizer has none; pass query_augmentation=False")

    def _token_id(self, token: str) -> int | None:
        ident = self.tokenizer.convert_tokens_to_ids(token)
        if ident is None or (ident == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            return None
        return int(ident)

    @property
    def dim(self) -> int:
        """Width of the output vectors: the projection's ``dim``, or the backbone's hidden size without one."""
        return self.config.dim if self.config.dim is not None else int(self.backbone.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.backbone.config, "max_position_embeddings", 512))

    @property
    def document_token_budget(self) -> int:
        """How many content tokens of a document the encoder keeps: ``min(doc_maxlen, max_positions)`` less the
        [D] marker and the tokenizer's own special tokens ([CLS], [SEP]); later tokens are truncated."""
        content, _ = self._limits(query=False)
        return content - int(self.tokenizer.num_special_tokens_to_add(pair=False))

    def __repr__(self) -> str:
        c = self.config
        head = f"dim={self.dim}" if self.projection is not None else f"dim={self.dim} (no projection: normalised token vectors at the backbone's width)"
        return (
            f"ColBERT(model={self.source!r}, format={self.checkpoint_format}, {head}, query_maxlen={c.query_maxlen}, "
            f"doc_maxlen={c.doc_maxlen}, markers=({c.query_marker!r}, {c.doc_marker!r}), "
            f"query_augmentation={c.query_augmentation}, attend_to_mask_tokens={c.attend_to_mask_tokens}, "
            f"similarity={c.similarity}, skiplist={len(c.skiplist)} tokens{self._backend_repr()})"
        )

    def _backend_repr(self) -> str:
        if self.backend == "torch":
            return ""
        return f", backend={self.backend!r}" + (f", quantize={self.quantize!r}" if self.quantize else "")

    # ------------------------------------------------------------------ onnx backend

    def _use_onnx(self, model_dir: Path, local: bool, device: Any, onnx_dir: Any,
                  source_digest: str | None = None) -> "ColBERT":
        """Run the forward pass as a (cached, verified) ONNX graph from now on, and free the torch weights.
        ``source_digest``: that of the files the weights were read from; the graph's sidecar then records it, so
        that the next load finds the graph without loading the torch model (:meth:`_from_recorded_graph`)."""
        from .onnx_backend import GraphRequest, graph_device, load_graph, release_weights, source_record
        from .onnx_cache import cache_folder, weights_digest

        where = graph_device(device, self.runtime.engine)
        self.backbone.float()
        modules = [("backbone", self.backbone)]
        if self.projection is not None:
            self.projection.float()
            modules.append(("projection", self.projection))
        example = self._collate(self._token_ids(["late interaction", "a longer example text, to pad"], query=False),
                                query=False)
        stem = _graph_stem(self.projection_init, self.runtime)
        parts = {"family": "colbert", "weights": weights_digest(modules), "inputs": list(example),
                 "backbone_config": self.backbone.config.to_json_string(use_diff=False),
                 "projection": None if self.projection is None else list(self.projection.weight.shape)}
        sources = None
        if source_digest is not None:
            limits = {self._limits(query=True)[0], self._limits(query=False)[0], 8, 32, 128, 512}
            shape = {"hidden_size": int(self.backbone.config.hidden_size), "max_position_embeddings": self.max_positions}
            sources = source_record(source_digest, token_check(self.tokenizer, sorted(limits)), shape)
        request = GraphRequest(_TokenVectors(self.backbone, self.projection), example, "token_vectors",
                               cache_folder(model_dir, local, onnx_dir), stem, parts, self.source, sources,
                               calibration=self._calibration_batches)
        self._graph = load_graph(request, self.quantize, where, self._verify_onnx, self.runtime.engine)
        release_weights(self.backbone, self.projection)
        return self

    def _calibration_batches(self) -> list[dict[str, torch.Tensor]]:
        """Feeds of fixed documents and queries, padded as encoding pads them, to calibrate static int8 on."""
        from .static_int8 import calibration_batches

        return calibration_batches(self._token_ids, self._collate)

    def _verify_onnx(self, graph: Any):
        """Compare ``graph``'s final token vectors (normalised, masked) with torch's on the verification texts,
        in batches of 3 (so that batches of several lengths and a batch of one are run)."""
        from .onnx_backend import VERIFICATION_DOCUMENTS, VERIFICATION_QUERIES, compare

        def encode() -> list[torch.Tensor]:
            return (self._encode(VERIFICATION_QUERIES, query=True, batch_size=3, show_progress=False)
                    + self._encode(VERIFICATION_DOCUMENTS, query=False, batch_size=3, show_progress=False))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation notices about the fixed texts
            reference = encode()
            self._graph = graph
            try:
                candidate = encode()
            finally:
                self._graph = None
        return compare(reference, candidate, self.quantize, self.runtime.engine)

    # ------------------------------------------------------------------ adapters

    def add_lora(self, lora: "LoRAConfig | None" = None, *, seed: int = 0) -> list[str]:
        """Add low-rank adapters to the backbone for training and freeze its other weights (the projection stays
        trainable). Returns the adapted layer names. Save the result whole with :meth:`save`, or only the
        adapters and projection with ``save(path, base=...)``."""
        from .lora import LoRAConfig, add_lora

        if self._graph is not None:
            _refuse_on_onnx("take adapters")
        lora = lora or LoRAConfig()
        names = add_lora(self.backbone, lora, seed=seed)
        self.lora = lora
        return names

    # ------------------------------------------------------------------ saving

    def save(self, path: str | os.PathLike, overwrite: bool = False, *, base: dict[str, Any] | None = None) -> Path:
        """Save in latelex's format (safetensors + ``latelex_model.json``), atomically; returns the folder.

        Without ``base`` the folder is self-contained (adapters, if any, folded into the backbone weights). With
        ``base``, a reference to the unchanged backbone (``{"package": ..., "folder": ..., "requirement": ...}``,
        ``{"path": ...}`` or ``{"name": ...}``, plus ``"sha256"`` of its model.safetensors), only the adapters (if any)
        and the projection are written: the folder is a few MB and loads on top of that backbone.
        """
        import json

        from safetensors.torch import save_file

        from .lora import adapter_state_dict, has_lora, merged_state_dict

        if self._graph is not None:
            _refuse_on_onnx("be saved")
        final = Path(path).expanduser().resolve()
        if final.exists() and not overwrite:
            raise ModelError(f"{final} already exists; pass overwrite=True or choose another folder")
        adapted = has_lora(self.backbone)
        if base is not None and not adapted and self.projection is None:
            raise ModelError("a model with neither adapters nor a projection is its backbone; save it without base=")
        if base is not None and adapted and self.lora is None:
            raise ModelError("the adapters were not added with ColBERT.add_lora, so their settings are unknown; use add_lora")
        manifest: dict[str, Any] = {"format": LATELEX_FORMAT, "format_version": LATELEX_FORMAT_VERSION,
                                    "config": config_to_dict(self.config)}
        with staged_folder(final, "saving") as tmp:
            if base is None:
                with quiet_transformers():
                    state = merged_state_dict(self.backbone) if adapted else None
                    self.backbone.save_pretrained(str(tmp), state_dict=state)
                    self.tokenizer.save_pretrained(str(tmp))
            else:
                manifest["backbone"] = dict(base)
                if adapted:
                    lora = self.lora
                    save_file(adapter_state_dict(self.backbone), str(tmp / ADAPTERS_FILE))
                    manifest["lora"] = {"rank": lora.rank, "alpha": lora.alpha, "targets": list(lora.targets)}
            if self.projection is not None:
                save_file({"weight": self.projection.weight.detach().cpu().contiguous()}, str(tmp / "projection.safetensors"))
            (tmp / LATELEX_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return final

    # ------------------------------------------------------------------ tokenisation

    def _content_length(self, maxlen: int, marker: str | None) -> int:
        return maxlen - (1 if marker is not None else 0)

    def tokenize_queries(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of queries: ``[CLS] marker tokens [SEP] [MASK]...`` of shape (B, query_maxlen)
        with query augmentation, else padded to the longest query."""
        return self._collate(self._token_ids(texts, query=True), query=True)

    def tokenize_documents(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of documents: ``[CLS] marker tokens [SEP]``, (B, L <= doc_maxlen)."""
        return self._collate(self._token_ids(texts, query=False), query=False)

    def _limits(self, query: bool) -> tuple[int, str | None]:
        c = self.config
        maxlen, marker = (c.query_maxlen, c.query_marker) if query else (c.doc_maxlen, c.doc_marker)
        return self._content_length(min(maxlen, self.max_positions), marker), marker

    def _token_ids(self, texts: Sequence[str], query: bool) -> list[list[int]]:
        """Token ids of each text with the tokenizer's special tokens, truncated to leave room for the marker."""
        content, _ = self._limits(query)
        return self.tokenizer(list(texts), truncation=True, max_length=content, add_special_tokens=True)["input_ids"]

    def _collate(self, rows: Sequence[Sequence[int]], query: bool) -> dict[str, torch.Tensor]:
        """Pad token-id rows into a batch and insert the marker; queries with augmentation are padded with [MASK]
        to ``query_maxlen`` (attended to only with ``attend_to_mask_tokens``)."""
        content, marker = self._limits(query)
        augment = query and self.config.query_augmentation
        width = content if augment else max(len(r) for r in rows)
        pad_id = self.tokenizer.mask_token_id if augment else self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, : len(row)] = 1
        if augment and self.config.attend_to_mask_tokens:
            attention.fill_(1)
        if marker is not None:
            at = 1 if self._starts_with_special(ids) else 0
            ids = _insert_column(ids, at, self._token_id(marker))
            attention = _insert_column(attention, at, 1)
        out = {"input_ids": ids, "attention_mask": attention}
        if "token_type_ids" in self._forward_args():
            out["token_type_ids"] = torch.zeros_like(ids)
        return out

    def _starts_with_special(self, ids: torch.Tensor) -> bool:
        starts = {t for t in (self.tokenizer.cls_token_id, self.tokenizer.bos_token_id) if t is not None}
        return ids.shape[1] > 0 and bool(torch.isin(ids[:, 0], torch.tensor(sorted(starts) or [-1])).all())

    def _skiplist_ids(self) -> torch.Tensor:
        cached = getattr(self, "_skip_ids", None)
        if cached is None:
            ids = set()
            for word in self.config.skiplist:
                ident = self._token_id(word)
                if ident is not None:
                    ids.add(ident)
                pieces = self.tokenizer(word, add_special_tokens=False)["input_ids"]
                if len(pieces) == 1:
                    ids.add(int(pieces[0]))
            cached = torch.tensor(sorted(ids), dtype=torch.long)
            self._skip_ids = cached
        return cached

    # ------------------------------------------------------------------ encoding

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> list[torch.Tensor]:
        """Encode queries: one float32 (Lq_i, dim) matrix per query on the CPU.

        With query augmentation Lq_i = query_maxlen for every query (mask positions included); without it,
        the query's own tokens. A query longer than ``query_maxlen`` tokens is truncated with one warning per call.
        """
        check_texts(texts, "query")
        return self._encode(texts, query=True, batch_size=batch_size, show_progress=show_progress)

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        show_progress: bool | None = None,
        on_batch: BatchCallback | None = None,
    ) -> list[torch.Tensor]:
        """Encode documents: one float32 (Ld_i, dim) matrix per document on the CPU, with no padding rows and
        without skiplist (punctuation) tokens; documents are truncated to :attr:`document_token_budget` tokens.

        ``on_batch``: called after each batch with the number of texts it held (for a caller's own progress bar;
        with a hook the encoder draws no bar of its own unless ``show_progress=True``).
        """
        check_texts(texts, "document")
        return self._encode(texts, query=False, batch_size=batch_size, show_progress=show_progress, on_batch=on_batch)

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, dim) normalised (per config) token vectors of a tokenised batch, with gradients if enabled (on
        the torch backend; the onnx backend computes the same vectors without gradients)."""
        if self._graph is not None:
            hidden = self._graph.run(batch)
        else:
            kwargs = {k: v.to(self.device) for k, v in batch.items() if k in self._forward_args()}
            hidden = _project(self.backbone, self.projection, kwargs)
        if self.config.normalize:
            hidden = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)
        return hidden

    def query_keep_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, Lq) bool: positions whose vectors represent a query (all of them with query augmentation)."""
        if self.config.query_augmentation:
            return torch.ones_like(batch["input_ids"], dtype=torch.bool)
        return batch["attention_mask"].bool()

    def document_keep_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, Ld) bool: non-padding positions whose token is not in the skiplist."""
        keep = batch["attention_mask"].bool()
        skip = self._skiplist_ids()
        if skip.numel():
            keep &= ~torch.isin(batch["input_ids"], skip)
        return keep

    def _forward_args(self) -> set[str]:
        if self._graph is not None:  # the graph's inputs (the backbone may be a GraphBackbone without forward)
            return set(self._graph.inputs)
        cached = getattr(self, "_fwd_args", None)
        if cached is None:
            cached = set(inspect.signature(self.backbone.forward).parameters)
            self._fwd_args = cached
        return cached

    def _encode(self, texts: Sequence[str], *, query: bool, batch_size: int, show_progress: bool | None,
                on_batch: BatchCallback | None = None) -> list[torch.Tensor]:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, not {batch_size}")
        rows = self._token_ids(texts, query=query)
        if query:
            self._warn_truncated_queries(texts, rows)
        out: list[torch.Tensor | None] = [None] * len(texts)
        self.backbone.eval()
        autocast = self._autocast()
        desc = "Encoding queries" if query else "Encoding documents"
        with torch.inference_mode(), batch_progress(len(texts), desc, show_progress, on_batch) as advance:
            for idx in batches_by_length([len(r) for r in rows], batch_size):
                batch = self._collate([rows[i] for i in idx], query=query)
                with autocast:
                    vectors = self.forward_tokens(batch).float().cpu()
                keep = self.query_keep_mask(batch) if query else self.document_keep_mask(batch)
                for row, i in enumerate(idx):
                    out[int(i)] = vectors[row][keep[row]].clone()
                advance(len(idx))
        return out  # type: ignore[return-value]

    def _warn_truncated_queries(self, texts: Sequence[str], rows: list[list[int]]) -> None:
        content, _ = self._limits(query=True)
        full = [r for r in rows if len(r) >= content]
        if not full:
            return
        longer = self.tokenizer([texts[i] for i, r in enumerate(rows) if len(r) >= content], truncation=True,
                                max_length=content + 1, add_special_tokens=True)["input_ids"]
        too_long = sum(1 for r in longer if len(r) > content)
        if too_long:
            warnings.warn(
                f"{too_long} of {len(texts)} queries are longer than query_maxlen={self.config.query_maxlen} tokens "
                "and were truncated; raise query_maxlen to keep them whole",
                stacklevel=3,
            )

    def _autocast(self):
        import contextlib

        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


class _TokenVectors(torch.nn.Module):
    """The torch forward pass that the ONNX graph replaces: token ids (B, L) to unnormalised vectors (B, L, dim)."""

    def __init__(self, backbone: torch.nn.Module, projection: torch.nn.Linear | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return _project(self.backbone, self.projection, kwargs)


def _project(backbone: torch.nn.Module, projection: torch.nn.Linear | None,
             kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Backbone hidden states (B, L, hidden), projected to (B, L, dim) when there is a projection."""
    hidden = backbone(**kwargs).last_hidden_state
    if projection is not None:
        hidden = projection(hidden.to(projection.weight.dtype))
    return hidden


def _graph_stem(projection_init: dict[str, Any] | None, runtime: BackendConfig) -> str:
    """The name of a ColBERT graph's cache entry: a new projection's seed, the quantisation and the engine (OpenVINO
    entries apart from onnxruntime's) tell them apart."""
    from .onnx_backend import stem_tail

    seed = "" if projection_init is None else f"-seed{int(projection_init['seed'])}"
    return f"latelex-colbert{seed}-{stem_tail(runtime)}"


def _runtime(backend: str, quantize: str | None) -> BackendConfig:
    """The checked backend settings; for onnx, also that onnxruntime is installed (before any model is loaded)."""
    runtime = BackendConfig(backend, quantize)
    if runtime.engine:
        from .onnx_backend import require_engine

        require_engine(runtime.engine)
    return runtime


def _refuse_on_onnx(what: str) -> None:
    raise ModelError(f"this encoder runs on the onnx backend and holds no torch weights, so it cannot {what}; load it "
                     f"with backend='torch' for that")


def _lora_config(settings: dict[str, Any] | None, model_dir: Path):
    from .lora import LoRAConfig

    try:
        return LoRAConfig(**(settings or {}))
    except (TypeError, ConfigError) as exc:
        raise ModelError(f"{model_dir}/{LATELEX_MANIFEST}: bad 'lora' settings ({exc})") from None


def _insert_column(matrix: torch.Tensor, at: int, value: int) -> torch.Tensor:
    column = torch.full((matrix.shape[0], 1), value, dtype=matrix.dtype)
    return torch.cat([matrix[:, :at], column, matrix[:, at:]], dim=1)


def check_texts(texts: Sequence[str], what: str) -> None:
    """The check a ColBERT encoder makes of its input: a list (not a string) of non-empty texts; ``what`` is
    ``"query"`` or ``"document"`` (it names the text in the one-line error)."""
    if isinstance(texts, str):
        raise InputError(f"pass a list of {what} texts, not a single string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what} {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            plural = "queries" if what == "query" else f"{what}s"
            raise InputError(f"{what} {i} is empty; remove empty {plural} or give them text")
