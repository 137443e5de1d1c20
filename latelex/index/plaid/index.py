"""PlaidIndex: ColBERTv2 residual compression plus PLAID search, with incremental adds and deletes.

On disk, one directory (see :mod:`.build` for how it is made):

* ``centroids.npy`` (C, dim) float16, ``bucket_cutoffs.npy`` (dim, 2^nbits - 1) and ``bucket_weights.npy``
  (dim, 2^nbits) float32: the codec;
* per chunk ``chunk-NNNNN.*``: ``codes`` (t,) uint16/int32 centroid ids, ``residuals`` (t, dim * nbits / 8)
  uint8, ``doclens`` (n,) int32, ``ivf_docs`` / ``ivf_offsets`` (C + 1,) the chunk's inverted lists (centroid
  -> chunk-local document positions), ``ids_bytes`` / ``ids_offsets`` the document ids;
* ``deleted-G.npy`` (D,) int64, the positions of deleted documents, when there are any;
* ``manifest.json``: kind ``"plaid"``, format version, dim, nbits, config, encoder spec, the chunk list,
  counts and a checksum per array.

An add writes new chunk files, then replaces the manifest atomically; a delete writes a new deletion list,
then replaces the manifest. Until the manifest is replaced the old one names only old, untouched files, so a
crash at any point leaves a readable index (files no manifest names are removed by the next update).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ...config import config_from_dict
from ...errors import ConfigError, IndexFormatError, InputError
from ...types import Hit
from ..commit import commit_manifest, locked_change, remove_unnamed, retry_open
from ..storage import MANIFEST, LazyChecks, decode_strings, load_array, read_manifest, verify_index
from ..token_vectors import DescribedIndex, check_new_ids, check_same_encoder, positive_int, subset_positions
from . import build as _build
from .codec import ResidualCodec
from .config import SEARCH_PRESETS, PlaidConfig, colbert_n_centroids, search_settings
from .cpu_paths import U8S8_LEVELS, centroid_path, to_u8
from .search import SearchData, byte_weight_table, exact_float16, quantize_rows, search_one

KIND = _build.KIND
FORMAT_VERSION = _build.FORMAT_VERSION
_OWN_FILE = re.compile(r"^(chunk-\d{5}\.[a-z_]+\.npy|deleted-\d+\.npy|manifest\.json\.tmp)$")


class PlaidIndex(DescribedIndex):
    """Compressed late-interaction index searched with PLAID. Build with :meth:`build`, reopen with :meth:`open`."""

    def __init__(self, path: Path, manifest: dict[str, Any], codec: ResidualCodec, data: SearchData, doc_ids: list[str],
                 deleted: np.ndarray):
        self._path = path
        self._manifest = manifest
        self._codec = codec
        self._data = data
        self._stored_ids = doc_ids
        self._deleted = deleted
        self._positions: dict[str, int] | None = None
        self._data_by_path: dict[tuple[str, int], SearchData] = {}  # ``data`` with 8-bit centroids, by path and levels

    # --- building and opening ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        doc_ids: Sequence[str],
        embeddings: Iterable[torch.Tensor | np.ndarray],
        *,
        config: PlaidConfig | None = None,
        encoder: dict | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
        map_chunks: Any = None,
    ) -> "PlaidIndex":
        """Build a PLAID index of ``embeddings`` (one (L_i, dim) matrix per document, in ``doc_ids`` order) at ``path``.

        ``embeddings`` may be a sequence (read in place, never held whole in memory) or any iterable (spilled to
        float16 chunk files first, so a generator is consumed once). ``encoder``: a JSON description of the model
        that made the vectors, stored in the manifest. The build is staged beside ``path`` and published
        atomically; if it dies, calling ``build`` again with the same ids, config and encoder resumes it.
        ``map_chunks``: how the chunks are compressed (:data:`~latelex.index.plaid.build.ChunkMapper`; default here,
        one after the other; a Ray build passes its cluster's), the index being the same either way.
        """
        config = config or PlaidConfig()
        if not isinstance(config, PlaidConfig):
            raise InputError(f"config must be a PlaidConfig, not {type(config).__name__}")
        final = Path(path).expanduser().resolve()
        _build.build_index(final, doc_ids, embeddings, config=config, encoder=encoder, overwrite=overwrite,
                           show_progress=show_progress, map_chunks=map_chunks)
        return cls.open(final)

    @classmethod
    @retry_open
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "PlaidIndex":
        """Open the index at ``path`` (residuals memory-mapped); ``verify`` also checks every array's checksum."""
        directory = Path(path).expanduser().resolve()
        manifest = read_manifest(directory, (KIND,), FORMAT_VERSION)

        def broken(what: str) -> IndexFormatError:
            return IndexFormatError(f"{directory}: {what}; rebuild the index")

        try:
            dim = int(manifest["dim"])
            nbits = int(manifest["nbits"])
            chunks = list(manifest["chunks"])
            config_from_dict(PlaidConfig, manifest["config"])
            if not isinstance(manifest["arrays"], dict):
                raise TypeError
        except (KeyError, TypeError, ValueError, ConfigError):
            raise broken("the manifest lacks or garbles its dim, nbits, config, arrays or chunk list") from None
        if verify:
            verify_index(directory, manifest)

        lazy = LazyChecks()  # each chunk's residuals are checked on the first search that decompresses them

        def load(name: str, mmap: bool = False) -> np.ndarray:
            return load_array(directory, manifest, name, mmap=mmap, lazy=lazy)

        centroids = np.asarray(load("centroids"), dtype=np.float32)
        cutoffs = np.asarray(load("bucket_cutoffs"))
        weights = np.asarray(load("bucket_weights"))
        levels = 1 << nbits
        if centroids.ndim != 2 or centroids.shape[1] != dim or cutoffs.shape != (dim, levels - 1) or weights.shape != (dim, levels):
            raise broken("the codec arrays do not match the manifest's dim and nbits")
        unit_norm = manifest.get("unit_norm", False)  # format 1 indexes decode without rescaling
        if not isinstance(unit_norm, bool):
            raise broken("the manifest's unit_norm is not true or false")
        codec = ResidualCodec(centroids, cutoffs, weights, nbits, unit_norm=unit_norm)
        n_centroids = centroids.shape[0]
        width = dim * nbits // 8

        codes_parts, doclens_parts, ivf_docs_parts, ivf_offsets_parts, residuals, ids = [], [], [], [], [], []
        scales_parts = []
        first = 0
        for chunk in chunks:
            name = chunk["name"]
            codes = load(f"{name}.codes")
            res = load(f"{name}.residuals", mmap=True)
            doclens = load(f"{name}.doclens")
            ivf_docs = load(f"{name}.ivf_docs")
            ivf_offsets = load(f"{name}.ivf_offsets")
            blob = load(f"{name}.ids_bytes")
            id_offsets = load(f"{name}.ids_offsets")
            n = doclens.shape[0]
            if (codes.ndim != 1 or res.shape != (codes.shape[0], width) or int(doclens.sum()) != codes.shape[0]
                    or (doclens < 1).any() or id_offsets.shape != (n + 1,) or ivf_offsets.shape != (n_centroids + 1,)
                    or int(ivf_offsets[-1]) != ivf_docs.shape[0] or n != chunk.get("documents")):
                raise broken(f"chunk {name} is inconsistent")
            if unit_norm:
                scales = load(f"{name}.scales")
                if scales.shape != codes.shape or scales.dtype != np.uint8:
                    raise broken(f"chunk {name} has scale bytes that do not match its token vectors")
                scales_parts.append(scales)
            if codes.size and (int(codes.max()) >= n_centroids or int(codes.min()) < 0):
                raise broken(f"chunk {name} refers to centroids that do not exist")
            if int(chunk.get("first_document", -1)) != first:
                raise broken(f"chunk {name} does not start where the previous one ends")
            if (np.diff(ivf_offsets) < 0).any() or (ivf_docs.size and (int(ivf_docs.max()) >= n
                                                               or int(ivf_docs.min()) < 0)):
                raise broken(f"chunk {name} has inverted lists that point outside it")
            try:
                ids.extend(decode_strings(blob, id_offsets))
            except (UnicodeDecodeError, IndexError):
                raise broken(f"chunk {name} has unreadable document ids") from None
            codes_parts.append(codes.astype(np.int32))
            doclens_parts.append(doclens.astype(np.int64))
            ivf_docs_parts.append(ivf_docs.astype(np.int32) + first)  # chunk-local -> global positions
            ivf_offsets_parts.append(ivf_offsets)
            residuals.append(np.asarray(res))  # a plain ndarray view of the memory map, for the kernels
            first += n

        doclens = np.concatenate(doclens_parts) if doclens_parts else np.zeros(0, np.int64)
        doc_offsets = np.zeros(doclens.shape[0] + 1, dtype=np.int64)
        np.cumsum(doclens, out=doc_offsets[1:])
        part_starts = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum([p.shape[0] for p in codes_parts], out=part_starts[1:])
        ivf_offsets, ivf_docs = _merge_inverted_lists(ivf_offsets_parts, ivf_docs_parts, n_centroids)

        deleted = np.zeros(0, dtype=np.int64)
        if manifest.get("deleted"):
            deleted = np.asarray(load(manifest["deleted"]), dtype=np.int64)
            if deleted.size and (deleted.min() < 0 or deleted.max() >= doclens.shape[0]):
                raise broken("the deletion list points outside the index")
        data = SearchData(
            centroids=torch.from_numpy(centroids),
            codes=np.concatenate(codes_parts) if codes_parts else np.zeros(0, np.int32),
            doc_offsets=doc_offsets,
            ivf_offsets=ivf_offsets,
            ivf_docs=ivf_docs,
            residual_parts=residuals,
            part_starts=part_starts,
            byte_weights=(table := byte_weight_table(weights, nbits)),
            byte_weights_t=torch.from_numpy(table),
            part_first_doc=np.asarray([int(c["first_document"]) for c in chunks], dtype=np.int64),
            centroids_np=centroids,
            scales=np.concatenate(scales_parts) if scales_parts else np.zeros(0, np.uint8),
            centroid_scales=np.ones(n_centroids, dtype=np.float32),
            centroid_norm=float(np.linalg.norm(centroids, axis=1).max()) if n_centroids else 1.0,
            check_part=_residual_check(lazy, [f"{c['name']}.residuals" for c in chunks]),
        )
        return cls(directory, manifest, codec, data, ids, deleted)

    # --- searching -----------------------------------------------------------------------------------

    def search(
        self,
        queries: Sequence[torch.Tensor | np.ndarray],
        k: int = 10,
        subset: Sequence[str] | None = None,
        *,
        settings: str = "auto",
        ncells: int | None = None,
        centroid_score_threshold: float | None = None,
        ndocs: int | None = None,
        threads: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best documents for each query, best first, scored by exact MaxSim over decompressed vectors.

        ``queries``: one (Lq_i, dim) matrix per query. ``subset``: only these document ids may be returned (an
        unknown id is an error; a subset no larger than ``ndocs`` is scored in full instead of through the
        inverted lists). ``threads``: queries searched in parallel (default: all cores); each query runs on one
        thread.

        ``settings`` names the preset that ``ncells``, ``centroid_score_threshold`` and ``ndocs`` default to
        (:func:`~.config.search_settings`): ``"auto"`` (default) adapts them to the index, probing more cells per
        query token on small collections and widening until the candidate set reaches ``ndocs`` documents;
        ``"colbert"`` is ColBERT's choice by ``k`` alone (:func:`~.config.default_search_settings`), tuned for
        large collections. An explicit ``ncells``, ``centroid_score_threshold`` or ``ndocs`` overrides the
        preset's value (an explicit ``ncells`` also stops "auto" from probing more cells). Whatever the settings, every query gets min(``k``, live documents allowed) hits: when the
        probed cells yield fewer candidates, more cells are probed, and at the end every allowed document is.
        """
        k = positive_int(k, "k")
        if settings not in SEARCH_PRESETS:
            raise InputError(f"settings must be one of {', '.join(map(repr, SEARCH_PRESETS))}, not {settings!r}")
        if ncells is not None:
            ncells = positive_int(ncells, "ncells")
        if ndocs is not None:
            ndocs = positive_int(ndocs, "ndocs")
        threshold = centroid_score_threshold
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating))
                                      or np.isnan(threshold)):
            raise InputError(f"centroid_score_threshold must be a number, not {threshold!r}")
        if threads is not None:
            threads = positive_int(threads, "threads")
        if isinstance(queries, (torch.Tensor, np.ndarray)):
            raise InputError("queries must be a sequence of (tokens, dim) matrices, one per query, not one tensor")
        matrices = [self._query_matrix(q, i) for i, q in enumerate(queries)]
        if threads is None:  # asked only with several queries (os.cpu_count reads a file: 50 us)
            threads = (os.cpu_count() or 1) if len(matrices) > 1 else 1
        if len(self) == 0:  # every document deleted: no hits, as every other kind answers
            return [[] for _ in matrices]
        allowed = np.ones(len(self._stored_ids), dtype=np.bool_)
        allowed[self._deleted] = False
        if subset is not None:
            positions = self._subset_positions(subset)
            allowed[:] = False
            allowed[positions] = True
            allowed[self._deleted] = False
        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return [[] for _ in matrices]
        chosen = search_settings(settings, k, ncells=ncells, ndocs=ndocs, centroid_score_threshold=threshold)
        ncells = min(chosen.ncells, self._codec.n_centroids)
        need = min(k, n_allowed)  # never fewer hits than this
        # Score every allowed document (through the centroid-interaction stages) when the inverted lists could not
        # narrow them: a subset no larger than ndocs, or no more documents than the preset wants as candidates.
        small = n_allowed <= max(need, chosen.min_candidates) or (subset is not None and n_allowed <= chosen.ndocs)
        direct = np.flatnonzero(allowed) if small else None
        data = self._search_data()

        def run(Q: torch.Tensor) -> list[Hit]:
            docs, scores = search_one(data, Q, k, ncells, float(chosen.centroid_score_threshold), chosen.ndocs,
                                      allowed, direct, need, chosen.min_candidates, chosen.max_ncells)
            return [Hit(self._stored_ids[d], float(s)) for d, s in zip(docs.tolist(), scores.tolist())]

        if threads == 1 or len(matrices) <= 1:
            return [run(Q) for Q in matrices]
        with ThreadPoolExecutor(max_workers=min(threads, len(matrices))) as pool:
            return list(pool.map(run, matrices))

    def _search_data(self) -> SearchData:
        """What searches read: the float32 centroids, or with them 8-bit row-quantised ones where
        :func:`~.cpu_paths.centroid_path` picks an integer product (measured at the first search in a process)."""
        centroids = self._data.centroids_np
        decision = centroid_path(centroids.shape[0], centroids.shape[1])
        if decision.path == "float32":
            return self._data
        key = (decision.path, decision.levels)
        made = self._data_by_path.get(key)
        if made is None:  # made once per path (a benchmark may switch between them)
            # The exact stage gathers float32 rows of a quarter of the centroids on these paths: from float16 ones,
            # where that is exact, half the bytes (about 5 % of a search on SciFact: scripts/plaid_f16_rows_ab.py).
            made_before = next(iter(self._data_by_path.values()), None)  # another path's copy serves this one too
            half = made_before.centroids_f16 if made_before is not None else exact_float16(centroids)
            u8s8 = decision.path == "u8s8"
            codes, scales = quantize_rows(centroids, U8S8_LEVELS if u8s8 else decision.levels)
            codes = torch.from_numpy(codes)
            eight_bit = ({"centroids_u8": to_u8(codes)} if u8s8
                         else {"centroids_i8": codes, "int8_levels": decision.levels})
            made = dataclasses.replace(self._data, centroid_scales=scales, centroids_f16=half, **eight_bit)
            self._data_by_path[key] = made
        return made

    def _query_matrix(self, query: Any, i: int) -> torch.Tensor:
        if isinstance(query, torch.Tensor):
            query = query.detach().cpu().float().numpy()
        if not isinstance(query, np.ndarray) or query.ndim != 2:
            raise InputError(f"query {i} must be a (tokens, dim) tensor or array")
        if query.shape[1] != self.dim:
            raise InputError(f"query {i} has vectors of dimension {query.shape[1]}, but the index has dimension {self.dim}")
        if query.shape[0] == 0:
            raise InputError(f"query {i} has no token vectors")
        matrix = np.array(query, dtype=np.float32)  # a copy: the caller may change its array during the search
        if not np.isfinite(matrix).all():  # numpy's check costs a fifth of torch's on a query's few rows
            raise InputError(f"query {i} has NaN or infinite values")
        return torch.from_numpy(matrix)

    def _live_positions(self) -> dict[str, int]:
        if self._positions is None:
            dead = set(self._deleted.tolist())
            self._positions = {d: i for i, d in enumerate(self._stored_ids) if i not in dead}
        return self._positions

    def _subset_positions(self, subset: Sequence[str]) -> np.ndarray:
        return subset_positions(subset, self._live_positions())

    # --- vectors -------------------------------------------------------------------------------------

    def decompressed(self, doc_id: str) -> np.ndarray:
        """(L, dim) float32: the vectors of ``doc_id`` as the index reconstructs them."""
        p = self._live_positions().get(doc_id)
        if p is None:
            raise InputError(f"no document {doc_id!r} in {self._path}")
        from .search import gather_vectors

        vectors, _ = gather_vectors(self._data, np.array([p], dtype=np.int64))
        return vectors

    @property
    def codec(self) -> ResidualCodec:
        return self._codec

    # --- updates -------------------------------------------------------------------------------------

    @locked_change
    def add(self, doc_ids: Sequence[str], embeddings: Iterable[torch.Tensor | np.ndarray], *, encoder: dict | None = None) -> None:
        """Compress and append documents with the index's centroids; visible to this object's searches at once.

        ``embeddings``: one (L_i, dim) matrix per id. ``encoder``: the spec of the encoder that made them, which must
        equal the manifest's (required when the manifest records one). The manifest is replaced atomically once
        every new chunk is on disk.
        """
        check_same_encoder(self.encoder, encoder, self._path)
        ids = check_new_ids(doc_ids, set(self._live_positions()))
        if not ids:
            return
        mats = []
        for i, value in enumerate(embeddings):
            if i >= len(ids):
                raise InputError(f"more embeddings than document ids ({len(ids)}); give one matrix per document")
            mats.append(_build.as_vectors(value, f"the embedding of document {ids[i]!r}", self.dim))
        if len(mats) != len(ids):
            raise InputError(f"{len(ids)} document ids but {len(mats)} embeddings; give one matrix per document")
        self._clean_orphans()
        manifest = self.manifest
        chunks = list(manifest["chunks"])
        arrays = dict(manifest["arrays"])
        try:
            number = 1 + max(int(c["name"].split("-")[1]) for c in chunks)
        except (KeyError, IndexError, TypeError, ValueError):
            raise IndexFormatError(f"{self._path}: the manifest's chunk names are garbled; rebuild the index") from None
        first = len(self._stored_ids)
        cs = int(manifest["config"]["chunk_size"])
        for a in range(0, len(ids), cs):
            part = mats[a : a + cs]
            doclens = np.array([m.shape[0] for m in part], dtype=np.int64)
            chunk_arrays = _build.compress_chunk(self._codec, np.concatenate(part), doclens)
            name = _build.chunk_name(number)
            arrays.update(_build.write_chunk(self._path, name, chunk_arrays, ids[a : a + cs]))
            chunks.append({"name": name, "documents": len(part), "token_vectors": int(doclens.sum()),
                           "first_document": first + a, "mse": float(chunk_arrays["_mse"]), "added": True})
            number += 1
        self._commit(manifest, arrays, chunks, manifest.get("deleted"), self._deleted)

    @locked_change
    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents from search results (their space is reclaimed by :meth:`rebuild`)."""
        if isinstance(doc_ids, str):
            raise InputError("doc_ids must be a sequence of document ids, not one string")
        live = self._live_positions()
        unknown = [d for d in doc_ids if d not in live]
        if unknown:
            raise InputError(f"cannot delete {unknown[0]!r}: it is not in the index")
        positions = [live[d] for d in doc_ids]
        if not positions:
            return
        self._clean_orphans()
        deleted = np.union1d(self._deleted, np.asarray(positions, dtype=np.int64))
        manifest = self.manifest
        arrays = dict(manifest["arrays"])
        if manifest.get("deleted"):
            arrays.pop(manifest["deleted"], None)
        name = f"deleted-{int(manifest.get('generation', 0)) + 1}"
        arrays[name] = _build.save_durable(self._path, name, deleted)
        self._commit(manifest, arrays, manifest["chunks"], name, deleted)

    def _commit(self, manifest: dict, arrays: dict, chunks: list, deleted_name: str | None, deleted: np.ndarray) -> None:
        stored_tokens = np.diff(self._data.doc_offsets) if deleted.size else None
        deleted_tokens = int(stored_tokens[deleted].sum()) if stored_tokens is not None else 0
        if deleted.size and stored_tokens is not None and deleted.max() >= stored_tokens.shape[0]:  # pragma: no cover
            raise InputError("internal error: deletion beyond the stored documents")
        config = config_from_dict(PlaidConfig, manifest["config"])
        fields = _build.manifest_fields(
            dim=self.dim, config=config, encoder=self.encoder, codec=self._codec, codec_stats=manifest.get("codec", {}),
            chunks=chunks, deleted=deleted_name, n_deleted=int(deleted.size), deleted_tokens=deleted_tokens,
            generation=int(manifest.get("generation", 0)) + 1)
        commit_manifest(self._path, KIND, FORMAT_VERSION, arrays, **fields)
        self._clean_orphans()
        fresh = type(self).open(self._path)
        self.__dict__.update(fresh.__dict__)

    def _clean_orphans(self) -> None:
        """Remove files of an update that crashed before its manifest was written (or that it replaced)."""
        manifest = json.loads((self._path / MANIFEST).read_text(encoding="utf-8"))
        remove_unnamed(self._path, manifest, _OWN_FILE)

    def rebuild(self, embeddings: Iterable[torch.Tensor | np.ndarray] | None = None, *, config: PlaidConfig | None = None,
                show_progress: bool | None = None) -> "PlaidIndex":
        """Retrain the centroids and rewrite the index in place (deleted documents are dropped).

        For a collection that has drifted from the vectors its centroids were trained on (see ``info()["drift"]``).
        ``embeddings``: fresh vectors of the live documents in :attr:`doc_ids` order (best); without them the
        index's own decompressed vectors are used, which adds their quantisation error once more.
        ``config`` defaults to the index's. Published atomically; returns the new index (this object is updated too).
        """
        ids = self.doc_ids
        if not ids:
            raise InputError(f"{self._path} holds no documents; build a new index instead of rebuilding")
        config = config or config_from_dict(PlaidConfig, self._manifest["config"])
        source = embeddings if embeddings is not None else _Decompressed(self)
        _build.build_index(self._path, ids, source, config=config, encoder=self.encoder, overwrite=True,
                           show_progress=show_progress)
        fresh = type(self).open(self._path)
        self.__dict__.update(fresh.__dict__)
        return self

    # --- description ---------------------------------------------------------------------------------

    @property
    def doc_ids(self) -> list[str]:
        """The live document ids in index order (a copy)."""
        if not self._deleted.size:
            return list(self._stored_ids)
        return list(self._live_positions())

    def __len__(self) -> int:
        return len(self._stored_ids) - int(self._deleted.size)

    @property
    def similarity(self) -> str:
        return "cosine"

    def info(self) -> dict[str, Any]:
        """Kind, counts, bytes per token vector (every file of the directory counted), encoder and configuration.

        ``drift``: mean squared reconstruction error of the chunks added after the build, over that of the build's
        chunks (1.0 = like the original data; well above 1, say 1.5, suggests :meth:`rebuild`).
        ``fresh_n_centroids``: the centroids a fresh build of the live vectors would train (ColBERTv2's sizing,
        or the configured count). Above ``n_centroids``, the collection has outgrown its codec: every vector is
        quantised more coarsely than a fresh build would (on SciFact, half built and half added recovers 0.885 of
        the exact top 10 against a fresh build's 0.917), and a rebuild (``Retriever.compact()``) restores it.
        ``centroid_scores``: ``"int8"``, ``"u8s8"`` or ``"float32"``, the product the candidate stage scores centroids
        with on this CPU (:mod:`.cpu_paths`), with ``centroid_scores_reason``; None (and the reason says so) until the
        first search measures it, when no earlier process on this machine cached the decision. Never measures.
        """
        total = sum(f.stat().st_size for f in self._path.iterdir() if f.is_file())
        counts = self._manifest["counts"]
        stored = int(counts["stored_token_vectors"])
        chunks = self._manifest["chunks"]
        def mean_mse(group: list[dict]) -> float:
            tokens = sum(c["token_vectors"] for c in group)
            return sum(c["mse"] * c["token_vectors"] for c in group) / tokens if tokens else 0.0

        built = [c for c in chunks if not c.get("added")]
        added = [c for c in chunks if c.get("added")]
        base = mean_mse(built)
        drift = mean_mse(added) / base if added and base > 0 else 1.0
        n_centroids = int(self._manifest["n_centroids"])
        decision = centroid_path(n_centroids, self.dim, measure=False)
        return {
            "kind": KIND,
            "path": str(self._path),
            "documents": len(self),
            "token_vectors": int(counts["token_vectors"]),
            "deleted_documents": int(counts["deleted_documents"]),
            "stored_token_vectors": stored,
            "dim": self.dim,
            "similarity": "cosine",
            "nbits": int(self._manifest["nbits"]),
            "n_centroids": n_centroids,
            "chunks": len(chunks),
            "bytes_on_disk": total,
            "bytes_per_token_vector": total / stored if stored else 0.0,
            "encoder": self.encoder,
            "config": dict(self._manifest["config"]),
            "drift": drift,
            "fresh_n_centroids": (self._manifest["config"].get("n_centroids")
                                  or colbert_n_centroids(int(counts["token_vectors"]))),
            "centroid_scores": decision.path if decision else None,
            "centroid_scores_reason": (decision.reason if decision else
                                       "decided at first search (int8 and float32 products timed on this CPU)"),
        }

    def __repr__(self) -> str:
        return (f"PlaidIndex({str(self._path)!r}, documents={len(self)}, dim={self.dim}, "
                f"nbits={self._manifest['nbits']}, centroids={self._manifest['n_centroids']})")


class _Decompressed:
    """The live documents of an index as a random-access sequence of decompressed (L, dim) matrices."""

    def __init__(self, index: PlaidIndex):
        live = index._live_positions()
        self._index = index
        self._positions = np.fromiter(live.values(), dtype=np.int64, count=len(live))

    def __len__(self) -> int:
        return int(self._positions.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        from .search import gather_vectors

        vectors, _ = gather_vectors(self._index._data, self._positions[i : i + 1])
        return vectors


def _residual_check(lazy: LazyChecks, names: list[str]) -> Callable[[int], None]:
    """``check(c)``: verify chunk ``c``'s residuals against their checksum, once, before they are first read."""

    def check(c: int) -> None:
        lazy.ensure(names[c])

    return check


def _merge_inverted_lists(offsets_parts: list[np.ndarray], docs_parts: list[np.ndarray], n_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """One CSR inverted list from per-chunk ones; documents stay ascending within each centroid."""
    if len(offsets_parts) == 1:
        return np.asarray(offsets_parts[0], dtype=np.int64), docs_parts[0]
    counts = sum(np.diff(o) for o in offsets_parts)
    offsets = np.zeros(n_centroids + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    keys = np.concatenate([np.repeat(np.arange(n_centroids, dtype=np.int32), np.diff(o)) for o in offsets_parts])
    docs = np.concatenate(docs_parts)
    order = np.argsort(keys, kind="stable")  # chunks are in document order, so docs stay ascending
    return offsets, docs[order].astype(np.int32)
