"""Which cut happened: name the cause of a cut request from the evidence, never from the mode.

In current mode two things can cut an in-flight request, and which comes first depends on the
HAProxy timings and can vary from run to run (local lab: with `inter 2s fall 3` HAProxy marked
DOWN 4.4-6.2 s after the first failed check, around pilot-agent's kill at 5.0 s, so either came
first; with the committed `inter 1s fall 3` DOWN came 2.2-2.9 s after E1 in 3 of 3 S1 runs, each
cut `DH--`, before the kill):

- the proxy is killed: pilot-agent SIGKILLs Envoy after terminationDrainDuration; HAProxy logs
  the request with a server-side termination state (`SH--`, `SD--`) and answers 502;
- HAProxy shuts the session when it marks the server DOWN (`on-marked-down shutdown-sessions`):
  termination state `DH--` / `DD--`.

The request's own HAProxy log line decides. An HTTP/2 stream refused by a dying Envoy has no log
line; then the nearest event before the cut (PROXY_KILLED or LB_DOWN) is named, marked "by timing".
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["cut_cause", "cut_summary", "origin_path", "TERMINATION_CAUSES"]

# First character of HAProxy's termination state -> what it means for our experiment.
TERMINATION_CAUSES = {
    "S": "the proxy was killed: Envoy closed or reset the connection",
    "D": "HAProxy shut the session when it marked the server DOWN, on-marked-down shutdown-sessions",
    "C": "the client aborted",
    "c": "the client timed out",
    "s": "HAProxy's server timeout expired",
    "P": "HAProxy itself aborted the request (proxy error)",
    "I": "HAProxy hit an internal error",
}
_MATCH_S = 1.0  # a request log line is written at the request's end: how far from the client's end
_BEFORE_S = 0.5  # by timing: an event this long before the cut (or any time up to it) explains it


def origin_path(target: str) -> str:
    """A request line's target as the client asked for it: HAProxy logs an HTTP/2 request with
    its absolute URI (`https://example.local/stream?...`), an HTTP/1.1 one with the path."""
    if "://" in target:
        rest = target.split("://", 1)[1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return target


def _log_line(run: Any, row: pd.Series) -> pd.Series | None:
    """The HAProxy request log line of the client's request: same path, ended within _MATCH_S."""
    hap = run.frames["haproxy"]
    end = row.get("ts_end")
    if hap.empty or "termination" not in hap or end is None or pd.isna(end):
        return None
    req = hap[(hap["kind"] == "request") & hap["ts"].notna()]
    path = str(row.get("path") or "")
    if path:
        req = req[req["path"].fillna("").astype(str).map(origin_path) == path]
    if req.empty:
        return None
    gap = (req["ts"] - end).abs().dt.total_seconds()
    best = gap.idxmin()
    return req.loc[best] if gap[best] <= _MATCH_S else None


def _by_timing(run: Any, row: pd.Series) -> str | None:
    """The event nearest before the cut that could have caused it."""
    end = row.get("ts_end")
    ev = run.events
    if end is None or pd.isna(end) or ev.empty:
        return None
    cand = ev[ev["name"].isin(["PROXY_KILLED", "LB_DOWN"]) & (ev["ts"] <= end + pd.Timedelta(seconds=_BEFORE_S))]
    if cand.empty:
        return None
    hit = cand.loc[(end - cand["ts"]).abs().idxmin()]
    gap = (end - hit["ts"]).total_seconds()
    what = ("the proxy was killed (pilot-agent's `Aborting proxy`)" if hit["name"] == "PROXY_KILLED"
            else "HAProxy marked the server DOWN")
    return f"{what} {gap:.2f} s before the client saw the cut (by timing: no HAProxy log line for this request)"


def cut_cause(run: Any, row: pd.Series | None) -> str | None:
    """Name the cut a request suffered, from the evidence.

    Parameters:
        run: a loaded Run (frames and events).
        row: one client.csv row (with ts_end and ok); None gives None.

    Returns:
        A phrase such as "HAProxy shut the session when it marked the server DOWN,
        on-marked-down shutdown-sessions (haproxy.log DH--, 502)", or None when the request was
        not cut. "cause not found in haproxy.log or the events" when nothing explains it.
    """
    if row is None or bool(row.get("ok")):
        return None
    line = _log_line(run, row)
    if line is not None:
        term = str(line.get("termination") or "")
        status = line.get("status")
        code = f", {int(status)}" if pd.notna(status) and int(status) > 0 else ""
        if term and term[0] in TERMINATION_CAUSES:
            return f"{TERMINATION_CAUSES[term[0]]} (haproxy.log {term}{code})"
        if term and term[0] != "-":
            return f"haproxy.log termination state {term}{code}"
    return _by_timing(run, row) or "cause not found in haproxy.log or the events"


def cut_summary(run: Any) -> str | None:
    """How the requests HAProxy logged as cut were cut (S3: many requests), e.g.
    "2 by the proxy kill (SH--/SD--), 5 by HAProxy at DOWN (DH--/DD--)"; None when none were."""
    hap = run.frames["haproxy"]
    if hap.empty or "termination" not in hap:
        return None
    first = hap.loc[hap["kind"] == "request", "termination"].fillna("").astype(str).str[:1]
    killed, down = int((first == "S").sum()), int((first == "D").sum())
    parts = ([f"{killed} by the proxy kill (S*: Envoy closed or reset)"] if killed else []) + \
            ([f"{down} by HAProxy at DOWN (D*: shutdown-sessions)"] if down else [])
    return ", ".join(parts) or None
