"""One SSH connection with paramiko, through its jump chain, with verified host keys.

Used by the HAProxy balancer (gtnb/targets/ssh.py), preflight's `crictl images` on the nodes and
image sideloading. A jump host is a real SSH connection whose `direct-tcpip` channel carries the
next hop, as `ssh -J` does; every hop's host key is checked against known_hosts.
"""

from __future__ import annotations

import logging
import re
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import paramiko

from ..config import SshHost
from ..errors import TargetError

__all__ = ["SshSession", "CommandResult", "sudo_wrap"]

log = logging.getLogger("gtnb.ssh")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def output(self) -> str:
        """stdout and stderr together, for messages that quote the remote tool."""
        return "\n".join(s for s in (self.stdout.strip(), self.stderr.strip()) if s)


def sudo_wrap(command: str, sudo: bool) -> str:
    """`sudo -n sh -c '<command>'` when sudo is on: -n fails at once instead of prompting for a
    password nobody can type (secrets never reach gtnb)."""
    return f"sudo -n sh -c {shlex.quote(command)}" if sudo else command


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a host that is not in known_hosts, with the fingerprint to check and the fix."""

    def __init__(self, host: SshHost, error: type[TargetError]) -> None:
        self._host, self._error = host, error

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise self._error(
            f"SSH host {hostname} ({self._host.name}) is not in {self._host.known_hosts}: its "
            f"{key.get_name()} key is {key.fingerprint}. Check that fingerprint on the host "
            f"(`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), then `{self._host.ssh_command()}` once to "
            f"record it, or set accept_unknown_host_keys: true in the profile"
        )


class _AcceptAndWarn(paramiko.MissingHostKeyPolicy):
    """The profile allowed unknown hosts: accept for this session only and say so."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("accepting unknown SSH host key of %s: %s %s (accept_unknown_host_keys: true)",
                    hostname, key.get_name(), key.fingerprint)
        client.get_host_keys().add(hostname, key.get_name(), key)


class SshSession:
    """A connected SSH client to `host`, through `host.jump` when there is one.

    Parameters:
        host: the resolved host (gtnb.config.resolve_ssh_host).
        error: the exception class for failures (BalancerError for the HAProxy node).
        timeout_s: connect, banner and auth timeout of every hop.
    """

    def __init__(self, host: SshHost, *, error: type[TargetError] = TargetError, timeout_s: float = 10.0) -> None:
        self.host = host
        self._error = error
        self._timeout_s = timeout_s
        self._clients: list[paramiko.SSHClient] = []  # jump hops first, this host last
        self._lock = threading.Lock()
        try:
            self._client = self._connect(host)
        except BaseException:
            self.close()
            raise

    def _connect(self, host: SshHost) -> paramiko.SSHClient:
        sock: paramiko.Channel | None = None
        if host.jump is not None:
            jump = self._connect(host.jump)
            transport = jump.get_transport()
            assert transport is not None
            try:
                sock = transport.open_channel(
                    "direct-tcpip", (host.hostname, host.port), ("127.0.0.1", 0), timeout=self._timeout_s
                )
            except (paramiko.SSHException, OSError) as exc:
                raise self._error(
                    f"jump host {host.jump} could not open a channel to {host.hostname}:{host.port}: "
                    f"{exc}. Check that `{host.ssh_command()}` works and that the "
                    f"jump host allows TCP forwarding"
                ) from exc
        client = paramiko.SSHClient()
        self._clients.append(client)
        if host.known_hosts.is_file():
            client.load_host_keys(str(host.known_hosts))
        client.set_missing_host_key_policy(
            _AcceptAndWarn() if host.accept_unknown_host_keys else _RefuseUnknown(host, self._error)
        )
        keys = [str(p) for p in host.identity_files if p.is_file()]
        try:
            client.connect(
                host.hostname,
                port=host.port,
                username=host.user,
                key_filename=keys or None,
                look_for_keys=not keys,
                allow_agent=True,
                sock=sock,
                timeout=self._timeout_s,
                banner_timeout=self._timeout_s,
                auth_timeout=self._timeout_s,
            )
        except paramiko.BadHostKeyException as exc:
            raise self._error(
                f"SSH host key of {host.hostname}:{host.port} CHANGED: known_hosts has "
                f"{exc.expected_key.fingerprint}, the host sent {exc.key.fingerprint}. Refusing: this is "
                f"either a reinstalled host or a man in the middle. If you know the host was "
                f"reinstalled, remove the old entry (`ssh-keygen -R {host.hostname}`) and connect once by hand"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise self._error(
                f"SSH login to {host} failed: {exc}. Load your key into ssh-agent (`ssh-add`) or set "
                f"identity_file in the profile"
            ) from exc
        except (paramiko.SSHException, OSError, socket.timeout) as exc:
            if isinstance(exc, TargetError):
                raise
            raise self._error(f"SSH connection to {host} failed: {exc}. Check that `{host.ssh_command()}` works") from exc
        log.info("ssh: connected to %s", host)
        return client

    # --- commands ---------------------------------------------------------------------------------

    def run(self, command: str, *, sudo: bool = False, stdin: bytes | BinaryIO | None = None,
            timeout_s: float = 60.0) -> CommandResult:
        """Run a command and collect its output.

        Parameters:
            command: a POSIX shell command line.
            sudo: wrap it in `sudo -n sh -c`.
            stdin: bytes or a binary file to feed it (how files are uploaded: no SFTP subsystem
                needed; a file is sent in 1 MiB chunks, never read whole into memory).
            timeout_s: how long the command may take.

        Returns:
            Its exit status, stdout and stderr.
        """
        full = sudo_wrap(command, sudo)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise self._error(f"SSH connection to {self.host} is closed: open a new session")
        chan = transport.open_session(timeout=self._timeout_s)
        try:
            chan.settimeout(timeout_s)
            chan.exec_command(full)
            if isinstance(stdin, (bytes, bytearray)):
                chan.sendall(stdin)
            elif stdin is not None:
                while chunk := stdin.read(1 << 20):
                    chan.sendall(chunk)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout_s
            # Read both streams as they come, so a chatty stderr cannot stall stdout's window.
            while True:
                got = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if not got:
                    if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        raise self._error(f"`{command}` on {self.host} did not finish within {timeout_s:g} s")
                    time.sleep(0.005)
            status = chan.recv_exit_status()
        except socket.timeout as exc:
            raise self._error(f"`{command}` on {self.host} did not finish within {timeout_s:g} s") from exc
        finally:
            chan.close()
        return CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"))

    def check(self, command: str, *, sudo: bool = False, what: str, fix: str,
              stdin: bytes | BinaryIO | None = None, timeout_s: float = 60.0) -> CommandResult:
        """`run`, raising with `what` failed, the remote tool's output and `fix` on a non-zero exit."""
        result = self.run(command, sudo=sudo, stdin=stdin, timeout_s=timeout_s)
        if not result.ok:
            raise self._error(
                f"{what} failed on {self.host.hostname} (exit {result.exit_status}): "
                f"{result.output() or '(no output)'}. {fix}"
            )
        return result

    def follow(self, command: str, stop: threading.Event, *, sudo: bool = False) -> Iterator[str]:
        """Yield a long-running command's output lines until `stop` is set (noticed within 0.2 s).

        The command runs on a pty, so closing the channel hangs it up on the remote side: a
        `journalctl -f` or `tail -F` does not outlive the follow.
        """
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise self._error(f"SSH connection to {self.host} is closed: open a new session")
        chan = transport.open_session(timeout=self._timeout_s)
        chan.get_pty(width=4096)
        chan.settimeout(0.2)
        chan.exec_command(sudo_wrap(command, sudo))
        buf = b""

        def clean(raw: bytes) -> str:
            # A pty invites colours (journalctl highlights notice/alert lines): strip them, and the
            # pty's \r, so lines read as the tool wrote them to a file.
            return _ANSI.sub("", raw.rstrip(b"\r").decode(errors="replace"))

        try:
            while not stop.is_set():
                try:
                    data = chan.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield clean(line)
            if buf.strip():
                yield clean(buf)
        finally:
            chan.close()

    def clock_offset_s(self, samples: int = 5) -> tuple[float, float]:
        """This host's clock minus ours, from the sample with the shortest round trip.

        Returns:
            (offset_s, round_trip_s): the offset assumes the remote read happened mid-trip, so
            its error is at most half the round trip.
        """
        best: tuple[float, float] | None = None
        for _ in range(samples):
            t0 = time.time()
            result = self.run("date +%s.%N", timeout_s=10)
            t1 = time.time()
            try:
                remote = float(result.stdout.strip())
            except ValueError as exc:
                raise self._error(f"`date +%s.%N` on {self.host} printed {result.stdout!r}: GNU date needed") from exc
            rtt = t1 - t0
            if best is None or rtt < best[1]:
                best = (remote - (t0 + t1) / 2, rtt)
        assert best is not None
        return best

    def close(self) -> None:
        """Close this host's connection and every jump hop's (innermost first)."""
        for client in reversed(self._clients):
            client.close()
        self._clients.clear()

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
