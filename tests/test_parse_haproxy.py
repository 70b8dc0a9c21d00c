"""haproxy.log parser: both forms of state lines, health checks, request logs, syslog prefixes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gtnb.analysis import parse_haproxy

FIX = Path(__file__).parent / "fixtures" / "analysis"


def test_iso_lines() -> None:
    frame, skipped = parse_haproxy(FIX / "haproxy.log")
    assert skipped == []
    assert list(frame["kind"]) == ["other", "check", "state", "request"]
    check = frame.iloc[1]
    assert (check["server"], check["result"], check["check_code"], check["state"]) == ("worker1", "failed", 503, "1/2 UP")
    down = frame.iloc[2]
    assert (down["backend"], down["server"], down["state"]) == ("istio-http-backend", "worker1", "DOWN")
    assert down["reason"] == "Layer7 wrong status" and down["info"] == "Service Unavailable"
    assert down["ts"] == pd.Timestamp("2026-06-28T10:15:06.9Z")
    req = frame.iloc[3]
    assert (req["status"], req["termination"], req["ta"], req["frontend"]) == (200, "----", 12004, "fe-https~")
    assert req["accepted"] == pd.Timestamp("2026-06-28T10:14:59.940Z")


def test_rfc5424_syslog_raw_and_maintenance() -> None:
    frame, skipped = parse_haproxy(FIX / "haproxy-forms.log", year=2026)
    assert [s.line_no for s in skipped] == [5]
    by_line = frame.set_index("line_no")
    assert by_line.loc[1, "state"] == "DOWN" and by_line.loc[1, "reason"] == "Layer4 connection problem"
    assert by_line.loc[2, "state"] == "UP" and by_line.loc[2, "ts"] == pd.Timestamp("2026-06-28T10:15:07Z")
    # format raw: no prefix time; the request dates itself by accept time + Ta.
    assert by_line.loc[3, "termination"] == "SH--" and by_line.loc[3, "status"] == 502
    assert by_line.loc[3, "ts"] == pd.Timestamp("2026-06-28T10:15:06.003Z")
    assert by_line.loc[4, "state"] == "MAINT"
    assert frame["ts"].is_monotonic_increasing


def test_empty() -> None:
    frame, skipped = parse_haproxy(FIX / "empty.log")
    assert frame.empty and skipped == []
