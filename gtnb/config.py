"""Lab profiles: where the homelab's cluster, HAProxy node and nodes are, read from one YAML file.

The local lab needs no profile (its addresses are fixed by docs/contracts.md). The homelab
profile (`profiles/homelab.yaml`, git-ignored; `profiles/homelab.example.yaml` is the template)
names the kube context, the HAProxy node and how to reach it over SSH, the frontend clients
connect to, the nodes that get images sideloaded, and the `${GTNB_*}` values that render the
HAProxy config for this lab.

Secrets never live in the profile: SSH keys come from the agent or from key files the profile
points at, and sudo on the nodes must be passwordless for the commands gtnb runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_ssh import SshHost, resolve_ssh_host
from .errors import ConfigError

__all__ = [
    "SshHost",
    "KubeSettings",
    "BalancerSettings",
    "FrontendSettings",
    "HomelabProfile",
    "load_profile",
    "parse_profile",
    "resolve_ssh_host",
    "ensure_reload_command",
    "ensure_no_secrets",
    "DEADLOCK_POLICIES",
    "SECRET_KEYS",
    "DEFAULT_LOG_COMMAND",
]

DEADLOCK_POLICIES = ("force-delete", "report")
# Keys that would put a secret into a file people copy around and paste into issues.
SECRET_KEYS = ("password", "passphrase", "private_key", "secret", "token", "key_data")
_SECRET_HINT = (
    "secrets never go in the profile: load the key into ssh-agent (`ssh-add`) or set "
    "`identity_file:` to the key file's path, and make sudo passwordless (NOPASSWD) for gtnb's commands"
)
# The journal's precise ISO time + `host haproxy[pid]: message`: what gtnb.analysis reads; `-o cat`
# would drop the time, and rsyslog's default file format has whole seconds only.
DEFAULT_LOG_COMMAND = "journalctl -fu haproxy -o short-iso-precise -n 0 --no-pager"
_GTNB_VAR = re.compile(r"^GTNB_[A-Z0-9_]+$")
# A reload keeps established connections; these words stop or restart HAProxy, which on the
# homelab also cuts the control plane's 6443 frontend (the seed's troubleshooting row).
# Words that stop or restart a service, wherever they sit in a token (`reload-or-restart`,
# `try-restart`, `haproxy-stop`); plus `start`/`force-reload` (restart when no reload exists).
_STOPPING = re.compile(r"restart|stop|^start$|^force-reload$|^disable$|^mask$|^-st$", re.I)
# kill is fine only with the signals HAProxy's master takes as reload.
_RELOAD_SIGNALS = {"-USR2", "-SIGUSR2", "-HUP", "-SIGHUP", "-1", "-12", "USR2", "SIGUSR2", "HUP", "SIGHUP"}


@dataclass(frozen=True)
class KubeSettings:
    context: str | None
    kubeconfig: Path | None
    namespace: str = "service-a"
    deployment: str = "service-a-igw"
    istio_namespace: str = "istio-system"
    deadlock_policy: str = "force-delete"  # force-delete old-mode pods (grace 5 s) or report only
    rollout_timeout_s: float = 180.0
    expected_version: str | None = None  # every node's kubelet, checked by preflight (e.g. v1.30.6)


@dataclass(frozen=True)
class BalancerSettings:
    ssh: SshHost
    sudo: bool = True
    admin_socket: str = "/run/haproxy/admin.sock"
    config_path: str = "/etc/haproxy/haproxy.cfg"
    reload_command: str = "systemctl reload haproxy"
    haproxy_bin: str = "haproxy"
    python: str = "python3"  # runs the admin-socket helper on the node; without it, one exec per call
    log_command: str = "journalctl -fu haproxy -o short-iso-precise -n 0 --no-pager"  # DEFAULT_LOG_COMMAND
    reload_timeout_s: float = 20.0


@dataclass(frozen=True)
class FrontendSettings:
    host: str
    port: int = 443
    sni: str = "example.local"
    ca: Path = Path("haproxy/certs/ca.pem")


@dataclass(frozen=True)
class HomelabProfile:
    """Everything gtnb needs to run on a real cluster; see profiles/homelab.example.yaml."""

    path: Path
    kube: KubeSettings
    balancer: BalancerSettings
    frontend: FrontendSettings
    nodes: dict[str, SshHost] = field(default_factory=dict)  # node name -> SSH host for crictl/ctr
    node_sudo: bool = True
    images: tuple[str, ...] = ("service-a-backend:dev", "service-a-hc:dev")
    haproxy_values: dict[str, str] = field(default_factory=dict)


def load_profile(path: str | Path) -> HomelabProfile:
    """Read and validate a homelab profile.

    Parameters:
        path: the YAML file (e.g. profiles/homelab.yaml).

    Returns:
        The validated HomelabProfile; relative paths in it are taken from the file's directory's
        parent when they start with `haproxy/` (the repo layout), else from the file's directory.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"profile {str(p)!r} does not exist: copy profiles/homelab.example.yaml to "
            f"profiles/homelab.yaml and fill in your cluster"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {str(p)!r} is not valid YAML: {exc}") from exc
    return parse_profile(data, path=p)


def parse_profile(data: Any, *, path: Path = Path("<profile>")) -> HomelabProfile:
    """Validate a profile already parsed from YAML (a mapping).

    Parameters:
        data: the parsed YAML document.
        path: where it came from, for messages and relative paths.

    Returns:
        The HomelabProfile.
    """
    where = str(path)
    root = _mapping(data, "the profile", where)
    ensure_no_secrets(root, where=where)
    _known(root, {"kube", "balancer", "frontend", "nodes", "images", "haproxy_values"}, "", where)
    base = path.parent if path.name != "<profile>" else Path.cwd()

    k = _mapping(root.get("kube"), "kube", where)
    _known(k, {"context", "kubeconfig", "namespace", "deployment", "istio_namespace",
               "deadlock_policy", "rollout_timeout_s", "expected_version"}, "kube.", where)
    policy = _str(k, "deadlock_policy", "kube", where, "force-delete")
    if policy not in DEADLOCK_POLICIES:
        raise ConfigError(
            f"{where}: kube.deadlock_policy is {policy!r}: use one of {', '.join(DEADLOCK_POLICIES)}"
        )
    kubeconfig = k.get("kubeconfig")
    kube = KubeSettings(
        context=_str(k, "context", "kube", where, None),
        kubeconfig=Path(str(kubeconfig)).expanduser() if kubeconfig else None,
        namespace=_str(k, "namespace", "kube", where, "service-a"),
        deployment=_str(k, "deployment", "kube", where, "service-a-igw"),
        istio_namespace=_str(k, "istio_namespace", "kube", where, "istio-system"),
        deadlock_policy=policy,
        rollout_timeout_s=_positive(k, "rollout_timeout_s", "kube", where, 180.0),
        expected_version=_str(k, "expected_version", "kube", where, None),
    )

    b = _mapping(root.get("balancer"), "balancer", where)
    _known(b, {"ssh", "sudo", "admin_socket", "config_path", "reload_command", "haproxy_bin", "python",
               "log_command", "reload_timeout_s"}, "balancer.", where)
    balancer = BalancerSettings(
        ssh=_ssh(b.get("ssh"), "balancer.ssh", where, base),
        sudo=_bool(b, "sudo", "balancer", where, True),
        admin_socket=_abs(b, "admin_socket", "balancer", where, "/run/haproxy/admin.sock"),
        config_path=_abs(b, "config_path", "balancer", where, "/etc/haproxy/haproxy.cfg"),
        reload_command=ensure_reload_command(
            _str(b, "reload_command", "balancer", where, "systemctl reload haproxy"), where=where
        ),
        haproxy_bin=_str(b, "haproxy_bin", "balancer", where, "haproxy"),
        python=_str(b, "python", "balancer", where, "python3"),
        log_command=_str(b, "log_command", "balancer", where, DEFAULT_LOG_COMMAND),
        reload_timeout_s=_positive(b, "reload_timeout_s", "balancer", where, 20.0),
    )

    f = _mapping(root.get("frontend"), "frontend", where)
    _known(f, {"host", "port", "sni", "ca"}, "frontend.", where)
    frontend = FrontendSettings(
        host=_str(f, "host", "frontend", where, None, required=True),
        port=_port(f.get("port", 443), "frontend.port", where),
        sni=_str(f, "sni", "frontend", where, "example.local"),
        ca=_path(_str(f, "ca", "frontend", where, "haproxy/certs/ca.pem"), base),
    )

    n = _mapping(root.get("nodes", {}), "nodes", where)
    _known(n, {"ssh", "sudo", "hosts"}, "nodes.", where)
    defaults = _mapping(n.get("ssh", {}), "nodes.ssh", where)
    hosts = _mapping(n.get("hosts", {}), "nodes.hosts", where)
    nodes: dict[str, SshHost] = {}
    for node, spec in hosts.items():
        spec = {"host": spec} if isinstance(spec, str) else spec
        merged = {**defaults, **_mapping(spec, f"nodes.hosts.{node}", where)}
        nodes[str(node)] = _ssh(merged, f"nodes.hosts.{node}", where, base)

    images = root.get("images", ["service-a-backend:dev", "service-a-hc:dev"])
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
        raise ConfigError(f"{where}: images is {images!r}: give a list of image references, "
                          "e.g. [service-a-backend:dev, service-a-hc:dev]")

    values = _mapping(root.get("haproxy_values", {}), "haproxy_values", where)
    from .haproxy_config import haproxy_values_doc  # the configs' variables (docs/contracts.md)

    known = haproxy_values_doc()
    for key, value in values.items():
        if not _GTNB_VAR.match(str(key)):
            raise ConfigError(f"{where}: haproxy_values key {key!r} is not a GTNB_* name: the "
                              "HAProxy configs read only ${GTNB_*} variables (e.g. GTNB_FRONTEND_ADDR)")
        if key not in known:
            raise ConfigError(f"{where}: haproxy_values.{key} is not a variable of the HAProxy configs: "
                              f"use one of {', '.join(sorted(known))}")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: haproxy_values.{key} is {value!r}: give a string or number")

    return HomelabProfile(
        path=path,
        kube=kube,
        balancer=balancer,
        frontend=frontend,
        nodes=nodes,
        node_sudo=_bool(n, "sudo", "nodes", where, True),
        images=tuple(images),
        haproxy_values={str(k): str(v) for k, v in values.items()},
    )


def ensure_no_secrets(data: Any, *, where: str, prefix: str = "") -> None:
    """Refuse any key that looks like a secret, anywhere in the document."""
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if str(key).lower() in SECRET_KEYS:
                raise ConfigError(f"{where}: {dotted} looks like a secret: {_SECRET_HINT}")
            ensure_no_secrets(value, where=where, prefix=f"{dotted}.")
    elif isinstance(data, list):
        for i, item in enumerate(data):
            ensure_no_secrets(item, where=where, prefix=f"{prefix}{i}.")


def ensure_reload_command(command: str, *, where: str = "profile") -> str:
    """Return `command` if it reloads HAProxy; refuse anything that restarts or stops it.

    Parameters:
        command: the shell command run on the HAProxy node after a config is installed.
        where: the profile, for the message.

    Returns:
        The command unchanged.
    """
    fix = ("use `systemctl reload haproxy` (or a master-socket `reload`, or `kill -USR2 <master pid>`): "
           "a restart drops every connection, the control plane's 6443 frontend included")
    if not command.strip():
        raise ConfigError(f"{where}: balancer.reload_command is empty: {fix}")
    try:
        tokens = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"{where}: balancer.reload_command {command!r} is not valid shell: {exc}") from exc
    words = [w for t in tokens for w in re.split(r"[;&|()]+", t) if w]
    if any(_STOPPING.search(w) for w in words):
        raise ConfigError(f"{where}: balancer.reload_command {command!r} restarts or stops HAProxy: {fix}")
    for i, w in enumerate(words):
        if w == "kill":
            if not any(a.upper() in _RELOAD_SIGNALS for a in words[i + 1:i + 3]):  # `-USR2` or `-s USR2`
                raise ConfigError(f"{where}: balancer.reload_command {command!r} sends a signal that stops "
                                  f"HAProxy: {fix}")
    return command


# --- field helpers: each names the field, the value and the fix ---------------------------------


def _ssh(raw: Any, name: str, where: str, base: Path) -> SshHost:
    if isinstance(raw, str):
        raw = {"host": raw}
    s = _mapping(raw, name, where)
    _known(s, {"host", "user", "port", "jump", "identity_file", "ssh_config", "known_hosts",
               "accept_unknown_host_keys"}, f"{name}.", where)
    host = _str(s, "host", name, where, None, required=True)
    port = _port(s["port"], f"{name}.port", where) if "port" in s else None
    identity = s.get("identity_file")
    if identity is not None and not Path(str(identity)).expanduser().is_file():
        raise ConfigError(f"{where}: {name}.identity_file {str(identity)!r} does not exist: point it at "
                          "your private key file, or drop it and load the key into ssh-agent")
    cfg = s.get("ssh_config")
    return resolve_ssh_host(
        host,
        user=_str(s, "user", name, where, None),
        port=port,
        jump=_str(s, "jump", name, where, None),
        identity_file=str(Path(str(identity)).expanduser()) if identity else None,
        ssh_config=_path(str(cfg), base) if cfg else None,
        known_hosts=_path(str(s["known_hosts"]), base) if s.get("known_hosts") else None,
        accept_unknown_host_keys=_bool(s, "accept_unknown_host_keys", name, where, False),
    )


def _mapping(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name} must be a mapping (key: value lines), got {value!r}")
    return value


def _known(d: dict[str, Any], allowed: set[str], prefix: str, where: str) -> None:
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {prefix}{key}: the known keys are "
                              f"{', '.join(sorted(allowed))} (see profiles/homelab.example.yaml)")


def _str(d: dict[str, Any], key: str, section: str, where: str, default: str | None,
         *, required: bool = False) -> Any:
    if key not in d or d[key] is None:
        if required:
            raise ConfigError(f"{where}: {section}.{key} is missing: set it (see profiles/homelab.example.yaml)")
        return default
    value = d[key]
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value).strip() == "":
        raise ConfigError(f"{where}: {section}.{key} is {value!r}: give a non-empty string")
    return str(value)


def _bool(d: dict[str, Any], key: str, section: str, where: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {section}.{key} is {value!r}: write true or false")
    return value


def _positive(d: dict[str, Any], key: str, section: str, where: str, default: float) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: {section}.{key} is {value!r}: give a positive number of seconds")
    return float(value)


def _port(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: {name} is {value!r}: give a TCP port number 1..65535")
    return value


def _abs(d: dict[str, Any], key: str, section: str, where: str, default: str) -> str:
    value = _str(d, key, section, where, default)
    if not str(value).startswith("/"):
        raise ConfigError(f"{where}: {section}.{key} is {value!r}: give an absolute path on the HAProxy node")
    return str(value)


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    # Profiles live in profiles/; repo paths like haproxy/certs/ca.pem are meant from the repo root.
    for root in (base, base.parent):
        if (root / p).exists():
            return (root / p).resolve()
    return (base.parent / p).resolve() if base.name == "profiles" else (base / p).resolve()
