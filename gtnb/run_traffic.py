"""The traffic of one run, whatever its shape, behind one small interface: start, wait, cancel,
results. `run_loop` drives it without knowing whether it is a request, a stream or a load."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .scenarios import Scenario
from .traffic import (
    Canceller,
    ChunkArrival,
    Load,
    Pin,
    RequestResult,
    long_request,
    stream_request,
    write_chunks_csv,
    write_client_csv,
)

__all__ = ["RunTraffic"]


class RunTraffic:
    """S1/S2: one `/sleep` request; S4: one `/stream`; S3: N workers on `path` (the seed's `/fast`).

    Parameters:
        scenario: which shape.
        params: the run's validated parameters.
        pin: where the clients connect.
    """

    def __init__(self, scenario: Scenario, params: dict[str, Any], pin: Pin) -> None:
        self.scenario, self.params, self.pin = scenario, params, pin
        self.cancel_token = Canceller()
        self._results: list[RequestResult] = []
        self._chunks: list[ChunkArrival] = []
        self._thread: threading.Thread | None = None
        self._load: Load | None = None
        timeout = params["duration_s"] + params["timeout_margin_s"]
        d = params["duration_s"]
        if scenario.shape == "load":
            self._load = Load(pin, path=params["path"], workers=params["workers"], duration_s=d,
                              keepalive=params["keepalive"], http2=params["http2"],
                              timeout_s=params["timeout_margin_s"])
            self.describe = f"{params['workers']} workers x {params['path']} for {d:g} s"
        elif scenario.shape == "stream":
            path = f"/stream?seconds={d:g}&interval={params['interval_s']:g}"
            self._target = lambda: self._run_stream(path, timeout)
            self.describe = f"HTTP/{'2' if params['http2'] else '1.1'} GET {path}"
        else:
            path = f"/sleep?seconds={d:g}"
            self._target = lambda: self._run_request(path, timeout)
            self.describe = f"HTTP/{'2' if params['http2'] else '1.1'} GET {path}"

    def start(self) -> None:
        if self._load is not None:
            self._load.start()
            return
        self._thread = threading.Thread(target=self._target, name="gtnb-traffic", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        if self._load is not None:
            return self._load.done
        return self._thread is not None and not self._thread.is_alive()

    def join(self, timeout_s: float) -> bool:
        if self._load is not None:
            return self._load.join(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.done

    def cancel(self) -> None:
        """Abort what is in flight (the run was interrupted or failed)."""
        if self._load is not None:
            self._load.stop()
        self.cancel_token.cancel()

    def results(self) -> list[RequestResult]:
        if self._load is not None:
            return self._load.results()
        return list(self._results)

    def progress(self) -> str:
        """A short status for the progress bar."""
        if self._load is not None:
            ok, failed = self._load.counts()
            return f"ok={ok} failed={failed}"
        if self.scenario.shape == "stream":
            return f"chunks={len(self._chunks)}"
        return "in flight" if not self.done else "ended"

    def write(self, run_dir: Path) -> int:
        """Write client.csv (and chunks.csv for a stream); returns the client rows."""
        rows = write_client_csv(run_dir / "client.csv", self.results())
        if self.scenario.shape == "stream":
            write_chunks_csv(run_dir / "chunks.csv", list(self._chunks))
        return rows

    def summary(self) -> str:
        results = self.results()
        if not results:
            return "no request finished"
        if self._load is not None:
            failed = [r for r in results if not r.ok]
            kinds: dict[str, int] = {}
            for r in failed:
                kinds[r.error or f"status {r.status}"] = kinds.get(r.error or f"status {r.status}", 0) + 1
            return f"{len(results)} requests, {len(failed)} failed {kinds if kinds else ''}".rstrip()
        r = results[0]
        outcome = "completed" if r.ok else f"CUT ({r.error}, curl exit {r.curl_exit}, {r.detail})"
        extra = f", {r.chunks} chunks" if self.scenario.shape == "stream" else ""
        return f"status {r.status}, {outcome} after {r.t_end - r.t_start:.2f} s{extra}"

    def _run_request(self, path: str, timeout: float) -> None:
        self._results.append(long_request(self.pin, path, http2=self.params["http2"], timeout_s=timeout,
                                          request_id=f"{self.scenario.name.lower()}-1",
                                          cancel=self.cancel_token))

    def _run_stream(self, path: str, timeout: float) -> None:
        result, _ = stream_request(self.pin, path, http2=self.params["http2"], timeout_s=timeout,
                                   request_id=f"{self.scenario.name.lower()}-1", cancel=self.cancel_token,
                                   on_chunk=self._chunks.append)
        self._results.append(result)
