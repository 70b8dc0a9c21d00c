"""N workers requesting one path in a loop for a duration (S3)."""

from __future__ import annotations

import threading
import time

import httpx

from ..errors import ConfigError
from .pin import Pin
from .results import RequestResult
from .single import finish

__all__ = ["Load"]


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
                finish(result, response, exc, None)
                rows.append(result)
