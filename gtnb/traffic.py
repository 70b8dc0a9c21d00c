"""Client traffic with httpx: one long request (S1/S2), an HTTP/2 stream (S4), N-worker load (S3).

Every request becomes one `RequestResult` (a client.csv row, docs/contracts.md). Failures are
classified by what went wrong on the wire and mapped to the exit code the seed's curl would have
given, so a run reads the same as the seed's `curl.out` / `curl.tsv`. Requests are never retried:
curl silently retries an HTTP/2 REFUSED_STREAM and shows a late 200, which hides the very cut the
experiment looks for.

Like curl's `--resolve example.local:443:<balancer>`, requests go to the balancer's address with
`Host: example.local` and SNI `example.local`, verified against the lab's private CA.
"""

from __future__ import annotations

import csv
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h2.events
import httpx

from .errors import ConfigError
from .targets.base import Frontend

__all__ = [
    "CLIENT_COLUMNS",
    "CHUNK_COLUMNS",
    "FINAL_LINE",
    "Pin",
    "RequestResult",
    "ChunkArrival",
    "Canceller",
    "classify",
    "long_request",
    "stream_request",
    "Load",
    "write_client_csv",
    "write_chunks_csv",
]

CLIENT_COLUMNS = (
    "worker", "request_id", "path", "http_version", "t_start", "t_end", "status", "error",
    "curl_exit", "bytes", "chunks", "complete", "detail",
)  # fmt: skip
CHUNK_COLUMNS = ("request_id", "k", "t")
FINAL_LINE = "done"  # the backend's last stream line; without it the stream was cut
_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Pin:
    """Where and as whom to connect: curl's `--resolve`, as an httpx client needs it.

    Parameters:
        host, port: the balancer's address.
        sni: the virtual host (`example.local`): Host header, SNI and certificate name.
        ca: the private CA file.
    """

    host: str
    port: int
    sni: str
    ca: Path

    @classmethod
    def from_frontend(cls, frontend: Frontend) -> Pin:
        return cls(frontend.host, frontend.port, frontend.sni, Path(frontend.ca))

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh context per client: httpcore sets ALPN on the context it is given, so a
        shared one would let an HTTP/2 client change what an HTTP/1.1 client offers."""
        if not self.ca.is_file():
            raise ConfigError(f"CA file {self.ca} does not exist: run `gtnb certs` to create it")
        ctx = _StrictContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
        ctx.load_verify_locations(cafile=str(self.ca))
        return ctx

    def client(self, *, http2: bool = False, keepalive: bool = True, timeout_s: float = 30.0) -> httpx.Client:
        """An httpx client pinned to the balancer.

        Parameters:
            http2: offer h2 in ALPN (HAProxy then speaks HTTP/2); else HTTP/1.1 only.
            keepalive: reuse connections; False opens a new connection per request, as a
                curl loop does.
            timeout_s: read timeout (the longest wait for the next bytes).
        """
        return httpx.Client(
            base_url=self.base_url,
            verify=self.ssl_context(),
            http1=True,
            http2=http2,
            timeout=httpx.Timeout(timeout_s, connect=_CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_keepalive_connections=None if keepalive else 0),
            headers={"host": self.sni},
            trust_env=False,  # a proxy from the environment must never sit between us and the lab
        )

    def extensions(self, trace: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
        ext: dict[str, Any] = {"sni_hostname": self.sni}
        if trace is not None:
            ext["trace"] = trace
        return ext


class _StrictContext(ssl.SSLContext):
    """Surfaces a peer that vanished without TLS close_notify instead of reading it as a clean
    end: Python's default (`suppress_ragged_eofs`) turns a TCP reset into b"", so a reset would
    look like an empty reply. Measured here: a reset raises a bare SSLEOFError, a FIN without
    close_notify one whose reason is UNEXPECTED_EOF_WHILE_READING."""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        kwargs["suppress_ragged_eofs"] = False
        return super().wrap_socket(sock, *args, **kwargs)


@dataclass
class RequestResult:
    """One client.csv row (columns and meanings in docs/contracts.md)."""

    worker: int
    request_id: str
    path: str
    http_version: str
    t_start: float
    t_end: float = 0.0
    status: int | None = None
    error: str = ""
    curl_exit: int = 0
    bytes: int = 0
    chunks: int = 0
    complete: bool = False
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.complete and not self.error


@dataclass(frozen=True)
class ChunkArrival:
    request_id: str
    k: int
    t: float


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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (httpx wraps httpcore, which wraps the socket's error)."""
    seen: BaseException | None = exc
    depth = 0
    while seen is not None and depth < 10:
        yield seen
        seen, depth = seen.__cause__ or seen.__context__, depth + 1


def _h2_event(exc: BaseException) -> Any:
    """The h2 event behind an httpx error (httpcore raises RemoteProtocolError(event))."""
    for err in _chain(exc):
        for arg in err.args:
            if isinstance(arg, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                return arg
    return None


def _ssl_eof(exc: BaseException) -> ssl.SSLEOFError | None:
    return next((e for e in _chain(exc) if isinstance(e, ssl.SSLEOFError)), None)


def _code_name(code: Any) -> str:
    return getattr(code, "name", str(code))


def classify(exc: BaseException, *, http_version: str, got_headers: bool) -> tuple[str, int, str]:
    """Name what went wrong and the curl exit code a seed user would have seen.

    Parameters:
        exc: the exception the request raised.
        http_version: `HTTP/1.1` or `HTTP/2` (what was negotiated, or offered).
        got_headers: whether the response headers had arrived.

    Returns:
        (error kind, curl exit code, detail) with kinds from docs/contracts.md.
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", 28, f"{type(exc).__name__}: operation timed out"
    if isinstance(exc, httpx.ConnectError):
        # A reset or an SSL error during the handshake is curl's 35, a refused connect its 7.
        if any(isinstance(e, (ssl.SSLError, ConnectionResetError)) for e in _chain(exc)):
            return "connect_failed", 35, f"TLS handshake failed: {text}"
        return "connect_failed", 7, f"Failed to connect: {text}"
    event = _h2_event(exc)
    if isinstance(event, h2.events.StreamReset):
        return "stream_reset", 92, _code_name(event.error_code)
    if isinstance(event, h2.events.ConnectionTerminated):
        # GOAWAY: curl reports it as an HTTP/2 framing-layer error.
        return "stream_reset", 16, f"GOAWAY {_code_name(event.error_code)}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending a response" in text or (not got_headers and "disconnected" in text):
            return "connection_reset", 52, "Empty reply from server"
        if "complete message body" in text or got_headers:
            if http_version == "HTTP/2":
                return "truncated", 92, f"HTTP/2 stream was not closed cleanly: {text}"
            return "truncated", 18, f"transfer closed with outstanding read data remaining: {text}"
        return "connection_reset", 56, text
    eof = _ssl_eof(exc)
    if eof is not None and "UNEXPECTED_EOF" in str(eof):
        # The peer closed (FIN) without a TLS close_notify.
        if not got_headers:
            return "connection_reset", 52, "Empty reply from server (closed without TLS close_notify)"
        if http_version == "HTTP/2":
            return "truncated", 92, "HTTP/2 stream was not closed cleanly: connection closed"
        return "truncated", 18, "transfer closed with outstanding read data remaining"
    if isinstance(exc, httpx.WriteError):
        return "connection_reset", 55, f"Send failure: {text}"
    if isinstance(exc, (httpx.ReadError, httpx.TransportError)):
        return "connection_reset", 56, f"Recv failure: {text}"
    return "connection_reset", 56, f"{type(exc).__name__}: {text}"


def _negotiated(response: httpx.Response | None, offered_h2: bool) -> str:
    if response is not None:
        return response.http_version
    return "HTTP/2" if offered_h2 else "HTTP/1.1"


def _finish(result: RequestResult, response: httpx.Response | None, exc: BaseException | None,
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
    response: httpx.Response | None = None
    exc: BaseException | None = None
    with pin.client(http2=http2, timeout_s=timeout_s) as client:
        try:
            with client.stream("GET", path, headers={"x-request-id": request_id},
                               extensions=pin.extensions(cancel.trace if cancel else None)) as response:
                result.status, result.http_version = response.status_code, response.http_version
                for data in response.iter_raw():
                    result.bytes += len(data)
            result.complete = 200 <= response.status_code < 300
        except httpx.HTTPError as err:
            exc = err
    _finish(result, response, exc, cancel)
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
    response: httpx.Response | None = None
    exc: BaseException | None = None
    saw_final = False
    with pin.client(http2=http2, timeout_s=timeout_s) as client:
        try:
            with client.stream("GET", path, headers={"x-request-id": request_id},
                               extensions=pin.extensions(cancel.trace if cancel else None)) as response:
                result.status, result.http_version = response.status_code, response.http_version
                for line in _lines(response, result):
                    if line.startswith("chunk "):
                        arrival = ChunkArrival(request_id, _chunk_number(line, len(arrivals) + 1), time.time())
                        arrivals.append(arrival)
                        result.chunks = len(arrivals)
                        if on_chunk is not None:
                            on_chunk(arrival)
                    elif line == FINAL_LINE:
                        saw_final = True
        except httpx.HTTPError as err:
            exc = err
    _finish(result, response, exc, cancel)
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


class Load:
    """N workers requesting one path in a loop for a duration (S3: 10 x `/fast` for 90 s).

    Threads, each with its own client: TLS handshakes and socket reads release the GIL, and a
    blocking client per worker mirrors the seed's independent curl loops.

    Parameters:
        pin: where to connect.
        path: what each request asks for.
        workers: concurrent loops.
        duration_s: how long the loops run.
        keepalive: reuse each worker's connection (default False: a new connection per
            request, as the seed's curl loop).
        http2: offer HTTP/2.
        timeout_s: per-request read timeout.
    """

    def __init__(
        self,
        pin: Pin,
        *,
        path: str = "/fast",
        workers: int = 10,
        duration_s: float = 90.0,
        keepalive: bool = False,
        http2: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"workers={workers} must be >= 1")
        self.pin, self.path, self.workers = pin, path, workers
        self.duration_s, self.keepalive, self.http2, self.timeout_s = duration_s, keepalive, http2, timeout_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._results: list[list[RequestResult]] = [[] for _ in range(workers)]
        self.started_at: float | None = None

    def start(self) -> None:
        """Start the workers and return at once."""
        self.started_at = time.time()
        deadline = time.monotonic() + self.duration_s
        for w in range(self.workers):
            t = threading.Thread(target=self._work, args=(w, deadline), name=f"gtnb-load-{w}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        """Ask the workers to finish their current request and stop."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the workers; True when all have ended."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def done(self) -> bool:
        return bool(self._threads) and not any(t.is_alive() for t in self._threads)

    def counts(self) -> tuple[int, int]:
        """(completed, failed) so far, for progress."""
        ok = failed = 0
        for rows in self._results:
            for r in list(rows):
                if r.ok:
                    ok += 1
                else:
                    failed += 1
        return ok, failed

    def results(self) -> list[RequestResult]:
        """Every request so far, in start order."""
        return sorted((r for rows in self._results for r in list(rows)), key=lambda r: r.t_start)

    def _work(self, worker: int, deadline: float) -> None:
        rows = self._results[worker]
        version = "HTTP/2" if self.http2 else "HTTP/1.1"
        ext = self.pin.extensions()
        n = 0
        with self.pin.client(http2=self.http2, keepalive=self.keepalive, timeout_s=self.timeout_s) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n += 1
                request_id = f"w{worker}-{n}"
                result = RequestResult(worker, request_id, self.path, version, time.time())
                response: httpx.Response | None = None
                exc: BaseException | None = None
                try:
                    response = client.get(self.path, headers={"x-request-id": request_id}, extensions=ext)
                    result.status, result.http_version = response.status_code, response.http_version
                    result.bytes = len(response.content)
                    result.complete = 200 <= response.status_code < 300
                except httpx.HTTPError as err:
                    exc = err
                _finish(result, response, exc, None)
                rows.append(result)


def write_client_csv(path: Path, results: Iterable[RequestResult]) -> int:
    """Write client.csv; returns the number of rows."""
    n = 0
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CLIENT_COLUMNS)
        writer.writeheader()
        for r in results:
            row = asdict(r)
            row["status"] = "" if r.status is None else r.status
            row["complete"] = "true" if r.complete else "false"
            row["t_start"], row["t_end"] = f"{r.t_start:.6f}", f"{r.t_end:.6f}"
            writer.writerow(row)
            n += 1
    return n


def write_chunks_csv(path: Path, arrivals: Iterable[ChunkArrival]) -> int:
    """Write chunks.csv (S4); returns the number of rows."""
    n = 0
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CHUNK_COLUMNS)
        for a in arrivals:
            writer.writerow((a.request_id, a.k, f"{a.t:.6f}"))
            n += 1
    return n


assert tuple(f.name for f in fields(RequestResult)) == CLIENT_COLUMNS  # the contract's order
