"""HAProxy's view of the IGW servers, from `show stat` on any Balancer: rows read by header name
(2.6 prints 140+ columns and the set grows between versions), and a wait until the servers that
should serve are UP with a passed check and every other server has been checked at least once.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable

from .errors import BalancerError
from .targets.base import Balancer

__all__ = ["IGW_BACKEND", "backend_servers", "server_is_up", "unsettled", "wait_servers_up"]

IGW_BACKEND = "istio-http-backend"  # the HAProxy backend whose servers are named after the nodes
POLL_S = 0.1


def backend_servers(stat: str, backend: str = IGW_BACKEND) -> dict[str, dict[str, str]]:
    """Read a `show stat` CSV by header name: server name -> its row, for one backend.

    Parameters:
        stat: what the admin socket's `show stat` printed (first line `# pxname,svname,...`).
        backend: the backend (`pxname`) whose servers to return.

    Returns:
        One dict per server (FRONTEND/BACKEND rows left out), keyed by column name.
    """
    rows = csv.DictReader(io.StringIO(stat.lstrip("# ")))
    return {
        r["svname"]: r
        for r in rows
        if r.get("pxname") == backend and r.get("svname") not in ("FRONTEND", "BACKEND", None)
    }


def server_is_up(row: dict[str, str]) -> bool:
    """True when a `show stat` server row is UP *and* its last check passed.

    Right after a reload HAProxy 2.6 shows every checked server as `UP 1/2` (`UP 1/3` with fall
    3) with check_status `INI`, even one with nothing behind it, until its first check runs
    (0.5-1.5 s here): "UP" alone proves nothing then.
    """
    return row.get("status") == "UP" and row.get("check_status", "").endswith("OK")


def unsettled(servers: dict[str, dict[str, str]], up: Iterable[str]) -> list[str]:
    """Why HAProxy's view does not match the lab yet: [] once exactly the `up` servers are UP
    with a passed check, every other server is DOWN (or MAINT), and none is unchecked since the
    last reload (`INI`).

    Why exactly: a server still UP for a pod that is going away (a scale-down, the previous
    mode's pods) takes its share of round robin, so the run's request can land on a pod that is
    not the one killed (seen: `503 DC--` on worker2 while the deleted pod was on worker1). A
    server going UP or DOWN (`DOWN 1/2`, `UP 1/3`) is not settled either.

    Parameters:
        servers: `backend_servers()` of one `show stat`.
        up: the servers that must be UP (the nodes with a Ready pod of the run).

    Returns:
        One phrase per server that is not as it should be, e.g. "worker2 UP (should be DOWN)".
    """
    want = set(up)
    out = [f"{n} missing from HAProxy's backend" for n in sorted(want - set(servers))]
    for name, row in sorted(servers.items()):
        status, check = row.get("status", ""), row.get("check_status", "")
        if check == "INI":
            out.append(f"{name} not checked since the reload ({status}, check INI)")
        elif name in want and not server_is_up(row):
            out.append(f"{name} {status} check {check} (should be UP)")
        elif name not in want and status not in ("DOWN", "MAINT"):
            out.append(f"{name} {status} (should be DOWN: no Ready pod of the run on it)")
    return out


def wait_servers_up(
    balancer: Balancer, expected: Iterable[str], *, timeout_s: float, backend: str = IGW_BACKEND
) -> dict[str, dict[str, str]]:
    """Wait until HAProxy sees the `expected` servers UP and has checked every server.

    "Checked every server" matters right after a reload: a fresh worker counts each checked server
    UP (`UP 1/N`, check `INI`) until its first check, so a request round robin sends to a node
    with nothing behind it fails (here a 503 after 3 s of connect retries). Measured: 0.5-1.5 s
    with the committed configs.

    Parameters:
        balancer: any gtnb Balancer (its `show_stat()`).
        expected: server names that must be UP (the nodes with a Ready pod).
        timeout_s: how long to wait.
        backend: the backend (`pxname`).

    Returns:
        The backend's servers (name -> row) once settled. Raises BalancerError naming a missing
        server, or after `timeout_s` the servers still not UP (with their check status) or not
        yet checked.
    """
    want = sorted(set(expected))
    deadline = time.monotonic() + timeout_s
    while True:
        servers = backend_servers(balancer.show_stat(), backend)
        missing = [n for n in want if n not in servers]
        if missing:
            raise BalancerError(
                f"HAProxy backend {backend} has no server {', '.join(missing)} (it has "
                f"{', '.join(servers) or 'none'}): the config's server names must be the node names"
            )
        down = [n for n in want if not server_is_up(servers[n])]
        unchecked = sorted(n for n, row in servers.items() if row.get("check_status") == "INI")
        if not down and not unchecked:
            return servers
        if time.monotonic() >= deadline:
            if down:
                raise BalancerError(
                    f"verification failed: after {timeout_s:g} s HAProxy still does not see "
                    + ", ".join(f"{n} UP (status {servers[n].get('status')}, check {servers[n].get('check_status')})" for n in down)
                    + ": is the hc sidecar answering on port 15080 of those nodes?"
                )
            raise BalancerError(
                f"verification failed: after {timeout_s:g} s HAProxy has not checked {', '.join(unchecked)} "
                "since its reload: are health checks enabled on those servers?"
            )
        time.sleep(POLL_S)
