"""Test helpers for the workload tests: real processes on random loopback addresses.

Each workload runs as `python -m gtnb.workloads.<name>` with its stdout in a file the test reads;
every process started here is stopped and waited for (no orphans, PID 1 does not reap here).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from gtnb._wait import wait_until

__all__ = ["random_host", "port_open", "Workload", "Igw", "igw"]

START_TIMEOUT_S = 30.0  # two shared cores and other engineers' tests: be generous


def random_host() -> str:
    """A loopback address outside the local lab's 127.100-199 range, unlikely to be in use."""
    return f"127.{random.randint(200, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Workload:
    """One workload process; use as a context manager so it is always stopped and reaped."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{random.randint(0, 1 << 30)}.log"
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"gtnb.workloads.{name}", *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
        )

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_port(self, host: str, port: int) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.text()}")
            return port_open(host, port)

        wait_until(up, timeout_s=START_TIMEOUT_S, what=f"{self.name} to listen on {host}:{port}")

    def wait_line(self, predicate: Callable[[str], bool], what: str, timeout_s: float = 30.0) -> str:
        """Wait until a log line satisfies `predicate`; return it."""
        return wait_until(lambda: next((ln for ln in self.lines() if predicate(ln)), None),
                          timeout_s=timeout_s, what=f"{self.name} to log {what}")

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; always reaped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Igw:
    """A backend plus an agent-run Envoy on one random loopback address (the lab's ports)."""

    host: str
    backend: Workload
    agent: Workload

    @property
    def url(self) -> str:
        return f"http://{self.host}:8080"

    @property
    def admin(self) -> str:
        return f"http://{self.host}:15000"

    @property
    def status(self) -> str:
        return f"http://{self.host}:15021"


@contextmanager
def igw(log_dir: Path, agent_env: dict[str, str] | None = None) -> Iterator[Igw]:
    """Start backend (:9080) and agent + Envoy (:8080 listener, :15000 admin, :15021 status)."""
    host = random_host()
    with ExitStack() as stack:
        backend = stack.enter_context(Workload("backend", ["--listen", f"{host}:9080"], log_dir))
        agent = stack.enter_context(Workload(
            "agent",
            ["--listen", f"{host}:8080", "--backend", f"{host}:9080", "--admin", f"{host}:15000",
             "--status-listen", f"{host}:15021", "--drain-time-s", "30"],
            # Short drains by default so a test's teardown (SIGTERM) is quick.
            log_dir, env={"TERMINATION_DRAIN_DURATION": "1s", "MINIMUM_DRAIN_DURATION": "1s", **(agent_env or {})},
        ))
        backend.wait_port(host, 9080)
        agent.wait_port(host, 8080)
        agent.wait_port(host, 15021)
        yield Igw(host, backend, agent)
