"""The seed's bash-run files -> the client frame, so runs made with curl load like gtnb's own.

    curl.out       S1: the body, `---`, `http=<code> t=<time_total>`, `exit=<rc>`
    curl.body      S4: the stream's `chunk N` lines; curl.exit `exit=<rc>`; curl.err curl's stderr
    curl.tsv       S3: `<epoch.ms> <http_code> <time_total>` per request (`000` = no response),
                   with curl-err.log: one curl error line per failed request, in order

The rows carry the client frame's columns (see parse_client). What the seed did not record stays
NA: curl.out and curl.body have no start time (ts is NaT, duration_s is curl's time_total), and
curl.tsv has no worker. curl exit codes map onto gtnb's error kinds: 7 connect_failed,
28 timeout, 52/56 connection_reset, 92 stream_reset, 18 truncated; HTTP >= 500 is http_5xx.
"""

from __future__ import annotations

import re
from pathlib import Path

from ._lines import ParseResult, Skipped, Source, read_lines, skipped, typed_frame
from .parse_client import CHUNK_COLUMNS, CLIENT_COLUMNS, finish_client

__all__ = ["parse_curl_out", "parse_curl_stream", "parse_curl_tsv", "parse_seed", "SEED_FILES",
           "error_of"]

SEED_FILES = ("curl.out", "curl.body", "curl.tsv")
_CURL_EXIT_ERROR = {7: "connect_failed", 28: "timeout", 52: "connection_reset",
                    56: "connection_reset", 92: "stream_reset", 18: "truncated",
                    16: "stream_reset", 55: "connection_reset"}
_HTTP_T = re.compile(r"http=(\d+)\s+t=([\d.]+)")
_EXIT = re.compile(r"exit=(-?\d+)")
_CURL_ERR = re.compile(r"curl: \((\d+)\) (.*)")
_CHUNK = re.compile(r"chunk (\d+)\s*$")
_H2_CODE = re.compile(r"\b(CANCEL|REFUSED_STREAM|INTERNAL_ERROR|PROTOCOL_ERROR|NO_ERROR|ENHANCE_YOUR_CALM)\b")


def error_of(status: int | None, curl_exit: int | None) -> str:
    """gtnb's error kind for a curl result."""
    if curl_exit:
        return _CURL_EXIT_ERROR.get(curl_exit, "connection_reset")
    if status is not None and status >= 500:
        return "http_5xx"
    if status is None or status == 0:
        return "connection_reset"
    return ""


def parse_curl_out(source: Source) -> ParseResult:
    """S1's curl.out -> one client row (no start time: the seed did not record one)."""
    lines, _ = read_lines(source)
    status = time_total = code = None
    skips: list[Skipped] = []
    body = 0
    for no, raw in enumerate(lines, 1):
        if m := _HTTP_T.search(raw):
            status, time_total = int(m[1]), float(m[2])
        elif m := _EXIT.fullmatch(raw.strip()):
            code = int(m[1])
        elif raw.strip() != "---":
            body += len(raw) + 1
    if status is None:
        skips.append(skipped(len(lines) or 1, "no `http=<code> t=<time>` line", ""))
        return ParseResult(typed_frame({}, CLIENT_COLUMNS), skips)
    code = 0 if code is None else code
    http = status or None
    row = dict(worker=0, request_id="curl", t_start=None, t_end=None, status=http,
               error=error_of(http, code), curl_exit=code, bytes=body,
               complete=code == 0 and http is not None and http < 500, detail="", line_no=1)
    frame = finish_client(typed_frame({k: [v] for k, v in row.items()}, CLIENT_COLUMNS))
    frame["duration_s"] = time_total
    return ParseResult(frame, skips)


def parse_curl_stream(body: Source, *, exit_file: Source | None = None,
                      err_file: Source | None = None) -> tuple[ParseResult, ParseResult]:
    """S4's curl.body (+ curl.exit, curl.err) -> (one client row, the chunks frame without times).

    `complete` is the seed's own criterion: curl exit 0 (a cut HTTP/2 stream can also end with
    exit 0: the verdict also counts the chunks).
    """
    lines, _ = read_lines(body)
    ks = [int(m[1]) for ln in lines if (m := _CHUNK.search(ln))]
    code = 0
    if exit_file is not None:
        text = "\n".join(read_lines(exit_file)[0])
        if m := _EXIT.search(text):
            code = int(m[1])
    detail = ""
    if err_file is not None:
        for ln in read_lines(err_file)[0]:
            if m := _CURL_ERR.search(ln):
                code = code or int(m[1])
                h2 = _H2_CODE.search(m[2])
                detail = h2[1] if h2 else m[2]
    row = dict(worker=0, request_id="curl", status=200 if ks else None,
               error=error_of(200 if ks else None, code), curl_exit=code,
               bytes=sum(len(ln) + 1 for ln in lines), chunks=len(ks), complete=code == 0,
               detail=detail, line_no=1)
    client = finish_client(typed_frame({k: [v] for k, v in row.items()}, CLIENT_COLUMNS))
    chunks = typed_frame({"request_id": ["curl"] * len(ks), "k": ks,
                          "line_no": list(range(1, len(ks) + 1))}, CHUNK_COLUMNS)
    return ParseResult(client, []), ParseResult(chunks, [])


def parse_curl_tsv(source: Source, *, err_file: Source | None = None) -> ParseResult:
    """S3's curl.tsv (+ curl-err.log) -> one client row per request.

    The k-th failed request (`000`) takes the k-th curl error line for its exit code.
    """
    lines, truncated = read_lines(source)
    errors = []
    if err_file is not None:
        errors = [(int(m[1]), m[2]) for ln in read_lines(err_file)[0] if (m := _CURL_ERR.search(ln))]
    rows: dict[str, list[object]] = {k: [] for k in CLIENT_COLUMNS}
    skips: list[Skipped] = []
    failed = 0
    for no, raw in enumerate(lines, 1):
        parts = raw.split()
        if not parts:
            continue
        try:
            start, http, total = float(parts[0]), int(parts[1]), float(parts[2])
        except (ValueError, IndexError):
            why = "expected `<epoch> <http_code> <time_total>`"
            skips.append(skipped(no, why, raw, cut=truncated and no == len(lines)))
            continue
        status = http or None
        code, detail = 0, ""
        if status is None:
            code, detail = errors[failed] if failed < len(errors) else (56, "")
            failed += 1
        rec = dict(request_id=f"tsv{no}", path=None, t_start=start, t_end=start + total,
                   status=status, error=error_of(status, code), curl_exit=code,
                   complete=status is not None and status < 500, detail=detail, line_no=no)
        for k in rows:
            rows[k].append(rec.get(k))
    frame = finish_client(typed_frame(rows, CLIENT_COLUMNS))
    return ParseResult(frame.sort_values(["ts", "line_no"], kind="stable").reset_index(drop=True), skips)


def parse_seed(run_dir: str | Path) -> tuple[ParseResult, ParseResult] | None:
    """The client and chunks frames of a seed run directory, or None when it has no curl files."""
    d = Path(run_dir)
    empty = ParseResult(typed_frame({}, CHUNK_COLUMNS), [])
    if (d / "curl.tsv").is_file():
        err = d / "curl-err.log"
        return parse_curl_tsv(d / "curl.tsv", err_file=err if err.is_file() else None), empty
    if (d / "curl.body").is_file():
        ex, err = d / "curl.exit", d / "curl.err"
        return parse_curl_stream(d / "curl.body", exit_file=ex if ex.is_file() else None,
                                 err_file=err if err.is_file() else None)
    if (d / "curl.out").is_file():
        return parse_curl_out(d / "curl.out"), empty
    return None
