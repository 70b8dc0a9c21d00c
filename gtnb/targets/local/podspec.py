"""From an IGW manifest to what the lab runs: the Deployment (replicas, strategy, anti-affinity),
its pod template hash, and per pod the two containers as local processes.

The manifest is the source of truth, as on the homelab: gtnb.manifests.load_igw_spec reads the
mode label, grace period, strategy, preStop hooks, container env and the proxy config; this
module only adds what a process on loopback needs instead of a pod network (listen addresses,
the backend address, the pod name).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError
from .addresses import (
    AGENT_STATUS_PORT,
    ENVOY_ADMIN_PORT,
    ENVOY_PORT,
    HC_PORT,
    LabAddresses,
)
from .controller import SAFE_ALPHABET, DeploymentSpec
from .kubelet import ContainerRun, HookSpec

__all__ = ["LabTemplate", "deployment_from_manifest", "template_hash", "RESTARTED_AT"]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_KNOWN_CONTAINERS = ("istio-proxy", "hc")


def template_hash(template: dict[str, Any]) -> str:
    """A pod-template-hash as Kubernetes makes it: FNV-32a of the template, safe-encoded."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    # Kubernetes prints the uint32 in decimal and maps each digit into the safe alphabet.
    return "".join(SAFE_ALPHABET[int(d)] for d in str(h))[:10]


def _pod_template(text: str, source: str) -> dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise ConfigError(f"manifest {source} is not valid YAML: {exc}") from exc
    for doc in docs:
        if doc.get("kind") == "Deployment":
            tpl = (doc.get("spec") or {}).get("template")
            if isinstance(tpl, dict):
                return tpl
    raise ConfigError(f"manifest {source} has no Deployment with spec.template: apply an IGW manifest")


def _hook(raw: Any, source: str, container: str) -> HookSpec | None:
    """The lab's HookSpec for an IgwSpec hook (HttpGetHook | ExecHook | None)."""
    if raw is None:
        return None
    if raw.kind == "httpGet":
        return HookSpec("httpGet", path=raw.path or "/", port=int(raw.port), host=raw.host or "")
    if raw.kind == "exec":
        return HookSpec("exec", command=tuple(raw.command))
    raise ConfigError(
        f"manifest {source}: preStop of {container} is {raw.kind}; the local lab runs httpGet and exec hooks"
    )


def _probe(raw_container: dict[str, Any], spec_container: Any, default_path: str, default_port: int) -> tuple[str, int, str]:
    """(kind, port, path) of a container's readinessProbe: "http" or "tcp"; the lab's default
    when the manifest has none (Istio's injector adds /healthz/ready on 15021 to istio-proxy)."""
    probe = raw_container.get("readinessProbe") or {}

    def port_of(value: Any) -> int:
        return spec_container.port(value) if isinstance(value, str) and not value.isdigit() else int(value)

    if "tcpSocket" in probe:
        return "tcp", port_of(probe["tcpSocket"].get("port")), ""
    if "httpGet" in probe:
        return "http", port_of(probe["httpGet"].get("port")), probe["httpGet"].get("path") or "/"
    return "http", default_port, default_path


@dataclass(frozen=True)
class LabTemplate:
    """One pod template, bound to a lab's addresses (implements controller.Template)."""

    hash: str
    mode: str | None
    grace_period_s: float
    addresses: LabAddresses
    envs: dict[str, dict[str, str]]  # container -> env from the manifest (agent env included)
    env_fields: dict[str, dict[str, str]]  # container -> env name -> downward API fieldPath
    hooks: dict[str, HookSpec | None]  # container -> preStop
    probes: dict[str, tuple[str, int, str]]  # container -> readinessProbe (kind, port, path)

    def _env(self, container: str, base: dict[str, str], pod: str, node: str, address: str) -> dict[str, str]:
        fields = {
            "metadata.name": pod,
            "metadata.namespace": "service-a",
            "spec.nodeName": node,
            "status.podIP": address,
            "status.hostIP": address,
        }
        env = {**base, **self.envs.get(container, {})}
        for name, path in self.env_fields.get(container, {}).items():
            if path in fields:
                env[name] = fields[path]
        return env

    def _ready_url(self, container: str, address: str) -> str:
        kind, port, path = self.probes[container]
        return f"tcp://{address}:{port}" if kind == "tcp" else f"http://{address}:{port}{path}"

    def containers(self, pod: str, node: str, address: str) -> list[ContainerRun]:
        base = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
        }
        # Unbuffered: each line must reach the log (and its timestamp) when it is written.
        base.update({"PYTHONUNBUFFERED": "1", "POD_NAME": pod, "NODE_NAME": node, "INSTANCE_IP": address})
        py = sys.executable
        agent_env = self._env("istio-proxy", base, pod, node, address)
        # The same values the flags carry, so the environment tells no other story.
        agent_env.update(
            PROXY_LISTEN=f"{address}:{ENVOY_PORT}", PROXY_ADMIN=f"{address}:{ENVOY_ADMIN_PORT}",
            PROXY_BACKEND=self.addresses.backend_listen, STATUS_LISTEN=f"{address}:{AGENT_STATUS_PORT}",
        )
        agent = ContainerRun(
            name="istio-proxy",
            argv=(
                py, "-m", "gtnb.workloads.agent",
                "--status-listen", f"{address}:{AGENT_STATUS_PORT}",
                "--listen", f"{address}:{ENVOY_PORT}",
                "--admin", f"{address}:{ENVOY_ADMIN_PORT}",
                "--backend", self.addresses.backend_listen,
            ),
            env=agent_env,
            pre_stop=self.hooks.get("istio-proxy"),
            ready_url=self._ready_url("istio-proxy", address),
        )
        hc_env = self._env("hc", base, pod, node, address)
        hc_env.update(HC_LISTEN=f"{address}:{HC_PORT}", ENVOY_ADMIN_URL=f"http://{address}:{ENVOY_ADMIN_PORT}")
        hc = ContainerRun(
            name="hc",
            argv=(
                py, "-m", "gtnb.workloads.hc",
                "--listen", f"{address}:{HC_PORT}",
                "--envoy-admin", f"http://{address}:{ENVOY_ADMIN_PORT}",
                "--pod", pod,
            ),
            env=hc_env,
            pre_stop=self.hooks.get("hc"),
            ready_url=self._ready_url("hc", address),
        )
        return [agent, hc]


def deployment_from_manifest(
    text: str, source: str, addresses: LabAddresses, restarted_at: str | None = None
) -> DeploymentSpec:
    """Read an IGW manifest into the Deployment the lab runs.

    Parameters:
        text: the manifest's YAML (as applied; kept so `deployment.json` can restore it).
        source: its path, for messages.
        addresses: the lab's addresses.
        restarted_at: the `kubectl rollout restart` annotation, part of the template hash.

    Returns:
        A DeploymentSpec whose template starts the agent and the hc as local processes.
    """
    from ...manifests import load_igw_spec  # the assets part; imported late to keep layering light

    tpl = _pod_template(text, source)
    if restarted_at:
        tpl = json.loads(json.dumps(tpl))
        tpl.setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = restarted_at
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="gtnb-manifest-", delete=False) as f:
        f.write(text)
    try:
        spec = load_igw_spec(Path(f.name))
    finally:
        os.unlink(f.name)
    return _from_igw_spec(spec, tpl, template_hash(tpl), addresses, source)


def _from_igw_spec(spec: Any, tpl: dict[str, Any], hash_: str, addresses: LabAddresses, source: str) -> DeploymentSpec:
    names = [c.name for c in spec.containers]
    unknown = [n for n in names if n not in _KNOWN_CONTAINERS]
    if unknown:
        raise ConfigError(
            f"manifest {source}: the local lab runs only the containers "
            f"{', '.join(_KNOWN_CONTAINERS)}; remove {', '.join(unknown)}"
        )
    raw = {c.get("name"): c for c in (tpl.get("spec") or {}).get("containers") or []}
    envs = {c.name: dict(c.env) for c in spec.containers}
    envs["istio-proxy"] = {**envs.get("istio-proxy", {}), **spec.agent_env}
    defaults = {"istio-proxy": ("/healthz/ready", AGENT_STATUS_PORT), "hc": ("/healthz", HC_PORT)}
    template = LabTemplate(
        hash=hash_,
        mode=spec.mode,
        grace_period_s=float(spec.grace_period_s),
        addresses=addresses,
        envs=envs,
        env_fields={c.name: dict(c.env_fields) for c in spec.containers},
        hooks={c.name: _hook(c.pre_stop, source, c.name) for c in spec.containers},
        probes={c.name: _probe(raw.get(c.name, {}), c, *defaults[c.name]) for c in spec.containers},
    )
    return DeploymentSpec(
        name=spec.name,
        template=template,
        replicas=int(spec.replicas),
        max_surge=int(spec.max_surge),
        max_unavailable=int(spec.max_unavailable),
        anti_affinity=bool(spec.anti_affinity),
    )
