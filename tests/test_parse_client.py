"""client.csv, chunks.csv and the seed's curl files -> the client frame."""

from __future__ import annotations

from pathlib import Path

from gtnb.analysis import parse_chunks, parse_client, parse_seed

FIX = Path(__file__).parent / "fixtures" / "analysis"


def test_client_rows_typed_with_outcome() -> None:
    frame, skipped = parse_client(FIX / "client.csv")
    assert list(frame["request_id"]) == ["r0", "r1", "r2"]
    assert list(frame["ok"]) == [True, False, False]
    assert frame["status"].iloc[0] == 200 and frame["status"].isna().iloc[2]
    assert abs(frame["duration_s"].iloc[0] - 12.06) < 1e-6
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert [s.line_no for s in skipped] == [5, 6]
    assert "t_start" in skipped[0].reason and "fields" in skipped[1].reason


def test_chunks() -> None:
    frame, skipped = parse_chunks(FIX / "chunks.csv")
    assert list(frame["k"]) == [1, 2] and [s.line_no for s in skipped] == [4]


def test_seed_curl_out() -> None:
    client, chunks = parse_seed(FIX / "seed-s1")
    row = client.frame.iloc[0]
    assert (row["status"], row["error"], row["ok"], row["duration_s"]) == (502, "http_5xx", False, 8.251)


def test_seed_curl_tsv_with_errors_in_order() -> None:
    client, _ = parse_seed(FIX / "seed-s3")
    f = client.frame
    assert list(f["curl_exit"]) == [0, 56, 0, 52]
    assert list(f["error"]) == ["", "connection_reset", "http_5xx", "connection_reset"]
    assert int(f["ok"].sum()) == 1 and [s.line_no for s in client.skipped] == [4]


def test_seed_stream() -> None:
    client, chunks = parse_seed(FIX / "seed-s4")
    row = client.frame.iloc[0]
    assert (row["chunks"], row["curl_exit"], row["error"], row["detail"]) == (3, 92, "stream_reset", "CANCEL")
    assert list(chunks.frame["k"]) == [1, 2, 3]
    assert parse_seed(FIX) is None  # no curl files there
