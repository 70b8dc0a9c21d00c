"""An improved pod exits soon after its drain: no idle HAProxy -> Envoy connection holds it.

Real lab (supervisor, HAProxy, agent + Envoy, hc). Before haproxy-improved.cfg closed server-side
connections (`option http-server-close`), HAProxy's idle keep-alive connection to Envoy kept
pilot-agent's EXIT_ON_ZERO_ACTIVE_CONNECTIONS poll at `There are still 1 active connections`
until Envoy's 45 s drain period ended (measured 41-44 s after DRAINED)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gtnb._wait import wait_until
from gtnb.haproxy_stat import backend_servers, server_is_up
from gtnb.modes import toggle
from gtnb.targets.local.lab import local_target
from gtnb.traffic import Pin

pytestmark = pytest.mark.lab
WAIT_S = 120.0  # a lab up and a toggle on 2 shared cores with other tests running


def test_idle_improved_pod_is_not_held_by_haproxy_connections(tmp_path: Path) -> None:
    with local_target(tmp_path / "lab") as lab:
        toggle(lab, "improved", progress=False, timeout_s=WAIT_S)
        lab.cluster.scale(1)
        wait_until(lambda: len(lab.cluster.pods()) == 1 and all(p.ready for p in lab.cluster.pods()),
                   timeout_s=WAIT_S, what="one Ready improved pod")
        [pod] = lab.cluster.pods()
        wait_until(lambda: server_is_up(backend_servers(lab.balancer.show_stat())[str(pod.node)]),
                   timeout_s=WAIT_S, what=f"HAProxy to check {pod.node} UP")
        pin = Pin.from_frontend(lab.balancer.frontend())
        with pin.client(timeout_s=20) as client:  # keep-alive client, as S1..S4's are
            for _ in range(3):
                assert client.get("/fast", extensions=pin.extensions()).status_code == 200
        stop = threading.Event()
        agent: list[str] = []
        follower = threading.Thread(target=lambda: agent.extend(lab.cluster.follow_logs(pod.name, "istio-proxy", stop)))
        follower.start()
        try:
            lab.cluster.delete_pod(pod.name, 210)
            follower.join(WAIT_S)  # ends by itself once the agent exited and its log is read out
        finally:
            stop.set()
            follower.join(10)
        assert not follower.is_alive()
        said = "\n".join(agent)
        assert "Agent has successfully terminated" in said, said[-2000:]
        # The outcome, not a speed: pilot-agent's first check after MINIMUM_DRAIN_DURATION already
        # finds zero active connections; an idle pooled connection would show up here.
        assert "There are no more active connections" in said, said[-2000:]
        still = [line for line in agent if "There are still" in line]
        assert still == [], still[:3]
