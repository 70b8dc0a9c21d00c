"""The local lab's pilot-agent: Istio's shutdown behaviour and log lines around a real Envoy.

It starts Envoy (`--disable-hot-restart --concurrency 1 --drain-strategy immediate`) as a child
it waits for, forwards Envoy's output line by line to its own stdout, serves readiness on the
status port (`/healthz/ready`: 200 when Envoy's admin `/ready` says LIVE) and, on SIGTERM, does
what Istio's pilot-agent does (pkg/envoy/agent.go, 1.21+):

- default: drain Envoy, sleep TERMINATION_DRAIN_DURATION, then kill Envoy with requests still in
  flight (what cuts them in current mode);
- EXIT_ON_ZERO_ACTIVE_CONNECTIONS=true: drain, sleep MINIMUM_DRAIN_DURATION, then check listener
  `downstream_cx_active` every second and kill Envoy at zero (HAProxy's idle keep-alive
  connections keep it above zero for a while: Istio's real pitfall, copied on purpose).

Envoy runs in its own session (a signal to the pod's process group reaches the agent, never
Envoy directly, as in a container) and gets PR_SET_PDEATHSIG so it dies with the agent.

Run: `python -m gtnb.workloads.agent --listen 127.0.0.1:8080 --backend 127.0.0.1:9080
--admin 127.0.0.1:15000 --status-listen 127.0.0.1:15021`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from ..errors import ConfigError
from ._common import add_env_flag, ensure_addr, ensure_float, format_go_duration, parse_addr, \
    parse_bool, parse_go_duration
from .agent_proc import EnvoyProcess, IstioLog, find_envoy
from .backend import Receive, Scope, Send
from .envoy_bootstrap import admin_address, render_bootstrap, write_bootstrap
from .envoy_stats import ISTIO_STATS_QUERY, istio_active_connections

__all__ = ["AgentSettings", "Agent", "parse_args", "main"]

ACTIVE_CONNECTION_CHECK_DELAY_S = 1.0  # Istio's activeConnectionCheckDelay
MAX_STATS_RETRIES = 4  # Istio gives up after the 5th failed stats call
ADMIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class AgentSettings:
    """What the agent is told: the bootstrap (a file, or generated), ports, Istio's proxy settings."""

    bootstrap: Path | None  # an existing bootstrap; None = generate from listen/backend/admin
    listen: str
    backend: str
    admin: str
    status_listen: str
    envoy: str
    drain_time_s: float  # Envoy's --drain-time-s (Istio's drainDuration)
    termination_drain_s: float  # TERMINATION_DRAIN_DURATION
    exit_on_zero: bool  # EXIT_ON_ZERO_ACTIVE_CONNECTIONS
    minimum_drain_s: float  # MINIMUM_DRAIN_DURATION


class Agent:
    """One pilot-agent run: start Envoy, serve readiness, terminate the Istio way on SIGTERM."""

    def __init__(self, settings: AgentSettings, log: IstioLog) -> None:
        self.settings = settings
        self.log = log
        self.envoy: EnvoyProcess | None = None
        self._signal = asyncio.Event()
        self._status_stop = asyncio.Event()
        ahost, aport = admin_address(settings.bootstrap) if settings.bootstrap else \
            parse_addr(settings.admin, what="--admin / PROXY_ADMIN")
        self.admin_url = f"http://{ahost}:{aport}"
        # Built once: building an httpx client takes ~0.1 s, which would otherwise sit between
        # `Agent draining Proxy for termination` and the drain call itself.
        self.admin = httpx.AsyncClient(base_url=self.admin_url, timeout=ADMIN_TIMEOUT_S)

    async def run(self) -> int:
        """Run until SIGTERM (exit 0 after the Istio sequence) or Envoy's own death (exit 1)."""
        s = self.settings
        self.log.info("Starting proxy agent")
        with tempfile.TemporaryDirectory(prefix="gtnb-agent-") as tmp:
            if s.bootstrap is None:
                bootstrap = write_bootstrap(Path(tmp) / "envoy-rev.json",
                                            render_bootstrap(s.listen, s.backend, s.admin))
            else:
                bootstrap = s.bootstrap
            args = ["-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1",
                    "--drain-time-s", f"{s.drain_time_s:g}", "--drain-strategy", "immediate",
                    "--local-address-ip-version", "v4",
                    # As pilot-agent runs it (proxyLogLevel warning): quiet start-up, warnings such
                    # as `caught ENVOY_SIGTERM` still shown.
                    "--log-level", "warning", "--component-log-level", "misc:error",
                    # Envoy flushes its access log every 10 s by default (measured: lines 7-9 s
                    # late), and a SIGKILL loses what is buffered. envoy.log must be live and
                    # complete, so flush every 100 ms (a deliberate difference from Istio).
                    "--file-flush-interval-msec", "100"]
            self.envoy = await EnvoyProcess.start(s.envoy, args, self.log)
            status = asyncio.create_task(self._serve_status())
            envoy_exit = asyncio.create_task(self.envoy.wait())
            signalled = asyncio.create_task(self._signal.wait())
            try:
                done, _ = await asyncio.wait({envoy_exit, signalled, status}, return_when=asyncio.FIRST_COMPLETED)
                if envoy_exit in done:
                    code = envoy_exit.result()
                    self.log.error(f"Envoy exited with error: exit status {code}")
                    return 1
                if status in done and not self._status_stop.is_set():
                    # Without readiness the pod never gets traffic: fail loudly, as a crash would.
                    exc = status.exception()
                    self.log.error(f"status server on {s.status_listen} (--status-listen / STATUS_LISTEN) "
                                   f"failed: {exc!r}")
                    return 1
                await self._stop_status(status)
                await self.terminate()
                self.log.info("Agent has successfully terminated")
                return 0
            finally:
                signalled.cancel()
                await self._stop_status(status)
                await self.envoy.kill_and_wait()  # never leave Envoy behind, whatever happened
                await self.admin.aclose()

    def on_signal(self, sig: signal.Signals) -> None:
        """SIGTERM/SIGINT start the termination once; later signals are ignored, as Istio does."""
        if not self._signal.is_set():
            self.log.info(f"Received {sig.name}, starting termination")
            self._signal.set()

    async def terminate(self) -> None:
        """Istio's Agent.terminate(): drain, wait (a fixed time or for zero connections), abort."""
        assert self.envoy is not None
        s = self.settings
        self.log.info("Agent draining Proxy for termination")
        try:
            response = await self.admin.post("/drain_listeners?graceful")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.log.warn(f"Error in invoking drain listeners endpoint: {exc}")
        if s.exit_on_zero:
            self.log.info(f"Agent draining proxy for {format_go_duration(s.minimum_drain_s)}, "
                          "then waiting for active connections to terminate...")
            if await self.envoy.exited_within(s.minimum_drain_s):
                return self._ended_early()
            self.log.info("Checking for active connections...")
            retries = 0
            while True:
                if await self.envoy.exited_within(ACTIVE_CONNECTION_CHECK_DELAY_S):
                    return self._ended_early()
                try:
                    response = await self.admin.get(ISTIO_STATS_QUERY)
                    response.raise_for_status()
                    active = istio_active_connections(response.text)
                except httpx.HTTPError as exc:
                    self.log.error(f"unable to get listener stats from Envoy : {exc}")
                    retries += 1
                    if retries > MAX_STATS_RETRIES:
                        self.log.warn("Graceful termination logic ended prematurely, error while obtaining "
                                      f"downstream_cx_active stat (Max retry {retries} exceeded)")
                        break
                    self.log.warn(f"Retrying ({retries} attempt) to obtain active connections...")
                    continue
                if active == -1:
                    self.log.info("downstream_cx_active are not available. This either means there are no "
                                  "downstream connection established yet or the stats are not enabled. "
                                  "Skipping active connections check...")
                    break
                if active == 0:
                    self.log.info("There are no more active connections. terminating proxy...")
                    break
                self.log.info(f"There are still {active} active connections")
                retries = 0
        else:
            self.log.info(f"Graceful termination period is {format_go_duration(s.termination_drain_s)}, "
                          "starting...")
            if await self.envoy.exited_within(s.termination_drain_s):
                return self._ended_early()
            self.log.info("Graceful termination period complete, terminating remaining proxies.")
        await self.envoy.abort()
        self.log.info("Envoy aborted normally")
        self.log.warn("Aborted proxy instance")

    def _ended_early(self) -> None:
        assert self.envoy is not None
        self.log.info(f"Envoy exited with status {self.envoy.returncode}")
        self.log.info("Graceful termination logic ended prematurely, envoy process terminated early")

    # -- the status server (:15021) -----------------------------------------------------------

    async def _serve_status(self) -> None:
        config = Config()
        config.bind = [self.settings.status_listen]
        config.accesslog = None
        config.loglevel = "WARNING"
        config.graceful_timeout = 0.5
        await hypercorn_serve(self._status_app, config,  # type: ignore[arg-type]
                              shutdown_trigger=self._status_stop.wait)

    async def _stop_status(self, task: asyncio.Task[None]) -> None:
        self._status_stop.set()
        if task.done():
            return
        await task
        self.log.info("Status server has successfully terminated")

    async def _status_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/healthz/ready":
            code, body = 404, "not found; try /healthz/ready\n"
        else:
            code, body = await self.readiness()
        data = body.encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def readiness(self) -> tuple[int, str]:
        """Istio's `/healthz/ready`, reduced to Envoy's own view.

        Returns:
            (200, "") when Envoy's admin `/ready` says LIVE, else (503, why). Note: Envoy stays
            LIVE after `drain_listeners?graceful`; readiness fails when the agent's status
            server stops on SIGTERM.
        """
        try:
            response = await self.admin.get("/ready")
        except httpx.HTTPError as exc:
            return 503, f"Envoy admin not reachable: {exc}\n"
        state = response.text.strip()
        return (200, "") if response.status_code == 200 and state == "LIVE" else (503, f"Envoy is {state}\n")


def parse_args(argv: list[str] | None = None) -> AgentSettings:
    """Read flags and env into validated AgentSettings; bad values exit with a message."""
    p = argparse.ArgumentParser(prog="python -m gtnb.workloads.agent", description=__doc__.split("\n")[0])
    add_env_flag(p, "--envoy-bootstrap", "ENVOY_BOOTSTRAP", "", "an Envoy bootstrap file to run as is")
    add_env_flag(p, "--listen", "PROXY_LISTEN", "0.0.0.0:8080", "the generated gateway listener")
    add_env_flag(p, "--backend", "PROXY_BACKEND", "127.0.0.1:8080", "service-a-backend for the generated bootstrap")
    add_env_flag(p, "--admin", "PROXY_ADMIN", "127.0.0.1:15000", "Envoy's admin address (generated bootstrap)")
    add_env_flag(p, "--status-listen", "STATUS_LISTEN", "0.0.0.0:15021", "readiness server (/healthz/ready)")
    add_env_flag(p, "--envoy", "ENVOY_BINARY", "", "the envoy binary (default: next to python, then PATH)")
    add_env_flag(p, "--drain-time-s", "DRAIN_TIME_S", "45", "Envoy's --drain-time-s (Istio drainDuration)")
    args = p.parse_args(argv)
    env = os.environ
    try:
        bootstrap = Path(args.envoy_bootstrap) if args.envoy_bootstrap.strip() else None
        if bootstrap is not None:
            admin_address(bootstrap)  # fails early with a clear message
        settings = AgentSettings(
            bootstrap=bootstrap,
            listen=ensure_addr(args.listen, what="--listen / PROXY_LISTEN"),
            backend=ensure_addr(args.backend, what="--backend / PROXY_BACKEND"),
            admin=ensure_addr(args.admin, what="--admin / PROXY_ADMIN"),
            status_listen=ensure_addr(args.status_listen, what="--status-listen / STATUS_LISTEN"),
            envoy=find_envoy(args.envoy),
            drain_time_s=ensure_float(args.drain_time_s, what="--drain-time-s / DRAIN_TIME_S"),
            termination_drain_s=parse_go_duration(env.get("TERMINATION_DRAIN_DURATION", "") or "5s",
                                                  what="TERMINATION_DRAIN_DURATION"),
            exit_on_zero=parse_bool(env.get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "false"),
                                    what="EXIT_ON_ZERO_ACTIVE_CONNECTIONS"),
            minimum_drain_s=parse_go_duration(env.get("MINIMUM_DRAIN_DURATION", "") or "5s",
                                              what="MINIMUM_DRAIN_DURATION"),
        )
    except ConfigError as exc:
        p.error(str(exc))
    return settings


async def _main(settings: AgentSettings) -> int:
    agent = Agent(settings, IstioLog())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.on_signal, sig)
    return await agent.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m gtnb.workloads.agent`."""
    return asyncio.run(_main(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
