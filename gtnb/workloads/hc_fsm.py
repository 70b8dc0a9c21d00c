"""The hc sidecar's health-check state machine: pure, no I/O, time from an injected clock.

States and transitions (reasons in brackets)::

    SERVING --[prestop]--> DRAINING --[zero_active | timeout]--> DRAINED
       |                      |                                     |
       +-------[sigterm]------+---------------[sigterm]-------------+--> TERMINATING

- SERVING answers HAProxy's check with 200; every other state answers 503, so the first
  transition is the moment the balancer starts to learn (the timeline's anchor, E1).
- DRAINING has two phases. First the *DOWN wait*: give HAProxy time to mark the server DOWN,
  `down_wait_s` at most, ended early once `down_after_checks` failed checks were served (when
  set). Then the server asks Envoy to drain (`drain_started`) and polls; the first poll with no
  request in flight ends in DRAINED (`zero_active`), and `drain_timeout_s` after the drain
  started it ends anyway (`timeout`). Requests are polled, not connections: HAProxy keeps idle
  keep-alive connections open for seconds after the last request.
- `/prestop` blocks until `drain_done`, bounded by `prestop_deadline`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import ConfigError

__all__ = ["State", "Transition", "HcTimings", "HcFsm", "DEFAULT_TIMINGS"]


class State(str, Enum):
    SERVING = "SERVING"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"
    TERMINATING = "TERMINATING"


@dataclass(frozen=True)
class Transition:
    """One state change: logged as `event=transition from=.. to=.. reason=..`."""

    src: State
    dst: State
    reason: str
    at: float  # the injected clock's time


@dataclass(frozen=True)
class HcTimings:
    """The hc timings (flags `--down-wait-s` ... / env `HC_*`); validated on creation.

    Defaults match manifests/21-igw-improved.yaml: haproxy-improved.cfg (`inter 1s fastinter
    500ms fall 2`) marks a server DOWN on its 2nd failed check, about 1.5 s in; the 3rd failed
    check served proves HAProxy acted on the 2nd, and 4 s bounds the wait if checks stop coming.
    180 s of drain fits in the 210 s grace period.
    """

    down_wait_s: float = 4.0  # the DOWN wait (upper bound when down_after_checks is set)
    down_after_checks: int = 3  # end the DOWN wait after this many 503s served; 0 = fixed wait
    poll_interval_s: float = 1.0  # between Envoy stats polls
    drain_timeout_s: float = 180.0  # after the drain call, give up waiting for zero requests

    def __post_init__(self) -> None:
        checks = [
            ("down_wait_s", "--down-wait-s / HC_DOWN_WAIT_S", self.down_wait_s, 0.0, False),
            ("poll_interval_s", "--poll-interval-s / HC_POLL_INTERVAL_S", self.poll_interval_s, 0.0, True),
            ("drain_timeout_s", "--drain-timeout-s / HC_DRAIN_TIMEOUT_S", self.drain_timeout_s, 0.0, True),
        ]
        for _name, flag, value, low, strict in checks:
            bad = value != value or value < low or (strict and value == low) or value > 86400
            if bad:
                rule = f"> {low:g}" if strict else f">= {low:g}"
                raise ConfigError(f"{flag}: {value!r} is out of range; it must be {rule} and <= 86400 seconds")
        if isinstance(self.down_after_checks, bool) or not isinstance(self.down_after_checks, int) \
                or self.down_after_checks < 0:
            raise ConfigError(
                f"--down-after-checks / HC_DOWN_AFTER_CHECKS: {self.down_after_checks!r} must be a whole "
                "number >= 0 (0 = wait --down-wait-s)"
            )
        if self.down_after_checks and self.down_wait_s == 0:
            raise ConfigError(
                "--down-wait-s / HC_DOWN_WAIT_S is 0 but --down-after-checks is set: the DOWN wait would "
                "end before any check; give --down-wait-s an upper bound such as 10"
            )


DEFAULT_TIMINGS = HcTimings()


@dataclass
class HcFsm:
    """The health-check FSM. Call its methods as things happen; it returns what changed.

    Parameters:
        timings: HcTimings.
        clock: monotonic seconds (time.monotonic in the server, a fake in tests).
    """

    timings: HcTimings
    clock: Callable[[], float]
    state: State = State.SERVING
    transitions: list[Transition] = field(default_factory=list)
    failed_checks: int = 0  # 503s served since the first transition
    draining_since: float | None = None
    drain_started_at: float | None = None
    down_wait_reason: str | None = None  # "checks" or "timer" once the DOWN wait ended

    # -- what the outside world does -------------------------------------------------------

    def check(self) -> int:
        """A health check was served. Returns the HTTP status it got: 200 SERVING, else 503."""
        if self.state is State.SERVING:
            return 200
        self.failed_checks += 1
        return 503

    def prestop(self) -> Transition | None:
        """The preStop hook called. Starts the drain once; later calls change nothing (None)."""
        if self.state is not State.SERVING:
            return None
        self.draining_since = self.clock()
        return self._go(State.DRAINING, "prestop")

    def sigterm(self, reason: str = "sigterm") -> Transition | None:
        """SIGTERM (or SIGINT, reason `sigint`) arrived: every state but TERMINATING goes there."""
        if self.state is State.TERMINATING:
            return None
        return self._go(State.TERMINATING, reason)

    def down_wait_over(self) -> bool:
        """True once HAProxy has had time to mark us DOWN (and the drain not yet started).

        Records why in `down_wait_reason` ("checks" or "timer") the first time it is True.
        """
        if self.state is not State.DRAINING or self.drain_started_at is not None:
            return False
        assert self.draining_since is not None
        n = self.timings.down_after_checks
        if n and self.failed_checks >= n:
            self.down_wait_reason = self.down_wait_reason or "checks"
            return True
        if self.clock() - self.draining_since >= self.timings.down_wait_s:
            self.down_wait_reason = self.down_wait_reason or "timer"
            return True
        return False

    def down_wait_remaining(self) -> float:
        """Seconds left of the DOWN wait's upper bound (0 when over or not DRAINING)."""
        if self.state is not State.DRAINING or self.draining_since is None:
            return 0.0
        return max(0.0, self.draining_since + self.timings.down_wait_s - self.clock())

    def drain_started(self) -> None:
        """The server asked Envoy to drain; the drain timeout counts from now."""
        if self.state is not State.DRAINING or self.drain_started_at is not None:
            raise RuntimeError(f"drain_started() in state {self.state.value} (drain already started "
                               f"at {self.drain_started_at})")
        if not self.down_wait_over():
            raise RuntimeError("drain_started() before the DOWN wait is over")
        self.drain_started_at = self.clock()

    def poll(self, rq_active: int | None) -> Transition | None:
        """One poll of Envoy's stats; `rq_active` None when the poll failed.

        Returns:
            The DRAINING -> DRAINED transition when no request is active (`zero_active`) or
            the drain timeout passed (`timeout`); else None.
        """
        if self.state is not State.DRAINING or self.drain_started_at is None:
            return None
        if rq_active == 0:
            return self._go(State.DRAINED, "zero_active")
        if self.clock() - self.drain_started_at >= self.timings.drain_timeout_s:
            return self._go(State.DRAINED, "timeout")
        return None

    # -- what the server asks ----------------------------------------------------------------

    @property
    def drain_done(self) -> bool:
        """True when /prestop callers may return: DRAINED, or TERMINATING cut the drain short."""
        return self.state in (State.DRAINED, State.TERMINATING)

    @property
    def health_code(self) -> int:
        """The status a health check would get now (without counting it)."""
        return 200 if self.state is State.SERVING else 503

    def prestop_deadline(self) -> float | None:
        """The latest clock time a /prestop caller waits until: DOWN wait + drain timeout."""
        if self.draining_since is None:
            return None
        return self.draining_since + self.timings.down_wait_s + self.timings.drain_timeout_s

    def drain_remaining(self) -> float:
        """Seconds left until the drain timeout (0 when the drain has not started or is over)."""
        if self.drain_started_at is None or self.state is not State.DRAINING:
            return 0.0
        return max(0.0, self.drain_started_at + self.timings.drain_timeout_s - self.clock())

    def _go(self, dst: State, reason: str) -> Transition:
        transition = Transition(self.state, dst, reason, self.clock())
        self.state = dst
        self.transitions.append(transition)
        return transition
