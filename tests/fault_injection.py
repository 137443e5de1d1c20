"""Kill a change at every fsync, rename and unlink it makes: the child runs under strace, which sends it SIGKILL
at the N-th call of one system call (``-e inject=SYSCALL:signal=SIGKILL:when=N``); the parent then checks the
index as the kill -9 trials do (crash_trials.check: opens, verifies, old or new state exactly, vectors from their
own texts, one more change goes through).

Used by tests/test_fault_injection.py (a bounded subset) and scripts/fault_injection.py (every point).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from crash_trials import build_template, check

SYSCALLS = ("fsync", "fdatasync", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir")
WORKER = Path(__file__).resolve().parent / "crash_trials.py"


def strace_available() -> bool:
    return shutil.which("strace") is not None


def _prepare(root: Path, kind: str, op: str, models: dict[str, str], name: str) -> Path:
    index = root / name
    shutil.rmtree(index, ignore_errors=True)
    for leftover in root.glob(f".{name}.*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
    if op != "build":
        shutil.copytree(build_template(root, kind, models), index)
    return index


def _command(index: Path, kind: str, op: str, models: dict[str, str], strace: list[str]) -> list[str]:
    # --seccomp-bpf: the child stops only at the traced calls, not at each of the thousands an import makes (4x faster)
    return ["strace", "-f", "-qq", "--seccomp-bpf", *strace, sys.executable, str(WORKER), "worker", str(index), kind, op, json.dumps(models)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def count_calls(root: Path, kind: str, op: str, models: dict[str, str]) -> dict[str, int]:
    """How many times an uninterrupted run of ``op`` calls each system call of :data:`SYSCALLS`."""
    index = _prepare(root, kind, op, models, f"count-{kind}-{op}")
    log = root / f"count-{kind}-{op}.strace"
    done = subprocess.run(_command(index, kind, op, models, ["-o", str(log), "-e", "trace=" + ",".join(SYSCALLS)]),
                          capture_output=True, text=True, env=_env(), timeout=900)
    if "DONE" not in done.stdout:
        raise RuntimeError(f"the {op} worker failed: {done.stderr[-2000:]}")
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines():
        match = re.match(r"^(?:\d+\s+)?(\w+)\(", line)
        if match and match.group(1) in SYSCALLS:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def inject(root: Path, kind: str, op: str, models: dict[str, str], syscall: str, nth: int) -> str:
    """Kill the change at the ``nth`` call of ``syscall``; returns crash_trials.check's outcome."""
    index = _prepare(root, kind, op, models, f"inject-{kind}-{op}")
    done = subprocess.run(_command(index, kind, op, models, ["-o", "/dev/null", "-e", f"trace={syscall}",
                                                              "-e", f"inject={syscall}:signal=SIGKILL:when={nth}"]),
                          capture_output=True, text=True, env=_env(), timeout=900)
    return check(index, kind, models, op, acknowledged="DONE" in done.stdout)


def points(counts: dict[str, int], every: int = 1) -> list[tuple[str, int]]:
    """(syscall, n) for every ``every``-th call of each system call."""
    return [(name, n) for name, total in sorted(counts.items()) for n in range(1, total + 1, every)]
