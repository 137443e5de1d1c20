"""Starting a real latelex server for tests: uvicorn in a thread on a free loopback port, or `latelex serve` in a
child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(config) -> Iterator[tuple[str, object]]:
    """``(base_url, service)`` of a server for ``config`` running in a thread until the block ends."""
    import uvicorn

    from latelex.server import create_app
    from latelex.server.service import Service

    service = Service.open(config)
    app = create_app(service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def start_cli_server(args: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    """``latelex serve ARGS --port PORT`` in a child process, returned once /health answers."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    child = subprocess.Popen([sys.executable, "-m", "latelex.cli", "serve", *args, "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True)
    deadline = time.monotonic() + 120
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"latelex serve exited with {child.returncode}: {child.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            child.kill()
            raise RuntimeError("latelex serve did not answer /health within 120 s")
        time.sleep(0.1)
