"""Child processes of the lab supervisor: spawned attached, in their own process group, with
PR_SET_PDEATHSIG so nothing outlives a SIGKILLed supervisor, their output captured line by line
with the `kubectl logs --timestamps` prefix.

Two Linux facts shape this module:

- PID 1 on these machines does not reap orphans, so every child stays attached and is wait()ed.
- PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. A
  child spawned from a short-lived thread (an HTTP handler, a pod's termination thread) would
  be SIGKILLed when that thread ends. So every spawn goes through one long-lived thread
  (`Spawner`).
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from ...errors import LabError

__all__ = ["rfc3339nano", "Child", "Spawner", "set_pdeathsig", "become_subreaper", "reap_orphans"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when the thread that forked it exits."""
    if _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become_subreaper() -> None:
    """Make orphaned descendants (Envoy after its agent was SIGKILLed, HAProxy workers after
    their master) our children instead of PID 1's, which never reaps them here."""
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def reap_orphans(keep: set[int]) -> list[tuple[int, str]]:
    """Reap zombie children that no Popen owns (descendants re-parented to us).

    Parameters:
        keep: pids a Popen will reap itself; never touched.

    Returns:
        (pid, name) of each process reaped.
    """
    import psutil  # only the supervisor reaps; keep procs importable without it

    reaped = []
    for child in psutil.Process().children():
        if child.pid in keep:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                name = child.name()
                os.waitpid(child.pid, os.WNOHANG)
                reaped.append((child.pid, name))
        except (psutil.Error, ChildProcessError):
            pass
    return reaped


def _child_setup() -> None:
    # Runs in the child between fork and exec: own process group (signals reach the whole
    # container: the agent and its Envoy), and death with the supervisor.
    os.setpgid(0, 0)
    set_pdeathsig(signal.SIGKILL)
    # The parent (supervisor) may have died between fork and prctl: then we are already orphaned.
    if os.getppid() == 1:
        os._exit(137)


def rfc3339nano(ns: int | None = None) -> str:
    """UTC time as kubelet prints it in `kubectl logs --timestamps`: 2026-06-28T10:15:05.730511234Z."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class Child:
    """One running child process whose stdout+stderr go, line by line and timestamped, to a log
    file. `exit_file` (if given) is written after the last line: readers know the log is final."""

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        log_path: Path | None,
        exit_file: Path | None,
        on_exit: Callable[[Child], None] | None = None,
    ) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.exit_file = exit_file
        self.returncode: int | None = None
        self.exited = threading.Event()
        self._on_exit = on_exit
        self._pump = threading.Thread(target=self._run, name=f"log:{name}", daemon=True)
        self._pump.start()

    def _run(self) -> None:
        out = self.popen.stdout
        log: IO[bytes] | None = open(self.log_path, "ab") if self.log_path else None
        try:
            if out is not None:
                for raw in iter(out.readline, b""):
                    if log is not None:
                        line = raw.rstrip(b"\r\n")
                        log.write(rfc3339nano().encode() + b" " + line + b"\n")
                        log.flush()
                out.close()
        finally:
            if log is not None:
                log.close()
            self.returncode = self.popen.wait()
            if self.exit_file is not None:
                self.exit_file.write_text(f"{self.returncode}\n")
            self.exited.set()
            if self._on_exit is not None:
                self._on_exit(self)

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's process group (the container: e.g. agent and Envoy)."""
        if self.exited.is_set():
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def signal(self, sig: int) -> None:
        """Send `sig` to the child only (kubelet signals a container's main process)."""
        if self.exited.is_set():
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the child exited and its log is written out. Returns whether it did."""
        return self.exited.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the group, SIGKILL it after `timeout_s`, and wait for the child."""
        self.signal_group(signal.SIGTERM)
        if not self.wait(timeout_s):
            self.signal_group(signal.SIGKILL)
            self.wait(10.0)
        # The main process may be gone while a grandchild of its group lingers.
        self.signal_group(signal.SIGKILL)


_Request = tuple[dict[str, object], "Future[Child]"]


class Spawner:
    """Spawns every child from one long-lived thread (see the module docstring: PDEATHSIG)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._children: list[Child] = []
        # Held while a child is created and registered, and while orphans are reaped, so the
        # reaper never takes a fresh child's exit status from its Popen.
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="spawner", daemon=True)
        self._thread.start()

    def tracked_pids(self) -> set[int]:
        """Pids of children whose Popen has not reaped them yet (call with `lock` held)."""
        self._children = [c for c in self._children if not c.exited.is_set()]
        return {c.pid for c in self._children}

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kwargs, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                with self.lock:
                    child = self._spawn(**kwargs)  # type: ignore[arg-type]
                    self._children.append(child)
                fut.set_result(child)
            except BaseException as exc:  # handed to the caller, who raises it
                fut.set_exception(exc)

    @staticmethod
    def _spawn(
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path | None,
        exit_file: Path | None,
        cwd: Path | None,
        on_exit: Callable[[Child], None] | None,
    ) -> Child:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.touch()
        try:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
                close_fds=True,
            )
        except OSError as exc:
            raise LabError(f"{name}: could not start {argv[0]!r}: {exc}") from exc
        return Child(name, popen, log_path, exit_file, on_exit)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        exit_file: Path | None = None,
        cwd: Path | None = None,
        on_exit: Callable[[Child], None] | None = None,
    ) -> Child:
        """Start `argv` as a child and return it once it runs.

        Parameters:
            name: for log lines and errors (e.g. "pod service-a-igw-.../hc").
            env: the complete environment (default: this process's).
            log_path: where its timestamped output goes (None: discarded).
            exit_file: written with the exit code once the log is complete.
            on_exit: called (in the log thread) after the child exited.

        Returns:
            The running Child.
        """
        fut: Future[Child] = Future()
        kwargs = dict(
            name=name,
            argv=tuple(argv),
            env=dict(os.environ if env is None else env),
            log_path=log_path,
            exit_file=exit_file,
            cwd=cwd,
            on_exit=on_exit,
        )
        self._queue.put((kwargs, fut))
        return fut.result(timeout=30)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)
