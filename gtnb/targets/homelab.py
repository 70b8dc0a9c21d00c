"""The homelab target: a real cluster through the kubernetes client and its HAProxy node over SSH,
both described by one profile (profiles/homelab.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import HomelabProfile, load_profile
from ..errors import ConfigError, TargetError
from .kube import KubeCluster
from .ssh import SshBalancer
from .ssh_helper import RemoteHelper
from .ssh_session import SshSession

__all__ = ["HomelabTarget", "homelab_target", "DEFAULT_PROFILE"]

log = logging.getLogger("gtnb.homelab")

DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "homelab.yaml"


class HomelabTarget:
    """A Target on the user's cluster.

    Parameters:
        profile: the loaded profile.
        cluster, balancer: ready parts to use instead of connecting (tests, notebooks that
            already hold a connection).
    """

    name = "homelab"

    def __init__(self, profile: HomelabProfile, *, cluster: KubeCluster | None = None,
                 balancer: SshBalancer | None = None) -> None:
        self.profile = profile
        k = profile.kube
        self.cluster = cluster or KubeCluster(k.namespace, k.deployment, context=k.context,
                                              kubeconfig=k.kubeconfig, istio_namespace=k.istio_namespace)
        self.balancer = balancer or SshBalancer(profile.balancer, profile.frontend)
        log.info("homelab target: kube context %s, HAProxy node %s", k.context or "(current)",
                 profile.balancer.ssh)

    @property
    def deadlock_policy(self) -> str:
        """The profile's answer to the anti-affinity deadlock, for `toggle(..., deadlock_policy=)`."""
        return self.profile.kube.deadlock_policy

    @property
    def rollout_timeout_s(self) -> float:
        return self.profile.kube.rollout_timeout_s

    def haproxy_values(self) -> dict[str, str]:
        """HOMELAB_DEFAULTS, then what the profile implies (frontend, admin socket, node
        addresses), then the profile's own haproxy_values, which win."""
        from ..haproxy_config import HOMELAB_DEFAULTS, haproxy_values_doc

        values = dict(HOMELAB_DEFAULTS)
        values["GTNB_FRONTEND_ADDR"] = self.profile.frontend.host
        values["GTNB_FRONTEND_PORT"] = str(self.profile.frontend.port)
        values["GTNB_ADMIN_SOCKET"] = self.profile.balancer.admin_socket
        for node, host in self.profile.nodes.items():
            values.setdefault(f"GTNB_{node.upper()}_ADDR", host.hostname)
        if "master1" in self.profile.nodes:
            values.setdefault("GTNB_APISERVER", f"{self.profile.nodes['master1'].hostname}:6443")
        values.update(self.profile.haproxy_values)
        known = haproxy_values_doc()  # a node named otherwise (node3) has no variable: leave it out
        return {k: v for k, v in values.items() if k in known}

    def node_session(self, node: str) -> SshSession:
        """An SSH session to a cluster node (crictl, ctr), as the profile's nodes.hosts says."""
        try:
            host = self.profile.nodes[node]
        except KeyError:
            raise ConfigError(
                f"node {node!r} has no SSH entry in {self.profile.path}: add it under nodes.hosts "
                f"(known: {', '.join(self.profile.nodes) or 'none'})"
            ) from None
        return SshSession(host)

    def clock_offsets_s(self) -> dict[str, float]:
        """Every host's clock minus ours (round-trip corrected): the HAProxy node and each node.
        A node that cannot be reached is left out and logged, not fatal: offsets are advisory."""
        offsets = {"haproxy": self.balancer.clock_offset_s()}
        for node in self.profile.nodes:
            try:
                with self.node_session(node) as s:
                    offsets[node] = _offset(s, self.profile.balancer.python)
            except TargetError as exc:
                log.warning("clock offset of %s not measured: %s", node, exc)
        return offsets

    def close(self) -> None:
        self.balancer.close()


def _offset(session: SshSession, python: str) -> float:
    """Read through a helper channel (no session set-up inside the measured round trip); an
    exec per read where python is missing, which reads tens of ms late (benchmarks/ssh_balancer.md)."""
    try:
        helper = RemoteHelper(session, "/dev/null", sudo=False, python=python)
    except TargetError as exc:
        log.warning("no helper on %s (%s): clock offset by exec, biased by the session set-up",
                    session.host.hostname, exc)
        return session.clock_offset_s()[0]
    try:
        offset, rtt = helper.clock_offset_s()
        log.info("clock offset of %s: %+.4f s (round trip %.4f s)", session.host.hostname, offset, rtt)
        return offset
    finally:
        helper.close()


@contextmanager
def homelab_target(profile: str | Path | HomelabProfile | None = None) -> Iterator[HomelabTarget]:
    """Open the homelab for the duration of a block.

    Parameters:
        profile: the profile file (default profiles/homelab.yaml) or a loaded profile.

    Returns:
        A context manager yielding the HomelabTarget; its SSH connections close afterwards.
    """
    if not isinstance(profile, HomelabProfile):
        path = Path(profile) if profile else DEFAULT_PROFILE
        profile = load_profile(path)
    if not profile.frontend.ca.is_file():
        # Not fatal: preflight and toggles need no CA, only the clients of a run do.
        log.warning("frontend.ca %s does not exist: runs will fail to verify example.local; run `gtnb certs` "
                    "or point frontend.ca at your CA", profile.frontend.ca)
    target = HomelabTarget(profile)
    try:
        yield target
    finally:
        target.close()
