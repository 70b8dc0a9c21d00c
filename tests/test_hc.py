"""The hc sidecar as a real process: checks, the preStop drain, signals, and a real Envoy."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from _workload_procs import Workload, igw, port_open, random_host
from gtnb._wait import wait_until
from gtnb.workloads.envoy_stats import HC_STATS_QUERY, hc_active_counts
from gtnb.workloads.hc import parse_args

LINE = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z level=(info|warn) pod=test-pod event=\w+")


@dataclass
class FakeAdmin:
    """A real HTTP server standing in for Envoy's admin: counts drain calls, serves set stats."""

    host: str
    rq_active: int = 1
    cx_active: int = 2
    drain_calls: list[str] = field(default_factory=list)
    stats_queries: list[str] = field(default_factory=list)

    def stats_text(self) -> str:
        # What Envoy returns, including the admin's own gauges the hc must not count.
        return (f"http.admin.downstream_rq_active: 1\n"
                f"http.outbound_0.0.0.0_8080.downstream_rq_active: {self.rq_active}\n"
                f"listener.admin.downstream_cx_active: 1\n"
                f"listener.{self.host}_8080.downstream_cx_active: {self.cx_active}\n"
                f"listener.{self.host}_8080.worker_0.downstream_cx_active: {self.cx_active}\n")


@pytest.fixture
def admin() -> Iterator[FakeAdmin]:
    state = FakeAdmin(random_host())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state.drain_calls.append(self.path)
            self._reply("OK\n")

        def do_GET(self) -> None:
            state.stats_queries.append(self.path)
            self._reply(state.stats_text())

        def _reply(self, body: str) -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((state.host, 15000), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def start_hc(tmp: Path, admin_url: str, *flags: str) -> tuple[Workload, str]:
    host = random_host()
    proc = Workload("hc", ["--listen", f"{host}:15080", "--envoy-admin", admin_url, "--pod", "test-pod", *flags], tmp)
    proc.wait_port(host, 15080)
    return proc, f"http://{host}:15080"


def index(lines: list[str], *needles: str) -> int:
    """Position of the first line containing every needle (fails the test when absent)."""
    for i, line in enumerate(lines):
        if all(n in line for n in needles):
            return i
    raise AssertionError(f"no line with {needles}:\n" + "\n".join(lines))


def test_prestop_drain_after_failed_checks(tmp_path: Path, admin: FakeAdmin) -> None:
    proc, base = start_hc(tmp_path, f"http://{admin.host}:15000", "--down-wait-s", "30",
                          "--down-after-checks", "2", "--poll-interval-s", "0.1", "--drain-timeout-s", "30")
    with proc, ThreadPoolExecutor(2) as pool:
        assert httpx.get(f"{base}/healthz").status_code == 200
        # Both containers' preStop hooks call /prestop; both must wait on the same drain.
        callers: list[Future[httpx.Response]] = [
            pool.submit(httpx.get, f"{base}/prestop", timeout=60) for _ in range(2)]
        proc.wait_line(lambda ln: "to=DRAINING reason=prestop" in ln, "the DRAINING transition")
        assert httpx.get(f"{base}/healthz").status_code == 503
        assert httpx.get(f"{base}/healthz").status_code == 503
        proc.wait_line(lambda ln: "event=drain_start" in ln, "the drain call")
        proc.wait_line(lambda ln: "event=poll rq_active=1 cx_active=2" in ln, "a poll with one request")
        assert not any(f.done() for f in callers)  # still blocked while a request is active
        admin.rq_active = 0
        responses = [f.result(timeout=30) for f in callers]
        assert [(r.status_code, r.text.strip()) for r in responses] == [(200, "DRAINED")] * 2
        assert admin.drain_calls == ["/drain_listeners?graceful"]
        assert all("downstream_" in q and q.startswith("/stats?usedonly&filter=") for q in admin.stats_queries)
        state = httpx.get(f"{base}/state").json()
        assert state["state"] == "DRAINED" and state["failed_checks"] == 2
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit() == 0
    lines = proc.lines()
    assert all(LINE.match(ln) for ln in lines), "\n".join(lines)
    order = [
        index(lines, "event=check code=200 state=SERVING"),
        index(lines, "event=transition from=SERVING to=DRAINING reason=prestop"),
        index(lines, "event=check code=503 state=DRAINING"),
        index(lines, "event=down_wait_over reason=checks failed_checks=2"),
        index(lines, f"event=drain_start url=http://{admin.host}:15000/drain_listeners?graceful status=200"),
        index(lines, "event=poll rq_active=1 cx_active=2"),
        index(lines, "event=poll rq_active=0"),
        index(lines, "event=transition from=DRAINING to=DRAINED reason=zero_active"),
        index(lines, "event=prestop_return code=200 state=DRAINED"),
        index(lines, "event=signal signal=SIGTERM"),
        index(lines, "event=transition from=DRAINED to=TERMINATING reason=sigterm"),
        index(lines, "event=exit"),
    ]
    assert order == sorted(order)
    assert sum("event=drain_start" in ln for ln in lines) == 1
    assert sum("event=check code=503" in ln for ln in lines[: order[4]]) == 2  # drained after the 2nd 503


def test_drain_timeout_when_a_request_never_ends(tmp_path: Path, admin: FakeAdmin) -> None:
    proc, base = start_hc(tmp_path, f"http://{admin.host}:15000", "--down-wait-s", "0.2",
                          "--down-after-checks", "0", "--poll-interval-s", "0.1", "--drain-timeout-s", "0.5")
    with proc:
        response = httpx.get(f"{base}/prestop", timeout=30)
        assert (response.status_code, response.text.strip()) == (200, "DRAINED")
    lines = proc.lines()
    assert index(lines, "down_wait_over reason=timer") < index(lines, "to=DRAINED reason=timeout")
    assert sum("event=poll rq_active=1" in ln for ln in lines) >= 2


def test_unreachable_envoy_admin_still_ends_the_drain(tmp_path: Path) -> None:
    proc, base = start_hc(tmp_path, f"http://{random_host()}:15000", "--down-wait-s", "0",
                          "--down-after-checks", "0", "--poll-interval-s", "0.1", "--drain-timeout-s", "0.5")
    with proc:
        assert httpx.get(f"{base}/prestop", timeout=30).text.strip() == "DRAINED"
    lines = proc.lines()
    assert "status=error" in lines[index(lines, "event=drain_start")]
    assert "level=warn" in lines[index(lines, "event=poll")] and "error=" in lines[index(lines, "event=poll")]
    index(lines, "to=DRAINED reason=timeout")


def test_sigterm_while_serving_is_the_current_mode_path(tmp_path: Path, admin: FakeAdmin) -> None:
    proc, base = start_hc(tmp_path, f"http://{admin.host}:15000")
    with proc:
        assert httpx.get(f"{base}/healthz").status_code == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit() == 0
    lines = proc.lines()
    assert index(lines, "event=signal signal=SIGTERM") < index(
        lines, "event=transition from=SERVING to=TERMINATING reason=sigterm") < index(lines, "event=exit")
    assert admin.drain_calls == []  # current mode: the sidecar never drains Envoy


def test_sigterm_releases_a_waiting_prestop(tmp_path: Path, admin: FakeAdmin) -> None:
    proc, base = start_hc(tmp_path, f"http://{admin.host}:15000", "--down-wait-s", "60")
    with proc, ThreadPoolExecutor(1) as pool:
        caller = pool.submit(httpx.get, f"{base}/prestop", timeout=60)
        proc.wait_line(lambda ln: "to=DRAINING" in ln, "the DRAINING transition")
        proc.signal(signal.SIGTERM)
        assert caller.result(timeout=30).text.strip() == "TERMINATING"
        assert proc.wait_exit() == 0
    index(proc.lines(), "event=transition from=DRAINING to=TERMINATING reason=sigterm")
    assert admin.drain_calls == []


def test_http_details_haproxy_and_kubelet_rely_on(tmp_path: Path, admin: FakeAdmin) -> None:
    proc, base = start_hc(tmp_path, f"http://{admin.host}:15000")
    with proc:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            # Two requests on one keep-alive connection; HAProxy's default check method; a query.
            sock.sendall(b"OPTIONS /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /nope?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"HTTP/1.1 404 Not Found\r\n" in reply
        state = httpx.get(f"{base}/state").json()
        assert (state["state"], state["failed_checks"], state["pod"]) == ("SERVING", 0, "test-pod")


def test_bad_settings_name_the_flag_and_env(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HC_POLL_INTERVAL_S", "0")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "--poll-interval-s / HC_POLL_INTERVAL_S" in capsys.readouterr().err
    monkeypatch.delenv("HC_POLL_INTERVAL_S")
    with pytest.raises(SystemExit):
        parse_args(["--envoy-admin", "127.0.0.1:15000"])
    assert "ENVOY_ADMIN_URL" in capsys.readouterr().err
    monkeypatch.setenv("HC_DOWN_AFTER_CHECKS", "3")
    monkeypatch.setenv("POD_NAME", "pod-from-env")
    settings = parse_args(["--down-wait-s", "7"])
    assert (settings.pod, settings.timings.down_after_checks, settings.timings.down_wait_s) == ("pod-from-env", 3, 7.0)


def test_drain_against_a_real_envoy(tmp_path: Path) -> None:
    """The hc drains a real Envoy: DRAINED only after the in-flight request completed."""
    with igw(tmp_path) as gw:
        proc, base = start_hc(tmp_path, gw.admin, "--down-wait-s", "0.2", "--down-after-checks", "0",
                              "--poll-interval-s", "0.2",
                              "--drain-timeout-s", "30")
        with proc, httpx.Client(base_url=gw.url, timeout=30) as client, ThreadPoolExecutor(1) as pool:
            assert client.get("/fast").status_code == 200
            inflight = pool.submit(client.get, "/sleep?seconds=2.5")
            # Ask for the drain only once Envoy counts the request as active.
            wait_until(lambda: hc_active_counts(httpx.get(gw.admin + HC_STATS_QUERY).text).rq_active == 1,
                       timeout_s=30, what="Envoy to count the in-flight request")
            prestop = httpx.get(f"{base}/prestop", timeout=60)
            assert (prestop.status_code, prestop.text.strip()) == (200, "DRAINED")
            response = inflight.result(timeout=30)
            assert response.status_code == 200 and response.text.strip() == "slept 2.5s"
            # Envoy marks a draining HTTP/1.1 connection for close on its next response.
            assert response.headers.get("connection") == "close"
        lines = proc.lines()
        polls = [ln for ln in lines if "event=poll" in ln]
        assert any("rq_active=1" in ln for ln in polls), "\n".join(lines)
        assert "rq_active=0" in polls[-1]
        assert index(lines, "status=200", "event=drain_start") < index(lines, "reason=zero_active")


HAPROXY_CFG = """
global
    log stdout format iso local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind {host}:8443
    default_backend istio-http-backend
backend istio-http-backend
    option httpchk GET /healthz
    default-server check port 15080 inter 200ms fastinter 200ms fall 2 rise 1
    server worker1 {host}:8080
"""


def iso_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.lab
def test_improved_chain_with_real_haproxy(tmp_path: Path) -> None:
    """HAProxy -> Envoy -> backend, hc checked by HAProxy: DOWN comes before the drain call, the
    in-flight request completes, and only then does /prestop return."""
    env = {"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true", "MINIMUM_DRAIN_DURATION": "0.5s"}
    with igw(tmp_path, env) as gw, ThreadPoolExecutor(2) as pool:
        hc = Workload("hc", ["--listen", f"{gw.host}:15080", "--envoy-admin", gw.admin, "--pod", "test-pod",
                             "--down-wait-s", "5", "--down-after-checks", "3", "--poll-interval-s", "0.2"], tmp_path)
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(host=gw.host))
        haproxy_log = tmp_path / "haproxy.log"
        with hc, open(haproxy_log, "wb") as out:
            hc.wait_port(gw.host, 15080)
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
            try:
                front = f"http://{gw.host}:8443"
                wait_until(lambda: port_open(gw.host, 8443), timeout_s=30, what="HAProxy to listen")
                hc.wait_line(lambda ln: "event=check code=200" in ln, "HAProxy's first check")
                assert httpx.get(f"{front}/fast").status_code == 200
                inflight = pool.submit(httpx.get, f"{front}/sleep?seconds=3", timeout=60)
                wait_until(lambda: hc_active_counts(httpx.get(gw.admin + HC_STATS_QUERY).text).rq_active == 1,
                           timeout_s=30, what="Envoy to count the in-flight request")
                prestop = pool.submit(httpx.get, f"http://{gw.host}:15080/prestop", timeout=60)
                assert inflight.result(timeout=30).status_code == 200
                assert prestop.result(timeout=30).text.strip() == "DRAINED"
                gw.agent.signal(signal.SIGTERM)
                assert gw.agent.wait_exit() == 0
            finally:
                haproxy.terminate()
                haproxy.wait(timeout=30)
        hc_lines, ha_lines = hc.lines(), haproxy_log.read_text().splitlines()
    # The `log stdout format iso` line (HAProxy also prints a [WARNING] copy to stderr).
    down = next(ln for ln in ha_lines if "Server istio-http-backend/worker1 is DOWN" in ln and ln[:1].isdigit())
    drain = hc_lines[index(hc_lines, "event=drain_start", "status=200")]
    zero = hc_lines[index(hc_lines, "reason=zero_active")]
    # The reason phrase is there, as HAProxy logs real sidecars (hypercorn would send none).
    assert 'Layer7 wrong status, code: 503, info: "Service Unavailable"' in down
    assert iso_ts(down.split()[0]) < iso_ts(re.search(r"ts=(\S+)", drain).group(1)) < \
        iso_ts(re.search(r"ts=(\S+)", zero).group(1))
    assert index(hc_lines, "down_wait_over reason=checks failed_checks=3") < index(hc_lines, "event=drain_start")
    # No request was cut at HAProxy: no server-side termination state (SH/SD) in the request log.
    assert not any(re.search(r" S[HD]-- ", ln) for ln in ha_lines), "\n".join(ha_lines)


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    host = random_host()
    with socket.socket() as taken:
        taken.bind((host, 15080))
        taken.listen()
        with Workload("hc", ["--listen", f"{host}:15080"], tmp_path) as proc:
            assert proc.wait_exit() == 1
    assert f"cannot listen on {host}:15080 (--listen / HC_LISTEN)" in proc.text()
