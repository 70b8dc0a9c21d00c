"""What the plots need from a Run, aligned on E1 and in plain floats.

The plots read a Run (``gtnb.analysis.load_run``) through this one adapter, so they never care
whether a frame holds epoch floats or pandas Timestamps, or which optional columns a source
produced: a run with missing files (a failed run) still draws, with empty lanes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

__all__ = ["RunView", "view_of", "EVENT_ORDER", "EVENT_LABELS"]

# The six events of DESIGN.md, in the order improved mode expects them.
EVENT_ORDER = ("HEALTH_FAIL", "LB_DOWN", "DRAIN_START", "CONNS_ZERO", "PROXY_KILLED", "SIGTERM",
               "POD_EXIT")
EVENT_LABELS = {
    "HEALTH_FAIL": "E1 health fail",
    "LB_DOWN": "E2 HAProxy DOWN",
    "DRAIN_START": "E3 drain start",
    "CONNS_ZERO": "E4 conns zero",
    "PROXY_KILLED": "E4 proxy killed",
    "SIGTERM": "E5 SIGTERM",
    "POD_EXIT": "E6 pod exit",
}


@dataclass
class RunView:
    """One run reduced to what a figure draws; every `t` is seconds from the anchor (E1)."""

    scenario: str
    mode: str
    target: str
    status: str
    started: str
    anchor_ts: float | None  # epoch seconds of E1, None when the run never reached it
    anchor_name: str  # "E1" or what stood in for it
    events: pd.DataFrame  # name, t, source (first sighting per event name and pod)
    client: pd.DataFrame  # worker, request_id, t0, t1, status, error, ok, chunks, curl_exit
    chunks: pd.DataFrame  # request_id, k, t
    servers: pd.DataFrame  # server, t, status (stat.csv samples of the IGW backend servers)
    hc: pd.DataFrame = field(default_factory=pd.DataFrame)  # t, to (hc FSM transitions)
    killed_node: str | None = None  # the node (HAProxy server) of the deleted pod, if known


def _epoch(values: Any) -> pd.Series:
    """Epoch seconds (float) from floats, strings or Timestamps; unparsable values become NaN."""
    s = pd.Series(values)
    if s.empty:
        return s.astype(float)
    if pd.api.types.is_datetime64_any_dtype(s):
        if s.dt.tz is None:
            s = s.dt.tz_localize("UTC")
        return (s - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().any() or s.isna().all():
        return num.astype(float)
    parsed = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _frame(run: Any, name: str) -> pd.DataFrame:
    frames = getattr(run, "frames", {}) or {}
    df = frames.get(name)
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame()


def _truthy(values: pd.Series) -> pd.Series:
    return values.map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))


def view_of(run: Any) -> RunView:
    """Reduce a Run to a RunView.

    Parameters:
        run: a ``gtnb.analysis.Run`` (anything with ``journal``, ``frames`` and ``events``).

    Returns:
        The RunView, aligned on E1 (HEALTH_FAIL); without E1, on the first client request.
    """
    journal: dict[str, Any] = dict(getattr(run, "journal", {}) or {})
    events = getattr(run, "events", None)
    events = events if isinstance(events, pd.DataFrame) else pd.DataFrame()
    if not events.empty:
        events = events.assign(_ts=_epoch(events["ts"].reset_index(drop=True)).values)
        # One sighting per event and pod: S3 rolls several pods, each with its own six events;
        # two sources of one event (haproxy.log and stat.csv for LB_DOWN) keep the first.
        key = ["name", "pod"] if "pod" in events else ["name"]
        events = events.dropna(subset=["_ts"]).sort_values("_ts")
        events = events.drop_duplicates([k for k in key if events[k].notna().any()] or ["name"])

    client = _frame(run, "client").reset_index(drop=True)
    t0 = _epoch(client["t_start"]) if "t_start" in client else pd.Series(dtype=float)

    anchor_ts: float | None = None
    anchor_name = "E1"
    e1 = events[events["name"] == "HEALTH_FAIL"] if not events.empty else events
    if not e1.empty:
        anchor_ts = float(e1["_ts"].iloc[0])
    elif len(t0.dropna()):
        anchor_ts, anchor_name = float(t0.min()), "first request (no E1 seen)"
    origin = anchor_ts or 0.0

    ev = pd.DataFrame(columns=["name", "t", "source"])
    if not events.empty:
        ev = pd.DataFrame({
            "name": events["name"].astype(str).values,
            "t": events["_ts"].values - origin,
            "source": events["source"].astype(str).values if "source" in events else "",
        })

    cl = pd.DataFrame(columns=["worker", "request_id", "t0", "t1", "status", "error", "ok",
                               "chunks", "curl_exit", "server"])
    if not client.empty:
        error = client.get("error", pd.Series([""] * len(client))).fillna("").astype(str)
        status = pd.to_numeric(client.get("status"), errors="coerce")
        complete = (_truthy(client["complete"]) if "complete" in client
                    else pd.Series([True] * len(client)))
        cl = pd.DataFrame({
            "worker": pd.to_numeric(client.get("worker", 0), errors="coerce").fillna(0).astype(int),
            "request_id": client.get("request_id", pd.Series(range(len(client)))).astype(str),
            "t0": t0.values - origin,
            "t1": _epoch(client["t_end"]).values - origin if "t_end" in client else float("nan"),
            "status": status.values,
            "error": error.values,
            # The analysis' own `ok` when present, so figure and verdict never disagree; else: a
            # request is OK when it fully arrived without an error and without a 5xx.
            "ok": (client["ok"].fillna(False).astype(bool).values if "ok" in client else
                   ((error == "") & complete & ~(status >= 500).fillna(False)).values),
            "chunks": pd.to_numeric(client.get("chunks", 0), errors="coerce").fillna(0).values,
            "curl_exit": pd.to_numeric(client.get("curl_exit"), errors="coerce").values,
            "server": _request_servers(_frame(run, "haproxy"), client, t0),
        })

    ch = _frame(run, "chunks")
    chunks = pd.DataFrame(columns=["request_id", "k", "t"])
    if not ch.empty and "t" in ch:
        chunks = pd.DataFrame({"request_id": ch.get("request_id", "").astype(str).values,
                               "k": ch.get("k", pd.Series(range(len(ch)))).values,
                               "t": _epoch(ch["t"]).values - origin})

    servers = _servers(_frame(run, "stat"), origin)

    hc = _frame(run, "hc")
    hcv = pd.DataFrame(columns=["t", "to"])
    if not hc.empty and {"ts", "event", "to"} <= set(hc.columns):
        tr = hc[hc["event"] == "transition"]
        hcv = pd.DataFrame({"t": _epoch(tr["ts"]).values - origin, "to": tr["to"].astype(str).values})

    killed = journal.get("killed_pod")
    killed_node = (journal.get("pod_nodes") or {}).get(killed) if killed else None
    started = str(journal.get("started_at") or "")
    if not started and anchor_ts:
        started = datetime.fromtimestamp(anchor_ts, timezone.utc).isoformat()
    return RunView(
        scenario=str(journal.get("scenario", "?")), mode=str(journal.get("mode", "?")),
        target=str(journal.get("target", "?")), status=str(journal.get("status", "?")),
        started=started, anchor_ts=anchor_ts, anchor_name=anchor_name, events=ev, client=cl,
        chunks=chunks, servers=servers, hc=hcv, killed_node=killed_node,
    )


def _servers(stat: pd.DataFrame, origin: float) -> pd.DataFrame:
    """The IGW backend's server rows of stat.csv: server, t, status."""
    out = pd.DataFrame(columns=["server", "t", "status"])
    if stat.empty or not {"ts", "svname", "status"} <= set(stat.columns):
        return out
    rows = stat[~stat["svname"].isin(["FRONTEND", "BACKEND"])]
    if "pxname" in rows:
        # The IGW backend is the one named like the seed's; otherwise the proxy with most servers
        # (the control-plane backend on 6443 has one).
        names = rows["pxname"].astype(str)
        igw = names.str.contains("istio", case=False)
        if igw.any():
            rows = rows[igw]
        elif not rows.empty:
            rows = rows[names == rows.groupby("pxname")["svname"].nunique().idxmax()]
    return pd.DataFrame({"server": rows["svname"].astype(str).values,
                         "t": _epoch(rows["ts"]).values - origin,
                         "status": rows["status"].astype(str).values})


def _request_servers(haproxy: pd.DataFrame, client: pd.DataFrame, t0: pd.Series) -> list[Any]:
    """The HAProxy server each client request went to (its request log line: same path,
    accepted within 2 s of the start); None where unknown. Only for a few long requests: that
    is where one wrong server (a replica that was not killed) silently changes the result."""
    none: list[Any] = [None] * len(client)
    if len(client) > 12 or haproxy.empty or not {"kind", "accepted", "server", "path"} <= set(haproxy):
        return none
    req = haproxy[haproxy["kind"] == "request"]
    if req.empty or "path" not in client:
        return none
    accepted = _epoch(req["accepted"].reset_index(drop=True)).to_numpy()
    paths, servers = req["path"].astype(str).to_numpy(), req["server"].astype(str).to_numpy()
    out = []
    for path, start in zip(client["path"].astype(str), t0):
        gaps = [(abs(a - start), srv) for a, p, srv in zip(accepted, paths, servers)
                if p == path and a == a]
        best = min(gaps, default=None)
        out.append(best[1] if best is not None and best[0] < 2.0 else None)
    return out
