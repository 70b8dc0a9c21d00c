"""envoy.log: pilot-agent, Envoy and access-log lines of the istio-proxy container -> one frame.

Reads every form reference/formats.md lists: the `kubectl logs --timestamps` prefix and the
`[pod/<pod>/<container>] ` prefix (also stern and Grafana prefixes); pilot-agent lines in Istio's
text format and as `--log_as_json` JSON; Envoy's own lines in Istio's `--log-format` and in
Envoy's default format; access-log lines in Istio's text format and as JSON (numbers may be
strings). Lines may come in any order: the frame is sorted by the line's own timestamp.

Frame columns (one row per line, sorted by `ts`, ties in file order):

    ts                datetime64[ns, UTC]  the line's own time (access log: START_TIME)
    logged            datetime64[ns, UTC]  the kubectl --timestamps prefix (NaT without one)
    pod               str     from the `[pod/...]`/stern prefix (NaN without one)
    container         str
    kind              str     agent | envoy | access
    level             str     agent/envoy: info, warn, warning, error, debug ...
    logger            str     envoy: the logger (main, upstream ...); agent: the scope
    message           str     agent/envoy: the message
    end               datetime64[ns, UTC]  access: START_TIME + DURATION (when the line was due)
    method, path, protocol  str    access: the request line
    status            Int64   access: RESPONSE_CODE (0 = the client went away)
    flags             str     access: RESPONSE_FLAGS (DC, UC, UF, UH, URX, LR, UR, - ...)
    details           str     access: RESPONSE_CODE_DETAILS
    bytes_received, bytes_sent, duration_ms   Int64   access
    upstream_host, request_id, authority   str   access
    line_no           int64   1-based line number in the file
    line              str     the line as read (evidence); NaN for access-log rows read by
                              the fast path (keeps million-line logs fast; find them by line_no)

Speed: access-log text lines (nearly all of a busy log) are tokenised by pandas' C CSV reader
(space-separated, `"`-quoted: exactly Istio's format); every other line, and any access line
the fast path could not vouch for, goes through the per-line parser. See
benchmarks/parse_envoy.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from ._lines import TS_DTYPE, ParseResult, Skipped, Source, read_bytes, skipped, split_prefixes, to_utc, typed_frame

__all__ = ["parse_envoy", "ENVOY_COLUMNS"]

ENVOY_COLUMNS: dict[str, str] = {
    "ts": TS_DTYPE, "logged": TS_DTYPE, "pod": "str", "container": "str", "kind": "str",
    "level": "str", "logger": "str", "message": "str", "end": TS_DTYPE, "method": "str",
    "path": "str", "protocol": "str", "status": "Int64", "flags": "str", "details": "str",
    "bytes_received": "Int64", "bytes_sent": "Int64", "duration_ms": "Int64",
    "upstream_host": "str", "request_id": "str", "authority": "str", "line_no": "int64",
    "line": "str",
}
# The access-log tokens the frame keeps (fewer columns: a faster read of big logs).
_FAST_COLUMNS = ("request", "status", "flags", "details", "bytes_received", "bytes_sent",
                 "duration_ms", "request_id", "authority", "upstream_host", "route")
_NUMERIC = ("status", "bytes_received", "bytes_sent", "duration_ms")

# Istio's access-log text format, token by token after START_TIME (see formats.md).
_ACCESS_TOKENS = (
    "request", "status", "flags", "details", "termination", "upstream_failure",
    "bytes_received", "bytes_sent", "duration_ms", "upstream_service_time", "x_forwarded_for",
    "user_agent", "request_id", "authority", "upstream_host", "upstream_cluster",
    "upstream_local", "downstream_local", "downstream_remote", "sni", "route",
)
_N_ACCESS = 1 + len(_ACCESS_TOKENS)  # with [START_TIME]
_ACCESS_QUOTES = 14  # 7 quoted fields: how the fast path picks candidate lines cheaply

_ISTIO_TEXT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))\t(\w+)\t(.*)")
_ENVOY_DEFAULT = re.compile(
    r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\]\[(\d+)\]\[(\w+)\]\[([\w.-]+)\] (?:\[([^\]]*)\] )?(.*)")
_ACCESS_TEXT = re.compile(
    r'\[(\d{4}-\d\d-\d\dT[^\]]+)\] "([^"]*)" (\d+|-) (\S+) (\S+) (\S+) "([^"]*)" (\d+|-) (\d+|-) '
    r'(\d+|-) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" (\S+) (\S+) (\S+) (\S+)'
    r"(?: (\S+))?(?: (\S+))?\s*$")
# JSON access-log keys -> frame columns.
_JSON_ACCESS = {
    "method": "method", "path": "path", "protocol": "protocol", "response_code": "status",
    "response_flags": "flags", "response_code_details": "details",
    "bytes_received": "bytes_received", "bytes_sent": "bytes_sent", "duration": "duration_ms",
    "upstream_host": "upstream_host", "request_id": "request_id", "authority": "authority",
}


def parse_envoy(source: Source) -> ParseResult:
    """Parse envoy.log (the istio-proxy container's output) into the envoy frame.

    Parameters:
        source: a path, or the lines (str or bytes).

    Returns:
        ParseResult(frame, skipped); see the module docstring for the columns.
    """
    data, _ = read_bytes(source)
    truncated = bool(data) and not data.endswith(b"\n")
    raw = np.frombuffer(data, dtype=np.uint8)
    step = 1 << 26  # newline offsets in 64 MiB slices: no file-sized temporary
    ends = np.concatenate([np.flatnonzero(raw[i:i + step] == 10) + i for i in range(0, len(raw), step)]
                          or [np.zeros(0, dtype=np.intp)])
    if truncated:
        ends = np.append(ends, len(data))
    n = len(ends)

    def line(no: int) -> bytes:
        return data[(ends[no - 2] + 1 if no > 1 else 0):ends[no - 1]]

    parts: list[pd.DataFrame] = []
    fast = _fast_whole(data, n)
    if fast is not None:
        frame, slow_no = fast
        parts.append(frame)
    else:
        # The whole-file read lost the row <-> line mapping (a quote spanning lines): read
        # only the lines that look like access-log lines, one prefix layout at a time.
        lines = [line(no) for no in range(1, n + 1)]
        candidate = [ln.count(b'"') == _ACCESS_QUOTES for ln in lines]
        slow_no = [i + 1 for i, c in enumerate(candidate) if not c]
        rest = np.flatnonzero(candidate) + 1
        for _ in range(4):  # at most one round per prefix layout
            if not len(rest):
                break
            layout = _layout(lines[rest[0] - 1])
            picked = [lines[no - 1] for no in rest]
            got = _fast_read(b"\n".join(picked) + b"\n", layout, len(picked))
            if got is None:
                slow_no += rest.tolist()
                break
            tok, ok = got
            frame, bad = _frame_of(tok[ok], layout, rest[ok])
            parts.append(frame)
            slow_no += bad
            rest = rest[~ok]
        else:
            slow_no += rest.tolist()
    rows: dict[str, list[object]] = {k: [] for k in ENVOY_COLUMNS}
    skips: list[Skipped] = []
    for no in sorted(slow_no):
        raw = line(no).decode("utf-8", "replace")
        if raw.endswith("\r"):
            raw = raw[:-1]
        if not raw.strip():
            continue
        why = _parse_line(raw, no, rows)
        if why:
            skips.append(skipped(no, why, raw, cut=truncated and no == n))
    slow = typed_frame(rows, ENVOY_COLUMNS)
    slow["end"] = slow["ts"] + pd.to_timedelta(slow["duration_ms"].astype("float64"), unit="ms")
    bad = slow["ts"].isna()
    for no, raw in zip(slow.loc[bad, "line_no"], slow.loc[bad, "line"]):
        skips.append(skipped(int(no), "unreadable timestamp", str(raw)))
    parts = [f for f in parts if len(f)]
    if len(slow) and not bad.all():
        parts.append(slow[~bad])
    if not parts:
        frame = typed_frame({}, ENVOY_COLUMNS)
    else:
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if not (frame["ts"].is_monotonic_increasing and frame["line_no"].is_monotonic_increasing):
        frame = frame.sort_values(["ts", "line_no"], kind="stable")
    skips.sort(key=lambda s: s.line_no)
    return ParseResult(frame.reset_index(drop=True), skips)


def _layout(line: bytes) -> tuple[bool, bool]:
    """(has pod prefix, has kubectl time prefix) of an access-log line."""
    if line[:5] == b"[pod/":
        at = line.find(b"] ") + 2
        return True, line[at:at + 1] != b"["
    return False, line[:1] != b"["


def _fast_whole(data: bytes, n: int) -> tuple[pd.DataFrame, list[int]] | None:
    """Read the whole file with the C reader in the layout of its first access-log line.

    Returns:
        (frame of the access rows it vouches for, line numbers left for the per-line parser),
        or None when the rows no longer map one to one onto lines.
    """
    head = data[:1 << 24].split(b"\n")[:-1] or [data]  # the first 16 MiB find the layout
    first = next((ln for ln in head if ln.count(b'"') == _ACCESS_QUOTES), None)
    if first is None:
        return pd.DataFrame(), list(range(1, n + 1))
    layout = _layout(first)
    got = _fast_read(data, layout, n)
    if got is None:
        return None
    tok, ok = got
    nos = np.arange(1, n + 1)
    frame, bad = _frame_of(tok[ok], layout, nos[ok])
    return frame, nos[~ok].tolist() + bad


class _Chain:
    """A file-like object reading `first` then `rest` (no copy of a big buffer)."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self._parts, self._pos = [memoryview(first), memoryview(rest)], 0

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self._parts and (size < 0 or len(out) < size):
            part = self._parts[0]
            take = len(part) - self._pos if size < 0 else min(size - len(out), len(part) - self._pos)
            out += bytes(part[self._pos:self._pos + take])
            self._pos += take
            if self._pos >= len(part):
                self._parts.pop(0)
                self._pos = 0
        return out

    def __iter__(self):  # pandas checks for it to accept the object as a file
        return self


def _fast_read(data: bytes, layout: tuple[bool, bool], n: int) -> tuple[pd.DataFrame, np.ndarray] | None:
    """Tokenise `data` (n lines) as access-log lines of one layout.

    Returns:
        (tokens, ok) with one row per line and ok marking rows that are access-log lines of this
        layout, or None when rows and lines no longer correspond.
    """
    p = int(layout[0]) + int(layout[1])  # prefix tokens before [START_TIME]
    at = _positions(p)
    width = p + _N_ACCESS + 1  # one spare token: anything there means the row is not ours
    usecols = sorted({*range(p + 1), *(at[c] for c in _FAST_COLUMNS), width - 1})
    # A first row that fills every column keeps the reader from refusing the spare column.
    filler = b" ".join([b"x"] * width) + b"\n"
    try:
        tok = pd.read_csv(
            _Chain(filler, data), sep=" ", quotechar='"', header=None, names=range(width),
            usecols=usecols, na_values={at[c]: ["-"] for c in _NUMERIC}, keep_default_na=False,
            engine="c", encoding_errors="replace", skip_blank_lines=False, on_bad_lines="skip")
    except (pd.errors.ParserError, ValueError, OverflowError):
        return None
    tok = tok.iloc[1:].reset_index(drop=True)
    if len(tok) != n:
        return None
    route, spare = tok[at["route"]].fillna("").astype(str), tok[width - 1].fillna("").astype(str)
    ok = ((route != "") & (spare == "")).to_numpy(bool, copy=True)
    if layout[0]:
        ok &= tok[0].to_numpy(object).astype("U5") == "[pod/"
    ok &= tok[p].fillna("").astype(str).to_numpy(object).astype("U1") == "["
    return tok, ok


def _positions(p: int) -> dict[str, int]:
    return {name: p + 1 + j for j, name in enumerate(_ACCESS_TOKENS)}


def _frame_of(tok: pd.DataFrame, layout: tuple[bool, bool], nos: np.ndarray) -> tuple[pd.DataFrame, list[int]]:
    """Frame columns from the tokens of vouched-for access-log rows.

    Returns:
        (frame, line numbers whose START_TIME is no time: left to the per-line parser).
    """
    p = int(layout[0]) + int(layout[1])
    at = _positions(p)
    tok = tok.reset_index(drop=True)
    # "[START_TIME]" -> START_TIME (a plain comprehension: str.slice is 3x slower here).
    ts = to_utc(pd.Series([v[1:-1] if isinstance(v, str) else None for v in tok[p].to_numpy(object)],
                          dtype=object))
    req = _split_request(tok[at["request"]])
    pod, container = _pod_parts(tok[0]) if layout[0] else (None, None)
    data: dict[str, object] = {
        "ts": ts,
        "logged": to_utc(tok[p - 1]) if layout[1] else None,
        "pod": pod,
        "container": container,
        "kind": _take_str(np.zeros(len(tok), dtype=np.intp), ["access"]),
        "method": req[0], "path": req[1], "protocol": req[2],
        "line_no": np.asarray(nos, dtype="int64"),
    }
    for name in _FAST_COLUMNS:
        if name not in ("request", "route"):
            data[name] = _numeric(tok[at[name]]) if name in _NUMERIC else tok[at[name]]
    out = typed_frame(data, ENVOY_COLUMNS)
    out["end"] = ts + pd.to_timedelta(out["duration_ms"].astype("float64"), unit="ms")
    # A START_TIME that is no time at all: not an access-log line after all.
    bad = out["ts"].isna()
    if not bad.any():
        return out, []
    return out[~bad].reset_index(drop=True), out.loc[bad, "line_no"].tolist()


def _numeric(values: pd.Series) -> pd.Series:
    """Numbers from a token column; each distinct token converted once (few distinct values)."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    conv = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").astype("float64").to_numpy()
    return pd.Series(np.append(conv, np.nan)[codes])


def _take_str(codes: np.ndarray, values: list[str | None]) -> pd.Series:
    """A str Series of values[codes] (-1 = NA), built without checking each row again."""
    arr = pd.array(values + [None], dtype="str")
    return pd.Series(arr.take(np.where(codes < 0, len(values), codes)))


def _pod_parts(prefix: pd.Series) -> tuple[pd.Series, pd.Series]:
    """"[pod/<pod>/<container>]" -> (pod, container), each distinct prefix split once."""
    codes, uniques = pd.factorize(prefix, use_na_sentinel=True)
    parts = [str(u)[5:-1].split("/", 1) for u in uniques]
    return (_take_str(codes, [p[0] if len(p) == 2 else None for p in parts]),
            _take_str(codes, [p[1] if len(p) == 2 else None for p in parts]))


def _split_request(request: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """"GET /x HTTP/1.1" -> method, path, protocol (each distinct request line split once)."""
    codes, uniques = pd.factorize(request, use_na_sentinel=True)
    split = [str(u).split(" ") for u in uniques]
    m, pa, pr = ([b[i] if len(b) == 3 else None for b in split] for i in range(3))
    return _take_str(codes, m), _take_str(codes, pa), _take_str(codes, pr)


def _parse_line(raw: str, no: int, rows: dict[str, list[object]]) -> str | None:
    """Parse one line into `rows`; return the reason when it is not a line we know."""
    pre, body = split_prefixes(raw)
    rec: dict[str, object] = {"pod": pre.pod, "container": pre.container, "logged": pre.logged}
    if body.startswith("{"):
        why = _parse_json(body, rec)
        if why:
            return why
    elif m := _ISTIO_TEXT.match(body):
        ts, level, rest = m.groups()
        fields = rest.split("\t")
        rec.update(ts=ts, level=level)
        if fields[0].startswith("envoy "):  # Envoy under Istio's --log-format
            words = fields[0].split()
            rec.update(kind="envoy", logger=words[1] if len(words) > 1 else None,
                       message=fields[1] if len(fields) > 1 else "")
        elif len(fields) > 1 and " " not in fields[0]:
            rec.update(kind="agent", logger=fields[0], message="\t".join(fields[1:]))
        else:
            rec.update(kind="agent", message=rest)
    elif m := _ENVOY_DEFAULT.match(body):
        ts, _thread, level, logger, _src, msg = m.groups()
        rec.update(ts=ts.replace(" ", "T") + "Z", kind="envoy", level=level, logger=logger, message=msg)
    elif m := _ACCESS_TEXT.match(body):
        g = m.groups()
        method, path, protocol = (g[1].split(" ", 2) + [None, None, None])[:3]
        rec.update(ts=g[0], kind="access", method=method, path=path, protocol=protocol,
                   status=g[2], flags=g[3], details=g[4], bytes_received=g[7],
                   bytes_sent=g[8], duration_ms=g[9], request_id=g[13], authority=g[14],
                   upstream_host=g[15])
    else:
        return "not an agent, Envoy or access-log line"
    rec["line_no"], rec["line"] = no, raw
    for k in rows:
        rows[k].append(rec.get(k))
    return None


def _parse_json(body: str, rec: dict[str, object]) -> str | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return "invalid JSON"
    if not isinstance(obj, dict):
        return "JSON line is not an object"
    if "start_time" in obj or "response_code" in obj:
        rec.update(kind="access", ts=obj.get("start_time"))
        for key, col in _JSON_ACCESS.items():
            v = obj.get(key)
            rec[col] = None if v is None else str(v)
        return None
    if "msg" in obj or "message" in obj:
        rec.update(kind="agent", ts=obj.get("time") or obj.get("ts"), level=obj.get("level"),
                   logger=obj.get("scope"), message=str(obj.get("msg", obj.get("message"))))
        return None
    return "JSON line is neither an access-log entry nor a pilot-agent line"
