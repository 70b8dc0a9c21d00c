"""Traffic against real servers: real HAProxy (TLS, ALPN h2/http1.1) in front of the real backend
workload, and small real TLS servers on loopback that misbehave on purpose (reset, truncate, send
RST_STREAM) so each failure class is produced on the wire, not faked."""

from __future__ import annotations

import csv
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from gtnb._wait import wait_until
from gtnb.certs import make_certs
from gtnb.traffic import (
    CLIENT_COLUMNS,
    Canceller,
    Load,
    Pin,
    long_request,
    stream_request,
    write_chunks_csv,
    write_client_csv,
)

pytestmark = pytest.mark.timeout(120)
HAPROXY = "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ca, pem = make_certs(tmp_path_factory.mktemp("certs"))
    return ca, pem


def _start_backend(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gtnb.workloads.backend", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open(port), timeout_s=30, what=f"the backend to listen on :{port}")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Stack:
    """HAProxy (TLS) -> backend, plus a second frontend to a 'victim' backend a test can kill."""

    def __init__(self, base: Path, certs: tuple[Path, Path]) -> None:
        self.ca, pem = certs
        self.port, self.victim_port = free_port(), free_port()
        self.backend_port, self.victim_backend_port = free_port(), free_port()
        self.admin = base / "admin.sock"
        cfg = base / "haproxy.cfg"
        cfg.write_text(f"""
global
    stats socket {self.admin} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{self.port} ssl crt {pem} alpn h2,http/1.1
    default_backend be
frontend victim
    bind 127.0.0.1:{self.victim_port} ssl crt {pem} alpn h2,http/1.1
    default_backend victim
backend be
    server b 127.0.0.1:{self.backend_port}
backend victim
    server v 127.0.0.1:{self.victim_backend_port}
""")
        self.backend = _start_backend(self.backend_port)
        self.haproxy = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(cfg)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port) and self.admin.exists(), timeout_s=30, what="HAProxy to listen")

    def pin(self, port: int | None = None) -> Pin:
        return Pin("127.0.0.1", port or self.port, "example.local", self.ca)

    def stat(self, proxy: str, server: str) -> dict[str, str]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.admin))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == proxy and row.get("svname") == server:
                return row
        raise AssertionError(f"{proxy}/{server} not in show stat")

    def close(self) -> None:
        _stop(self.haproxy)
        _stop(self.backend)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, Path]) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"), certs)
    try:
        yield s
    finally:
        s.close()


# --- the real stack ---------------------------------------------------------------------------


def test_long_request_http11_completes(stack: Stack) -> None:
    r = long_request(stack.pin(), "/sleep?seconds=0.5", timeout_s=30, request_id="s1-a")
    assert (r.status, r.http_version, r.error, r.curl_exit, r.complete) == (200, "HTTP/1.1", "", 0, True)
    assert r.bytes > 0 and r.t_end - r.t_start >= 0.5


def test_long_request_http2_negotiates_h2(stack: Stack) -> None:
    r = long_request(stack.pin(), "/sleep?seconds=0.1", http2=True, timeout_s=30)
    assert (r.status, r.http_version, r.complete) == (200, "HTTP/2", True)


def test_stream_records_each_chunk_and_the_final_line(stack: Stack) -> None:
    seen: list[int] = []
    r, arrivals = stream_request(stack.pin(), "/stream?seconds=1&interval=0.2", timeout_s=30,
                                 request_id="s4-a", on_chunk=lambda a: seen.append(a.k))
    assert (r.status, r.http_version, r.error, r.complete) == (200, "HTTP/2", "", True)
    assert [a.k for a in arrivals] == [1, 2, 3, 4, 5] == seen and r.chunks == 5
    times = [a.t for a in arrivals]
    assert times == sorted(times) and r.t_start <= times[0] and times[-1] <= r.t_end
    # Arrivals are spread out as the backend wrote them, not all at once at the end.
    assert times[-1] - times[0] >= 0.5


def _conn_tot(stack: Stack) -> int:
    return int(stack.stat("fe", "FRONTEND")["conn_tot"])


@pytest.mark.parametrize("keepalive", [False, True])
def test_load_new_connection_per_request_unless_keepalive(stack: Stack, keepalive: bool) -> None:
    before = _conn_tot(stack)
    load = Load(stack.pin(), path="/fast", workers=3, duration_s=1.5, keepalive=keepalive)
    load.start()
    assert load.join(60)
    results = load.results()
    connections = _conn_tot(stack) - before
    assert len(results) >= 3 and all(r.ok and r.status == 200 for r in results)
    assert {r.worker for r in results} == {0, 1, 2}
    assert len({r.request_id for r in results}) == len(results)
    assert load.counts() == (len(results), 0)
    if keepalive:
        assert connections == 3
    else:
        assert connections == len(results)


def test_cut_http11_request_gets_haproxys_502(stack: Stack) -> None:
    victim = _start_backend(stack.victim_backend_port)
    try:
        holder: list = []
        t = threading.Thread(target=lambda: holder.append(
            long_request(stack.pin(stack.victim_port), "/sleep?seconds=30", timeout_s=60)))
        t.start()
        wait_until(lambda: stack.stat("victim", "v")["scur"] == "1", timeout_s=30, what="the request in flight")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        t.join(60)
    finally:
        _stop(victim)
    r = holder[0]
    assert (r.status, r.error, r.curl_exit, r.complete) == (502, "http_5xx", 0, False)


# --- misbehaving TLS servers: one failure class each --------------------------------------------


class RawServer:
    """A TLS server on loopback whose every connection is handled by `behave(conn)`."""

    def __init__(self, certs: tuple[Path, Path], alpn: str, behave: Callable[[ssl.SSLSocket], None]) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(certs[1]))
        ctx.set_alpn_protocols([alpn])
        self.ca = certs[0]
        self.sock = ctx.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        self.port = self.sock.getsockname()[1]
        self.behave = behave
        self.saw_request = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                self.behave(conn)
            except OSError:
                pass

    def pin(self) -> Pin:
        return Pin("127.0.0.1", self.port, "example.local", self.ca)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(10)


def _read_h1_request(conn: ssl.SSLSocket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)


def _h2_serve(conn: ssl.SSLSocket, act: Callable[[h2.connection.H2Connection, int], None],
              server: RawServer | None = None) -> None:
    h2c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    h2c.initiate_connection()
    conn.sendall(h2c.data_to_send())
    while data := conn.recv(65535):
        for event in h2c.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                if server:
                    server.saw_request.set()
                act(h2c, event.stream_id)
        conn.sendall(h2c.data_to_send())


def _h2_respond(body: bytes, *, end: bool = True, reset: h2.errors.ErrorCodes | None = None):
    def act(h2c: h2.connection.H2Connection, sid: int) -> None:
        h2c.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
        if body:
            h2c.send_data(sid, body)
        if reset is not None:
            h2c.reset_stream(sid, reset)
        elif end:
            h2c.end_stream(sid)
    return act


@pytest.fixture
def raw(certs: tuple[Path, Path]) -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(alpn: str, behave: Callable[[ssl.SSLSocket], None]) -> RawServer:
        servers.append(RawServer(certs, alpn, behave))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_empty_reply_is_curl_52(raw) -> None:
    def behave(conn: ssl.SSLSocket) -> None:
        _read_h1_request(conn)

    r = long_request(raw("http/1.1", behave).pin(), "/sleep?seconds=1", timeout_s=10)
    assert (r.status, r.error, r.curl_exit, r.complete) == (None, "connection_reset", 52, False)


def test_reset_is_curl_56(raw) -> None:
    def behave(conn: ssl.SSLSocket) -> None:
        _read_h1_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    r = long_request(raw("http/1.1", behave).pin(), "/fast", timeout_s=10)
    assert (r.error, r.curl_exit) == ("connection_reset", 56)
    assert "Recv failure" in r.detail


def test_truncated_http11_body_is_curl_18(raw) -> None:
    def behave(conn: ssl.SSLSocket) -> None:
        _read_h1_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")

    r = long_request(raw("http/1.1", behave).pin(), "/fast", timeout_s=10)
    assert (r.status, r.error, r.curl_exit, r.bytes, r.complete) == (200, "truncated", 18, 3, False)


def test_refused_stream_is_curl_92_and_not_retried(raw) -> None:
    server = raw("h2", lambda conn: _h2_serve(conn, lambda h, sid: h.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)))
    r = long_request(server.pin(), "/sleep?seconds=1", http2=True, timeout_s=10)
    assert (r.status, r.error, r.curl_exit, r.detail) == (None, "stream_reset", 92, "REFUSED_STREAM")


def test_stream_cancelled_mid_way_keeps_its_chunks(raw) -> None:
    act = _h2_respond(b"chunk 1\nchunk 2\n", reset=h2.errors.ErrorCodes.CANCEL)
    server = raw("h2", lambda conn: _h2_serve(conn, act))
    r, arrivals = stream_request(server.pin(), "/stream?seconds=5", timeout_s=10)
    assert (r.status, r.error, r.curl_exit, r.detail, r.complete) == (200, "stream_reset", 92, "CANCEL", False)
    assert [a.k for a in arrivals] == [1, 2]


def test_stream_ending_cleanly_without_final_line_is_truncated_with_exit_0(raw) -> None:
    server = raw("h2", lambda conn: _h2_serve(conn, _h2_respond(b"chunk 1\nchunk 2\nchunk 3\n")))
    r, arrivals = stream_request(server.pin(), "/stream?seconds=5", timeout_s=10)
    assert (r.status, r.error, r.curl_exit, r.chunks, r.complete) == (200, "truncated", 0, 3, False)
    assert len(arrivals) == 3


def test_stream_with_final_line_is_complete(raw) -> None:
    server = raw("h2", lambda conn: _h2_serve(conn, _h2_respond(b"chunk 1\ndone\n")))
    r, _ = stream_request(server.pin(), "/stream?seconds=1", timeout_s=10)
    assert (r.error, r.curl_exit, r.chunks, r.complete) == ("", 0, 1, True)


def test_silent_server_times_out_as_curl_28(raw) -> None:
    r = long_request(raw("http/1.1", _read_h1_request_then_wait).pin(), "/fast", timeout_s=0.5)
    assert (r.error, r.curl_exit) == ("timeout", 28)


def _read_h1_request_then_wait(conn: ssl.SSLSocket) -> None:
    _read_h1_request(conn)
    conn.recv(1)  # until the client goes away


def test_connect_refused_is_curl_7(certs) -> None:
    r = long_request(Pin("127.0.0.1", free_port(), "example.local", certs[0]), "/fast", timeout_s=5)
    assert (r.error, r.curl_exit, r.status) == ("connect_failed", 7, None)


def test_wrong_name_is_a_tls_failure(certs) -> None:
    server_ctx_certs = certs
    srv = RawServer(server_ctx_certs, "http/1.1", _read_h1_request)
    try:
        r = long_request(Pin("127.0.0.1", srv.port, "other.local", certs[0]), "/fast", timeout_s=5)
    finally:
        srv.close()
    assert (r.error, r.curl_exit) == ("connect_failed", 35)


def test_cancel_unblocks_a_long_read(raw) -> None:
    server = raw("h2", lambda conn: _h2_serve(conn, lambda h, sid: None, server))
    cancel = Canceller()
    holder: list = []
    t = threading.Thread(target=lambda: holder.append(
        long_request(server.pin(), "/sleep?seconds=600", http2=True, timeout_s=600, cancel=cancel)))
    t.start()
    wait_until(server.saw_request.is_set, timeout_s=30, what="the request to reach the server")
    cancel.cancel()
    t.join(30)
    assert not t.is_alive()
    assert (holder[0].error, holder[0].complete) == ("cancelled", False)


def test_csv_files_follow_the_contract(tmp_path: Path, stack: Stack) -> None:
    r, arrivals = stream_request(stack.pin(), "/stream?seconds=0.2&interval=0.1", timeout_s=30, request_id="x1")
    assert write_client_csv(tmp_path / "client.csv", [r]) == 1
    assert write_chunks_csv(tmp_path / "chunks.csv", arrivals) == 2
    with open(tmp_path / "client.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CLIENT_COLUMNS
    assert rows[0]["complete"] == "true" and rows[0]["status"] == "200" and rows[0]["chunks"] == "2"
    assert float(rows[0]["t_start"]) < float(rows[0]["t_end"])
    assert (tmp_path / "chunks.csv").read_text().splitlines()[0] == "request_id,k,t"


def test_missing_ca_is_a_clear_error(tmp_path: Path) -> None:
    from gtnb.errors import ConfigError

    with pytest.raises(ConfigError, match="gtnb certs"):
        Pin("127.0.0.1", 1, "example.local", tmp_path / "nope.pem").ssl_context()
    assert os.path.exists(tmp_path)
