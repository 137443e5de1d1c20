"""The on-disk layout of a sharded index: its ``shards.json``, each shard's ``shard.json``, and who owns a document.

A sharded index is a directory of ordinary retriever directories (:class:`~latelex.search.retriever.Retriever`)::

    shards.json      written last: format and version, build id, kind, encoder spec, number of shards, partition
                     scheme and the shards' directory names (relative)
    shard-000/       an ordinary retriever directory, plus shard.json: build id, shard number, number of shards
    shard-001/
    ...

``shards.json`` marks the sharded index complete (the whole directory is published atomically by
:meth:`~latelex.search.sharded.ShardedRetriever.build`). Each shard's own ``shard.json`` ties it to its build, so
that opening finds a shard directory that is missing, one copied from another build, or one built with another
encoder, and says so in one line.

Ownership: with the ``"hash"`` partition a document belongs to shard ``blake2b-64(UTF-8 id) mod N`` (big-endian;
stable across processes and machines, unlike Python's ``hash``). With a ``"given"`` partition (an explicit
``{id: shard}`` at build time) a document belongs to the shard that holds it, and a new id to its hash shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Mapping

from ..config import same_encoder
from ..errors import FormatError, IndexFormatError, InputError
from ..fsio import atomic_write
from ..index import storage

SHARDS_FILE = "shards.json"
SHARD_FILE = "shard.json"
FORMAT = "latelex-shards"
SHARD_FORMAT = "latelex-shard"
FORMAT_VERSION = 1
HASH = "blake2b-64-be"
SCHEMES = ("hash", "given")


def shard_name(number: int) -> str:
    return f"shard-{number:03d}"


def hash_shard(doc_id: str, shards: int) -> int:
    """The shard a document id hashes to: blake2b (8 bytes) of its UTF-8 bytes, big-endian, modulo ``shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def new_build_id() -> str:
    return secrets.token_hex(8)


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a sharded index (a ``shards.json``), read without opening anything."""
    return (Path(path).expanduser() / SHARDS_FILE).is_file()


def check_shard_count(shards: Any) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InputError(f"shards must be a positive integer (the number of shards), not {shards!r}")
    return shards


def check_partition(partition: Any, shards: int) -> dict[str, int] | None:
    """``None`` for the hash partition, else the given ``{id: shard}`` checked (shard numbers in range)."""
    if isinstance(partition, str):
        if partition != "hash":
            raise InputError(f"partition must be 'hash' or a mapping of document id to shard number, not {partition!r}")
        return None
    if not isinstance(partition, Mapping):
        raise InputError(f"partition must be 'hash' or a mapping of document id to shard number, not "
                         f"{type(partition).__name__}")
    out: dict[str, int] = {}
    for doc_id, number in partition.items():
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < shards:
            raise InputError(f"partition puts {doc_id!r} in shard {number!r}; shard numbers run from 0 to {shards - 1}")
        out[str(doc_id)] = number
    return out


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """A partition file: TSV lines ``id<TAB>shard``, or (``.jsonl``) objects ``{"id": ..., "shard": N}``."""
    from ..data.lines import iter_nonblank

    jsonl = str(path).endswith((".jsonl", ".json"))
    out: dict[str, int] = {}
    for number, line in iter_nonblank(path):
        try:
            if jsonl:
                item = json.loads(line)
                doc_id, shard = item["id"], item["shard"]
            else:
                doc_id, shard = line.rstrip("\n").split("\t")
                shard = int(shard)
        except (ValueError, KeyError, TypeError):
            raise FormatError('expected id<TAB>shard (or {"id": ..., "shard": N} in .jsonl)', path, number) from None
        if not isinstance(doc_id, str) or isinstance(shard, bool) or not isinstance(shard, int):
            raise FormatError("the id must be a string and the shard an integer", path, number)
        if doc_id in out:
            raise FormatError(f"document {doc_id!r} is given a shard twice", path, number)
        out[doc_id] = shard
    if not out:
        raise InputError(f"{path} names no document; give one id<TAB>shard line per document")
    return out


def write_shard_marker(directory: Path, build_id: str, number: int, shards: int) -> None:
    with atomic_write(directory / SHARD_FILE) as f:
        json.dump({"format": SHARD_FORMAT, "format_version": FORMAT_VERSION, "build_id": build_id, "number": number,
                   "shards": shards}, f, indent=2)


def write_shards_manifest(directory: Path, *, build_id: str, kind: str, encoder: dict | None, shards: int,
                          scheme: str, engine_config: dict | None, store_text: bool) -> dict[str, Any]:
    from .. import __version__

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "latelex_version": __version__,
        "build_id": build_id,
        "kind": kind,
        "encoder": encoder,
        "engine_config": engine_config,
        "store_text": store_text,
        "shards": shards,
        "partition": {"scheme": scheme, "hash": HASH},
        "shard_dirs": [shard_name(n) for n in range(shards)],
    }
    with atomic_write(directory / SHARDS_FILE) as f:
        json.dump(manifest, f, indent=2)
    return manifest


def read_shards_manifest(path: Path) -> dict[str, Any]:
    """``shards.json`` of ``path``, after checking its format, version and fields."""
    file = path / SHARDS_FILE
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not a directory; pass the folder a sharded index was built into")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path} has no {SHARDS_FILE}: it is not a sharded index or its build did not "
                               f"finish; rebuild it (latelex index DIR --shards N)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexFormatError(f"{file} is unreadable ({exc}); rebuild the sharded index") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{file} is not a latelex shard manifest; rebuild the sharded index")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(f"{file} has format version {version!r}, newer than this latelex reads "
                               f"({FORMAT_VERSION}); upgrade latelex")
    try:
        count = check_shard_count(manifest["shards"])
        dirs = manifest["shard_dirs"]
        scheme = manifest["partition"]["scheme"]
        ok = (isinstance(dirs, list) and len(dirs) == count and scheme in SCHEMES
              and isinstance(manifest["build_id"], str) and isinstance(manifest["kind"], str))
    except (KeyError, TypeError, InputError):
        ok = False
    if not ok:
        raise IndexFormatError(f"{file} lacks or garbles its shards, shard_dirs, partition, build_id or kind; rebuild "
                               f"the sharded index")
    return manifest


def check_shards(path: Path, manifest: dict[str, Any]) -> list[Path]:
    """The shard directories of the sharded index at ``path``, each checked: present, of this build (its
    ``shard.json``), a complete retriever of the manifest's kind built with the manifest's encoder."""
    from .retriever import FORMAT_VERSION as RETRIEVER_VERSION

    count = manifest["shards"]
    again = f"rebuild the sharded index (latelex index {path} --shards {count} --overwrite)"
    out = []
    for number, relative in enumerate(manifest["shard_dirs"]):
        directory = storage.inside(path, relative)
        if not directory.is_dir():
            raise IndexFormatError(f"shard {number} of {path} is missing ({directory} is not there); restore that "
                                   f"shard's directory or {again}")
        try:
            marker = json.loads((directory / SHARD_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            marker = None
        if not isinstance(marker, dict) or marker.get("format") != SHARD_FORMAT:
            raise IndexFormatError(f"{directory} has no readable {SHARD_FILE}: it is not a shard of {path}; restore "
                                   f"that shard's directory or {again}")
        if marker.get("build_id") != manifest["build_id"] or marker.get("number") != number \
                or marker.get("shards") != count:
            raise IndexFormatError(f"{directory} is shard {marker.get('number')} of another sharded build "
                                   f"({marker.get('build_id')}, not {manifest['build_id']}); put back shard "
                                   f"{number} of this build or {again}")
        shard = storage.read_manifest(directory, ("retriever",), RETRIEVER_VERSION)
        kind = (shard.get("index") or {}).get("kind") if isinstance(shard.get("index"), dict) else None
        if kind != manifest["kind"]:
            raise IndexFormatError(f"{directory} is a {kind} index, but {path} is a sharded {manifest['kind']} index; "
                                   f"{again}")
        if not same_encoder(shard.get("encoder"), manifest.get("encoder")):
            theirs, ours = (shard.get("encoder") or {}).get("model"), (manifest.get("encoder") or {}).get("model")
            raise IndexFormatError(f"{directory} was built with another encoder ({theirs}) than {path} records "
                                   f"({ours}); shards must share one encoder, {again}")
        out.append(directory)
    return out


def describe(path: Path, manifest: dict[str, Any], infos: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``latelex info`` prints of a sharded index: totals over the shards' ``infos`` (their Retrievers'
    ``info()``, kept whole in ``shard_info``)."""
    out: dict[str, Any] = {
        "path": str(path),
        "latelex_version": manifest.get("latelex_version"),
        "kind": manifest["kind"],
        "sharded": True,
        "shards": manifest["shards"],
        "partition": manifest["partition"]["scheme"],
        "build_id": manifest["build_id"],
        "documents": sum(int(i.get("documents") or 0) for i in infos),
        "shard_documents": [i.get("documents") for i in infos],
        "segments": sum(int(i.get("segments") or 0) for i in infos),
        "tombstones": sum(int(i.get("tombstones") or 0) for i in infos),
    }
    if any(i.get("passages") is not None for i in infos):
        out["passages"] = sum(int(i.get("passages") or 0) for i in infos)
    if infos and infos[0].get("collection"):  # bm25: the collection statistics every shard scores with
        out["collection"] = infos[0]["collection"]
    fields: dict[str, Any] = {}
    for i in infos:
        fields.update(i.get("metadata_fields") or {})
    out["metadata_fields"] = fields
    out["encoder"] = manifest.get("encoder")
    out["bytes_on_disk_with_texts"] = sum(int(i.get("bytes_on_disk_with_texts") or 0) for i in infos)
    out["shard_info"] = infos
    return out
