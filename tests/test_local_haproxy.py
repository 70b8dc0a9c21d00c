"""The local lab's HAProxy against the real thing: Debian's haproxy in master-worker mode in front
of a tiny threaded HTTP server started by each test (a /sleep endpoint holds a request open).

Proves: start and `show stat` read by header name; a good config reloads (same master, new
worker); a broken config is refused with haproxy's own message and the running HAProxy keeps
serving with the old sha256; a reload failing at run time (a bind clash that `haproxy -c` cannot
see) restores the previous config; a long request held across a reload completes; the SIGUSR2
fallback; the log follower; and no process is left behind.
"""

from __future__ import annotations

import csv
import http.client
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
import pytest

from gtnb._wait import wait_until
from gtnb.errors import BalancerError, ConfigError, LabError
from gtnb.targets.base import Balancer, Frontend
from gtnb.targets.local.haproxy import (
    HaproxyProcess,
    LocalBalancer,
    admin_command,
    master_proc_info,
    sha256_text,
)

pytestmark = pytest.mark.lab


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        if url.path == "/sleep":
            seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
            self.server.active += 1  # type: ignore[attr-defined]
            try:
                time.sleep(seconds)  # the request the reload must not cut
            finally:
                self.server.active -= 1  # type: ignore[attr-defined]
        body = f"ok {url.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def backend() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.active = 0  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _config(state: Path, port: int, backend_port: int, *, header: str = "v1", extra_bind: str = "") -> str:
    # Not the committed configs (those need the lab's certificates): the smallest config with
    # what the Balancer relies on — the admin socket, `log stdout format iso`, a checked server.
    return f"""
global
    log stdout format iso local0 info
    stats socket {state}/haproxy/admin.sock mode 600 level admin expose-fd listeners
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{port}
    {extra_bind}
    http-response set-header X-Config {header}
    default_backend be
backend be
    option httpchk GET /healthz
    server s1 127.0.0.1:{backend_port} check inter 500ms rise 1 fall 2
"""


def _get(port: int, path: str = "/fast", timeout: float = 20.0) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.getheader("X-Config") or ""
    finally:
        conn.close()


def _rows(stat: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(stat.lstrip("# "))))


def _status(balancer: LocalBalancer, px: str, sv: str) -> str:
    for row in _rows(balancer.show_stat()):
        if row["pxname"] == px and row["svname"] == sv:
            return row["status"]
    return ""


class Lab:
    def __init__(self, state: Path, proc: HaproxyProcess, balancer: LocalBalancer, port: int, backend_port: int) -> None:
        self.state, self.proc, self.balancer, self.port, self.backend_port = state, proc, balancer, port, backend_port

    def config(self, **kw: str) -> str:
        return _config(self.state, self.port, self.backend_port, **kw)


@pytest.fixture
def lab(tmp_path: Path, backend: ThreadingHTTPServer) -> Iterator[Lab]:
    state = tmp_path / "lab"
    port = _free_port()
    proc = HaproxyProcess(state)
    front = Frontend(host="127.0.0.1", port=port, sni="example.local", ca=tmp_path / "ca.pem")
    balancer = LocalBalancer(state, front)
    lab = Lab(state, proc, balancer, port, backend.server_address[1])
    pids: set[int] = set()
    try:
        proc.start(lab.config())
        wait_until(lambda: _status(balancer, "be", "s1") == "UP", timeout_s=20, what="s1 UP")
        pids.add(proc.pid or 0)
        yield lab
    finally:
        # Every HAProxy process this lab ever had (master, current and old workers).
        if proc.running:
            pids.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
        proc.stop()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} left"


def test_start_serves_and_show_stat_reads_by_header(lab: Lab) -> None:
    assert isinstance(lab.balancer, Balancer)
    assert _get(lab.port) == (200, "ok /fast\n", "v1")
    rows = _rows(lab.balancer.show_stat())
    header = next(csv.reader(io.StringIO(lab.balancer.show_stat().lstrip("# "))))
    assert len(header) > 100 and header[:2] == ["pxname", "svname"]  # 2.6 prints 140+ columns
    s1 = next(r for r in rows if r["svname"] == "s1")
    assert s1["status"] == "UP" and s1["check_status"] == "L7OK"
    assert int(s1["stot"]) >= 1
    assert lab.balancer.installed_sha256() == sha256_text(lab.config())
    assert lab.balancer.versions()["haproxy"].startswith("2.")
    log_text = (lab.state / "haproxy.log").read_text()
    assert '"GET /fast HTTP/1.1"' in log_text  # the request log, format iso


def test_good_config_reloads_same_master_new_worker(lab: Lab) -> None:
    before = master_proc_info(lab.proc.master_sock)
    text = lab.config(header="v2")
    sha = lab.balancer.install_config(text)
    after = master_proc_info(lab.proc.master_sock)
    assert sha == sha256_text(text) == lab.balancer.installed_sha256()
    assert after.master == before.master == lab.proc.pid  # reloaded, not restarted
    assert after.reloads == before.reloads + 1
    assert not set(after.workers) & set(before.workers)
    assert _get(lab.port)[2] == "v2"
    # The same text again: nothing to do, no reload.
    assert lab.balancer.install_config(text) == sha
    assert master_proc_info(lab.proc.master_sock).reloads == after.reloads


def test_broken_config_refused_with_haproxy_message_old_one_serving(lab: Lab) -> None:
    old_sha = lab.balancer.installed_sha256()
    before = master_proc_info(lab.proc.master_sock)
    broken = lab.config().replace("option httpchk", "option httpchkk")
    with pytest.raises(BalancerError) as err:
        lab.balancer.install_config(broken)
    assert "httpchkk" in str(err.value)  # haproxy's own words about the bad keyword
    assert lab.balancer.installed_sha256() == old_sha
    assert master_proc_info(lab.proc.master_sock) == before  # not even reloaded
    assert _get(lab.port)[:2] == (200, "ok /fast\n")


def test_runtime_reload_failure_restores_previous_config(lab: Lab) -> None:
    # `haproxy -c` does not bind, so a port taken by someone else passes the check and fails
    # only in the new worker: the install must put the old file back and reload it.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        old_sha = lab.balancer.installed_sha256()
        with pytest.raises(BalancerError) as err:
            lab.balancer.install_config(lab.config(header="v3", extra_bind=f"bind 127.0.0.1:{taken}"))
        assert "restored" in str(err.value)
    assert lab.balancer.installed_sha256() == old_sha
    assert _get(lab.port)[:3] == (200, "ok /fast\n", "v1")


def test_reload_under_long_request_loses_nothing(lab: Lab, backend: ThreadingHTTPServer) -> None:
    result: dict[str, object] = {}

    def long_request() -> None:
        try:
            result["response"] = _get(lab.port, "/sleep?seconds=6", timeout=30)
        except Exception as exc:  # recorded, asserted below
            result["error"] = exc

    t = threading.Thread(target=long_request)
    t.start()
    wait_until(lambda: backend.active == 1, timeout_s=10, what="the long request at the backend")  # type: ignore[attr-defined]
    lab.balancer.install_config(lab.config(header="v2"))
    info = master_proc_info(lab.proc.master_sock)
    assert backend.active == 1, "the reload returned after the request ended: the test proves nothing"  # type: ignore[attr-defined]
    assert info.old_workers, "the old worker should still be finishing the long request"
    t.join(30)
    assert "error" not in result, result.get("error")
    assert result["response"] == (200, "ok /sleep\n", "v1")  # answered by the old worker, whole
    assert _get(lab.port)[2] == "v2"
    wait_until(lambda: not master_proc_info(lab.proc.master_sock).old_workers, timeout_s=15,
               what="the old worker to exit once its request is done")


def test_sigusr2_fallback_when_master_socket_is_gone(lab: Lab) -> None:
    lab.proc.master_sock.unlink()
    text = lab.config(header="v4")
    assert lab.balancer.install_config(text) == sha256_text(text)
    assert _get(lab.port)[2] == "v4"


def test_follow_log_yields_new_lines_and_stops(lab: Lab) -> None:
    stop = threading.Event()
    lines: list[str] = []
    t = threading.Thread(target=lambda: lines.extend(lab.balancer.follow_log(stop)))
    t.start()
    wait_until(lambda: _get(lab.port, "/follow-me")[0] == 200 and any("/follow-me" in ln for ln in lines),
               timeout_s=10, what="the request line in the followed log", interval_s=0.3)
    assert not any('"GET /fast' in ln for ln in lines)  # from now on, not from the start
    stop.set()
    t.join(2)
    assert not t.is_alive()


def test_start_refuses_broken_config_and_starts_nothing(tmp_path: Path) -> None:
    proc = HaproxyProcess(tmp_path / "lab")
    with pytest.raises(BalancerError, match="unknown keyword"):
        proc.start(f"global\n    stats socket {proc.admin_sock} mode 600 level admin\n    bogus-keyword 1\n")
    assert proc.pid is None and not proc.running


def test_start_fails_clearly_when_haproxy_exits(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = HaproxyProcess(tmp_path / "lab")
        with pytest.raises(LabError, match="exited with code") as info:
            proc.start(_config(tmp_path / "lab", port, 1))
    # The reason is HAProxy's own [ALERT], from its stderr log.
    assert "haproxy.stderr.log" in str(info.value) and "[ALERT]" in str(info.value), info.value
    assert not proc.running


def test_admin_command_names_the_socket_when_down(tmp_path: Path) -> None:
    with pytest.raises(BalancerError, match="admin.sock"):
        admin_command(tmp_path / "admin.sock", "show stat")


def test_process_reload_checks_the_live_file_first(lab: Lab) -> None:
    before = master_proc_info(lab.proc.master_sock)
    lab.proc.config_path.write_text(lab.config().replace("mode http", "mode htttp"))  # behind its back
    with pytest.raises(BalancerError, match="htttp"):
        lab.proc.reload()
    assert master_proc_info(lab.proc.master_sock) == before  # the refused file never reached it
    assert _get(lab.port)[:2] == (200, "ok /fast\n")
    lab.proc.config_path.write_text(lab.config(header="v5"))
    assert lab.proc.reload().reloads == before.reloads + 1
    assert _get(lab.port)[2] == "v5"


def test_wait_servers_up_waits_until_every_server_is_checked(lab: Lab) -> None:
    from gtnb.haproxy_stat import wait_servers_up

    # s1 is checked at once, the dead s2 (nothing listens on port 1) only after ~1.5 s: right
    # after the reload HAProxy counts s2 UP without having checked it.
    text = lab.config().replace(
        f"server s1 127.0.0.1:{lab.backend_port} check inter 500ms rise 1 fall 2",
        f"server s1 127.0.0.1:{lab.backend_port} check inter 200ms rise 1\n"
        "    server s2 127.0.0.1:1 check inter 4s",
    )
    assert "server s2" in text
    lab.balancer.install_config(text)
    first = {r["svname"]: r for r in _rows(lab.balancer.show_stat()) if r["pxname"] == "be"}
    assert first["s2"]["check_status"] == "INI" and first["s2"]["status"].startswith("UP"), first["s2"]  # the hazard
    servers = wait_servers_up(lab.balancer, ["s1"], timeout_s=20, backend="be")
    assert servers["s1"]["status"] == "UP"
    assert servers["s2"]["check_status"] != "INI" and servers["s2"]["status"] == "DOWN", servers["s2"]
    with pytest.raises(BalancerError, match="no server s9"):
        wait_servers_up(lab.balancer, ["s9"], timeout_s=1, backend="be")
    with pytest.raises(BalancerError, match=r"s2 UP \(status DOWN, check L4CON\)"):
        wait_servers_up(lab.balancer, ["s2"], timeout_s=0.5, backend="be")


def test_haproxy_log_holds_only_timestamped_lines_stderr_goes_apart(lab: Lab) -> None:
    # With -db HAProxy repeats state changes on stderr (`[WARNING]  (pid) : Server be/s3 is
    # DOWN ...`, no timestamp); they once landed in haproxy.log next to the logged line.
    text = lab.config().replace(
        f"server s1 127.0.0.1:{lab.backend_port} check inter 500ms rise 1 fall 2",
        f"server s1 127.0.0.1:{lab.backend_port} check inter 500ms rise 1 fall 2\n"
        "    server s3 127.0.0.1:1 check inter 200ms fall 1",
    )
    lab.balancer.install_config(text)
    stderr_log = lab.state / "haproxy.stderr.log"
    wait_until(lambda: "Server be/s3 is DOWN" in (lab.state / "haproxy.log").read_text()
               and "Server be/s3 is DOWN" in stderr_log.read_text(),
               timeout_s=20, what="s3's DOWN in haproxy.log and haproxy.stderr.log")
    lines = (lab.state / "haproxy.log").read_text().splitlines()
    untimed = [line for line in lines if not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line)]
    assert untimed == [], untimed[:3]
    assert any(line.startswith("[WARNING]") and "be/s3 is DOWN" in line for line in stderr_log.read_text().splitlines())


def test_config_without_the_admin_socket_is_refused_up_front(lab: Lab, tmp_path: Path) -> None:
    moved = lab.config().replace(f"{lab.state}/haproxy/admin.sock", f"{tmp_path}/elsewhere.sock")
    with pytest.raises(ConfigError, match="GTNB_ADMIN_SOCKET="):
        lab.balancer.install_config(moved)
    with pytest.raises(ConfigError, match="needs `level admin`"):
        lab.balancer.install_config(lab.config().replace("level admin", "level user"))
    assert lab.balancer.installed_sha256() == sha256_text(lab.config())
    other = HaproxyProcess(tmp_path / "other")
    with pytest.raises(ConfigError, match="found: none"):
        other.start("global\n    maxconn 10\n")
    assert other.pid is None
