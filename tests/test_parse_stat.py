"""stat.csv parser: by header name, gtnb's form and the seed's headerless forms."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gtnb.analysis import parse_stat

FIX = Path(__file__).parent / "fixtures" / "analysis"


def test_gtnb_form_by_header_name() -> None:
    frame, skipped = parse_stat(FIX / "stat.csv")
    assert skipped == []
    assert frame["ts"].iloc[0] == pd.Timestamp("2026-06-28T10:15:05Z")
    assert list(frame["status"]) == ["UP", "UP", "UP 1/2", "DOWN", "DOWN"]
    assert list(frame["state"]) == ["UP", "UP", "UP", "DOWN", "DOWN"]
    assert frame["scur"].dtype == "Int64" and frame["check_status"].iloc[2] == "L7STS"


def test_seed_forms_and_bad_rows() -> None:
    frame, skipped = parse_stat(FIX / "stat-seed.csv")
    assert list(frame["svname"]) == ["worker1", "worker1", "worker2"]
    assert frame["ts"].iloc[1] == pd.Timestamp("2026-06-28T10:15:07Z")
    assert frame["pxname"].iloc[2] == "istio-http-backend" and frame["state"].iloc[2] == "DOWN"
    assert [s.line_no for s in skipped] == [5]


def test_columns_in_any_order_and_empty() -> None:
    frame, _ = parse_stat(["status,svname,ts,pxname", "DOWN,s1,1782641707.5,be"])
    assert (frame["svname"].item(), frame["state"].item()) == ("s1", "DOWN")
    frame, skipped = parse_stat(FIX / "empty.log")
    assert frame.empty and skipped == []
