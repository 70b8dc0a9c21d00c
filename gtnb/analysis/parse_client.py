"""client.csv and chunks.csv: what the clients saw -> the client and chunks frames.

client.csv columns are docs/contracts.md's; the frame keeps them (typed) and adds the start and
end as timestamps and the outcome:

    worker        Int64
    request_id    str
    path          str
    http_version  str
    t_start       float64   UTC epoch seconds, as in the file
    t_end         float64   UTC epoch seconds, as in the file (NaN when the request never ended)
    status        Int64     the HTTP status (NA when no response)
    error         str       "" | connect_failed | connection_reset | stream_reset | truncated |
                            timeout | http_5xx
    curl_exit     Int64
    bytes         Int64
    chunks        Int64
    complete      boolean
    detail        str
    ts            datetime64[ns, UTC]  t_start as a timestamp
    ts_end        datetime64[ns, UTC]  t_end as a timestamp
    duration_s    float64   t_end - t_start
    ok            bool      completed: no error, not a 5xx, and (when known) complete
    line_no       int64

chunks.csv (`request_id,k,t`) -> request_id str, k Int64, t float64 (epoch, as in the file),
ts datetime64[ns, UTC], line_no int64.
"""

from __future__ import annotations


import pandas as pd

from ._lines import (
    TS_DTYPE, ParseResult, Skipped, Source, csv_lines, read_lines, skipped, to_utc, typed_frame,
)

__all__ = ["parse_client", "parse_chunks", "CLIENT_COLUMNS", "CHUNK_COLUMNS", "finish_client"]

CLIENT_COLUMNS: dict[str, str] = {
    "worker": "Int64", "request_id": "str", "path": "str", "http_version": "str",
    "t_start": "float64", "t_end": "float64", "status": "Int64", "error": "str",
    "curl_exit": "Int64", "bytes": "Int64", "chunks": "Int64", "complete": "boolean",
    "detail": "str", "ts": TS_DTYPE, "ts_end": TS_DTYPE, "duration_s": "float64", "ok": "bool",
    "line_no": "int64",
}
CHUNK_COLUMNS: dict[str, str] = {
    "request_id": "str", "k": "Int64", "t": "float64", "ts": TS_DTYPE, "line_no": "int64",
}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _rows(source: Source, required: tuple[str, ...]) -> tuple[list[dict[str, str]], list[Skipped]]:
    """CSV rows as dicts by header name; rows with the wrong field count are skipped."""
    lines, truncated = read_lines(source)
    skips: list[Skipped] = []
    header: list[str] | None = None
    out: list[dict[str, str]] = []
    for no, raw, fields in csv_lines(lines, skips):
        if header is None:
            names = [f.strip() for f in fields]
            if not set(required) <= set(names):
                skips.append(skipped(no, f"header lacks {sorted(set(required) - set(names))}", raw))
                return [], skips
            header = names
            continue
        if len(fields) != len(header):
            why = f"{len(fields)} fields where the header has {len(header)}"
            skips.append(skipped(no, why, raw, cut=truncated and no == len(lines)))
            continue
        row = dict(zip(header, fields))
        row["line_no"] = str(no)
        row["_line"] = raw
        out.append(row)
    return out, skips


def parse_client(source: Source) -> ParseResult:
    """Parse client.csv into the client frame.

    Parameters:
        source: a path, or the lines (str or bytes).

    Returns:
        ParseResult(frame, skipped); see the module docstring for the columns.
    """
    rows, skips = _rows(source, ("t_start",))
    data = {c: [r.get(c) for r in rows] for c in CLIENT_COLUMNS}
    data["complete"] = [_bool(r.get("complete")) for r in rows]
    data["error"] = [(r.get("error") or "").strip() for r in rows]
    data["detail"] = [(r.get("detail") or "") for r in rows]
    frame = finish_client(typed_frame(data, CLIENT_COLUMNS))
    raw = {int(r["line_no"]): r["_line"] for r in rows}
    bad = frame["ts"].isna()
    for no in frame.loc[bad, "line_no"]:
        skips.append(skipped(int(no), "unreadable t_start", raw.get(int(no), "")))
    skips.sort(key=lambda s: s.line_no)
    return ParseResult(frame[~bad].reset_index(drop=True), skips)


def finish_client(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the derived client columns (ts, ts_end, duration_s, ok) from the file's columns."""
    frame = frame.copy()
    frame["ts"] = to_utc(frame["t_start"], fmt="epoch")
    frame["ts_end"] = to_utc(frame["t_end"], fmt="epoch")
    frame["duration_s"] = frame["t_end"] - frame["t_start"]
    error = frame["error"].fillna("").astype(str)
    five = (frame["status"].astype("Float64") >= 500).fillna(False).astype(bool)
    complete = frame["complete"].fillna(True).astype(bool)
    frame["ok"] = ((error == "") & ~five & complete).astype(bool)
    return frame


def parse_chunks(source: Source) -> ParseResult:
    """Parse chunks.csv (request_id,k,t) into the chunks frame.

    Returns:
        ParseResult(frame, skipped); see the module docstring for the columns.
    """
    rows, skips = _rows(source, ("k", "t"))
    data = {c: [r.get(c) for r in rows] for c in CHUNK_COLUMNS}
    frame = typed_frame(data, CHUNK_COLUMNS)
    frame["ts"] = to_utc(frame["t"], fmt="epoch")
    raw = {int(r["line_no"]): r["_line"] for r in rows}
    bad = frame["ts"].isna()
    for no in frame.loc[bad, "line_no"]:
        skips.append(skipped(int(no), "unreadable t", raw.get(int(no), "")))
    frame = frame[~bad].sort_values(["ts", "line_no"], kind="stable").reset_index(drop=True)
    return ParseResult(frame, sorted(skips, key=lambda s: s.line_no))


def _bool(value: str | None) -> bool | None:
    v = (value or "").strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None
