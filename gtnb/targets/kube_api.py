"""Raw Kubernetes API calls through the official client's ApiClient.

The typed models of the `kubernetes` package changed shape between releases (30.x plain classes,
31+ pydantic); gtnb reads a handful of fields, so it asks the ApiClient for the HTTP exchange
(kubeconfig, TLS, bearer tokens, exec plugins all stay the client's job) and reads the JSON
itself. Streams (log follow, watch) are read on a helper thread so a stop is noticed at once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TargetError

__all__ = ["KubeApi", "ApiStatusError", "resource_path", "load_manifest", "CLUSTER_SCOPED"]

log = logging.getLogger("gtnb.kube")

# Kinds without a namespace that the manifests may hold.
CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
})
_IRREGULAR_PLURALS = {"Endpoints": "endpoints", "NetworkPolicy": "networkpolicies",
                      "PodSecurityPolicy": "podsecuritypolicies", "Ingress": "ingresses",
                      "IngressClass": "ingressclasses", "PriorityClass": "priorityclasses",
                      "StorageClass": "storageclasses"}


class ApiStatusError(TargetError):
    """The API server answered with an error status."""

    def __init__(self, message: str, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def resource_path(doc: dict[str, Any], default_namespace: str) -> str:
    """The REST path of the object a manifest document describes.

    Parameters:
        doc: one YAML document with apiVersion, kind and metadata.name.
        default_namespace: used when a namespaced object names none (kubectl's -n).

    Returns:
        e.g. /apis/apps/v1/namespaces/service-a/deployments/service-a-igw
    """
    try:
        api_version, kind, name = doc["apiVersion"], doc["kind"], doc["metadata"]["name"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"manifest document has no apiVersion/kind/metadata.name ({exc}): fix the manifest") from exc
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    plural = _IRREGULAR_PLURALS.get(kind) or (kind.lower() + ("es" if kind.endswith("s") else "s"))
    if kind in CLUSTER_SCOPED:
        return f"{prefix}/{plural}/{name}"
    ns = doc["metadata"].get("namespace") or default_namespace
    return f"{prefix}/namespaces/{ns}/{plural}/{name}"


class KubeApi:
    """JSON over the official client's transport.

    Parameters:
        api_client: a kubernetes.client.ApiClient (from a kubeconfig and context).
    """

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.server = api_client.configuration.host

    def _open(self, method: str, path: str, query: dict[str, str] | None, body: str | None,
              content_type: str | None, timeout: float | tuple[float, float] | None) -> Any:
        """Send one request; return the urllib3 response, unread."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = list((query or {}).items())
        api = self.api_client
        try:
            if hasattr(api, "param_serialize"):  # kubernetes >= 31 (openapi-generator 7)
                m, url, h, b, pp = api.param_serialize(method, path, query_params=params, header_params=headers,
                                                       body=body, auth_settings=["BearerToken"])
                return api.call_api(m, url, header_params=h, body=b, post_params=pp,
                                    _request_timeout=timeout).response
            return api.call_api(path, method, query_params=params, header_params=headers, body=body,
                                auth_settings=["BearerToken"], _preload_content=False,
                                _return_http_data_only=True, _request_timeout=timeout)
        except TargetError:
            raise
        except Exception as exc:  # urllib3 / ApiException: the server is not reachable
            status = getattr(exc, "status", None)
            if status:  # kubernetes < 31 raises for error statuses
                raise ApiStatusError(f"{method} {path}: HTTP {status} {getattr(exc, 'body', '')}", status) from exc
            raise TargetError(
                f"Kubernetes API at {self.server} did not answer {method} {path}: {exc}. Check the kube "
                f"context and that `kubectl get nodes` works from here"
            ) from exc

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None,
                body: Any = None, content_type: str | None = None, timeout: float = 30.0) -> Any:
        """One JSON request; raises ApiStatusError with the server's message on an error status.

        Returns:
            The decoded JSON answer (a dict for objects and lists).
        """
        if body is not None and content_type is None:
            content_type = "application/json"
        # The client JSON-encodes bodies of JSON content types itself; YAML (apply) goes as text,
        # which is fine since JSON is YAML.
        payload = json.dumps(body) if body is not None and "json" not in (content_type or "") else body
        resp = self._open(method, path, query, payload, content_type, timeout)
        try:
            data = resp.data
        finally:
            resp.release_conn()
        return self._decode(method, path, resp.status, data)

    @staticmethod
    def _decode(method: str, path: str, status: int, data: bytes) -> Any:
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"message": data[:300].decode(errors="replace")}
        if status >= 400:
            msg = doc.get("message", "") if isinstance(doc, dict) else str(doc)
            reason = doc.get("reason", "") if isinstance(doc, dict) else ""
            raise ApiStatusError(f"{method} {path}: HTTP {status} {reason}: {msg}", status, reason)
        return doc

    def stream_lines(self, path: str, query: dict[str, str], stop: threading.Event,
                     *, connect_timeout_s: float = 10.0) -> Iterator[str]:
        """GET a streaming endpoint (log follow, watch) and yield its lines until it ends or
        `stop` is set. A helper thread reads the socket; the generator checks `stop` every 0.2 s
        and shuts the response down, which unblocks the thread.

        Raises:
            ApiStatusError when the server refuses the stream (e.g. 400: container not started).
        """
        resp = self._open("GET", path, query, None, None, (connect_timeout_s, None))  # no read timeout
        if resp.status >= 400:
            data = resp.data
            resp.release_conn()
            self._decode("GET", path, resp.status, data)
        lines: queue.Queue[bytes | None | BaseException] = queue.Queue()

        def pump() -> None:
            try:
                buf = b""
                # read1 returns what has arrived (a kubelet writes a line at a time); stream(n)
                # would block until n bytes. Older urllib3 lacks read1: fall back to lines.
                chunks = (iter(lambda: resp.read1(65536), b"") if hasattr(resp, "read1")
                          else iter(resp.readline, b""))
                for chunk in chunks:
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for line in complete:
                        lines.put(line)
                if buf:
                    lines.put(buf)
            except BaseException as exc:  # shutdown() on stop lands here; reported only if not stopping
                lines.put(exc)
            finally:
                lines.put(None)

        reader = threading.Thread(target=pump, name=f"gtnb-stream {path}", daemon=True)
        reader.start()
        try:
            while True:
                if stop.is_set():
                    return
                try:
                    item = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if stop.is_set():
                        return
                    raise TargetError(f"stream {path} from {self.server} broke: {item}") from item
                yield item.rstrip(b"\r").decode(errors="replace")
        finally:
            _shutdown(resp)
            reader.join(timeout=2)


def _shutdown(resp: Any) -> None:
    """Unblock a reader thread stuck in recv: urllib3 >= 2.3 has shutdown(); else close the socket."""
    try:
        if hasattr(resp, "shutdown"):
            resp.shutdown()
        resp.close()
        resp.release_conn()
    except Exception as exc:  # closing a dead stream is not worth failing the run over
        log.debug("closing stream: %s", exc)


def load_manifest(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a manifest file, empty documents dropped."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"manifest {path} cannot be read: {exc}") from exc
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            raise ConfigError(f"manifest {path} has a document without `kind`: fix the manifest")
    return docs
