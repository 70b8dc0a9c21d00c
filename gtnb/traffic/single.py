"""One request read to its end (S1/S2) and one streamed response read line by line (S4), both
cancellable from another thread. Requests are never retried: curl silently retries an HTTP/2
REFUSED_STREAM and shows a late 200, which hides the very cut the experiment looks for."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .classify import classify
from .pin import Pin
from .results import FINAL_LINE, ChunkArrival, RequestResult

__all__ = ["Canceller", "long_request", "stream_request", "finish"]


@dataclass
class Canceller:
    """Lets the run abort requests blocked in a read (a 60 s `/sleep`) from another thread.

    It watches connections open through httpcore's `trace` extension and, on `cancel()`, shuts
    their sockets down: a blocked `recv` returns at once, which closing the fd would not do.
    """

    _streams: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in ("connection.start_tls.complete", "connection.connect_tcp.complete"):
            stream = info.get("return_value")
            if stream is not None:
                with self._lock:
                    self._streams.append(stream)
                if self.cancelled.is_set():
                    self._shutdown(stream)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            self._shutdown(stream)

    @staticmethod
    def _shutdown(stream: Any) -> None:
        sock = stream.get_extra_info("socket")
        if sock is None:
            return
        try:
            # socket.socket's own shutdown, not SSLSocket's: that one also drops the SSL object
            # under the feet of the thread blocked in read().
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: nothing to cancel


def finish(result: RequestResult, response: httpx.Response | None, exc: BaseException | None,
            cancel: Canceller | None) -> None:
    result.t_end = time.time()
    if exc is not None:
        if cancel is not None and cancel.cancelled.is_set():
            result.error, result.curl_exit, result.detail = "cancelled", 130, "cancelled: the run was interrupted"
        else:
            result.error, result.curl_exit, result.detail = classify(
                exc, http_version=result.http_version, got_headers=response is not None
            )
        result.complete = False
    elif result.status is not None and result.status >= 500:
        # curl without -f exits 0 on a 5xx: the seed saw "http=502 exit=0".
        result.error, result.curl_exit = "http_5xx", 0
        result.detail = result.detail or f"HTTP {result.status} (curl shows http={result.status}, exit 0)"
        result.complete = False


def _stream_get(
    pin: Pin,
    path: str,
    result: RequestResult,
    *,
    http2: bool,
    timeout_s: float,
    cancel: Canceller | None,
    read: Callable[[httpx.Response], None],
) -> tuple[httpx.Response | None, BaseException | None]:
    """GET `path` on the pinned address with the request id and the canceller's trace.

    Records the status and HTTP version in `result`, then lets `read` consume the body (the two
    scenarios' clients differ only there). Returns the response (None when none came) and the
    httpx error that ended it (None when `read` reached the end), for `finish`.
    """
    response: httpx.Response | None = None
    with pin.client(http2=http2, timeout_s=timeout_s) as client:
        try:
            with client.stream("GET", path, headers={"x-request-id": result.request_id},
                               extensions=pin.extensions(cancel.trace if cancel else None)) as response:
                result.status, result.http_version = response.status_code, response.http_version
                read(response)
        except httpx.HTTPError as err:
            return response, err
    return response, None


def long_request(
    pin: Pin,
    path: str,
    *,
    http2: bool = False,
    timeout_s: float,
    request_id: str = "r1",
    worker: int = 0,
    cancel: Canceller | None = None,
) -> RequestResult:
    """One request read to its end (S1: `/sleep?seconds=60`).

    Parameters:
        pin: where to connect.
        path: the path with its query.
        http2: offer HTTP/2 (default HTTP/1.1, as the seed's 502 observation used).
        timeout_s: read timeout: longer than the response takes.
        cancel: lets another thread abort the request.

    Returns:
        The RequestResult; never raises for a network failure.
    """
    result = RequestResult(worker, request_id, path, "HTTP/2" if http2 else "HTTP/1.1", time.time())

    def read(response: httpx.Response) -> None:
        for data in response.iter_raw():
            result.bytes += len(data)
        result.complete = 200 <= response.status_code < 300

    response, exc = _stream_get(pin, path, result, http2=http2, timeout_s=timeout_s, cancel=cancel, read=read)
    finish(result, response, exc, cancel)
    return result


def stream_request(
    pin: Pin,
    path: str,
    *,
    http2: bool = True,
    timeout_s: float,
    request_id: str = "r1",
    worker: int = 0,
    cancel: Canceller | None = None,
    on_chunk: Callable[[ChunkArrival], None] | None = None,
) -> tuple[RequestResult, list[ChunkArrival]]:
    """A streamed response read line by line (S4: `/stream?seconds=60&interval=1`).

    Complete means the final `done` line arrived: a cut HTTP/2 stream can still end with a clean
    END_STREAM (curl exit 0), so the clean end alone proves nothing.

    Parameters:
        pin: where to connect.
        path: the path with its query.
        http2: offer HTTP/2 (default, as the seed's S4).
        timeout_s: read timeout between two lines.
        on_chunk: called with each chunk as it arrives (progress).

    Returns:
        The RequestResult and each `chunk K` line's arrival time.
    """
    result = RequestResult(worker, request_id, path, "HTTP/2" if http2 else "HTTP/1.1", time.time())
    arrivals: list[ChunkArrival] = []
    saw_final = False

    def read(response: httpx.Response) -> None:
        nonlocal saw_final
        for line in _lines(response, result):
            if line.startswith("chunk "):
                arrival = ChunkArrival(request_id, _chunk_number(line, len(arrivals) + 1), time.time())
                arrivals.append(arrival)
                result.chunks = len(arrivals)
                if on_chunk is not None:
                    on_chunk(arrival)
            elif line == FINAL_LINE:
                saw_final = True

    response, exc = _stream_get(pin, path, result, http2=http2, timeout_s=timeout_s, cancel=cancel, read=read)
    finish(result, response, exc, cancel)
    if exc is None and result.status is not None and result.status < 500:
        result.complete = saw_final and 200 <= result.status < 300
        if not saw_final:
            # The stream ended cleanly but short: curl would have exited 0 here.
            result.error, result.curl_exit = "truncated", 0
            result.detail = f"stream ended cleanly after {result.chunks} chunks without the final line"
    return result, arrivals


def _lines(response: httpx.Response, result: RequestResult) -> Iterable[str]:
    """Lines of a streamed body as they arrive, counting raw bytes on the way."""
    pending = b""
    for data in response.iter_raw():
        result.bytes += len(data)
        pending += data
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


def _chunk_number(line: str, fallback: int) -> int:
    try:
        return int(line.split()[1])
    except (IndexError, ValueError):
        return fallback
