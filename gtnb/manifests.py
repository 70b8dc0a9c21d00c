"""Read the IGW manifest of a mode into an `IgwSpec`: what the local lab needs to run it.

Both targets take `manifests/2x-igw-<mode>.yaml` as the source of truth. The homelab applies it
as it is; the local lab reads from it the replicas, strategy, anti-affinity, grace period, the
containers' env and preStop hooks, and the Istio proxy settings of the `proxy.istio.io/config`
annotation, interpreted the way Kubernetes and Istio do (percentages in the strategy, named
hook ports, Istio's defaults when the annotation says nothing). A manifest that does not say what
the experiment needs is refused with the file, the field and the fix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import ConfigError
from .vocabulary import MODES, ensure_mode
from .manifest_fields import (
    ISTIO_DEFAULT_MINIMUM_DRAIN,
    ISTIO_DEFAULT_TERMINATION_DRAIN_S,
    FieldReader,
    parse_go_bool,
    parse_go_duration,
    parse_proto_duration,
    selector_matches,
    yaml_error_summary,
)

__all__ = [
    "MODES",
    "PROXY_CONFIG_ANNOTATION",
    "HttpGetHook",
    "ExecHook",
    "ContainerPort",
    "ContainerSpec",
    "ProxyConfig",
    "IgwSpec",
    "load_igw_spec",
    "manifest_sha256",
    "manifest_path",
]

PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
_MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
_MANIFEST_OF_MODE = {"current": "20-igw-current.yaml", "improved": "21-igw-improved.yaml"}
# The containers the experiment is about: the gateway's Envoy (+ pilot-agent) and the hc sidecar.
_REQUIRED_CONTAINERS = ("istio-proxy", "hc")


@dataclass(frozen=True)
class HttpGetHook:
    """A preStop `httpGet` hook; `host` None means the pod's own address."""

    path: str
    port: int
    host: str | None = None
    scheme: str = "HTTP"
    kind: ClassVar[str] = "httpGet"


@dataclass(frozen=True)
class ExecHook:
    """A preStop `exec` hook."""

    command: tuple[str, ...]
    kind: ClassVar[str] = "exec"


@dataclass(frozen=True)
class ContainerPort:
    name: str | None
    container_port: int
    host_port: int | None
    protocol: str = "TCP"


@dataclass(frozen=True)
class ContainerSpec:
    """One container of the IGW pod template."""

    name: str
    image: str
    env: Mapping[str, str]  # literal `value`s only
    env_fields: Mapping[str, str]  # downward API: env name -> fieldPath (e.g. POD_NAME -> metadata.name)
    ports: tuple[ContainerPort, ...]
    pre_stop: HttpGetHook | ExecHook | None

    def port(self, name: str) -> int:
        """Return the containerPort of the port called `name`."""
        for p in self.ports:
            if p.name == name:
                return p.container_port
        raise KeyError(name)


@dataclass(frozen=True)
class ProxyConfig:
    """The Istio proxy settings that shape shutdown, with Istio's defaults filled in."""

    termination_drain_s: float
    proxy_metadata: Mapping[str, str]
    annotated: bool  # False: no `proxy.istio.io/config` annotation, all Istio defaults

    @property
    def exit_on_zero_active_connections(self) -> bool:
        return parse_go_bool(self.proxy_metadata.get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "false"))

    @property
    def minimum_drain_s(self) -> float:
        return parse_go_duration(self.proxy_metadata.get("MINIMUM_DRAIN_DURATION", ISTIO_DEFAULT_MINIMUM_DRAIN))


@dataclass(frozen=True)
class IgwSpec:
    """The IGW Deployment of one manifest, as the experiment needs it."""

    path: Path
    name: str
    namespace: str
    replicas: int
    mode: str  # the pod template's `mode` label
    labels: Mapping[str, str]  # the pod template's labels
    termination_grace_period_s: int
    strategy_type: str  # RollingUpdate | Recreate
    max_surge: int  # resolved against replicas as Kubernetes does
    max_unavailable: int
    anti_affinity_hostname_required: bool
    containers: tuple[ContainerSpec, ...]
    proxy: ProxyConfig

    def container(self, name: str) -> ContainerSpec:
        """Return the container called `name` (ConfigError when absent)."""
        for c in self.containers:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no container {name!r} in the pod template")

    @property
    def agent_env(self) -> dict[str, str]:
        """The env the local lab's agent needs, as pilot-agent would see it.

        proxyMetadata becomes the proxy container's env (as Istio's injector does), then the
        istio-proxy container's own env wins; the three shutdown settings are normalised
        (`20s`, `true`/`false`, `1s`) so the agent reads them like pilot-agent does.
        """
        env = dict(self.proxy.proxy_metadata)
        env.update(self.container("istio-proxy").env)
        exit_on_zero = parse_go_bool(env.get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "false"))
        minimum = parse_go_duration(env.get("MINIMUM_DRAIN_DURATION", ISTIO_DEFAULT_MINIMUM_DRAIN))
        env["TERMINATION_DRAIN_DURATION"] = f"{self.proxy.termination_drain_s:g}s"
        env["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] = "true" if exit_on_zero else "false"
        env["MINIMUM_DRAIN_DURATION"] = f"{minimum:g}s"
        return env

    # The local lab's names for the same facts.
    @property
    def grace_period_s(self) -> int:
        return self.termination_grace_period_s

    @property
    def anti_affinity(self) -> bool:
        return self.anti_affinity_hostname_required


def manifest_path(mode: str) -> Path:
    """Return the committed IGW manifest of a mode (`manifests/2x-igw-<mode>.yaml`)."""
    return _MANIFESTS / _MANIFEST_OF_MODE[ensure_mode(mode)]


def manifest_sha256(path: str | Path) -> str:
    """Return the sha256 (hex) of a manifest file's bytes, for the run journal."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc.strerror}; check the path") from exc


def _load_deployment(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc.strerror}; check the path") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({yaml_error_summary(exc)}); fix the syntax") from exc
    deployments = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Deployment"]
    if not deployments:
        raise ConfigError(f"{path}: no Deployment in the file; an IGW manifest holds the service-a-igw Deployment")
    if len(deployments) > 1:
        names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in deployments)
        raise ConfigError(f"{path}: {len(deployments)} Deployments ({names}); keep exactly one IGW Deployment per manifest")
    dep = deployments[0]
    if dep.get("apiVersion") != "apps/v1":
        raise ConfigError(f"{path}: apiVersion: {dep.get('apiVersion')!r} for the Deployment; use apps/v1")
    return dep


def _hook(r: FieldReader, raw: Any, field: str, ports: tuple[ContainerPort, ...], container: str) -> HttpGetHook | ExecHook | None:
    pre_stop = r.mapping(raw, field)
    if not pre_stop:
        return None
    kinds = [k for k in ("httpGet", "exec", "sleep", "tcpSocket") if k in pre_stop]
    if kinds == ["exec"]:
        command = r.sequence(r.mapping(pre_stop["exec"], f"{field}.exec").get("command"), f"{field}.exec.command")
        if not command:
            raise r.fail(f"{field}.exec.command", "is empty", "give the command as a list of words")
        return ExecHook(tuple(str(w) for w in command))
    if kinds != ["httpGet"]:
        raise r.fail(field, f"has {', '.join(kinds) or 'no handler'}", "use exactly one of httpGet or exec")
    get = r.mapping(pre_stop["httpGet"], f"{field}.httpGet")
    port = get.get("port")
    if isinstance(port, str) and not port.isdigit():
        named = {p.name: p.container_port for p in ports if p.name}
        if port not in named:
            raise r.fail(
                f"{field}.httpGet.port",
                f"names port {port!r}, which container {container!r} does not declare",
                f"add a port named {port!r} to {container!r} or write the number",
            )
        port = named[port]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise r.fail(f"{field}.httpGet.port", f"{port!r} is not a port", "write a number in 1..65535 or a port name")
    scheme = str(get.get("scheme", "HTTP"))
    if scheme not in ("HTTP", "HTTPS"):
        raise r.fail(f"{field}.httpGet.scheme", f"{scheme!r} is not HTTP or HTTPS", "use HTTP (or leave it out)")
    return HttpGetHook(path=str(get.get("path", "/")), port=port, host=get.get("host") or None, scheme=scheme)


def _container(r: FieldReader, raw: Any, i: int) -> ContainerSpec:
    field = f"spec.template.spec.containers[{i}]"
    c = r.mapping(raw, field)
    name = c.get("name")
    if not isinstance(name, str) or not name:
        raise r.fail(f"{field}.name", "missing", "give every container a name")
    field = f"spec.template.spec.containers[{name}]"
    env: dict[str, str] = {}
    env_fields: dict[str, str] = {}
    for j, e in enumerate(r.sequence(c.get("env"), f"{field}.env")):
        e = r.mapping(e, f"{field}.env[{j}]")
        key = e.get("name")
        if not isinstance(key, str) or not key:
            raise r.fail(f"{field}.env[{j}].name", "missing", "give every env entry a name")
        if "valueFrom" in e:
            ref = r.mapping(r.mapping(e["valueFrom"], f"{field}.env.{key}.valueFrom").get("fieldRef"), f"{field}.env.{key}")
            if ref.get("fieldPath"):
                env_fields[key] = str(ref["fieldPath"])
            continue
        value = e.get("value", "")
        if not isinstance(value, str):
            raise r.fail(f"{field}.env.{key}", f"value {value!r} is not a string", f'quote it: value: "{value}"')
        env[key] = value
    ports = []
    for j, p in enumerate(r.sequence(c.get("ports"), f"{field}.ports")):
        p = r.mapping(p, f"{field}.ports[{j}]")
        number = p.get("containerPort")
        if isinstance(number, bool) or not isinstance(number, int):
            raise r.fail(f"{field}.ports[{j}].containerPort", f"{number!r} is not a port number", "write a number")
        host = p.get("hostPort")
        ports.append(ContainerPort(p.get("name"), number, host if isinstance(host, int) else None, str(p.get("protocol", "TCP"))))
    lifecycle = r.mapping(c.get("lifecycle"), f"{field}.lifecycle")
    hook = _hook(r, lifecycle.get("preStop"), f"{field}.lifecycle.preStop", tuple(ports), name)
    return ContainerSpec(name, str(c.get("image", "")), env, env_fields, tuple(ports), hook)


def _proxy_config(r: FieldReader, annotations: dict[str, Any]) -> ProxyConfig:
    field = f"spec.template.metadata.annotations[{PROXY_CONFIG_ANNOTATION}]"
    raw = annotations.get(PROXY_CONFIG_ANNOTATION)
    if raw is None:
        return ProxyConfig(ISTIO_DEFAULT_TERMINATION_DRAIN_S, {}, annotated=False)
    if not isinstance(raw, str):
        raise r.fail(field, "is not a string", "write the ProxyConfig as a YAML block string (`|`)")
    try:
        cfg = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise r.fail(field, f"is not valid YAML ({yaml_error_summary(exc)})", "fix the ProxyConfig block") from exc
    cfg = r.mapping(cfg, field, "write the ProxyConfig as a mapping")
    drain = cfg.get("terminationDrainDuration")
    try:
        drain_s = ISTIO_DEFAULT_TERMINATION_DRAIN_S if drain is None else parse_proto_duration(drain)
    except ValueError as exc:
        raise r.fail(f"{field}.terminationDrainDuration", str(exc), "write seconds with an s, like 5s or 2.5s") from exc
    meta = r.mapping(cfg.get("proxyMetadata"), f"{field}.proxyMetadata")
    for key, value in meta.items():
        if not isinstance(value, str):
            shown = str(value).lower() if isinstance(value, bool) else value  # YAML's true, not Python's True
            raise r.fail(f"{field}.proxyMetadata.{key}", f"{shown} is not a string (proxyMetadata is map<string,string>)", f'quote it: {key}: "{shown}"')
    try:
        parse_go_bool(meta.get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "false"))
    except ValueError as exc:
        raise r.fail(f"{field}.proxyMetadata.EXIT_ON_ZERO_ACTIVE_CONNECTIONS", str(exc), 'write "true" or "false"') from exc
    try:
        parse_go_duration(meta.get("MINIMUM_DRAIN_DURATION", ISTIO_DEFAULT_MINIMUM_DRAIN))
    except ValueError as exc:
        raise r.fail(f"{field}.proxyMetadata.MINIMUM_DRAIN_DURATION", str(exc), 'write a Go duration like "1s" or "500ms"') from exc
    return ProxyConfig(drain_s, dict(meta), annotated=True)


def _anti_affinity(r: FieldReader, pod_spec: dict[str, Any], labels: dict[str, str]) -> bool:
    """True when a required pod anti-affinity term on the hostname selects the pod itself."""
    field = "spec.template.spec.affinity.podAntiAffinity"
    anti = r.mapping(r.mapping(pod_spec.get("affinity"), "spec.template.spec.affinity").get("podAntiAffinity"), field)
    field += ".requiredDuringSchedulingIgnoredDuringExecution"
    for i, term in enumerate(r.sequence(anti.get("requiredDuringSchedulingIgnoredDuringExecution"), field)):
        term = r.mapping(term, f"{field}[{i}]")
        if term.get("topologyKey") == "kubernetes.io/hostname" and selector_matches(term.get("labelSelector"), labels):
            return True
    return False


def load_igw_spec(path: str | Path) -> IgwSpec:
    """Read an IGW manifest.

    Parameters:
        path: a manifest holding one Deployment (e.g. `manifests/21-igw-improved.yaml`).

    Returns:
        The IgwSpec; ConfigError naming the file, the field and the fix when the manifest lacks
        what the experiment needs.
    """
    path = Path(path)
    r = FieldReader(path)
    dep = _load_deployment(path)
    meta = r.mapping(dep.get("metadata"), "metadata")
    spec = r.mapping(dep.get("spec"), "spec")
    template = r.mapping(spec.get("template"), "spec.template")
    tmeta = r.mapping(template.get("metadata"), "spec.template.metadata")
    pod_spec = r.mapping(template.get("spec"), "spec.template.spec")
    labels = {str(k): str(v) for k, v in r.mapping(tmeta.get("labels"), "spec.template.metadata.labels").items()}

    mode = labels.get("mode")
    if mode is None:
        raise r.fail("spec.template.metadata.labels.mode", "missing", "add `mode: current` or `mode: improved` to the pod labels")
    if mode not in MODES:
        raise r.fail("spec.template.metadata.labels.mode", f"{mode!r} is not one of {', '.join(MODES)}", "use one of those")
    dep_mode = r.mapping(meta.get("labels"), "metadata.labels").get("mode")
    if dep_mode is not None and dep_mode != mode:
        raise r.fail("metadata.labels.mode", f"{dep_mode!r} differs from the pod label {mode!r}", "make them the same")

    replicas = r.count(spec.get("replicas"), "spec.replicas", 1)
    strategy = r.mapping(spec.get("strategy"), "spec.strategy")
    strategy_type = strategy.get("type", "RollingUpdate")
    if strategy_type == "Recreate":
        surge, unavailable = 0, replicas
    elif strategy_type == "RollingUpdate":
        rolling = r.mapping(strategy.get("rollingUpdate"), "spec.strategy.rollingUpdate")
        surge, surge_zero = r.int_or_percent(rolling.get("maxSurge"), "spec.strategy.rollingUpdate.maxSurge", "25%", replicas, True)
        unavailable, unav_zero = r.int_or_percent(
            rolling.get("maxUnavailable"), "spec.strategy.rollingUpdate.maxUnavailable", "25%", replicas, False
        )
        if surge_zero and unav_zero:
            raise r.fail("spec.strategy.rollingUpdate", "maxSurge and maxUnavailable are both 0", "Kubernetes refuses that: make one of them >= 1")
        if surge == 0 and unavailable == 0:  # percentages that round to 0: the controller allows one
            unavailable = 1
    else:
        raise r.fail("spec.strategy.type", f"{strategy_type!r} is unknown", "use RollingUpdate or Recreate")

    containers = tuple(_container(r, c, i) for i, c in enumerate(r.sequence(pod_spec.get("containers"), "spec.template.spec.containers")))
    names = [c.name for c in containers]
    for needed in _REQUIRED_CONTAINERS:
        if needed not in names:
            raise r.fail(
                "spec.template.spec.containers",
                f"no {needed!r} container (found {', '.join(names) or 'none'})",
                "the IGW pod needs istio-proxy (gateway injection, image: auto) and hc (service-a-hc)",
            )
    return IgwSpec(
        path=path,
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "default")),
        replicas=replicas,
        mode=mode,
        labels=labels,
        termination_grace_period_s=r.count(pod_spec.get("terminationGracePeriodSeconds"), "spec.template.spec.terminationGracePeriodSeconds", 30),
        strategy_type=strategy_type,
        max_surge=surge,
        max_unavailable=unavailable,
        anti_affinity_hostname_required=_anti_affinity(r, pod_spec, labels),
        containers=containers,
        proxy=_proxy_config(r, r.mapping(tmeta.get("annotations"), "spec.template.metadata.annotations")),
    )
