"""The named checks behind a verdict, one function per scenario shape (see verdict.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .cut_cause import cut_cause, cut_summary

__all__ = ["Check", "outcome_of", "describe", "request_checks", "fsm_checks", "s3_checks",
           "s4_checks", "primary_events"]

# Defaults of haproxy/haproxy-improved.cfg and the hc when the journal does not say.
DEFAULTS = {"inter_s": 1.0, "fastinter_s": 0.5, "fall": 2, "check_s": 0.5, "poll_interval_s": 1.0,
            "interval_s": 1.0, "duration_s": 60.0}
_SLACK_S = 0.25  # log and clock granularity allowed on "within" bounds


@dataclass
class Check:
    """One expect line: what should be seen, what was seen, and whether it holds (None: info)."""

    name: str
    expected: str
    observed: str
    ok: bool | None


def _param(params: dict[str, Any], key: str) -> float:
    value = params.get(key)
    try:
        return float(value) if value is not None else float(DEFAULTS[key])
    except (TypeError, ValueError):
        return float(DEFAULTS[key])


def describe(row: pd.Series) -> str:
    """One request's outcome in words: 'completed: 200 after 12.0 s' / 'cut: http_5xx (502) ...'."""
    dur = row.get("duration_s")
    after = f" after {dur:.1f} s" if pd.notna(dur) else ""
    status = row.get("status")
    st = f"{int(status)}" if pd.notna(status) else "no status"
    if bool(row.get("ok")):
        return f"completed: {st}{after}"
    how = str(row.get("error") or "") or "incomplete"
    bits = [st]
    if pd.notna(row.get("curl_exit")) and int(row["curl_exit"]):
        bits.append(f"curl exit {int(row['curl_exit'])}")
    if str(row.get("detail") or ""):
        bits.append(str(row["detail"]))
    return f"cut: {how} ({', '.join(bits)}){after}"


def _main_request(client: pd.DataFrame) -> pd.Series | None:
    """The long in-flight request of S1/S2/S4: the longest one (the first when there is one)."""
    if client.empty:
        return None
    order = client["duration_s"].fillna(-1).sort_values(ascending=False, kind="stable").index
    return client.loc[order[0]]


def outcome_of(client: pd.DataFrame, run: Any = None) -> tuple[str, bool | None]:
    """The main request's outcome in words and whether it was cut; with `run`, a cut names its
    cause from the evidence (proxy killed, or HAProxy shut the session at DOWN)."""
    row = _main_request(client)
    if row is None:
        return "no client request recorded", None
    cause = cut_cause(run, row) if run is not None else None
    return describe(row) + (f" — {cause}" if cause else ""), not bool(row["ok"])


def primary_events(run: Any) -> dict[str, pd.Series]:
    """One sighting per event name, preferring the source that marks it most directly."""
    prefer = {"LB_DOWN": ("haproxy", "stat"), "DRAIN_START": ("hc", "agent"),
              "CONNS_ZERO": ("hc", "agent"), "PROXY_KILLED": ("agent", "haproxy"),
              "SIGTERM": ("hc", "agent"), "HEALTH_FAIL": ("hc",), "POD_EXIT": ("agent", "hc")}
    out: dict[str, pd.Series] = {}
    ev = run.events
    if ev.empty:
        return out
    for name, sources in prefer.items():
        rows = ev[ev["name"] == name]
        for src in sources:
            hit = rows[rows["source"] == src]
            if len(hit):
                out[name] = hit.iloc[0]
                break
    return out


def _no_hc_file(run: Any) -> bool:
    """True when the run has no hc.log at all (seed runs), as opposed to an empty one."""
    return any(n.startswith("hc.log missing") for n in run.notes)


def _kill_check(run: Any, row: pd.Series | None) -> Check:
    """The termination happened while the request was in flight (else nothing was tested)."""
    e1 = primary_events(run).get("HEALTH_FAIL")
    if e1 is None and row is not None and _no_hc_file(run):
        return Check("termination during the request", "E1 while the request was in flight",
                     "no hc.log in this run (a seed run?): not judged", None)
    if row is None or e1 is None:
        seen = "no client request" if row is None else "no HEALTH_FAIL (E1) in hc.log"
        return Check("termination during the request", "E1 while the request was in flight", seen, False)
    if pd.isna(row.get("ts")):
        return Check("termination during the request", "E1 while the request was in flight",
                     "the request has no start time (seed curl files): not judged", None)
    start = (e1["ts"] - row["ts"]).total_seconds()
    end = (row["ts_end"] - e1["ts"]).total_seconds() if pd.notna(row.get("ts_end")) else float("nan")
    ok = start >= 0 and (pd.isna(end) or end >= 0)
    return Check("termination during the request", "E1 while the request was in flight",
                 f"E1 {start:.2f} s after the start, {end:.2f} s before the end", ok)


def request_checks(run: Any, mode: str, params: dict[str, Any]) -> list[Check]:
    """S1 (and S2's first half): the one long request's outcome, in this mode's terms."""
    client = run.frames["client"]
    row = _main_request(client)
    duration = _param(params, "duration_s")
    tol = max(2.0, 0.1 * duration)
    checks = [_kill_check(run, row)]
    if row is None:
        want = "cut" if mode == "current" else "completed"
        return checks + [Check(f"in-flight request {want}", want, "no client request recorded", False)]
    seen = describe(row)
    cause = cut_cause(run, row)
    seen += f" — {cause}" if cause else ""
    dur = row.get("duration_s")
    if mode == "current":
        early = pd.isna(dur) or dur < duration - 0.5
        checks.append(Check("in-flight request cut",
                            f"cut (5xx, reset or stream error) before its full {duration:g} s",
                            seen, (not bool(row["ok"])) and bool(early)))
    else:
        status = row.get("status")
        two = pd.notna(status) and 200 <= int(status) < 300
        on_time = pd.notna(dur) and duration - 0.5 <= dur <= duration + tol
        checks.append(Check("in-flight request completed",
                            f"completed (2xx, whole answer) after {duration:g} s (+{tol:g} s)",
                            seen, bool(row["ok"]) and two and bool(on_time)))
    return checks


def fsm_checks(run: Any, params: dict[str, Any]) -> list[Check]:
    """S2: the drain FSM's order and bounds, from the six events."""
    ev = primary_events(run)
    names = ("HEALTH_FAIL", "LB_DOWN", "DRAIN_START", "CONNS_ZERO", "SIGTERM", "POD_EXIT")
    e1 = ev.get("HEALTH_FAIL")
    t = {n: (ev[n]["ts"] - e1["ts"]).total_seconds() for n in names if n in ev and e1 is not None}
    seen = " < ".join(f"{n} {t[n]:.2f}" for n in names if n in t) or "no events"
    missing = [n for n in names if n not in t]
    ordered = not missing and all(t[a] <= t[b] for a, b in zip(names, names[1:]))
    checks = [Check("events in order", "E1 < E2 < E3 < E4 (CONNS_ZERO) < E5 < E6",
                    seen + (f"; missing {', '.join(missing)}" if missing else ""), ordered)]
    inter, fast, fall, chk = (_param(params, k) for k in ("inter_s", "fastinter_s", "fall", "check_s"))
    bound = inter + (fall - 1) * fast + chk
    down = t.get("LB_DOWN")
    # Say where the timings came from: a run records the installed config's; a seed run has none.
    known = [k for k in ("inter_s", "fastinter_s", "fall") if params.get(k) is not None]
    source = ("run.json" if len(known) == 3 else
              "haproxy-improved.cfg defaults" if not known else f"run.json ({', '.join(known)}) and defaults")
    checks.append(Check("LB_DOWN on time", f"within {bound:g} s of E1 (inter {inter:g} + "
                        f"({fall:g}-1) x fastinter {fast:g} + check {chk:g}; timings from {source})",
                        f"{down:.2f} s" if down is not None else "no LB_DOWN",
                        down is not None and 0 <= down <= bound))
    d3 = t.get("DRAIN_START")
    checks.append(Check("drain after LB_DOWN", "DRAIN_START at or after LB_DOWN",
                        f"DRAIN_START {d3:.2f} s, LB_DOWN {down:.2f} s" if d3 is not None and down is not None
                        else "missing", d3 is not None and down is not None and d3 >= down))
    poll = _param(params, "poll_interval_s")
    checks.append(_drained_check(run, ev, t, poll))
    s5, s4 = t.get("SIGTERM"), t.get("CONNS_ZERO")
    checks.append(Check("SIGTERM after DRAINED", "SIGTERM at or after CONNS_ZERO",
                        f"SIGTERM {s5:.2f} s, CONNS_ZERO {s4:.2f} s" if s5 is not None and s4 is not None
                        else "missing", s5 is not None and s4 is not None and s5 >= s4))
    return checks


def _drained_check(run: Any, ev: dict[str, pd.Series], t: dict[str, float], poll: float) -> Check:
    client = run.frames["client"]
    e1, zero = ev.get("HEALTH_FAIL"), ev.get("CONNS_ZERO")
    expected = f"DRAINED 0..{poll:g} s (one poll) after the last in-flight request ended (±{_SLACK_S:g} s)"
    if e1 is None or zero is None or client.empty or client["ts_end"].isna().all():
        return Check("DRAINED after the last request", expected, "missing events or request ends", False)
    inflight = client[(client["ts"] <= e1["ts"]) & ((client["ts_end"] >= e1["ts"]) | client["ts_end"].isna())]
    last = (inflight if len(inflight) else client)["ts_end"].max()
    gap = (zero["ts"] - last).total_seconds()
    return Check("DRAINED after the last request", expected, f"{gap:+.2f} s",
                 -_SLACK_S <= gap <= poll + _SLACK_S)


def s3_checks(run: Any, mode: str) -> tuple[list[Check], str, bool | None]:
    """S3: requests made, requests cut, 5xx, and that pods were actually replaced."""
    client = run.frames["client"]
    n = len(client)
    failed = client[~client["ok"]] if n else client
    kinds = failed["error"].fillna("").replace("", "incomplete").value_counts() if len(failed) else pd.Series(dtype=int)
    how = ", ".join(f"{k} {v}" for k, v in kinds.items())
    five = int((client["status"].astype("Float64") >= 500).fillna(False).sum()) if n else 0
    outcome = f"{len(failed)} of {n} requests cut" + (f" ({how})" if how else "") + f", {five} 5xx"
    pods = run.events[run.events["name"] == "HEALTH_FAIL"]["pod"].nunique() if not run.events.empty else 0
    replaced = Check("pods replaced", ">= 1 pod terminated (HEALTH_FAIL seen)", f"{pods} pod(s)", pods >= 1)
    if pods == 0 and _no_hc_file(run):
        replaced = Check("pods replaced", ">= 1 pod terminated (HEALTH_FAIL seen)",
                         "no hc.log in this run (a seed run?): not judged", None)
    checks = [Check("load ran", "> 0 requests", f"{n} requests", n > 0), replaced]
    if mode == "current":
        checks.append(Check("requests cut during the rollout", "> 0 failed (5xx or connection errors)",
                            f"{len(failed)} failed" + (f" ({how})" if how else ""), len(failed) > 0))
        checks.append(Check("5xx responses", "any (cuts show as 5xx or as resets)", str(five), None))
        # Which cut: the proxy kill or HAProxy's shutdown-sessions at DOWN (both are cuts).
        checks.append(Check("how requests were cut", "shown, not judged (haproxy.log termination states)",
                            cut_summary(run) or "no cut request in haproxy.log", None))
    else:
        checks.append(Check("no request cut", "0 failed", f"{len(failed)} failed" + (f" ({how})" if how else ""),
                            n > 0 and len(failed) == 0))
        checks.append(Check("no 5xx", "0", str(five), five == 0))
    return checks, outcome, (len(failed) > 0) if n else None


def s4_checks(run: Any, mode: str, params: dict[str, Any]) -> tuple[list[Check], str, bool | None]:
    """S4: the stream's chunks and whether its final line arrived."""
    client = run.frames["client"]
    row = _main_request(client)
    total = int(round(_param(params, "duration_s") / _param(params, "interval_s")))
    checks = [_kill_check(run, row)]
    if row is None:
        return checks + [Check("stream", "a stream", "no client request recorded", False)], \
            "no client request recorded", None
    chunks = int(row["chunks"]) if pd.notna(row.get("chunks")) else 0
    complete = bool(row["complete"]) if pd.notna(row.get("complete")) else False
    seen = f"{chunks} chunks, final line {'arrived' if complete else 'missing'}, " + describe(row)
    cause = cut_cause(run, row)
    seen += f" — {cause}" if cause else ""
    if mode == "current":
        checks.append(Check("stream cut", f"fewer than {total - 1} of {total} chunks or no final line",
                            seen, (not bool(row["ok"])) and (chunks < total - 1 or not complete)))
    else:
        checks.append(Check("stream complete", f">= {total - 1} of {total} chunks and the final line",
                            seen, bool(row["ok"]) and complete and chunks >= total - 1))
    outcome = f"{chunks} chunks; " + describe(row) + (f" — {cause}" if cause else "")
    return checks, outcome, not bool(row["ok"])
