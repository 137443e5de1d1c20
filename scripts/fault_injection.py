"""The full fault-injection sweep: every change (build, overwrite, add, delete, upsert, compact) of every kind that
commits (flat, PLAID, inverted) killed at each of its fsync, fdatasync, rename and unlink calls in turn (strace
``inject=...:signal=SIGKILL:when=N``), each followed by open, --verify, an exact old-or-new check, a vectors-from-
texts check and one more change. Prints the counts per kind and change; exits 1 on any other outcome.

    .venv/bin/python scripts/fault_injection.py [--kinds plaid] [--ops add] [--every 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crash_trials import KINDS, OPS  # noqa: E402
from fault_injection import count_calls, inject, points, strace_available  # noqa: E402
from tiny_models import build_bert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--ops", nargs="+", default=["build", *OPS])
    parser.add_argument("--every", type=int, default=1, help="kill at every N-th call only (default: every call)")
    args = parser.parse_args()
    if not strace_available():
        sys.exit("strace is not installed: apt-get install strace")
    bad = 0
    print(f"{'kind':<9} {'change':<10} {'points':>6} {'old':>4} {'new':>4}  calls / other outcomes")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"bert": str(build_bert(root / "bert")), "mlm": str(build_bert(root / "mlm", masked_lm=True))}
        for kind in args.kinds:
            for op in args.ops:
                counts = count_calls(root, kind, op, models)
                tally: dict[str, int] = {}
                for syscall, nth in points(counts, args.every):
                    outcome = inject(root, kind, op, models, syscall, nth)
                    key = outcome if outcome in ("old", "new") else f"{syscall}#{nth}: {outcome}"
                    tally[key] = tally.get(key, 0) + 1
                other = {k: v for k, v in tally.items() if k not in ("old", "new")}
                bad += sum(other.values())
                print(f"{kind:<9} {op:<10} {sum(tally.values()):>6} {tally.get('old', 0):>4} {tally.get('new', 0):>4}  "
                      f"{counts} {other or ''}", flush=True)
    print(f"unreadable or wrong-state outcomes: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
