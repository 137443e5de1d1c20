"""Which product PLAID's candidate stage scores centroids with on this CPU: int8, u8s8 or float32, by measurement.

``torch._int_mm`` is several times faster than a float32 ``torch.mm`` on CPUs with AVX-512 VNNI, and several
times *slower* on others that torch's capability string cannot tell apart (an AVX2-only AMD EPYC Zen 3 took 25 ms
for the int8 product of 16,384 x 128 centroids by a 16-token query against 1.3 ms in float32). On such CPUs
torch does not hand ``torch._int_mm`` to oneDNN, but oneDNN's own int8 matmul (``torch.ops.onednn.qlinear_pointwise``,
which torch's x86 quantisation runs on) has AVX2 kernels: the *u8s8* path (:func:`u8s8_product`) feeds it the
centroids as unsigned 8-bit values (+-:data:`U8S8_LEVELS` offset by :data:`U8_ZERO`) and the query tokens as signed
ones (+-:data:`FULL_LEVELS`), a range whose pairwise 16-bit sums cannot saturate (2 x 127 x 127 < 32,767). On an
AMD EPYC with AVX-512 VNNI, one thread, 16,384 x 128 centroids by 32 query tokens: int8 0.36 ms, u8s8 0.39 ms,
float32 2.3 ms; with oneDNN capped to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, the kernel an AVX2-only CPU runs:
``gemm:jit`` in oneDNN's verbose log, as under ``qemu-x86_64 -cpu Haswell``) u8s8 0.8 ms against float32 2.0 to
2.5 ms. So the path is chosen by a short micro-benchmark at the first search (:func:`centroid_path`): the
products of (rows, dim) centroids by :data:`QUERY_ROWS` query tokens on each kernel that works exactly here,
warmed up, best of a few repeats (under 100 ms), at torch's current thread count. The faster integer kernel
must be :data:`MARGIN` times faster than float32 to be chosen.

Integer products are used only where they are exact (:func:`int8_levels`, :func:`u8s8_problem`): oneDNN's int8
kernels for CPUs without VNNI (AVX2, and AVX-512 without VNNI) add pairs of 8-bit products in 16 bits with
saturation (for signed times signed, one operand shifted by 128), so ``torch._int_mm`` of full-range int8 values
comes out wrong there: errors up to 2,048,192 on extreme values, and up to 76,766 on random ones, measured under
``ONEDNN_MAX_CPU_ISA=AVX2`` on an AMD EPYC. Values within +-63 cannot saturate them (2 x 191 x 63 < 32,767), so
such a configuration quantises centroids and queries to +-63. Those kernels were reached only with
``ONEDNN_MAX_CPU_ISA`` capping a VNNI CPU: under QEMU emulating an AVX2-only CPU (``qemu-x86_64 -cpu Haswell``),
``torch._int_mm`` did not call oneDNN (its verbose log stayed empty) and was exact over the full range, as torch's
own loop, which is slow there (the 25 ms above); the u8s8 product ran oneDNN's ``gemm:jit`` and was exact.

Decisions are cached in the process (by shape bucket and thread count: the caps below are read once, when
torch starts) and in ``cpu-paths.json`` in the user's cache directory (:func:`cache_dir`), keyed also by CPU
model, the CPU flags that matter, the instruction-set caps set in the environment (:data:`ISA_CAPS`), torch's
and latelex's versions; a corrupt or unwritable cache file is ignored (the path is measured again). The
environment variable ``LATELEX_PLAID_CENTROIDS=int8|u8s8|float32|auto`` (default auto) forces a path.

Nothing here runs on import.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ...errors import ConfigError

#: The environment variable that forces a path, and its values.
ENV_VAR = "LATELEX_PLAID_CENTROIDS"
#: The paths: ``torch._int_mm`` of signed 8-bit centroids and queries, oneDNN's matmul of unsigned 8-bit centroids
#: and signed queries (:func:`u8s8_product`), and float32 ``torch.mm``.
PATHS = ("int8", "u8s8", "float32")
CHOICES = PATHS + ("auto",)

#: How many times faster an integer product must be to be chosen. It also costs a query quantisation and the
#: float32 rows of the centroids the exact stage reads (about a quarter of them on SciFact with the built-in
#: model: 3,862 of 16,384 at the median, scripts/plaid_stage_profile.py), which a kernel only a little faster than
#: float32 would not pay back.
MARGIN = 1.2

#: Centroid rows measured: the index's count rounded up to a power of two, at most MAX_ROWS (on an AVX-512 VNNI
#: EPYC, one thread, int8 was 4.1x faster at 8,192 rows and 4.3-4.8x at 16,384: the ratio, which decides, has
#: settled). Below MIN_ROWS the product takes tens of microseconds either way and float32 is used unmeasured.
MAX_ROWS = 8192
MIN_ROWS = 1024

#: Query tokens in the measured product (ColBERT's query length).
QUERY_ROWS = 32

#: Timing: WARMUP untimed calls of each product (more while under WARMUP_S seconds: the first calls at a new
#: thread count start the thread pool), then up to REPEATS timed rounds of every product, stopping once BUDGET_S
#: seconds have gone on them and MIN_REPEATS are done (or, on a machine so busy that a round takes tens of
#: milliseconds, LIMIT_S after the start); the best of each is kept. About 30 ms where the products take a
#: millisecond, 70 ms where int8 is as slow as on AVX2-only EPYCs (13 ms at 8192 rows), at most LIMIT_S plus
#: one round.
WARMUP = 2
WARMUP_S = 0.005
REPEATS = 20
MIN_REPEATS = 3
BUDGET_S = 0.02
LIMIT_S = 0.07

CACHE_FILE = "cpu-paths.json"
_CACHE_FORMAT = 3  # 2: int8 decisions record their levels; 3: u8s8 measured too (older files: measured again)
_MAX_ENTRIES = 256

#: CPU flags (x86 /proc/cpuinfo "flags", Arm "Features") that decide int8 product speed.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


#: The magnitudes int8 values may take (:func:`int8_levels`): the full range where ``torch._int_mm`` is exact over
#: it, else a range whose pairwise 16-bit sums cannot saturate.
FULL_LEVELS = 127
SAFE_LEVELS = 63

#: Why int8 is not used where ``torch._int_mm`` is wrong even within +-SAFE_LEVELS.
INEXACT = f"torch._int_mm is inexact on this CPU even within +-{SAFE_LEVELS}"

#: The u8s8 product's centroids: row-quantised to +-U8S8_LEVELS and stored as unsigned bytes offset by U8_ZERO
#: (1 to 127), so that oneDNN's AVX2 kernels, which add pairs of unsigned-by-signed products in 16 bits with
#: saturation, stay exact against full-range signed queries (2 x 127 x 127 < 32,767).
U8S8_LEVELS = 63
U8_ZERO = 64


@dataclass(frozen=True)
class CentroidPath:
    """The product PLAID scores centroids with: ``path`` (one of :data:`PATHS`), why (``reason``, one line), the
    measured best times in milliseconds (None for a product not measured), and for int8 the largest magnitude
    centroids and queries are quantised to (``levels``: :data:`FULL_LEVELS` or :data:`SAFE_LEVELS`; u8s8 always
    quantises centroids to +-:data:`U8S8_LEVELS` and queries to +-:data:`FULL_LEVELS`)."""

    path: str
    reason: str
    int8_ms: float | None = None
    float32_ms: float | None = None
    levels: int = FULL_LEVELS
    u8s8_ms: float | None = None


_lock = threading.Lock()
_decisions: dict[tuple[int, int, int], CentroidPath] = {}


def override() -> str:
    """``LATELEX_PLAID_CENTROIDS`` lower-cased (``"auto"`` when unset or empty); ConfigError for another value."""
    from ...config import env_choice

    return env_choice(ENV_VAR, CHOICES)


def cache_dir() -> Path:
    """``$LATELEX_CACHE``, else ``$XDG_CACHE_HOME/latelex``, else ``~/.cache/latelex`` (not created here)."""
    from ...fsio import user_cache_dir

    return user_cache_dir()


@lru_cache(maxsize=1)
def cpu_identity() -> tuple[str, tuple[str, ...]]:
    """``(model name, relevant flags present)`` from /proc/cpuinfo (the platform's processor name elsewhere)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return model, tuple(f for f in RELEVANT_FLAGS if f in flags)


#: Environment variables that cap the instruction sets torch's kernels use, below what the CPU has: ATen's own
#: kernels (``ATEN_CPU_CAPABILITY``) and oneDNN's, which ``torch._int_mm`` runs on (``ONEDNN_MAX_CPU_ISA``, and its
#: older name ``DNNL_MAX_CPU_ISA``). With ``ONEDNN_MAX_CPU_ISA=AVX2`` an AVX-512 VNNI CPU runs oneDNN's AVX2 int8
#: kernels: on an AMD EPYC, one thread, 16,384 x 128 centroids by 32 query tokens took 0.77 ms against 0.36 ms
#: uncapped (float32: 2.25 ms), and the transposed product (query by centroids, 16 tokens) 7.3 ms against 0.3 ms,
#: so decisions are kept per cap. ``FBGEMM_ENABLE_INSTRUCTIONS`` caps FBGEMM, which runs the exact stage's
#: ``embedding_bag``; ``NUMBA_CPU_NAME`` is the instruction set numba compiles the search kernels for.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS",
            "NUMBA_CPU_NAME")


def isa_caps() -> str:
    """The instruction-set caps in force, as ``NAME=value`` pairs (empty when none is set); torch's capability
    string is named too whenever a cap is set."""
    caps = [f"{name}={os.environ[name].strip()}" for name in ISA_CAPS if os.environ.get(name, "").strip()]
    if caps:
        caps.append(f"torch capability {torch.backends.cpu.get_cpu_capability()}")
    return ", ".join(caps)


def u8s8_product(centroids_u8: torch.Tensor, q8: torch.Tensor) -> torch.Tensor:
    """(C, L) float32: the exact integer products of ``centroids_u8`` (C, dim) uint8 less :data:`U8_ZERO` with the
    query rows ``q8`` (L, dim) int8, by oneDNN's int8 matmul (the query as its weights, each with scale 1: the
    float32 results are the int32 sums, exact below 2^24). Raises whatever the operator raises (it is torch's
    internal x86 quantisation operator: a torch without it raises AttributeError or RuntimeError)."""
    ones = torch.ones(q8.shape[0], dtype=torch.float32)
    zeros = torch.zeros(q8.shape[0], dtype=torch.long)
    return torch.ops.onednn.qlinear_pointwise(centroids_u8, 1.0, U8_ZERO, q8.T.to_mkldnn(), ones, zeros, None, 1.0, 0,
                                              torch.float32, "none", [], "")


def to_u8(codes: torch.Tensor) -> torch.Tensor:
    """Signed int8 codes within +-:data:`U8S8_LEVELS` as the unsigned bytes :func:`u8s8_product` reads."""
    return (codes.to(torch.int16) + U8_ZERO).to(torch.uint8)


def time_products(rows: int, dim: int, kernels: tuple[str, ...] = PATHS) -> dict[str, float]:
    """Best milliseconds of each product in ``kernels`` (of :data:`PATHS`) of (rows, dim) centroids by
    (QUERY_ROWS, dim) query tokens at torch's current thread count: ``torch._int_mm`` on int8 values, oneDNN's
    :func:`u8s8_product` (with its per-query conversion of the query) and ``torch.mm`` on float32 ones. Raises
    whatever a kernel raises."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, dim, generator=gen)
    q = torch.randn(QUERY_ROWS, dim, generator=gen)
    a8 = torch.randint(-127, 128, (rows, dim), dtype=torch.int8, generator=gen)
    q8 = torch.randint(-127, 128, (QUERY_ROWS, dim), dtype=torch.int8, generator=gen)
    a_u8 = to_u8(torch.randint(-U8S8_LEVELS, U8S8_LEVELS + 1, (rows, dim), dtype=torch.int8, generator=gen))
    products = {"int8": lambda: torch._int_mm(a8, q8.T), "u8s8": lambda: u8s8_product(a_u8, q8),
                "float32": lambda: torch.mm(a, q.T)}
    calls = [(name, products[name]) for name in kernels]
    clock = time.perf_counter
    start = clock()
    deadline = start + WARMUP_S
    for r in range(REPEATS):
        for _, call in calls:
            call()
        if r + 1 >= WARMUP and clock() > deadline:
            break
    best = {name: math.inf for name in kernels}
    deadline = clock() + BUDGET_S
    for r in range(REPEATS):  # interleaved, so that a burst of noise hits every product
        for name, call in calls:
            t0 = clock()
            call()
            best[name] = min(best[name], clock() - t0)
        now = clock()
        if now > deadline and (r + 1 >= MIN_REPEATS or now - start > LIMIT_S):
            break
    return {name: t * 1e3 for name, t in best.items()}


def centroid_path(n_centroids: int, dim: int, *, measure: bool = True) -> CentroidPath | None:
    """The product to score ``n_centroids`` (C, dim) centroids with at torch's current thread count.

    Forced by ``LATELEX_PLAID_CENTROIDS`` if set; otherwise from the process cache, then the disk cache, then
    (``measure=True``) measured and stored in both. With ``measure=False`` and nothing cached, None: the path
    is decided at the first search. ConfigError for an invalid override, or an integer path forced where its
    kernel does not work or is inexact (for int8, even within +-:data:`SAFE_LEVELS`).
    """
    forced = override()
    if forced == "float32":
        return CentroidPath("float32", f"forced by {ENV_VAR}=float32")
    if forced in ("int8", "u8s8"):
        problem, levels = kernel_problem(forced, int(dim))
        if problem:
            raise ConfigError(f"{ENV_VAR}={forced}, but {problem} in torch {torch.__version__}; "
                              "set it to float32 or auto")
        note = _levels_note(levels) if forced == "int8" else ""
        return CentroidPath(forced, f"forced by {ENV_VAR}={forced}{note}", levels=levels)
    if n_centroids < MIN_ROWS:
        return CentroidPath("float32", f"{n_centroids} centroids: too few for int8 products to pay (float32 below {MIN_ROWS})")
    rows = min(MAX_ROWS, 1 << (int(n_centroids) - 1).bit_length())
    threads = torch.get_num_threads()
    key = (rows, int(dim), threads)
    with _lock:  # one measurement at a time: concurrent ones would disturb each other
        found = _decisions.get(key) or _read_disk(key)
        if found is None and measure:
            found = _measure(rows, int(dim), threads)
            if found.float32_ms is not None:
                _write_disk(key, found)
        if found is not None:
            _decisions[key] = found
        return found


def clear_process_cache() -> None:
    """Forget this process's decisions (the disk cache stays); the next :func:`centroid_path` reads it again."""
    with _lock:
        _decisions.clear()


def kernel_problem(kernel: str, dim: int) -> tuple[str, int]:
    """``(problem, levels)`` for an integer kernel, ``"int8"`` or ``"u8s8"``: why it cannot be used here (empty when
    it can) and, for int8, the range it is exact over (:func:`int8_levels`; FULL_LEVELS for u8s8)."""
    if kernel == "u8s8":
        return u8s8_problem(dim), FULL_LEVELS
    problem = _int_mm_problem()
    if problem:
        return problem, 0
    try:
        levels = int8_levels(dim)
    except Exception as exc:
        return f"torch._int_mm failed: {_one_line(exc)}", 0
    return ("" if levels else INEXACT), levels


def _measure(rows: int, dim: int, threads: int) -> CentroidPath:
    usable, problems, levels = [], [], FULL_LEVELS
    for kernel in ("int8", "u8s8"):
        problem, found_levels = kernel_problem(kernel, dim)
        if problem:
            problems.append(problem)
        else:
            usable.append(kernel)
            if kernel == "int8":
                levels = found_levels
    if not usable:  # nothing measured: not a decision to keep (the checks are quick to run again)
        return CentroidPath("float32", "; ".join(problems))
    try:
        ms = time_products(rows, dim, (*usable, "float32"))
    except Exception as exc:  # any failure of a kernel means float32
        return CentroidPath("float32", f"timing the centroid products failed: {_one_line(exc)}")
    fastest = min(usable, key=lambda kernel: ms[kernel])  # int8 first: on a tie, the full-range kernel
    chosen = fastest if ms[fastest] * MARGIN <= ms["float32"] else "float32"
    model, flags = cpu_identity()
    caps = isa_caps()
    timings = ", ".join(f"{kernel} {ms[kernel]:.2f} ms" for kernel in (*usable, "float32"))
    reason = (f"measured: {timings} for {rows}x{dim} centroids x {QUERY_ROWS} query tokens on {model} "
              f"({', '.join(flags) or 'no int8 dot-product flags'}{'; ' + caps if caps else ''}), "
              f"{threads} thread{'s' * (threads != 1)}")
    if chosen == "float32" and ms[fastest] < ms["float32"]:
        reason += f"; {fastest} must be {MARGIN}x faster"
    if chosen == "int8":
        reason += _levels_note(levels)
    if problems:
        reason += f"; not measured: {'; '.join(problems)}"
    return CentroidPath(chosen, reason, _rounded(ms.get("int8")), round(ms["float32"], 4), levels,
                        _rounded(ms.get("u8s8")))


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 4)


def _levels_note(levels: int) -> str:
    """What a reason adds for int8 values limited below the full range."""
    if levels == FULL_LEVELS:
        return ""
    return (f"; torch._int_mm is inexact on full-range values here (int8 kernels without VNNI), so centroids and "
            f"queries are quantised to +-{levels}")


@lru_cache(maxsize=None)
def int8_levels(dim: int) -> int:
    """The largest magnitude L, :data:`FULL_LEVELS` or :data:`SAFE_LEVELS`, such that ``torch._int_mm`` of int8
    values within +-L gives exact int32 products of ``dim``-long rows on this CPU (compared with an int64 product,
    on random values and on every sign pattern of the extremes); 0 when neither range is exact. Raises whatever
    ``torch._int_mm`` raises."""
    gen = torch.Generator().manual_seed(1)
    for levels in (FULL_LEVELS, SAFE_LEVELS):
        rows = torch.randint(-levels, levels + 1, (256, dim), dtype=torch.int8, generator=gen)
        query = torch.randint(-levels, levels + 1, (QUERY_ROWS, dim), dtype=torch.int8, generator=gen)
        extremes = _extremes(levels, 64, dim)
        pairs = ((rows, query), (extremes, extremes[::8]), (rows, extremes[::8]), (extremes, query))
        if all(torch.equal(torch._int_mm(a, b.T).long(), a.long() @ b.long().T) for a, b in pairs):
            return levels
    return 0


def _extremes(levels: int, n: int, dim: int) -> torch.Tensor:
    """(4n, dim) int8: rows of +levels, of -levels, and of both alternating, either way round."""
    high = torch.full((n, dim), levels, dtype=torch.int8)
    mixed = high.clone()
    mixed[:, 1::2] = -levels
    return torch.cat([high, -high, mixed, -mixed])


@lru_cache(maxsize=1)
def _int_mm_problem() -> str:
    """Empty when ``torch._int_mm`` works on CPU tensors, else why not."""
    if not hasattr(torch, "_int_mm"):
        return "torch._int_mm unavailable"
    try:
        a = torch.ones(16, 16, dtype=torch.int8)
        if int(torch._int_mm(a, a[:8].T)[0, 0]) != 16:
            return "torch._int_mm gives wrong results"
    except Exception as exc:
        return f"torch._int_mm failed: {_one_line(exc)}"
    return ""


@lru_cache(maxsize=None)
def u8s8_problem(dim: int) -> str:
    """Empty when :func:`u8s8_product` works on this CPU and gives exact products of ``dim``-long rows (compared
    with an int64 product, on random values and on every sign pattern of the extremes: centroids +-U8S8_LEVELS,
    queries +-FULL_LEVELS), else why not."""
    try:
        gen = torch.Generator().manual_seed(2)
        rows = torch.randint(-U8S8_LEVELS, U8S8_LEVELS + 1, (256, dim), dtype=torch.int8, generator=gen)
        query = torch.randint(-FULL_LEVELS, FULL_LEVELS + 1, (QUERY_ROWS, dim), dtype=torch.int8, generator=gen)
        extremes, query_extremes = _extremes(U8S8_LEVELS, 64, dim), _extremes(FULL_LEVELS, 8, dim)
        for a, b in ((rows, query), (extremes, query_extremes), (rows, query_extremes), (extremes, query)):
            if not torch.equal(u8s8_product(to_u8(a), b).long(), a.long() @ b.long().T):
                return "oneDNN's u8s8 matmul is inexact on this CPU"
    except Exception as exc:
        return f"oneDNN's u8s8 matmul failed: {_one_line(exc)}"
    return ""


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _disk_key(key: tuple[int, int, int]) -> str:
    from ... import __version__

    rows, dim, threads = key
    model, flags = cpu_identity()
    caps = isa_caps()
    return (f"{model} | {' '.join(flags)} | torch {torch.__version__} | latelex {__version__} | {rows}x{dim} | "
            f"{threads} threads" + (f" | {caps}" if caps else ""))


def _read_entries(file: Path) -> dict:
    """The entries of a cache file; empty when it is absent, unreadable or not a cache of this format."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _is_timing(t: object) -> bool:
    return isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0


def _read_disk(key: tuple[int, int, int]) -> CentroidPath | None:
    file = cache_dir() / CACHE_FILE
    entry = _read_entries(file).get(_disk_key(key))
    if not isinstance(entry, dict):
        return None
    path, reason, i8, f32, levels, u8 = (entry.get(k) for k in ("path", "reason", "int8_ms", "float32_ms", "levels",
                                                                 "u8s8_ms"))
    if not isinstance(path, str) or path not in PATHS:  # checked first: a garbled path may not even be hashable
        return None
    chosen_ms = {"int8": i8, "u8s8": u8, "float32": f32}[path]  # the chosen path was measured
    timings_ok = _is_timing(f32) and _is_timing(chosen_ms) and all(t is None or _is_timing(t) for t in (i8, u8))
    if (not isinstance(reason, str) or not timings_ok
            or levels not in (FULL_LEVELS, SAFE_LEVELS) or isinstance(levels, bool)):
        return None
    return CentroidPath(path, f"{reason} (cached in {file})", None if i8 is None else float(i8), float(f32), int(levels),
                        None if u8 is None else float(u8))


def _write_disk(key: tuple[int, int, int], decision: CentroidPath) -> None:
    """Add ``decision`` to the cache file, replaced atomically; any failure is ignored."""
    directory = cache_dir()
    file = directory / CACHE_FILE
    try:
        entries = _read_entries(file)
        entries.pop(_disk_key(key), None)
        entries[_disk_key(key)] = {"path": decision.path, "reason": decision.reason, "int8_ms": decision.int8_ms,
                                   "float32_ms": decision.float32_ms, "levels": decision.levels,
                                   "u8s8_ms": decision.u8s8_ms}
        entries = dict(list(entries.items())[-_MAX_ENTRIES:])  # the newest, should hardware keep changing
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cpu-paths-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": _CACHE_FORMAT, "entries": entries}, f, indent=1)
            os.replace(tmp, file)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, TypeError, ValueError):
        pass
