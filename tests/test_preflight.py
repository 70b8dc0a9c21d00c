"""Preflight's four checks with real parts wherever they exist here.

The homelab case is a real HomelabTarget from a parsed profile: its balancer is SshBalancer over a
real sshd to a real HAProxy (master1 UP, worker1/worker2 DOWN: their ports are closed), its nodes
are that sshd on 127.0.0.1/.2/.3, and its cluster is KubeCluster against the stub of the API
contract (tests/_kubestub.py; no API server runs here). `crictl` is a stand-in script on the
sshd sessions' PATH that prints an image list per node address (no container runtime here).
The local case uses a small fake of the Cluster protocol (nodes and pods only) with the same
real balancer, to show the checks that say "n/a on local".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _kubestub import Stub, pod
from _homelab_fixtures import node, sshd, stub  # noqa: F401 (pytest fixtures)
from _sshd import Node, Sshd, install_tool
from gtnb.config import parse_profile
from gtnb.errors import PreflightError
from gtnb.preflight import FIXES, preflight, require_preflight
from gtnb.targets import base
from gtnb.targets.homelab import HomelabTarget
from gtnb.targets.kube import KubeCluster
from gtnb.targets.ssh import SshBalancer

pytestmark = pytest.mark.ssh

HEADER = "IMAGE                                  TAG   IMAGE ID        SIZE\n"
BOTH = (HEADER + "docker.io/library/service-a-backend    dev   0123456789ab    52.1MB\n"
        "docker.io/library/service-a-hc         dev   ba9876543210    48.3MB\n"
        "docker.io/istio/proxyv2                1.22.3 aaaaaaaaaaaa   90MB\n")
NODES = {"master1": "127.0.0.1", "worker1": "127.0.0.2", "worker2": "127.0.0.3"}


@pytest.fixture(scope="module", autouse=True)
def crictl(sshd: Sshd) -> None:
    """crictl stand-in: prints the list the test wrote for the address this session reached."""
    install_tool(sshd.bin_dir, "crictl", f'#!/bin/sh\nset -- $SSH_CONNECTION\ncat {sshd.dir}/crictl-"$3"\n')


@pytest.fixture
def homelab(sshd: Sshd, node: Node, stub: Stub) -> Iterator[HomelabTarget]:
    ssh = sshd.profile_ssh()
    profile = parse_profile({
        "kube": {"context": "stub", "kubeconfig": str(stub.kubeconfig)},
        "balancer": {"ssh": {"host": "127.0.0.1", **ssh}, "sudo": False},
        "frontend": {"host": "127.0.0.1", "port": node.frontend_port},
        "nodes": {"ssh": ssh, "sudo": False, "hosts": NODES},
    })
    for addr in NODES.values():
        (sshd.dir / f"crictl-{addr}").write_text(BOTH)
    stub.state.pods = {"igw-1": pod("igw-1", node="master1")}
    target = HomelabTarget(
        profile,
        cluster=KubeCluster(context="stub", kubeconfig=stub.kubeconfig),
        balancer=SshBalancer(node.settings(profile.balancer.ssh), profile.frontend),
    )
    yield target
    target.close()


def test_homelab_all_four_pass(homelab: HomelabTarget) -> None:
    result = preflight(homelab, expected_version="v1.30.6")
    assert result.ok, str(result)
    assert [c.name for c in result.checks] == ["nodes", "istiod", "haproxy", "images"]
    assert all(c.status == "pass" for c in result.checks)
    text = str(result)
    assert "master1 Ready v1.30.6" in text and "istiod-5d4c8b9f7-abcde 1/1 Running" in text
    assert "master1=UP" in text and "worker1=DOWN" in text  # DOWN is fine: no IGW pod there
    assert "worker2 2/2" in text
    require_preflight(homelab)  # does not raise


def test_homelab_failures_name_what_was_seen_and_the_seed_fix(homelab: HomelabTarget, sshd: Sshd, stub: Stub) -> None:
    stub.state.not_ready_nodes = {"worker2"}
    stub.state.istiod_ready = False
    from dataclasses import replace

    homelab.profile = replace(homelab.profile, kube=replace(homelab.profile.kube, expected_version="v1.31.0"))
    # An IGW pod is ready on worker1, but HAProxy's worker1 points at a closed port: DOWN.
    stub.state.pods["igw-2"] = pod("igw-2", node="worker1")
    (sshd.dir / "crictl-127.0.0.3").write_text(HEADER + "docker.io/library/service-a-backend dev 0123 52MB\n")
    result = preflight(homelab)
    assert not result.ok
    by = {c.name: c for c in result.checks}
    assert by["nodes"].status == "fail" and "(expected v1.31.0)" in by["nodes"].seen  # from the profile
    assert "worker2 NotReady" in by["nodes"].seen
    assert by["istiod"].status == "fail" and "0/1" in by["istiod"].seen
    assert by["haproxy"].status == "fail" and "worker1=DOWN" in by["haproxy"].seen
    assert "has a ready IGW pod" in by["haproxy"].seen and "L4TOUT" in by["haproxy"].fix
    assert by["images"].status == "fail" and "worker2 lacks service-a-hc:dev" in by["images"].seen
    assert by["images"].fix == FIXES["images"] and "ctr -n k8s.io image import" in by["images"].fix
    text = str(result)
    assert text.count("fix: ") == 4
    html = result._repr_html_()
    assert html.count("FAIL") >= 4 and "<table>" in html
    with pytest.raises(PreflightError, match="images: worker2 lacks"):
        require_preflight(homelab)
    assert require_preflight(homelab, skip=True) is None


def test_unreachable_node_fails_its_check_not_preflight(homelab: HomelabTarget, sshd: Sshd) -> None:
    from dataclasses import replace

    nodes = dict(homelab.profile.nodes)
    nodes["worker2"] = replace(nodes["worker2"], port=1)  # nothing listens there
    homelab.profile = replace(homelab.profile, nodes=nodes)
    result = preflight(homelab)
    images = {c.name: c for c in result.checks}["images"]
    assert images.status == "fail" and "could not check" in images.seen and "127.0.0.3" in images.seen


class _LocalCluster:
    """Nodes and pods only: a stand-in for the local lab's Cluster (starting the whole lab of
    Envoy processes to list three nodes would test nothing more here)."""

    def __init__(self) -> None:
        self.pod_list = [base.Pod("service-a-igw-abc-x1", "master1", "current", "Running", True)]

    def nodes(self) -> list[base.Node]:
        return [base.Node(n, a, True, "local") for n, a in NODES.items()]

    def pods(self) -> list[base.Pod]:
        return self.pod_list


class _LocalTarget:
    name = "local"

    def __init__(self, balancer: SshBalancer) -> None:
        self.cluster = _LocalCluster()
        self.balancer = balancer


def test_local_target_degrades_to_na(sshd: Sshd, node: Node) -> None:
    b = SshBalancer(node.settings(sshd.host()), node.frontend())
    try:
        result = preflight(_LocalTarget(b))  # type: ignore[arg-type]
    finally:
        b.close()
    by = {c.name: c for c in result.checks}
    assert result.ok, str(result)
    assert by["istiod"].status == "n/a" and "n/a on local" in by["istiod"].seen
    assert by["images"].status == "n/a" and "n/a on local" in by["images"].seen
    assert by["nodes"].status == "pass" and by["haproxy"].status == "pass"
    assert "N/A" in str(result)
