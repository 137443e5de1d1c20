"""The full kill -9 sweep of a retriever's changes: N trials per kind (flat, PLAID, inverted) and operation (add,
delete, upsert, compact, build --overwrite), each killing a child process at a random instant of the change and
checking the index (opens, verifies, old or new state exactly, every id's vectors from its own text, one more
change goes through). Prints the counts.

    .venv/bin/python scripts/kill_trials.py --trials 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crash_trials import KINDS, OPS, sweep  # noqa: E402
from tiny_models import build_bert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--ops", nargs="+", default=list(OPS))
    args = parser.parse_args()
    bad = 0

    def report(kind: str, op: str, counts: dict) -> None:
        nonlocal bad
        other = {k: v for k, v in counts.items() if k not in ("old", "new", "killed mid-change")}
        bad += sum(other.values())
        if op != "compact" and not counts.get("killed mid-change"):
            other["no kill landed mid-change: the trials tested nothing"] = 1
            bad += 1
        print(f"{kind:<9} {op:<10} {args.trials:>6} {counts.get('old', 0):>4} {counts.get('new', 0):>4} "
              f"{counts.get('killed mid-change', 0):>10}  {other or ''}", flush=True)

    print(f"{'kind':<9} {'operation':<10} {'trials':>6} {'old':>4} {'new':>4} {'mid-change':>10}  other", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"bert": str(build_bert(root / "bert")), "mlm": str(build_bert(root / "mlm", masked_lm=True))}
        sweep(root, models, args.trials, args.kinds, args.ops, report=report)
    print(f"unreadable or wrong-state outcomes: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
