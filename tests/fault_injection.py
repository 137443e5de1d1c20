"""Kill a change at every fsync, rename and unlink it makes: strace, attached to the child once it has loaded its
model and opened the index (``-p PID``: the imports before run at full speed, not stopped at each of their
thousands of calls), sends it SIGKILL at the N-th call of one system call
(``-e inject=SYSCALL:signal=SIGKILL:when=N``); the parent then checks that the kill happened and the index as the
kill -9 trials do (crash_trials.check: opens, verifies, old or new state exactly, vectors from their own texts,
one more change goes through).

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


def _traced(index: Path, kind: str, op: str, models: dict[str, str], strace: list[str]) -> tuple[str, int]:
    """Run the change in a child under ``strace -f -p`` (attached after its READY, before its change); returns the
    child's stdout and exit status (-9: killed)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "LATELEX_WORKER_WAIT": "1"}
    child = subprocess.Popen([sys.executable, str(WORKER), "worker", str(index), kind, op, json.dumps(models)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None and child.stdout is not None
    ready = child.stdout.readline()
    if ready.strip() != "READY":
        child.kill()
        _, err = child.communicate()
        raise RuntimeError(f"the {op} worker failed to start: {err[-2000:]}")
    tracer = subprocess.Popen(["strace", "-f", *strace, "-p", str(child.pid)], stderr=subprocess.PIPE, text=True)
    assert tracer.stderr is not None
    attached = tracer.stderr.readline()  # "strace: Process N attached with T threads"
    if "attached" not in attached:
        child.kill()
        tracer.kill()
        raise RuntimeError(f"strace could not attach: {attached.strip()}")
    child.stdin.write("go\n")
    child.stdin.flush()
    out, _ = child.communicate(timeout=900)
    tracer.communicate(timeout=60)
    return out, child.returncode


def count_calls(root: Path, kind: str, op: str, models: dict[str, str]) -> dict[str, int]:
    """How many times an uninterrupted run of ``op`` calls each system call of :data:`SYSCALLS`: counted on a second
    run, since the first may also write caches (numba's compiled kernels are renamed into place) that later runs
    only read, and a kill point past the calls a run makes would kill nothing."""
    log = root / f"count-{kind}-{op}.strace"
    for _ in range(2):
        index = _prepare(root, kind, op, models, f"count-{kind}-{op}")
        out, status = _traced(index, kind, op, models, ["-o", str(log), "-e", "trace=" + ",".join(SYSCALLS)])
        if "DONE" not in out or status != 0:
            raise RuntimeError(f"the {op} worker failed (exit {status})")
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines():
        match = re.match(r"^(?:\d+\s+)?(\w+)\(", line)
        if match and match.group(1) in SYSCALLS:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def inject(root: Path, kind: str, op: str, models: dict[str, str], syscall: str, nth: int) -> str:
    """Kill the change at the ``nth`` call of ``syscall``; returns crash_trials.check's outcome, or says that the
    child was not killed (the injection missed: a bad outcome, never counted as old or new)."""
    index = _prepare(root, kind, op, models, f"inject-{kind}-{op}")
    out, status = _traced(index, kind, op, models, ["-o", "/dev/null", "-e", f"trace={syscall}",
                                                    "-e", f"inject={syscall}:signal=SIGKILL:when={nth}"])
    if status != -9:
        return f"not killed (exit {status})"
    return check(index, kind, models, op, acknowledged="DONE" in out)


def points(counts: dict[str, int], every: int = 1) -> list[tuple[str, int]]:
    """(syscall, n) for every ``every``-th call of each system call."""
    return [(name, n) for name, total in sorted(counts.items()) for n in range(1, total + 1, every)]
