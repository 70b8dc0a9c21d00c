"""The homelab's `service-a-igw` Deployment as a Cluster, through the official kubernetes client.

Every call is one the seed made with kubectl: server-side apply of the manifests, scale, delete a
pod with a grace period (`--wait=false`), `rollout restart` (the restartedAt annotation), rollout
status, `logs --follow --timestamps`. On top: a watch-driven rollout wait that recognises the
anti-affinity deadlock (kubernetes#116891) and resolves it by the profile's policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RolloutDeadlock, RolloutError, TargetError
from .base import Node, Pod, RolloutStatus
from .kube_api import ApiStatusError, KubeApi, load_manifest, resource_path

__all__ = ["KubeCluster", "DEADLOCK_FIX", "FORCE_DELETE_GRACE_S"]

log = logging.getLogger("gtnb.kube")

FORCE_DELETE_GRACE_S = 5  # the seed's `--grace-period=5` for old-mode pods
DEADLOCK_FIX = (
    "required anti-affinity + maxUnavailable=0 + as many pods as nodes: the new pod has no node and "
    "the old one may not go. Force-delete the old-mode pods (`kubectl -n service-a delete pod "
    "-l app=service-a-igw,mode=<old> --grace-period=5`, or deadlock_policy: force-delete), untaint "
    "master1 for one more seat, or set maxUnavailable: 1"
)


def _ts(value: str | None) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class KubeCluster:
    """A Cluster on a real Kubernetes API server.

    Parameters:
        namespace: where the IGW Deployment lives (`service-a`).
        deployment: its name (`service-a-igw`).
        context: the kubeconfig context (kubectl's --context); None for the current one.
        kubeconfig: the kubeconfig file; None for $KUBECONFIG or ~/.kube/config.
        api_client: a ready kubernetes.client.ApiClient (tests, or an in-cluster config).
        istio_namespace: where istiod runs, for preflight and versions.
    """

    def __init__(self, namespace: str = "service-a", deployment: str = "service-a-igw", context: str | None = None,
                 kubeconfig: str | Path | None = None, api_client: Any = None,
                 istio_namespace: str = "istio-system") -> None:
        if api_client is None:
            from kubernetes import config

            try:
                api_client = config.new_client_from_config(
                    config_file=str(kubeconfig) if kubeconfig else None, context=context, persist_config=False
                )
            except Exception as exc:  # ConfigException, FileNotFoundError: the kubeconfig is the problem
                raise ConfigError(
                    f"kube context {context or '(current)'} from {kubeconfig or '~/.kube/config'} cannot be "
                    f"loaded: {exc}. Check `kubectl --context {context or '<ctx>'} get nodes`"
                ) from exc
        self.api = KubeApi(api_client)
        self.namespace = namespace
        self.deployment = deployment
        self.istio_namespace = istio_namespace
        self._selector: str | None = None
        self._resource_version: str | None = None  # of the last Deployment read: watches start there
        self.pending_messages: dict[str, str] = {}  # pod -> scheduler message of its last pods() read

    # --- paths ------------------------------------------------------------------------------------

    @property
    def _deploy_path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.deployment}"

    def _pods_path(self, namespace: str | None = None) -> str:
        return f"/api/v1/namespaces/{namespace or self.namespace}/pods"

    def _deployment(self) -> dict[str, Any]:
        try:
            d = self.api.request("GET", self._deploy_path)
            self._resource_version = d.get("metadata", {}).get("resourceVersion")
            return d
        except ApiStatusError as exc:
            if exc.status == 404:
                raise TargetError(
                    f"deployment {self.namespace}/{self.deployment} does not exist: apply the IGW manifest "
                    f"first (`gtnb toggle current --target homelab`)"
                ) from exc
            raise

    def selector(self) -> str:
        """The Deployment's label selector (matchLabels), as `kubectl get pod -l` takes it."""
        if self._selector is None:
            labels = self._deployment().get("spec", {}).get("selector", {}).get("matchLabels") or {}
            if not labels:
                raise TargetError(f"deployment {self.deployment} has no spec.selector.matchLabels: fix the manifest")
            self._selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return self._selector

    # --- Cluster protocol -------------------------------------------------------------------------

    def apply(self, manifest: Path) -> None:
        """Server-side apply every document of a manifest (fieldManager gtnb, force)."""
        for doc in load_manifest(manifest):
            path = resource_path(doc, self.namespace)
            self.api.request("PATCH", path, query={"fieldManager": "gtnb", "force": "true"}, body=doc,
                             content_type="application/apply-patch+yaml")
            log.info("applied %s %s (server-side, fieldManager gtnb)", doc["kind"], doc["metadata"]["name"])
        self._selector = None  # the manifest may have changed it

    def pods(self) -> list[Pod]:
        """Every IGW pod, Terminating ones included, oldest first."""
        items = self.api.request("GET", self._pods_path(), query={"labelSelector": self.selector()}).get("items", [])
        pods: list[Pod] = []
        messages: dict[str, str] = {}
        for item in items:
            pod = _pod(item)
            pods.append(pod)
            if pod.reason:
                messages[pod.name] = _condition(item, "PodScheduled").get("message", "")
        self.pending_messages = messages
        return sorted(pods, key=lambda p: (p.created, p.name))

    def nodes(self) -> list[Node]:
        out = []
        for item in self.api.request("GET", "/api/v1/nodes").get("items", []):
            addresses = {a.get("type"): a.get("address") for a in item.get("status", {}).get("addresses", [])}
            out.append(Node(
                name=item["metadata"]["name"],
                address=addresses.get("InternalIP") or addresses.get("Hostname") or "",
                ready=_condition(item, "Ready").get("status") == "True",
                version=item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""),
            ))
        return out

    def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise ConfigError(f"replicas {replicas} is negative: give 0 or more")
        self.api.request("PATCH", self._deploy_path + "/scale", body={"spec": {"replicas": replicas}},
                         content_type="application/merge-patch+json")
        log.info("scaled %s to %d replicas", self.deployment, replicas)

    def delete_pod(self, name: str, grace_period_s: float) -> None:
        """Start deleting a pod and return at once (kubectl's `--wait=false`)."""
        grace = int(round(grace_period_s))
        if grace < 0:
            raise ConfigError(f"grace_period_s {grace_period_s} is negative: give 0 or more seconds")
        self.api.request("DELETE", f"{self._pods_path()}/{name}", query={"gracePeriodSeconds": str(grace)},
                         body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": grace})
        log.info("deleting pod %s (grace period %d s)", name, grace)

    def rollout_restart(self) -> None:
        """What `kubectl rollout restart` does: stamp the pod template with restartedAt."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}}
        self.api.request("PATCH", self._deploy_path, body=patch, content_type="application/strategic-merge-patch+json")
        log.info("rollout restart of %s (restartedAt %s)", self.deployment, now)

    def rollout_status(self) -> RolloutStatus:
        """kubectl's rollout status arithmetic, plus old pods and Pending pods by name."""
        d = self._deployment()
        spec, status, meta = d.get("spec", {}), d.get("status", {}), d.get("metadata", {})
        desired = int(spec.get("replicas", 1))
        # Until the controller has seen the newest spec, nothing counts as updated.
        current = status.get("observedGeneration", 0) >= meta.get("generation", 0)
        updated = int(status.get("updatedReplicas", 0)) if current else 0
        pods = self.pods()
        return RolloutStatus(
            desired=desired,
            updated=updated,
            ready=int(status.get("readyReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
            old=max(int(status.get("replicas", 0)) - updated, 0) + sum(p.phase == "Terminating" for p in pods),
            pending=tuple(p.name for p in pods if p.phase == "Pending"),
        )

    def follow_logs(self, pod: str, container: str, stop: threading.Event) -> Iterator[str]:
        """`kubectl logs --follow --timestamps`: lines from the container's start until it ends or
        `stop` is set. Waits (polling every 0.5 s) while the container has not started yet."""
        path = f"{self._pods_path()}/{pod}/log"
        query = {"container": container, "follow": "true", "timestamps": "true"}
        while not stop.is_set():
            try:
                yield from self.api.stream_lines(path, query, stop)
                return
            except ApiStatusError as exc:
                if exc.status == 404:  # the pod is gone and its log with it
                    log.info("logs of %s/%s: pod gone", pod, container)
                    return
                if exc.status != 400:  # 400: ContainerCreating / waiting to start
                    raise
                stop.wait(0.5)

    def versions(self) -> dict[str, str]:
        """kubernetes (the API server's gitVersion), istio (istiod's image tag) and envoy (the IGW
        pods' istio-proxy image: Istio's proxyv2 build of Envoy)."""
        out = {"kubernetes": str(self.api.request("GET", "/version").get("gitVersion", "unknown"))}
        for pod in self.istiod_pods():
            if pod.get("image"):
                out["istio"] = pod["image"].rsplit(":", 1)[-1]
                break
        items = self.api.request("GET", self._pods_path(), query={"labelSelector": self.selector()}).get("items", [])
        for item in items:
            for c in item.get("spec", {}).get("containers", []) or []:
                if c.get("name") == "istio-proxy" and c.get("image"):
                    out["envoy"] = c["image"].rsplit("/", 1)[-1]  # e.g. proxyv2:1.22.3
                    return out
        return out

    # --- beyond the protocol: preflight and rollouts ------------------------------------------------

    def istiod_pods(self) -> list[dict[str, Any]]:
        """istiod's pods: name, phase, ready ("1/1") and image, for preflight's second check."""
        items = self.api.request("GET", self._pods_path(self.istio_namespace),
                                 query={"labelSelector": "app=istiod"}).get("items", [])
        out = []
        for item in items:
            statuses = item.get("status", {}).get("containerStatuses", []) or []
            containers = item.get("spec", {}).get("containers", []) or []
            out.append({
                "name": item["metadata"]["name"],
                "phase": item.get("status", {}).get("phase", "Unknown"),
                "ready": f"{sum(bool(s.get('ready')) for s in statuses)}/{len(containers)}",
                "image": containers[0].get("image", "") if containers else "",
            })
        return out

    def find_deadlock(self, pods: list[Pod] | None = None) -> list[Pod]:
        """The old pods blocking a rollout: new pods Pending Unschedulable while pods of another
        template still run. Empty when there is no deadlock."""
        pods = self.pods() if pods is None else pods
        stuck = [p for p in pods if p.phase == "Pending" and p.reason == "Unschedulable"]
        if not stuck:
            return []
        new_hashes = {p.template_hash for p in stuck}
        return [p for p in pods if p.phase == "Running" and p.template_hash not in new_hashes]

    def wait_rollout(self, timeout_s: float = 180.0, progress: Callable[[RolloutStatus], None] | None = None,
                     *, deadlock_policy: str = "report", deadlock_after_s: float = 10.0) -> RolloutStatus:
        """Wait for the rollout to complete, woken by a watch on the Deployment.

        Parameters:
            timeout_s: give up after this long (RolloutError).
            progress: called with each new RolloutStatus (a tqdm bar, a log line).
            deadlock_policy: `report` raises RolloutDeadlock; `force-delete` deletes the blocking
                old pods with a 5 s grace period, once each, and keeps waiting.
            deadlock_after_s: how long the deadlock must persist before it counts.

        Returns:
            The complete RolloutStatus.
        """
        if deadlock_policy not in ("report", "force-delete"):
            raise ConfigError(f"deadlock_policy {deadlock_policy!r}: use report or force-delete")
        deadline = time.monotonic() + timeout_s
        stuck_since: float | None = None
        forced: set[str] = set()
        last: RolloutStatus | None = None
        watch_path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        while True:
            status = self.rollout_status()
            if status != last and progress is not None:
                progress(status)
            last = status
            if status.complete:
                log.info("rollout of %s complete: %d/%d ready", self.deployment, status.ready, status.desired)
                return status
            blocking = self.find_deadlock()
            now = time.monotonic()
            stuck_since = (stuck_since or now) if blocking else None
            if blocking and now - (stuck_since or now) >= deadlock_after_s:
                names = [p.name for p in blocking]
                detail = "; ".join(f"{k}: {v}" for k, v in self.pending_messages.items() if v)
                if deadlock_policy == "report":
                    raise RolloutDeadlock(f"rollout of {self.deployment} is deadlocked: pending {list(status.pending)} "
                                          f"({detail}) while {names} stay. Fix: {DEADLOCK_FIX}")
                for pod in blocking:
                    if pod.name not in forced:
                        log.warning("anti-affinity deadlock: force-deleting old pod %s (grace %d s)",
                                    pod.name, FORCE_DELETE_GRACE_S)
                        self.delete_pod(pod.name, FORCE_DELETE_GRACE_S)
                        forced.add(pod.name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RolloutError(
                    f"rollout of {self.deployment} not complete after {timeout_s:g} s: {status}. "
                    f"Check `kubectl -n {self.namespace} get pod -l {self.selector()}`; if new pods are Pending "
                    f"with FailedScheduling: {DEADLOCK_FIX}"
                )
            # Sleep on the watch: any change to the Deployment (its status follows the pods) wakes us;
            # the server ends the watch after timeoutSeconds so the deadlock check runs regularly.
            stop = threading.Event()
            query = {"watch": "true", "fieldSelector": f"metadata.name={self.deployment}",
                     "timeoutSeconds": str(max(1, int(min(remaining, 5))))}
            if self._resource_version:  # only changes after what we just read, not a replay
                query["resourceVersion"] = self._resource_version
            try:
                for _ in self.api.stream_lines(watch_path, query, stop):
                    stop.set()  # one event is enough: re-read the whole status
            except ApiStatusError as exc:
                if exc.status != 410:  # 410 Gone: our resourceVersion is too old; re-read and go on
                    raise


def _condition(item: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in item.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            return c
    return {}


def _pod(item: dict[str, Any]) -> Pod:
    """Map a v1 Pod to the protocol's Pod: Terminating wins over the phase, as kubectl shows it."""
    meta, spec, status = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
    labels = meta.get("labels", {}) or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        phase = "Terminating"
    elif status.get("phase") == "Running":
        phase = "Running"
    else:
        phase = "Pending"
    scheduled = _condition(item, "PodScheduled")
    reason = scheduled.get("reason") if phase == "Pending" and scheduled.get("status") == "False" else None
    return Pod(
        name=meta.get("name", ""),
        node=spec.get("nodeName") or None,
        mode=labels.get("mode"),
        phase=phase,
        ready=_condition(item, "Ready").get("status") == "True" and phase == "Running",
        template_hash=labels.get("pod-template-hash", ""),
        reason=reason,
        created=_ts(meta.get("creationTimestamp")),
        containers=tuple(c.get("name", "") for c in spec.get("containers", []) or []),
    )
