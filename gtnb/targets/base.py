"""The contract every target implements: a Cluster (the IGW deployment and its pods) and a
Balancer (the HAProxy in front). Scenarios, collectors and the mode toggle speak only to these
protocols, so a run never asks whether it is on the local lab or the homelab.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Pod", "Node", "Frontend", "RolloutStatus", "Cluster", "Balancer", "Target"]


@dataclass(frozen=True)
class Pod:
    """One IGW pod as the target sees it now."""

    name: str  # service-a-igw-<template hash>-<5 chars>
    node: str | None  # master1 | worker1 | worker2; None while Pending
    mode: str | None  # the pod's `mode` label
    phase: str  # "Pending" | "Running" | "Terminating"
    ready: bool
    template_hash: str = ""  # pod-template-hash label: which rollout generation it belongs to
    reason: str | None = None  # why it is Pending, e.g. "Unschedulable" (anti-affinity)
    created: float = 0.0  # epoch seconds
    containers: tuple[str, ...] = ("istio-proxy", "hc")


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    ready: bool
    version: str = ""


@dataclass(frozen=True)
class Frontend:
    """Where clients connect: like curl's `--resolve example.local:443:<host>`."""

    host: str  # the balancer's address
    port: int
    sni: str  # example.local
    ca: Path  # the private CA that signed the example.local certificate


@dataclass(frozen=True)
class RolloutStatus:
    desired: int
    updated: int  # pods of the newest template
    ready: int
    available: int
    old: int  # pods of older templates still there
    pending: tuple[str, ...] = field(default_factory=tuple)  # names of Pending pods

    @property
    def complete(self) -> bool:
        return self.updated == self.desired == self.ready and self.old == 0


@runtime_checkable
class Cluster(Protocol):
    """The `service-a-igw` Deployment and its pods."""

    def apply(self, manifest: Path) -> None:
        """Apply a manifest file (server-side apply on Kubernetes)."""

    def pods(self) -> list[Pod]:
        """Every IGW pod, Terminating ones included."""

    def nodes(self) -> list[Node]: ...

    def scale(self, replicas: int) -> None: ...

    def delete_pod(self, name: str, grace_period_s: float) -> None:
        """Start deleting a pod and return at once (kubectl's `--wait=false`)."""

    def rollout_restart(self) -> None:
        """Roll every pod, as `kubectl rollout restart` does."""

    def rollout_status(self) -> RolloutStatus: ...

    def follow_logs(self, pod: str, container: str, stop: threading.Event) -> Iterator[str]:
        """Yield a container's lines from its start, each prefixed with an RFC3339Nano UTC
        timestamp and one space (`kubectl logs --timestamps`), until the container ends and its
        log is read out, or `stop` is set. Must notice `stop` within 0.5 s."""

    def versions(self) -> dict[str, str]:
        """Versions worth recording in run.json (kubernetes, istio/envoy, ...)."""


@runtime_checkable
class Balancer(Protocol):
    """The HAProxy in front of the IGW nodes."""

    def install_config(self, text: str) -> str:
        """Check with `haproxy -c`, install and reload (never restart). Returns the sha256 of
        the installed file. A config that fails the check leaves the running HAProxy untouched
        and raises BalancerError quoting haproxy's message."""

    def installed_sha256(self) -> str: ...

    def show_stat(self) -> str:
        """The raw CSV that `show stat` prints on the admin socket."""

    def follow_log(self, stop: threading.Event) -> Iterator[str]:
        """Yield HAProxy's log lines from now on until `stop` is set (noticed within 0.5 s)."""

    def frontend(self) -> Frontend: ...

    def clock_offset_s(self) -> float:
        """The balancer host's clock minus the runner's, round-trip corrected (0 on local)."""

    def versions(self) -> dict[str, str]: ...


@runtime_checkable
class Target(Protocol):
    """A place a run happens: `local` or `homelab`."""

    name: str
    cluster: Cluster
    balancer: Balancer

    def haproxy_values(self) -> dict[str, str]:
        """The `${GTNB_*}` values that render haproxy/haproxy-<mode>.cfg for this target."""

    def close(self) -> None: ...
