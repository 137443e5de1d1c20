"""PLAID's centroid-score path (int8 or float32) chosen by measurement: parity of both paths, the override, the
process and disk caches, and fallbacks. The timing function is replaced where a test needs a given outcome; no
wall-clock assertions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latelex.errors import ConfigError
from latelex.index.plaid import PlaidConfig, PlaidIndex
from latelex.index.plaid import cpu_paths
from latelex.index.plaid.cpu_paths import CACHE_FILE, ENV_VAR, CentroidPath, centroid_path, clear_process_cache

DIM = 16
GENEROUS = dict(ncells=10**6, centroid_score_threshold=-1e9, ndocs=10**6)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache directory, no override, empty process cache (before and after)."""
    monkeypatch.setenv("LATELEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    clear_process_cache()
    cpu_paths._int_mm_problem.cache_clear()
    yield tmp_path / "cache" / CACHE_FILE
    clear_process_cache()
    cpu_paths._int_mm_problem.cache_clear()


class FakeTimer:
    """Stands in for :func:`cpu_paths.time_products`: fixed timings, and a count of the calls."""

    def __init__(self, int8_ms: float, float32_ms: float):
        self.result = (int8_ms, float32_ms)
        self.calls = 0

    def __call__(self, rows: int, dim: int) -> tuple[float, float]:
        self.calls += 1
        return self.result


def fake_timer(monkeypatch, int8_ms: float = 0.5, float32_ms: float = 1.5) -> FakeTimer:
    timer = FakeTimer(int8_ms, float32_ms)
    monkeypatch.setattr(cpu_paths, "time_products", timer)
    return timer


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


def test_int8_and_float32_paths_return_the_same_results(index, monkeypatch):
    results = {}
    for path in ("float32", "int8"):
        monkeypatch.setenv(ENV_VAR, path)
        assert (index._search_data().centroids_i8 is not None) == (path == "int8")  # the path really changes
        info = index.info()
        assert info["centroid_scores"] == path and f"{ENV_VAR}={path}" in info["centroid_scores_reason"]
        results[path] = {"generous": index.search(queries(), k=10, **GENEROUS), "default": index.search(queries(), k=5)}
    for settings in ("generous", "default"):
        for f32, i8 in zip(results["float32"][settings], results["int8"][settings]):
            if settings == "generous":  # every document scored exactly: the same ranking
                assert [h.doc_id for h in i8] == [h.doc_id for h in f32]
            common = {h.doc_id: h.score for h in f32}
            for h in i8:  # default settings: int8 ranks candidates; where both find a document, the same score
                if h.doc_id in common:
                    assert h.score == pytest.approx(common[h.doc_id], abs=1e-4)


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


@pytest.mark.parametrize("value", ["int8", "float32", "INT8", " float32 "])
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
    assert all(choice in message for choice in ("int8", "float32", "auto"))
    with pytest.raises(ConfigError):
        index.search(queries()[:1], k=3)


# --- measuring -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("int8_ms,float32_ms,path", [(0.5, 1.5, "int8"), (1.0, 1.2, "int8"), (1.0, 1.19, "float32"),
                                                      (2.0, 1.0, "float32")])
def test_int8_must_win_by_the_margin(monkeypatch, int8_ms, float32_ms, path):
    fake_timer(monkeypatch, int8_ms, float32_ms)
    decision = centroid_path(16384, 128)
    assert decision.path == path and (decision.int8_ms, decision.float32_ms) == (int8_ms, float32_ms)
    assert decision.reason.startswith(f"measured: int8 {int8_ms:.2f} ms, float32 {float32_ms:.2f} ms for 8192x128")
    assert ("must be 1.2x faster" in decision.reason) == (path == "float32" and int8_ms < float32_ms)


def test_the_real_measurement_runs():
    decision = centroid_path(2048, 64)
    assert decision.path in ("int8", "float32") and decision.reason.startswith("measured: ")
    assert decision.int8_ms > 0 and decision.float32_ms > 0


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
    assert (again.int8_ms, again.float32_ms) == (first.int8_ms, first.float32_ms)


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


def test_without_int_mm_the_path_is_float32(monkeypatch, isolated):
    timer = fake_timer(monkeypatch)
    monkeypatch.delattr(torch, "_int_mm")
    decision = centroid_path(16384, 128)
    assert decision == CentroidPath("float32", "torch._int_mm unavailable") and timer.calls == 0
    assert not isolated.exists()  # a missing kernel is not a measurement to keep
    monkeypatch.setenv(ENV_VAR, "int8")
    with pytest.raises(ConfigError, match="unavailable"):
        centroid_path(16384, 128)


def test_a_failing_int_mm_means_float32(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no int8 kernel for this layout\nsecond line")

    monkeypatch.setattr(torch, "_int_mm", broken)
    decision = centroid_path(16384, 128)
    assert decision.path == "float32" and decision.reason == "torch._int_mm failed: RuntimeError: no int8 kernel for this layout"


def test_a_timing_failure_means_float32(monkeypatch):
    def failing(rows: int, dim: int) -> tuple[float, float]:
        raise RuntimeError("oneDNN refused")

    monkeypatch.setattr(cpu_paths, "time_products", failing)
    decision = centroid_path(16384, 128)
    assert decision.path == "float32" and "oneDNN refused" in decision.reason
