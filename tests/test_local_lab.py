"""The local lab end to end, with the real processes: supervisor, backend, HAProxy, agent +
Envoy, hc. Each lab has its own tmp state dir, so labs of parallel tests run side by side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gtnb._wait import wait_until
from gtnb.errors import ConfigError, LabError
from gtnb.manifests import manifest_path
from gtnb.targets.base import Cluster
from gtnb.targets.local.lab import LocalTarget, lab_down, lab_status, lab_up, local_target
from gtnb.traffic import Pin

pytestmark = pytest.mark.lab
WAIT_S = 90.0  # Envoy starts per pod; 2 shared cores with other tests: wide margins


def _lab_pids(state_dir: Path) -> set[int]:
    """Every process of the lab: the supervisor and all its descendants (Envoy included)."""
    record = json.loads((state_dir / "lab.json").read_text())
    sup = psutil.Process(record["pid"])
    return {sup.pid} | {p.pid for p in sup.children(recursive=True)}


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _zombies(pids: set[int]) -> set[int]:
    """Pids left as zombies: nobody reaped them (PID 1 here never does)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _get(target: LocalTarget, path: str, client: httpx.Client | None = None) -> httpx.Response:
    pin = Pin.from_frontend(target.balancer.frontend())
    if client is not None:
        return client.get(path, extensions=pin.extensions())
    with pin.client(timeout_s=20) as c:
        return c.get(path, extensions=pin.extensions())


def _rolled_out(cluster: Cluster, replicas: int) -> bool:
    rs = cluster.rollout_status()
    pods = cluster.pods()
    return rs.complete and rs.desired == replicas and len(pods) == replicas and all(p.ready for p in pods)


def test_two_labs_up_side_by_side_then_down_leave_nothing(tmp_path: Path) -> None:
    states = [tmp_path / "a", tmp_path / "b"]
    texts: dict[Path, str | BaseException] = {}

    def up(state: Path, taint: bool) -> None:
        try:
            texts[state] = lab_up(state, taint_master=taint)
        except BaseException as exc:  # re-raised below, in the test's thread
            texts[state] = exc

    # Started at the same moment: the index lock must give them different 127.N.0.0/24.
    threads = [threading.Thread(target=up, args=(s, s.name == "a")) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 2)
    pids: set[int] = set()
    try:
        for state in states:
            if isinstance(texts.get(state), BaseException):
                raise texts[state]  # type: ignore[misc]
            assert "lab up in" in str(texts[state])
            pids |= _lab_pids(state)
        indexes = {json.loads((s / "lab.json").read_text())["index"] for s in states}
        assert len(indexes) == 2
        names = {psutil.Process(p).name() for p in pids}
        assert "haproxy" in names and "envoy" in names, names
        status = lab_status(states[0])
        assert "deployment mode current, HAProxy config current" in status
        pod_lines = [line for line in status.splitlines() if line.startswith("service-a-igw-")]
        assert len(pod_lines) == 2 and all(" current " in line and " Running " in line for line in pod_lines), status
        assert all(line.endswith(" UP (L7OK)") for line in pod_lines), status
        assert "master1" not in " ".join(pod_lines) and "unschedulable" in status  # tainted
        assert "lab already up" in lab_up(states[0])
        second = subprocess.run([sys.executable, "-m", "gtnb.targets.local.supervisor", "--state-dir", str(states[0])],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "another lab supervisor runs in" in second.stderr, second.stderr
        for state in states:
            r = _get(LocalTarget(state), "/fast")
            assert r.status_code == 200
            # The backend logs a request once it is done: its line may trail the response a bit.
            wait_until(lambda s=state: "path=/fast" in (s / "backend.log").read_text(), timeout_s=10,
                       what="the backend to log the request")
        # HAProxy dying under a running lab is noticed and said, not silently ignored.
        record = json.loads((states[1] / "lab.json").read_text())
        os.kill(record["pids"]["haproxy"], signal.SIGKILL)
        wait_until(lambda: "HAProxy exited" in (json.loads((states[1] / "lab.json").read_text())["error"] or ""),
                   timeout_s=10, what="the supervisor to notice HAProxy's death")
        assert "lab degraded: HAProxy exited" in (states[1] / "supervisor.log").read_text()
        assert "DEGRADED: HAProxy exited" in lab_status(states[1])
    finally:
        downs = [lab_down(s) for s in states]
    assert all("down in" in d and "leftover" not in d for d in downs), downs
    assert not _alive(pids)
    # Envoy orphaned by a SIGKILLed agent is reaped by the supervisor (its subreaper) too.
    assert not _zombies(pids), [psutil.Process(p).name() for p in _zombies(pids)]
    assert "no lab running" in lab_status(states[0])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    state = tmp_path_factory.mktemp("shared") / "lab"
    with local_target(state) as target:
        pids = _lab_pids(state)
        yield target
        pids |= _lab_pids(state)
    assert not _alive(pids), "local_target left processes behind"


def _wait_rollout(target: LocalTarget, replicas: int) -> list[str]:
    wait_until(lambda: _rolled_out(target.cluster, replicas), timeout_s=WAIT_S, what=f"{replicas} pods rolled out")
    return sorted(p.name for p in target.cluster.pods())


def test_target_shape(lab: LocalTarget) -> None:
    assert lab.name == "local"
    assert isinstance(lab.cluster, Cluster)
    values = lab.haproxy_values()
    assert values["GTNB_FRONTEND_ADDR"] == lab.frontend.host
    assert values["GTNB_ADMIN_SOCKET"].startswith(str(lab.state_dir))
    assert {n.name for n in lab.cluster.nodes()} == {"master1", "worker1", "worker2"}
    versions = lab.cluster.versions()
    assert versions["envoy"].count(".") == 2 and versions["haproxy"], versions
    with pytest.raises(ConfigError, match="does not exist"):
        lab.cluster.delete_pod("service-a-igw-nope-xxxxx", 1)
    with pytest.raises(ConfigError):
        lab.cluster.scale(-1)


def test_improved_delete_runs_prestop_then_sigterm_then_exit(lab: LocalTarget) -> None:
    lab.cluster.apply(manifest_path("improved"))
    lab.cluster.scale(1)
    [pod] = _wait_rollout(lab, 1)
    assert lab.cluster.pods()[0].mode == "improved"
    stop = threading.Event()
    lines: list[str] = []
    follower = threading.Thread(target=lambda: lines.extend(lab.cluster.follow_logs(pod, "hc", stop)))
    follower.start()
    lab.cluster.delete_pod(pod, 30)
    follower.join(WAIT_S)  # ends by itself once hc exited and its log is read out
    assert not follower.is_alive()
    hc = [line for line in lines if "event=" in line]

    def at(needle: str) -> int:
        return next(i for i, line in enumerate(hc) if needle in line)

    assert at("reason=prestop") < at("signal=SIGTERM") < at("event=exit"), hc
    wait_until(lambda: not lab.cluster.pods() or lab.cluster.pods()[0].name != pod and len(lab.cluster.pods()) == 1,
               timeout_s=WAIT_S, what="the deleted pod to be gone")
    said = (lab.state_dir / "supervisor.log").read_text().splitlines()
    mine = [line for line in said if f"pod {pod}:" in line]

    def said_at(needle: str) -> int:
        return next(i for i, line in enumerate(mine) if needle in line)

    assert said_at("preStop httpGet :15080/prestop started (container hc)") < said_at(
        "SIGTERM to hc after its hook returned") < said_at("gone (all containers exited)")
    assert said_at("SIGTERM to istio-proxy after its hook returned") < said_at("gone")
    agent = (lab.state_dir / "pods" / pod / "istio-proxy.log").read_text()
    assert "Agent has successfully terminated" in agent


def test_sigkill_at_grace_deadline(lab: LocalTarget) -> None:
    lab.cluster.apply(manifest_path("current"))
    lab.cluster.scale(1)
    [pod] = _wait_rollout(lab, 1)
    # Current mode: pilot-agent drains for terminationDrainDuration (5 s) after SIGTERM, longer
    # than the 1 s grace + kubelet's 2 s minimum: kubelet must SIGKILL it.
    lab.cluster.delete_pod(pod, 1)
    exit_file = lab.state_dir / "pods" / pod / "istio-proxy.exit"
    wait_until(exit_file.exists, timeout_s=WAIT_S, what="istio-proxy to be gone")
    assert exit_file.read_text().strip() == "-9"
    said = (lab.state_dir / "supervisor.log").read_text()
    assert f"pod {pod}: SIGKILL to istio-proxy at the grace deadline" in said


def test_rollout_restart_under_load_changes_names(lab: LocalTarget) -> None:
    lab.cluster.scale(2)
    before = set(_wait_rollout(lab, 2))
    results: list[int | str] = []
    stop = threading.Event()
    pin = Pin.from_frontend(lab.balancer.frontend())

    def load() -> None:
        with pin.client(timeout_s=20, keepalive=False) as c:
            while not stop.is_set():
                try:
                    results.append(c.get("/fast", extensions=pin.extensions()).status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)
                stop.wait(0.05)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: len(results) >= 3, timeout_s=WAIT_S, what="the load to run")
        lab.cluster.rollout_restart()
        after = set(wait_until(
            lambda: _rolled_out(lab.cluster, 2) and {p.name for p in lab.cluster.pods()} - before and _wait_rollout(lab, 2),
            timeout_s=WAIT_S * 2, what="the restart to roll out",
        ))
    finally:
        stop.set()
        worker.join(30)
    assert not (after & before)
    assert results.count(200) >= 3, results


def test_deadlock_when_pods_equal_nodes(lab: LocalTarget) -> None:
    lab.cluster.scale(3)
    old = set(_wait_rollout(lab, 3))
    old_mode = lab.cluster.pods()[0].mode
    lab.cluster.rollout_restart()

    def deadlocked() -> bool:
        pods = lab.cluster.pods()
        pending = [p for p in pods if p.phase == "Pending"]
        return len(pending) == 1 and pending[0].reason == "Unschedulable"

    wait_until(deadlocked, timeout_s=WAIT_S, what="the new pod to be Pending")
    pods = lab.cluster.pods()
    running = {p.name for p in pods if p.phase == "Running" and p.ready}
    assert running == old and all(p.mode == old_mode for p in pods)
    rs = lab.cluster.rollout_status()
    assert rs.old == 3 and rs.updated == 1 and len(rs.pending) == 1 and not rs.complete
    # The way out the seed takes: delete the old pods; the rollout then completes.
    for name in old:
        lab.cluster.delete_pod(name, 0)
    after = set(_wait_rollout(lab, 3))
    assert not (after & old)


CHILD = textwrap.dedent(
    """
    import sys, time
    from gtnb.targets.local.lab import local_target
    with local_target(sys.argv[1]) as t:
        print("ready", flush=True)
        if sys.argv[2] == "raise":
            sys.stdin.readline()  # the test has the lab's pids now
            raise RuntimeError("boom in the with block")
        time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["sigint", "raise", "sigkill"])
def test_with_block_always_tears_down(tmp_path: Path, how: str) -> None:
    state = tmp_path / "lab"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), how],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the lab serves (or the child fails)
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        pids = _lab_pids(state)
        assert len(pids) >= 6
        if how == "raise":
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.wait(WAIT_S) != 0
            assert "boom in the with block" in (proc.stderr.read() if proc.stderr else "")
            assert json.loads((state / "lab.json").read_text())["status"] == "down"
            assert not _alive(pids)
            return
        if how == "sigint":
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        else:
            # The supervisor itself SIGKILLed: PR_SET_PDEATHSIG takes every child with it, before
            # (and without) any clean-up by the owner of the with block.
            os.kill(json.loads((state / "lab.json").read_text())["pid"], signal.SIGKILL)
            wait_until(lambda: not _alive(pids), timeout_s=30, what="the lab's processes to die with the supervisor")
            proc.send_signal(signal.SIGINT)
        proc.wait(WAIT_S)
        wait_until(lambda: not _alive(pids), timeout_s=30, what=f"every lab process to be gone after {how}")
        if how == "sigkill":
            # local_target's clean-up found the supervisor dead and recorded it.
            assert "died; cleaned up by lab down" in lab_status(state)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_crashing_container_fails_up_with_its_log(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    state.mkdir()
    text = manifest_path("current").read_text()
    broken = text.replace('value: "1"', 'value: "soon"', 1)  # HC_POLL_INTERVAL_S
    assert broken != text
    # The lab restores the last applied manifest from deployment.json: make that the broken one.
    (state / "deployment.json").write_text(json.dumps(
        {"manifest": broken, "source": "broken.yaml", "mode": "current", "replicas": 1, "restarted_at": None}))
    with pytest.raises(LabError, match=r"container hc exited with code 2(.|\n)*HC_POLL_INTERVAL_S"):
        lab_up(state)
    record = json.loads((state / "lab.json").read_text())
    assert record["status"] == "down"
    assert not _alive(_all_pids_of(record))


def test_saved_manifest_that_no_longer_loads_falls_back_to_the_repo_one(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    state.mkdir()
    text = manifest_path("improved").read_text()
    stale = text.replace("terminationGracePeriodSeconds: 210", "terminationGracePeriodSeconds: soon")
    assert stale != text
    (state / "deployment.json").write_text(json.dumps(
        {"manifest": stale, "source": "old.yaml", "mode": "improved", "replicas": 1, "restarted_at": None}))
    try:
        lab_up(state)
        status = lab_status(state)
        pod_lines = [line for line in status.splitlines() if line.startswith("service-a-igw-")]
        assert "deployment mode improved, HAProxy config improved" in status and len(pod_lines) == 1, status
        said = (state / "supervisor.log").read_text()
        assert "the saved manifest no longer loads" in said and "21-igw-improved.yaml instead" in said
    finally:
        lab_down(state)


def _all_pids_of(record: dict) -> set[int]:
    pids = {record["pid"]}
    for key, value in record["pids"].items():
        if key == "pods":
            pids |= {pid for containers in value.values() for pid in containers.values()}
        else:
            pids.add(value)
    return pids
