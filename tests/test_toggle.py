"""The mode toggle: its pure parts (validators, `show stat` by header name, deadlock detection,
the one-line result) and the whole toggle on a real local lab (supervisor, HAProxy, Envoy, hc):
current -> improved -> current verified; a broken HAProxy config refused with the lab still
serving and untouched; the anti-affinity deadlock raised with policy `report` and resolved
with `force-delete`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gtnb._wait import wait_until
from gtnb.errors import BalancerError, ConfigError, RolloutDeadlock
from gtnb.haproxy_config import render_haproxy_config
from gtnb.manifests import manifest_sha256
from gtnb.modes import (
    IGW_BACKEND,
    MODES,
    ToggleResult,
    backend_servers,
    ensure_deadlock_policy,
    ensure_mode,
    find_deadlock,
    load_mode,
    server_is_up,
    toggle,
)
from gtnb.targets.base import Pod

# -- pure parts ------------------------------------------------------------------------------


def test_ensure_mode_and_policy_name_the_choices() -> None:
    assert [ensure_mode(m) for m in MODES] == ["current", "improved"]
    with pytest.raises(ConfigError, match="'fixed' is not one of current, improved"):
        ensure_mode("fixed")
    assert ensure_deadlock_policy("report") == "report"
    with pytest.raises(ConfigError, match="force-delete, report"):
        ensure_deadlock_policy("ignore")


def test_load_mode_points_at_the_committed_files() -> None:
    for name in MODES:
        m = load_mode(name)
        assert m.manifest.is_file() and m.haproxy_cfg.is_file()
        assert m.haproxy_cfg.name == f"haproxy-{name}.cfg"
        assert m.manifest.name.endswith(f"-igw-{name}.yaml") and m.manifest.name.startswith("2")
        assert f"mode: {name}" in m.manifest.read_text()
        assert m.label == f"mode={name}"


def test_toggle_rejects_bad_input_before_touching_the_target() -> None:
    untouchable = object()  # any attribute access would raise AttributeError, not ConfigError
    with pytest.raises(ConfigError, match="mode 'fast'"):
        toggle(untouchable, "fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="deadlock_policy"):
        toggle(untouchable, "current", deadlock_policy="wait")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timeout_s=0"):
        toggle(untouchable, "current", timeout_s=0)  # type: ignore[arg-type]


def test_policy_and_timeout_default_to_the_targets() -> None:
    class Profiled:  # what HomelabTarget offers: the profile's answer, checked like an argument
        deadlock_policy = "wait-forever"
        rollout_timeout_s = 60.0

    with pytest.raises(ConfigError, match="deadlock_policy 'wait-forever'"):
        toggle(Profiled(), "current")  # type: ignore[arg-type]
    Profiled.deadlock_policy, Profiled.rollout_timeout_s = "report", -1.0
    with pytest.raises(ConfigError, match="timeout_s=-1"):
        toggle(Profiled(), "current")  # type: ignore[arg-type]


def test_backend_servers_reads_columns_by_header_name() -> None:
    # Columns in an order unlike HAProxy's: positions must not matter, names must.
    stat = (
        "# status,svname,check_status,pxname,scur\n"
        f"UP,FRONTEND,,example-local,0\n"
        f"UP,worker1,L7OK,{IGW_BACKEND},1\n"
        f"DOWN,master1,L4CON,{IGW_BACKEND},0\n"
        f"UP,apiserver,L4OK,kube-apiserver,0\n"
        f"UP,BACKEND,,{IGW_BACKEND},1\n"
    )
    servers = backend_servers(stat)
    assert sorted(servers) == ["master1", "worker1"]
    assert servers["worker1"]["status"] == "UP" and servers["master1"]["check_status"] == "L4CON"
    assert list(backend_servers(stat, "kube-apiserver")) == ["apiserver"]


def test_server_is_up_needs_a_passed_check() -> None:
    # What HAProxy 2.6 shows just after a reload, for a server with nothing behind it too.
    assert not server_is_up({"status": "UP 1/2", "check_status": "INI"})
    assert not server_is_up({"status": "UP", "check_status": "INI"})
    assert not server_is_up({"status": "DOWN", "check_status": "L4CON"})
    assert not server_is_up({"status": "UP 1/3", "check_status": "L7STS"})  # going down
    assert server_is_up({"status": "UP", "check_status": "L7OK"})


def test_cli_refuses_an_unknown_mode_before_opening_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gtnb.cli import main

    assert main(["toggle", "fast", "--state-dir", str(tmp_path / "lab")]) == 2
    assert "mode 'fast' is not one of current, improved" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists()  # no lab was brought up for a typo


def _pod(name: str, mode: str, phase: str = "Running", reason: str | None = None, node: str | None = "worker1") -> Pod:
    return Pod(name=name, node=node, mode=mode, phase=phase, ready=phase == "Running", reason=reason)


def test_find_deadlock() -> None:
    old = [_pod("a", "current", node="master1"), _pod("b", "current", node="worker1")]
    stuck = _pod("n", "improved", "Pending", "Unschedulable", None)
    assert find_deadlock(old + [stuck], "improved") == ([stuck], old)
    # A Pending pod that is merely being scheduled is no deadlock.
    assert find_deadlock(old + [_pod("n", "improved", "Pending", None, None)], "improved") == ([], [])
    # Old pods already Terminating free their seats by themselves.
    terminating = [_pod("a", "current", "Terminating"), _pod("b", "current", "Terminating")]
    assert find_deadlock(terminating + [stuck], "improved") == ([], [])
    # Mid-rollout: one old pod Terminating (its node not yet free), one still Running and kept by
    # maxUnavailable 0, the next new pod Pending: slow, not stuck.
    mid = [_pod("a", "current", "Terminating", node="worker2"), _pod("b", "current", node="worker1"),
           _pod("n1", "improved", node="master1")]
    assert find_deadlock(mid + [stuck], "improved") == ([], [])
    assert find_deadlock(mid[1:] + [stuck], "improved") == ([stuck], [mid[1]])


def test_toggle_result_is_one_line() -> None:
    r = ToggleResult(mode="improved", target="local", manifest_sha256="a" * 64, cfg_sha256="b" * 64,
                     pods=("p1", "p2"), servers_up=("master1", "worker1"), deleted=("o1",), deadlock=True,
                     timings_s={"total": 12.34})
    line = str(r)
    assert "\n" not in line
    for part in ("improved mode", "2 pod(s)", "master1, worker1", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "o1", "12.3 s"):
        assert part in line, (part, line)


# -- on a real local lab ---------------------------------------------------------------------

WAIT_S = 120.0  # Envoy per pod, 2 shared cores shared with other tests: wide margins


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from gtnb.targets.local.lab import local_target

    state = tmp_path_factory.mktemp("toggle") / "lab"
    # The seed's cluster: master1 tainted, so the manifest's 2 replicas take every schedulable node.
    with local_target(state, taint_master=True) as target:
        pids: set[int] = set()

        def snapshot() -> None:
            sup = psutil.Process(json.loads((state / "lab.json").read_text())["pid"])
            pids.update({sup.pid} | {p.pid for p in sup.children(recursive=True)})

        snapshot()
        target.snapshot = snapshot  # type: ignore[attr-defined]
        yield target
        snapshot()
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"the lab left processes behind: {alive}"


def _get_status(target: object) -> int:
    from gtnb.traffic import Pin

    pin = Pin.from_frontend(target.balancer.frontend())  # type: ignore[attr-defined]
    with pin.client(timeout_s=20) as c:
        return c.get("/fast", extensions=pin.extensions()).status_code


def _lab_mode(target: object) -> str | None:
    modes = {p.mode for p in target.cluster.pods()}  # type: ignore[attr-defined]
    return modes.pop() if len(modes) == 1 else None


def _check_toggled(target: object, result: ToggleResult, mode: str) -> None:
    pods = target.cluster.pods()  # type: ignore[attr-defined]
    assert pods and all(p.mode == mode and p.ready for p in pods), pods
    rendered = render_haproxy_config(mode, target.haproxy_values())  # type: ignore[attr-defined]
    assert result.cfg_sha256 == hashlib.sha256(rendered.encode()).hexdigest()
    assert target.balancer.installed_sha256() == result.cfg_sha256  # type: ignore[attr-defined]
    assert result.manifest_sha256 == manifest_sha256(load_mode(mode).manifest)
    servers = backend_servers(target.balancer.show_stat())  # type: ignore[attr-defined]
    assert set(result.servers_up) == {p.node for p in pods}
    assert all(server_is_up(servers[n]) for n in result.servers_up), servers
    assert not [n for n, row in servers.items() if row["check_status"] == "INI"], servers  # all checked
    assert set(result.pods) == {p.name for p in pods}
    assert _get_status(target) == 200


@pytest.mark.lab
def test_broken_config_is_refused_and_the_lab_keeps_serving(lab: object) -> None:
    before_pods = sorted((p.name, p.mode) for p in lab.cluster.pods())  # type: ignore[attr-defined]
    before_sha = lab.balancer.installed_sha256()  # type: ignore[attr-defined]
    target_mode = "improved" if _lab_mode(lab) == "current" else "current"
    lines: list[str] = []
    with pytest.raises(BalancerError) as err:
        toggle(_Values(lab, GTNB_CERT="/nonexistent/example.local.pem"), target_mode, log=lines.append, progress=False)  # type: ignore[arg-type]
    assert "/nonexistent/example.local.pem" in str(err.value)  # haproxy's own complaint, quoted
    assert "refused the config" in str(err.value) and "before applying the manifest" in str(err.value)
    assert any("not installed" in line for line in lines), lines
    assert lab.balancer.installed_sha256() == before_sha  # type: ignore[attr-defined]
    assert sorted((p.name, p.mode) for p in lab.cluster.pods()) == before_pods  # manifest never applied  # type: ignore[attr-defined]
    assert _get_status(lab) == 200


def _h2_get(frontend: object, path: str) -> tuple[int, int, list[str]]:
    """One HTTP/2 GET that treats GOAWAY as RFC 7540 6.8 and curl (nghttp2) do: a GOAWAY whose
    last_stream_id covers our stream lets the stream finish. Frames are handled by hand
    (hyperframe + hpack) because the `h2` state machine closes on any GOAWAY, which is also why
    httpx 0.28 / httpcore 1.0.9 fail such a stream with RemoteProtocolError(ConnectionTerminated
    error_code 0): they cannot show what HAProxy's reload does to HTTP/2 clients.

    Returns:
        (status, body bytes, GOAWAYs seen as "goaway <error code> <last stream id>").
    """
    import socket
    import ssl

    import hpack
    from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

    ctx = ssl.create_default_context(cafile=str(frontend.ca))  # type: ignore[attr-defined]
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((frontend.host, frontend.port), timeout=30)  # type: ignore[attr-defined]
    with ctx.wrap_socket(raw, server_hostname=frontend.sni) as sock:  # type: ignore[attr-defined]
        assert sock.selected_alpn_protocol() == "h2"
        headers = HeadersFrame(1, hpack.Encoder().encode([
            (":method", "GET"), (":path", path), (":scheme", "https"), (":authority", frontend.sni)]))  # type: ignore[attr-defined]
        headers.flags.add("END_HEADERS")
        headers.flags.add("END_STREAM")
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize() + headers.serialize())
        decoder, buf = hpack.Decoder(), b""
        status, size, seen = 0, 0, []

        def read(n: int) -> bytes:
            nonlocal buf
            while len(buf) < n:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError(f"connection closed before the stream ended (seen: {seen})")
                buf += data
            out, buf = buf[:n], buf[n:]
            return out

        while True:
            frame, length = Frame.parse_frame_header(memoryview(read(9)))
            frame.parse_body(memoryview(read(length)))
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                sock.sendall(ack.serialize())
            elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                pong = PingFrame(0, frame.opaque_data)
                pong.flags.add("ACK")
                sock.sendall(pong.serialize())
            elif isinstance(frame, GoAwayFrame):
                seen.append(f"goaway {frame.error_code} {frame.last_stream_id}")
                if frame.error_code != 0 or frame.last_stream_id < 1:
                    raise ConnectionError(f"GOAWAY cuts our stream: {seen}")
            elif isinstance(frame, RstStreamFrame) and frame.stream_id == 1:
                raise ConnectionError(f"stream reset, error code {frame.error_code}")
            elif isinstance(frame, HeadersFrame) and frame.stream_id == 1:
                status = int(dict(decoder.decode(frame.data))[":status"])
            elif isinstance(frame, DataFrame) and frame.stream_id == 1:
                size += len(frame.data)
            if frame.stream_id == 1 and "END_STREAM" in frame.flags:
                return status, size, seen


@pytest.mark.lab
@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2"])
def test_config_install_mid_request_cuts_nothing_on_the_lab(lab: object, http2: bool) -> None:
    """The committed configs (TLS, expose-fd listeners) reloaded twice under a long request."""
    import threading

    from gtnb.traffic import Pin

    balancer = lab.balancer  # type: ignore[attr-defined]
    mode = _lab_mode(lab) or "current"
    other = "improved" if mode == "current" else "current"
    texts = [render_haproxy_config(m, lab.haproxy_values()) for m in (other, mode)]  # type: ignore[attr-defined]
    out: dict[str, object] = {}

    def long_request() -> None:
        try:
            if http2:
                out["result"] = _h2_get(balancer.frontend(), "/sleep?seconds=4")
            else:
                pin = Pin.from_frontend(balancer.frontend())
                with pin.client(timeout_s=30) as c:
                    r = c.get("/sleep?seconds=4", extensions=pin.extensions())
                    out["result"] = (r.status_code, len(r.content), [])
        except Exception as exc:  # recorded, asserted below
            out["error"] = repr(exc)

    def in_flight() -> bool:
        if out:  # ended already: the assertion below says how
            return True
        rows = backend_servers(balancer.show_stat())
        return sum(int(r["scur"] or 0) for r in rows.values()) >= 1

    t = threading.Thread(target=long_request)
    t.start()
    wait_until(in_flight, timeout_s=20, what="the long request to reach a server")
    for text in texts:  # away and back: two reloads while it waits
        balancer.install_config(text)
    assert t.is_alive(), f"the request ended before the reloads: {out}"
    t.join(30)
    assert "error" not in out, out
    status, size, seen = out["result"]  # type: ignore[misc]
    assert status == 200 and size > 0
    if http2:  # the old worker said goodbye gracefully: finish what you have, open no more
        assert seen and all(s == "goaway 0 2147483647" for s in seen), seen
    assert balancer.installed_sha256() == hashlib.sha256(texts[-1].encode()).hexdigest()


@pytest.mark.lab
def test_control_plane_connection_survives_config_installs(lab: object) -> None:
    """The seed's "6443 blip" comes from restarting HAProxy; a reload keeps the TCP pass-through
    connection to the API server: a request half sent before two installs completes after them."""
    import socket

    balancer = lab.balancer  # type: ignore[attr-defined]
    values = lab.haproxy_values()  # type: ignore[attr-defined]
    mode = _lab_mode(lab) or "current"
    other = "improved" if mode == "current" else "current"
    with socket.create_connection((values["GTNB_FRONTEND_ADDR"], int(values["GTNB_API_PORT"])), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n")  # not finished yet
        for m in (other, mode):
            balancer.install_config(render_haproxy_config(m, values))
        s.sendall(b"\r\n")
        answer = b""
        while data := s.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0], answer[:200]


class _Values:
    """The real lab with some HAProxy values replaced (what a wrong lab profile would do)."""

    def __init__(self, inner: object, **values: str) -> None:
        self.name, self.cluster, self.balancer = inner.name, inner.cluster, inner.balancer  # type: ignore[attr-defined]
        self.inner, self.values = inner, values

    def haproxy_values(self) -> dict[str, str]:
        return {**self.inner.haproxy_values(), **self.values}  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


@pytest.mark.lab
def test_failed_verification_is_a_clear_error(lab: object) -> None:
    mode = _lab_mode(lab) or "current"
    values = lab.haproxy_values()  # type: ignore[attr-defined]
    pods = {p.node for p in lab.cluster.pods()}  # type: ignore[attr-defined]
    assert pods == {"worker1", "worker2"}  # master1 is tainted: nothing listens on its address
    # A config that is valid but checks worker1's pod at master1's address: it never comes UP.
    wrong = _Values(lab, GTNB_WORKER1_ADDR=values["GTNB_MASTER1_ADDR"])
    with pytest.raises(BalancerError) as err:
        toggle(wrong, mode, progress=False, verify_timeout_s=4.0, log=lambda line: None)  # type: ignore[arg-type]
    message = str(err.value)
    assert "verification failed" in message and "worker1 UP" in message and "L4" in message, message
    assert "worker2" not in message.split("still does not see")[1]  # only the wrong one is named
    # The right values put it back: a reload and no rollout, so the toggle returns soon after the
    # reload. Requests right away must all succeed, the one round robin sends to master1 (no
    # pod) too: the toggle waits until HAProxy has checked every server.
    _check_toggled(lab, toggle(lab, mode, progress=False, timeout_s=WAIT_S), mode)  # type: ignore[arg-type]
    assert [_get_status(lab) for _ in range(3)] == [200, 200, 200]


@pytest.mark.lab
def test_deadlock_reported_then_resolved_by_force_delete(lab: object) -> None:
    cluster = lab.cluster  # type: ignore[attr-defined]
    old_mode = _lab_mode(lab) or "current"
    new_mode = "improved" if old_mode == "current" else "current"
    old = {p.name for p in cluster.pods()}
    assert len(old) == 2  # the manifest's replicas == the 2 schedulable nodes: the seed's deadlock

    lines: list[str] = []
    with pytest.raises(RolloutDeadlock) as err:
        toggle(lab, new_mode, deadlock_policy="report", deadlock_after_s=1.0, log=lines.append,  # type: ignore[arg-type]
               progress=False, timeout_s=WAIT_S)
    message = str(err.value)
    assert "--grace-period=5" in message and "maxUnavailable" in message and "kubernetes#116891" in message
    pods = cluster.pods()
    assert {p.name for p in pods if p.mode == old_mode and p.phase == "Running"} == old  # nothing deleted
    assert any(p.mode == new_mode and p.phase == "Pending" and p.reason == "Unschedulable" for p in pods)
    assert any("deadlock_policy=report" in line for line in lines), lines

    # The same toggle with the seed's policy, from the deadlocked state.
    lines.clear()
    result = toggle(lab, new_mode, deadlock_after_s=1.0, log=lines.append, progress=False, timeout_s=WAIT_S)  # type: ignore[arg-type]
    assert result.deadlock and set(result.deleted) == old
    assert any("force-deleting" in line and "grace 5 s" in line for line in lines), lines
    _check_toggled(lab, result, new_mode)
    assert not ({p.name for p in cluster.pods()} & old)
    lab.snapshot()  # type: ignore[attr-defined]


@pytest.mark.lab
def test_toggle_current_improved_current(lab: object) -> None:
    first = "improved" if _lab_mode(lab) == "current" else "current"
    for mode in (first, "current" if first == "improved" else "improved"):
        lines: list[str] = []
        result = toggle(lab, mode, log=lines.append, progress=False, timeout_s=WAIT_S)  # type: ignore[arg-type]
        _check_toggled(lab, result, mode)
        assert result.deadlock and len(result.deleted) == 2  # the seed's lab: every toggle deadlocks
        text = "\n".join(lines)
        for step in ("rendered", "reloaded", "apply", "rollout deadlock", "rollout: complete",
                     "verify: HAProxy sees", "toggle done"):
            assert step in text, (step, text)
        lab.snapshot()  # type: ignore[attr-defined]
    # Toggling to the mode it is in changes nothing, needs no deletion and still verifies.
    again = toggle(lab, mode, progress=False, timeout_s=WAIT_S)  # type: ignore[arg-type]
    assert again.pods == result.pods and again.cfg_sha256 == result.cfg_sha256 and not again.deleted
