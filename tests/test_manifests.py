"""manifests/*.yaml and gtnb.manifests: offline validation against Kubernetes 1.30 schemas, the
two IGW modes differing only where the mode is about, and load_igw_spec on the real files and on
one tiny broken manifest per failure mode."""

from __future__ import annotations

import copy
import hashlib
import socket
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gtnb.errors import ConfigError
from gtnb.haproxy_config import haproxy_config_path
from gtnb.manifests import HttpGetHook, load_igw_spec, manifest_path, manifest_sha256

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "manifests").glob("*.yaml"))
K8S = "1.30"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---------------------------------------------------------------- schema validation

# kubernetes-validate ships only Kubernetes' own schemas. For Istio's two kinds, a strict subset
# of their CRD schemas (field names from networking.istio.io's Gateway and VirtualService):
# unknown or mistyped fields fail.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STRS = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_ISTIO_SCHEMAS: dict[str, dict[str, Any]] = {
    "Gateway": {
        "type": "object",
        "additionalProperties": False,
        "required": ["servers"],
        "properties": {
            "selector": _STR_MAP,
            "servers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["port", "hosts"],
                    "properties": {
                        "port": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["number", "protocol", "name"],
                            "properties": {
                                "number": _PORT,
                                "protocol": {"enum": ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]},
                                "name": {"type": "string"},
                                "targetPort": _PORT,
                            },
                        },
                        "hosts": _STRS,
                        "bind": {"type": "string"},
                        "name": {"type": "string"},
                        "tls": {"type": "object"},
                        "defaultEndpoint": {"type": "string"},
                    },
                },
            },
        },
    },
    "VirtualService": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "hosts": _STRS,
            "gateways": _STRS,
            "exportTo": _STRS,
            "tcp": {"type": "array"},
            "tls": {"type": "array"},
            "http": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "match": {"type": "array"},
                        "timeout": {"type": "string", "pattern": r"^\d+(\.\d+)?s$"},
                        "retries": {"type": "object"},
                        "headers": {"type": "object"},
                        "route": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["destination"],
                                "properties": {
                                    "weight": {"type": "integer"},
                                    "headers": {"type": "object"},
                                    "destination": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["host"],
                                        "properties": {
                                            "host": {"type": "string"},
                                            "subset": {"type": "string"},
                                            "port": {
                                                "type": "object",
                                                "additionalProperties": False,
                                                "properties": {"number": _PORT},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _validate(doc: dict[str, Any]) -> None:
    """Validate one object: Kubernetes kinds strictly against 1.30, Istio kinds against the subset."""
    if doc.get("apiVersion", "").startswith("networking.istio.io/"):
        assert doc["apiVersion"] in ("networking.istio.io/v1beta1", "networking.istio.io/v1")
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        assert isinstance(doc["metadata"]["name"], str) and doc["metadata"]["namespace"] == "service-a"
        jsonschema.validate(doc["spec"], _ISTIO_SCHEMAS[doc["kind"]])
        return
    assert kubernetes_validate.validate(doc, K8S, strict=True) == K8S


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a non-local socket fails the test: validation must work offline."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(("127.", "::1")):
            raise AssertionError(f"network access during validation: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_all_five_manifests_exist() -> None:
    names = [p.name for p in MANIFESTS]
    assert names == ["00-namespace.yaml", "10-backend.yaml", "20-igw-current.yaml", "21-igw-improved.yaml", "30-gateway.yaml"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_offline_against_kubernetes_1_30(path: Path, no_network: None) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSecond=30), "terminationGracePeriodSecond"),
        (lambda d: d["spec"].update(replicas="2"), "'2' is not of type 'integer'"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(lifecycle={"preStop": {"httpget": {}}}), "httpget"),
    ],
)
def test_validation_catches_typos_and_wrong_types(mutate: Any, words: str) -> None:
    doc = _docs(manifest_path("improved"))[0]
    mutate(doc)
    with pytest.raises(kubernetes_validate.ValidationError) as err:
        _validate(doc)
    assert words in str(err.value.message)


def test_istio_subset_schema_catches_typos() -> None:
    gw, vs = _docs(REPO / "manifests" / "30-gateway.yaml")
    gw["spec"]["servers"][0]["port"]["numbr"] = 8080
    with pytest.raises(jsonschema.ValidationError, match="numbr"):
        _validate(gw)
    vs["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = "8080"
    with pytest.raises(jsonschema.ValidationError):
        _validate(vs)


# ---------------------------------------------------------------- current vs improved

_ALLOWED_DIFF = {
    ("metadata", "labels", "mode"),
    ("spec", "template", "metadata", "labels", "mode"),
    ("spec", "template", "metadata", "annotations", "proxy.istio.io/config"),
    ("spec", "template", "spec", "terminationGracePeriodSeconds"),
    ("spec", "template", "spec", "containers", "[istio-proxy]", "lifecycle"),
    ("spec", "template", "spec", "containers", "[hc]", "lifecycle"),
}


def _diff(a: Any, b: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths where two YAML trees differ; lists of named items are matched by `name`."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[tuple[str, ...]] = set()
        for key in set(a) | set(b):
            if key not in a or key not in b:
                out.add((*path, str(key)))
            else:
                out |= _diff(a[key], b[key], (*path, str(key)))
        return out
    named = lambda xs: isinstance(xs, list) and all(isinstance(x, dict) and "name" in x for x in xs)  # noqa: E731
    if named(a) and named(b) and a and b:
        return _diff({f"[{x['name']}]": x for x in a}, {f"[{x['name']}]": x for x in b}, path)
    return set() if a == b else {path}


def test_igw_modes_differ_only_where_the_mode_is_about() -> None:
    (current,), (improved,) = _docs(manifest_path("current")), _docs(manifest_path("improved"))
    differing = _diff(current, improved)
    assert differing - _ALLOWED_DIFF == set()
    # And they do differ in each of those places: otherwise one mode is not what it says.
    assert differing == _ALLOWED_DIFF


def test_diff_helper_sees_a_change_outside_the_allowed_paths() -> None:
    (current,) = _docs(manifest_path("current"))
    changed = copy.deepcopy(current)
    changed["spec"]["template"]["spec"]["containers"][1]["env"][3]["value"] = "9"
    assert _diff(current, changed) == {
        ("spec", "template", "spec", "containers", "[hc]", "env", "[HC_DOWN_WAIT_S]", "value")
    }


# ---------------------------------------------------------------- load_igw_spec on the real files


def test_current_is_istio_defaults() -> None:
    spec = load_igw_spec(manifest_path("current"))
    assert (spec.name, spec.namespace, spec.mode) == ("service-a-igw", "service-a", "current")
    assert spec.termination_grace_period_s == 30
    assert [c.pre_stop for c in spec.containers] == [None, None]
    assert spec.proxy.termination_drain_s == 5.0 and not spec.proxy.exit_on_zero_active_connections
    assert spec.agent_env == {
        "TERMINATION_DRAIN_DURATION": "5s",
        "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "false",
        "MINIMUM_DRAIN_DURATION": "5s",
    }


def test_improved_hooks_both_containers_and_exits_on_zero() -> None:
    spec = load_igw_spec(manifest_path("improved"))
    assert spec.mode == "improved" and spec.labels["mode"] == "improved"
    assert spec.termination_grace_period_s == 210
    hooks = {c.name: c.pre_stop for c in spec.containers}
    # The hc's hook names its port ("hc"); it resolves to the same 15080 the proxy's hook uses.
    assert hooks == {"istio-proxy": HttpGetHook("/prestop", 15080), "hc": HttpGetHook("/prestop", 15080)}
    assert spec.proxy.exit_on_zero_active_connections and spec.proxy.minimum_drain_s == 1.0
    env = spec.agent_env
    assert env["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true" and env["MINIMUM_DRAIN_DURATION"] == "1s"
    # The hc drain must fit the grace period: DOWN wait + drain timeout < grace.
    hc = spec.container("hc").env
    assert float(hc["HC_DOWN_WAIT_S"]) + float(hc["HC_DRAIN_TIMEOUT_S"]) < spec.termination_grace_period_s


@pytest.mark.parametrize("mode", ["current", "improved"])
def test_shared_shape_of_both_modes(mode: str) -> None:
    spec = load_igw_spec(manifest_path(mode))
    assert (spec.max_surge, spec.max_unavailable, spec.strategy_type) == (1, 0, "RollingUpdate")
    assert spec.anti_affinity_hostname_required and spec.anti_affinity
    proxy, hc = spec.container("istio-proxy"), spec.container("hc")
    assert proxy.image == "auto" and hc.image == "service-a-hc:dev"
    assert {(p.container_port, p.host_port) for p in proxy.ports} == {(8080, 8080), (15021, None)}
    assert [(p.container_port, p.host_port) for p in hc.ports] == [(15080, 15080)]
    assert hc.env_fields == {"POD_NAME": "metadata.name"}
    assert "POD_NAME" not in hc.env  # the lab sets the pod name itself
    assert hc.env["ENVOY_ADMIN_URL"] == "http://127.0.0.1:15000"
    assert {"HC_DOWN_WAIT_S", "HC_DOWN_AFTER_CHECKS", "HC_POLL_INTERVAL_S", "HC_DRAIN_TIMEOUT_S"} <= set(hc.env)
    (doc,) = _docs(manifest_path(mode))
    tpl = doc["spec"]["template"]
    assert tpl["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway"
    assert tpl["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert "mode" not in doc["spec"]["selector"]["matchLabels"]  # immutable: both modes are one Deployment
    assert {v["name"] for v in tpl["spec"]["volumes"]} == {"workload-socket", "credential-socket", "workload-certs"}


@pytest.mark.parametrize("mode", ["current", "improved"])
def test_haproxy_checks_the_ports_the_manifest_exposes(mode: str) -> None:
    spec = load_igw_spec(manifest_path(mode))
    cfg = haproxy_config_path(mode).read_text()
    envoy_port = spec.container("istio-proxy").port("http")
    hc_port = spec.container("hc").port("hc")
    assert f"check port {hc_port} " in cfg
    for node in ("MASTER1", "WORKER1", "WORKER2"):
        assert f'"${{GTNB_{node}_ADDR}}:{envoy_port}"' in cfg


def test_manifest_sha256(tmp_path: Path) -> None:
    path = manifest_path("improved")
    assert manifest_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    copy_ = tmp_path / "m.yaml"
    copy_.write_bytes(path.read_bytes() + b"\n# edited\n")
    assert manifest_sha256(copy_) != manifest_sha256(path)
    with pytest.raises(ConfigError, match="cannot read manifest"):
        manifest_sha256(tmp_path / "missing.yaml")


def test_unknown_mode_has_no_manifest() -> None:
    with pytest.raises(ConfigError, match="'fast' is not one of current, improved"):
        manifest_path("fast")


# ---------------------------------------------------------------- the workloads read what the manifests set


@pytest.mark.parametrize("mode", ["current", "improved"])
def test_hc_reads_the_manifest_env(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gtnb.workloads.hc import parse_args

    hc = load_igw_spec(manifest_path(mode)).container("hc")
    for key, value in hc.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POD_NAME", "service-a-igw-abc-xyz")  # what the downward API gives
    settings = parse_args([])
    t = settings.timings
    assert (t.down_wait_s, t.down_after_checks, t.poll_interval_s, t.drain_timeout_s) == (
        float(hc.env["HC_DOWN_WAIT_S"]),
        int(hc.env["HC_DOWN_AFTER_CHECKS"]),
        float(hc.env["HC_POLL_INTERVAL_S"]),
        float(hc.env["HC_DRAIN_TIMEOUT_S"]),
    )
    assert settings.pod == "service-a-igw-abc-xyz"


@pytest.mark.parametrize("mode", ["current", "improved"])
def test_agent_reads_the_manifest_proxy_config(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gtnb.workloads.agent import parse_args

    spec = load_igw_spec(manifest_path(mode))
    for key, value in spec.agent_env.items():
        monkeypatch.setenv(key, value)
    settings = parse_args([])
    assert settings.termination_drain_s == spec.proxy.termination_drain_s
    assert settings.exit_on_zero is spec.proxy.exit_on_zero_active_connections
    assert settings.minimum_drain_s == spec.proxy.minimum_drain_s
