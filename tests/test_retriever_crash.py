"""kill -9 at random instants of add / delete / upsert / compact / overwrite leaves the old or the new state
(PLAID, inverted, flat); a bounded number of trials here, the full sweep in scripts/kill_trials.py."""

from __future__ import annotations

import random

import pytest

from crash_trials import KINDS, OPS, trial

TRIALS = 1  # per kind and operation here; scripts/kill_trials.py --trials 20 (aimed by timing each change) for the sweep


@pytest.mark.parametrize("kind", KINDS)
def test_kill_at_random_points_leaves_old_or_new(kind, tiny_bert, tiny_mlm, tmp_path):
    models = {"bert": str(tiny_bert), "mlm": str(tiny_mlm)}
    rng = random.Random(kind)
    for op in OPS:
        for _ in range(TRIALS):
            outcome, _ = trial(tmp_path, kind, op, models, rng, 1.5)
            assert outcome in ("old", "new"), f"{kind} {op}: {outcome}"
