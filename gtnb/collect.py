"""Artifact collectors that run for the whole run: hc.log, envoy.log, haproxy.log, stat.csv, run.log.

Each source gets its own thread, so a slow source (an SSH round trip, a pod that is slow to start)
never delays another, and the traffic threads only ever wait on their sockets. Pods are polled,
so pods created during a rollout are followed from their first line. Everything is stopped in
`stop()`, which the run calls in `finally`.

Lines older than the collectors' start are dropped: `kubectl logs` (and the lab's follow_logs)
replays a container from its start, and a pod that was already running would otherwise bring
the checks it served long before the run into hc.log.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .artifacts import rfc3339
from .targets.base import Balancer, Cluster, Pod

__all__ = [
    "HC_CONTAINER",
    "PROXY_CONTAINER",
    "RunLog",
    "Collectors",
    "parse_show_stat",
    "prefix_epoch",
    "stat_rows",
]

HC_CONTAINER = "hc"
PROXY_CONTAINER = "istio-proxy"
_FOLLOW_RETRIES = 5  # a container that is not up yet gets a few more tries on later polls

log = logging.getLogger(__name__)


class RunLog:
    """run.log: the run narrated, one `<RFC3339 us>Z <message>` line per step, also logged to
    the `gtnb.run` logger so the CLI and notebooks show the same story.

    Parameters:
        path: the run.log file (appended to).
        echo: also show each message to a person (e.g. tqdm.write to stderr).
    """

    def __init__(self, path: Path, *, echo: Callable[[str], None] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.path = path
        self._fh: TextIO | None = open(path, "a", buffering=1)
        self._lock = threading.Lock()
        self._logger = logger or logging.getLogger("gtnb.run")
        self._echo = echo

    def __call__(self, message: str) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.write(f"{rfc3339()} {message}\n")
            if self._echo is not None:
                self._echo(message)
        self._logger.info(message)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class _LineFile:
    """A file many follower threads append whole lines to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._fh: TextIO | None = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.write(line if line.endswith("\n") else line + "\n")
                self.lines += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def prefix_epoch(line: str) -> float | None:
    """Epoch seconds of a `kubectl logs --timestamps` prefix (`2026-...T..:..:..123456789Z `).

    Returns:
        The time, or None when the line has no such prefix.
    """
    stamp = line.split(" ", 1)[0]
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    body = stamp[:-1]
    if "." in body:
        whole, frac = body.split(".", 1)
        body = f"{whole}.{frac[:6]}"  # fromisoformat takes microseconds, not nanoseconds
    try:
        return datetime.fromisoformat(body).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def parse_show_stat(text: str) -> tuple[list[str], list[list[str]]]:
    """Split `show stat` output into its header (without `# `) and rows.

    Returns:
        (column names, rows as lists of strings). Raises ValueError without a header line.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("#"):
        raise ValueError(f"`show stat` output has no '# pxname,...' header: {text[:80]!r}")
    header = lines[0].lstrip("#").strip().rstrip(",").split(",")
    rows = [ln.rstrip(",").split(",") for ln in lines[1:]]
    return header, rows


@dataclass
class _Jitter:
    scheduled_late: list[float] = field(default_factory=list)  # actual - scheduled, s
    periods: list[float] = field(default_factory=list)  # between consecutive samples, s
    missed: int = 0
    errors: int = 0

    def summary(self, interval_s: float) -> dict[str, Any]:
        late = sorted(self.scheduled_late)

        def q(values: list[float], p: float) -> float | None:
            return round(values[min(len(values) - 1, int(p * len(values)))], 6) if values else None

        periods = sorted(self.periods)
        return {
            "samples": len(late),
            "missed": self.missed,
            "errors": self.errors,
            "late_mean": round(statistics.fmean(late), 6) if late else None,
            "late_p95": q(late, 0.95),
            "late_max": round(late[-1], 6) if late else None,
            "period_mean": round(statistics.fmean(periods), 6) if periods else None,
            "period_min": round(periods[0], 6) if periods else None,
            "period_max": round(periods[-1], 6) if periods else None,
            "interval_s": interval_s,
        }


class Collectors:
    """Every collector of one run, started together and stopped together.

    Parameters:
        cluster, balancer: the target's parts.
        run_dir: where hc.log, envoy.log, haproxy.log and stat.csv go.
        runlog: the run's narration (pod changes are narrated here).
        stat_interval_s: the `show stat` sampling period (default 0.2 s).
        pod_poll_s: how often the pod list is polled for new pods.
        since: drop container lines older than this epoch time (default: start()).
    """

    def __init__(
        self,
        cluster: Cluster,
        balancer: Balancer,
        run_dir: Path,
        *,
        runlog: Callable[[str], None],
        stat_interval_s: float = 0.2,
        pod_poll_s: float = 0.5,
        since: float | None = None,
    ) -> None:
        self.cluster, self.balancer, self.run_dir = cluster, balancer, Path(run_dir)
        self.runlog = runlog
        self.stat_interval_s, self.pod_poll_s, self.since = stat_interval_s, pod_poll_s, since
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._files: dict[str, _LineFile] = {}
        self._followed: dict[tuple[str, str], int] = {}  # (pod, container) -> attempts
        self._last_ts: dict[tuple[str, str], float] = {}
        self._pods_seen: dict[str, Pod] = {}
        self._jitter = _Jitter()
        self._cpu_s = 0.0
        self._cpu_lock = threading.Lock()
        self.errors: list[str] = []
        self.started = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the artifact files and start every collector thread."""
        if self.since is None:
            self.since = time.time()
        for name in ("hc.log", "envoy.log", "haproxy.log"):
            self._files[name] = _LineFile(self.run_dir / name)
        self.started = True
        self._spawn("gtnb-collect-haproxy-log", self._follow_haproxy)
        self._spawn("gtnb-collect-stat", self._sample_stats)
        self._spawn("gtnb-collect-pods", self._watch_pods)

    def stop(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Stop every collector, close the files and summarize.

        Returns:
            {"stat_interval_s", "stat_jitter_s", "lines": {file: n}, "pods": [...],
             "pod_nodes": {pod: node}, "errors": [...], "cpu_s": CPU seconds the collector threads used}.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        with self._threads_lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            # A source that ignores `stop` must not hang the run; say so in the run's story.
            self.runlog(f"collectors still running after {timeout_s:g} s: {', '.join(stuck)}")
        for f in self._files.values():
            f.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {
            "stat_interval_s": self.stat_interval_s,
            "stat_jitter_s": self._jitter.summary(self.stat_interval_s),
            "lines": {name: f.lines for name, f in self._files.items()},
            "pods": sorted(self._pods_seen),
            "pod_nodes": {name: pod.node for name, pod in sorted(self._pods_seen.items()) if pod.node},
            "errors": list(self.errors),
            "cpu_s": round(self._cpu_s, 4),
        }

    def __enter__(self) -> Collectors:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # a collector must never take the run down with it
                self._error(f"{name} failed: {type(exc).__name__}: {exc}")
            finally:
                # thread_time(): this thread's own CPU, for the benchmark of collector cost.
                with self._cpu_lock:
                    self._cpu_s += time.thread_time()

        t = threading.Thread(target=run, name=name, daemon=True)
        with self._threads_lock:
            self._threads.append(t)
        t.start()

    def _error(self, message: str) -> None:
        self.errors.append(message)
        self.runlog(message)

    # -- pods ----------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                pods = self.cluster.pods()
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:
                    self._error(f"listing pods failed ({type(exc).__name__}: {exc}); retrying")
                self._stop.wait(self.pod_poll_s)
                continue
            self._narrate(pods)
            for pod in pods:
                if pod.phase == "Pending" or pod.node is None:
                    continue  # no container to follow yet
                for container in pod.containers:
                    if container in (HC_CONTAINER, PROXY_CONTAINER):
                        self._maybe_follow(pod.name, container)
            self._stop.wait(self.pod_poll_s)

    def _narrate(self, pods: Iterable[Pod]) -> None:
        now = {p.name: p for p in pods}
        for name, pod in now.items():
            old = self._pods_seen.get(name)
            if old is None:
                self.runlog(f"pod {name} seen: {pod.phase}, node {pod.node}, mode {pod.mode}, "
                            f"ready {pod.ready}")
            elif (old.phase, old.node) != (pod.phase, pod.node):
                self.runlog(f"pod {name}: {old.phase} -> {pod.phase}, ready {pod.ready}, node {pod.node}")
            elif old.ready != pod.ready:
                self.runlog(f"pod {name} {'ready' if pod.ready else 'not ready'} ({pod.phase}, node {pod.node})")
            self._pods_seen[name] = pod
        for name, old in self._pods_seen.items():
            if name not in now and old.phase != "Gone":
                self.runlog(f"pod {name} gone")
                self._pods_seen[name] = Pod(name, old.node, old.mode, "Gone", False, old.template_hash)

    def _maybe_follow(self, pod: str, container: str) -> None:
        key = (pod, container)
        attempts = self._followed.get(key)
        if attempts is not None and (attempts < 0 or attempts >= _FOLLOW_RETRIES):
            return  # running (-1) or given up
        self._followed[key] = -1
        self._spawn(f"gtnb-collect-{pod}-{container}", self._follow_container, pod, container, attempts or 0)

    def _follow_container(self, pod: str, container: str, attempts: int) -> None:
        key = (pod, container)
        out = self._files["hc.log" if container == HC_CONTAINER else "envoy.log"]
        since = self.since or 0.0
        try:
            for line in self.cluster.follow_logs(pod, container, self._stop):
                ts = prefix_epoch(line)
                if ts is not None:
                    # Skip history (before the run) and, on a retry (which replays the container
                    # from its start), the lines an earlier attempt already wrote.
                    if ts < since or (attempts and ts <= self._last_ts.get(key, float("-inf"))):
                        continue
                    self._last_ts[key] = ts
                if container == HC_CONTAINER:
                    out.write(line.split(" ", 1)[1] if ts is not None and " " in line else line)
                else:
                    out.write(f"[pod/{pod}/{container}] {line}")
        except Exception as exc:
            self._followed[key] = attempts + 1  # the watcher tries again on a later poll
            if attempts + 1 >= _FOLLOW_RETRIES:
                self._error(f"giving up following {pod}/{container}: {type(exc).__name__}: {exc}")
            return

    # -- HAProxy -------------------------------------------------------------------------------

    def _follow_haproxy(self) -> None:
        out = self._files["haproxy.log"]
        for line in self.balancer.follow_log(self._stop):
            out.write(line)

    def _sample_stats(self) -> None:
        interval = self.stat_interval_s
        path = self.run_dir / "stat.csv"
        header: list[str] | None = None
        with open(path, "w", newline="", buffering=1) as fh:
            writer = csv.writer(fh)
            t0 = time.monotonic()
            k = 0
            previous: float | None = None
            while not self._stop.is_set():
                scheduled = t0 + k * interval
                delay = scheduled - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                actual = time.monotonic()
                self._jitter.scheduled_late.append(actual - scheduled)
                if previous is not None:
                    self._jitter.periods.append(actual - previous)
                previous = actual
                ts = time.time()
                try:
                    columns, rows = parse_show_stat(self.balancer.show_stat())
                except Exception as exc:
                    self._jitter.errors += 1
                    if self._jitter.errors == 1:
                        self._error(f"show stat failed ({type(exc).__name__}: {exc}); still sampling")
                    columns, rows = [], []
                if columns and header is None:
                    header = columns
                    writer.writerow(["ts", *header])
                if header is not None:
                    _write_rows(writer, ts, header, columns, rows)
                # Schedule on a fixed grid (no drift); when a sample took longer than a period,
                # skip the slots it ate instead of firing a burst.
                k += 1
                due = int((time.monotonic() - t0) / interval)
                if due > k:
                    self._jitter.missed += due - k
                    k = due


def _write_rows(writer: Any, ts: float, header: list[str], columns: list[str], rows: list[list[str]]) -> None:
    stamp = f"{ts:.6f}"
    if columns == header:
        for row in rows:
            writer.writerow([stamp, *row[: len(header)], *([""] * (len(header) - len(row)))])
        return
    # A reload to another HAProxy version may change the columns: keep the first header's.
    index = {name: i for i, name in enumerate(columns)}
    for row in rows:
        writer.writerow([stamp, *(row[index[c]] if c in index and index[c] < len(row) else "" for c in header)])


def stat_rows(path: Path) -> list[dict[str, str]]:
    """Read stat.csv back (tests and quick looks)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(io.StringIO(fh.read())))
