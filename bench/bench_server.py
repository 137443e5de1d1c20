"""Server benchmark: `latelex serve` under a bounded load on loopback, against the same searches in process.

    .venv/bin/python bench/bench_server.py --index DIR          # a SciFact index built by `latelex index`
    .venv/bin/python bench/bench_server.py                      # builds a PLAID index of SciFact first (~6 min)

For each number of concurrent clients (1, 4, 16 by default) the bench runs two phases, one after the other on
the same machine, each bounded by ``--requests`` and ``--seconds`` (whichever comes first):

1. **server**: ``latelex serve`` in a child process on 127.0.0.1 over a copy of the index; N client threads
   (httpx, keep-alive) send a mix of searches (k=10, one SciFact test query each) and adds (one document each,
   a SciFact abstract under a new id) in the ratio ``--add-share``. Reported: requests per second, p50 / p95 /
   p99 latency of searches and of adds, errors (any non-2xx or transport error; must be 0), and the server's
   peak resident memory (VmHWM from /proc).
2. **in process**: the same searches through ``Retriever.search`` in N threads of this process (the reference a
   server is measured against: its overhead is the ratio of the two).

Nothing is left running: the server is stopped with SIGTERM after each phase (SIGKILL if it does not stop).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED, machine, print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(index: Path, port: int, threads: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    child = subprocess.Popen([sys.executable, "-m", "latelex.cli", "serve", f"bench={index}", "--port", str(port),
                              "-q", "--max-concurrent", "256"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"latelex serve exited: {child.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            time.sleep(0.2)
    child.kill()
    raise SystemExit("latelex serve did not start within 300 s")


def stop_server(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run_clients(clients: int, budget: int, seconds: float, work) -> tuple[float, int]:
    """Run ``work(i, client_number)`` from ``clients`` threads until ``budget`` calls or ``seconds`` have passed;
    returns the wall time and the number of calls made."""
    counter = iter(range(budget))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    made = [0]

    def loop(c: int) -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            work(i, c)
            with lock:
                made[0] += 1

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, made[0]


def server_phase(index: Path, clients: int, queries: list[str], docs: list[str], add_share: float, args) -> dict:
    import httpx

    workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
    copy = workdir / "index"
    shutil.copytree(index, copy)
    port = free_port()
    child = start_server(copy, port, args.threads)
    url = f"http://127.0.0.1:{port}"
    sessions = [httpx.Client(base_url=url, timeout=120) for _ in range(clients)]
    search_ms: list[float] = []
    add_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    every = max(1, round(1 / add_share)) if add_share > 0 else 0

    def work(i: int, c: int) -> None:
        is_add = every and i % every == every - 1
        start = time.perf_counter()
        try:
            if is_add:
                body = {"documents": [{"id": f"bench-add-{clients}-{i}", "text": docs[i % len(docs)],
                                       "metadata": {"bench": True}}]}
                r = sessions[c].post("/indexes/bench/documents", json=body)
            else:
                r = sessions[c].post("/indexes/bench/search", json={"query": queries[i % len(queries)], "k": 10,
                                                                     "with_text": False})
            ok = r.status_code < 300
            detail = r.text[:200]
        except httpx.HTTPError as exc:
            ok, detail = False, repr(exc)
        ms = (time.perf_counter() - start) * 1000
        with lock:
            (add_ms if is_add else search_ms).append(ms)
            if not ok:
                errors.append(detail)

    try:
        for w in range(min(4, len(queries))):  # warm the server: model, arrays, first query
            sessions[0].post("/indexes/bench/search", json={"query": queries[w], "k": 10})
        wall, made = run_clients(clients, args.requests, args.seconds, work)
        peak = peak_rss_mb(child.pid)
    finally:
        for s in sessions:
            s.close()
        stop_server(child)
        shutil.rmtree(workdir, ignore_errors=True)
    return {"wall": wall, "made": made, "search": search_ms, "add": add_ms, "errors": errors, "peak": peak}


def inprocess_phase(retriever, clients: int, queries: list[str], searches: int, args) -> dict:
    search_ms: list[float] = []
    lock = threading.Lock()

    def work(i: int, c: int) -> None:
        start = time.perf_counter()
        retriever.search(queries[i % len(queries)], k=10, with_text=False)
        with lock:
            search_ms.append((time.perf_counter() - start) * 1000)

    for w in range(min(4, len(queries))):
        retriever.search(queries[w], k=10)
    wall, made = run_clients(clients, searches, args.seconds, work)
    return {"wall": wall, "made": made, "search": search_ms}


def build_index(path: Path) -> None:
    from latelex import ColBERT, Retriever
    from latelex.data import read_documents

    encoder = ColBERT.from_pretrained("latelex-colbert-minilm")
    docs = list(read_documents(SHARED / "datasets" / "scifact"))
    Retriever.build(path, encoder, docs, kind="plaid", show_progress=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="a retriever index of SciFact (default: build a PLAID one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=300, help="request budget per phase (default 300)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget per phase (default 60 s)")
    parser.add_argument("--add-share", type=float, default=0.1, help="share of requests that add (default 0.1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, server and in process (default 2)")
    args = parser.parse_args()

    import torch

    from latelex import Retriever
    from latelex.data import read_documents
    from latelex.data.auto import read_queries_any

    torch.set_num_threads(args.threads)
    folder = SHARED / "datasets" / "scifact"
    if not folder.exists():
        raise SystemExit(f"{folder} is absent: the benchmark needs the shared datasets (set LATELEX_SHARED)")
    queries = [text for _, text in read_queries_any(folder, split="test")]
    docs = [text for _, text in read_documents(folder)][:1000]
    index = args.index
    scratch = None
    if index is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-server-index-"))
        index = scratch / "scifact-plaid"
        print(f"building a PLAID index of SciFact at {index} ...", flush=True)
        build_index(index)
    info = Retriever.inspect(index)
    print(f"machine: {machine()}")
    print(f"index: {info['kind']}, {info['documents']} documents, model {info['encoder'].get('model')}; "
          f"{len(queries)} queries; {args.add_share:.0%} of server requests add one document; "
          f"budget per phase: {args.requests} requests or {args.seconds:.0f} s")
    local = Retriever.open(index)
    rows = []
    total_errors = 0

    def row(clients: int, what: str, phase: dict, reference: dict | None) -> list[str]:
        rps = phase["made"] / phase["wall"]
        searches = phase["search"]
        out = [str(clients), what, str(phase["made"]), f"{rps:.1f}",
               f"{percentile(searches, 50):.1f} / {percentile(searches, 95):.1f} / {percentile(searches, 99):.1f}",
               f"{percentile(phase['add'], 50):.0f} / {percentile(phase['add'], 95):.0f}" if phase.get("add") else "-",
               str(len(phase["errors"])) if "errors" in phase else "-",
               f"{phase['peak']:.0f}" if "peak" in phase else "-"]
        if reference is None:
            return out + ["1.00", "1.00"]
        ref_rps = reference["made"] / reference["wall"]
        search_rps = len(searches) / phase["wall"]
        return out + [f"{search_rps / ref_rps:.2f}", f"{percentile(searches, 50) / percentile(reference['search'], 50):.2f}"]

    try:
        for clients in args.clients:
            only = server_phase(index, clients, queries, docs, 0.0, args)
            mixed = server_phase(index, clients, queries, docs, args.add_share, args)
            inproc = inprocess_phase(local, clients, queries, args.requests, args)
            rows.append(row(clients, "in process (Retriever.search)", inproc, None))
            rows.append(row(clients, "server, searches only", only, inproc))
            rows.append(row(clients, f"server, {args.add_share:.0%} adds", mixed, inproc))
            for phase in (only, mixed):
                total_errors += len(phase["errors"])
                for e in phase["errors"][:3]:
                    print(f"  error at {clients} clients: {e}")
    finally:
        local.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print_table(["clients", "run", "requests", "req/s", "search p50/p95/p99 ms", "add p50/p95 ms", "errors",
                 "server peak MiB", "search/s vs in-process", "search p50 vs in-process"], rows)
    print(f"\nerrors in all: {total_errors} (must be 0). The ratios compare each server run's searches per second and "
          f"search p50 with the in-process run at the same number of clients.")
    if total_errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
