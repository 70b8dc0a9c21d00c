"""Homelab profile: the example loads, ~/.ssh/config (ProxyJump included) is honoured, and every
failure mode gets its own tiny profile and a message naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gtnb.config import ensure_reload_command, load_profile, resolve_ssh_host
from gtnb.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {
    "kube": {"context": "homelab"},
    "balancer": {"ssh": {"host": "203.0.113.211", "user": "jinsoo"}},
    "frontend": {"host": "203.0.113.211"},
}


def _write(tmp_path: Path, doc: dict, name: str = "homelab.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


def _with(path: list[str], value: object) -> dict:
    """MINIMAL with one nested key set (a copy)."""
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    d = doc
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value
    return doc


def test_example_profile_loads_with_defaults_and_jump() -> None:
    p = load_profile(REPO / "profiles" / "homelab.example.yaml")
    assert p.kube.namespace == "service-a" and p.kube.deployment == "service-a-igw"
    assert p.balancer.reload_command == "systemctl reload haproxy"
    assert p.balancer.ssh.hostname == "203.0.113.211" and p.balancer.ssh.user == "jinsoo"
    assert p.balancer.ssh.jump is not None and p.balancer.ssh.jump.hostname == "homelab"
    assert set(p.nodes) == {"master1", "worker1", "worker2"}
    assert p.nodes["worker2"].hostname == "203.0.113.214" and p.nodes["worker2"].user == "jinsoo"
    assert all(k.startswith("GTNB_") for k in p.haproxy_values)
    assert p.balancer.ssh.accept_unknown_host_keys is False


def test_minimal_profile_gets_seed_defaults(tmp_path: Path) -> None:
    p = load_profile(_write(tmp_path, MINIMAL))
    assert p.balancer.admin_socket == "/run/haproxy/admin.sock"
    assert p.balancer.config_path == "/etc/haproxy/haproxy.cfg"
    assert p.frontend.port == 443 and p.frontend.sni == "example.local"
    assert p.images == ("service-a-backend:dev", "service-a-hc:dev")
    assert p.kube.deadlock_policy == "force-delete"


def test_ssh_config_alias_and_proxyjump_are_honoured(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        "Host homelab\n  HostName 198.51.100.7\n  User jump\n  Port 2202\n\n"
        "Host haproxy\n  HostName 203.0.113.211\n  User jinsoo\n  ProxyJump homelab\n"
    )
    h = resolve_ssh_host("haproxy", ssh_config=cfg)
    assert (h.hostname, h.user, h.port) == ("203.0.113.211", "jinsoo", 22)
    assert h.jump is not None and (h.jump.hostname, h.jump.user, h.jump.port) == ("198.51.100.7", "jump", 2202)
    # The profile's own values win over ssh_config, as ssh's command line does.
    h2 = resolve_ssh_host("haproxy", user="other", ssh_config=cfg)
    assert h2.user == "other"


def test_proxyjump_chain_is_resolved_hop_by_hop(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host inner\n  HostName 10.0.0.5\n  ProxyJump a@gw1:2201,b@gw2\n")
    h = resolve_ssh_host("inner", ssh_config=cfg)
    assert h.jump is not None and h.jump.hostname == "gw2" and h.jump.user == "b"
    assert h.jump.jump is not None and (h.jump.jump.hostname, h.jump.jump.port) == ("gw1", 2201)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (_with(["balancer", "ssh", "password"], "hunter2"), ["balancer.ssh.password", "ssh-agent"]),
        (_with(["balancer", "ssh", "private_key"], "-----BEGIN"), ["private_key", "identity_file"]),
        (_with(["nodes", "hosts", "w1"], {"host": "w1", "passphrase": "x"}), ["passphrase", "secret"]),
        (_with(["balancer", "reload_command"], "systemctl restart haproxy"), ["restart", "6443"]),
        (_with(["balancer", "reload_command"], "systemctl stop haproxy; systemctl start haproxy"), ["stop"]),
        (_with(["balancer", "reload_command"], "haproxy -f /etc/haproxy/haproxy.cfg -st 42"), ["-st 42"]),
        (_with(["balancer", "reload_command"], "kill -9 1234"), ["signal"]),
        (_with(["balancer", "reload_command"], "kill 1234"), ["signal"]),
        (_with(["balancer", "reload_command"], "systemctl reload-or-restart haproxy"), ["restarts"]),
        (_with(["balancer", "reload_command"], "service haproxy restart"), ["restarts"]),
        (_with(["balancer", "reload_command"], "systemctl reload haproxy||systemctl restart haproxy"), ["restarts"]),
        (_with(["balancer", "admin_socket"], "run/haproxy/admin.sock"), ["admin_socket", "absolute"]),
        (_with(["frontend", "port"], 70000), ["frontend.port", "1..65535"]),
        (_with(["balancer", "ssh", "port"], "22"), ["balancer.ssh.port", "1..65535"]),
        (_with(["kube", "deadlock_policy"], "pray"), ["deadlock_policy", "force-delete"]),
        (_with(["balancer", "sudo"], "yes"), ["balancer.sudo", "true or false"]),
        (_with(["haproxy_values", "FRONTEND_ADDR"], "x"), ["FRONTEND_ADDR", "GTNB_"]),
        (_with(["haproxy_values", "GTNB_FRONTEND_ADRR"], "x"), ["GTNB_FRONTEND_ADRR", "GTNB_FRONTEND_ADDR"]),
        (_with(["kube", "namspace"], "x"), ["kube.namspace", "namespace"]),
        (_with(["images"], []), ["images", "service-a-hc:dev"]),
        (_with(["balancer", "ssh", "identity_file"], "/nonexistent/key"), ["identity_file", "ssh-agent"]),
        ({k: v for k, v in MINIMAL.items() if k != "frontend"}, ["frontend", "mapping"]),
        (_with(["frontend", "host"], None), ["frontend.host is missing"]),
        (_with(["kube", "rollout_timeout_s"], -1), ["rollout_timeout_s", "positive"]),
    ],
)
def test_each_failure_mode_names_field_and_fix(tmp_path: Path, doc: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(_write(tmp_path, doc))
    for w in words:
        assert w in str(info.value), str(info.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="homelab.example.yaml"):
        load_profile(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kube: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(bad)


@pytest.mark.parametrize(
    "command",
    [
        "systemctl reload haproxy",
        "sudo systemctl reload haproxy.service",
        "kill -USR2 $(cat /run/haproxy.pid)",
        "echo reload | socat stdio UNIX-CONNECT:/run/haproxy-master.sock",
        "kill -s USR2 1234",
        "kill -HUP $(cat /run/haproxy.pid)",
        "haproxy -f /etc/haproxy/haproxy.cfg -p /run/haproxy.pid -sf $(cat /run/haproxy.pid)",
    ],
)
def test_reload_commands_that_reload_are_accepted(command: str) -> None:
    assert ensure_reload_command(command) == command
