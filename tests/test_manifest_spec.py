"""gtnb.manifests.load_igw_spec on tiny manifests: one per failure mode (each error names the file,
the field and the fix), Kubernetes' strategy arithmetic, Istio's defaults, and the field grammars."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gtnb.errors import ConfigError
from gtnb.manifest_fields import parse_go_bool, parse_go_duration, parse_proto_duration, selector_matches
from gtnb.manifests import ExecHook, HttpGetHook, load_igw_spec

# The smallest IGW Deployment load_igw_spec accepts.
TINY: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "igw", "namespace": "ns"},
    "spec": {
        "selector": {"matchLabels": {"app": "igw"}},
        "template": {
            "metadata": {"labels": {"app": "igw", "mode": "improved"}},
            "spec": {
                "containers": [
                    {"name": "istio-proxy", "image": "auto"},
                    {"name": "hc", "image": "hc", "ports": [{"name": "hc", "containerPort": 15080}]},
                ]
            },
        },
    },
}


def _write(tmp_path: Path, doc: Any, name: str = "igw.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump_all(doc if isinstance(doc, list) else [doc]))
    return path


def _tiny(change: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(TINY)
    if change:
        change(doc)
    return doc


def _tpl(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]


def _container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in _tpl(doc)["spec"]["containers"] if c["name"] == name)


def _proxy_config(text: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: _tpl(d)["metadata"].setdefault("annotations", {}).update({"proxy.istio.io/config": text})


def _pre_stop(name: str, hook: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda d: _container(d, name).update(lifecycle={"preStop": hook})


def _rolling(surge: Any, unavailable: Any, replicas: int | None = None) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
        if replicas is not None:
            d["spec"]["replicas"] = replicas

    return change


# ---------------------------------------------------------------- one tiny manifest per failure mode

FAILURES: list[tuple[str, Any, str, str]] = [
    # (id, document or change, field named in the message, words of the fix)
    ("not-yaml", "kind: Deployment\n  spec: [", "not valid YAML", "fix the syntax"),
    ("no-deployment", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}, "no Deployment", "service-a-igw Deployment"),
    ("two-deployments", [TINY, TINY], "2 Deployments", "exactly one"),
    ("old-apiversion", lambda d: d.update(apiVersion="extensions/v1beta1"), "apiVersion", "use apps/v1"),
    ("no-mode-label", lambda d: _tpl(d)["metadata"]["labels"].pop("mode"), "labels.mode: missing", "mode: improved"),
    ("bad-mode-label", lambda d: _tpl(d)["metadata"]["labels"].update(mode="fast"), "'fast' is not one of current, improved", "use one of those"),
    ("mode-mismatch", lambda d: d["metadata"].update(labels={"mode": "current"}), "metadata.labels.mode", "make them the same"),
    ("negative-replicas", lambda d: d["spec"].update(replicas=-1), "spec.replicas", "plain integer"),
    ("string-grace", lambda d: _tpl(d)["spec"].update(terminationGracePeriodSeconds="210"), "terminationGracePeriodSeconds", "plain integer"),
    ("bad-surge", _rolling("one", 0), "maxSurge", "1 or 25%"),
    ("both-zero", _rolling(0, "0%"), "both 0", "one of them >= 1"),
    ("bad-strategy", lambda d: d["spec"].update(strategy={"type": "BlueGreen"}), "spec.strategy.type", "RollingUpdate or Recreate"),
    ("no-hc", lambda d: _tpl(d)["spec"]["containers"].pop(), "no 'hc' container", "istio-proxy"),
    ("no-proxy", lambda d: _tpl(d)["spec"]["containers"].pop(0), "no 'istio-proxy' container", "gateway injection"),
    ("unnamed-container", lambda d: _tpl(d)["spec"]["containers"][0].pop("name"), "containers[0].name", "give every container a name"),
    ("unquoted-env", lambda d: _container(d, "hc").update(env=[{"name": "HC_DOWN_WAIT_S", "value": 4}]), "env.HC_DOWN_WAIT_S", 'value: "4"'),
    ("named-port-missing", _pre_stop("istio-proxy", {"httpGet": {"path": "/prestop", "port": "hc"}}), "preStop.httpGet.port", "add a port named 'hc' to 'istio-proxy'"),
    ("port-out-of-range", _pre_stop("hc", {"httpGet": {"path": "/prestop", "port": 70000}}), "httpGet.port", "1..65535"),
    ("sleep-hook", _pre_stop("hc", {"sleep": {"seconds": 5}}), "lifecycle.preStop", "httpGet or exec"),
    ("two-handlers", _pre_stop("hc", {"exec": {"command": ["x"]}, "httpGet": {"port": 1}}), "lifecycle.preStop", "exactly one"),
    ("empty-exec", _pre_stop("hc", {"exec": {"command": []}}), "exec.command", "list of words"),
    ("drain-no-unit", _proxy_config("terminationDrainDuration: 5\n"), "terminationDrainDuration", "like 5s"),
    ("drain-minutes", _proxy_config("terminationDrainDuration: 1m\n"), "terminationDrainDuration", "like 5s"),
    ("config-not-yaml", _proxy_config("terminationDrainDuration: [5s\n"), "proxy.istio.io/config", "fix the ProxyConfig"),
    ("config-not-mapping", _proxy_config("just words\n"), "proxy.istio.io/config", "as a mapping"),
    ("metadata-unquoted", _proxy_config("proxyMetadata:\n  EXIT_ON_ZERO_ACTIVE_CONNECTIONS: true\n"), "EXIT_ON_ZERO_ACTIVE_CONNECTIONS", '"true"'),
    ("exit-on-zero-yes", _proxy_config("proxyMetadata:\n  EXIT_ON_ZERO_ACTIVE_CONNECTIONS: 'yes'\n"), "EXIT_ON_ZERO_ACTIVE_CONNECTIONS", '"true" or "false"'),
    ("min-drain-words", _proxy_config("proxyMetadata:\n  MINIMUM_DRAIN_DURATION: '1 second'\n"), "MINIMUM_DRAIN_DURATION", '"500ms"'),
    ("labels-not-mapping", lambda d: _tpl(d)["metadata"].update(labels=["app=igw"]), "spec.template.metadata.labels", "mapping"),
]


@pytest.mark.parametrize(("doc", "field", "fix"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_failure_mode_names_file_field_and_fix(tmp_path: Path, doc: Any, field: str, fix: str) -> None:
    path = _write(tmp_path, _tiny(doc) if callable(doc) else doc)
    with pytest.raises(ConfigError) as err:
        load_igw_spec(path)
    msg = str(err.value)
    assert str(path) in msg
    assert field in msg
    assert fix in msg


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read manifest .*nope.yaml"):
        load_igw_spec(tmp_path / "nope.yaml")


def test_tiny_manifest_gets_kubernetes_and_istio_defaults(tmp_path: Path) -> None:
    spec = load_igw_spec(_write(tmp_path, _tiny()))
    assert spec.replicas == 1 and spec.termination_grace_period_s == 30
    # No strategy: RollingUpdate 25%/25% of 1 replica -> surge 1 (rounded up), unavailable 0 (down).
    assert (spec.strategy_type, spec.max_surge, spec.max_unavailable) == ("RollingUpdate", 1, 0)
    assert not spec.anti_affinity_hostname_required
    assert not spec.proxy.annotated and spec.proxy.termination_drain_s == 5.0
    assert spec.agent_env == {
        "TERMINATION_DRAIN_DURATION": "5s",
        "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "false",
        "MINIMUM_DRAIN_DURATION": "5s",
    }


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "expected"),
    [
        ("25%", "25%", 4, (1, 1)),
        ("50%", "50%", 3, (2, 1)),  # 1.5 -> surge up, unavailable down
        ("10%", "10%", 1, (1, 0)),
        ("0%", "10%", 1, (0, 1)),  # both resolve to 0: the controller lets one go
        (2, 0, 5, (2, 0)),
    ],
)
def test_strategy_resolved_like_kubernetes(
    tmp_path: Path, surge: Any, unavailable: Any, replicas: int, expected: tuple[int, int]
) -> None:
    spec = load_igw_spec(_write(tmp_path, _tiny(_rolling(surge, unavailable, replicas))))
    assert (spec.max_surge, spec.max_unavailable) == expected


def test_recreate_strategy(tmp_path: Path) -> None:
    spec = load_igw_spec(_write(tmp_path, _tiny(lambda d: d["spec"].update(replicas=3, strategy={"type": "Recreate"}))))
    assert (spec.strategy_type, spec.max_surge, spec.max_unavailable) == ("Recreate", 0, 3)


def test_hooks_exec_and_http_with_host(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        _pre_stop("istio-proxy", {"exec": {"command": ["sleep", 5]}})(d)
        _pre_stop("hc", {"httpGet": {"path": "/prestop", "port": "hc", "host": "127.0.0.1"}})(d)

    spec = load_igw_spec(_write(tmp_path, _tiny(change)))
    assert spec.container("istio-proxy").pre_stop == ExecHook(("sleep", "5"))
    assert spec.container("hc").pre_stop == HttpGetHook("/prestop", 15080, host="127.0.0.1")
    assert spec.container("hc").pre_stop.kind == "httpGet"  # what the local lab's kubelet dispatches on


def test_container_env_overrides_proxy_metadata(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        _proxy_config("terminationDrainDuration: 2.5s\nproxyMetadata:\n  EXIT_ON_ZERO_ACTIVE_CONNECTIONS: 'true'\n  OTHER: x\n")(d)
        _container(d, "istio-proxy")["env"] = [{"name": "MINIMUM_DRAIN_DURATION", "value": "1500ms"}]

    env = load_igw_spec(_write(tmp_path, _tiny(change))).agent_env
    assert env == {
        "TERMINATION_DRAIN_DURATION": "2.5s",
        "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true",
        "MINIMUM_DRAIN_DURATION": "1.5s",
        "OTHER": "x",
    }


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"matchLabels": {"app": "igw"}}, True),
        ({"matchLabels": {"app": "other"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["igw", "x"]}]}, True),
        ({"matchExpressions": [{"key": "mode", "operator": "DoesNotExist"}]}, False),
        (None, False),  # a null selector selects nothing
    ],
)
def test_anti_affinity_must_select_the_pod_itself(tmp_path: Path, selector: Any, expected: bool) -> None:
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": selector}
    affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    spec = load_igw_spec(_write(tmp_path, _tiny(lambda d: _tpl(d)["spec"].update(affinity=affinity))))
    assert spec.anti_affinity_hostname_required is expected


def test_anti_affinity_on_another_topology_is_not_per_node(tmp_path: Path) -> None:
    term = {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"app": "igw"}}}
    affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    spec = load_igw_spec(_write(tmp_path, _tiny(lambda d: _tpl(d)["spec"].update(affinity=affinity))))
    assert not spec.anti_affinity_hostname_required


# ---------------------------------------------------------------- grammars


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("2.5s", 2.5), ("0s", 0.0), ("210s", 210.0)])
def test_proto_duration(text: str, seconds: float) -> None:
    assert parse_proto_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "1m", "500ms", "-1s", "s", 5, "5 s"])
def test_proto_duration_refuses(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_proto_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5h", 5400.0), ("0", 0.0), ("250us", 0.00025)]
)
def test_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1 s", "-1s", "1d", "s", "1s2"])
def test_go_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_go_bool() -> None:
    assert [parse_go_bool(v) for v in ("true", "True", "1", "t", "false", "0", "F")] == [True] * 4 + [False] * 3
    with pytest.raises(ValueError):
        parse_go_bool("yes")


def test_selector_operators() -> None:
    labels = {"app": "igw", "mode": "current"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchExpressions": [{"key": "mode", "operator": "NotIn", "values": ["improved"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}, labels)
