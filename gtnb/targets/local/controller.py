"""The `service-a-igw` Deployment as the Kubernetes controllers run it: ReplicaSets by pod
template hash, rolling updates bounded by maxSurge/maxUnavailable, a scheduler that honours the
required one-IGW-per-node anti-affinity (a Terminating pod still holds its node) and a set of
schedulable nodes (master1 may be tainted, as on the seed's cluster).

The rolling-update arithmetic follows the deployment controller (`rolling.go`): new pods may be
created while all pods <= replicas + maxSurge; old pods may be removed while the available pods
stay >= replicas - maxUnavailable. With pods == schedulable nodes and maxUnavailable 0 this
deadlocks exactly as kubernetes#116891 does: the new pod stays Pending, no old pod may go.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ...errors import ConfigError
from .addresses import NODE_NAMES, LabAddresses
from .kubelet import ContainerRun, PodRuntime
from .procs import Spawner

__all__ = ["Template", "DeploymentSpec", "Controller", "random_suffix", "SAFE_ALPHABET"]

log = logging.getLogger("gtnb.lab")

# Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words), no look-alikes.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RECONCILE_PERIOD_S = 0.1


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(n))


class Template(Protocol):
    """A pod template: what every pod of one ReplicaSet runs."""

    hash: str  # pod-template-hash
    mode: str | None  # the `mode` label
    grace_period_s: float  # terminationGracePeriodSeconds

    def containers(self, pod: str, node: str, address: str) -> list[ContainerRun]: ...


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    template: Template
    replicas: int
    max_surge: int = 1
    max_unavailable: int = 0
    anti_affinity: bool = True


@dataclass
class _Counts:
    new: list[PodRuntime] = field(default_factory=list)
    old: list[PodRuntime] = field(default_factory=list)
    terminating: list[PodRuntime] = field(default_factory=list)


class Controller:
    """Deployment + ReplicaSet controllers and the scheduler, reconciling in one thread."""

    def __init__(
        self,
        addresses: LabAddresses,
        state_dir: Path,
        spawner: Spawner,
        schedulable: Sequence[str] = NODE_NAMES,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        unknown = [n for n in schedulable if n not in NODE_NAMES]
        if unknown or not schedulable:
            raise ConfigError(
                f"schedulable nodes {list(schedulable)!r} must be a non-empty subset of "
                f"{', '.join(NODE_NAMES)}"
            )
        self.addresses = addresses
        self.state_dir = state_dir
        self.spawner = spawner
        self.schedulable = tuple(schedulable)
        self.spec: DeploymentSpec | None = None
        self.pods: dict[str, PodRuntime] = {}
        self._on_change = on_change
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._unschedulable_logged: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="controller", daemon=True)

    # -- public (called from API handler threads) ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def set_spec(self, spec: DeploymentSpec) -> None:
        """Apply a Deployment: a new template hash starts a rolling update."""
        with self._lock:
            old = self.spec
            self.spec = spec
        if old is None or old.template.hash != spec.template.hash:
            log.info(
                "deployment %s: template %s (mode %s), replicas %d, maxSurge %d, maxUnavailable %d",
                spec.name, spec.template.hash, spec.template.mode, spec.replicas,
                spec.max_surge, spec.max_unavailable,
            )
        elif old.replicas != spec.replicas:
            log.info("deployment %s: scaled to %d", spec.name, spec.replicas)
        self.wake()

    def scale(self, replicas: int) -> None:
        with self._lock:
            if self.spec is None:
                raise ConfigError("no deployment applied yet: apply a manifest before scaling")
            self.set_spec(replace(self.spec, replicas=replicas))

    def delete_pod(self, name: str, grace_period_s: float | None) -> None:
        with self._lock:
            pod = self.pods.get(name)
        if pod is None:
            raise ConfigError(f"pod {name!r} does not exist: list pods with `gtnb lab status`")
        pod.delete(grace_period_s)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            return [p.describe() for p in sorted(self.pods.values(), key=lambda p: p.created)]

    def rollout_status(self) -> dict[str, object]:
        with self._lock:
            spec = self.spec
            c = self._classify()
            desired = spec.replicas if spec else 0
            live = c.new + c.old
            ready = sum(1 for p in live if p.ready)
            old = len(c.old) + sum(1 for p in c.terminating if spec and p.template_hash != spec.template.hash)
            return {
                "desired": desired,
                "updated": len(c.new),
                "ready": ready,
                "available": ready,
                "old": old,
                "pending": [p.name for p in live if p.phase == "Pending"],
                "template_hash": spec.template.hash if spec else "",
                "mode": spec.template.mode if spec else None,
            }

    def stop(self, timeout_s: float = 3.0) -> None:
        """Lab teardown: stop reconciling, kill every pod quickly and wait for all of them."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            pods = list(self.pods.values())
        threads = [threading.Thread(target=p.kill_now, args=(timeout_s,)) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # -- reconcile ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile()
            except Exception:  # one bad pass must not stop the lab; the next pass retries
                log.exception("controller: reconcile failed")
            self._wake.wait(RECONCILE_PERIOD_S)
            self._wake.clear()

    def _classify(self) -> _Counts:
        c = _Counts()
        h = self.spec.template.hash if self.spec else None
        for p in self.pods.values():
            if p.terminating:
                c.terminating.append(p)
            elif p.template_hash == h:
                c.new.append(p)
            else:
                c.old.append(p)
        return c

    def _reconcile(self) -> None:
        with self._lock:
            spec = self.spec
            if spec is None:
                return
            self._schedule()
            c = self._classify()
            live = c.new + c.old
            if c.old:
                # Rolling update: surge up the new ReplicaSet, then scale down the old ones.
                room = spec.replicas + spec.max_surge - len(live)
                target_new = min(spec.replicas, len(c.new) + max(room, 0))
                for _ in range(target_new - len(c.new)):
                    self._create(spec)
                c = self._classify()
                self._scale_down_old(spec, c)
            elif len(c.new) < spec.replicas:
                for _ in range(spec.replicas - len(c.new)):
                    self._create(spec)
            elif len(c.new) > spec.replicas:
                for pod in self._deletion_order(c.new)[: len(c.new) - spec.replicas]:
                    log.info("deployment %s: scale down removes %s", spec.name, pod.name)
                    pod.delete()
            self._schedule()

    def _scale_down_old(self, spec: DeploymentSpec, c: _Counts) -> None:
        live = c.new + c.old
        min_available = spec.replicas - spec.max_unavailable
        new_unavailable = sum(1 for p in c.new if not p.ready)
        max_scaled_down = len(live) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        # First old pods that are not ready anyway (kube's cleanupUnhealthyReplicas).
        removed = 0
        for pod in self._deletion_order([p for p in c.old if not p.ready]):
            if removed >= max_scaled_down:
                return
            log.info("deployment %s: rolling update removes unready old pod %s", spec.name, pod.name)
            pod.delete()
            removed += 1
        available = sum(1 for p in live if p.ready)
        budget = min(available - min_available, max_scaled_down - removed)
        for pod in self._deletion_order([p for p in c.old if p.ready])[: max(budget, 0)]:
            log.info(
                "deployment %s: rolling update removes old pod %s (template %s)",
                spec.name, pod.name, pod.template_hash,
            )
            pod.delete()

    @staticmethod
    def _deletion_order(pods: list[PodRuntime]) -> list[PodRuntime]:
        # Kubernetes' ActivePods ranking: unscheduled before scheduled, not ready before ready,
        # newer before older.
        return sorted(pods, key=lambda p: (p.node is not None, p.ready, -p.created))

    def _create(self, spec: DeploymentSpec) -> None:
        t = spec.template
        while True:
            name = f"{spec.name}-{t.hash}-{random_suffix()}"
            if name not in self.pods:
                break
        pod = PodRuntime(
            name=name,
            template_hash=t.hash,
            mode=t.mode,
            grace_period_s=t.grace_period_s,
            pod_dir=self.state_dir / "pods" / name,
            build=lambda node, addr, _t=t, _n=name: _t.containers(_n, node, addr),
            spawner=self.spawner,
            on_gone=self._pod_gone,
            labels={"app": spec.name, "pod-template-hash": t.hash, "mode": t.mode or ""},
        )
        self.pods[name] = pod
        log.info("deployment %s: created pod %s (mode %s), Pending", spec.name, name, t.mode)

    def _free_nodes(self) -> list[str]:
        held = {p.node for p in self.pods.values() if p.node is not None and p.phase != "Gone"}
        return [n for n in self.schedulable if n not in held]

    def _schedule(self) -> None:
        pending = sorted(
            (p for p in self.pods.values() if p.phase == "Pending" and not p.terminating),
            key=lambda p: p.created,
        )
        for pod in pending:
            free = self._free_nodes()
            if not free:
                pod.reason = "Unschedulable"
                if pod.name not in self._unschedulable_logged:
                    self._unschedulable_logged.add(pod.name)
                    log.info(
                        "pod %s: Pending, Unschedulable: 0/%d nodes are available "
                        "(%d schedulable, each held by an IGW pod: anti-affinity)",
                        pod.name, len(NODE_NAMES), len(self.schedulable),
                    )
                continue
            node = free[0]
            # Claim the node before the (slower) container start, so no other pod takes it.
            pod.node = node
            try:
                pod.start(node, self.addresses.node(node))
            except Exception:
                log.exception("pod %s: could not start on %s", pod.name, node)
                pod.delete(0)
        if self._on_change is not None:
            self._on_change()

    def _pod_gone(self, pod: PodRuntime) -> None:
        with self._lock:
            self.pods.pop(pod.name, None)
            self._unschedulable_logged.discard(pod.name)
        self.wake()

