"""PLAID's centroid-score path (int8, u8s8 or float32) chosen by measurement: parity of the paths, the override,
the process and disk caches, and fallbacks. The timing function is replaced where a test needs a given outcome; no
wall-clock assertions."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from latelex.errors import ConfigError
from latelex.index.plaid import PlaidConfig, PlaidIndex
from latelex.index.plaid import cpu_paths
from latelex.index.plaid.cpu_paths import CACHE_FILE, ENV_VAR, CentroidPath, centroid_path, clear_process_cache

from emulated_cpu import needs_qemu, run_on_haswell

DIM = 16
GENEROUS = dict(ncells=10**6, centroid_score_threshold=-1e9, ndocs=10**6)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache directory, no override, empty process cache (before and after)."""
    monkeypatch.setenv("LATELEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    clear_process_cache()
    clear_kernel_checks()
    yield tmp_path / "cache" / CACHE_FILE
    clear_process_cache()
    clear_kernel_checks()


def clear_kernel_checks() -> None:
    for check in (cpu_paths._int_mm_problem, cpu_paths.int8_levels, cpu_paths.u8s8_problem):
        if hasattr(check, "cache_clear"):  # not while a test's stand-in is still in place
            check.cache_clear()


class FakeTimer:
    """Stands in for :func:`cpu_paths.time_products`: fixed timings, and a count of the calls."""

    def __init__(self, int8_ms: float, float32_ms: float, u8s8_ms: float):
        self.result = {"int8": int8_ms, "u8s8": u8s8_ms, "float32": float32_ms}
        self.calls = 0
        self.kernels: tuple[str, ...] = ()

    def __call__(self, rows: int, dim: int, kernels: tuple[str, ...] = cpu_paths.PATHS) -> dict[str, float]:
        self.calls += 1
        self.kernels = kernels
        return {name: self.result[name] for name in kernels}


def fake_timer(monkeypatch, int8_ms: float = 0.5, float32_ms: float = 1.5, u8s8_ms: float = 100.0) -> FakeTimer:
    """A FakeTimer in place of the real one; u8s8 is slow by default, so that int8 is the integer path."""
    timer = FakeTimer(int8_ms, float32_ms, u8s8_ms)
    monkeypatch.setattr(cpu_paths, "time_products", timer)
    return timer


def without_u8s8(monkeypatch, problem: str = "oneDNN's u8s8 matmul failed: RuntimeError: no kernel") -> None:
    monkeypatch.setattr(cpu_paths, "u8s8_problem", lambda dim: problem)


def make_docs(n: int, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((24, DIM))
    docs = []
    for _ in range(n):
        length = int(rng.integers(2, 16))
        x = centers[rng.integers(0, 24, length)] + 0.35 * rng.standard_normal((length, DIM))
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return [f"doc-{i}" for i in range(n)], docs


@pytest.fixture
def index(tmp_path) -> PlaidIndex:
    ids, docs = make_docs(150)
    return PlaidIndex.build(tmp_path / "idx", ids, docs, config=PlaidConfig(nbits=2, chunk_size=50, n_centroids=32))


def queries() -> list[torch.Tensor]:
    _, docs = make_docs(10, seed=7)
    rows = np.concatenate(docs)
    return [torch.from_numpy(d[:6].copy()) for d in docs] + [torch.from_numpy(rows[:n].copy()) for n in (1, 17, 33)]


# --- both paths ----------------------------------------------------------------------------------------


def test_every_path_returns_the_same_results(index, monkeypatch):
    results = {}
    for path in ("float32", "int8", "u8s8"):
        monkeypatch.setenv(ENV_VAR, path)
        data = index._search_data()  # the path really changes
        assert (data.centroids_i8 is not None, data.centroids_u8 is not None) == (path == "int8", path == "u8s8")
        info = index.info()
        assert info["centroid_scores"] == path and f"{ENV_VAR}={path}" in info["centroid_scores_reason"]
        results[path] = {"generous": index.search(queries(), k=10, **GENEROUS), "default": index.search(queries(), k=5)}
    for path in ("int8", "u8s8"):
        for settings in ("generous", "default"):
            for f32, got in zip(results["float32"][settings], results[path][settings]):
                if settings == "generous":  # every document scored exactly: the same ranking
                    assert [h.doc_id for h in got] == [h.doc_id for h in f32]
                common = {h.doc_id: h.score for h in f32}
                for h in got:  # default settings: integers rank candidates; where both find a document, the same score
                    if h.doc_id in common:
                        assert h.score == pytest.approx(common[h.doc_id], abs=1e-4)


def test_the_u8s8_data_holds_offset_codes_within_63(index, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "u8s8")
    data = index._search_data()
    codes = data.centroids_u8.to(torch.int16) - cpu_paths.U8_ZERO
    assert data.centroids_u8.dtype == torch.uint8 and int(codes.abs().max()) == cpu_paths.U8S8_LEVELS
    np.testing.assert_allclose(codes.numpy() * data.centroid_scales[:, None], data.centroids_np, atol=0.5 / 63 * 1.01)
    assert index._search_data() is data  # made once
    monkeypatch.setenv(ENV_VAR, "int8")
    assert index._search_data().centroids_u8 is None and index._search_data().centroids_i8 is not None


@pytest.mark.parametrize("path", ["int8", "u8s8"])
def test_integer_paths_gather_the_exact_rows_from_float16_copies_of_the_same_values(index, monkeypatch, path):
    from latelex.index.plaid import search as S

    monkeypatch.setenv(ENV_VAR, path)
    data = index._search_data()
    assert data.centroids_f16.dtype == np.float16
    assert np.array_equal(data.centroids_f16.astype(np.float32), data.centroids_np)  # stored as float16: exact
    wide = dataclasses.replace(data, centroids_f16=None)
    docs = np.array([3, 40, 77])
    for Q in queries():
        Qp = S.pad_query(Q)
        scores = S.centroid_scores(data, Qp, Q.shape[0], 0.5)
        rows, row = S.exact_rows(data, Qp, scores, docs)
        rows32, row32 = S.exact_rows(wide, Qp, scores, docs)
        assert rows.shape[0] < data.centroids_np.shape[0]  # only the centroids the documents use
        assert np.array_equal(rows, rows32) and np.array_equal(row, row32)  # the same bits
    monkeypatch.setenv(ENV_VAR, "u8s8" if path == "int8" else "int8")
    assert index._search_data().centroids_f16 is data.centroids_f16  # one copy for both integer paths
    monkeypatch.setenv(ENV_VAR, "float32")
    assert index._search_data().centroids_f16 is None  # the float32 path gathers nothing


def test_centroids_that_float16_cannot_hold_exactly_are_gathered_as_float32():
    from latelex.index.plaid.search import exact_float16

    x = np.array([[0.5, -0.25], [1.0, 3.0]], dtype=np.float32)
    assert exact_float16(x).dtype == np.float16
    for bad in (1.0 + 2.0**-20, 70000.0, 1e-9):  # beyond float16's precision, its range, and its smallest step
        y = x.copy()
        y[1, 0] = bad
        assert exact_float16(y) is None


def test_a_search_decides_once_and_info_never_measures(index, monkeypatch):
    timer = fake_timer(monkeypatch)
    monkeypatch.setattr(cpu_paths, "MIN_ROWS", 1)  # measure even this tiny index's 32 centroids
    info = index.info()
    assert info["centroid_scores"] is None and "decided at first search" in info["centroid_scores_reason"]
    assert timer.calls == 0
    index.search(queries(), k=3)
    index.search(queries(), k=3)
    assert timer.calls == 1
    assert index._search_data().centroids_i8 is not None  # 0.5 ms against 1.5: int8
    info = index.info()
    assert info["centroid_scores"] == "int8" and info["centroid_scores_reason"].startswith("measured: int8 0.50 ms")
    clear_process_cache()  # as a fresh process (latelex info) would: the disk cache answers
    info = PlaidIndex.open(index.path).info()
    assert info["centroid_scores"] == "int8" and "cached in" in info["centroid_scores_reason"] and timer.calls == 1


def test_a_small_index_uses_float32_without_measuring(monkeypatch):
    timer = fake_timer(monkeypatch)
    decision = centroid_path(cpu_paths.MIN_ROWS - 1, 128)
    assert decision.path == "float32" and "too few" in decision.reason and timer.calls == 0


# --- the override --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["int8", "float32", "u8s8", "INT8", " float32 ", "U8S8"])
def test_the_override_forces_a_path_without_measuring(monkeypatch, value):
    timer = fake_timer(monkeypatch, int8_ms=10.0, float32_ms=1.0)
    monkeypatch.setenv(ENV_VAR, value)
    decision = centroid_path(16384, 128)
    assert decision == CentroidPath(value.strip().lower(), f"forced by {ENV_VAR}={value.strip().lower()}")
    assert timer.calls == 0


def test_auto_or_empty_override_measures(monkeypatch):
    timer = fake_timer(monkeypatch, int8_ms=10.0, float32_ms=1.0)
    for value in ("auto", ""):
        monkeypatch.setenv(ENV_VAR, value)
        assert centroid_path(16384, 128).path == "float32"
    assert timer.calls == 1


def test_an_invalid_override_is_a_one_line_config_error(index, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ConfigError) as caught:
        centroid_path(16384, 128)
    message = str(caught.value)
    assert "\n" not in message and ENV_VAR in message and "'fast'" in message
    assert all(choice in message for choice in ("int8", "u8s8", "float32", "auto"))
    with pytest.raises(ConfigError):
        index.search(queries()[:1], k=3)


# --- measuring -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("int8_ms,u8s8_ms,float32_ms,path", [
    (0.5, 9.0, 1.5, "int8"), (1.0, 9.0, 1.2, "int8"), (1.0, 9.0, 1.19, "float32"), (2.0, 9.0, 1.0, "float32"),
    (25.0, 0.8, 2.0, "u8s8"),  # an AVX2-only CPU: torch._int_mm slow, oneDNN's u8s8 kernels fast
    (0.5, 0.5, 2.0, "int8"),  # a tie goes to the full-range kernel
    (3.0, 1.3, 1.5, "float32")])
def test_an_integer_product_must_win_by_the_margin(monkeypatch, int8_ms, u8s8_ms, float32_ms, path):
    fake_timer(monkeypatch, int8_ms, float32_ms, u8s8_ms)
    decision = centroid_path(16384, 128)
    assert decision.path == path
    assert (decision.int8_ms, decision.u8s8_ms, decision.float32_ms) == (int8_ms, u8s8_ms, float32_ms)
    assert decision.reason.startswith(f"measured: int8 {int8_ms:.2f} ms, u8s8 {u8s8_ms:.2f} ms, "
                                      f"float32 {float32_ms:.2f} ms for 8192x128")
    fastest = "int8" if int8_ms <= u8s8_ms else "u8s8"
    lost_by_margin = path == "float32" and min(int8_ms, u8s8_ms) < float32_ms
    assert (f"{fastest} must be 1.2x faster" in decision.reason) == lost_by_margin


def test_the_real_measurement_runs():
    decision = centroid_path(2048, 64)
    assert decision.path in cpu_paths.PATHS and decision.reason.startswith("measured: ")
    assert decision.int8_ms > 0 and decision.float32_ms > 0
    assert cpu_paths.u8s8_problem(64) == "" and decision.u8s8_ms > 0  # x86-64 torch builds run oneDNN's u8s8 matmul


def test_the_real_timer_times_the_kernels_asked_for():
    found = cpu_paths.time_products(256, 32, ("u8s8", "float32"))
    assert sorted(found) == ["float32", "u8s8"] and all(ms > 0 for ms in found.values())


def test_shapes_and_thread_counts_are_decided_apart(monkeypatch):
    timer = fake_timer(monkeypatch)
    centroid_path(16384, 128)
    centroid_path(65536, 128)  # the same bucket: measured rows are capped
    assert timer.calls == 1
    centroid_path(2048, 128)
    centroid_path(16384, 96)
    assert timer.calls == 3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)
        centroid_path(16384, 128)
    finally:
        torch.set_num_threads(threads)
    assert timer.calls == 4


# --- the disk cache ------------------------------------------------------------------------------------


def test_the_disk_cache_is_written_and_reused(monkeypatch, isolated):
    timer = fake_timer(monkeypatch)
    first = centroid_path(16384, 128)
    assert timer.calls == 1 and isolated.is_file()
    entries = json.loads(isolated.read_text())["entries"]
    assert len(entries) == 1 and next(iter(entries.values()))["path"] == "int8"
    key = next(iter(entries))
    assert torch.__version__ in key and "8192x128" in key and cpu_paths.cpu_identity()[0] in key
    assert centroid_path(16384, 128) is first and timer.calls == 1  # the process cache
    clear_process_cache()
    again = centroid_path(16384, 128, measure=False)  # a fresh process: the file answers, nothing is measured
    assert timer.calls == 1 and again.path == "int8" and again.reason == f"{first.reason} (cached in {isolated})"
    assert (again.int8_ms, again.u8s8_ms, again.float32_ms) == (first.int8_ms, first.u8s8_ms, first.float32_ms)


def test_a_decision_is_not_reused_under_an_instruction_set_cap(monkeypatch, isolated):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes an AVX-512 VNNI CPU compute int8 products as an AVX2-only one does: a
    decision measured without the cap must not be read with it (nor the other way round)."""
    for name in cpu_paths.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    timer = fake_timer(monkeypatch)
    centroid_path(16384, 128)
    clear_process_cache()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_paths.isa_caps().startswith("ONEDNN_MAX_CPU_ISA=AVX2, torch capability ")
    assert centroid_path(16384, 128, measure=False) is None  # not the uncapped decision
    capped = centroid_path(16384, 128)
    assert timer.calls == 2 and "ONEDNN_MAX_CPU_ISA=AVX2" in capped.reason
    keys = list(json.loads(isolated.read_text())["entries"])
    assert len(keys) == 2 and sum("ONEDNN_MAX_CPU_ISA=AVX2" in k for k in keys) == 1
    clear_process_cache()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert "ONEDNN" not in centroid_path(16384, 128, measure=False).reason and timer.calls == 2


def test_nothing_cached_and_no_measuring_is_none(monkeypatch):
    timer = fake_timer(monkeypatch)
    assert centroid_path(16384, 128, measure=False) is None and timer.calls == 0


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": 1, "entries": []}', '{"format": 99, "entries": {}}',
                                     "\x00\xff", None])
def test_a_corrupt_cache_file_is_ignored_and_replaced(monkeypatch, isolated, content):
    isolated.parent.mkdir(parents=True)
    if content is None:  # well-formed file, garbled entry for this very key
        fake_timer(monkeypatch)
        centroid_path(16384, 128)
        data = json.loads(isolated.read_text())
        for entry in data["entries"].values():
            entry["int8_ms"] = "fast"
        isolated.write_text(json.dumps(data))
        clear_process_cache()
    else:
        isolated.write_bytes(content.encode("utf-8", "surrogateescape"))
    timer = fake_timer(monkeypatch, int8_ms=3.0, float32_ms=1.0)
    assert centroid_path(16384, 128).path == "float32" and timer.calls == 1
    clear_process_cache()
    assert centroid_path(16384, 128).path == "float32" and timer.calls == 1  # the rewritten file answers


@pytest.mark.parametrize("garbled", [{"path": ["int8"]}, {"path": "fast"}, {"path": "u8s8", "u8s8_ms": None},
                                     {"levels": True}, {"reason": 3}])
def test_a_garbled_cache_entry_is_measured_again(monkeypatch, isolated, garbled):
    fake_timer(monkeypatch)
    centroid_path(16384, 128)
    data = json.loads(isolated.read_text())
    for entry in data["entries"].values():
        entry.update(garbled)
    isolated.write_text(json.dumps(data))
    clear_process_cache()
    assert centroid_path(16384, 128, measure=False) is None  # ignored, never an error


def test_an_unwritable_cache_is_ignored(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LATELEX_CACHE", str(blocker / "cache"))  # cannot be created under a file
    timer = fake_timer(monkeypatch)
    assert centroid_path(16384, 128).path == "int8"
    clear_process_cache()
    assert centroid_path(16384, 128).path == "int8" and timer.calls == 2  # measured again, never an error


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    assert cpu_paths.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LATELEX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu_paths.cache_dir() == tmp_path / "xdg" / "latelex"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cpu_paths.cache_dir() == tmp_path / "home" / ".cache" / "latelex"


# --- without a working int8 kernel ---------------------------------------------------------------------


def test_without_any_integer_kernel_the_path_is_float32(monkeypatch, isolated):
    timer = fake_timer(monkeypatch)
    monkeypatch.delattr(torch, "_int_mm")
    without_u8s8(monkeypatch)
    decision = centroid_path(16384, 128)
    assert decision == CentroidPath("float32", "torch._int_mm unavailable; oneDNN's u8s8 matmul failed: RuntimeError: "
                                               "no kernel") and timer.calls == 0
    assert not isolated.exists()  # a missing kernel is not a measurement to keep
    for path, problem in (("int8", "unavailable"), ("u8s8", "no kernel")):
        monkeypatch.setenv(ENV_VAR, path)
        with pytest.raises(ConfigError, match=problem):
            centroid_path(16384, 128)


def test_without_int_mm_u8s8_is_measured_alone(monkeypatch):
    timer = fake_timer(monkeypatch, int8_ms=0.1, u8s8_ms=0.8, float32_ms=2.0)
    monkeypatch.delattr(torch, "_int_mm")
    decision = centroid_path(16384, 128)
    assert decision.path == "u8s8" and timer.kernels == ("u8s8", "float32") and decision.int8_ms is None
    assert decision.reason.endswith("; not measured: torch._int_mm unavailable")


def test_a_failing_int_mm_means_another_path(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no int8 kernel for this layout\nsecond line")

    monkeypatch.setattr(torch, "_int_mm", broken)
    without_u8s8(monkeypatch)
    decision = centroid_path(16384, 128)
    assert decision.path == "float32"
    assert decision.reason.startswith("torch._int_mm failed: RuntimeError: no int8 kernel for this layout; oneDNN's")


def test_a_failing_u8s8_kernel_is_not_measured(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor\nsecond line")

    monkeypatch.setattr(torch.ops.onednn, "qlinear_pointwise", broken)
    assert cpu_paths.u8s8_problem(128) == ("oneDNN's u8s8 matmul failed: RuntimeError: could not create a primitive "
                                           "descriptor")
    timer = fake_timer(monkeypatch, u8s8_ms=0.1)
    assert centroid_path(16384, 128).path == "int8" and timer.kernels == ("int8", "float32")
    monkeypatch.setenv(ENV_VAR, "u8s8")
    with pytest.raises(ConfigError, match="primitive descriptor"):
        centroid_path(16384, 128)


def test_an_inexact_u8s8_kernel_is_not_used(monkeypatch):
    real = cpu_paths.u8s8_product
    monkeypatch.setattr(cpu_paths, "u8s8_product", lambda a, q: real(a, q) + (a[:, :1].float() > 100))
    assert cpu_paths.u8s8_problem(64) == "oneDNN's u8s8 matmul is inexact on this CPU"


def test_a_timing_failure_means_float32(monkeypatch):
    def failing(rows: int, dim: int, kernels: tuple[str, ...]) -> dict[str, float]:
        raise RuntimeError("oneDNN refused")

    monkeypatch.setattr(cpu_paths, "time_products", failing)
    decision = centroid_path(16384, 128)
    assert decision.path == "float32" and "oneDNN refused" in decision.reason


# --- exactness of the int8 product ----------------------------------------------------------------------


def saturating_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What oneDNN's int8 kernels without VNNI compute for ``a @ b`` (int8): ``a`` shifted by 128 to unsigned, each
    pair of adjacent products added in 16 bits with saturation, the shift's share taken off at the end."""
    shifted = a.long() + 128  # (m, k)
    products = shifted[:, :, None] * b.long()[None, :, :]  # (m, k, n)
    k = products.shape[1] - products.shape[1] % 2
    pairs = (products[:, 0:k:2] + products[:, 1:k:2]).clamp(-32768, 32767).sum(dim=1)
    if k < products.shape[1]:
        pairs += products[:, k:].sum(dim=1)
    return (pairs - 128 * b.long().sum(dim=0)[None, :]).int()


def check_exact(levels: int, dim: int, seed: int) -> bool:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(-levels, levels + 1, (300, dim), dtype=torch.int8, generator=gen)
    q = torch.randint(-levels, levels + 1, (24, dim), dtype=torch.int8, generator=gen)
    a[:8] = levels
    a[8:16] = -levels
    q[:4] = levels
    q[4:8] = -levels
    return torch.equal(torch._int_mm(a, q.T).long(), a.long() @ q.long().T)


@pytest.mark.parametrize("dim", [64, 128, 96])
def test_int8_levels_are_exact_over_the_range_they_give(dim):
    levels = cpu_paths.int8_levels(dim)
    assert levels in (cpu_paths.FULL_LEVELS, cpu_paths.SAFE_LEVELS)  # not 0: this CPU runs the int8 path
    assert check_exact(levels, dim, seed=dim)  # other values and shapes than int8_levels' own check


def test_the_model_of_a_saturating_kernel_is_exact_within_63_and_wrong_beyond():
    # The model below stands for oneDNN's AVX2 kernels in the tests that follow; the real ones run in
    # test_avx2_kernels_saturate_and_the_safe_range_is_exact_there.
    gen = torch.Generator().manual_seed(3)
    for levels, exact in ((63, True), (127, False)):
        a = torch.randint(-levels, levels + 1, (200, 128), dtype=torch.int8, generator=gen)
        b = torch.randint(-levels, levels + 1, (128, 16), dtype=torch.int8, generator=gen)
        assert torch.equal(saturating_int_mm(a, b).long(), a.long() @ b.long()) == exact


def test_a_saturating_int8_kernel_gets_the_safe_range(monkeypatch, index):
    monkeypatch.setattr(torch, "_int_mm", saturating_int_mm)
    assert cpu_paths.int8_levels(DIM) == cpu_paths.SAFE_LEVELS
    fake_timer(monkeypatch)  # int8 measured faster
    decision = centroid_path(16384, 128)
    assert decision.path == "int8" and decision.levels == 63 and "quantised to +-63" in decision.reason
    monkeypatch.setattr(cpu_paths, "MIN_ROWS", 1)
    data = index._search_data()
    assert data.int8_levels == 63 and int(data.centroids_i8.abs().max()) == 63
    exact = index.search(queries(), k=10, **GENEROUS)
    monkeypatch.setenv(ENV_VAR, "float32")
    again = index.search(queries(), k=10, **GENEROUS)
    assert [[h.doc_id for h in r] for r in exact] == [[h.doc_id for h in r] for r in again]


def test_an_int8_kernel_inexact_at_every_range_means_float32(monkeypatch):
    def wrong(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = (a.long() @ b.long()).int()
        if int(a.abs().max()) > 1:  # right on small values only (so that _int_mm_problem's check passes)
            out[0, 0] += 1
        return out

    monkeypatch.setattr(torch, "_int_mm", wrong)
    timer = fake_timer(monkeypatch)
    decision = centroid_path(16384, 128)
    assert decision.path == "float32" and "inexact on this CPU even within +-63" in decision.reason
    assert timer.kernels == ("u8s8", "float32") and decision.int8_ms is None  # not timed
    monkeypatch.setenv(ENV_VAR, "int8")
    with pytest.raises(ConfigError, match="inexact"):
        centroid_path(16384, 128)


def test_cached_decisions_keep_their_levels_and_older_files_are_measured_again(monkeypatch, isolated):
    monkeypatch.setattr(torch, "_int_mm", saturating_int_mm)
    timer = fake_timer(monkeypatch)
    assert centroid_path(16384, 128).levels == 63
    clear_process_cache()
    again = centroid_path(16384, 128, measure=False)
    assert again.levels == 63 and "cached in" in again.reason and timer.calls == 1
    data = json.loads(isolated.read_text())
    data["format"] = 2  # a file written before u8s8 was measured
    for entry in data["entries"].values():
        del entry["u8s8_ms"]
    isolated.write_text(json.dumps(data))
    clear_process_cache()
    assert centroid_path(16384, 128, measure=False) is None
    data["format"] = 1  # a file written before int8 decisions recorded their levels
    for entry in data["entries"].values():
        del entry["levels"]
    isolated.write_text(json.dumps(data))
    clear_process_cache()
    assert centroid_path(16384, 128, measure=False) is None


AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}

PROBE = """
import json, numpy as np, torch
from latelex.index.plaid import cpu_paths
from latelex.index.plaid.search import quantize_rows
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
a = torch.randint(-127, 128, (512, 128), dtype=torch.int8, generator=gen)
b = torch.randint(-127, 128, (24, 128), dtype=torch.int8, generator=gen)
full_exact = torch.equal(torch._int_mm(a, b.T).long(), a.long() @ b.long().T)
rng = np.random.default_rng(0)
c = rng.standard_normal((4096, 128)).astype(np.float32)
q = rng.standard_normal((24, 128)).astype(np.float32)
exact = c @ q.T
errors = {}
for levels in (127, 63):
    c8, cs = quantize_rows(c, levels)
    q8, qs = quantize_rows(q, levels)
    raw = torch._int_mm(torch.from_numpy(c8), torch.from_numpy(q8).T).numpy()
    errors[levels] = float(np.abs(raw * cs[:, None] * qs[None, :] - exact).max() / np.abs(exact).max())
c8, cs = quantize_rows(c, cpu_paths.U8S8_LEVELS)
q8, qs = quantize_rows(q, cpu_paths.FULL_LEVELS)
raw = cpu_paths.u8s8_product(cpu_paths.to_u8(torch.from_numpy(c8)), torch.from_numpy(q8)).numpy()
u8s8_exact = bool(np.array_equal(raw, c8.astype(np.int64) @ q8.astype(np.int64).T))
errors["u8s8"] = float(np.abs(raw * cs[:, None] * qs[None, :] - exact).max() / np.abs(exact).max())
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "full_exact": full_exact,
                  "levels": cpu_paths.int8_levels(128), "errors": errors, "u8s8_problem": cpu_paths.u8s8_problem(128),
                  "u8s8_exact": u8s8_exact}))
"""


@pytest.mark.skipif("avx2" not in cpu_paths.cpu_identity()[1], reason="an x86 CPU with AVX2 runs oneDNN's AVX2 kernels")
def test_avx2_kernels_saturate_and_the_safe_range_is_exact_there():
    # oneDNN's own AVX2 int8 kernels, as an AVX2-only CPU runs them (on a newer CPU, capped by the environment):
    # torch._int_mm saturates on full-range values; the u8s8 product (centroids within +-63) does not.
    env = {**os.environ, **AVX2_CAPS}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["capability"] == "AVX2"
    assert not found["full_exact"]  # full-range products saturate: what made the int8 path wrong on such CPUs
    assert found["levels"] == cpu_paths.SAFE_LEVELS
    errors = found["errors"]
    assert errors["63"] < 0.05 < errors["127"]  # quantisation error only at 63; saturation errors at 127
    assert found["u8s8_problem"] == "" and found["u8s8_exact"] and errors["u8s8"] < 0.05


EMULATED_SEARCH = """
import json, os, sys
import numpy as np, torch
from latelex.index.plaid import PlaidIndex
torch.set_num_threads(1)
index = PlaidIndex.open(sys.argv[1])
stored = np.load(sys.argv[2])
queries = [torch.from_numpy(stored[name]) for name in sorted(stored.files, key=int)]
found = {"capability": torch.backends.cpu.get_cpu_capability()}
for path in ("float32", "int8", "u8s8"):
    os.environ["LATELEX_PLAID_CENTROIDS"] = path
    for settings, options in (("generous", json.loads(sys.argv[3])), ("default", {})):
        hits = index.search(queries, k=10, **options)
        found[f"{path} {settings}"] = {"path": index.info()["centroid_scores"],
                                       "hits": [[[h.doc_id, h.score] for h in row] for row in hits]}
print(json.dumps(found))
"""


@needs_qemu
def test_every_path_searches_exactly_on_an_emulated_avx2_only_cpu(index, tmp_path, monkeypatch):
    # Under `qemu-x86_64 -cpu Haswell` the process sees an AVX2-only CPU (no AVX-512, no VNNI): ATen, oneDNN and
    # numba's compiler pick the kernels such a CPU runs (torch._int_mm without oneDNN, oneDNN's AVX2 u8s8 matmul,
    # Haswell code for the scoring loops). Each path must give what this machine's float32 path gives.
    qs = queries()
    np.savez(tmp_path / "queries.npz", **{str(i): q.numpy() for i, q in enumerate(qs)})
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, *cpu_paths.ISA_CAPS)}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")  # code compiled for the emulated CPU, kept apart
    args = [str(tmp_path / "idx"), str(tmp_path / "queries.npz"), json.dumps(GENEROUS)]
    found = run_on_haswell(EMULATED_SEARCH, args, env)
    assert found["capability"] == "AVX2"
    monkeypatch.setenv(ENV_VAR, "float32")
    native = {"generous": index.search(qs, k=10, **GENEROUS), "default": index.search(qs, k=10)}
    for path in ("float32", "int8", "u8s8"):
        for settings, want in native.items():
            got = found[f"{path} {settings}"]
            assert got["path"] == path
            for row, expected in zip(got["hits"], want):
                scores = {h.doc_id: h.score for h in expected}
                if settings == "generous":  # every document scored exactly: the same ranking
                    assert [d for d, _ in row] == [h.doc_id for h in expected]
                for doc_id, score in row:  # float32 MaxSim wherever both find a document
                    if doc_id in scores:
                        assert score == pytest.approx(scores[doc_id], abs=1e-4)
