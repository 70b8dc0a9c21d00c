"""The hc FSM on a fake clock: every transition and timing rule, no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gtnb.errors import ConfigError
from gtnb.workloads.hc_fsm import HcFsm, HcTimings, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**timings: float | int) -> tuple[HcFsm, FakeClock]:
    clock = FakeClock()
    return HcFsm(HcTimings(**timings), clock), clock  # type: ignore[arg-type]


def test_serving_answers_200_and_counts_no_failures() -> None:
    fsm, _ = make()
    assert [fsm.check() for _ in range(3)] == [200, 200, 200]
    assert fsm.state is State.SERVING and fsm.failed_checks == 0 and fsm.transitions == []


def test_prestop_goes_draining_once_and_checks_fail_from_then_on() -> None:
    fsm, clock = make()
    t = fsm.prestop()
    assert t is not None and (t.src, t.dst, t.reason, t.at) == (State.SERVING, State.DRAINING, "prestop", clock.now)
    assert fsm.prestop() is None  # idempotent: the second hook joins the same drain
    assert len(fsm.transitions) == 1
    assert fsm.check() == 503 and fsm.check() == 503
    assert fsm.failed_checks == 2 and fsm.health_code == 503


def test_fixed_down_wait_ends_on_the_timer_not_before() -> None:
    fsm, clock = make(down_wait_s=6.0, down_after_checks=0)
    fsm.prestop()
    for _ in range(10):
        fsm.check()  # checks do not matter with down_after_checks=0
    clock.advance(5.999)
    assert not fsm.down_wait_over()
    assert fsm.down_wait_remaining() == pytest.approx(0.001)
    clock.advance(0.001)
    assert fsm.down_wait_over() and fsm.down_wait_reason == "timer"
    assert fsm.down_wait_remaining() == 0.0


def test_down_after_checks_ends_the_wait_early() -> None:
    fsm, clock = make(down_wait_s=30.0, down_after_checks=3)
    fsm.prestop()
    fsm.check(), fsm.check()
    clock.advance(1.0)
    assert not fsm.down_wait_over()
    fsm.check()
    assert fsm.down_wait_over() and fsm.down_wait_reason == "checks"


def test_down_after_checks_is_bounded_by_down_wait() -> None:
    fsm, clock = make(down_wait_s=4.0, down_after_checks=3)
    fsm.prestop()
    fsm.check()  # HAProxy stopped checking (or checks slower than expected)
    clock.advance(4.0)
    assert fsm.down_wait_over() and fsm.down_wait_reason == "timer"


def test_checks_served_while_serving_do_not_count_toward_down() -> None:
    fsm, _ = make(down_wait_s=30.0, down_after_checks=2)
    fsm.check(), fsm.check(), fsm.check()
    fsm.prestop()
    assert not fsm.down_wait_over()


def test_drain_cannot_start_before_the_down_wait_is_over() -> None:
    fsm, _ = make(down_wait_s=5.0)
    with pytest.raises(RuntimeError):
        fsm.drain_started()  # still SERVING
    fsm.prestop()
    with pytest.raises(RuntimeError):
        fsm.drain_started()


def test_polls_before_the_drain_change_nothing() -> None:
    fsm, _ = make()
    fsm.prestop()
    assert fsm.poll(0) is None and fsm.state is State.DRAINING


def test_zero_active_requests_end_the_drain() -> None:
    fsm, clock = make(down_wait_s=1.0, drain_timeout_s=60.0)
    fsm.prestop()
    clock.advance(1.0)
    fsm.drain_started()
    assert fsm.poll(2) is None and fsm.poll(1) is None and not fsm.drain_done
    clock.advance(3.0)
    t = fsm.poll(0)
    assert t is not None and (t.src, t.dst, t.reason) == (State.DRAINING, State.DRAINED, "zero_active")
    assert fsm.drain_done and fsm.check() == 503
    assert fsm.poll(0) is None  # DRAINED is final until SIGTERM


def test_drain_timeout_counts_from_the_drain_call() -> None:
    fsm, clock = make(down_wait_s=10.0, drain_timeout_s=5.0)
    fsm.prestop()
    clock.advance(10.0)
    fsm.drain_started()
    clock.advance(4.9)
    assert fsm.poll(1) is None
    assert fsm.drain_remaining() == pytest.approx(0.1)
    clock.advance(0.1)
    t = fsm.poll(1)
    assert t is not None and t.reason == "timeout" and fsm.state is State.DRAINED


def test_failed_polls_also_end_in_timeout() -> None:
    fsm, clock = make(down_wait_s=0.0, down_after_checks=0, drain_timeout_s=2.0)
    fsm.prestop()
    fsm.drain_started()
    assert fsm.poll(None) is None
    clock.advance(2.0)
    t = fsm.poll(None)
    assert t is not None and t.reason == "timeout"


def test_prestop_deadline_is_down_wait_plus_drain_timeout() -> None:
    fsm, clock = make(down_wait_s=10.0, drain_timeout_s=180.0)
    assert fsm.prestop_deadline() is None
    start = clock.now
    fsm.prestop()
    assert fsm.prestop_deadline() == start + 190.0


def test_sigterm_from_serving_is_the_current_mode_path() -> None:
    fsm, _ = make()
    t = fsm.sigterm()
    assert t is not None and (t.src, t.dst, t.reason) == (State.SERVING, State.TERMINATING, "sigterm")
    assert fsm.check() == 503 and fsm.drain_done
    assert fsm.sigterm() is None and fsm.prestop() is None


@pytest.mark.parametrize("advance_to_drain", [False, True])
def test_sigterm_cuts_a_running_drain(advance_to_drain: bool) -> None:
    fsm, clock = make(down_wait_s=1.0)
    fsm.prestop()
    if advance_to_drain:
        clock.advance(1.0)
        fsm.drain_started()
    t = fsm.sigterm()
    assert t is not None and (t.src, t.dst) == (State.DRAINING, State.TERMINATING)
    assert fsm.poll(0) is None and not fsm.down_wait_over()


def test_sigterm_after_drained_and_full_history() -> None:
    fsm, clock = make(down_wait_s=0.5)
    fsm.prestop()
    clock.advance(0.5)
    fsm.drain_started()
    fsm.poll(0)
    clock.advance(0.2)
    fsm.sigterm("sigint")
    assert [(t.src.value, t.dst.value, t.reason) for t in fsm.transitions] == [
        ("SERVING", "DRAINING", "prestop"),
        ("DRAINING", "DRAINED", "zero_active"),
        ("DRAINED", "TERMINATING", "sigint"),
    ]
    assert fsm.transitions[2].at - fsm.transitions[0].at == pytest.approx(0.7)


def test_defaults_are_the_improved_manifests() -> None:
    """The image's defaults agree with the env the improved manifest sets (no silent drift)."""
    root = Path(__file__).resolve().parents[1]
    docs = yaml.safe_load_all((root / "manifests" / "21-igw-improved.yaml").read_text())
    deployment = next(d for d in docs if d and d.get("kind") == "Deployment")
    hc = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "hc")
    env = {e["name"]: e.get("value") for e in hc["env"]}
    assert HcTimings() == HcTimings(
        down_wait_s=float(env["HC_DOWN_WAIT_S"]), down_after_checks=int(env["HC_DOWN_AFTER_CHECKS"]),
        poll_interval_s=float(env["HC_POLL_INTERVAL_S"]), drain_timeout_s=float(env["HC_DRAIN_TIMEOUT_S"]))


@pytest.mark.parametrize("kwargs, word", [
    ({"down_wait_s": -1.0}, "--down-wait-s"),
    ({"poll_interval_s": 0.0}, "--poll-interval-s"),
    ({"drain_timeout_s": 0.0}, "--drain-timeout-s"),
    ({"drain_timeout_s": float("nan")}, "--drain-timeout-s"),
    ({"down_after_checks": -1}, "--down-after-checks"),
    ({"down_after_checks": 2, "down_wait_s": 0.0}, "--down-wait-s"),
])
def test_bad_timings_name_the_flag(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        HcTimings(**kwargs)  # type: ignore[arg-type]
