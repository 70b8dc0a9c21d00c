"""The pilot-agent stand-in around a real Envoy: Istio's termination sequences, for real."""

from __future__ import annotations

import asyncio
import ctypes
import io
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from _workload_procs import Igw, Workload, igw, port_open, random_host
from gtnb._wait import wait_until
from gtnb.errors import ConfigError
from gtnb.workloads._common import format_go_duration, parse_go_duration
from gtnb.workloads.agent import Agent, parse_args
from gtnb.workloads.agent_proc import IstioLog, find_envoy
from gtnb.workloads.envoy_bootstrap import render_bootstrap, write_bootstrap
from gtnb.workloads.envoy_stats import HC_STATS_QUERY, hc_active_counts, istio_active_connections

ISTIO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\t(info|warn|error)\t(.*)$")


def agent_messages(gw: Igw) -> list[str]:
    """The agent's own lines (Istio format), without Envoy's forwarded output."""
    return [m.group(2) for ln in gw.agent.lines() if (m := ISTIO_LINE.match(ln))]


def wait_in_flight(gw: Igw, n: int = 1) -> None:
    wait_until(lambda: hc_active_counts(httpx.get(gw.admin + HC_STATS_QUERY).text).rq_active == n,
               timeout_s=30, what=f"Envoy to count {n} request(s) in flight")


def envoy_of(gw: Igw) -> psutil.Process:
    (child,) = psutil.Process(gw.agent.proc.pid).children()
    assert child.name() == "envoy"
    return child


# -- pure pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds, shown", [
    ("5s", 5.0, "5s"), ("1s", 1.0, "1s"), ("500ms", 0.5, "500ms"), ("1m30s", 90.0, "1m30s"),
    ("1.5s", 1.5, "1.5s"), ("2h", 7200.0, "2h0m0s"), ("0", 0.0, "0s"),
])
def test_go_durations_round_trip(text: str, seconds: float, shown: str) -> None:
    assert parse_go_duration(text, what="X") == pytest.approx(seconds)
    assert format_go_duration(seconds) == shown


@pytest.mark.parametrize("bad", ["5", "abc", "5 s", "-1s", ""])
def test_bad_durations_name_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="TERMINATION_DRAIN_DURATION"):
        parse_go_duration(bad, what="TERMINATION_DRAIN_DURATION")


def test_istio_connection_count_skips_what_istio_skips() -> None:
    stats = ("http.admin.downstream_cx_active: 1\n"
             "http.outbound_0.0.0.0_8080.downstream_cx_active: 3\n"
             "listener.admin.downstream_cx_active: 1\n"
             "listener.0.0.0.0_15021.downstream_cx_active: 4\n"
             "listener.0.0.0.0_15090.downstream_cx_active: 5\n"
             "listener.127.0.0.1_8080.downstream_cx_active: 3\n"
             "listener.127.0.0.1_8080.worker_0.downstream_cx_active: 3\n")
    assert istio_active_connections(stats) == 3
    assert istio_active_connections("") == -1


def test_bad_settings_are_refused_with_their_names(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TERMINATION_DRAIN_DURATION", "five")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "TERMINATION_DRAIN_DURATION" in capsys.readouterr().err
    monkeypatch.setenv("TERMINATION_DRAIN_DURATION", "2s")
    monkeypatch.setenv("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "maybe")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "EXIT_ON_ZERO_ACTIVE_CONNECTIONS" in capsys.readouterr().err
    monkeypatch.setenv("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "true")
    monkeypatch.setenv("MINIMUM_DRAIN_DURATION", "1500ms")
    settings = parse_args([])
    assert (settings.termination_drain_s, settings.exit_on_zero, settings.minimum_drain_s) == (2.0, True, 1.5)
    with pytest.raises(SystemExit):
        parse_args(["--envoy-bootstrap", "/nonexistent/bootstrap.json"])
    assert "--envoy-bootstrap" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="ENVOY_BINARY"):
        find_envoy("/nonexistent/envoy")


def test_generated_bootstrap_passes_envoys_own_validation(tmp_path: Path) -> None:
    path = write_bootstrap(tmp_path / "b.json", render_bootstrap("127.0.0.1:8080", "127.0.0.1:9080", "127.0.0.1:15000"))
    result = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the real agent --------------------------------------------------------------------------


def test_default_mode_kills_envoy_with_the_request_in_flight(tmp_path: Path) -> None:
    with igw(tmp_path, {"TERMINATION_DRAIN_DURATION": "1s"}) as gw, ThreadPoolExecutor(1) as pool:
        assert httpx.get(f"{gw.status}/healthz/ready").status_code == 200
        ok = httpx.get(f"{gw.url}/fast", headers={"x-request-id": "rid-fast"})
        assert ok.status_code == 200
        # Istio's text access log, forwarded verbatim.
        access = gw.agent.wait_line(lambda ln: '"rid-fast"' in ln, "the access log line")
        assert re.match(r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /fast HTTP/1.1" 200 - via_upstream - "-" '
                        r'0 3 \d+ \d+ "-" "python-httpx/[\d.]+" "rid-fast" "[\d.]+:8080" "[\d.]+:9080" '
                        r'outbound\|8080\|\|service-a-backend\.service-a\.svc\.cluster\.local ', access), access
        envoy = envoy_of(gw)

        def slow() -> tuple[str, float]:
            try:
                r = httpx.get(f"{gw.url}/sleep?seconds=10", timeout=60)
                return f"status {r.status_code}", time.monotonic()
            except httpx.TransportError as exc:
                return type(exc).__name__, time.monotonic()

        inflight = pool.submit(slow)
        wait_in_flight(gw)
        assert httpx.get(f"{gw.url}/fast", headers={"x-request-id": "rid-last"}).status_code == 200
        signalled = time.monotonic()
        gw.agent.signal(signal.SIGTERM)
        outcome, ended = inflight.result(timeout=30)
        assert outcome == "RemoteProtocolError"  # cut: the server closed without a response
        assert ended - signalled >= 1.0  # not before the drain duration
        assert gw.agent.wait_exit() == 0
        assert not port_open(gw.host, 15021) and not port_open(gw.host, 8080)
        assert not psutil.pid_exists(envoy.pid)  # killed and reaped by the agent
    # The access log was flushed before Envoy was SIGKILLed: no completed request is missing.
    assert '"rid-last"' in gw.agent.text()
    messages = agent_messages(gw)
    tail = messages[messages.index("Agent draining Proxy for termination"):]
    assert tail == [
        "Agent draining Proxy for termination",
        "Graceful termination period is 1s, starting...",
        "Graceful termination period complete, terminating remaining proxies.",
        "Aborting proxy",
        "Envoy aborted normally",
        "Aborted proxy instance",
        "Agent has successfully terminated",
    ]
    assert "warn\tAborting proxy" in gw.agent.text()
    assert messages.index("Status server has successfully terminated") < messages.index(tail[0])


def test_default_mode_truncates_an_h2c_stream(tmp_path: Path) -> None:
    """S4's shape at the proxy: an HTTP/2 stream is cut when Envoy is killed; no final line."""
    with igw(tmp_path, {"TERMINATION_DRAIN_DURATION": "1s"}) as gw:
        lines: list[str] = []
        error: str | None = None
        with httpx.Client(http1=False, http2=True, timeout=30) as client:
            try:
                with client.stream("GET", f"{gw.url}/stream?seconds=20&interval=0.2") as response:
                    assert response.http_version == "HTTP/2"
                    for line in response.iter_lines():
                        lines.append(line)
                        if len(lines) == 3:
                            gw.agent.signal(signal.SIGTERM)
            except httpx.TransportError as exc:
                error = type(exc).__name__
        assert gw.agent.wait_exit() == 0
    assert lines[:3] == ["chunk 1", "chunk 2", "chunk 3"]
    assert "done" not in lines and len(lines) < 100  # cut long before the planned 100 chunks
    # Envoy keeps the drained stream going until it is killed: chunks kept coming for the 1 s drain.
    assert len(lines) > 3
    assert error is not None, f"the stream ended cleanly after {len(lines)} lines"


def test_exit_on_zero_lets_the_request_finish(tmp_path: Path) -> None:
    env = {"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true", "MINIMUM_DRAIN_DURATION": "1s"}
    with igw(tmp_path, env) as gw, ThreadPoolExecutor(1) as pool:
        inflight = pool.submit(httpx.get, f"{gw.url}/sleep?seconds=3.5", timeout=60)
        wait_in_flight(gw)
        gw.agent.signal(signal.SIGTERM)
        response = inflight.result(timeout=30)
        assert response.status_code == 200 and response.text.strip() == "slept 3.5s"
        assert gw.agent.wait_exit() == 0
    messages = agent_messages(gw)
    tail = messages[messages.index("Agent draining Proxy for termination"):]
    assert tail[:3] == ["Agent draining Proxy for termination",
                        "Agent draining proxy for 1s, then waiting for active connections to terminate...",
                        "Checking for active connections..."]
    assert "There are still 1 active connections" in tail
    assert tail[-5:] == ["There are no more active connections. terminating proxy...", "Aborting proxy",
                         "Envoy aborted normally", "Aborted proxy instance", "Agent has successfully terminated"]


def test_exit_on_zero_waits_for_an_idle_keepalive_connection(tmp_path: Path) -> None:
    """Istio's pitfall: no request in flight, but an idle keep-alive connection holds the agent."""
    env = {"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true", "MINIMUM_DRAIN_DURATION": "0.5s"}
    with igw(tmp_path, env) as gw:
        with socket.create_connection((gw.host, 8080)) as sock:
            sock.sendall(b"GET /fast HTTP/1.1\r\nHost: example.local\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            gw.agent.signal(signal.SIGTERM)
            gw.agent.wait_line(lambda ln: ln.endswith("There are still 1 active connections"), "an idle connection")
            gw.agent.wait_line(lambda ln: ln.endswith("There are still 1 active connections") and
                               gw.agent.text().count("There are still 1 active") >= 2, "a second check")
            assert gw.agent.proc.poll() is None  # still waiting on the idle connection
        # The client closes its idle connection (as HAProxy eventually does): the agent ends.
        assert gw.agent.wait_exit() == 0
    assert "There are no more active connections. terminating proxy..." in agent_messages(gw)


def test_readiness_follows_envoys_ready_endpoint() -> None:
    """/healthz/ready mirrors Envoy's admin /ready: LIVE -> 200, anything else or no answer -> 503."""
    answer = {"code": 503, "body": "PRE_INITIALIZING"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = (answer["body"] + "\n").encode()
            self.send_response(int(answer["code"]))
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    host = random_host()
    server = ThreadingHTTPServer((host, 15000), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = parse_args(["--admin", f"{host}:15000", "--envoy", find_envoy()])

    async def probe() -> tuple[int, str]:
        agent = Agent(settings, IstioLog(io.BytesIO()))
        try:
            return await agent.readiness()
        finally:
            await agent.admin.aclose()

    try:
        assert asyncio.run(probe()) == (503, "Envoy is PRE_INITIALIZING\n")
        answer.update(code=200, body="LIVE")
        assert asyncio.run(probe()) == (200, "")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    code, why = asyncio.run(probe())  # nobody answers any more
    assert code == 503 and "not reachable" in why


def test_envoy_dying_on_its_own_fails_the_agent(tmp_path: Path) -> None:
    with igw(tmp_path) as gw:
        envoy_of(gw).kill()
        assert gw.agent.wait_exit() != 0
        assert not port_open(gw.host, 15021)
    assert any(m.startswith("Envoy exited with error: exit status") for m in agent_messages(gw))


def test_envoy_dies_with_a_sigkilled_agent(tmp_path: Path) -> None:
    # Become the subreaper, so the orphaned Envoy comes to us (PID 1 here does not reap).
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    with igw(tmp_path) as gw:
        envoy = envoy_of(gw)
        gw.agent.signal(signal.SIGKILL)
        gw.agent.wait_exit()

        def envoy_gone() -> bool:
            try:
                return os.waitpid(envoy.pid, os.WNOHANG)[0] == envoy.pid
            except ChildProcessError:
                return not psutil.pid_exists(envoy.pid)

        wait_until(envoy_gone, timeout_s=30, what="Envoy to die with its agent (PR_SET_PDEATHSIG)")
        assert not port_open(gw.host, 8080)


def test_a_taken_status_port_fails_the_agent(tmp_path: Path) -> None:
    host = random_host()
    with socket.socket() as taken:
        taken.bind((host, 15021))
        taken.listen()
        args = ["--listen", f"{host}:8080", "--backend", f"{host}:9080", "--admin", f"{host}:15000",
                "--status-listen", f"{host}:15021"]
        with Workload("agent", args, tmp_path) as agent:
            assert agent.wait_exit() == 1
            assert not port_open(host, 8080)  # Envoy went down with it
    assert "--status-listen / STATUS_LISTEN" in agent.text()


def test_a_given_bootstrap_is_run_as_is(tmp_path: Path) -> None:
    host = random_host()
    path = write_bootstrap(tmp_path / "b.json", render_bootstrap(f"{host}:8081", f"{host}:9080", f"{host}:15001"))
    args = ["--envoy-bootstrap", str(path), "--status-listen", f"{host}:15021"]
    with Workload("agent", args, tmp_path, env={"TERMINATION_DRAIN_DURATION": "0.2s"}) as agent:
        agent.wait_port(host, 8081)
        agent.wait_port(host, 15021)
        assert httpx.get(f"http://{host}:15021/healthz/ready").status_code == 200
        assert httpx.get(f"http://{host}:15001/ready").text.strip() == "LIVE"
        agent.signal(signal.SIGTERM)
        assert agent.wait_exit() == 0
    assert "Graceful termination period is 200ms, starting..." in agent.text()
