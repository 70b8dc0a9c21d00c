"""LocalCluster: the gtnb.targets.base.Cluster of a local lab, usable from any process.

Commands and state go through the supervisor's JSON API (lab.json says where it listens);
container logs are read straight from the state directory, as `kubectl logs -f` streams them.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ... import errors
from ...errors import ConfigError, LabError
from ..base import Node, Pod, RolloutStatus
from .state import LabState

__all__ = ["ApiClient", "LocalCluster"]

FOLLOW_POLL_S = 0.1  # well inside the 0.5 s in which `stop` must be noticed


class ApiClient:
    """A tiny JSON client for the supervisor API at http://host:port."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        rest = url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.rpartition(":")
        self.host, self.port, self.timeout_s = host, int(port), timeout_s
        self.url = url

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        """Send one request; raise the gtnb error class the supervisor named on failure."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s or self.timeout_s)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = json.loads(resp.read() or b"null")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise LabError(
                f"the lab API at {self.url} did not answer {method} {path} ({exc}): "
                "is the lab up? (`gtnb lab status`)"
            ) from exc
        finally:
            conn.close()
        if resp.status != 200:
            kind = getattr(errors, str(payload.get("kind", "")), LabError) if isinstance(payload, dict) else LabError
            if not (isinstance(kind, type) and issubclass(kind, errors.GtnbError)):
                kind = LabError
            message = payload.get("error") if isinstance(payload, dict) else payload
            raise kind(str(message))
        return payload


class LocalCluster:
    """The IGW Deployment of one local lab (implements gtnb.targets.base.Cluster)."""

    def __init__(self, state_dir: Path, api_url: str) -> None:
        self.state = LabState(Path(state_dir))
        self.api = ApiClient(api_url)

    # -- Cluster protocol ------------------------------------------------------------------------

    def apply(self, manifest: Path) -> None:
        """Apply an IGW manifest file (a new pod template starts a rolling update)."""
        path = Path(manifest)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read manifest {path}: {exc.strerror}; pass an existing file") from exc
        self.api.call("POST", "/apply", {"manifest": text, "source": str(path)})

    def pods(self) -> list[Pod]:
        return [
            Pod(
                name=p["name"],
                node=p["node"],
                mode=p["mode"],
                phase=p["phase"],
                ready=bool(p["ready"]),
                template_hash=p["template_hash"],
                reason=p["reason"],
                created=float(p["created"]),
                containers=tuple(p["containers"]),
            )
            for p in self.api.call("GET", "/pods")
        ]

    def nodes(self) -> list[Node]:
        return [Node(n["name"], n["address"], bool(n["ready"]), n.get("version", "")) for n in self.api.call("GET", "/nodes")]

    def scale(self, replicas: int) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ConfigError(f"replicas {replicas!r} must be a whole number >= 0")
        self.api.call("POST", "/scale", {"replicas": replicas})

    def delete_pod(self, name: str, grace_period_s: float) -> None:
        """Start deleting pod `name` and return at once (kubectl's `--wait=false`)."""
        if grace_period_s is not None and (isinstance(grace_period_s, bool) or grace_period_s < 0):
            raise ConfigError(f"grace_period_s {grace_period_s!r} must be a number >= 0")
        self.api.call("POST", "/delete", {"pod": name, "grace_period_s": grace_period_s})

    def rollout_restart(self) -> None:
        self.api.call("POST", "/restart", {})

    def rollout_status(self) -> RolloutStatus:
        r = self.api.call("GET", "/rollout")
        return RolloutStatus(
            desired=r["desired"], updated=r["updated"], ready=r["ready"], available=r["available"],
            old=r["old"], pending=tuple(r["pending"]),
        )

    def follow_logs(self, pod: str, container: str, stop: threading.Event) -> Iterator[str]:
        """Yield a container's lines (with their `--timestamps` prefix) from its start until the
        container exited and its log is read out, or `stop` is set (noticed within 0.1 s)."""
        log_path = self.state.container_log(pod, container)
        exit_path = self.state.container_exit(pod, container)
        while not log_path.exists():
            if stop.is_set():
                return
            if not self._pod_may_start(pod):
                raise LabError(f"pod {pod} has no container {container!r} log in {log_path.parent}: is the name right?")
            stop.wait(FOLLOW_POLL_S)
        with open(log_path, "rb") as f:
            pending = b""
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith(b"\n"):
                        yield pending.decode("utf-8", "replace").rstrip("\n")
                        pending = b""
                    continue
                if stop.is_set():
                    return
                # The exit file is written after the last line: once it exists, EOF is final.
                if exit_path.exists():
                    rest = f.read()
                    pending += rest
                    for line in pending.decode("utf-8", "replace").splitlines():
                        yield line
                    return
                stop.wait(FOLLOW_POLL_S)

    def _pod_may_start(self, pod: str) -> bool:
        # A Pending pod has no log yet; a name the lab never had never will.
        try:
            return any(p.name == pod for p in self.pods())
        except LabError:
            return False

    def versions(self) -> dict[str, str]:
        return dict(self.api.call("GET", "/versions"))

    # -- extras for lab status and tests --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(self.api.call("GET", "/status"))

    def shutdown(self) -> None:
        self.api.call("POST", "/shutdown", {}, timeout_s=5)

