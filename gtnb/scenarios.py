"""S1..S4 as data, their parameters validated, and `run()`: the seed's one loop.

    toggle -> set replicas -> start collectors -> start traffic -> termination event
           -> wait for traffic -> wait for the pod to go -> stop collectors -> write artifacts

Each scenario is a termination event x a request shape x a replica count, with the seed's
defaults; every value can be overridden (`duration_s=8, kill_after_s=2`) so tests run in seconds.
The loop itself lives in `run_loop.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .vocabulary import MODES, ensure_scenario_name
from .vocabulary import ensure_mode as _ensure_mode_name  # this module's ensure_mode adds the scenario's modes

__all__ = [
    "MODES",
    "Scenario",
    "SCENARIOS",
    "ensure_scenario",
    "ensure_mode",
    "ensure_params",
    "run",
]

# Parameters every scenario takes, with their defaults.
_COMMON: dict[str, Any] = {
    "stat_interval_s": 0.2,  # show stat sampling period
    "ready_timeout_s": 180.0,  # toggle + scale: how long the lab may take to be ready
    "pod_gone_timeout_s": 240.0,  # after the traffic: how long the killed pod may take to go
    "timeout_margin_s": 30.0,  # a request may take this much longer than duration_s
}


@dataclass(frozen=True)
class Scenario:
    """One row of the seed's scenario table.

    Attributes:
        name: S1..S4.
        title: what it shows, in words.
        event: `delete_pod` (the pod serving the traffic) or `rollout_restart`.
        shape: `long_request`, `stream` or `load`.
        modes: the modes it runs in.
        defaults: its parameters and their default values.
    """

    name: str
    title: str
    event: str
    shape: str
    modes: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        return {**self.defaults, **_COMMON}


SCENARIOS: dict[str, Scenario] = {
    "S1": Scenario(
        "S1", "one long request while its pod is deleted", "delete_pod", "long_request", MODES,
        {"duration_s": 60.0, "kill_after_s": 5.0, "grace_period_s": 210.0, "replicas": 1, "http2": False},
    ),
    "S2": Scenario(
        "S2", "S1 in improved mode, to time the hc drain FSM", "delete_pod", "long_request", ("improved",),
        {"duration_s": 60.0, "kill_after_s": 5.0, "grace_period_s": 210.0, "replicas": 1, "http2": False},
    ),
    "S3": Scenario(
        "S3", "N clients in a loop during a rollout restart", "rollout_restart", "load", MODES,
        {"duration_s": 90.0, "kill_after_s": 10.0, "workers": 10, "replicas": 2, "path": "/fast",
         "keepalive": False, "http2": False},
    ),
    "S4": Scenario(
        "S4", "an HTTP/2 stream while its pod is deleted", "delete_pod", "stream", MODES,
        {"duration_s": 60.0, "kill_after_s": 8.0, "grace_period_s": 210.0, "interval_s": 1.0,
         "replicas": 1, "http2": True},
    ),
}  # fmt: skip


def ensure_scenario(name: str) -> Scenario:
    """The scenario called `name` (case-insensitive), or ConfigError listing the scenarios."""
    return SCENARIOS[ensure_scenario_name(name)]


def ensure_mode(mode: str, scenario: Scenario | None = None) -> str:
    """`mode` if it is a mode (and one the scenario runs in), else ConfigError."""
    _ensure_mode_name(mode)
    if scenario is not None and mode not in scenario.modes:
        raise ConfigError(
            f"{scenario.name} runs in {' or '.join(scenario.modes)} mode only, not {mode}: "
            f"use S1 for the {mode} side"
        )
    return mode


def _number(name: str, value: Any, *, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not a number: give seconds as a number, e.g. {name}=5")
    if value < low or (low_open and value == low) or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ConfigError(f"{name}={value:g} is out of range: it must be {bound} and <= {high:g}")
    return float(value)


def ensure_params(scenario: Scenario, params: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `params` over the scenario's defaults and validate every value.

    Parameters:
        scenario: the scenario.
        params: overrides (`duration_s`, `kill_after_s`, `grace_period_s`, `workers`, ...).

    Returns:
        The complete, validated parameters. Raises ConfigError naming the parameter and the
        allowed values.
    """
    allowed = scenario.parameters()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)} {'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
            f"of {scenario.name}; it takes: {', '.join(sorted(allowed))}"
        )
    p = {**allowed, **{k: v for k, v in params.items() if v is not None}}
    p["duration_s"] = _number("duration_s", p["duration_s"], low=0, high=3600, low_open=True)
    p["kill_after_s"] = _number("kill_after_s", p["kill_after_s"], low=0, high=3600)
    if p["kill_after_s"] >= p["duration_s"]:
        raise ConfigError(
            f"kill_after_s={p['kill_after_s']:g} must be shorter than duration_s={p['duration_s']:g}: "
            "the traffic has to be in flight when the termination event comes"
        )
    for name in ("stat_interval_s",):
        p[name] = _number(name, p[name], low=0.02, high=60)
    for name in ("ready_timeout_s", "pod_gone_timeout_s", "timeout_margin_s"):
        p[name] = _number(name, p[name], low=0, high=3600, low_open=True)
    if "grace_period_s" in p:
        p["grace_period_s"] = _number("grace_period_s", p["grace_period_s"], low=0, high=3600)
    if "interval_s" in p:
        p["interval_s"] = _number("interval_s", p["interval_s"], low=0.01, high=p["duration_s"])
    if "workers" in p:
        w = p["workers"]
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 500:
            raise ConfigError(f"workers={w!r} must be a whole number from 1 to 500")
    r = p["replicas"]
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 3:
        raise ConfigError(f"replicas={r!r} must be 1, 2 or 3 (one IGW pod per node, three nodes)")
    for name in ("http2", "keepalive"):
        if name in p and not isinstance(p[name], bool):
            raise ConfigError(f"{name}={p[name]!r} must be true or false")
    if "path" in p and not (isinstance(p["path"], str) and p["path"].startswith("/")):
        raise ConfigError(f"path={p['path']!r} must start with '/', e.g. /fast")
    return p


def run(
    scenario: str,
    mode: str,
    target: str = "local",
    *,
    profile: str | Path | None = None,
    state_dir: str | Path | None = None,
    artifacts: str | Path | None = None,
    progress: bool = True,
    **params: Any,
) -> Path:
    """Run one scenario in one mode and return its run directory.

    Parameters:
        scenario: S1..S4.
        mode: current | improved.
        target: local (default) | homelab.
        profile: lab profile file (homelab).
        state_dir: the local lab's state directory.
        artifacts: artifacts root (default `<repo>/artifacts`).
        progress: show tqdm progress and narrate the run on stderr.
        **params: overrides of the scenario's parameters (`duration_s`, `kill_after_s`, ...).
            S3's `path` (default `/fast`, as the seed) is what each worker requests: current
            mode's shutdown-sessions cuts only sessions attached at the DOWN instant, so a
            request that holds its session (`/sleep?seconds=0.2`) makes the cuts all but certain.

    Returns:
        The run directory. On an error or Ctrl-C the directory keeps what was written, run.json
        says `failed`/`aborted` and at which step, the lab gets its mode and replicas back, and
        the exception propagates.
    """
    from .run_loop import execute

    sc = ensure_scenario(scenario)
    ensure_mode(mode, sc)
    resolved = ensure_params(sc, params)
    return execute(sc, mode, resolved, target=target, profile=profile, state_dir=state_dir,
                   artifacts=artifacts, progress=progress)
