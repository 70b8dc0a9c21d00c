"""The local lab's HAProxy: Debian's `haproxy` in master-worker mode, and the Balancer over it.

`HaproxyProcess` is the process itself, owned by whoever starts it (the lab supervisor, or a
test): `haproxy -W -db -f <state>/haproxy/haproxy.cfg -S <state>/haproxy/master.sock`, in the
foreground so it stays our attached child (PID 1 here does not reap orphans), its stdout (the
`log stdout format iso` lines) appended to `<state>/haproxy.log` and its stderr (with `-db` the
master's and workers' `[NOTICE]`/`[WARNING]`/`[ALERT]` messages, which repeat state changes such
as `Server ... is DOWN` without a timestamp) to `<state>/haproxy.stderr.log`, so haproxy.log
holds only timestamped log lines, as a homelab's syslog file does.

`LocalBalancer` is the gtnb Balancer over such a process, usable from any process that can read
the state directory: configs are checked with `haproxy -c`, written atomically and *reloaded*
through the master CLI, never restarted — a reload in master-worker mode lets the old workers
finish every established connection, which is what the homelab needs too (its HAProxy also
fronts the control plane on 6443).

The socket conversations (`show stat`, `show proc`, `reload`) live in haproxy_cli.py.

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
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from ..._wait import wait_until
from ...errors import BalancerError, ConfigError, LabError
from ...haproxy_config import check_config, find_haproxy
from ..base import Frontend
from .haproxy_cli import RELOAD_TIMEOUT_S, ProcInfo, admin_command, admin_pid, haproxy_version, master_proc_info, reload_master

__all__ = [
    "HaproxyProcess",
    "LocalBalancer",
    "ProcInfo",
    "admin_command",
    "config_path",
    "ensure_admin_socket",
    "haproxy_version",
    "master_proc_info",
    "reload_master",
    "sha256_text",
    "stderr_log_path",
]

log = logging.getLogger("gtnb.haproxy")

START_TIMEOUT_S = 30.0  # two shared cores under test load: HAProxy parses, forks, binds
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


def sha256_text(text: str) -> str:
    """Return the sha256 (hex) of a config text as it is written to disk (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _paths(state_dir: Path) -> tuple[Path, Path, Path, Path, Path]:
    """(config, master.sock, admin.sock, pid file, haproxy.log) of a lab state directory."""
    d = state_dir / "haproxy"
    return d / "haproxy.cfg", d / "master.sock", d / "admin.sock", d / "haproxy.pid", state_dir / "haproxy.log"


def config_path(state_dir: Path) -> Path:
    """The live HAProxy config of a lab state directory (what a reload reads)."""
    return _paths(state_dir)[0]


def stderr_log_path(state_dir: Path) -> Path:
    """HAProxy's stderr (its un-timestamped notices and alerts) of a lab state directory."""
    return state_dir / "haproxy.stderr.log"


def _write_atomic(path: Path, content: str | bytes) -> None:
    """Write a file so a reader (HAProxy's master on reload) never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
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


_STATS_SOCKET = re.compile(r'^\s*stats\s+socket\s+"?([^"\s]+)"?(.*)$', re.M)


def ensure_admin_socket(text: str, admin_sock: Path) -> str:
    """Return `text` if it declares `stats socket <admin_sock> ... level admin`, else raise.

    The lab reads `show stat` and verifies reloads on that socket; a config that moves or drops
    it would only show up as a reload timeout, so it is refused before it runs.
    """
    # Compared resolved: a relative and an absolute spelling of one state dir are the same socket.
    declared = {str(Path(path).resolve()): (path, rest) for path, rest in _STATS_SOCKET.findall(text)}
    want = str(admin_sock.resolve())
    if want not in declared:
        found = ", ".join(path for path, _ in declared.values()) or "none"
        raise ConfigError(
            f"the HAProxy config must declare `stats socket {admin_sock} mode 600 level admin` (found: {found}): "
            f"render it with GTNB_ADMIN_SOCKET={admin_sock}"
        )
    if "level admin" not in declared[want][1]:
        raise ConfigError(f"the HAProxy config's stats socket {admin_sock} needs `level admin`: add it to that line")
    return text


def _child_setup() -> None:
    # Between fork and exec: own process group (a terminal's Ctrl-C goes to our owner, which
    # stops HAProxy in order), and death with the thread that started us, so a SIGKILLed owner
    # leaves no HAProxy behind (its workers exit when the master goes).
    os.setpgid(0, 0)
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class HaproxyProcess:
    """One master-worker HAProxy, our attached child. Start it from a long-lived thread: the
    kernel's PDEATHSIG fires when the *thread* that forked it exits.

    Parameters:
        state_dir: the lab's state directory; files go to `haproxy/` in it and `haproxy.log`.
        haproxy: the haproxy executable.
    """

    def __init__(self, state_dir: str | Path, *, haproxy: str = "haproxy") -> None:
        self.state_dir = Path(state_dir)
        self.haproxy = find_haproxy(haproxy)  # Debian's lives in /usr/sbin, often not on PATH
        self.config_path, self.master_sock, self.admin_sock, self.pid_file, self.log_path = _paths(self.state_dir)
        self.stderr_path = stderr_log_path(self.state_dir)
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
        ensure_admin_socket(text, self.admin_sock)
        check_config(text, self.haproxy)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.master_sock, self.admin_sock, self.pid_file):
            stale.unlink(missing_ok=True)  # a socket file left by a killed lab would fool the wait
        _write_atomic(self.config_path, text)
        argv = [self.haproxy, "-W", "-db", "-f", str(self.config_path), "-S", str(self.master_sock),
                "-p", str(self.pid_file)]
        with open(self.log_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           preexec_fn=_child_setup)
        log.info("haproxy: started pid %d: %s", self._popen.pid, " ".join(argv))

        def answers() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                code = self._popen.returncode
                self._popen = None
                # Why it failed (`[ALERT] ... cannot bind socket`) is on stderr.
                raise LabError(f"HAProxy exited with code {code} at start; last lines of {self.stderr_path}:\n"
                               f"{_tail(self.stderr_path)}\nand of {self.log_path}:\n{_tail(self.log_path)}")
            # Both sockets: the worker serves the admin socket before the master enters its own
            # loop and serves the master CLI (seen here: `show proc` refused for a moment after
            # `show stat` answers); a reload right after start needs the master CLI.
            with contextlib.suppress(BalancerError):
                return (admin_command(self.admin_sock, "show stat", timeout_s=2.0).startswith("# pxname")
                        and master_proc_info(self.master_sock, timeout_s=2.0).workers != ())
            return False

        try:
            wait_until(answers, timeout_s=timeout_s,
                       what=f"HAProxy to answer `show stat` on {self.admin_sock} and `show proc` on {self.master_sock}",
                       interval_s=0.05, error=LabError)
        except BaseException:
            self.stop()
            raise
        return sha256_text(text)

    def reload(self, *, timeout_s: float = RELOAD_TIMEOUT_S) -> ProcInfo:
        """Reload the running HAProxy from its config file (see `reload_master`)."""
        if not self.running:
            raise LabError(f"HAProxy does not run for {self.state_dir}: start it first")
        check_config(self.config_path.read_text(), self.haproxy)  # never reload into a refused file
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
        workers: list[psutil.Process] = []
        if popen.poll() is None:
            with contextlib.suppress(psutil.Error):
                workers = psutil.Process(popen.pid).children(recursive=True)
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
        # master pipe close and exit. One still running now is a leftover (is_running() also
        # checks the start time, so a recycled pid is never hit).
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                if worker.is_running():
                    log.warning("haproxy: worker %d outlived its master; killing it", worker.pid)
                    worker.kill()
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
        self.stderr_path = stderr_log_path(self.state_dir)
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
        ensure_admin_socket(text, self.admin_sock)
        check_config(text, self.haproxy)  # a refused config never reaches the live file
        new_sha = sha256_text(text)
        with _install_lock(self.state_dir):
            try:
                previous = self.config_path.read_bytes()  # bytes: a restore must be byte-exact
            except OSError as exc:
                raise BalancerError(f"no live HAProxy config at {self.config_path} ({exc.strerror}): is the lab up?") from exc
            previous_sha = hashlib.sha256(previous).hexdigest()
            if previous_sha == new_sha and admin_pid(self.admin_sock) is not None:
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
                        f"({again}): check {self.stderr_path} and restart the lab (`gtnb lab down`, `gtnb lab up`)"
                    ) from exc
                raise BalancerError(
                    f"HAProxy did not take the new config ({exc}); the previous config "
                    f"{previous_sha[:12]} is restored and serving. See {self.stderr_path}"
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
