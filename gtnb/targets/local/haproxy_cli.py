"""Talking to a running HAProxy over its unix sockets, as `socat` would: one command on the admin
(stats) socket, `show proc` and `reload` on the master CLI, and a reload that waits until a new
worker serves. Plain Python sockets: no socat needed on the lab machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..._wait import wait_until
from ...errors import BalancerError

__all__ = ["ProcInfo", "admin_command", "admin_pid", "haproxy_version", "master_proc_info", "reload_master"]

log = logging.getLogger("gtnb.haproxy")

RELOAD_TIMEOUT_S = 30.0  # two shared cores under test load: the new worker parses, binds, answers


def admin_command(sock: Path, command: str, *, timeout_s: float = 5.0) -> str:
    """Send one command to an HAProxy CLI socket (admin or master) and return its whole answer.

    Parameters:
        sock: the unix socket path.
        command: e.g. `show stat`, `show proc`, `reload`.
        timeout_s: connect and read timeout.

    Returns:
        The answer text. Raises BalancerError when the socket does not answer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(sock))
            s.sendall(command.encode() + b"\n")
            # The master CLI waits for more commands until our side closes: half-close it, as
            # `socat` does at the end of its stdin.
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError as exc:
        raise BalancerError(f"HAProxy socket {sock} did not answer {command!r} ({exc}): is HAProxy running?") from exc
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class ProcInfo:
    """What the master CLI's `show proc` says: the master, its current and old workers."""

    master: int
    reloads: int
    failed: int  # failed reloads (2.6 prints `N [failed: M]`)
    workers: tuple[int, ...]
    old_workers: tuple[int, ...]


_PROC_LINE = re.compile(r"^(\d+)\s+(master|worker)\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?")


def master_proc_info(master_sock: Path, *, timeout_s: float = 5.0) -> ProcInfo:
    """Parse `show proc` from the master CLI.

    Parameters:
        master_sock: `<state>/haproxy/master.sock`.
        timeout_s: socket timeout.

    Returns:
        A ProcInfo. Raises BalancerError when the socket does not answer or the answer has no
        master line.
    """
    text = admin_command(master_sock, "show proc", timeout_s=timeout_s)
    master = reloads = failed = 0
    workers: list[int] = []
    old: list[int] = []
    section = "master"
    for line in text.splitlines():
        if line.startswith("# workers"):
            section = "workers"
        elif line.startswith("# old workers"):
            section = "old"
        elif line.startswith("#"):
            section = "other"  # `# programs`, the header line
        elif m := _PROC_LINE.match(line):
            pid = int(m.group(1))
            if m.group(2) == "master":
                master, reloads, failed = pid, int(m.group(3)), int(m.group(4) or 0)
            elif section == "workers":
                workers.append(pid)
            elif section == "old":
                old.append(pid)
    if not master:
        raise BalancerError(f"HAProxy master CLI {master_sock} answered `show proc` without a master line: {text[:200]!r}")
    return ProcInfo(master, reloads, failed, tuple(workers), tuple(old))


def admin_pid(admin_sock: Path) -> int | None:
    """The pid of the worker serving the admin socket (`show info`), or None if it does not answer."""
    try:
        text = admin_command(admin_sock, "show info", timeout_s=2.0)
    except BalancerError:
        return None
    m = re.search(r"^Pid:\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def reload_master(
    master_sock: Path, admin_sock: Path, *, pid_file: Path | None = None, timeout_s: float = RELOAD_TIMEOUT_S
) -> ProcInfo:
    """Reload a master-worker HAProxy and wait until a new worker serves the admin socket.

    The master re-reads its `-f` file, forks new workers and tells the old ones to finish their
    connections and exit (they show under `# old workers` until then). The master CLI `reload`
    is used; when the master socket is gone, SIGUSR2 to the pid in `pid_file` does the same.

    Parameters:
        master_sock: the master CLI socket.
        admin_sock: the admin (stats) socket of the config.
        pid_file: the master's pid file (`-p`), for the SIGUSR2 fallback.
        timeout_s: how long the new worker may take.

    Returns:
        The ProcInfo after the reload. Raises BalancerError if the master reports a failed reload
        or no new worker answers in time.
    """
    old_admin_pid = admin_pid(admin_sock)
    try:
        before = master_proc_info(master_sock)
    except BalancerError:
        before = None
    if before is not None:
        admin_command(master_sock, "reload")
        how = "master CLI `reload`"
    else:
        pid = _read_pid(pid_file)
        if pid is None:
            raise BalancerError(f"cannot reload HAProxy: {master_sock} does not answer and no pid file: is it running?")
        log.warning("haproxy: master CLI %s does not answer; reloading with SIGUSR2 to %d", master_sock, pid)
        os.kill(pid, signal.SIGUSR2)
        how = f"SIGUSR2 to {pid}"

    def reloaded() -> ProcInfo | None:
        info: ProcInfo | None = None
        with contextlib.suppress(BalancerError):  # the master may be busy re-executing itself
            info = master_proc_info(master_sock, timeout_s=2.0)
        if before is not None:
            if info is None:
                return None
            if info.failed > before.failed:
                raise BalancerError(
                    f"HAProxy reported a failed reload ({how}; failed reloads {before.failed} -> {info.failed}): "
                    "see haproxy.stderr.log (local lab) or the HAProxy journal for its ALERT lines"
                )
            if info.reloads <= before.reloads:
                return None
        # Done when a *new* worker answers the admin socket (the old one may still be finishing
        # connections, but it no longer owns the socket).
        pid = admin_pid(admin_sock)
        if pid is None or pid == old_admin_pid or (info is not None and pid not in info.workers):
            return None
        return info if info is not None else ProcInfo(0, 0, 0, (pid,), ())

    return wait_until(
        reloaded, timeout_s=timeout_s, what=f"a new HAProxy worker to answer on {admin_sock} after {how}",
        interval_s=0.1, error=BalancerError,
    )


def _read_pid(pid_file: Path | None) -> int | None:
    if pid_file is None:
        return None
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def haproxy_version(haproxy: str = "haproxy") -> str:
    """Return HAProxy's version string, e.g. `2.6.12-1+deb12u4` (from `haproxy -v`)."""
    try:
        out = subprocess.run([haproxy, "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    except FileNotFoundError as exc:
        raise BalancerError(f"haproxy executable {haproxy!r} not found: install it (apt-get install haproxy)") from exc
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "unknown"
