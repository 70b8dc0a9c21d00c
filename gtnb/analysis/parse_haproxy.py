"""haproxy.log: HAProxy's own lines -> server state changes, health checks and request logs.

Reads `log ... format iso` lines (`<ISO time> <message>`), `format rfc5424`
(`<129>1 <ISO time> host haproxy PID - - <message>`), classic syslog
(`[<pri>]Mon dd hh:mm:ss host haproxy[PID]: <message>`, the year taken from `year`) and
`format raw` lines (no time: a request log still dates itself by its accept time).

Frame columns (one row per line, sorted by `ts`, ties in file order):

    ts           datetime64[ns, UTC]  when HAProxy logged the line (request logs without a
                                      prefix time: accept time + Ta)
    kind         str     state (`is UP`/`is DOWN`/maintenance) | check (`Health check for
                         server ... failed/succeeded`) | request | other
    backend      str     state/check/request: the backend
    server       str     state/check/request: the server (`<NOSRV>` when none was chosen)
    state        str     state: UP | DOWN | MAINT; check: the status text (`1/2 UP`, `DOWN`)
    result       str     check: failed | succeeded | ...
    reason       str     state/check: e.g. `Layer7 wrong status`, `Layer4 connection problem`
    check_code   Int64   state/check: the HTTP status the check got
    info         str     state/check: the info text
    accepted     datetime64[ns, UTC]  request: accept date
    client       str     request: client ip:port
    frontend     str     request: frontend (`~` = TLS)
    tr, tw, tc, tr_resp, ta   Int64   request: the timers TR/Tw/Tc/Tr/Ta in ms (-1 = never)
    status       Int64   request: HTTP status (-1 = none)
    bytes        Int64   request: bytes read
    termination  str     request: the 4-letter termination state (SH--, SD--, SC--, ----)
    method, path, protocol  str   request: the request line
    message      str     the message after the prefix
    line_no      int64
    line         str     the line as read (evidence)
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pandas as pd

from ._lines import TS_DTYPE, ParseResult, Skipped, Source, read_lines, skipped, split_prefixes, typed_frame

__all__ = ["parse_haproxy", "HAPROXY_COLUMNS"]

HAPROXY_COLUMNS: dict[str, str] = {
    "ts": TS_DTYPE, "kind": "str", "backend": "str", "server": "str", "state": "str",
    "result": "str", "reason": "str", "check_code": "Int64", "info": "str",
    "accepted": TS_DTYPE, "client": "str", "frontend": "str", "tr": "Int64", "tw": "Int64",
    "tc": "Int64", "tr_resp": "Int64", "ta": "Int64", "status": "Int64", "bytes": "Int64",
    "termination": "str", "method": "str", "path": "str", "protocol": "str", "message": "str",
    "line_no": "int64", "line": "str",
}

_ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)"
_PREFIXES = (
    # rfc5424: <pri>1 time host app pid msgid sd msg
    re.compile(rf"<\d+>1 (?P<ts>{_ISO}) \S+ \S+ \S+ \S+ \S+ ?(?P<msg>.*)"),
    # format iso (and the kubectl/journal style "<ISO> msg")
    re.compile(rf"(?:<\d+>)?(?P<ts>{_ISO}) (?:(?:\S+ )?haproxy\[\d+\]: )?(?P<msg>.*)"),
    # rfc3164 syslog: [<pri>]Mon dd hh:mm:ss host haproxy[pid]:
    re.compile(r"(?:<\d+>)?(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?) (?:\S+ )?"
               r"\S+?(?:\[\d+\])?: (?P<msg>.*)"),
)
_STATE = re.compile(
    r"(?:\[\w+\] )?(?:Server|Backup Server) (?P<be>[^/\s]+)/(?P<srv>\S+) "
    r"(?:is (?P<state>UP|DOWN)|is going DOWN for (?P<maint>maintenance)|was DOWN and now enters maintenance)"
    r"(?:.*?reason: (?P<reason>[^,]+))?(?:.*?code: (?P<code>\d+))?(?:.*?info: \"(?P<info>[^\"]*)\")?")
_CHECK = re.compile(
    r"(?:\[\w+\] )?Health check for (?:backup )?server (?P<be>[^/\s]+)/(?P<srv>\S+) "
    r"(?P<result>\w+)(?:.*?reason: (?P<reason>[^,]+))?(?:.*?code: (?P<code>\d+))?"
    r"(?:.*?info: \"(?P<info>[^\"]*)\")?(?:.*?status: (?P<status>[^.]+(?:\.\d+)?[^.]*))?")
_STDERR = re.compile(r"\[(?:WARNING|NOTICE|ALERT)\]\s+\(\d+\)\s*:")
_REQUEST = re.compile(
    r"(?P<client>\S+:\d+) \[(?P<acc>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d(?:\.\d+)?)\] (?P<fe>\S+) "
    r"(?P<be>[^/\s]+)/(?P<srv>\S+) (?P<tr>-?\d+)/(?P<tw>-?\d+)/(?P<tc>-?\d+)/(?P<trr>-?\d+)/"
    r"(?P<ta>\+?-?\d+) (?P<status>-?\d+) (?P<bytes>\+?\d+) \S+ \S+ (?P<term>[\w-]{4}) "
    r"\S+ \S+(?: \{[^}]*\})*(?: \"(?P<req>[^\"]*)\"?)?")


def parse_haproxy(source: Source, *, year: int | None = None) -> ParseResult:
    """Parse haproxy.log into the haproxy frame.

    Parameters:
        source: a path, or the lines (str or bytes).
        year: the year for classic syslog lines, which carry none (default: this year, UTC).

    Returns:
        ParseResult(frame, skipped); see the module docstring for the columns.
    """
    year = year or datetime.now(timezone.utc).year
    lines, truncated = read_lines(source)
    rows: dict[str, list[object]] = {k: [] for k in HAPROXY_COLUMNS}
    skips: list[Skipped] = []
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        rec = _parse(raw, year)
        if isinstance(rec, str):
            skips.append(skipped(no, rec, raw, cut=truncated and no == len(lines)))
            continue
        rec["line_no"], rec["line"] = no, raw
        for k in rows:
            rows[k].append(rec.get(k))
    frame = typed_frame(rows, HAPROXY_COLUMNS)
    # Request logs without a prefix time (format raw) date themselves: accept + Ta.
    no_ts = frame["ts"].isna() & frame["accepted"].notna()
    if no_ts.any():
        ta = frame.loc[no_ts, "ta"].astype("float64").clip(lower=0).fillna(0)
        frame.loc[no_ts, "ts"] = frame.loc[no_ts, "accepted"] + pd.to_timedelta(ta, unit="ms")
    bad = frame["ts"].isna()
    for no, raw in zip(frame.loc[bad, "line_no"], frame.loc[bad, "line"]):
        skips.append(skipped(int(no), "no readable timestamp (format raw?)", str(raw)))
    frame = frame[~bad].sort_values(["ts", "line_no"], kind="stable").reset_index(drop=True)
    skips.sort(key=lambda s: s.line_no)
    return ParseResult(frame, skips)


def _parse(raw: str, year: int) -> dict[str, object] | str:
    """One line -> a row dict, or the reason it is not a HAProxy line."""
    pre, body = split_prefixes(raw)
    # format iso's "<ISO time> " reads like a kubectl --timestamps prefix: take it as the time.
    rec: dict[str, object] = {"ts": pre.logged} if pre.logged else {}
    msg = body
    for rx in _PREFIXES:
        m = rx.match(body)
        if m:
            msg = m["msg"]
            if m.groupdict().get("bsd"):
                rec["ts"] = _bsd_time(m["bsd"], year)
            elif m.groupdict().get("ts"):
                rec["ts"] = m["ts"]
            break
    rec["message"] = msg
    if m := _STATE.match(msg):
        rec.update(kind="state", backend=m["be"], server=m["srv"].rstrip(","),
                   state=m["state"] or "MAINT", reason=m["reason"], check_code=m["code"],
                   info=m["info"])
    elif m := _CHECK.match(msg):
        rec.update(kind="check", backend=m["be"], server=m["srv"].rstrip(","), result=m["result"],
                   reason=m["reason"], check_code=m["code"], info=m["info"],
                   state=(m["status"] or "").strip() or None)
    elif m := _REQUEST.search(msg):
        method, path, protocol = ((m["req"] or "").split(" ", 2) + [None, None, None])[:3]
        rec.update(kind="request", client=m["client"], accepted=_clf_time(m["acc"]),
                   frontend=m["fe"], backend=m["be"], server=m["srv"], tr=m["tr"], tw=m["tw"],
                   tc=m["tc"], tr_resp=m["trr"], ta=m["ta"].lstrip("+"), status=m["status"],
                   bytes=m["bytes"].lstrip("+"), termination=m["term"], method=method or None,
                   path=path, protocol=protocol)
    elif "ts" in rec:
        rec["kind"] = "other"
    elif _STDERR.match(msg):
        return "HAProxy's own stderr message without a time (its logged copy carries one)"
    else:
        return "not a HAProxy log line (no time, no known message)"
    return rec


def _bsd_time(text: str, year: int) -> str | None:
    try:
        return datetime.strptime(f"{year} {' '.join(text.split())}", "%Y %b %d %H:%M:%S.%f"
                                 if "." in text else "%Y %b %d %H:%M:%S").replace(
            tzinfo=timezone.utc).isoformat()
    except ValueError:
        return None


def _clf_time(text: str) -> str | None:
    """HAProxy's accept date `30/Nov/2026:23:41:24.786` (local time of the HAProxy host; the
    lab and the homelab run it in UTC) -> ISO."""
    try:
        fmt = "%d/%b/%Y:%H:%M:%S.%f" if "." in text else "%d/%b/%Y:%H:%M:%S"
        return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).isoformat()
    except ValueError:
        return None
