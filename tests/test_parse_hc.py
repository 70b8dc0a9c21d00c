"""hc.log parser on small fixtures: one per form and failure mode."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gtnb.analysis import parse_hc

FIX = Path(__file__).parent / "fixtures" / "analysis"


def test_contract_lines_become_typed_rows() -> None:
    frame, skipped = parse_hc(FIX / "hc.log")
    assert skipped == []
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(frame["event"]) == ["transition", "check", "drain_start", "poll", "transition", "signal", "exit"]
    first = frame.iloc[0]
    assert (first["from"], first["to"], first["reason"]) == ("SERVING", "DRAINING", "prestop")
    assert first["ts"] == pd.Timestamp("2026-06-28T10:15:05.730511Z")
    assert frame.loc[frame["event"] == "check", "code"].item() == 503
    poll = frame[frame["event"] == "poll"].iloc[0]
    assert (poll["rq_active"], poll["cx_active"]) == (1, 2)
    assert frame.loc[frame["event"] == "signal", "signal"].item() == "SIGTERM"


def test_viewer_prefixes_give_pod_and_time() -> None:
    frame, skipped = parse_hc(FIX / "hc-prefixed.log")
    assert skipped == []
    assert list(frame["pod"].fillna("-")) == ["igw-a", "igw-b", "igw-c-7c9d8b6f5-x2x7q", "-"]
    # The line's own ts= wins over the kubectl prefix; without ts= the prefix time is used.
    assert frame["ts"].iloc[0] == pd.Timestamp("2026-06-28T10:15:05.730511Z")
    assert frame["ts"].iloc[3] == pd.Timestamp("2026-06-28T10:15:08Z")


def test_malformed_lines_are_counted_not_fatal() -> None:
    frame, skipped = parse_hc(FIX / "hc-malformed.log")
    assert list(frame["line_no"]) == [1, 4]
    assert [s.line_no for s in skipped] == [2, 3]
    assert "no event=" in skipped[0].reason and "timestamp" in skipped[1].reason
    assert frame["code"].isna().iloc[1]  # code=abc: kept as a row, the number unreadable


def test_truncated_last_line_is_reported_as_truncated() -> None:
    frame, skipped = parse_hc(FIX / "hc-truncated.log")
    assert len(frame) == 1
    assert skipped[0].line_no == 2 and skipped[0].reason.startswith("truncated last line")


def test_out_of_order_lines_are_sorted_by_their_time() -> None:
    frame, _ = parse_hc(FIX / "hc-unordered.log")
    assert frame["ts"].is_monotonic_increasing
    assert list(frame["line_no"]) == [3, 2, 1]


def test_empty_file_and_lines_input() -> None:
    frame, skipped = parse_hc(FIX / "empty.log")
    assert frame.empty and skipped == [] and "ts" in frame
    frame, _ = parse_hc([b"ts=2026-06-28T10:15:05Z level=info event=exit\n", "ts=2026-06-28T10:15:06Z event=exit"])
    assert len(frame) == 2
