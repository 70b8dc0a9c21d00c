"""The six events, alignment on E1 and events.csv, on runs that imitate both modes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from synthetic_runs import write_run

from gtnb.analysis import align, load_run, write_events_csv

FIX = Path(__file__).parent / "fixtures" / "analysis"


def _names(run) -> list[str]:
    return list(dict.fromkeys(run.events.sort_values("ts")["name"]))


def test_improved_run_shows_the_fsm_order(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path, "S1", "improved"))
    ev = run.events
    first = ev.drop_duplicates("name").set_index("name")["t"]
    assert first["HEALTH_FAIL"] == 0.0
    assert first["HEALTH_FAIL"] < first["LB_DOWN"] < first["DRAIN_START"] < first["CONNS_ZERO"] \
        < first["SIGTERM"] <= first["POD_EXIT"]
    assert "PROXY_KILLED" not in set(ev["name"])  # Aborting proxy after zero connections kills nothing
    # Both sightings of LB_DOWN are kept, and the difference is reported.
    down = ev[ev["name"] == "LB_DOWN"]
    assert set(down["source"]) == {"haproxy", "stat"}
    assert "after haproxy.log" in down[down["source"] == "stat"]["note"].item()


@pytest.mark.parametrize("first", ["proxy", "down"])
def test_current_run_events_follow_the_data_in_either_order(tmp_path: Path, first: str) -> None:
    # Current mode's E2/E4 order depends on the HAProxy timings (it varies on real labs): the
    # events report what the files say, in whichever order, and name the cut's source.
    run = load_run(write_run(tmp_path, "S1", "current", current_cut=first))
    ev = run.events
    killed = ev[ev["name"] == "PROXY_KILLED"]
    down = ev[(ev["name"] == "LB_DOWN") & (ev["source"] == "haproxy")]
    assert "agent" in set(killed["source"]) and len(down) == 1
    agent_kill = killed[killed["source"] == "agent"]["t"].item()
    if first == "proxy":
        assert "SH--" in killed[killed["source"] == "haproxy"]["note"].item()
        assert "cut by HAProxy at DOWN" not in down["note"].item()
        assert agent_kill < down["t"].item()
    else:
        assert "haproxy" not in set(killed["source"])  # no SH/SD line: HAProxy cut it, DH--
        assert "1 request(s) cut by HAProxy at DOWN (shutdown-sessions, DH--" in down["note"].item()
        assert down["t"].item() < agent_kill
    assert "CONNS_ZERO" not in set(ev["name"])


def test_only_the_killed_pod_counts(tmp_path: Path) -> None:
    d = tmp_path / "S1-current"
    d.mkdir()
    other = "ts=2026-06-28T10:15:01.000000Z level=info pod=igw-z event=transition from=SERVING to=TERMINATING reason=sigterm\n"
    (d / "hc.log").write_text(other + (FIX / "hc.log").read_text())
    (d / "run.json").write_text(json.dumps({"scenario": "S1", "mode": "current", "killed_pod": "igw-a"}))
    run = load_run(d)
    assert set(run.events["pod"]) == {"igw-a"}
    assert run.events.loc[run.events["name"] == "HEALTH_FAIL", "ts"].item() == pd.Timestamp("2026-06-28T10:15:05.730511Z")
    # Without killed_pod (a rollout), every pod gets its events and E1 is the earliest.
    (d / "run.json").write_text(json.dumps({"scenario": "S3", "mode": "current"}))
    run = load_run(d)
    e1 = run.events[run.events["name"] == "HEALTH_FAIL"]
    assert set(e1["pod"]) == {"igw-a", "igw-z"} and e1["t"].min() == 0.0


def test_align_adds_t_to_every_frame(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path, "S4", "improved"))
    aligned = align(run)
    assert aligned.aligned and not run.aligned
    e1 = run.events.loc[run.events["name"] == "HEALTH_FAIL", "ts"].item()
    for name, frame in aligned.frames.items():
        assert "t" in frame, name
        if len(frame):
            expect = (frame["ts"] - e1).dt.total_seconds()
            assert (frame["t"] - expect).abs().max() < 1e-9, name
    client = aligned.frames["client"]
    assert client["t"].iloc[0] < 0 < client["t_end_rel"].iloc[0]
    # The loaded run keeps chunks' epoch `t` untouched.
    assert run.frames["chunks"]["t"].iloc[0] > 1e9


def test_align_without_e1_falls_back_and_says_so(tmp_path: Path) -> None:
    d = tmp_path / "S1-current"
    d.mkdir()
    shutil.copy(FIX / "client.csv", d / "client.csv")
    run = align(load_run(d))
    assert run.frames["client"]["t"].iloc[0] == 0.0
    assert any("no HEALTH_FAIL" in n for n in run.notes)


def test_events_csv(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path, "S1", "improved"))
    out = write_events_csv(run)
    assert out == run.path / "events.csv"
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == list(run.events["name"])
    assert rows[0]["ts"].endswith("Z") and float(rows[0]["t"]) == 0.0
    assert set(rows[0]) >= {"event", "name", "ts", "t", "source", "pod", "evidence"}
    assert "event=transition" in rows[0]["evidence"]


def test_rollout_pods_each_claim_their_own_down_line(tmp_path: Path) -> None:
    """S3: two pods fail one after the other; each gets the DOWN line that followed it."""
    d = tmp_path / "S3-current"
    d.mkdir()
    (d / "hc.log").write_text(
        "ts=2026-12-01T00:33:06.980Z level=info pod=igw-a event=transition from=SERVING to=TERMINATING reason=sigterm\n"
        "ts=2026-12-01T00:33:13.739Z level=info pod=igw-b event=transition from=SERVING to=TERMINATING reason=sigterm\n")
    (d / "haproxy.log").write_text(
        "2026-12-01T00:33:05.000000+00:00 Server be/worker2 is DOWN, reason: Layer4 connection problem. 1 active.\n"
        "2026-12-01T00:33:12.824214+00:00 Server be/master1 is DOWN, reason: Layer4 connection problem. 2 active.\n"
        "2026-12-01T00:33:14.003179+00:00 127.0.0.1:54384 [01/Dec/2026:00:33:12.000] fe~ be/master1 0/0/2003/-1/2003 502 209 - - DH-- 3/3/2/0/2 0/0 \"GET /fast HTTP/1.1\"\n"
        "2026-12-01T00:33:19.307907+00:00 Server be/worker1 is DOWN, reason: Layer4 connection problem. 2 active.\n")
    (d / "run.json").write_text(json.dumps({"scenario": "S3", "mode": "current", "killed_pod": None}))
    ev = load_run(d).events
    down = ev[ev["name"] == "LB_DOWN"].set_index("pod")
    # worker2 went DOWN before either pod failed: nobody's. Each pod gets the next DOWN.
    assert down.loc["igw-a", "note"].startswith("server be/master1")
    assert "1 request(s) cut by HAProxy at DOWN (shutdown-sessions, DH--, status 502)" in down.loc["igw-a", "note"]
    assert down.loc["igw-b", "note"].startswith("server be/worker1")
    assert down.loc["igw-b", "t"] > down.loc["igw-a", "t"] > 0
