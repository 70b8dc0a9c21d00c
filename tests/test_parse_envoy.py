"""envoy.log parser: agent, Envoy and access-log lines in every form formats.md lists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gtnb.analysis import parse_envoy

FIX = Path(__file__).parent / "fixtures" / "analysis"
ACCESS = ('[pod/igw-a/istio-proxy] 2026-06-28T10:15:{s:02d}.000000000Z [2026-06-28T10:15:{s:02d}.000Z] '
          '"GET /fast?i={i} HTTP/1.1" {code} {flags} via_upstream - "-" 0 {b} {d} 2 "127.0.0.1" '
          '"python-httpx/0.27.0" "req-{i}" "example.local" "127.100.0.10:8080" outbound|8080||svc '
          '127.100.0.11:40000 127.100.0.11:8080 127.100.0.1:51234 - -')


def test_prefixed_lines_of_every_kind() -> None:
    frame, skipped = parse_envoy(FIX / "envoy.log")
    assert skipped == []
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(frame["kind"]) == ["access"] + ["agent"] * 5 + ["envoy", "agent"]
    assert set(frame["pod"]) == {"igw-a"} and set(frame["container"]) == {"istio-proxy"}
    acc = frame.iloc[0]
    assert (acc["method"], acc["path"], acc["protocol"], acc["status"]) == ("GET", "/sleep?seconds=12", "HTTP/1.1", 200)
    assert acc["duration_ms"] == 12003 and acc["request_id"] == "req-1"
    assert acc["end"] - acc["ts"] == pd.Timedelta(milliseconds=12003)
    assert acc["logged"] == pd.Timestamp("2026-06-28T10:15:00Z")  # the kubectl prefix
    assert frame.loc[frame["kind"] == "envoy", "message"].item() == "caught ENVOY_SIGTERM"
    assert "Aborting proxy" in set(frame["message"])
    agent = frame[frame["message"] == "Aborting proxy"].iloc[0]
    assert agent["level"] == "warn" and agent["logged"] == pd.Timestamp("2026-06-28T10:15:12.300100Z")


def test_json_istio_format_stern_and_grafana_forms() -> None:
    frame, skipped = parse_envoy(FIX / "envoy-forms.log")
    assert skipped == []
    by_line = frame.set_index("line_no")
    assert by_line.loc[1, "message"] == "Agent draining Proxy for termination" and by_line.loc[1, "logger"] == "default"
    assert by_line.loc[2, "status"] == 503 and by_line.loc[2, "flags"] == "UC" and by_line.loc[2, "duration_ms"] == 12
    assert by_line.loc[3, "kind"] == "envoy" and by_line.loc[3, "logger"] == "main"
    assert by_line.loc[4, "pod"] == "igw-b" and by_line.loc[4, "message"] == "Aborting proxy"
    # Grafana's local time is dropped; the line's own UTC time counts.
    assert by_line.loc[5, "ts"] == pd.Timestamp("2026-06-28T10:15:04Z")
    # A user agent with spaces and response code 0 (client went away), no prefix.
    assert by_line.loc[6, "status"] == 0 and by_line.loc[6, "flags"] == "DC"


def test_malformed_lines_are_counted_with_reasons() -> None:
    frame, skipped = parse_envoy(FIX / "envoy-malformed.log")
    assert list(frame["line_no"]) == [1, 7]
    assert [s.line_no for s in skipped] == [2, 3, 4, 5, 6]
    assert skipped[1].reason == "invalid JSON"


def test_newest_first_lines_come_out_oldest_first() -> None:
    frame, _ = parse_envoy(FIX / "envoy-newest-first.log")
    assert frame["ts"].is_monotonic_increasing
    assert list(frame["line_no"]) == [3, 4, 2, 1]


def test_truncated_and_empty() -> None:
    frame, skipped = parse_envoy(FIX / "envoy-truncated.log")
    assert len(frame) == 1 and skipped[0].reason.startswith("truncated last line")
    frame, skipped = parse_envoy(FIX / "empty.log")
    assert frame.empty and skipped == [] and list(frame.columns)[0] == "ts"


def _access_lines(n: int) -> list[str]:
    return [ACCESS.format(s=i % 60, i=i, code=(200, 503, 0)[i % 3], flags=("-", "UC", "DC")[i % 3],
                          b=i, d=i % 7) for i in range(n)]


def test_fast_path_and_per_line_parser_agree() -> None:
    """The C-reader fast path and the per-line parser must read access lines identically."""
    lines = _access_lines(300)
    fast, skipped_fast = parse_envoy(lines)
    # An unbalanced quote at the start of a line breaks the whole-file read: every line then
    # goes through the per-layout and per-line paths.
    slow, skipped_slow = parse_envoy(['"unbalanced', *lines])
    assert skipped_fast == [] and [s.line_no for s in skipped_slow] == [1]
    cols = ["ts", "method", "path", "protocol", "status", "flags", "details", "bytes_sent",
            "duration_ms", "request_id", "authority", "upstream_host", "pod", "end"]
    a = fast.sort_values("line_no")[cols].reset_index(drop=True)
    b = slow.sort_values("line_no")[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=True)
    assert list(a["status"].head(3)) == [200, 503, 0]


def test_access_lines_with_an_extra_token_go_to_the_per_line_parser() -> None:
    lines = _access_lines(5)
    lines[2] = lines[2] + " extra-token"
    frame, skipped = parse_envoy(lines)
    # The per-line parser reads it (ROUTE_NAME and one optional token); nothing is lost.
    assert len(frame) + len(skipped) == 5
