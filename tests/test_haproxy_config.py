"""haproxy/haproxy-<mode>.cfg and gtnb.haproxy_config: rendering, `haproxy -c`, and a real HAProxy
running each rendered config (TLS + ALPN, request log, health checks against an hc stand-in, DOWN
logged, `show stat` over the admin socket)."""

from __future__ import annotations

import http.server
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gtnb._wait import wait_until
from gtnb.certs import make_certs
from gtnb.errors import BalancerError, ConfigError
from gtnb.haproxy_config import (
    HOMELAB_DEFAULTS,
    MODES,
    CheckTimings,
    check_config,
    config_variables,
    haproxy_config_path,
    haproxy_values_doc,
    parse_check_timings,
    render_haproxy_config,
)

REPO = Path(__file__).resolve().parents[1]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _directives(text: str) -> list[str]:
    """Config lines without comments and blank lines, whitespace-normalised."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(" ".join(line.split()))
    return out


def _values(tmp_path: Path, cert: Path, net: str = "127.250.0") -> dict[str, str]:
    """Throwaway loopback values, as the local lab would give them."""
    return {
        "GTNB_FRONTEND_ADDR": f"{net}.1",
        "GTNB_FRONTEND_PORT": "8443",
        "GTNB_API_PORT": "6443",
        "GTNB_APISERVER": f"{net}.2:7000",
        "GTNB_CERT": str(cert),
        "GTNB_ADMIN_SOCKET": str(tmp_path / "admin.sock"),
        "GTNB_LOG_TARGET": "stdout",
        "GTNB_LOG_FORMAT": "iso",
        "GTNB_MASTER1_ADDR": f"{net}.11",
        "GTNB_WORKER1_ADDR": f"{net}.12",
        "GTNB_WORKER2_ADDR": f"{net}.13",
    }


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ca, pem = make_certs(tmp_path_factory.mktemp("certs"))
    return ca, pem


# ---------------------------------------------------------------- the committed files


@pytest.mark.parametrize("mode", MODES)
def test_every_variable_is_documented_and_used(mode: str) -> None:
    used = config_variables(haproxy_config_path(mode).read_text())
    assert used == set(haproxy_values_doc())
    contracts = (REPO / "docs" / "contracts.md").read_text()
    assert [name for name in used if name not in contracts] == []


def test_improved_never_shuts_sessions_down_and_current_does() -> None:
    current = _directives(haproxy_config_path("current").read_text())
    improved = _directives(haproxy_config_path("improved").read_text())
    assert not any("shutdown-sessions" in d for d in improved)
    assert any("on-marked-down shutdown-sessions" in d for d in current)


def test_modes_differ_only_in_the_check_settings_and_server_close() -> None:
    current = _directives(haproxy_config_path("current").read_text())
    improved = _directives(haproxy_config_path("improved").read_text())
    # Improved adds exactly one directive, `option http-server-close` (no idle connection to a
    # draining Envoy holds the pod: see the cfg's comment), right after its check settings.
    extra = [i for i, d in enumerate(improved) if d == "option http-server-close"]
    assert len(extra) == 1 and "option http-server-close" not in current
    assert improved[extra[0] - 1].startswith("default-server check")
    del improved[extra[0]]
    assert len(current) == len(improved)
    differing = [(c, i) for c, i in zip(current, improved) if c != i]
    assert len(differing) == 1
    c, i = differing[0]
    # The mode is about these: current marks DOWN ~3 s after hc fails and cuts sessions there
    # (the seed's cluster, before the agent's 5 s kill); improved detects faster and never cuts.
    assert c.startswith("default-server check port 15080 inter 1s fall 3 rise 2")
    assert c.endswith("on-marked-down shutdown-sessions")
    assert i.startswith("default-server check port 15080 inter 1s fastinter 500ms fall 2 rise 2")


def test_current_marks_down_before_the_agent_kills_envoy() -> None:
    # The seed's current mode: HAProxy's DOWN + shutdown-sessions cut the request (~3 s after the
    # delete), not pilot-agent's kill at terminationDrainDuration. The worst-case detection (a
    # first failed check a full `inter` after hc fails, then fall-1 more) must end before the kill
    # with a margin for a loaded machine, or the run races the two cuts again.
    from gtnb.manifests import load_igw_spec, manifest_path

    t = parse_check_timings(haproxy_config_path("current").read_text())
    worst_down_s = t.inter_s + (t.fall - 1) * t.fastinter_s
    kill_s = load_igw_spec(manifest_path("current")).proxy.termination_drain_s
    assert worst_down_s + 1.5 <= kill_s, (worst_down_s, kill_s)


@pytest.mark.parametrize("mode", MODES)
def test_config_has_what_the_experiment_needs(mode: str) -> None:
    d = _directives(haproxy_config_path(mode).read_text())
    assert "balance roundrobin" in d
    assert "option httpchk GET /healthz" in d
    assert "option httplog" in d
    assert "backend istio-http-backend" in d
    servers = [x.split()[1] for x in d if x.startswith("server ") and ":8080" in x]
    assert servers == ["master1", "worker1", "worker2"]
    assert any(x.startswith("bind ") and "alpn h2,http/1.1" in x and "ssl crt" in x for x in d)
    assert any("level admin" in x and x.startswith("stats socket") for x in d)
    assert not any(x.split()[0] in {"daemon", "chroot", "user", "group"} for x in d)


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("mode", MODES)
def test_rendered_configs_pass_haproxy_check(mode: str, tmp_path: Path, cert: tuple[Path, Path]) -> None:
    text = render_haproxy_config(mode, _values(tmp_path, cert[1]))
    assert not any("${" in d for d in _directives(text))
    assert f'crt "{cert[1]}"' in text
    check_config(text, haproxy=HAPROXY)


@pytest.mark.parametrize("mode", MODES)
def test_committed_file_runs_unrendered_with_exported_variables(
    mode: str, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    """HAProxy's own "${VAR}" expansion: the committed file is valid as is once the env is set."""
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", **_values(tmp_path, cert[1])}
    proc = subprocess.run([HAPROXY, "-c", "-f", str(haproxy_config_path(mode))], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    del env["GTNB_CERT"]
    proc = subprocess.run([HAPROXY, "-c", "-f", str(haproxy_config_path(mode))], env=env, capture_output=True, text=True)
    assert proc.returncode != 0


def test_homelab_defaults_plus_addresses_render_and_check(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    values = dict(HOMELAB_DEFAULTS)
    values.update(
        GTNB_FRONTEND_ADDR="127.0.0.1",
        GTNB_APISERVER="127.0.0.1:6443",
        GTNB_MASTER1_ADDR="203.0.113.212",
        GTNB_WORKER1_ADDR="203.0.113.213",
        GTNB_WORKER2_ADDR="203.0.113.214",
        GTNB_CERT=str(cert[1]),  # the homelab path does not exist here
        GTNB_ADMIN_SOCKET=str(tmp_path / "admin.sock"),
    )
    text = render_haproxy_config("improved", values)
    assert 'log "/dev/log" format "rfc3164" local0 info' in text
    check_config(text, haproxy=HAPROXY)


def test_missing_and_unknown_values_are_listed(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    values = _values(tmp_path, cert[1])
    del values["GTNB_CERT"], values["GTNB_WORKER2_ADDR"]
    values["GTNB_TYPO_ADDR"] = "127.0.0.1"
    with pytest.raises(ConfigError) as err:
        render_haproxy_config("current", values)
    msg = str(err.value)
    assert "missing GTNB_CERT" in msg and "GTNB_WORKER2_ADDR" in msg
    assert "unknown GTNB_TYPO_ADDR" in msg


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("GTNB_FRONTEND_PORT", "84x3", "not a port"),
        ("GTNB_API_PORT", "70000", "not a port"),
        ("GTNB_APISERVER", "127.0.0.2", "not host:port"),
        ("GTNB_LOG_FORMAT", "json", "not a log format"),
        ("GTNB_CERT", 'a"b', "double quote"),
        ("GTNB_MASTER1_ADDR", "${HOME}", "dollar sign"),
        ("GTNB_MASTER1_ADDR", "", "is empty"),
    ],
)
def test_bad_values_are_refused(name: str, value: str, words: str, tmp_path: Path, cert: tuple[Path, Path]) -> None:
    values = _values(tmp_path, cert[1])
    values[name] = value
    with pytest.raises(ConfigError, match=words) as err:
        render_haproxy_config("current", values)
    assert name in str(err.value)


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'broken' is not one of current, improved"):
        haproxy_config_path("broken")


def test_check_quotes_haproxy_message(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    text = render_haproxy_config("current", _values(tmp_path, cert[1]))
    broken = text.replace("option httplog", "option httplogg")
    with pytest.raises(BalancerError) as err:
        check_config(broken, haproxy=HAPROXY)
    msg = str(err.value)
    assert "httplogg" in msg and "<config>:" in msg
    assert "gtnb-haproxy-check-" not in msg  # the temp path is replaced by <config>


def test_check_names_a_missing_cert(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    values = _values(tmp_path, cert[1])
    values["GTNB_CERT"] = str(tmp_path / "nope.pem")
    with pytest.raises(BalancerError, match="nope.pem"):
        check_config(render_haproxy_config("improved", values), haproxy=HAPROXY)


def test_check_without_haproxy_names_the_fix() -> None:
    with pytest.raises(BalancerError, match="apt-get install haproxy"):
        check_config("global\n", haproxy="/nonexistent/haproxy")


# ---------------------------------------------------------------- a real HAProxy per mode


class _NodeHandler(http.server.BaseHTTPRequestHandler):
    """Stands in for a node: hc's /healthz on 15080 (status switchable), Envoy on 8080."""

    protocol_version = "HTTP/1.1"
    health = 200

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        code = type(self).health if self.path == "/healthz" else 200
        # Status, headers and body in one write: HAProxy closes a check connection with a reset
        # as soon as it has the status line, and a second write would then fail noisily.
        reason = {200: "OK", 503: "Service Unavailable"}[code]
        self.wfile.write(f"HTTP/1.1 {code} {reason}\r\nContent-Length: 3\r\n\r\nok\n".encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class _Lab:
    net: str
    values: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]
    handler: type[_NodeHandler]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def show_stat(self) -> list[dict[str, str]]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.values["GTNB_ADMIN_SOCKET"])
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        return [dict(zip(header, line.split(","))) for line in lines[1:] if line]

    def status(self, backend: str, server: str) -> str:
        for row in self.show_stat():
            if row["pxname"] == backend and row["svname"] == server:
                return row["status"]
        raise AssertionError(f"{backend}/{server} not in show stat")


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a reset from a health check is expected, not worth a traceback


def _serve(addr: str, port: int, handler: type[_NodeHandler]) -> http.server.ThreadingHTTPServer:
    server = _QuietServer((addr, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def _port_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(params=MODES)
def lab(request: pytest.FixtureRequest, tmp_path: Path, cert: tuple[Path, Path]) -> Iterator[_Lab]:
    # A random 127.250.X.0/24 so a parallel run of this file does not collide on the node ports.
    net = f"127.250.{random.randrange(1, 255)}"
    handler = type("Handler", (_NodeHandler,), {"health": 200})
    servers = [_serve(f"{net}.11", 15080, handler), _serve(f"{net}.11", 8080, handler)]
    values = _values(tmp_path, cert[1], net)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_config(request.param, values))
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        # As the lab runs it: master-worker (-W), foreground (-db), logs on stdout.
        proc = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _port_open(f"{net}.1", 8443), timeout_s=30, what="HAProxy to listen on :8443")
        wait_until(lambda: Path(values["GTNB_ADMIN_SOCKET"]).exists(), timeout_s=30, what="the admin socket")
        yield _Lab(net, values, log, proc, handler)
    finally:
        proc.send_signal(signal.SIGTERM)  # the master stops its worker and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        for s in servers:
            s.shutdown()
            s.server_close()


def _tls(lab: _Lab, ca: Path, alpn: list[str]) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection((f"{lab.net}.1", 8443), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="example.local")


@pytest.mark.lab
def test_real_haproxy_serves_logs_and_marks_down(lab: _Lab, cert: tuple[Path, Path]) -> None:
    ca = cert[0]
    # TLS for example.local, verified against the private CA, ALPN offers h2.
    with _tls(lab, ca, ["h2", "http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "h2"

    # master1 has an hc that answers 200: UP. worker1/worker2 have none: DOWN, and logged so.
    wait_until(lambda: lab.status("istio-http-backend", "master1") == "UP", timeout_s=30, what="master1 UP")
    for node in ("worker1", "worker2"):
        wait_until(lambda: lab.status("istio-http-backend", node) == "DOWN", timeout_s=60, what=f"{node} DOWN")
        assert f"Server istio-http-backend/{node} is DOWN, reason: Layer4 connection problem" in lab.log_text()

    # A request through HAProxy reaches master1 (the only UP server) and gets a request log line
    # with a termination state.
    with _tls(lab, ca, ["http/1.1"]) as tls:
        tls.sendall(b"GET /fast HTTP/1.1\r\nHost: example.local\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    pattern = re.compile(r"example-local~? istio-http-backend/master1 \S+ 200 \d+ - - ---- .*\"GET /fast HTTP/1.1\"")
    wait_until(lambda: pattern.search(lab.log_text()), timeout_s=30, what="the request log line")

    # HTTP/2 from the client (as S4 uses it), plain HTTP/1.1 toward the node, as a real client
    # pins example.local to the balancer's address.
    ctx = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(http2=True, verify=ctx, timeout=10) as client:
        resp = client.get(
            f"https://{lab.net}.1:8443/stream",
            headers={"Host": "example.local"},
            extensions={"sni_hostname": "example.local"},
        )
    assert (resp.status_code, resp.http_version, resp.text) == (200, "HTTP/2", "ok\n")
    # HAProxy logs an HTTP/2 request with its absolute URI (built from :scheme and :authority).
    h2_line = re.compile(r"istio-http-backend/master1 \S+ 200 .*\"GET https://example.local/stream HTTP/2.0\"")
    wait_until(lambda: h2_line.search(lab.log_text()), timeout_s=30, what="the HTTP/2 request log line")
    # `format iso`: microsecond ISO timestamps at the start of every line HAProxy logs.
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d ", lab.log_text(), re.M)

    # hc starts failing: HAProxy marks master1 DOWN with a Layer7 reason.
    lab.handler.health = 503
    wait_until(lambda: lab.status("istio-http-backend", "master1") == "DOWN", timeout_s=60, what="master1 DOWN")
    assert re.search(r"Server istio-http-backend/master1 is DOWN, reason: Layer7 wrong status, code: 503", lab.log_text())
    # The control-plane frontend is there too (TCP mode, its own backend).
    assert {r["pxname"] for r in lab.show_stat()} >= {"kube-apiserver", "example-local", "istio-http-backend"}


def test_find_haproxy_falls_back_to_usr_sbin(monkeypatch: pytest.MonkeyPatch) -> None:
    from gtnb.haproxy_config import find_haproxy

    monkeypatch.setenv("PATH", "/nonexistent")  # a user's PATH without /usr/sbin
    if not Path("/usr/sbin/haproxy").exists():
        pytest.fail("this test needs Debian's /usr/sbin/haproxy")
    assert find_haproxy() == "/usr/sbin/haproxy"
    assert find_haproxy("/opt/x/haproxy") == "/opt/x/haproxy"
    assert find_haproxy("no-such-haproxy") == "no-such-haproxy"


# ---------------------------------------------------------------- check timings (S2 bounds)


def test_check_timings_of_the_committed_configs(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    # The rendered text (what the toggle installs) and the committed file read the same.
    for mode in MODES:
        rendered = render_haproxy_config(mode, _values(tmp_path, cert[1]))
        assert parse_check_timings(rendered) == parse_check_timings(haproxy_config_path(mode).read_text())
    improved = parse_check_timings(haproxy_config_path("improved").read_text())
    # Compared with the cfg's own default-server line, word by word, not with a copy of it.
    line = next(d for d in _directives(haproxy_config_path("improved").read_text()) if d.startswith("default-server"))
    words = line.split()
    assert improved.fall == int(words[words.index("fall") + 1])
    assert improved.rise == int(words[words.index("rise") + 1])
    assert improved.as_parameters().keys() == {"inter_s", "fastinter_s", "fall", "rise"}
    # current sets no fastinter: HAProxy then uses inter between the failed checks too.
    current = parse_check_timings(haproxy_config_path("current").read_text())
    assert current.fastinter_s == current.inter_s


_BASE = """
defaults
    default-server inter 3s fall 4
backend other
    server x 127.0.0.1:1 check inter 9s
backend istio-http-backend
{body}
"""


@pytest.mark.parametrize("body, want", [
    ("    server a 1.2.3.4:8080 check", CheckTimings(3.0, 3.0, 4, 2)),  # defaults section, HAProxy defaults
    ("    default-server inter 1500 fastinter 250ms rise 5\n    server a 1.2.3.4:8080 check",
     CheckTimings(1.5, 0.25, 4, 5)),  # a bare number is milliseconds
    ("    server a 1.2.3.4:8080 check fall 1\n    server b 1.2.3.5:8080 check fall 1 inter 3000ms",
     CheckTimings(3.0, 3.0, 1, 2)),  # server lines' own settings
])
def test_check_timings_follow_haproxy_precedence(body: str, want: CheckTimings) -> None:
    assert parse_check_timings(_BASE.format(body=body)) == want


def test_check_timings_without_defaults_are_haproxys() -> None:
    assert parse_check_timings("backend istio-http-backend\n    server a 1.2.3.4:8080 check\n") == CheckTimings(2.0, 2.0, 3, 2)


@pytest.mark.parametrize("text, match", [
    ("backend nope\n    server a 1.2.3.4:80 check\n", "no backend 'istio-http-backend'"),
    ("backend istio-http-backend\n    balance roundrobin\n", "has no server lines"),
    ("backend istio-http-backend\n    server a 1.2.3.4:80 check inter fast\n", "`inter fast`.*500ms"),
    ("backend istio-http-backend\n    server a 1.2.3.4:80 check fall 0\n", "`fall 0`.*number >= 1"),
    ("backend istio-http-backend\n    server a 1.2.3.4:80 check\n    server b 1.2.3.5:80 check fall 9\n",
     "different timings.*one `default-server` line"),
])
def test_check_timings_bad_input_names_the_thing(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_check_timings(text)
