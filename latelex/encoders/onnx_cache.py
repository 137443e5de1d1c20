"""Where exported ONNX graphs are kept, and when a kept one may be used again.

A graph is cached as two files in one folder: ``<stem>.onnx`` and ``<stem>.json``, a small sidecar written last
that records the cache key (a SHA-256 over the weights and everything else that shapes the graph), the graph
file's own SHA-256 and size, and the verification against torch that the graph passed when it was exported. An
entry is used only when its sidecar exists, names the same key, records a passed verification and matches the
graph file byte for byte; anything else (stale weights, a truncated or overwritten graph, a missing sidecar) is
reported as a reason and the caller exports again.

An entry may also record its *sources* (:func:`record_sources`): a SHA-256 over the model folder's files it was
exported from (:func:`source_digest`), the library versions, and what the model's tokenizer gave on fixed texts.
A later load that finds the same files and versions (:func:`find_by_sources`) opens the graph without loading
the torch model, and so without importing transformers: the graph depends on nothing else, since the key is a
function of those weights and versions.

The folder (:func:`cache_folder`) is ``<model folder>/onnx`` for a local model folder that is writable, else
``onnx/<model name>-<hash of its path>`` in the user cache (``$LATELEX_CACHE``, ``$XDG_CACHE_HOME/latelex`` or
``~/.cache/latelex``). Built-in models and Hugging Face Hub downloads always use the user cache, so that nothing
is written into an installed package or the Hub's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable

import torch

from ..fsio import atomic_write, file_sha256, user_cache_dir

#: Format of the sidecar files.
SIDECAR_FORMAT = "latelex-onnx"
SIDECAR_VERSION = 1


def cache_folder(model_dir: Path, local: bool, override: str | os.PathLike | None = None) -> Path:
    """The folder for the ONNX graphs of the model in ``model_dir`` (not created here).

    ``override``: a folder the caller chose. ``local``: whether ``model_dir`` is a folder the user named (not a
    built-in model nor a Hub download); such a folder is used when it is writable.
    """
    if override is not None:
        return Path(override).expanduser().resolve()
    if local and _writable(model_dir):
        return model_dir / "onnx"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model_dir.name)[:60] or "model"
    digest = hashlib.sha256(str(model_dir.resolve()).encode("utf-8")).hexdigest()[:12]
    return user_cache_dir() / "onnx" / f"{name}-{digest}"


def _writable(folder: Path) -> bool:
    """Writable by this process, and not marked read-only by its mode (root may write anywhere, but a folder
    without write bits says it is not to be written)."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    target = folder / "onnx"
    if target.is_dir():  # an existing cache folder decides for itself
        try:
            mode = target.stat().st_mode
        except OSError:
            return False
        folder = target
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK | os.X_OK)


def weights_digest(modules: Iterable[tuple[str, torch.nn.Module]]) -> str:
    """Hex SHA-256 over the names, dtypes, shapes and bytes of every parameter and buffer of ``modules``."""
    digest = hashlib.sha256()
    for prefix, module in modules:
        for name, tensor in module.state_dict(keep_vars=False).items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}.{name}|{t.dtype}|{tuple(t.shape)}|".encode("utf-8"))
            if t.numel():
                digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """Hex SHA-256 of ``parts`` (a JSON-ready dict) in canonical form."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def entry_paths(folder: Path, stem: str) -> tuple[Path, Path]:
    """The graph file and the sidecar of the entry ``stem`` in ``folder``."""
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


def check_entry(folder: Path, stem: str, key: str) -> str | None:
    """None when the entry ``stem`` may be used for ``key``; else why not, in a few words (for a log line)."""
    graph, sidecar = entry_paths(folder, stem)
    if not graph.exists() and not sidecar.exists():
        return "not exported yet"
    if not sidecar.exists():
        return "its sidecar is missing"
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its sidecar is unreadable ({exc})"
    if not isinstance(meta, dict) or (meta.get("format"), meta.get("format_version")) != (SIDECAR_FORMAT,
                                                                                          SIDECAR_VERSION):
        return "its sidecar is of another format"
    if meta.get("key") != key:
        return "it was exported from other weights or settings (stale key)"
    if not (meta.get("verification") or {}).get("passed"):
        return "its verification did not pass"
    try:
        size = graph.stat().st_size
    except OSError:
        return "the graph file is missing"
    if size != meta.get("onnx_bytes"):
        return f"the graph file has {size} bytes, not {meta.get('onnx_bytes')} (truncated or replaced)"
    if file_sha256(graph) != meta.get("onnx_sha256"):
        return "the graph file's checksum does not match its sidecar (corrupt or replaced)"
    return None


#: Files at the top of a model folder that :func:`source_digest` leaves out: documentation, other frameworks'
#: weights, other runtimes' graphs, and a training run's own state (optimizer, scheduler, random state).
SKIPPED_SUFFIXES = frozenset({".md", ".h5", ".ot", ".msgpack", ".onnx", ".gguf", ".lock", ".tmp", ".pyc"})
SKIPPED_NAMES = frozenset({"optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json"})


def source_digest(folders: Iterable[Path]) -> str:
    """Hex SHA-256 over the names and bytes of the files of ``folders`` (a model folder and the backbone it refers
    to) that loading the model reads: the files at the top of each folder (less :data:`SKIPPED_SUFFIXES` and
    :data:`SKIPPED_NAMES`), and every file of the module folders a sentence-transformers ``modules.json`` names
    (where PyLate keeps its projection). Other subfolders (a training run's checkpoints, the ONNX cache) are not
    read, so that the digest costs about what reading the weights once does."""
    digest = hashlib.sha256()
    for i, folder in enumerate(dict.fromkeys(Path(f).resolve() for f in folders)):
        for path in sorted(set(_source_files(folder))):
            digest.update(f"{i}/{path.relative_to(folder).as_posix()}|{file_sha256(path)}\n".encode("utf-8"))
    return digest.hexdigest()


def _source_files(folder: Path) -> Iterable[Path]:
    for entry in folder.iterdir():
        if entry.is_file() and entry.suffix.lower() not in SKIPPED_SUFFIXES and entry.name not in SKIPPED_NAMES \
                and not entry.name.startswith(("rng_state", ".")):
            yield entry
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return
    for module in modules if isinstance(modules, list) else []:
        sub = folder / str(module.get("path") or "") if isinstance(module, dict) else folder
        if sub.resolve() != folder and sub.resolve().is_relative_to(folder) and sub.is_dir():
            yield from (path for path in sub.rglob("*") if path.is_file())


def record_sources(folder: Path, stem: str, sources: dict[str, Any]) -> None:
    """Add ``sources`` (``{"digest": ..., "versions": ..., "tokens": ...}``) to a valid entry's sidecar, atomically;
    the caller holds the entry's lock."""
    _, sidecar = entry_paths(folder, stem)
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    if meta.get("sources") == sources:
        return
    meta["sources"] = sources
    with atomic_write(sidecar) as f:
        json.dump(meta, f, indent=2)


def find_by_sources(folder: Path, stem: str, digest: str, versions: dict[str, str]) -> dict[str, Any] | None:
    """The sidecar of entry ``stem`` when it records sources with this ``digest`` and ``versions`` and passes
    :func:`check_entry` under its own key (graph file intact, verification passed); else None."""
    _, sidecar = entry_paths(folder, stem)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    sources = meta.get("sources") if isinstance(meta, dict) else None
    if not isinstance(sources, dict) or sources.get("digest") != digest or sources.get("versions") != versions:
        return None
    if not isinstance(meta.get("key"), str) or check_entry(folder, stem, meta["key"]) is not None:
        return None
    return meta


def read_sidecar(folder: Path, stem: str) -> dict[str, Any]:
    """The sidecar of a valid entry (call :func:`check_entry` first)."""
    return json.loads(entry_paths(folder, stem)[1].read_text(encoding="utf-8"))


def publish_entry(folder: Path, stem: str, built: Path, meta: dict[str, Any]) -> Path:
    """Move the graph file ``built`` (a temporary file in ``folder``) into place and write its sidecar, in that
    order, each atomically; returns the graph's path. ``meta`` gains the format, checksum and size fields."""
    graph, sidecar = entry_paths(folder, stem)
    record = {"format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, **meta,
              "onnx_file": graph.name, "onnx_bytes": built.stat().st_size, "onnx_sha256": file_sha256(built)}
    with open(built, "rb") as f:
        os.fsync(f.fileno())
    sidecar.unlink(missing_ok=True)  # a graph without its sidecar is never used, whatever happens next
    os.replace(built, graph)
    with atomic_write(sidecar) as f:
        json.dump(record, f, indent=2)
    return graph


def discard_entry(folder: Path, stem: str) -> None:
    """Remove an entry's files (a stale or corrupt one), the sidecar first."""
    graph, sidecar = entry_paths(folder, stem)
    sidecar.unlink(missing_ok=True)
    graph.unlink(missing_ok=True)


__all__ = ["cache_folder", "cache_key", "check_entry", "discard_entry", "entry_paths", "find_by_sources",
           "publish_entry", "read_sidecar", "record_sources", "source_digest", "weights_digest"]
