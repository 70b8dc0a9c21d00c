"""Keep collecting until HAProxy has reported the killed pod's server DOWN.

The run loop stops its collectors once the killed pod is gone. In current mode the pod can be
gone before HAProxy's last failed check (with HAProxy's default timings DOWN came 4.1-6.2 s
after hc failed, the pod was gone ~5 s after SIGTERM), and a run whose haproxy.log and stat.csv
stop before the DOWN has no E2. So before stopping, the loop waits (bounded) until both files,
as written so far, show the server DOWN after the termination event.

The files are read from disk (the collectors write them line-buffered), from the size they had
at the termination event on, so a DOWN of another run step (a scale-down, a toggle) never counts.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

__all__ = ["file_sizes", "down_seen", "wait_down_collected"]

POLL_S = 0.1
FILES = ("haproxy.log", "stat.csv")


def file_sizes(run_dir: Path) -> dict[str, int]:
    """The byte sizes of haproxy.log and stat.csv now (0 when missing): where to look from."""
    return {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in FILES}


def _tail(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", "replace")


def down_seen(run_dir: Path, server: str, since: dict[str, int], backend: str) -> dict[str, bool]:
    """Whether haproxy.log has `Server <backend>/<server> is DOWN` and stat.csv a sample with the
    server's status DOWN, each after its offset in `since`.

    Parameters:
        run_dir: the run directory (haproxy.log, stat.csv).
        server: the HAProxy server (the killed pod's node).
        since: `file_sizes()` at the termination event.
        backend: the IGW backend.

    Returns:
        {"haproxy.log": bool, "stat.csv": bool}.
    """
    log = f"Server {backend}/{server} is DOWN" in _tail(run_dir / "haproxy.log", since.get("haproxy.log", 0))
    stat = False
    path = run_dir / "stat.csv"
    if path.exists():
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
        if {"pxname", "svname", "status"} <= set(header):
            ix = {name: i for i, name in enumerate(header)}
            body = _tail(path, max(since.get("stat.csv", 0), 0))
            for row in csv.reader(io.StringIO(body)):
                if len(row) == len(header) and row[ix["pxname"]] == backend and row[ix["svname"]] == server \
                        and row[ix["status"]] in ("DOWN", "MAINT"):
                    stat = True
                    break
    return {"haproxy.log": log, "stat.csv": stat}


def wait_down_collected(run_dir: Path, server: str, since: dict[str, int], *, timeout_s: float,
                        backend: str) -> tuple[dict[str, bool], float]:
    """Wait until haproxy.log and stat.csv both show the server DOWN, at most `timeout_s`.

    Returns:
        (what `down_seen` found last, seconds waited). Never raises on a timeout: a run without
        the DOWN still has its other artifacts, and the analysis notes the missing LB_DOWN.
    """
    started = time.monotonic()
    while True:
        seen = down_seen(run_dir, server, since, backend)
        if all(seen.values()) or time.monotonic() - started >= timeout_s:
            return seen, time.monotonic() - started
        time.sleep(POLL_S)
