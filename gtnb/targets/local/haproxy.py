"""The local lab's HAProxy: Debian's `haproxy` in master-worker mode, and the Balancer over it.

`HaproxyProcess` is the process itself, owned by whoever starts it (the lab supervisor, or a
test): `haproxy -W -db -f <state>/haproxy/haproxy.cfg -S <state>/haproxy/master.sock`, in the
foreground so it stays our attached child (PID 1 here does not reap orphans), its output (the
`log stdout format iso` lines and the master's notices) appended to `<state>/haproxy.log`.

`LocalBalancer` is the gtnb Balancer over such a process, usable from any process that can read
the state directory: configs are checked with `haproxy -c`, written atomically and *reloaded*
through the master CLI, never restarted — a reload in master-worker mode lets the old workers
finish every established connection, which is what the homelab needs too (its HAProxy also
fronts the control plane on 6443).

Why not Debian's packaged config: it chroots into /var/lib/haproxy, switches user and writes to
/run/haproxy; the lab's config (haproxy/haproxy-<mode>.cfg rendered) keeps everything in the
state directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..._wait import wait_until
from ...errors import BalancerError, LabError
from ...haproxy_config import check_config, find_haproxy
from ..base import Frontend

__all__ = [
    "HaproxyProcess",
    "LocalBalancer",
    "ProcInfo",
    "admin_command",
    "haproxy_version",
    "master_proc_info",
    "reload_master",
    "sha256_text",
]

log = logging.getLogger("gtnb.haproxy")

START_TIMEOUT_S = 30.0  # two shared cores under test load: HAProxy parses, forks, binds
RELOAD_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


def sha256_text(text: str) -> str:
    """Return the sha256 (hex) of a config text as it is written to disk (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _paths(state_dir: Path) -> tuple[Path, Path, Path, Path, Path]:
    """(config, master.sock, admin.sock, pid file, haproxy.log) of a lab state directory."""
    d = state_dir / "haproxy"
    return d / "haproxy.cfg", d / "master.sock", d / "admin.sock", d / "haproxy.pid", state_dir / "haproxy.log"


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


def _admin_pid(admin_sock: Path) -> int | None:
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
    old_admin_pid = _admin_pid(admin_sock)
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
                    "see haproxy.log for its ALERT lines"
                )
            if info.reloads <= before.reloads:
                return None
        # Done when a *new* worker answers the admin socket (the old one may still be finishing
        # connections, but it no longer owns the socket).
        pid = _admin_pid(admin_sock)
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


def _write_atomic(path: Path, text: str) -> None:
    """Write a file so a reader (HAProxy's master on reload) never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode())
    os.replace(tmp, path)


@contextlib.contextmanager
def _install_lock(state_dir: Path) -> Iterator[None]:
    """One config install at a time per lab, across processes (a toggle and a test, say)."""
    fd = os.open(state_dir / "haproxy" / "install.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _child_setup() -> None:
    # Between fork and exec: own process group (a terminal's Ctrl-C goes to our owner, which
    # stops HAProxy in order), and death with the thread that started us, so a SIGKILLed owner
    # leaves no HAProxy behind (its workers exit when the master goes).
    os.setpgid(0, 0)
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class HaproxyProcess:
    """One master-worker HAProxy, our attached child.

    Parameters:
        state_dir: the lab's state directory; files go to `haproxy/` in it and `haproxy.log`.
        haproxy: the haproxy executable.
    """

    def __init__(self, state_dir: str | Path, *, haproxy: str = "haproxy") -> None:
        self.state_dir = Path(state_dir)
        self.haproxy = find_haproxy(haproxy)  # Debian's lives in /usr/sbin, often not on PATH
        self.config_path, self.master_sock, self.admin_sock, self.pid_file, self.log_path = _paths(self.state_dir)
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The master's pid while it runs."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, text: str, *, timeout_s: float = START_TIMEOUT_S) -> str:
        """Check the config, write it and start HAProxy; return once `show stat` answers.

        Parameters:
            text: the rendered config (its `stats socket` must be `<state>/haproxy/admin.sock`).
            timeout_s: how long HAProxy may take to answer.

        Returns:
            The sha256 of the config it runs. Raises BalancerError for a refused config, LabError
            when HAProxy exits or does not answer.
        """
        if self.running:
            raise LabError(f"HAProxy already runs (pid {self.pid}) for {self.state_dir}: stop it first")
        check_config(text, self.haproxy)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.master_sock, self.admin_sock, self.pid_file):
            stale.unlink(missing_ok=True)  # a socket file left by a killed lab would fool the wait
        _write_atomic(self.config_path, text)
        argv = [self.haproxy, "-W", "-db", "-f", str(self.config_path), "-S", str(self.master_sock),
                "-p", str(self.pid_file)]
        with open(self.log_path, "ab") as out:
            self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           preexec_fn=_child_setup)
        log.info("haproxy: started pid %d: %s", self._popen.pid, " ".join(argv))

        def answers() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                code = self._popen.returncode
                self._popen = None
                raise LabError(f"HAProxy exited with code {code} at start; last lines of {self.log_path}:\n{_tail(self.log_path)}")
            with contextlib.suppress(BalancerError):
                return admin_command(self.admin_sock, "show stat", timeout_s=2.0).startswith("# pxname")
            return False

        try:
            wait_until(answers, timeout_s=timeout_s, what=f"HAProxy to answer `show stat` on {self.admin_sock}",
                       interval_s=0.05, error=LabError)
        except BaseException:
            self.stop()
            raise
        return sha256_text(text)

    def reload(self, *, timeout_s: float = RELOAD_TIMEOUT_S) -> ProcInfo:
        """Reload the running HAProxy from its config file (see `reload_master`)."""
        if not self.running:
            raise LabError(f"HAProxy does not run for {self.state_dir}: start it first")
        return reload_master(self.master_sock, self.admin_sock, pid_file=self.pid_file, timeout_s=timeout_s)

    def version(self) -> str:
        return haproxy_version(self.haproxy)

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop HAProxy (SIGTERM: the master stops its workers at once) and reap it; SIGKILL to
        its process group when it does not go in time. Safe to call twice.

        Returns:
            The master's exit code, or None if it was not running.
        """
        popen, self._popen = self._popen, None
        if popen is None:
            return None
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("haproxy: pid %d ignored SIGTERM for %g s; killing its process group", popen.pid, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        # Workers are the master's children and go with it; a killed master's workers see the
        # master pipe close and exit. Whatever still sits in the group now is a leftover.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        log.info("haproxy: pid %d exited with code %s", popen.pid, popen.returncode)
        return popen.returncode

    def __enter__(self) -> HaproxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in lines[-n:])


class LocalBalancer:
    """The gtnb Balancer of a local lab's HAProxy, from any process.

    Parameters:
        state_dir: the lab's state directory.
        frontend: where clients connect.
        haproxy: the haproxy executable (for `haproxy -c` and `-v`).
        admin_socket: the config's `stats socket` (default `<state>/haproxy/admin.sock`).
        reload_timeout_s: how long a reload may take before it counts as failed.
    """

    def __init__(
        self,
        state_dir: str | Path,
        frontend: Frontend,
        *,
        haproxy: str = "haproxy",
        admin_socket: str | Path | None = None,
        reload_timeout_s: float = RELOAD_TIMEOUT_S,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._frontend = frontend
        self.haproxy = find_haproxy(haproxy)
        self.config_path, self.master_sock, admin, self.pid_file, self.log_path = _paths(self.state_dir)
        self.admin_sock = Path(admin_socket) if admin_socket is not None else admin
        self.reload_timeout_s = reload_timeout_s

    def install_config(self, text: str) -> str:
        """Check, write atomically, reload, verify; restore the previous file on failure.

        Parameters:
            text: the rendered config.

        Returns:
            The sha256 of the installed file. Raises BalancerError quoting haproxy when the check
            fails (the running HAProxy untouched), or naming the failure after a restore.
        """
        check_config(text, self.haproxy)  # a refused config never reaches the live file
        new_sha = sha256_text(text)
        with _install_lock(self.state_dir):
            try:
                previous = self.config_path.read_text()
            except OSError as exc:
                raise BalancerError(f"no live HAProxy config at {self.config_path} ({exc.strerror}): is the lab up?") from exc
            if sha256_text(previous) == new_sha and _admin_pid(self.admin_sock) is not None:
                log.info("haproxy: config %s already installed and serving; no reload", new_sha[:12])
                return new_sha
            _write_atomic(self.config_path, text)
            try:
                info = reload_master(self.master_sock, self.admin_sock, pid_file=self.pid_file,
                                     timeout_s=self.reload_timeout_s)
            except BalancerError as exc:
                log.error("haproxy: reload with config %s failed (%s); restoring the previous config", new_sha[:12], exc)
                _write_atomic(self.config_path, previous)
                try:
                    reload_master(self.master_sock, self.admin_sock, pid_file=self.pid_file,
                                  timeout_s=self.reload_timeout_s)
                except BalancerError as again:
                    raise BalancerError(
                        f"HAProxy reload failed ({exc}) and so did the reload with the restored previous config "
                        f"({again}): check {self.log_path} and restart the lab (`gtnb lab down`, `gtnb lab up`)"
                    ) from exc
                raise BalancerError(
                    f"HAProxy did not take the new config ({exc}); the previous config "
                    f"{sha256_text(previous)[:12]} is restored and serving. See {self.log_path}"
                ) from exc
        log.info("haproxy: reloaded with config %s: workers %s, old workers finishing %s", new_sha[:12],
                 list(info.workers), list(info.old_workers))
        return new_sha

    def installed_sha256(self) -> str:
        try:
            return hashlib.sha256(self.config_path.read_bytes()).hexdigest()
        except OSError as exc:
            raise BalancerError(f"no live HAProxy config at {self.config_path} ({exc.strerror}): is the lab up?") from exc

    def show_stat(self) -> str:
        return admin_command(self.admin_sock, "show stat")

    def follow_log(self, stop: threading.Event) -> Iterator[str]:
        """Yield haproxy.log's lines written from now on, until `stop` is set (checked every 0.2 s)."""
        with open(self.log_path, "a+b") as f:  # a+: create it if HAProxy has not written yet
            f.seek(0, os.SEEK_END)
            partial = b""
            while not stop.is_set():
                data = f.readline()
                if not data:
                    stop.wait(0.2)
                    continue
                partial += data
                if partial.endswith(b"\n"):
                    yield partial.rstrip(b"\r\n").decode(errors="replace")
                    partial = b""

    def frontend(self) -> Frontend:
        return self._frontend

    def clock_offset_s(self) -> float:
        return 0.0  # same host, same clock

    def versions(self) -> dict[str, str]:
        return {"haproxy": haproxy_version(self.haproxy)}
