"""Running a snippet of Python on an emulated AVX2-only CPU (``qemu-x86_64 -cpu Haswell``: AVX2 and FMA, no AVX-512,
no VNNI, no BF16), where ATen, oneDNN, onnxruntime, OpenVINO and numba pick the kernels such a CPU runs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Mapping, Sequence

import pytest

#: Skips a test where the emulator cannot run this interpreter.
needs_qemu = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64" or not shutil.which("qemu-x86_64"),
    reason="needs an x86-64 Linux machine and QEMU's user-mode emulator (apt-get install qemu-user)")


def run_on_haswell(code: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                   timeout: float = 900) -> Any:
    """The JSON value ``code`` prints on its last line of output, run by this interpreter under QEMU's Haswell CPU
    with ``args`` in ``sys.argv[1:]`` (and ``env``, default this process's environment). Fails the test, with the
    end of its stderr, if it exits with an error."""
    out = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", code, *args],
                         env=dict(os.environ if env is None else env), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
