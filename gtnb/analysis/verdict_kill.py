"""Checks about the kill itself: did it hit the pod serving the request, and in what order did
current mode's two cuts come.

A run whose in-flight request went to another replica (S1 scales to one replica: a replica
still going away after the scale-down can take it, G saw HAProxy `503 DC--` on worker2 while
the deleted pod was on worker1) tested nothing, whatever the client saw: its verdict must say
so rather than "as expected".
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .cut_cause import origin_path
from .verdict_checks import Check, primary_events

__all__ = ["SERVED_BY_KILLED", "request_server", "served_by_killed_check", "current_order_check"]

SERVED_BY_KILLED = "request on the killed pod's node"  # the check's name (Verdict.headline reads it)
_ACCEPT_S = 2.0  # the request log line's accept date vs the client's start (TLS, clock granularity)
_END_S = 1.0  # or its log time vs the client's end (the line is written when the request ends)


def request_server(run: Any, row: pd.Series) -> str | None:
    """The HAProxy server a client request went to, from its request log line (same path,
    accepted within 2 s of the client's start, else logged within 1 s of its end); None when
    haproxy.log has no such line (an HTTP/2 stream refused by a dying Envoy is never logged)."""
    hap = run.frames["haproxy"]
    if hap.empty or not {"kind", "server", "path", "accepted", "ts"} <= set(hap):
        return None
    req = hap[(hap["kind"] == "request")
              & (hap["path"].fillna("").astype(str).map(origin_path) == str(row.get("path") or ""))]
    for column, client_ts, limit in (("accepted", row.get("ts"), _ACCEPT_S), ("ts", row.get("ts_end"), _END_S)):
        if client_ts is None or pd.isna(client_ts):
            continue
        cand = req[req[column].notna()]
        if cand.empty:
            continue
        gap = (cand[column] - client_ts).abs().dt.total_seconds()
        best = gap.idxmin()
        if gap[best] <= limit and str(cand.loc[best, "server"] or "") not in ("", "nan", "<NOSRV>"):
            return str(cand.loc[best, "server"])
    return None


def served_by_killed_check(run: Any, row: pd.Series | None) -> Check:
    """The in-flight request (S1/S2/S4) went to the killed pod's node (HAProxy servers are named
    after the nodes): run.json `killed_pod` and `pod_nodes` vs the request's log line."""
    expected = "the killed pod's node (run.json killed_pod, pod_nodes) = the request's HAProxy server"
    killed = run.journal.get("killed_pod")
    node = (run.journal.get("pod_nodes") or {}).get(killed) if killed else None
    if row is None:
        return Check(SERVED_BY_KILLED, expected, "no client request", None)
    if node is None:
        why = "run.json names no killed pod" if not killed else f"run.json has no node for {killed} (pod_nodes)"
        return Check(SERVED_BY_KILLED, expected, f"{why}: not judged", None)
    server = request_server(run, row)
    if server is None:
        return Check(SERVED_BY_KILLED, expected,
                     f"no HAProxy request line for {row.get('path')} (killed pod {killed} on {node}): not judged", None)
    if server == node:
        return Check(SERVED_BY_KILLED, expected, f"{server} (killed pod {killed} on {node})", True)
    return Check(SERVED_BY_KILLED, expected,
                 f"the request went to {server}, the killed pod {killed} was on {node}", False)


def current_order_check(run: Any) -> Check:
    """Current mode's order, shown (not judged: it follows the HAProxy timings in use): the seed's
    cluster and the committed haproxy-current.cfg mark DOWN (E2, shutdown-sessions cuts) ~3 s
    after E1, before pilot-agent kills the proxy (E4) terminationDrainDuration after SIGTERM."""
    ev = primary_events(run)
    e1, e2, e4 = (ev.get(n) for n in ("HEALTH_FAIL", "LB_DOWN", "PROXY_KILLED"))
    expected = "E1 < E2 (LB_DOWN: shutdown-sessions cuts) < E4 (PROXY_KILLED), as in the seed"
    if e1 is None or e2 is None or e4 is None:
        missing = [n for n, e in (("HEALTH_FAIL", e1), ("LB_DOWN", e2), ("PROXY_KILLED", e4)) if e is None]
        return Check("current-mode order", expected, f"missing {', '.join(missing)}", None)
    t2, t4 = ((e["ts"] - e1["ts"]).total_seconds() for e in (e2, e4))
    seen = f"LB_DOWN {t2:.2f} s, PROXY_KILLED {t4:.2f} s after E1"
    if t4 < t2:
        seen += ": the proxy was killed first (HAProxy's detection slower than terminationDrainDuration)"
    return Check("current-mode order", expected, seen, None)
