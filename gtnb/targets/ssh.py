"""The homelab's HAProxy node as a Balancer, over SSH with paramiko.

The one rule: the HAProxy node never runs a config that failed `haproxy -c`, and HAProxy is
never restarted (it also fronts the control plane on 6443). Installing a config therefore goes
upload -> `haproxy -c` -> back up the live file -> install -> reload -> verify on the admin
socket, and any failure after the backup restores it and reloads again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import shlex
import threading
from collections.abc import Iterator

from .._wait import wait_until
from ..config import BalancerSettings, FrontendSettings
from ..errors import BalancerError
from .base import Frontend
from .ssh_helper import RemoteHelper
from .ssh_session import SshSession

__all__ = ["SshBalancer", "declared_servers", "admin_command"]

log = logging.getLogger("gtnb.ssh")

_BACKEND = re.compile(r"^\s*backend\s+(\S+)")
_SECTION = re.compile(r"^\s*(frontend|listen|defaults|global|peers|resolvers|userlist|cache|program|mailers|ring)\b")
_SERVER = re.compile(r"^\s*server\s+(\S+)")


def declared_servers(cfg: str) -> set[tuple[str, str]]:
    """The (backend, server) pairs a config declares: what `show stat` must list after a reload."""
    found: set[tuple[str, str]] = set()
    backend: str | None = None
    for line in cfg.splitlines():
        if m := _BACKEND.match(line):
            backend = m.group(1)
        elif _SECTION.match(line):
            backend = None
        elif backend and (m := _SERVER.match(line)):
            found.add((backend, m.group(1)))
    return found


def admin_command(socket_path: str, command: str) -> str:
    """A shell line that sends one command to HAProxy's admin socket and prints the answer.

    socat is the seed's tool; nodes without it (a minimal Debian) get a python3 one-liner.
    """
    sock, cmd = shlex.quote(socket_path), shlex.quote(command)
    py = ("import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
          "s.sendall(sys.argv[2].encode()+b'\\n');"
          "[sys.stdout.buffer.write(b) for b in iter(lambda:s.recv(65536),b'')]")
    return (f"if command -v socat >/dev/null 2>&1; then echo {cmd} | socat stdio UNIX-CONNECT:{sock}; "
            f"else python3 -c {shlex.quote(py)} {sock} {cmd}; fi")


class SshBalancer:
    """HAProxy on a node reached over SSH (through a jump host when the profile names one).

    Parameters:
        settings: the profile's `balancer` section.
        frontend: the profile's `frontend` section.
        session: an open SshSession to reuse (tests, or a caller that already has one).
    """

    def __init__(self, settings: BalancerSettings, frontend: FrontendSettings,
                 session: SshSession | None = None) -> None:
        self.settings = settings
        self._frontend = frontend
        self._ssh = session or SshSession(settings.ssh, error=BalancerError)
        self._owns_session = session is None
        self.last_round_trip_s: float | None = None
        self._helper: RemoteHelper | None = None
        self._helper_unavailable = False  # no python3 there: one exec per call instead
        self._helper_lock = threading.Lock()  # the stat sampler and a toggle may ask at once

    # --- config install ---------------------------------------------------------------------------

    def install_config(self, text: str) -> str:
        """Check with `haproxy -c`, install and reload (never restart); verify, or restore.

        Parameters:
            text: the rendered HAProxy config.

        Returns:
            The sha256 of the installed file.
        """
        s = self.settings
        live = shlex.quote(s.config_path)
        backup = shlex.quote(s.config_path + ".gtnb-bak")
        want = hashlib.sha256(text.encode()).hexdigest()
        tmp = self._ssh.check(
            "umask 077; f=$(mktemp /tmp/gtnb-haproxy.XXXXXX) && cat > \"$f\" && echo \"$f\"",
            stdin=text.encode(), what="uploading the HAProxy config", fix="Check /tmp on the HAProxy node",
        ).stdout.strip()
        qtmp = shlex.quote(tmp)
        try:
            check = self._ssh.run(f"{s.haproxy_bin} -c -f {qtmp}", sudo=s.sudo)
            if not check.ok:
                raise BalancerError(
                    f"HAProxy refused the config (haproxy -c, exit {check.exit_status}); the running "
                    f"HAProxy was not touched: {check.output()}. Fix the config and install again"
                )
            log.info("haproxy -c passed on %s", self._ssh.host.hostname)
            pid_before = self._worker_pid()
            had_live = self._ssh.run(f"test -f {live}", sudo=s.sudo).ok
            if had_live:
                self._ssh.check(f"cp -p {live} {backup}", sudo=s.sudo, what="backing up the live config",
                                fix=f"Check that {s.config_path} is readable and its directory writable")
            self._replace_live(qtmp, "installing the config")
            try:
                self._reload()
                self._verify(text, pid_before)
            except BalancerError as exc:
                if not had_live:
                    raise
                # The backup was the running config, but a hand edit may have broken the file
                # since: restore only what passes the same check.
                if not self._ssh.run(f"{s.haproxy_bin} -c -f {backup}", sudo=s.sudo).ok:
                    raise BalancerError(f"{exc} -- NOT restored: the backup {s.config_path}.gtnb-bak fails "
                                        "`haproxy -c` itself; the new (checked) config stays in place") from exc
                log.warning("install failed after the live file changed; restoring: %s", exc)
                self._replace_live(backup, "restoring the backed-up config")
                try:
                    self._reload()
                except BalancerError as again:
                    raise BalancerError(
                        f"{exc} -- the previous config file was restored from {s.config_path}.gtnb-bak, but "
                        f"reloading it failed too: {again}. HAProxy may not be running: check "
                        f"`systemctl status haproxy` on the node (reload or start it by hand; gtnb never restarts it)"
                    ) from exc
                raise BalancerError(
                    f"{exc} -- the previous config was restored from {s.config_path}.gtnb-bak and HAProxy "
                    f"reloaded with it"
                ) from exc
        finally:
            try:
                self._ssh.run(f"rm -f {qtmp}")
            except BalancerError as exc:  # a lost connection must not hide what went wrong above
                log.warning("could not remove %s on %s: %s", tmp, self._ssh.host.hostname, exc)
        got = self.installed_sha256()
        if got != want:
            raise BalancerError(f"{s.config_path} has sha256 {got} after install, expected {want}: "
                                "something else wrote the file; install again")
        log.info("installed HAProxy config %s on %s and reloaded", want[:12], self._ssh.host.hostname)
        return got

    def _replace_live(self, source: str, what: str) -> None:
        """Copy next to the live file, then rename over it: HAProxy (or a person) never reads a
        half-written config, even if the disk fills up mid-copy."""
        s = self.settings
        live = shlex.quote(s.config_path)
        new = shlex.quote(s.config_path + ".gtnb-new")
        self._ssh.check(f"install -m 0644 {source} {new} && mv -f {new} {live}", sudo=s.sudo,
                        what=f"{what} to {s.config_path}",
                        fix=f"Check sudo, the free space and that {s.config_path}'s directory is writable")

    def _reload(self) -> None:
        self._ssh.check(self.settings.reload_command, sudo=self.settings.sudo, what="reloading HAProxy",
                        fix="Check `journalctl -u haproxy` on the node")

    def _worker_pid(self) -> str | None:
        """The current worker's pid from `show info`; a reload makes a new worker."""
        ok, out = self._admin("show info")
        m = re.search(r"^Pid:\s*(\d+)", out, re.M)
        return m.group(1) if ok and m else None

    def _admin(self, command: str) -> tuple[bool, str]:
        """One admin-socket command: through the helper when it runs, else one exec."""
        with self._helper_lock:
            if self._helper is None and not self._helper_unavailable:
                try:
                    self._helper = RemoteHelper(self._ssh, self.settings.admin_socket, sudo=self.settings.sudo,
                                                python=self.settings.python)
                except BalancerError as exc:
                    self._helper_unavailable = True
                    log.warning("no helper on %s (%s): one SSH exec per admin command", self._ssh.host.hostname, exc)
            helper = self._helper
        if helper is not None:
            try:
                out = helper.ask(f"admin {command}")
                return not out.startswith("ERROR "), out
            except BalancerError as exc:  # the channel broke: drop it, answer by exec, retry next time
                log.warning("helper on %s failed: %s", self._ssh.host.hostname, exc)
                with self._helper_lock:
                    if self._helper is helper:
                        helper.close()
                        self._helper = None
        r = self._ssh.run(admin_command(self.settings.admin_socket, command), sudo=self.settings.sudo, timeout_s=10)
        return r.ok, (r.stdout if r.ok else r.output())

    def _verify(self, text: str, pid_before: str | None) -> None:
        """Wait until a new worker answers on the admin socket and lists every declared server."""
        expected = declared_servers(text)
        seen: dict[str, object] = {}

        def reloaded() -> bool:
            pid = self._worker_pid()
            seen["pid"] = pid
            if pid is None or (pid_before is not None and pid == pid_before):
                return False
            present = {(row["pxname"], row["svname"]) for row in _rows(self._stat_or_empty())}
            seen["missing"] = sorted(expected - present)
            return not seen["missing"]

        try:
            wait_until(reloaded, timeout_s=self.settings.reload_timeout_s, interval_s=0.2,
                       what="a new HAProxy worker listing every declared server", error=BalancerError)
        except BalancerError as exc:
            detail = (f"worker pid still {pid_before} (the reload did not take: see `journalctl -u haproxy`)"
                      if seen.get("pid") in (None, pid_before)
                      else f"servers missing from show stat: {seen.get('missing')}")
            raise BalancerError(f"HAProxy did not come back verified after the reload: {exc}; {detail}") from exc

    # --- observation ------------------------------------------------------------------------------

    def installed_sha256(self) -> str:
        r = self._ssh.check(f"sha256sum {shlex.quote(self.settings.config_path)}", sudo=self.settings.sudo,
                            what="hashing the installed config", fix="Check that the config path exists")
        return r.stdout.split()[0]

    def show_stat(self) -> str:
        """The raw `show stat` CSV from the admin socket."""
        out = self._stat_or_empty()
        if not out.startswith("# pxname"):
            raise BalancerError(
                f"`show stat` on {self.settings.admin_socket} ({self._ssh.host.hostname}) did not answer: "
                f"{out[:200]!r}. Check that haproxy runs and its global section has "
                f"`stats socket {self.settings.admin_socket} level admin`"
            )
        return out

    def _stat_or_empty(self) -> str:
        return self._admin("show stat")[1]

    def follow_log(self, stop: threading.Event) -> Iterator[str]:
        """HAProxy's log lines from now on, through the profile's log_command (journal or file)."""
        yield from self._ssh.follow(self.settings.log_command, stop, sudo=self.settings.sudo)

    def frontend(self) -> Frontend:
        f = self._frontend
        return Frontend(host=f.host, port=f.port, sni=f.sni, ca=f.ca)

    def clock_offset_s(self) -> float:
        """The node's clock minus ours, round-trip corrected (`date +%s.%N` over the channel)."""
        self._admin("show info")  # starts the helper if it can run: its round trip is the channel's alone
        helper = self._helper
        offset, rtt = helper.clock_offset_s() if helper else self._ssh.clock_offset_s()
        self.last_round_trip_s = rtt
        log.info("clock offset of %s: %+.4f s (round trip %.4f s)", self._ssh.host.hostname, offset, rtt)
        return offset

    def versions(self) -> dict[str, str]:
        r = self._ssh.run(f"{self.settings.haproxy_bin} -v", sudo=self.settings.sudo, timeout_s=10)
        first = r.stdout.strip().splitlines()[0] if r.ok and r.stdout.strip() else "unknown"
        m = re.search(r"version\s+(\S+)", first)
        return {"haproxy": m.group(1) if m else first}

    def close(self) -> None:
        with self._helper_lock:
            if self._helper is not None:
                self._helper.close()
                self._helper = None
        if self._owns_session:
            self._ssh.close()


def _rows(stat_csv: str) -> list[dict[str, str]]:
    """Parse `show stat` (header line starts with `# `)."""
    text = stat_csv.lstrip()
    if not text.startswith("# "):
        return []
    return list(csv.DictReader(io.StringIO(text[2:])))
