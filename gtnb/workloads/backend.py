"""service-a-backend: the application behind the IGW, a plain ASGI app served by hypercorn.

Endpoints (HTTP/1.1 and h2c on one port)::

    GET /sleep?seconds=N               200 after N s (float, 0 <= N <= 3600)
    GET /fast                          200 at once
    GET /stream?seconds=N&interval=S   `chunk K` every S s (K from 1), then a final `done` line
    GET /healthz                       200

Every request is logged as one logfmt line when it ends (`event=request id=... status=...`),
with the client's `x-request-id` when it sent one, so a request can be followed from the client
through Envoy's access log to here.

Run: `python -m gtnb.workloads.backend --listen 127.0.0.1:8080` (env BACKEND_LISTEN).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from ..errors import ConfigError
from ._common import LogfmtWriter, add_env_flag, ensure_addr, parse_addr

__all__ = [
    "MAX_SECONDS",
    "StreamPlan",
    "parse_sleep",
    "parse_stream",
    "BackendApp",
    "serve",
    "main",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_SECONDS = 3600.0  # an hour: longer than any scenario, short enough to catch a typo
MIN_INTERVAL = 0.01  # keeps a stream from turning into a busy loop
FINAL_LINE = "done"  # the stream's last line: its absence means the stream was cut


class BadRequest(ValueError):
    """A query parameter is missing or out of range; the message goes back as the 400 body."""


def _one(query: dict[str, list[str]], name: str, *, required: bool) -> str | None:
    values = query.get(name)
    if not values:
        if required:
            raise BadRequest(f"missing query parameter {name!r}")
        return None
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} given {len(values)} times; give it once")
    return values[0]


def _seconds(text: str, name: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > MAX_SECONDS:
        low = "> 0" if positive else ">= 0"
        raise BadRequest(f"{name}={text} is out of range: it must be {low} and <= {MAX_SECONDS:g}")
    return value


def parse_sleep(query_string: str) -> float:
    """Validate `/sleep`'s query.

    Parameters:
        query_string: the raw query (`seconds=1.5`).

    Returns:
        The seconds to sleep. Raises BadRequest with the message for the 400 body.
    """
    query = parse_qs(query_string, keep_blank_values=True)
    text = _one(query, "seconds", required=True)
    assert text is not None
    return _seconds(text, "seconds", positive=False)


@dataclass(frozen=True)
class StreamPlan:
    """What `/stream` sends: `chunks` lines `chunk K`, one every `interval` s, then `done`."""

    seconds: float
    interval: float

    @property
    def chunks(self) -> int:
        # A small epsilon so seconds=0.3, interval=0.1 gives 3 chunks despite float rounding.
        return max(1, int(math.floor(self.seconds / self.interval + 1e-9)))

    def line(self, k: int) -> bytes:
        return f"chunk {k}\n".encode()


def parse_stream(query_string: str) -> StreamPlan:
    """Validate `/stream`'s query: 0 < seconds <= 3600, 0.01 <= interval <= seconds (default 1).

    Returns:
        The StreamPlan. Raises BadRequest with the message for the 400 body.
    """
    query = parse_qs(query_string, keep_blank_values=True)
    seconds_text = _one(query, "seconds", required=True)
    assert seconds_text is not None
    seconds = _seconds(seconds_text, "seconds", positive=True)
    interval_text = _one(query, "interval", required=False)
    interval = 1.0 if interval_text is None else _seconds(interval_text, "interval", positive=True)
    if interval < MIN_INTERVAL:
        raise BadRequest(f"interval={interval_text} is too small: it must be >= {MIN_INTERVAL:g}")
    if interval > seconds:
        raise BadRequest(f"interval={interval:g} is longer than seconds={seconds:g}: it must be <= seconds")
    return StreamPlan(seconds=seconds, interval=interval)


class _ClientGone(Exception):
    """The client disconnected before the response was complete."""


async def _sleep_or_disconnect(receive: Receive, seconds: float) -> None:
    """Sleep, but end early with _ClientGone when the client goes away (a cut request)."""
    if seconds <= 0:
        return
    listener = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({listener}, timeout=seconds)
        while done:
            message = listener.result()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            # Request body messages: keep listening for the disconnect.
            listener = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({listener}, timeout=seconds)
    finally:
        listener.cancel()


class BackendApp:
    """The ASGI application. `log` writes one logfmt line per request."""

    def __init__(self, log: LogfmtWriter) -> None:
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        path = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        started = time.monotonic()
        status, outcome, sent_chunks = 500, "complete", None
        try:
            status, sent_chunks = await self._route(scope, receive, send, path, query, request_id)
        except _ClientGone:
            status, outcome = 499, "client_gone"  # nginx's convention: the client closed first
        finally:
            fields: dict[str, object] = {
                "id": request_id, "method": scope["method"], "path": path, "query": query,
                "proto": scope.get("http_version", ""), "status": status, "outcome": outcome,
                "duration_s": f"{time.monotonic() - started:.3f}",
            }
            if sent_chunks is not None:
                fields["chunks"] = sent_chunks
            self.log("request", **fields)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send, path: str, query: str,
                     request_id: str) -> tuple[int, int | None]:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, f"method {scope['method']} not allowed; use GET\n", request_id)
            return 405, None
        try:
            if path == "/sleep":
                seconds = parse_sleep(query)
                await _sleep_or_disconnect(receive, seconds)
                await _respond(send, 200, f"slept {seconds:g}s\n", request_id)
                return 200, None
            if path == "/stream":
                plan = parse_stream(query)
                return 200, await _stream(receive, send, plan, request_id)
        except BadRequest as exc:
            await _respond(send, 400, f"bad request: {exc}\n", request_id)
            return 400, None
        if path in ("/fast", "/healthz"):
            await _respond(send, 200, "ok\n", request_id)
            return 200, None
        await _respond(send, 404, f"no such path {path}; try /sleep /fast /stream /healthz\n", request_id)
        return 404, None


def _headers(request_id: str, content_type: str = "text/plain; charset=utf-8") -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"x-request-id", request_id.encode())]


async def _respond(send: Send, status: int, body: str, request_id: str) -> None:
    data = body.encode()
    headers = _headers(request_id) + [(b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _stream(receive: Receive, send: Send, plan: StreamPlan, request_id: str) -> int:
    """Send the stream on a fixed schedule (chunk K at (K-1)*interval, `done` at chunks*interval).

    Returns:
        How many `chunk` lines were sent (fewer than planned when the client went away).
    """
    await send({"type": "http.response.start", "status": 200, "headers": _headers(request_id)})
    start = time.monotonic()
    for k in range(1, plan.chunks + 1):
        # Scheduled from the start, not from the previous write, so the stream does not drift.
        await _sleep_or_disconnect(receive, start + (k - 1) * plan.interval - time.monotonic())
        await send({"type": "http.response.body", "body": plan.line(k), "more_body": True})
    await _sleep_or_disconnect(receive, start + plan.chunks * plan.interval - time.monotonic())
    await send({"type": "http.response.body", "body": f"{FINAL_LINE}\n".encode()})
    return plan.chunks


async def serve(listen: str, log: LogfmtWriter) -> None:
    """Serve the backend on `listen` until SIGTERM or SIGINT, then shut down cleanly."""
    config = Config()
    config.bind = [listen]
    config.accesslog = None  # we log each request ourselves, with its id
    config.loglevel = "WARNING"
    # Longer than Envoy's upstream idle timeout (30 s in our bootstrap), so Envoy always closes
    # an idle upstream connection first and never reuses one we are closing (a 503 UC race).
    config.keep_alive_timeout = 75.0
    config.graceful_timeout = 3.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: (log("signal", signal=s.name), stop.set()))
    log("listening", listen=listen)
    await hypercorn_serve(BackendApp(log), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    log("exit")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m gtnb.workloads.backend`."""
    parser = argparse.ArgumentParser(prog="python -m gtnb.workloads.backend", description=__doc__.split("\n")[0])
    add_env_flag(parser, "--listen", "BACKEND_LISTEN", "0.0.0.0:8080", "address to serve on")
    args = parser.parse_args(argv)
    try:
        listen = ensure_addr(args.listen, what="--listen / BACKEND_LISTEN")
        parse_addr(listen, what="--listen")
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(listen, LogfmtWriter(app="backend")))
    except OSError as exc:  # the address is taken or not ours
        print(f"backend: cannot listen on {listen} (--listen / BACKEND_LISTEN): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
