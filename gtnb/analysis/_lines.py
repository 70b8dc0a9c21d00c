"""What every parser shares: reading lines, log-viewer prefixes, timestamps, ParseResult.

Parsers take a path or the lines themselves, never fail on a bad line (they count it in
`skipped` with its line number and the reason) and return frames whose `ts` column is
datetime64[ns, UTC], so frames from different sources compare and subtract directly.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArtifactError

__all__ = [
    "Source",
    "Skipped",
    "ParseResult",
    "read_lines",
    "csv_lines",
    "read_bytes",
    "split_prefixes",
    "to_utc",
    "empty_frame",
    "typed_frame",
    "TS_DTYPE",
]

TS_DTYPE = "datetime64[ns, UTC]"
# A path (str or PathLike) or the lines themselves (str or bytes, with or without newlines).
Source = str | os.PathLike[str] | Iterable[str] | Iterable[bytes]

_SKIP_LINE_CHARS = 300  # evidence kept per skipped line: enough to recognise it, not a dump


@dataclass(frozen=True)
class Skipped:
    """One line a parser could not read: 1-based line number, why, and the line (shortened)."""

    line_no: int
    reason: str
    line: str


@dataclass
class ParseResult:
    """A parser's answer: the typed frame and the lines it skipped."""

    frame: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)

    def __iter__(self):  # allows `frame, skipped = parse_x(path)`
        return iter((self.frame, self.skipped))


def read_bytes(source: Source) -> tuple[bytes, str]:
    """The raw bytes of a source and a name for messages.

    Parameters:
        source: a path (str or PathLike) or an iterable of lines (str or bytes).

    Returns:
        (data, name): lines joined with newlines when given as an iterable.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), str(path)
        except IsADirectoryError:
            raise ArtifactError(f"{path} is a directory, not a log file: pass the file inside it") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror}; check the path") from None
    parts = [p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogatepass")
             for p in source]
    # Lines given without their newline get one; lines that carry it keep exactly one.
    return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts), "<lines>"


def read_lines(source: Source) -> tuple[list[str], bool]:
    """Decoded lines of a source and whether the last one lacked its newline (truncated).

    Undecodable bytes become U+FFFD, a trailing CR is dropped (CRLF files), blank lines stay so
    that line numbers match the file.
    """
    data, _ = read_bytes(source)
    text = data.decode("utf-8", "replace").replace("\x00", "\ufffd")
    if not text:
        return [], False
    truncated = not text.endswith("\n")
    lines = text.split("\n")
    if not truncated:
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines], truncated


def csv_lines(lines: list[str], skips: list[Skipped]) -> Iterator[tuple[int, str, list[str]]]:
    """Each non-blank line as (line number, raw line, CSV fields).

    A line the csv module refuses is not yielded: it goes to `skips` with the module's reason,
    so every CSV parser accounts for bad lines the same way.
    """
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            fields = next(csv.reader([raw]))
        except csv.Error as exc:
            skips.append(skipped(no, f"not CSV: {exc}", raw))
            continue
        yield no, raw, fields


def skipped(line_no: int, reason: str, line: str, *, cut: bool = False) -> Skipped:
    """A Skipped record with the line shortened for the report.

    `cut` marks the file's last line written without its newline (a run stopped mid-write), so
    the report says why a line that would parse once complete was skipped.
    """
    return Skipped(line_no, "truncated last line: " + reason if cut else reason, line[:_SKIP_LINE_CHARS])


# Prefixes log viewers put before a container's own line, outermost first. Each is tried at
# the start of the line until none matches, so any nesting order works.
_POD_PREFIX = re.compile(r"\[pod/(?P<pod>[^/\]\s]+)/(?P<container>[^\]\s]+)\] ")
_STERN_PREFIX = re.compile(
    r"(?:(?P<ns>[a-z0-9][a-z0-9-]*)/)?(?P<pod>[a-z0-9][a-z0-9.-]*)\[(?P<container>[a-z0-9][a-z0-9-]*)\]:? ")
_STERN_PLAIN = re.compile(r"(?P<pod>[a-z0-9][a-z0-9-]*-[a-z0-9]{5}) (?P<container>[a-z0-9][a-z0-9-]*) ")
_KUBECTL_TS = re.compile(r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (?=\S)")
# Grafana/Loki exports: a local time (no zone) and a tab. Local time is useless for alignment;
# the line's own UTC time is used instead.
_GRAFANA_TS = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?: ?[+-]\d\d:?\d\d)?\t")


@dataclass
class Prefixes:
    """What the prefixes of one line said."""

    pod: str | None = None
    container: str | None = None
    logged: str | None = None  # the kubectl --timestamps time (the kubelet's clock)


def split_prefixes(line: str, *, stern_plain: bool = False) -> tuple[Prefixes, str]:
    """Strip log-viewer prefixes from a line.

    Parameters:
        line: one log line.
        stern_plain: also accept stern's bare `<pod> <container> ` prefix (only safe where the
            container's own line has a known start, e.g. logfmt `ts=`).

    Returns:
        (prefixes, body): what the prefixes named and the container's own line.
    """
    found = Prefixes()
    body = line
    for _ in range(5):
        m = _POD_PREFIX.match(body) or _STERN_PREFIX.match(body)
        if m:
            found.pod, found.container = m["pod"], m["container"]
            body = body[m.end():]
            continue
        if stern_plain and found.pod is None:
            m = _STERN_PLAIN.match(body)
            if m:
                found.pod, found.container = m["pod"], m["container"]
                body = body[m.end():]
                continue
        m = _KUBECTL_TS.match(body)
        if m and found.logged is None:
            found.logged = m["ts"]
            body = body[m.end():]
            continue
        m = _GRAFANA_TS.match(body)
        if m:
            body = body[m.end():]
            continue
        break
    return found, body


def to_utc(values: Iterable[object] | pd.Series, *, fmt: str = "ISO8601") -> pd.Series:
    """Timestamps -> datetime64[ns, UTC]; unreadable values become NaT (never raise).

    Parameters:
        values: strings (ISO 8601 by default, or `fmt`), epoch seconds, or Timestamps.
        fmt: a strftime format, "ISO8601", or "epoch" for seconds since 1970.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if s.empty:
        return pd.Series([], dtype=TS_DTYPE)
    if fmt == "epoch":
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        # Out-of-range epochs (garbage) would overflow ns: treat them as unreadable.
        num = num.where(num.abs() < 9.2e9)
        out = pd.to_datetime(num, unit="s", utc=True, errors="coerce")
    else:
        try:
            out = pd.to_datetime(s, format=fmt, utc=True, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            out = pd.to_datetime(s.map(_one_ts, na_action="ignore"), utc=True, errors="coerce")
    return out.astype(TS_DTYPE)


def _one_ts(value: object) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(str(value))
    except (ValueError, TypeError, OverflowError):
        return None


def _all_na(n: int, dtype: str) -> pd.Series:
    """An all-missing column of a dtype, built without touching n Python objects."""
    if dtype == "str":
        return pd.Series(pd.array([None], dtype="str").take(np.zeros(n, dtype=np.intp)))
    if dtype in ("int64", "bool"):
        return pd.Series(np.zeros(n, dtype=dtype))
    if dtype == "float64":
        return pd.Series(np.full(n, np.nan))
    return pd.Series(pd.NA if dtype in ("Int64", "boolean") else pd.NaT, index=range(n), dtype=dtype)


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty frame with the given column dtypes (what a missing file loads as)."""
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in columns.items()})


def typed_frame(data: dict[str, object], columns: dict[str, str]) -> pd.DataFrame:
    """A frame with exactly `columns` in order and dtype; missing columns are all-NA.

    `data` values are lists or Series; columns absent from `data` are filled with NA.
    """
    n = max((len(v) for v in data.values() if v is not None), default=0)  # type: ignore[arg-type]
    out: dict[str, pd.Series] = {}
    for col, dtype in columns.items():
        v = data.get(col)
        if v is None:
            out[col] = _all_na(n, dtype)
            continue
        s = v if isinstance(v, pd.Series) else pd.Series(v, dtype=object)
        s = s.reset_index(drop=True)
        if str(s.dtype) == dtype:
            pass  # already typed (big frames: skip a pass over every value)
        elif dtype == TS_DTYPE:
            s = s if str(s.dtype) == TS_DTYPE else to_utc(s)
        elif dtype == "Int64":
            s = pd.to_numeric(s, errors="coerce")
            s = s.where(np.isfinite(s.astype("float64")) & (s.abs() < 2**62)).round().astype("Int64")
        elif dtype == "float64":
            s = pd.to_numeric(s, errors="coerce").astype("float64")
        elif dtype == "boolean":
            s = s.astype("boolean")
        elif dtype == "int64":
            s = s.astype("int64")
        else:
            s = s.astype(dtype)
        out[col] = s
    return pd.DataFrame(out)
