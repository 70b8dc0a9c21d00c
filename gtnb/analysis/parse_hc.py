"""hc.log: the hc sidecar's logfmt lines -> one row per line.

Reads the lines as the hc writes them (docs/contracts.md) and as log viewers hand them over:
with a `kubectl logs --timestamps` prefix, a `kubectl --prefix` `[pod/<pod>/<container>] `
prefix, or stern's `ns/pod[container]: ` / `pod container ` prefix, in any order.

Frame columns (one row per logfmt line, sorted by `ts`, ties in file order):

    ts          datetime64[ns, UTC]  the line's `ts=` (else the kubectl prefix time)
    pod         str     `pod=` (else the prefix's pod; NaN when neither names it)
    level       str
    event       str     transition | check | drain_start | poll | signal | exit | ...
    from        str     transition: the state left (SERVING, DRAINING, ...)
    to          str     transition: the state entered (DRAINING, DRAINED, TERMINATING, ...)
    reason      str     transition: prestop | zero_active | sigterm | deadline | ...
    code        Int64   check: the HTTP status the hc served
    state       str     check: the FSM state at the time
    url         str     drain_start: the drain call
    status      Int64   drain_start: the drain call's HTTP status
    rq_active   Int64   poll: Envoy's downstream_rq_active
    cx_active   Int64   poll: Envoy's downstream_cx_active
    signal      str     signal: SIGTERM, ...
    line_no     int64   1-based line number in the file
    line        str     the line as read (evidence)

A line without a readable timestamp or without `event=` is skipped with its reason.
"""

from __future__ import annotations

import re

from ._lines import TS_DTYPE, ParseResult, Skipped, Source, read_lines, skipped, split_prefixes, typed_frame

__all__ = ["parse_hc", "HC_COLUMNS"]

HC_COLUMNS: dict[str, str] = {
    "ts": TS_DTYPE, "pod": "str", "level": "str", "event": "str", "from": "str", "to": "str",
    "reason": "str", "code": "Int64", "state": "str", "url": "str", "status": "Int64",
    "rq_active": "Int64", "cx_active": "Int64", "signal": "str", "line_no": "int64", "line": "str",
}
_KEYS = tuple(k for k in HC_COLUMNS if k not in ("ts", "line_no", "line"))
# logfmt: key=value or key="quoted value with \" escapes".
_PAIR = re.compile(r'(?:^|\s)([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_BODY = re.compile(r"(?:^|\s)(?=(?:ts|time)=)")


def parse_hc(source: Source) -> ParseResult:
    """Parse hc.log into the hc frame.

    Parameters:
        source: a path, or the lines (str or bytes).

    Returns:
        ParseResult(frame, skipped); see the module docstring for the columns.
    """
    lines, truncated = read_lines(source)
    rows: dict[str, list[object]] = {k: [] for k in HC_COLUMNS}
    skips: list[Skipped] = []
    last = len(lines)
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        pre, body = split_prefixes(raw, stern_plain=True)
        if "ts=" not in body[:4] and "time=" not in body[:6]:
            # An unknown prefix before the logfmt: start at the `ts=` key.
            m = _BODY.search(body)
            body = body[m.end():] if m else body
        fields = {k: _unquote(v) for k, v in _PAIR.findall(body)}
        why = None
        if "event" not in fields:
            why = "no event= key (not an hc logfmt line)"
        ts = fields.get("ts") or fields.get("time") or pre.logged
        if why is None and not ts:
            why = "no ts= and no kubectl timestamp"
        if why:
            skips.append(skipped(no, why, raw, cut=truncated and no == last))
            continue
        rows["ts"].append(ts)
        rows["pod"].append(fields.get("pod") or pre.pod)
        for k in _KEYS:
            if k != "pod":
                rows[k].append(fields.get(k))
        rows["line_no"].append(no)
        rows["line"].append(raw)
    frame = typed_frame(rows, HC_COLUMNS)
    bad = frame["ts"].isna()
    if bad.any():
        for no, raw in zip(frame.loc[bad, "line_no"], frame.loc[bad, "line"]):
            skips.append(skipped(int(no), "unreadable timestamp", str(raw)))
        frame = frame[~bad]
    frame = frame.sort_values(["ts", "line_no"], kind="stable").reset_index(drop=True)
    skips.sort(key=lambda s: s.line_no)
    return ParseResult(frame, skips)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value
