"""KubeCluster against a STUB of the Kubernetes API contract.

No Kubernetes API server can run on these machines, so these tests start a real HTTP server on
loopback (tests/_kubestub.py) that serves the handful of endpoints KubeCluster calls from a tiny
in-memory state and records each request. The official kubernetes client is pointed at it with a
generated kubeconfig (bearer token, context `stub`). The tests check what the real API server
would be sent: verb, path, query and body of server-side apply, delete with gracePeriodSeconds,
the restartedAt patch, log follow parameters and the Deployment watch. They do not prove that a
real cluster behaves like the stub; the manifests themselves are validated against Kubernetes
1.30 schemas elsewhere.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from _homelab_fixtures import stub  # noqa: F401 (pytest fixture)
from _kubestub import DEPLOY_PATH, NS, State, Stub, deployment, pod
from gtnb._wait import wait_until
from gtnb.errors import ConfigError, RolloutDeadlock, RolloutError
from gtnb.targets.base import Cluster, RolloutStatus
from gtnb.targets.kube import KubeCluster


@pytest.fixture
def cluster(stub: Stub) -> KubeCluster:
    return KubeCluster(NS, "service-a-igw", context="stub", kubeconfig=stub.kubeconfig)


MANIFEST = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "service-a-igw", "namespace": NS},
     "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "service-a-igw"}},
              "template": {"metadata": {"labels": {"app": "service-a-igw", "mode": "improved"}}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "service-a-igw"}},
    {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "example-local", "namespace": NS}},
]


def test_is_a_cluster_and_uses_the_named_context(cluster: KubeCluster, stub: Stub) -> None:
    assert isinstance(cluster, Cluster)
    assert cluster.api.server == stub.url  # the `stub` context, not the kubeconfig's current one
    assert cluster.versions() == {"kubernetes": "v1.30.6", "istio": "1.22.3"}  # no IGW pod yet
    stub.state.pods["igw-1"] = pod("igw-1")
    assert cluster.versions()["envoy"] == "proxyv2:1.22.3"
    assert all(r.headers["authorization"] == "Bearer stub-token" for r in stub.state.requests)


def test_server_side_apply_of_every_document(cluster: KubeCluster, stub: Stub, tmp_path: Path) -> None:
    manifest = tmp_path / "21-igw-improved.yaml"
    manifest.write_text(yaml.safe_dump_all(MANIFEST))
    cluster.apply(manifest)
    applies = stub.state.find("PATCH")
    assert [r.path for r in applies] == [
        f"/api/v1/namespaces/{NS}",
        DEPLOY_PATH,
        f"/api/v1/namespaces/{NS}/services/service-a-igw",  # namespace defaulted like kubectl -n
        f"/apis/networking.istio.io/v1/namespaces/{NS}/gateways/example-local",
    ]
    for req, doc in zip(applies, MANIFEST):
        assert req.headers["content-type"] == "application/apply-patch+yaml"
        assert req.query == {"fieldManager": "gtnb", "force": "true"}
        assert req.body == doc
    assert stub.state.deployment["spec"]["replicas"] == 3


def test_delete_pod_sends_grace_period_and_returns_at_once(cluster: KubeCluster, stub: Stub) -> None:
    stub.state.pods["igw-1"] = pod("igw-1")
    cluster.delete_pod("igw-1", 210)
    (req,) = stub.state.find("DELETE")
    assert req.path == f"/api/v1/namespaces/{NS}/pods/igw-1"
    assert req.query == {"gracePeriodSeconds": "210"}
    assert req.body["gracePeriodSeconds"] == 210
    assert [p.phase for p in cluster.pods()] == ["Terminating"]
    with pytest.raises(ConfigError, match="negative"):
        cluster.delete_pod("igw-1", -1)


def test_rollout_restart_patches_restarted_at_like_kubectl(cluster: KubeCluster, stub: Stub) -> None:
    before = time.time()
    cluster.rollout_restart()
    (req,) = stub.state.find("PATCH", DEPLOY_PATH)
    assert req.headers["content-type"] == "application/strategic-merge-patch+json"
    stamp = req.body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    assert before - 1 <= when <= time.time() + 1
    assert list(req.body) == ["spec"]  # nothing else is touched


def test_scale_patches_the_scale_subresource(cluster: KubeCluster, stub: Stub) -> None:
    cluster.scale(2)
    (req,) = stub.state.find("PATCH", "/scale")
    assert req.path == DEPLOY_PATH + "/scale"
    assert req.headers["content-type"] == "application/merge-patch+json"
    assert req.body == {"spec": {"replicas": 2}}


def test_pods_map_phase_deletion_and_unschedulable(cluster: KubeCluster, stub: Stub) -> None:
    s = stub.state
    s.pods = {
        "old": pod("old", node="master1", mode="current", template_hash="aaa", created="2026-06-28T10:00:00Z"),
        "gone": pod("gone", node="worker1", deleting=True, created="2026-06-28T10:00:01Z"),
        "new": pod("new", phase="Pending", ready=False, node=None, mode="improved", template_hash="bbb",
                   unschedulable=True, created="2026-06-28T10:01:00Z"),
    }
    pods = {p.name: p for p in cluster.pods()}
    (list_req,) = s.find("GET", f"/namespaces/{NS}/pods")
    assert list_req.query == {"labelSelector": "app=service-a-igw"}  # from the Deployment's matchLabels
    assert (pods["old"].phase, pods["old"].ready, pods["old"].node, pods["old"].mode) == ("Running", True, "master1", "current")
    assert pods["gone"].phase == "Terminating" and not pods["gone"].ready
    assert (pods["new"].phase, pods["new"].reason, pods["new"].node) == ("Pending", "Unschedulable", None)
    assert pods["new"].template_hash == "bbb" and pods["new"].containers == ("istio-proxy", "hc")
    assert pods["old"].created < pods["new"].created
    assert "anti-affinity" in cluster.pending_messages["new"]


def test_rollout_status_arithmetic(cluster: KubeCluster, stub: Stub) -> None:
    s = stub.state
    s.deployment = deployment(replicas=1, generation=3, observed=2, updated=1, ready=1, total=1)
    assert cluster.rollout_status().updated == 0  # the controller has not seen generation 3 yet
    s.deployment = deployment(replicas=1, generation=3, observed=3, updated=1, ready=1, total=2)
    s.pods = {"n": pod("n"), "o": pod("o", template_hash="old")}
    st = cluster.rollout_status()
    assert (st.desired, st.updated, st.old, st.complete) == (1, 1, 1, False)
    s.deployment = deployment(replicas=1, generation=3, observed=3, updated=1, ready=1, total=1)
    s.pods = {"n": pod("n")}
    assert cluster.rollout_status().complete


def test_follow_logs_parameters_lines_and_stop(cluster: KubeCluster, stub: Stub) -> None:
    s = stub.state
    s.pods["igw-1"] = pod("igw-1")
    s.not_started.add(("igw-1", "hc"))  # first answer: 400 ContainerCreating, as the kubelet says
    lines = ["2026-06-28T10:15:05.730511234Z ts=2026-06-28T10:15:05.730511Z level=info event=check code=200",
             "2026-06-28T10:15:06.730511234Z ts=2026-06-28T10:15:06.730511Z level=info event=transition"]
    s.logs[("igw-1", "hc")] = lines
    stop = threading.Event()
    got: list[str] = []

    def follow() -> None:
        for line in cluster.follow_logs("igw-1", "hc", stop):
            got.append(line)

    t = threading.Thread(target=follow)
    t.start()
    wait_until(lambda: s.log_streams_open == 1 and len(got) == 2, timeout_s=20,
               what="both lines, with the follow stream still open")
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()  # stop noticed while the server still held the stream open
    assert got == lines
    reqs = s.find("GET", "/pods/igw-1/log")
    assert len(reqs) == 2  # one refused while the container was starting, one that streamed
    assert all(r.query == {"container": "hc", "follow": "true", "timestamps": "true"} for r in reqs)
    wait_until(lambda: s.log_streams_open == 0, timeout_s=10, what="the stub to see the client hang up")


def test_follow_logs_of_a_deleted_pod_ends(cluster: KubeCluster, stub: Stub) -> None:
    assert list(cluster.follow_logs("nope", "istio-proxy", threading.Event())) == []


def _rolling_state(s: State) -> None:
    s.deployment = deployment(replicas=1, generation=2, observed=2, updated=1, ready=0, total=2)
    s.pods = {"old": pod("old", node="worker1", mode="current", template_hash="aaa"),
              "new": pod("new", phase="Pending", ready=False, node=None, mode="improved",
                         template_hash="bbb", unschedulable=True)}


def test_wait_rollout_is_woken_by_the_watch(cluster: KubeCluster, stub: Stub) -> None:
    s = stub.state
    s.deployment = deployment(replicas=1, generation=2, observed=2, updated=1, ready=0, total=1)
    s.pods = {"new": pod("new", ready=False)}
    seen: list[RolloutStatus] = []

    def finish() -> None:
        s.watch_started.wait(20)
        s.deployment = deployment(replicas=1, generation=2, observed=2, updated=1, ready=1, total=1)
        s.pods = {"new": pod("new")}
        s.touch()

    t = threading.Thread(target=finish)
    t.start()
    status = cluster.wait_rollout(timeout_s=30, progress=seen.append)
    t.join()
    assert status.complete and seen[-1] == status and not seen[0].complete
    watch = [r for r in s.requests if r.query.get("watch") == "true"]
    assert watch and watch[0].path == f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert watch[0].query["fieldSelector"] == "metadata.name=service-a-igw"
    assert 1 <= int(watch[0].query["timeoutSeconds"]) <= 5
    # From the version just read: a watch without one would replay the object and spin.
    assert watch[0].query["resourceVersion"].isdigit()


def test_deadlock_is_reported_with_the_seed_fix(cluster: KubeCluster, stub: Stub) -> None:
    _rolling_state(stub.state)
    assert [p.name for p in cluster.find_deadlock()] == ["old"]
    with pytest.raises(RolloutDeadlock) as info:
        cluster.wait_rollout(timeout_s=30, deadlock_policy="report", deadlock_after_s=0)
    msg = str(info.value)
    assert "'new'" in msg and "'old'" in msg and "grace-period=5" in msg and "anti-affinity" in msg
    assert not stub.state.find("DELETE")  # report only: nothing deleted


def test_deadlock_force_delete_frees_the_seat(cluster: KubeCluster, stub: Stub) -> None:
    s = stub.state
    _rolling_state(s)

    def schedule_new(state: State, name: str) -> None:
        # The scheduler's answer to the freed node: the old pod goes, the new one runs.
        state.pods = {"new": pod("new", node="worker1", mode="improved", template_hash="bbb")}
        state.deployment = deployment(replicas=1, generation=2, observed=2, updated=1, ready=1, total=1)

    s.on_delete = schedule_new
    status = cluster.wait_rollout(timeout_s=30, deadlock_policy="force-delete", deadlock_after_s=0)
    assert status.complete
    (req,) = s.find("DELETE")
    assert req.path.endswith("/pods/old") and req.query == {"gracePeriodSeconds": "5"}


def test_wait_rollout_times_out_with_the_fix(cluster: KubeCluster, stub: Stub) -> None:
    s = stub.state
    s.deployment = deployment(replicas=1, generation=2, observed=2, updated=1, ready=0, total=1)
    s.pods = {"new": pod("new", ready=False)}
    with pytest.raises(RolloutError, match="not complete after 1 s"):
        cluster.wait_rollout(timeout_s=1)


def test_nodes_and_istiod(cluster: KubeCluster, stub: Stub) -> None:
    stub.state.not_ready_nodes = {"worker2"}
    nodes = {n.name: n for n in cluster.nodes()}
    assert nodes["master1"].address == "203.0.113.212" and nodes["master1"].version == "v1.30.6"
    assert nodes["master1"].ready and not nodes["worker2"].ready
    (istiod,) = cluster.istiod_pods()
    assert (istiod["phase"], istiod["ready"]) == ("Running", "1/1")


def test_bad_kubeconfig_and_context_are_config_errors(tmp_path: Path, stub: Stub) -> None:
    with pytest.raises(ConfigError, match="nope"):
        KubeCluster(context="nope", kubeconfig=stub.kubeconfig)
    with pytest.raises(ConfigError, match="kubectl"):
        KubeCluster(context="stub", kubeconfig=tmp_path / "missing")
