"""A bounded subset of the fault-injection sweep: a change killed at exact fsync / rename / unlink calls (strace)
leaves the old or the new state. scripts/fault_injection.py kills at every call of every change."""

from __future__ import annotations

import pytest

from fault_injection import count_calls, inject, points, strace_available

pytestmark = pytest.mark.skipif(not strace_available(), reason="strace is not installed (.ci/run installs it)")

SUBSET = {"plaid": "add", "inverted": "delete", "flat": "overwrite"}  # kind: the change killed
POINTS = 4  # kill points per kind here, spread over its calls; the script kills at every one


@pytest.mark.parametrize("kind", sorted(SUBSET))
def test_a_change_killed_at_exact_system_calls(kind, tiny_bert, tiny_mlm, tmp_path):
    models = {"bert": str(tiny_bert), "mlm": str(tiny_mlm)}
    op = SUBSET[kind]
    counts = count_calls(tmp_path, kind, op, models)
    assert counts.get("rename", 0) + counts.get("renameat", 0) + counts.get("renameat2", 0) >= 1
    every = points(counts)
    chosen = every[:: max(1, len(every) // POINTS)][:POINTS]
    outcomes = {}
    for syscall, nth in chosen:
        outcome = inject(tmp_path, kind, op, models, syscall, nth)
        outcomes[(syscall, nth)] = outcome
    bad = {point: outcome for point, outcome in outcomes.items() if outcome not in ("old", "new")}
    assert not bad
    assert "old" in outcomes.values()  # the first kill point precedes the commit: the kills really happen
