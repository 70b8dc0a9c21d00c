"""service-a-hc: the health-check sidecar HAProxy checks, and the drain it runs on preStop.

Endpoints (HTTP/1.1, on a small h11 server: see _http1 for why not hypercorn)::

    GET /healthz   HAProxy's check: 200 while SERVING, 503 from the first transition on
    GET /prestop   the preStop hook: starts the drain (once), blocks until DRAINED or a deadline
    GET /state     the FSM as JSON, for people and tests

The drain (improved mode): DRAINING -> wait until HAProxy has marked us DOWN -> POST
`/drain_listeners?graceful` to Envoy's admin -> poll `/stats` until no request is in flight ->
DRAINED -> /prestop returns -> kubelet sends SIGTERM. Current mode has no preStop: SIGTERM
takes SERVING straight to TERMINATING and the sidecar exits. The state logic lives in hc_fsm;
this module only does the I/O and logs every step as one logfmt line.

Run: `python -m gtnb.workloads.hc --listen 127.0.0.1:15080 --envoy-admin http://127.0.0.1:15000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError
from ._common import LogfmtWriter, add_env_flag, ensure_addr, ensure_float, ensure_int, env_default, \
    parse_addr
from ._http1 import Http1Server
from .envoy_stats import HC_STATS_QUERY, hc_active_counts
from .hc_fsm import HcFsm, HcTimings, State, Transition

__all__ = ["HcSettings", "HcServer", "ensure_admin_url", "parse_args", "serve", "main"]

ADMIN_TIMEOUT_S = 2.0  # one admin call; Istio's agent uses the same bound for its stats poll
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class HcSettings:
    """Everything the sidecar is told (flags or env)."""

    listen: str
    envoy_admin: str
    pod: str
    timings: HcTimings


def ensure_admin_url(text: str) -> str:
    """Validate Envoy's admin URL (`http://HOST:PORT`) and return it without a trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ConfigError(
            f"--envoy-admin / ENVOY_ADMIN_URL: {text!r} is not http://HOST:PORT; "
            "give Envoy's admin address, e.g. http://127.0.0.1:15000"
        )
    return text.strip().rstrip("/")


class HcServer:
    """The request handler plus the drain task around one HcFsm.

    Parameters:
        settings: HcSettings.
        log: the logfmt writer (carries `pod=`).
        clock: monotonic seconds for the FSM.
    """

    def __init__(self, settings: HcSettings, log: LogfmtWriter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.log = log
        self.fsm = HcFsm(settings.timings, clock)
        self._done = asyncio.Event()  # set when /prestop callers may return
        self._wake = asyncio.Event()  # a check was served or a signal came: re-evaluate
        self._drain_task: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()
        # Built once at start: building an httpx client takes ~0.1 s (its TLS context), which
        # would otherwise delay the drain call (E3) behind the DOWN wait.
        self.admin = httpx.AsyncClient(base_url=settings.envoy_admin, timeout=ADMIN_TIMEOUT_S)

    # -- HTTP ---------------------------------------------------------------------------------

    async def handle(self, method: str, target: str) -> tuple[int, str, str]:
        """Answer one request. Returns (status, body, content type)."""
        path = target.split("?", 1)[0]
        if path == "/healthz":
            # Any method: HAProxy's `option httpchk` defaults to OPTIONS.
            code = self.fsm.check()
            self.log("check", code=code, state=self.fsm.state.value)
            self._wake.set()
            return code, f"{self.fsm.state.value}\n", TEXT
        if path == "/prestop":
            code, body = await self.prestop()
            return code, body, TEXT
        if path == "/state":
            return 200, json.dumps(self.state_dict()) + "\n", "application/json"
        return 404, f"no such path {path}; try /healthz /prestop /state\n", TEXT

    def state_dict(self) -> dict[str, Any]:
        """The FSM as plain data: state, failed checks, transitions (times on the FSM clock)."""
        return {
            "pod": self.settings.pod,
            "state": self.fsm.state.value,
            "failed_checks": self.fsm.failed_checks,
            "transitions": [
                {"from": t.src.value, "to": t.dst.value, "reason": t.reason, "at": t.at}
                for t in self.fsm.transitions
            ],
        }

    # -- preStop and the drain -----------------------------------------------------------------

    async def prestop(self) -> tuple[int, str]:
        """Start the drain on the first call; every caller waits for the same drain.

        Returns:
            (HTTP status, body): 200 and the final state, or 504 when the deadline passed first.
        """
        started = time.monotonic()
        transition = self.fsm.prestop()
        self.log("prestop", first=str(transition is not None).lower(), state=self.fsm.state.value)
        if transition is not None:
            self._log_transition(transition)
            self._drain_task = asyncio.create_task(self._drain())
        deadline = self.fsm.prestop_deadline()
        # A margin over the FSM's own deadline: the last poll may take ADMIN_TIMEOUT_S.
        budget = (deadline - self.fsm.clock() if deadline is not None else 0.0) + ADMIN_TIMEOUT_S + 1.0
        try:
            await asyncio.wait_for(self._done.wait(), timeout=max(budget, 0.0))
            code = 200
        except asyncio.TimeoutError:
            code = 504
        waited = time.monotonic() - started
        self.log("prestop_return", code=code, state=self.fsm.state.value, waited_s=f"{waited:.3f}")
        return code, f"{self.fsm.state.value}\n"

    async def _drain(self) -> None:
        try:
            await self._run_drain()
        except asyncio.CancelledError:
            raise  # SIGTERM cut the drain; on_signal already released the callers
        except Exception as exc:  # a bug must not leave the preStop hook hanging until its deadline
            self.log("drain_error", level="error", error=_describe(exc))
        finally:
            self._done.set()

    async def _run_drain(self) -> None:
        fsm, t = self.fsm, self.settings.timings
        # Phase 1, the DOWN wait: wake on each served check (for --down-after-checks) or the timer.
        while not fsm.down_wait_over():
            if fsm.state is not State.DRAINING:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=fsm.down_wait_remaining() or 0.001)
            except asyncio.TimeoutError:
                pass
        self.log("down_wait_over", reason=fsm.down_wait_reason, failed_checks=fsm.failed_checks)
        url = f"{self.settings.envoy_admin}/drain_listeners?graceful"
        try:
            response = await self.admin.post("/drain_listeners?graceful")
            self.log("drain_start", url=url, status=response.status_code)
        except httpx.HTTPError as exc:
            # Keep going: the polls then fail too and the drain timeout ends the wait.
            self.log("drain_start", level="warn", url=url, status="error", error=_describe(exc))
        fsm.drain_started()
        # Phase 2: poll until no request is in flight, bounded by the drain timeout.
        while fsm.state is State.DRAINING:
            rq: int | None
            try:
                response = await self.admin.get(HC_STATS_QUERY)
                response.raise_for_status()
                counts = hc_active_counts(response.text)
                rq = counts.rq_active
                self.log("poll", rq_active=counts.rq_active, cx_active=counts.cx_active)
            except httpx.HTTPError as exc:
                rq = None
                self.log("poll", level="warn", error=_describe(exc))
            transition = fsm.poll(rq)
            if transition is not None:
                self._log_transition(transition)
                break
            await asyncio.sleep(min(t.poll_interval_s, max(fsm.drain_remaining(), 0.001)))

    # -- signals -------------------------------------------------------------------------------

    def on_signal(self, sig: signal.Signals) -> None:
        """SIGTERM/SIGINT: log it, go to TERMINATING, release /prestop callers, stop serving."""
        self.log("signal", signal=sig.name)
        transition = self.fsm.sigterm("sigterm" if sig is signal.SIGTERM else "sigint")
        if transition is not None:
            self._log_transition(transition)
        if self._drain_task is not None:
            self._drain_task.cancel()
        self._done.set()
        self._wake.set()
        self.stopped.set()

    def _log_transition(self, t: Transition) -> None:
        self.log("transition", **{"from": t.src.value, "to": t.dst.value, "reason": t.reason})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def parse_args(argv: list[str] | None = None) -> HcSettings:
    """Read flags (falling back to env) into validated HcSettings; bad values exit with a message."""
    d = HcTimings()
    parser = argparse.ArgumentParser(prog="python -m gtnb.workloads.hc", description=__doc__.split("\n")[0])
    add_env_flag(parser, "--listen", "HC_LISTEN", "0.0.0.0:15080", "address to serve /healthz and /prestop on")
    add_env_flag(parser, "--envoy-admin", "ENVOY_ADMIN_URL", "http://127.0.0.1:15000", "Envoy's admin URL")
    add_env_flag(parser, "--pod", "POD_NAME", socket.gethostname(), "pod name for the log lines")
    add_env_flag(parser, "--down-wait-s", "HC_DOWN_WAIT_S", f"{d.down_wait_s:g}",
                 "seconds to let HAProxy mark us DOWN before draining (upper bound with --down-after-checks)")
    add_env_flag(parser, "--down-after-checks", "HC_DOWN_AFTER_CHECKS", str(d.down_after_checks),
                 "end the DOWN wait after this many failed checks were served (0: fixed wait)")
    add_env_flag(parser, "--poll-interval-s", "HC_POLL_INTERVAL_S", f"{d.poll_interval_s:g}",
                 "seconds between Envoy stats polls")
    add_env_flag(parser, "--drain-timeout-s", "HC_DRAIN_TIMEOUT_S", f"{d.drain_timeout_s:g}",
                 "give up waiting for zero active requests after this long")
    args = parser.parse_args(argv)
    try:
        timings = HcTimings(
            down_wait_s=ensure_float(args.down_wait_s, what="--down-wait-s / HC_DOWN_WAIT_S"),
            down_after_checks=ensure_int(args.down_after_checks, what="--down-after-checks / HC_DOWN_AFTER_CHECKS"),
            poll_interval_s=ensure_float(args.poll_interval_s, what="--poll-interval-s / HC_POLL_INTERVAL_S",
                                         inclusive_min=False),
            drain_timeout_s=ensure_float(args.drain_timeout_s, what="--drain-timeout-s / HC_DRAIN_TIMEOUT_S",
                                         inclusive_min=False),
        )
        settings = HcSettings(
            listen=ensure_addr(args.listen, what="--listen / HC_LISTEN"),
            envoy_admin=ensure_admin_url(args.envoy_admin),
            pod=args.pod.strip() or env_default("HOSTNAME", "hc"),
            timings=timings,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    return settings


async def serve(settings: HcSettings) -> None:
    """Serve until SIGTERM/SIGINT; the drain runs inside when /prestop is called."""
    log = LogfmtWriter(pod=settings.pod)
    server = HcServer(settings, log)
    host, port = parse_addr(settings.listen, what="--listen / HC_LISTEN")
    http = Http1Server(server.handle, host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.on_signal, sig)
    t = settings.timings
    await http.start()
    log("start", listen=settings.listen, envoy_admin=settings.envoy_admin, down_wait_s=t.down_wait_s,
        down_after_checks=t.down_after_checks, poll_interval_s=t.poll_interval_s,
        drain_timeout_s=t.drain_timeout_s)
    try:
        await server.stopped.wait()
    finally:
        # /prestop callers were released by the signal: let their answers go out, then stop.
        await http.close(grace_s=1.0)
        await server.admin.aclose()
    log("exit")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m gtnb.workloads.hc`."""
    settings = parse_args(argv)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # the listen address is taken or not ours
        print(f"hc: cannot listen on {settings.listen} (--listen / HC_LISTEN): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
