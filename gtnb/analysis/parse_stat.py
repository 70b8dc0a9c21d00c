"""stat.csv: HAProxy `show stat` samples -> one row per (sample, proxy, server).

Read by header name, never by position (the column set grows between HAProxy versions). Lenient
about the forms seen: gtnb's own (`ts,pxname,svname,...`), a header that keeps HAProxy's
`# pxname`, raw `show stat` dumps with the header repeated per sample, and the seed's headerless
`<ts>,<svname>,<status>` / `<ts>,<pxname>,<svname>,<status>` / `<ts>,<show stat row>` lines.
`ts` may be epoch seconds or ISO 8601.

Frame columns (sorted by `ts`, ties in file order):

    ts         datetime64[ns, UTC]  when the sample was taken
    pxname     str     proxy (backend/frontend) name (NaN when the file does not say)
    svname     str     server name, or FRONTEND/BACKEND
    status     str     as HAProxy prints it: UP, UP 1/2, DOWN, DOWN 1/2, MAINT, no check ...
    state      str     the status's first word: UP | DOWN | MAINT | NOLB | DRAIN | no
    scur, stot, econ, eresp, chkfail, chkdown, lastchg, check_code, check_duration,
    hrsp_5xx, cli_abrt, srv_abrt   Int64 (when the file has them)
    check_status  str  L7OK, L7STS, L4CON, L4TOUT, ... (when the file has it)
    ...        any other column of the header, as str
    line_no    int64
"""

from __future__ import annotations


import pandas as pd

from ._lines import (
    TS_DTYPE, ParseResult, Skipped, Source, csv_lines, read_lines, skipped, to_utc, typed_frame,
)

__all__ = ["parse_stat", "STAT_COLUMNS"]

STAT_COLUMNS: dict[str, str] = {
    "ts": TS_DTYPE, "pxname": "str", "svname": "str", "status": "str", "state": "str",
    "line_no": "int64",
}
_INTS = ("scur", "stot", "econ", "eresp", "chkfail", "chkdown", "lastchg", "check_code",
         "check_duration", "hrsp_5xx", "cli_abrt", "srv_abrt")
# show stat's own positions (0-based), for headerless rows that carry a whole show stat line.
_SHOW_STAT = {0: "pxname", 1: "svname", 4: "scur", 7: "stot", 13: "econ", 14: "eresp",
              17: "status", 21: "chkfail", 22: "chkdown", 23: "lastchg", 36: "check_status",
              37: "check_code", 38: "check_duration", 43: "hrsp_5xx", 49: "cli_abrt",
              50: "srv_abrt"}


def parse_stat(source: Source) -> ParseResult:
    """Parse stat.csv into the stat frame.

    Parameters:
        source: a path, or the lines (str or bytes).

    Returns:
        ParseResult(frame, skipped); see the module docstring for the columns.
    """
    lines, truncated = read_lines(source)
    header: list[str] | None = None
    records: list[dict[str, object]] = []
    skips: list[Skipped] = []
    extra: list[str] = []
    for no, raw, fields in csv_lines(lines, skips):
        names = [f.strip().lstrip("#").strip() for f in fields]
        if "svname" in names:  # a header (first or repeated per sample)
            header = names
            extra += [n for n in names if n and n not in extra]
            continue
        rec = _record(fields, header)
        if isinstance(rec, str):
            skips.append(skipped(no, rec, raw, cut=truncated and no == len(lines)))
            continue
        rec["line_no"] = no
        records.append(rec)
    columns = dict(STAT_COLUMNS)
    for name in extra:
        if name not in columns and name:
            columns[name] = "Int64" if name in _INTS else "str"
    for name in _SHOW_STAT.values():
        if any(name in r for r in records) and name not in columns:
            columns[name] = "Int64" if name in _INTS else "str"
    data = {c: [r.get(c) for r in records] for c in columns}
    ts_raw = pd.Series(data["ts"], dtype=object)
    epoch = to_utc(ts_raw, fmt="epoch")
    data["ts"] = epoch.where(epoch.notna(), to_utc(ts_raw))
    frame = typed_frame(data, columns)
    frame["state"] = pd.Series([v.split(" ")[0] if isinstance(v, str) and v else None
                                for v in frame["status"]], index=frame.index, dtype="str")
    bad = frame["ts"].isna() | frame["svname"].isna()
    for no in frame.loc[bad, "line_no"]:
        skips.append(skipped(int(no), "no readable ts or svname", lines[int(no) - 1]))
    frame = frame[~bad].sort_values(["ts", "line_no"], kind="stable").reset_index(drop=True)
    skips.sort(key=lambda s: s.line_no)
    return ParseResult(frame, skips)


def _record(fields: list[str], header: list[str] | None) -> dict[str, object] | str:
    """One data row -> {column: value}, or why it cannot be read."""
    if header is not None:
        if "ts" not in header and len(fields) == len(header) + 1:
            header = ["ts", *header]  # a ts column prepended to show stat's own header
        if len(fields) < len(header) - 1 or len(fields) > len(header) + 1:
            return f"{len(fields)} fields where the header has {len(header)}"
        rec = {h: (v.strip() if v.strip() != "" else None) for h, v in zip(header, fields) if h}
        return rec if "ts" in rec else "no ts column"
    # Headerless: the seed's forms.
    if len(fields) == 3:
        return {"ts": fields[0].strip(), "svname": fields[1].strip(), "status": fields[2].strip()}
    if len(fields) == 4:
        return {"ts": fields[0].strip(), "pxname": fields[1].strip(), "svname": fields[2].strip(),
                "status": fields[3].strip()}
    if len(fields) > 18:
        row = fields[1:]
        return {"ts": fields[0].strip(),
                **{name: (row[i].strip() or None) for i, name in _SHOW_STAT.items() if i < len(row)}}
    return f"headerless row with {len(fields)} fields (expected ts,svname,status or a show stat row)"
