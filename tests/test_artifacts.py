"""Run directories, the run.json journal and the lab lock (real files, real flock, real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gtnb._wait import wait_until
from gtnb.artifacts import (
    Journal,
    LabLock,
    artifacts_root,
    lab_lock_path,
    new_run_dir,
    read_journal,
    rfc3339,
)
from gtnb.errors import ArtifactError, ConfigError, RunLockedError

NOW = 1_796_083_200.0  # 2026-12-01T00:00:00Z


def test_run_dir_layout(tmp_path: Path) -> None:
    path = new_run_dir("S1", "improved", tmp_path, now=NOW + 5)
    assert path == tmp_path / "20261201-000005" / "S1-improved"
    assert path.is_dir()


def test_run_dir_never_reused(tmp_path: Path) -> None:
    first = new_run_dir("S1", "current", tmp_path, now=NOW)
    (first / "client.csv").write_text("keep me\n")
    second = new_run_dir("S1", "current", tmp_path, now=NOW)
    third = new_run_dir("S1", "current", tmp_path, now=NOW)
    assert [p.parent.name for p in (first, second, third)] == [
        "20261201-000000",
        "20261201-000001",
        "20261201-000002",
    ]
    assert (first / "client.csv").read_text() == "keep me\n"
    # Another scenario in the same second shares the timestamp directory, not the run directory.
    other = new_run_dir("S4", "current", tmp_path, now=NOW)
    assert other == tmp_path / "20261201-000000" / "S4-current"


def test_run_dir_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    new_run_dir("S1", "current", tmp_path, now=NOW, max_tries=1)
    with pytest.raises(ArtifactError, match="no free run directory for S1-current"):
        new_run_dir("S1", "current", tmp_path, now=NOW, max_tries=1)


def test_artifacts_root_override_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GTNB_ARTIFACTS", raising=False)
    assert artifacts_root().name == "artifacts"
    assert (artifacts_root().parent / "pyproject.toml").exists()
    monkeypatch.setenv("GTNB_ARTIFACTS", str(tmp_path / "env"))
    assert artifacts_root() == tmp_path / "env"
    assert artifacts_root(tmp_path / "arg") == tmp_path / "arg"


def test_journal_written_at_every_step(tmp_path: Path) -> None:
    j = Journal(tmp_path, target="local", scenario="S1", mode="current", parameters={"duration_s": 8})
    data = read_journal(tmp_path)
    assert data["status"] == "running" and data["step"] == "start"
    assert data["parameters"] == {"duration_s": 8}
    for key in ("schema", "gtnb_version", "versions", "started_at", "ended_at", "error", "sha256",
                "clock_offsets_s", "stat_interval_s", "stat_jitter_s", "killed_pod", "verdict"):
        assert key in data
    j.step("toggle", sha256={"manifest": "ab", "haproxy_cfg": "cd"})
    data = read_journal(tmp_path)
    assert data["step"] == "toggle" and data["sha256"]["manifest"] == "ab"
    j.step("terminate", killed_pod="service-a-igw-1-abcde")
    j.finish("aborted", error="KeyboardInterrupt")
    data = read_journal(tmp_path)
    assert (data["status"], data["step"], data["error"]) == ("aborted", "terminate", "KeyboardInterrupt")
    assert data["killed_pod"] == "service-a-igw-1-abcde"
    assert data["ended_at"] >= data["started_at"]
    assert not list(tmp_path.glob(".run.json*"))  # no temporary file left behind


def test_journal_refuses_unknown_status(tmp_path: Path) -> None:
    j = Journal(tmp_path, target="local", scenario="S1", mode="current", parameters={})
    with pytest.raises(ConfigError, match="completed, failed, aborted"):
        j.finish("done")


def test_read_journal_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="run.json is missing"):
        read_journal(tmp_path)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_journal(tmp_path)


def test_rfc3339() -> None:
    assert rfc3339(NOW + 0.5) == "2026-12-01T00:00:00.500000Z"


def test_lock_refuses_second_holder_and_names_the_first(tmp_path: Path) -> None:
    path = lab_lock_path("local", tmp_path / "lab")
    first = LabLock(path, "local lab")
    first.acquire(run_dir=tmp_path / "run-a")
    try:
        with pytest.raises(RunLockedError) as info:
            LabLock(path, "local lab").acquire(run_dir=tmp_path / "run-b")
        message = str(info.value)
        assert "local lab is in use" in message and "run-a" in message
        assert f"pid {os.getpid()}" in message
    finally:
        first.release()
    # Released: the next run gets it.
    with LabLock(path, "local lab") as again:
        assert again.held


def test_lock_keys_differ_per_lab(tmp_path: Path) -> None:
    assert lab_lock_path("local", tmp_path / "a") != lab_lock_path("local", tmp_path / "b")
    assert lab_lock_path("local", tmp_path / "a") == lab_lock_path("local", tmp_path / "a")


def test_lock_held_by_another_process_and_freed_when_it_dies(tmp_path: Path) -> None:
    path = lab_lock_path("local", tmp_path / "lab")
    ready = tmp_path / "ready"
    code = (
        "import sys, time, pathlib\n"
        "from gtnb.artifacts import LabLock\n"
        f"LabLock(pathlib.Path({str(path)!r}), 'lab').acquire(run_dir=pathlib.Path('/runs/other'))\n"
        f"pathlib.Path({str(ready)!r}).write_text('x')\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_until(ready.exists, timeout_s=30, what="the child to take the lock")
        with pytest.raises(RunLockedError, match=rf"pid {child.pid}, run /runs/other"):
            LabLock(path, "lab").acquire()
    finally:
        child.kill()
        child.wait()
    # The kernel dropped the dead holder's flock: no stale lock.
    lock = LabLock(path, "lab")
    lock.acquire()
    lock.release()
    assert json.loads(path.read_text() or "{}") == {}
