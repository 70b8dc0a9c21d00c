"""load_run on run directories: gtnb's own, partial ones, the seed's, and things that are not runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gtnb.analysis import Run, load_run
from gtnb.errors import ArtifactError

FIX = Path(__file__).parent / "fixtures" / "analysis"


def _run_dir(tmp_path: Path, files: dict[str, str], journal: dict | None = None) -> Path:
    d = tmp_path / "20260628-101500" / "S1-improved"
    d.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(FIX / src, d / name)
    if journal is not None:
        (d / "run.json").write_text(json.dumps(journal))
    return d


def test_full_run_loads_every_frame(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, {"hc.log": "hc.log", "envoy.log": "envoy.log", "haproxy.log": "haproxy.log",
                            "stat.csv": "stat.csv", "client.csv": "client.csv", "chunks.csv": "chunks.csv"},
                 {"scenario": "S1", "mode": "improved", "killed_pod": "igw-a", "status": "completed",
                  "started_at": "2026-06-28T10:14:58Z", "parameters": {"duration_s": 12}})
    run = load_run(d)
    assert isinstance(run, Run) and (run.scenario, run.mode) == ("S1", "improved")
    assert {k: len(v) for k, v in run.frames.items()} == {"hc": 7, "envoy": 8, "haproxy": 4, "stat": 5,
                                                          "client": 3, "chunks": 2}
    assert len(run.skipped["client"]) == 2 and len(run.skipped["chunks"]) == 1
    text = run.summary()
    assert "client: 3 rows, 2 lines skipped" in text and "unreadable t_start" in text
    assert not run.events.empty and run.events["name"].iloc[0] == "HEALTH_FAIL"


def test_missing_files_load_as_empty_typed_frames(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, {"hc.log": "hc.log"})
    run = load_run(d)
    assert run.journal == {} and (run.scenario, run.mode) == ("S1", "improved")  # from the dir name
    for name in ("envoy", "haproxy", "stat", "client", "chunks"):
        assert run.frames[name].empty and "ts" in run.frames[name]
    assert str(run.frames["envoy"]["ts"].dtype) == "datetime64[ns, UTC]"
    text = run.summary()
    assert "run.json missing" in text and "envoy.log missing" in text and "client.csv missing" in text
    assert "no LB_DOWN for pod igw-a" in text  # E1 seen, but no balancer view of it


def test_broken_journal_is_noted_not_fatal(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, {"hc.log": "hc.log"})
    (d / "run.json").write_text("{not json")
    run = load_run(d)
    assert run.journal == {} and "run.json unreadable" in run.summary()


def test_seed_run_directory(tmp_path: Path) -> None:
    d = tmp_path / "20260628-101500" / "S4-rerun"
    shutil.copytree(FIX / "seed-s4", d)
    run = load_run(d)
    assert run.scenario == "S4" and run.mode is None
    assert run.frames["client"]["chunks"].item() == 3 and len(run.frames["chunks"]) == 3
    assert "seed's curl files" in run.summary()


def test_clock_offsets_put_hosts_on_the_runner_clock(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, {"hc.log": "hc.log", "haproxy.log": "haproxy.log"},
                 {"scenario": "S1", "mode": "improved", "pod_nodes": {"igw-a": "worker1"},
                  "clock_offsets_s": {"haproxy": 0.5, "worker1": -0.25}})
    run = load_run(d)
    down = run.frames["haproxy"]
    assert down.loc[down["kind"] == "state", "ts"].item() == pd.Timestamp("2026-06-28T10:15:06.4Z")
    assert run.frames["hc"]["ts"].iloc[0] == pd.Timestamp("2026-06-28T10:15:05.980511Z")
    assert "clock offset applied" in run.summary()


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ArtifactError, match="is a file"):
        load_run(tmp_path / "file.txt")
    d = _run_dir(tmp_path, {"hc.log": "hc.log"})
    with pytest.raises(ArtifactError, match="not a run directory.*S1-improved"):
        load_run(d.parent.parent)  # the artifacts root: names the runs below it
