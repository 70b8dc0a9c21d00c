"""Benchmark: what one IGW "pod" of the local lab costs, and how fast its parts answer.

Starts backend, agent (+ its Envoy) and hc on a random loopback address, then measures:

1. start-up: agent spawned -> readiness (`/healthz/ready` 200, Envoy LIVE), and backend / hc
   spawned -> listening;
2. resident memory of each process (psutil RSS) after the load below;
3. hc `/healthz` latency on a new connection per check (as HAProxy checks): p50 / p95 / max;
4. `/fast` requests/s on one keep-alive connection, through Envoy and straight to the backend.

Not a test: prints a Markdown table; with --write saves it to benchmarks/workloads.md.

    .venv/bin/python benchmarks/workloads.py [--checks 300] [--requests 1000] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil

from gtnb._wait import wait_until

HERE = Path(__file__).resolve().parent


def _open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn(stack: ExitStack, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", f"gtnb.workloads.{name}", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    return proc


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _ms(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    host = f"127.{random.randint(200, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
    rows: list[tuple[str, str]] = []
    with ExitStack() as stack:
        t0 = time.monotonic()
        backend = _spawn(stack, "backend", "--listen", f"{host}:9080")
        wait_until(lambda: _open(host, 9080), timeout_s=60, what="the backend")
        rows.append(("backend: spawn -> listening", f"{time.monotonic() - t0:.2f} s"))
        t0 = time.monotonic()
        agent = _spawn(stack, "agent", "--listen", f"{host}:8080", "--backend", f"{host}:9080",
                       "--admin", f"{host}:15000", "--status-listen", f"{host}:15021",
                       env={"TERMINATION_DRAIN_DURATION": "0.1s"})
        wait_until(lambda: _ready(f"http://{host}:15021/healthz/ready"), timeout_s=60, what="the agent")
        rows.append(("agent: spawn -> ready (Envoy LIVE)", f"{time.monotonic() - t0:.2f} s"))
        t0 = time.monotonic()
        hc = _spawn(stack, "hc", "--listen", f"{host}:15080", "--envoy-admin", f"http://{host}:15000",
                    "--pod", "bench")
        wait_until(lambda: _open(host, 15080), timeout_s=60, what="the hc")
        rows.append(("hc: spawn -> listening", f"{time.monotonic() - t0:.2f} s"))

        latencies = []
        for _ in range(args.checks):
            # A raw socket, as HAProxy's check: httpx.get() would add ~30 ms building a client.
            start = time.perf_counter()
            with socket.create_connection((host, 15080)) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hc\r\nConnection: close\r\n\r\n")
                while sock.recv(4096):
                    pass
            latencies.append(time.perf_counter() - start)
        rows.append((f"hc /healthz, new connection each ({args.checks})",
                     f"p50 {_ms(latencies, 0.5):.1f} ms, p95 {_ms(latencies, 0.95):.1f} ms, "
                     f"max {max(latencies) * 1000:.1f} ms"))
        for label, base in (("through Envoy", f"http://{host}:8080"), ("backend direct", f"http://{host}:9080")):
            with httpx.Client(base_url=base) as client:
                client.get("/fast")
                start = time.perf_counter()
                for _ in range(args.requests):
                    client.get("/fast")
                rate = args.requests / (time.perf_counter() - start)
            rows.append((f"/fast on one keep-alive connection, {label}", f"{rate:.0f} req/s"))

        envoy = psutil.Process(agent.pid).children()[0]
        for name, pid in (("backend", backend.pid), ("agent", agent.pid), ("envoy", envoy.pid), ("hc", hc.pid)):
            rows.append((f"RSS {name}", f"{psutil.Process(pid).memory_info().rss / 2**20:.0f} MiB"))
        total = sum(psutil.Process(p).memory_info().rss for p in (backend.pid, agent.pid, envoy.pid, hc.pid))
        rows.append(("RSS one pod + backend, total", f"{total / 2**20:.0f} MiB"))

    table = "\n".join([f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                       "", "| what | measured |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])
    print(table)
    if args.write:
        (HERE / "workloads.md").write_text("# Workloads benchmark\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
