"""The six events (DESIGN.md), clock offsets, and alignment on E1.

    E1 HEALTH_FAIL   hc's first `event=transition`                       (the anchor: t = 0)
    E2 LB_DOWN       HAProxy `is DOWN` line; stat.csv UP -> DOWN          (both kept, difference noted)
    E3 DRAIN_START   hc `event=drain_start`; agent `Agent draining Proxy...`
    E4 CONNS_ZERO    hc `to=DRAINED`; agent `There are no more active connections`
       PROXY_KILLED  agent `Aborting proxy` with no zero-connections line before it;
                     HAProxy request logs ending SH/SD (the cut as the balancer saw it)
    E5 SIGTERM       hc `event=signal signal=SIGTERM`; agent `Received SIGTERM`
    E6 POD_EXIT      agent `Agent has successfully terminated` (else hc `event=exit`)

Events frame columns: event (int 1..6), name, ts (datetime64[ns, UTC]), t (s from E1), source
(hc | agent | haproxy | stat), pod, evidence (the line), line_no, note. Only the killed pod's
events count when the journal names `killed_pod`; otherwise (S3's rollout) events are per pod.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._lines import TS_DTYPE, empty_frame

__all__ = ["find_events", "align", "write_events_csv", "apply_clock_offsets", "anchor_of",
           "EVENT_COLUMNS", "EVENT_NAMES"]

log = logging.getLogger(__name__)

EVENT_NAMES = {1: "HEALTH_FAIL", 2: "LB_DOWN", 3: "DRAIN_START", 4: "CONNS_ZERO",
               5: "SIGTERM", 6: "POD_EXIT"}  # E4 is PROXY_KILLED when the proxy was killed
EVENT_COLUMNS: dict[str, str] = {
    "event": "int64", "name": "str", "ts": TS_DTYPE, "t": "float64", "source": "str",
    "pod": "str", "evidence": "str", "line_no": "Int64", "note": "str",
}
_TS_COLUMNS = ("ts", "logged", "end", "accepted", "ts_end")
# How early before E1 a balancer sighting still counts (measured clock offsets are not exact).
# Small on purpose: servers of other pods (a toggle, an earlier rollout step) go DOWN shortly
# before E1 too, and those are not this pod's.
_EARLY_S = 0.2


def apply_clock_offsets(frames: dict[str, pd.DataFrame], journal: dict[str, Any],
                        notes: list[str]) -> dict[str, pd.DataFrame]:
    """Put every frame on the runner's clock using the journal's `clock_offsets_s`.

    An offset is a host's clock minus the runner's, so host times get it subtracted. Lookup per
    source: haproxy.log uses `haproxy` (or `balancer`); hc/envoy rows use their pod's node
    (journal `pod_nodes`), else the pod name, else `hc`/`envoy`; stat.csv and client.csv are
    timed by the runner (offset `stat`/`client` if a target records one).
    """
    offsets = {str(k): float(v) for k, v in (journal.get("clock_offsets_s") or {}).items()
               if isinstance(v, (int, float))}
    if not offsets or not any(offsets.values()):
        return frames
    pod_nodes = journal.get("pod_nodes") or {}
    out = dict(frames)
    for name, frame in frames.items():
        if frame.empty:
            continue
        if name == "haproxy":
            shift = pd.Series(offsets.get("haproxy", offsets.get("balancer", 0.0)), index=frame.index)
        elif name in ("hc", "envoy") and "pod" in frame:
            per_pod = frame["pod"].map(
                lambda p: offsets.get(str(pod_nodes.get(p, "")), offsets.get(str(p), offsets.get(name, 0.0)))
                if isinstance(p, str) else offsets.get(name, 0.0))
            shift = per_pod.astype("float64")
        else:
            shift = pd.Series(offsets.get(name, 0.0), index=frame.index)
        if not shift.any():
            continue
        frame = frame.copy()
        delta = pd.to_timedelta(shift, unit="s")
        for col in _TS_COLUMNS:
            if col in frame and str(frame[col].dtype) == TS_DTYPE:
                frame[col] = frame[col] - delta
        out[name] = frame
        notes.append(f"{name}: clock offset applied ({', '.join(f'{v:+.3f} s' for v in sorted(set(shift)))})")
    return out


def _rows_of(frame: pd.DataFrame, pod: str | None) -> pd.DataFrame:
    """Rows of one pod; rows that name no pod belong to every pod (single-pod logs)."""
    if pod is None or frame.empty or "pod" not in frame:
        return frame
    return frame[(frame["pod"] == pod) | frame["pod"].isna()]


def _pods(run: Any) -> list[str | None]:
    killed = run.journal.get("killed_pod")
    if killed:
        return [str(killed)]
    hc, envoy = run.frames["hc"], run.frames["envoy"]
    pods = set(hc["pod"].dropna()) if "pod" in hc else set()
    if "pod" in envoy and not envoy.empty:
        agent = envoy[envoy["kind"] == "agent"]
        pods |= set(agent["pod"].dropna())
    # Only pods that went through a termination have events worth a row.
    return sorted(pods) or [None]


def find_events(run: Any) -> pd.DataFrame:
    """The six events of a run, one row per sighting, with t from the run's E1.

    Parameters:
        run: a Run (frames and journal loaded).

    Returns:
        The events frame (see the module docstring), sorted by ts.
    """
    rows: list[dict[str, Any]] = []
    pod_nodes = run.journal.get("pod_nodes") or {}
    # Pods in the order they failed their health check; a balancer line (DOWN, SH/SD) is claimed
    # by the first pod it follows, so a rollout's pods do not all take the same line.
    claimed: set[tuple[str, int]] = set()
    for pod in sorted(_pods(run), key=lambda p: _e1_ts(run, p)):
        rows += _pod_events(run, pod, pod_nodes.get(pod) if pod else None, claimed)
    if not rows:
        return empty_frame(EVENT_COLUMNS)
    ev = pd.DataFrame(rows)
    for col, dtype in EVENT_COLUMNS.items():
        if col not in ev:
            ev[col] = None
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True).astype(TS_DTYPE)
    ev = ev.sort_values(["ts", "event"], kind="stable").reset_index(drop=True)
    anchor = anchor_of(ev)
    ev["t"] = (ev["ts"] - anchor).dt.total_seconds() if anchor is not None else np.nan
    ev = ev[list(EVENT_COLUMNS)]
    return ev.astype({"event": "int64", "name": "str", "source": "str", "pod": "str",
                      "evidence": "str", "note": "str", "line_no": "Int64", "t": "float64"})


def anchor_of(events: pd.DataFrame) -> pd.Timestamp | None:
    """E1's time (the earliest HEALTH_FAIL), or None when no E1 was seen."""
    e1 = events[events["name"] == "HEALTH_FAIL"]["ts"].dropna() if not events.empty else []
    return e1.min() if len(e1) else None


def _first(frame: pd.DataFrame, mask: pd.Series) -> pd.Series | None:
    hit = frame[mask.fillna(False).astype(bool)] if len(frame) else frame
    return hit.iloc[0] if len(hit) else None


def _row(event: int, name: str, hit: pd.Series, source: str, pod: str | None, note: str = "") -> dict[str, Any]:
    line = hit.get("line")
    return {"event": event, "name": name, "ts": hit["ts"], "source": source, "pod": pod,
            "evidence": "" if pd.isna(line) else str(line), "line_no": hit.get("line_no"),
            "note": note}


def _e1_ts(run: Any, pod: str | None) -> pd.Timestamp:
    hc = _rows_of(run.frames["hc"], pod)
    tr = hc.loc[hc["event"] == "transition", "ts"] if not hc.empty else []
    return tr.min() if len(tr) else pd.Timestamp.max.tz_localize("UTC")


def _unclaimed(frame: pd.DataFrame, source: str, claimed: set[tuple[str, int]]) -> pd.Series:
    return ~frame["line_no"].map(lambda n: (source, int(n)) in claimed).astype(bool)


def _pod_events(run: Any, pod: str | None, node: str | None,
                claimed: set[tuple[str, int]]) -> list[dict[str, Any]]:
    hc = _rows_of(run.frames["hc"], pod)
    envoy = _rows_of(run.frames["envoy"], pod)
    agent = envoy[envoy["kind"] == "agent"] if not envoy.empty else envoy
    msg = agent["message"].fillna("").astype(str) if not agent.empty else pd.Series([], dtype=str)
    out: list[dict[str, Any]] = []

    e1 = _first(hc, hc["event"] == "transition") if not hc.empty else None
    if e1 is not None:
        out.append(_row(1, "HEALTH_FAIL", e1, "hc", pod, f"{e1['from']} -> {e1['to']} ({e1['reason']})"))
    since = (e1["ts"] - pd.Timedelta(seconds=_EARLY_S)) if e1 is not None else None

    if e1 is not None or pod is None:  # the balancer's view only for a pod that went away
        down = _lb_down(run, pod, node, since, claimed)
        out += down
        # With no pod -> node map, the server that went DOWN is the pod's.
        node = node or next((d["server"] for d in down if d.get("server")), None)

    if not hc.empty and (hit := _first(hc, hc["event"] == "drain_start")) is not None:
        out.append(_row(3, "DRAIN_START", hit, "hc", pod))
    if not agent.empty and (hit := _first(agent, msg.str.startswith("Agent draining"))) is not None:
        out.append(_row(3, "DRAIN_START", hit, "agent", pod))

    zero = None
    if not hc.empty and (hit := _first(hc, (hc["event"] == "transition") & (hc["to"] == "DRAINED"))) is not None:
        reason = str(hit["reason"])
        out.append(_row(4, "CONNS_ZERO", hit, "hc", pod,
                        "drain timed out with requests still active" if reason == "timeout" else ""))
    if not agent.empty:
        zero = _first(agent, msg.str.startswith("There are no more active connections"))
        if zero is not None:
            out.append(_row(4, "CONNS_ZERO", zero, "agent", pod))
        abort = _first(agent, msg.str.startswith("Aborting proxy"))
        # Istio logs `Aborting proxy` in both modes; after zero connections it kills an idle
        # Envoy, which cuts nothing.
        if abort is not None and (zero is None or abort["ts"] < zero["ts"]):
            out.append(_row(4, "PROXY_KILLED", abort, "agent", pod))
    hap = run.frames["haproxy"]
    if not hap.empty and "termination" in hap:
        term = hap["termination"].fillna("").astype(str)
        cut = (hap["kind"] == "request") & (term.str.startswith("SH") | term.str.startswith("SD"))
        if since is not None:
            cut &= hap["ts"] >= since
        if node is not None:
            cut &= hap["server"] == node
        cut &= _unclaimed(hap, "haproxy", claimed)
        if (e1 is not None or pod is None) and (hit := _first(hap, cut)) is not None:
            n = int(cut.fillna(False).sum())
            claimed.add(("haproxy", int(hit["line_no"])))
            out.append(_row(4, "PROXY_KILLED", hit, "haproxy", pod,
                            f"{n} request(s) cut server-side ({hit['termination']}, status {hit['status']})"))

    if not hc.empty and (hit := _first(hc, (hc["event"] == "signal") & (hc["signal"] == "SIGTERM"))) is not None:
        out.append(_row(5, "SIGTERM", hit, "hc", pod))
    if not agent.empty and (hit := _first(agent, msg.str.startswith("Received SIGTERM"))) is not None:
        out.append(_row(5, "SIGTERM", hit, "agent", pod))

    if not agent.empty and (hit := _first(agent, msg.str.startswith("Agent has successfully terminated"))) is not None:
        out.append(_row(6, "POD_EXIT", hit, "agent", pod))
    elif not hc.empty and (hit := _first(hc, hc["event"] == "exit")) is not None:
        out.append(_row(6, "POD_EXIT", hit, "hc", pod, "hc exit (no agent line)"))
    return out


def _lb_down(run: Any, pod: str | None, node: str | None, since: pd.Timestamp | None,
             claimed: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """E2 from haproxy.log and from stat.csv, with the difference between them noted."""
    out: list[dict[str, Any]] = []
    hap = run.frames["haproxy"]
    log_hit = None
    if not hap.empty:
        m = (hap["kind"] == "state") & (hap["state"] == "DOWN")
        if since is not None:
            m &= hap["ts"] >= since
        if node is not None:
            m &= hap["server"] == node
        m &= _unclaimed(hap, "haproxy", claimed)
        log_hit = _first(hap, m)
    if log_hit is not None:
        node = node or str(log_hit["server"])
    stat_hit = _stat_down(run.frames["stat"], since, node, claimed)
    if log_hit is not None:
        claimed.add(("haproxy", int(log_hit["line_no"])))
        note = f"server {log_hit['backend']}/{log_hit['server']}"
        # on-marked-down shutdown-sessions: HAProxy itself cuts the sessions at DOWN (state D*).
        term = hap["termination"].fillna("").astype(str)
        cut = ((hap["kind"] == "request") & term.str.startswith("D") & (hap["server"] == log_hit["server"])
               & (hap["accepted"] <= log_hit["ts"]) & (hap["ts"] >= log_hit["ts"]))  # in flight at DOWN
        if cut.any():
            note += (f"; {int(cut.sum())} request(s) cut by HAProxy at DOWN (shutdown-sessions, "
                     f"{term[cut].iloc[0]}, status {hap.loc[cut, 'status'].iloc[0]})")
        out.append(_row(2, "LB_DOWN", log_hit, "haproxy", pod, note))
        out[-1]["server"] = str(log_hit["server"])
    if stat_hit is not None:
        claimed.add(("stat", int(stat_hit["line_no"])))
        note = f"server {stat_hit['pxname']}/{stat_hit['svname']} status {stat_hit['status']}"
        if log_hit is not None:
            diff = (stat_hit["ts"] - log_hit["ts"]).total_seconds()
            note += f"; stat.csv saw it {diff:+.3f} s after haproxy.log (sampling period bounds it)"
        row = {"event": 2, "name": "LB_DOWN", "ts": stat_hit["ts"], "source": "stat", "pod": pod,
               "evidence": f"stat.csv line {stat_hit['line_no']}: {stat_hit['svname']} {stat_hit['status']}",
               "line_no": stat_hit["line_no"], "note": note, "server": str(stat_hit["svname"])}
        out.append(row)
    return out


def _stat_down(stat: pd.DataFrame, since: pd.Timestamp | None, node: str | None,
               claimed: set[tuple[str, int]]) -> pd.Series | None:
    """The first sample where a server's state went from UP to DOWN."""
    if stat.empty or "svname" not in stat:
        return None
    rows = stat[~stat["svname"].isin(["FRONTEND", "BACKEND"])]
    if node is not None:
        rows = rows[rows["svname"] == node]
    best = None
    for _, g in rows.groupby(["pxname", "svname"] if rows["pxname"].notna().any() else ["svname"], sort=False, dropna=False):
        state = g["state"].fillna("").astype(str)
        prev = state.shift(1)
        went = (state == "DOWN") & (prev == "UP")
        if since is not None:
            went &= g["ts"] >= since
        went &= _unclaimed(g, "stat", claimed)
        hit = _first(g, went)
        if hit is not None and (best is None or hit["ts"] < best["ts"]):
            best = hit
    return best


def align(run: Any) -> Any:
    """A copy of the run whose frames carry `t`: seconds from E1 (client also `t_end_rel`).

    Without E1 the anchor is the first client request (else the first event), and a note says so.
    The loaded run is left as it was (its chunks `t` stays epoch seconds, as in chunks.csv).
    """
    from dataclasses import replace

    anchor = anchor_of(run.events)
    notes = list(run.notes)
    if anchor is None:
        client = run.frames["client"]
        starts = client["ts"].dropna() if "ts" in client else []
        if len(starts):
            anchor = starts.min()
            notes.append("no HEALTH_FAIL (E1): aligned on the first client request")
        elif not run.events.empty and run.events["ts"].notna().any():
            anchor = run.events["ts"].dropna().min()
            notes.append("no HEALTH_FAIL (E1): aligned on the first event seen")
    frames = {}
    for name, frame in run.frames.items():
        f = frame.copy()
        if anchor is not None and "ts" in f:
            f["t"] = (f["ts"] - anchor).dt.total_seconds()
            if "ts_end" in f:
                f["t_end_rel"] = (f["ts_end"] - anchor).dt.total_seconds()
        else:
            f["t"] = pd.Series(np.nan, index=f.index, dtype="float64")
        frames[name] = f
    events = run.events.copy()
    if anchor is not None and not events.empty:
        events["t"] = (events["ts"] - anchor).dt.total_seconds()
    return replace(run, frames=frames, events=events, notes=notes, aligned=True)


def write_events_csv(run: Any, path: str | Path | None = None) -> Path:
    """Write the events as events.csv (into the run directory unless `path` says otherwise).

    Returns:
        The file written.
    """
    out = Path(path) if path is not None else Path(run.path) / "events.csv"
    ev = run.events.copy() if not run.events.empty else empty_frame(EVENT_COLUMNS)
    ev["ts"] = ev["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ev["t"] = ev["t"].round(6)
    ev.to_csv(out, index=False)
    log.info("wrote %s (%d events)", out, len(ev))
    return out
