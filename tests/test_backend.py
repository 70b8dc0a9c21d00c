"""service-a-backend: parameter validation (pure) and the real server over HTTP/1.1 and h2c."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _workload_procs import Workload, random_host
from gtnb.workloads.backend import BadRequest, StreamPlan, parse_sleep, parse_stream

# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("query, seconds", [("seconds=0", 0.0), ("seconds=1.5", 1.5), ("seconds=3600", 3600.0)])
def test_sleep_accepts_in_range(query: str, seconds: float) -> None:
    assert parse_sleep(query) == seconds


@pytest.mark.parametrize("query, words", [
    ("", "missing query parameter 'seconds'"),
    ("seconds=", "not a number"),
    ("seconds=abc", "not a number"),
    ("seconds=-1", "out of range"),
    ("seconds=3600.5", "<= 3600"),
    ("seconds=nan", "out of range"),
    ("seconds=inf", "out of range"),
    ("seconds=1&seconds=2", "given 2 times"),
])
def test_sleep_rejects_bad_input(query: str, words: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(words)):
        parse_sleep(query)


def test_stream_plan_defaults_and_chunk_count() -> None:
    assert parse_stream("seconds=60") == StreamPlan(60.0, 1.0)
    assert parse_stream("seconds=60&interval=1").chunks == 60
    assert parse_stream("seconds=0.3&interval=0.1").chunks == 3  # float rounding must not lose one
    assert parse_stream("seconds=1&interval=0.3").chunks == 3
    assert StreamPlan(5, 5).line(7) == b"chunk 7\n"


@pytest.mark.parametrize("query, words", [
    ("interval=1", "missing query parameter 'seconds'"),
    ("seconds=0", "must be > 0"),
    ("seconds=10&interval=0", "must be > 0"),
    ("seconds=10&interval=0.001", "too small"),
    ("seconds=1&interval=2", "longer than seconds"),
    ("seconds=4000", "<= 3600"),
])
def test_stream_rejects_bad_input(query: str, words: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(words)):
        parse_stream(query)


# -- the real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workload, str]]:
    host = random_host()
    with Workload("backend", ["--listen", f"{host}:8080"], tmp_path_factory.mktemp("backend")) as proc:
        proc.wait_port(host, 8080)
        yield proc, f"http://{host}:8080"


def clients() -> list[tuple[str, dict[str, bool]]]:
    # h2c with prior knowledge, as HAProxy's `proto h2` speaks to Envoy.
    return [("HTTP/1.1", {"http1": True, "http2": False}), ("HTTP/2", {"http1": False, "http2": True})]


@pytest.mark.parametrize("version, opts", clients())
def test_fast_and_healthz(backend: tuple[Workload, str], version: str, opts: dict[str, bool]) -> None:
    _, base = backend
    with httpx.Client(base_url=base, **opts) as client:
        for path in ("/fast", "/healthz"):
            response = client.get(path)
            assert (response.status_code, response.http_version) == (200, version)


@pytest.mark.parametrize("version, opts", clients())
def test_stream_lines_then_done(backend: tuple[Workload, str], version: str, opts: dict[str, bool]) -> None:
    _, base = backend
    arrivals: list[tuple[str, float]] = []
    with httpx.Client(base_url=base, **opts) as client:
        with client.stream("GET", "/stream", params={"seconds": 0.6, "interval": 0.2}) as response:
            assert response.status_code == 200 and response.http_version == version
            for line in response.iter_lines():
                arrivals.append((line, time.monotonic()))
    assert [line for line, _ in arrivals] == ["chunk 1", "chunk 2", "chunk 3", "done"]
    # Each line is flushed when written: they arrive spread out, not in one burst at the end.
    assert arrivals[-1][1] - arrivals[0][1] >= 0.5


def test_sleep_waits_and_echoes_the_request_id(backend: tuple[Workload, str]) -> None:
    proc, base = backend
    t0 = time.monotonic()
    response = httpx.get(f"{base}/sleep?seconds=0.4", headers={"x-request-id": "req-sleep-1"})
    assert response.status_code == 200 and time.monotonic() - t0 >= 0.4
    assert response.headers["x-request-id"] == "req-sleep-1"
    line = proc.wait_line(lambda ln: "id=req-sleep-1" in ln, "the request line")
    assert re.match(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z level=info app=backend event=request ", line)
    assert "path=/sleep" in line and "status=200" in line and "outcome=complete" in line


def test_bad_parameters_get_400_with_a_message(backend: tuple[Workload, str]) -> None:
    _, base = backend
    response = httpx.get(f"{base}/sleep?seconds=99999")
    assert response.status_code == 400 and "<= 3600" in response.text
    response = httpx.get(f"{base}/stream?seconds=1&interval=5")
    assert response.status_code == 400 and "longer than seconds" in response.text
    assert httpx.get(f"{base}/nope").status_code == 404
    assert httpx.post(f"{base}/fast").status_code == 405


def test_requests_without_an_id_get_one(backend: tuple[Workload, str]) -> None:
    proc, base = backend
    rid = httpx.get(f"{base}/fast").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    proc.wait_line(lambda ln: f"id={rid}" in ln, "the generated id")


def test_a_client_that_leaves_is_logged_as_gone(backend: tuple[Workload, str]) -> None:
    proc, base = backend
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{base}/sleep?seconds=5", headers={"x-request-id": "req-gone"}, timeout=0.3)
    line = proc.wait_line(lambda ln: "id=req-gone" in ln, "the cut request", timeout_s=10)
    assert "outcome=client_gone" in line and "status=499" in line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_exit_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    host = random_host()
    with Workload("backend", ["--listen", f"{host}:8080"], tmp_path) as proc:
        proc.wait_port(host, 8080)
        proc.signal(sig)
        assert proc.wait_exit() == 0
        assert f"event=signal signal={sig.name}" in proc.text() and "event=exit" in proc.text()


def test_bad_listen_address_is_refused(tmp_path: Path) -> None:
    with Workload("backend", [], tmp_path, env={"BACKEND_LISTEN": "localhost"}) as proc:
        assert proc.wait_exit() == 2
        assert "BACKEND_LISTEN" in proc.text() and "HOST:PORT" in proc.text()


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    host = random_host()
    with socket.socket() as taken:
        taken.bind((host, 8080))
        taken.listen()
        with Workload("backend", ["--listen", f"{host}:8080"], tmp_path) as proc:
            assert proc.wait_exit() == 1
    assert f"cannot listen on {host}:8080 (--listen / BACKEND_LISTEN)" in proc.text()
