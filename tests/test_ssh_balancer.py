"""SshBalancer against a real OpenSSH server and a real HAProxy, both children of the test.

The jump host is the same sshd used twice (a direct-tcpip channel through the first connection
to the second), as `ssh -J` would. The "HAProxy node" is this machine: the profile's reload
command sends SIGUSR2 to the test HAProxy's master, which is what `systemctl reload haproxy`
does on Debian.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from _homelab_fixtures import node, sshd  # noqa: F401 (pytest fixtures)
from _sshd import Node, Sshd, install_tool, worker_pid
from gtnb._wait import wait_until
from gtnb.errors import BalancerError
from gtnb.targets.base import Balancer
from gtnb.targets.ssh import SshBalancer, declared_servers
from gtnb.targets.ssh_session import SshSession

pytestmark = pytest.mark.ssh


@pytest.fixture
def balancer(sshd: Sshd, node: Node) -> Iterator[SshBalancer]:
    b = SshBalancer(node.settings(sshd.host(jump=True)), node.frontend())
    yield b
    b.close()


def _get(node: Node, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.frontend_port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": "example.local"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_is_a_balancer_and_reads_stat_version_offset(balancer: SshBalancer, node: Node) -> None:
    assert isinstance(balancer, Balancer)
    stat = balancer.show_stat()
    assert stat.startswith("# pxname,svname,")
    assert "istio-http-backend,master1," in stat and "istio-http-backend,worker2," in stat
    assert balancer.versions()["haproxy"].startswith("2.")
    # Same clock on both ends: the measured offset must be within the round trip.
    offset = balancer.clock_offset_s()
    assert balancer.last_round_trip_s is not None
    assert abs(offset) <= balancer.last_round_trip_s + 0.05
    assert balancer.installed_sha256() == hashlib.sha256(node.cfg_path.read_bytes()).hexdigest()
    assert balancer.frontend().port == node.frontend_port


def test_good_config_installs_and_reloads(balancer: SshBalancer, node: Node) -> None:
    pid = worker_pid(node)
    text = node.config(extra="# gtnb test: a new revision\n")
    sha = balancer.install_config(text)
    assert sha == hashlib.sha256(text.encode()).hexdigest()
    assert node.cfg_path.read_text() == text
    assert worker_pid(node) != pid  # a reload happened: a new worker answers
    assert node.proc.poll() is None  # the master was reloaded, never restarted
    assert Path(f"{node.cfg_path}.gtnb-bak").is_file()
    assert _get(node, "/fast")[0] == 200


def test_broken_config_is_refused_and_haproxy_untouched(balancer: SshBalancer, node: Node) -> None:
    before = hashlib.sha256(node.cfg_path.read_bytes()).hexdigest()
    pid = worker_pid(node)
    with pytest.raises(BalancerError) as info:
        balancer.install_config(node.config(extra="backend broken\n  frobnicate yes\n"))
    msg = str(info.value)
    assert "haproxy -c" in msg and "frobnicate" in msg and "not touched" in msg
    assert hashlib.sha256(node.cfg_path.read_bytes()).hexdigest() == before
    assert worker_pid(node) == pid  # no reload at all
    assert _get(node, "/fast") == (200, b"ok\n")


def test_failed_reload_restores_the_backup(sshd: Sshd, node: Node) -> None:
    # Passes `haproxy -c` (which does not bind) but the new worker cannot bind 192.0.2.1 (TEST-NET):
    # the reload does not take, so the backup must come back and be reloaded.
    b = SshBalancer(node.settings(sshd.host(), reload_timeout_s=4.0), node.frontend())
    try:
        original = node.cfg_path.read_text()
        bad = node.config(extra="frontend unbindable\n  bind 192.0.2.1:80\n  default_backend istio-http-backend\n")
        with pytest.raises(BalancerError) as info:
            b.install_config(bad)
        assert "restored" in str(info.value) and "reload did not take" in str(info.value), str(info.value)
        assert node.cfg_path.read_text() == original
        assert _get(node, "/fast")[0] == 200
    finally:
        b.close()


def test_reload_during_traffic_loses_no_established_connection(balancer: SshBalancer, node: Node) -> None:
    result: dict[str, object] = {}

    def long_request() -> None:
        try:
            result["response"] = _get(node, "/sleep?seconds=3")
        except Exception as exc:  # recorded, asserted below
            result["error"] = exc

    t = threading.Thread(target=long_request)
    t.start()
    wait_until(node.request_started.is_set, timeout_s=20, what="the long request to reach the backend")
    pid = worker_pid(node)
    balancer.install_config(node.config(extra="# reload while a request is in flight\n"))
    assert worker_pid(node) != pid
    t.join(timeout=60)
    assert "error" not in result, result
    assert result["response"] == (200, b"ok\n")


def test_follow_log_yields_haproxy_lines_and_stops(balancer: SshBalancer, node: Node) -> None:
    stop = threading.Event()
    lines: list[str] = []

    def follow() -> None:
        for line in balancer.follow_log(stop):
            lines.append(line)

    t = threading.Thread(target=follow)
    t.start()
    try:
        wait_until(lambda: _get(node, "/fast?tag=gtnb-log") and any("gtnb-log" in x for x in lines),
                   timeout_s=20, interval_s=0.3, what="the request log line through tail -F")
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()
    assert any("istio-http-backend/master1" in x for x in lines)


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    from _sshd import keygen

    wrong = keygen(other)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {wrong}\n")
    with pytest.raises(BalancerError, match="CHANGED"):
        SshSession(sshd.host(known_hosts=kh), error=BalancerError)
    # A changed key is refused even when unknown hosts are allowed.
    with pytest.raises(BalancerError, match="CHANGED"):
        SshSession(sshd.host(known_hosts=kh, accept_unknown=True), error=BalancerError)


def test_unknown_host_is_refused_unless_allowed(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(BalancerError, match="accept_unknown_host_keys"):
        SshSession(sshd.host(known_hosts=empty), error=BalancerError)
    with SshSession(sshd.host(known_hosts=empty, accept_unknown=True)) as s:
        assert s.run("echo hello").stdout == "hello\n"


def test_sudo_wraps_every_node_command(sshd: Sshd, node: Node) -> None:
    # No sudo on this machine and we log in as root: a pass-through stand-in on the sessions'
    # PATH records each call, so the test sees that every node command went through `sudo -n`.
    calls, prefixes = sshd.dir / "sudo-calls", sshd.dir / "sudo-prefixes"
    calls.unlink(missing_ok=True)
    prefixes.unlink(missing_ok=True)
    install_tool(sshd.bin_dir, "sudo", f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n'
                 f'printf "%s\\n" "$1 $2 $3" >> {prefixes}\n[ "$1" = -n ] && shift\nexec "$@"\n')
    b = SshBalancer(node.settings(sshd.host(), sudo=True), node.frontend())
    try:
        b.install_config(node.config(extra="# via sudo\n"))
        assert b.show_stat().startswith("# pxname")
    finally:
        b.close()
        (sshd.bin_dir / "sudo").unlink()
    logged = calls.read_text()
    # the admin socket is read by the helper (python3 -u -c ...), itself started through sudo
    for word in ("-c -f", "install -m 0644", "mv -f", "kill -USR2", "python3 -u -c", "sha256sum"):
        assert word in logged, (word, logged)
    assert set(prefixes.read_text().splitlines()) == {"-n sh -c"}


def test_declared_servers_reads_backends_only() -> None:
    cfg = ("frontend fe\n  bind :80\nbackend be1\n  server a 1.2.3.4:80 check\n  server b 1.2.3.5:80\n"
           "listen stats\n  server notme 1.1.1.1:1\nbackend be2\n  server c 1.2.3.6:80\n")
    assert declared_servers(cfg) == {("be1", "a"), ("be1", "b"), ("be2", "c")}


def _helpers_running(node: Node) -> list[str]:
    import subprocess

    ps = subprocess.run(["ps", "-ewwo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "python3 -u -c" in line and str(node.admin_sock) in line]


def test_helper_serves_stat_and_ends_with_the_balancer(sshd: Sshd, node: Node) -> None:
    b = SshBalancer(node.settings(sshd.host(jump=True)), node.frontend())
    try:
        assert b.show_stat().startswith("# pxname")
        assert b._helper is not None and len(_helpers_running(node)) == 1  # one process, reused
        b.show_stat()
        assert len(_helpers_running(node)) == 1
    finally:
        b.close()
    wait_until(lambda: not _helpers_running(node), timeout_s=10, what="the helper to exit with its channel")


def test_without_python3_admin_commands_fall_back_to_exec(sshd: Sshd, node: Node,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # A node where the helper cannot start (its interpreter is missing), while the per-call
    # one-liner still works: show stat must still answer, the offset still be measured.
    b = SshBalancer(node.settings(sshd.host(), python="/nonexistent/python3"), node.frontend())
    try:
        with caplog.at_level("WARNING", logger="gtnb.ssh"):
            assert b.show_stat().startswith("# pxname")
        assert b._helper is None and "one SSH exec per admin command" in caplog.text
        b.clock_offset_s()
        assert b.last_round_trip_s is not None
    finally:
        b.close()


def test_broken_backup_is_not_restored(sshd: Sshd, node: Node) -> None:
    # Someone hand-edited the live file into something haproxy -c refuses (the running HAProxy
    # still has the old one loaded). A new config that fails after install must not be swapped
    # for that broken file: the checked config stays.
    node.cfg_path.write_text(node.config(extra="backend hand_edit\n  frobnicate yes\n"))
    b = SshBalancer(node.settings(sshd.host(), reload_timeout_s=3.0), node.frontend())
    try:
        bad = node.config(extra="frontend unbindable\n  bind 192.0.2.1:80\n  default_backend istio-http-backend\n")
        with pytest.raises(BalancerError, match="NOT restored"):
            b.install_config(bad)
        assert node.cfg_path.read_text() == bad  # passed haproxy -c; the broken backup did not come back
        assert _get(node, "/fast")[0] == 200
    finally:
        b.close()


def test_follow_strips_pty_colours_and_stops_the_remote_command(sshd: Sshd) -> None:
    stop = threading.Event()
    with SshSession(sshd.host()) as session:
        naptime = f"299.{sshd.port}"  # a sleep no one else runs: found by its argument below
        got = []
        for line in session.follow(f"printf '\\033[1;31mServer be/s1 is DOWN\\033[0m\\n'; exec sleep {naptime}", stop):
            got.append(line)
            stop.set()
        assert got == ["Server be/s1 is DOWN"]

        def remote_alive() -> bool:
            import subprocess

            ps = subprocess.run(["ps", "-ewwo", "args"], capture_output=True, text=True).stdout
            return any(f"sleep {naptime}" in line for line in ps.splitlines())

        # closing the channel hangs up the pty: the remote command does not outlive the follow
        wait_until(lambda: not remote_alive(), timeout_s=10, what="the remote follow command to end")


def test_haproxy_not_running_leaves_the_previous_file_and_says_so(sshd: Sshd, node: Node) -> None:
    # HAProxy is down (its master gone): the reload cannot work, the restore's reload neither.
    # gtnb must put the previous file back, never start or restart anything, and say what to do.
    original = node.cfg_path.read_text()
    node.proc.terminate()
    node.proc.wait(timeout=15)
    b = SshBalancer(node.settings(sshd.host(), reload_timeout_s=2.0), node.frontend())
    try:
        with pytest.raises(BalancerError) as info:
            b.install_config(node.config(extra="# while haproxy is down\n"))
    finally:
        b.close()
    msg = str(info.value)
    assert "reloading HAProxy failed" in msg and "restored" in msg and "systemctl status haproxy" in msg
    assert node.cfg_path.read_text() == original
