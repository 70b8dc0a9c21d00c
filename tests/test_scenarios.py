"""Scenarios: parameter validation (fast) and every scenario in both modes on the real local lab
(slow, marked `lab`): outcomes per mode, well-formed artifacts, an interrupted run, the lock."""

from __future__ import annotations

import pytest

from gtnb.errors import ConfigError
from gtnb.scenarios import SCENARIOS, ensure_mode, ensure_params, ensure_scenario

# --- scenarios as data --------------------------------------------------------------------------


def test_seed_defaults() -> None:
    s1, s3, s4 = (ensure_params(SCENARIOS[n], {}) for n in ("S1", "S3", "S4"))
    assert (s1["duration_s"], s1["kill_after_s"], s1["grace_period_s"], s1["replicas"]) == (60, 5, 210, 1)
    assert (s3["workers"], s3["duration_s"], s3["kill_after_s"], s3["replicas"]) == (10, 90, 10, 2)
    assert (s4["duration_s"], s4["interval_s"], s4["kill_after_s"], s4["http2"]) == (60, 1, 8, True)
    assert s1["http2"] is False and s3["keepalive"] is False
    assert SCENARIOS["S3"].event == "rollout_restart" and SCENARIOS["S1"].event == "delete_pod"
    assert SCENARIOS["S2"].modes == ("improved",)


def test_overrides_are_applied() -> None:
    p = ensure_params(SCENARIOS["S3"], {"duration_s": 10, "kill_after_s": 2, "workers": 3})
    assert (p["duration_s"], p["kill_after_s"], p["workers"]) == (10, 2, 3)


def test_scenario_names() -> None:
    assert ensure_scenario("s4").name == "S4"
    with pytest.raises(ConfigError, match="S5.*S1, S2, S3, S4"):
        ensure_scenario("S5")


def test_modes() -> None:
    with pytest.raises(ConfigError, match="'fixed' is not one of current, improved"):
        ensure_mode("fixed")
    with pytest.raises(ConfigError, match="S2 runs in improved mode only"):
        ensure_mode("current", SCENARIOS["S2"])
    assert ensure_mode("current", SCENARIOS["S1"]) == "current"


@pytest.mark.parametrize(
    ("scenario", "params", "message"),
    [
        ("S1", {"workers": 3}, "workers is not a parameter of S1; it takes: .*duration_s"),
        ("S1", {"duration_s": 0}, r"duration_s=0 is out of range: it must be > 0"),
        ("S1", {"duration_s": "ten"}, "duration_s='ten' is not a number"),
        ("S1", {"duration_s": 5, "kill_after_s": 5}, "kill_after_s=5 must be shorter than duration_s=5"),
        ("S1", {"grace_period_s": -1}, "grace_period_s=-1 is out of range"),
        ("S3", {"workers": 0}, "workers=0 must be a whole number from 1 to 500"),
        ("S3", {"workers": 2.5}, "workers=2.5 must be a whole number"),
        ("S3", {"replicas": 4}, "replicas=4 must be 1, 2 or 3"),
        ("S3", {"path": "fast"}, "path='fast' must start with '/'"),
        ("S4", {"interval_s": 100}, "interval_s=100 is out of range"),
        ("S4", {"http2": "yes"}, "http2='yes' must be true or false"),
        ("S1", {"stat_interval_s": 0}, "stat_interval_s=0 is out of range"),
    ],
)
def test_bad_parameters_name_the_fix(scenario: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ensure_params(SCENARIOS[scenario], params)


def test_run_validates_before_touching_any_lab(tmp_path) -> None:
    from gtnb.scenarios import run

    with pytest.raises(ConfigError, match="kill_after_s=9 must be shorter"):
        run("S1", "current", state_dir=tmp_path / "no-lab", artifacts=tmp_path, duration_s=8, kill_after_s=9)
    assert list(tmp_path.iterdir()) == []  # nothing written, no lab started
