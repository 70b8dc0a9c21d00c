"""LocalCluster's parts that need no lab: following container logs in the state dir, and the
API client re-raising the supervisor's error classes (against a real ApiServer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gtnb._wait import wait_until
from gtnb.errors import ConfigError, LabError
from gtnb.targets.local.addresses import API_PORT, LabAddresses, claim_index
from gtnb.targets.local.api import ApiServer
from gtnb.targets.local.client import ApiClient, LocalCluster

POD = "service-a-igw-abc-xyz12"


@pytest.fixture
def api() -> Iterator[tuple[str, list[dict]]]:
    lock = claim_index()
    calls: list[dict] = []
    pods: list[dict] = [{"name": POD}]

    def bad(body: dict) -> None:
        raise ConfigError("replicas -1 is negative: scale to 0 or more")

    def boom(body: dict) -> None:
        raise RuntimeError("unexpected")

    routes = {
        "GET /pods": lambda b: [
            {"name": p["name"], "node": "worker1", "mode": "current", "phase": "Running", "ready": True,
             "template_hash": "abc", "reason": None, "created": 1.0, "containers": ["istio-proxy", "hc"]}
            for p in pods
        ],
        "POST /scale": bad,
        "POST /restart": boom,
        "POST /echo": lambda b: calls.append(b) or {"ok": True},
    }
    a = LabAddresses(lock.index)
    server = ApiServer(a.api, API_PORT, routes)
    server.start()
    try:
        yield a.api_url, pods
    finally:
        server.close()
        lock.release()


def test_api_errors_keep_their_class(api, tmp_path: Path) -> None:
    url, _ = api
    cluster = LocalCluster(tmp_path, url)
    with pytest.raises(ConfigError, match="negative"):
        ApiClient(url).call("POST", "/scale", {"replicas": -1})
    with pytest.raises(LabError, match="RuntimeError: unexpected"):
        cluster.rollout_restart()
    with pytest.raises(LabError, match="no route GET /nope"):
        ApiClient(url).call("GET", "/nope")
    [pod] = cluster.pods()
    assert pod.name == POD and pod.ready and pod.containers == ("istio-proxy", "hc")


def test_api_down_is_a_clear_lab_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="is the lab up"):
        LocalCluster(tmp_path, "http://127.199.0.2:7000").pods()


def test_follow_logs_reads_to_the_end_once_the_container_exited(api, tmp_path: Path) -> None:
    url, _ = api
    cluster = LocalCluster(tmp_path, url)
    pod_dir = tmp_path / "pods" / POD
    stop = threading.Event()
    got: list[str] = []
    follower = threading.Thread(target=lambda: got.extend(cluster.follow_logs(POD, "hc", stop)))
    follower.start()  # before the log exists: the pod is listed, so it waits for it
    pod_dir.mkdir(parents=True)
    log = pod_dir / "hc.log"
    with open(log, "wb") as f:
        f.write(b"2026-06-28T10:15:05.000000001Z one\n2026-06-28T10:15:05.000000002Z tw")
        f.flush()
        wait_until(lambda: got == ["2026-06-28T10:15:05.000000001Z one"], timeout_s=10, what="the first line")
        f.write(b"o\n2026-06-28T10:15:05.000000003Z three\n")  # a line completed later
    (pod_dir / "hc.exit").write_text("0\n")
    follower.join(10)
    assert not follower.is_alive(), "follow_logs must end once the container exited"
    assert [line.split(" ", 1)[1] for line in got] == ["one", "two", "three"]


def test_follow_logs_stops_when_told(api, tmp_path: Path) -> None:
    url, _ = api
    cluster = LocalCluster(tmp_path, url)
    pod_dir = tmp_path / "pods" / POD
    pod_dir.mkdir(parents=True)
    (pod_dir / "istio-proxy.log").write_text("2026-06-28T10:15:05.000000001Z still running\n")
    stop = threading.Event()
    got: list[str] = []
    follower = threading.Thread(target=lambda: got.extend(cluster.follow_logs(POD, "istio-proxy", stop)))
    follower.start()
    wait_until(lambda: got, timeout_s=10, what="the line")
    stop.set()
    follower.join(10)
    assert not follower.is_alive()


def test_follow_logs_of_an_unknown_pod_is_an_error(api, tmp_path: Path) -> None:
    url, _ = api
    with pytest.raises(LabError, match="is the name right"):
        list(LocalCluster(tmp_path, url).follow_logs("service-a-igw-nope-aaaaa", "hc", threading.Event()))
