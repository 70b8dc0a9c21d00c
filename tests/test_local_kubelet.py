"""The local lab's kubelet and Deployment controller, with real processes (a toy container
serving HTTP on a lab node address), without HAProxy or Envoy: termination order, the grace
deadline, kubelet's 2 s extension, rolling updates and the anti-affinity deadlock."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from gtnb._wait import wait_until
from gtnb.errors import ConfigError
from gtnb.targets.local.addresses import LabAddresses, claim_index
from gtnb.targets.local.controller import Controller, DeploymentSpec
from gtnb.targets.local.kubelet import ContainerRun, HookSpec
from gtnb.targets.local.procs import Spawner

TOY = str(Path(__file__).with_name("_toy_container.py"))
WAIT_S = 30.0  # 2 shared cores, other tests running: wide margins


@dataclass(frozen=True)
class ToyTemplate:
    hash: str
    mode: str = "current"
    grace_period_s: float = 10.0
    prestop_s: float = 0.0
    hook: bool = True
    ignore_sigterm: bool = False
    exec_hook: tuple[str, ...] = ()

    def containers(self, pod: str, node: str, address: str) -> list[ContainerRun]:
        argv = [sys.executable, TOY, "--listen", f"{address}:15080", "--prestop-s", str(self.prestop_s)]
        if self.ignore_sigterm:
            argv.append("--ignore-sigterm")
        return [
            ContainerRun(
                name="hc",
                argv=tuple(argv),
                env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOOK_WHO": "the toy"},
                pre_stop=(
                    HookSpec("exec", command=self.exec_hook) if self.exec_hook
                    else HookSpec("httpGet", path="/prestop", port=15080) if self.hook else None
                ),
                ready_url=f"http://{address}:15080/healthz",
            )
        ]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Controller, Lines, list[psutil.Process]]]:
    lock = claim_index()
    spawner = Spawner()
    narration = Lines()
    logger = logging.getLogger("gtnb.lab")
    logger.addHandler(narration)
    logger.setLevel(logging.INFO)
    seen: list[psutil.Process] = []
    controllers: list[Controller] = []

    def make(schedulable: tuple[str, ...] = ("master1", "worker1", "worker2")) -> Controller:
        c = Controller(LabAddresses(lock.index), tmp_path, spawner, schedulable)
        controllers.append(c)
        return c

    try:
        yield make, narration, seen  # type: ignore[misc]
    finally:
        for c in controllers:
            c.stop(timeout_s=1.0)
        spawner.close()
        logger.removeHandler(narration)
        lock.release()
        leftovers = [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not leftovers, f"processes left behind: {leftovers}"


def _track(c: Controller, seen: list[psutil.Process]) -> None:
    for pod in list(c.pods.values()):
        for child in list(pod.children.values()):
            try:
                proc = psutil.Process(child.pid)
            except psutil.NoSuchProcess:
                continue
            if all(p.pid != proc.pid for p in seen):
                seen.append(proc)


def _ready(c: Controller, n: int, hash_: str) -> list[str]:
    pods = [p for p in c.snapshot() if p["template_hash"] == hash_ and p["ready"] and p["phase"] == "Running"]
    return [p["name"] for p in pods] if len(pods) == n else []


def _deploy(c: Controller, template: ToyTemplate, replicas: int) -> list[str]:
    c.set_spec(DeploymentSpec("service-a-igw", template, replicas, max_surge=1, max_unavailable=0))
    return wait_until(lambda: _ready(c, replicas, template.hash), timeout_s=WAIT_S, what=f"{replicas} ready pods")


def _log_lines(tmp_path: Path, pod: str) -> list[str]:
    return (tmp_path / "pods" / pod / "hc.log").read_text().splitlines()


def _index(lines: list[str], needle: str) -> int:
    for i, line in enumerate(lines):
        if line.endswith(" " + needle) or needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {lines}")


def test_delete_runs_prestop_then_sigterm_then_exit(lab, tmp_path: Path) -> None:
    make, narration, seen = lab
    c = make()
    c.start()
    [pod] = _deploy(c, ToyTemplate("aaaa", prestop_s=0.5), 1)
    _track(c, seen)
    c.delete_pod(pod, 10.0)
    assert any(p["name"] == pod and p["phase"] == "Terminating" for p in c.snapshot())
    wait_until(lambda: pod not in c.pods, timeout_s=WAIT_S, what="the deleted pod to be gone")
    lines = _log_lines(tmp_path, pod)
    # kubectl logs --timestamps prefix on every line
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line) for line in lines), lines
    order = [_index(lines, s) for s in ("prestop start", "prestop done", "sigterm", "exit")]
    assert order == sorted(order), lines
    assert (tmp_path / "pods" / pod / "hc.exit").read_text().strip() == "0"
    said = [line for line in narration.lines if line.startswith(f"pod {pod}:")]
    assert _index(said, "preStop httpGet :15080/prestop started") < _index(said, "SIGTERM to hc after its hook returned;")
    # The ReplicaSet replaces the deleted pod on another node (the old one was still held).
    [new] = wait_until(lambda: _ready(c, 1, "aaaa"), timeout_s=WAIT_S, what="a replacement pod")
    assert new != pod


def test_sigkill_at_grace_deadline_when_sigterm_is_ignored(lab, tmp_path: Path) -> None:
    make, narration, seen = lab
    c = make()
    c.start()
    [pod] = _deploy(c, ToyTemplate("bbbb", hook=False, ignore_sigterm=True), 1)
    _track(c, seen)
    t0 = time.monotonic()
    c.delete_pod(pod, 2.5)
    wait_until(lambda: pod not in c.pods, timeout_s=WAIT_S, what="the pod to be killed")
    elapsed = time.monotonic() - t0
    lines = _log_lines(tmp_path, pod)
    assert any(line.endswith(" sigterm") for line in lines)
    assert not any(line.endswith(" exit") for line in lines), "the container must not have exited by itself"
    assert (tmp_path / "pods" / pod / "hc.exit").read_text().strip() == "-9"
    assert elapsed >= 2.5  # not before the deadline (an upper bound would be a speed assertion)
    assert any(f"pod {pod}: SIGKILL to hc at the grace deadline" == line for line in narration.lines)


def test_hook_still_running_at_deadline_gets_sigterm_and_two_more_seconds(lab, tmp_path: Path) -> None:
    make, narration, seen = lab
    c = make()
    c.start()
    [pod] = _deploy(c, ToyTemplate("cccc", prestop_s=30, ignore_sigterm=True), 1)
    _track(c, seen)
    t0 = time.monotonic()
    c.delete_pod(pod, 1.0)
    wait_until(lambda: pod not in c.pods, timeout_s=WAIT_S, what="the pod to be killed")
    elapsed = time.monotonic() - t0
    lines = _log_lines(tmp_path, pod)
    assert _index(lines, "prestop start") < _index(lines, "sigterm")
    assert not any("prestop done" in line for line in lines)
    said = [line for line in narration.lines if line.startswith(f"pod {pod}:")]
    assert _index(said, "still running at the grace deadline") < _index(said, "SIGKILL to hc at the grace deadline")
    assert elapsed >= 1.0 + 2.0  # grace, then kubelet's minimum SIGTERM window


def test_exec_hook_runs_before_sigterm(lab, tmp_path: Path) -> None:
    make, narration, seen = lab
    c = make()
    c.start()
    hook = ("/bin/sh", "-c", "echo hook ran for $HOOK_WHO; sleep 0.3")
    template = ToyTemplate("hhhh", exec_hook=hook)
    [pod] = _deploy(c, template, 1)
    _track(c, seen)
    c.delete_pod(pod, 10.0)
    wait_until(lambda: pod not in c.pods, timeout_s=WAIT_S, what="the pod to be gone")
    said = [line for line in narration.lines if line.startswith(f"pod {pod}:")]
    assert _index(said, "preStop exec /bin/sh -c echo hook") < _index(said, "returned after") < _index(said, "SIGTERM to hc")
    assert "returned after" in said[_index(said, "returned after")] and "exit 0" in said[_index(said, "returned after")]
    # The hook ran with the container's env, its output captured beside the container's log.
    hook_log = (tmp_path / "pods" / pod / "hc.prestop.log").read_text()
    assert "hook ran for the toy" in hook_log
    assert _index(_log_lines(tmp_path, pod), "sigterm") >= 0


def test_rolling_update_respects_surge_and_changes_names(lab, tmp_path: Path) -> None:
    make, narration, seen = lab
    c = make()
    c.start()
    old = set(_deploy(c, ToyTemplate("dddd", grace_period_s=2), 2))
    most = 0

    def done() -> list[str]:
        nonlocal most
        _track(c, seen)
        live = [p for p in c.snapshot() if p["phase"] != "Terminating"]
        most = max(most, len(live))
        ready_old = [p for p in live if p["template_hash"] == "dddd" and p["ready"]]
        assert len([p for p in live if p["ready"]]) >= 2 or len(ready_old) == 2, "maxUnavailable 0 broken"
        return _ready(c, 2, "eeee") if not any(p["template_hash"] == "dddd" for p in c.snapshot()) else []

    c.set_spec(DeploymentSpec("service-a-igw", ToyTemplate("eeee", grace_period_s=2), 2, 1, 0))
    new = set(wait_until(done, timeout_s=WAIT_S * 2, what="the rollout to complete"))
    assert not (new & old)
    assert all(name.startswith("service-a-igw-eeee-") for name in new)
    assert most <= 3, f"maxSurge 1 exceeded: {most} live pods"


def test_deadlock_when_pods_equal_schedulable_nodes(lab, tmp_path: Path) -> None:
    make, narration, seen = lab
    c = make(schedulable=("worker1", "worker2"))  # master1 tainted, as on the seed's cluster
    c.start()
    old = set(_deploy(c, ToyTemplate("ffff", grace_period_s=2), 2))
    c.set_spec(DeploymentSpec("service-a-igw", ToyTemplate("gggg", mode="improved", grace_period_s=2), 2, 1, 0))

    def stuck() -> list[dict]:
        pending = [p for p in c.snapshot() if p["phase"] == "Pending"]
        return pending if pending and pending[0]["reason"] == "Unschedulable" else []

    [pending] = wait_until(stuck, timeout_s=WAIT_S, what="the new pod to be Pending")
    assert pending["template_hash"] == "gggg" and pending["node"] is None
    # It stays that way: no old pod may go while the new one cannot become available.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        running = {p["name"] for p in c.snapshot() if p["phase"] == "Running" and p["ready"]}
        assert old <= running and len(stuck()) == 1
        time.sleep(0.2)
    status = c.rollout_status()
    assert status["old"] == 2 and status["updated"] == 1 and status["pending"] == [pending["name"]]
    # The seed's way out: force-delete the old-mode pods (grace 5 s; shorter here).
    for name in old:
        c.delete_pod(name, 1.0)
    wait_until(lambda: _ready(c, 2, "gggg") and c.rollout_status()["old"] == 0, timeout_s=WAIT_S * 2,
               what="the rollout to complete after the force delete")
    _track(c, seen)


def test_bad_schedulable_nodes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="subset of master1, worker1, worker2"):
        Controller(LabAddresses(150), tmp_path, None, ("worker9",))  # type: ignore[arg-type]
