"""Reading Envoy's admin `/stats` text: the active request and connection counts.

Two readers, two rules, on purpose:

- the hc sidecar asks "is any request still in flight?" and sums the HTTP connection managers'
  `downstream_rq_active` (and reports listener `downstream_cx_active` beside it);
- the agent copies Istio's pilot-agent (`activeProxyConnections`), which sums only listener
  `downstream_cx_active`, skipping per-worker stats and Istio's own listeners. HAProxy's idle
  keep-alive connections keep that number above zero after the last request ended: the
  pitfall the local lab must show.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "ActiveCounts",
    "HC_STATS_QUERY",
    "ISTIO_STATS_QUERY",
    "parse_stats",
    "hc_active_counts",
    "istio_active_connections",
]

# `usedonly` skips stats never written; the filter is Envoy's regex on the stat name.
HC_STATS_QUERY = "/stats?usedonly&filter=" + quote(r"downstream_(rq|cx)_active$", safe="")
ISTIO_STATS_QUERY = "/stats?usedonly&filter=downstream_cx_active$"

# Listeners Istio's agent ignores: its own status (15021) and Prometheus (15090) ports, the admin
# listener and Envoy's internal ones.
_ISTIO_SKIP = ("listener.admin.", "_15021.", "_15090.", "listener.internal")


@dataclass(frozen=True)
class ActiveCounts:
    """One poll of Envoy: requests in flight and open downstream connections (admin excluded)."""

    rq_active: int
    cx_active: int


def parse_stats(text: str) -> dict[str, int]:
    """Parse `name: value` lines of `/stats` (text format) into a dict; other lines are skipped.

    Histograms and non-integer values are ignored: only counters and gauges matter here.
    """
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().rpartition(": ")
        if not sep:
            continue
        try:
            stats[name] = int(value)
        except ValueError:
            continue
    return stats


def hc_active_counts(text: str) -> ActiveCounts:
    """Sum what the hc drain waits on.

    Returns:
        rq_active: every `http.<prefix>.downstream_rq_active` except the admin's own (the stats
        request itself is one); cx_active: listener-level `downstream_cx_active` except admin.
    """
    rq = cx = 0
    for name, value in parse_stats(text).items():
        if name.endswith(".downstream_rq_active") and name.startswith("http.") and not name.startswith("http.admin."):
            rq += value
        elif name.endswith(".downstream_cx_active") and name.startswith("listener.") \
                and not name.startswith("listener.admin.") and ".worker_" not in name:
            cx += value
    return ActiveCounts(rq_active=rq, cx_active=cx)


def istio_active_connections(text: str) -> int:
    """Sum active connections the way Istio's pilot-agent does.

    Returns:
        The sum of `listener.*.downstream_cx_active` without per-worker stats and Istio's own
        listeners; -1 when the stats are empty (Istio then skips the wait).
    """
    if not text.strip():
        return -1
    total = 0
    for name, value in parse_stats(text).items():
        if not name.startswith("listener.") or "worker_" in name:
            continue
        if not name.endswith("downstream_cx_active") or any(s in name for s in _ISTIO_SKIP):
            continue
        total += value
    return total
