"""A stub of the Kubernetes API contract, for tests: NOT an API server.

No kube-apiserver can run on these machines, so this real HTTP server on loopback answers the
few endpoints gtnb's KubeCluster uses, from a small in-memory state, and records every request
(verb, path, query, headers, body) for the tests to check against the API's documented contract.
It streams like the real thing where gtnb depends on streaming: `pods/<pod>/log?follow=true`
stays open until the client hangs up, and `?watch=true` sends one JSON event per line.
"""

from __future__ import annotations

import http.server
import json
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

TOKEN = "stub-token"
NS = "service-a"
DEPLOY = "service-a-igw"
DEPLOY_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def pod(name: str, *, phase: str = "Running", ready: bool = True, node: str | None = "worker1",
        mode: str = "current", template_hash: str = "aaa", deleting: bool = False,
        unschedulable: bool = False, created: str = "2026-06-28T10:00:00Z") -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."})
    meta: dict[str, Any] = {"name": name, "namespace": NS, "creationTimestamp": created,
                            "labels": {"app": DEPLOY, "mode": mode, "pod-template-hash": template_hash}}
    if deleting:
        meta["deletionTimestamp"] = "2026-06-28T10:05:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.3"},
                                           {"name": "hc", "image": "service-a-hc:dev"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "conditions": conditions}}


def deployment(*, replicas: int = 1, generation: int = 1, observed: int = 1, updated: int = 1,
               ready: int = 1, total: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": DEPLOY, "namespace": NS, "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": DEPLOY}},
                 "template": {"metadata": {"labels": {"app": DEPLOY}}}},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": ready},
    }


@dataclass
class State:
    deployment: dict[str, Any] = field(default_factory=deployment)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    not_started: set[tuple[str, str]] = field(default_factory=set)  # answer 400 while here
    requests: list[Request] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    watch_started: threading.Event = field(default_factory=threading.Event)
    log_streams_open: int = 0
    not_ready_nodes: set[str] = field(default_factory=set)
    istiod_ready: bool = True
    closing: bool = False
    on_delete: Any = None  # callback(state, pod name) run after a DELETE

    rv: int = 1  # resourceVersion: bumped by every change, as etcd's revision

    def touch(self) -> None:
        with self.changed:
            self.rv += 1
            self.changed.notify_all()

    def find(self, method: str, suffix: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "reason": reason, "message": message, "code": code})

    def _handle(self) -> None:
        url = urlparse(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        req = Request(self.command, url.path, query, {k.lower(): v for k, v in self.headers.items()}, body)
        st = self.state
        st.requests.append(req)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._status(401, "Unauthorized", "no or wrong bearer token")
        p, m = url.path, self.command
        if m == "GET" and p == "/version":
            return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.6"})
        if m == "GET" and p == "/api/v1/nodes":
            items = [{"metadata": {"name": n},
                      "status": {"addresses": [{"type": "InternalIP", "address": a}],
                                 "conditions": [{"type": "Ready", "status": "False" if n in st.not_ready_nodes else "True"}],
                                 "nodeInfo": {"kubeletVersion": "v1.30.6"}}}
                     for n, a in (("master1", "203.0.113.212"), ("worker1", "203.0.113.213"), ("worker2", "203.0.113.214"))]
            return self._send(200, {"kind": "NodeList", "items": items})
        if m == "GET" and p == "/api/v1/namespaces/istio-system/pods":
            item = pod("istiod-5d4c8b9f7-abcde", node="master1")
            item["spec"]["containers"] = [{"name": "discovery", "image": "docker.io/istio/pilot:1.22.3"}]
            item["status"]["containerStatuses"] = [{"name": "discovery", "ready": st.istiod_ready}]
            return self._send(200, {"kind": "PodList", "items": [item]})
        if p == DEPLOY_PATH and m == "GET":
            st.deployment["metadata"]["resourceVersion"] = str(st.rv)
            return self._send(200, st.deployment)
        if p == DEPLOY_PATH + "/scale" and m == "PATCH":
            st.deployment["spec"]["replicas"] = body["spec"]["replicas"]
            st.touch()
            return self._send(200, {"kind": "Scale", "spec": body["spec"]})
        if p == DEPLOY_PATH and m == "PATCH" and req.headers.get("content-type") == "application/strategic-merge-patch+json":
            st.deployment["metadata"]["generation"] += 1
            st.touch()
            return self._send(200, st.deployment)
        if m == "PATCH" and req.headers.get("content-type") == "application/apply-patch+yaml":
            if p == DEPLOY_PATH:
                st.deployment["spec"] = body["spec"]
                st.deployment["metadata"]["generation"] += 1
                st.touch()
            return self._send(200, body)
        if m == "GET" and p == f"/api/v1/namespaces/{NS}/pods":
            if query.get("watch"):
                return self._status(400, "BadRequest", "stub: pod watch not served")
            return self._send(200, {"kind": "PodList", "items": list(st.pods.values())})
        if p.startswith(f"/api/v1/namespaces/{NS}/pods/") and p.endswith("/log") and m == "GET":
            return self._log(p.split("/")[-2], query)
        if p.startswith(f"/api/v1/namespaces/{NS}/pods/") and m == "DELETE":
            name = p.rsplit("/", 1)[-1]
            if name not in st.pods:
                return self._status(404, "NotFound", f'pods "{name}" not found')
            st.pods[name]["metadata"]["deletionTimestamp"] = "2026-06-28T10:05:00Z"
            if st.on_delete:
                st.on_delete(st, name)
            st.touch()
            return self._send(200, st.pods.get(name, {"kind": "Status", "status": "Success"}))
        if m == "GET" and p == f"/apis/apps/v1/namespaces/{NS}/deployments" and query.get("watch") == "true":
            return self._watch(float(query.get("timeoutSeconds", "5")), query.get("resourceVersion"))
        return self._status(404, "NotFound", f"stub does not serve {m} {p}")

    def _open_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")  # no length: the stream ends when the connection does
        self.end_headers()
        self.close_connection = True

    def _log(self, name: str, query: dict[str, str]) -> None:
        st, container = self.state, query.get("container", "")
        if name not in st.pods:
            return self._status(404, "NotFound", f'pods "{name}" not found')
        if (name, container) in st.not_started:
            st.not_started.discard((name, container))  # starts by the next try
            return self._status(400, "BadRequest",
                                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        self._open_stream()
        st.log_streams_open += 1
        try:
            for line in st.logs.get((name, container), []):
                self.wfile.write(line.encode() + b"\n")
                self.wfile.flush()
            if query.get("follow") == "true":
                # A running container: nothing more to say, but the stream stays open like the
                # kubelet's until the client hangs up (its socket turns readable with EOF).
                while not st.closing:
                    readable, _, _ = select.select([self.connection], [], [], 0.2)
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                break
                        except OSError:
                            break
        finally:
            st.log_streams_open -= 1

    def _watch(self, timeout_s: float, rv: str | None) -> None:
        # Like the API server: without a resourceVersion the current object comes at once as
        # ADDED; with one, only changes after it (at once if it changed since).
        st = self.state
        self._open_stream()
        st.watch_started.set()
        with st.changed:
            notified = rv is None or rv != str(st.rv) or st.changed.wait(timeout_s)
        if notified:
            event = {"type": "MODIFIED", "object": st.deployment}
            try:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()
            except OSError:
                return

    do_GET = do_PATCH = do_DELETE = do_POST = _handle  # noqa: N815 (http.server's names)


@dataclass
class Stub:
    url: str
    state: State
    kubeconfig: Path


@contextmanager
def running_stub(tmp: Path) -> Iterator[Stub]:
    """Serve the stub on 127.0.0.1:<free port> with a kubeconfig pointing at it (context `stub`)."""
    state = State()
    handler = type("Handler", (_Handler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "stub", "cluster": {"server": url}},
                     {"name": "other", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "stub", "user": {"token": TOKEN}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}},
                     {"name": "other", "context": {"cluster": "other", "user": "stub"}}],
    }))
    try:
        yield Stub(url, state, kubeconfig)
    finally:
        state.closing = True
        state.touch()
        server.shutdown()
        server.server_close()
