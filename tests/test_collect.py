"""Collectors: the line helpers, and every collector against the real local lab (real HAProxy,
real Envoy pods, a real rollout creating pods mid-collection)."""

from __future__ import annotations

import csv
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gtnb._wait import wait_until
from gtnb.collect import Collectors, RunLog, parse_show_stat, prefix_epoch

# --- helpers ------------------------------------------------------------------------------------


def test_prefix_epoch_reads_kubectl_timestamps() -> None:
    assert prefix_epoch("2026-12-01T00:00:00.500000000Z hello") == pytest.approx(1_796_083_200.5)
    assert prefix_epoch("2026-12-01T00:00:01Z x") == pytest.approx(1_796_083_201.0)
    assert prefix_epoch("ts=2026-12-01T00:00:00Z level=info") is None
    assert prefix_epoch("") is None
    assert prefix_epoch("2026-13-45T99:00:00.1Z bad") is None


def test_parse_show_stat() -> None:
    header, rows = parse_show_stat("# pxname,svname,scur,status,\nbe,s1,0,UP,\nbe,s2,1,DOWN,\n\n")
    assert header == ["pxname", "svname", "scur", "status"]
    assert rows == [["be", "s1", "0", "UP"], ["be", "s2", "1", "DOWN"]]
    with pytest.raises(ValueError, match="no '# pxname"):
        parse_show_stat("Unknown command\n")


def test_runlog_lines(tmp_path: Path) -> None:
    echoed: list[str] = []
    log = RunLog(tmp_path / "run.log", echo=echoed.append)
    log("toggle: current -> improved")
    log("kill issued")
    log.close()
    log("after close is dropped, not a crash")
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith(" kill issued")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z toggle: current -> improved", lines[0])
    assert echoed[:2] == ["toggle: current -> improved", "kill issued"]


# --- against the real local lab -----------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from gtnb.targets import open_target

    state = tmp_path_factory.mktemp("lab")
    with open_target("local", state_dir=state) as target:
        yield target


def _fire_requests(target: object, n: int) -> None:
    from gtnb.traffic import Load, Pin

    load = Load(Pin.from_frontend(target.balancer.frontend()), workers=1, duration_s=0.5, keepalive=True)  # type: ignore[attr-defined]
    load.start()
    load.join(30)
    assert load.results(), "no request reached the lab"


@pytest.mark.lab
@pytest.mark.timeout(300)
def test_collectors_follow_every_source_and_new_pods(lab: object, tmp_path: Path) -> None:
    cluster, balancer = lab.cluster, lab.balancer  # type: ignore[attr-defined]
    cluster.scale(1)
    wait_until(lambda: len([p for p in cluster.pods() if p.ready and p.phase == "Running"]) == 1
               and len(cluster.pods()) == 1, timeout_s=120, what="one ready pod")
    before = {p.name for p in cluster.pods()}
    narrated: list[str] = []
    collectors = Collectors(cluster, balancer, tmp_path, runlog=narrated.append, stat_interval_s=0.1,
                            pod_poll_s=0.2)
    collectors.start()
    try:
        _fire_requests(lab, 5)
        cluster.rollout_restart()
        wait_until(lambda: cluster.rollout_status().complete and before.isdisjoint(p.name for p in cluster.pods())
                   and all(p.phase == "Running" for p in cluster.pods()),
                   timeout_s=180, what="the rollout to replace the pod")
        new = {p.name for p in cluster.pods()} - before
        # The new pod's hc has served checks since it started: wait for one in hc.log.
        wait_until(lambda: any(f"pod={n}" in (tmp_path / "hc.log").read_text() for n in new),
                   timeout_s=60, what="hc lines of the pod the rollout created")
        _fire_requests(lab, 5)
    finally:
        summary = collectors.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("gtnb-collect")]

    hc = (tmp_path / "hc.log").read_text().splitlines()
    assert hc and all(line.startswith("ts=") and " pod=" in line for line in hc)
    assert {n for n in new if any(f"pod={n} " in line for line in hc)} == new
    assert any("event=transition" in line for line in hc)  # the old pod drained during the rollout

    envoy = (tmp_path / "envoy.log").read_text().splitlines()
    assert envoy and all(re.match(r"\[pod/service-a-igw-[\w-]+/istio-proxy\] \d{4}-\d\d-\d\dT\S+Z ", ln) for ln in envoy)
    assert {m.group(1) for ln in envoy if (m := re.match(r"\[pod/([\w-]+)/", ln))} >= new | before

    haproxy = (tmp_path / "haproxy.log").read_text()
    assert "GET /fast" in haproxy

    with open(tmp_path / "stat.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0])[:3] == ["ts", "pxname", "svname"]
    stamps = sorted({float(r["ts"]) for r in rows})
    assert len(stamps) >= 10 and stamps == sorted(stamps)
    assert {"master1", "worker1", "worker2"} <= {r["svname"] for r in rows if r["pxname"] == "istio-http-backend"}

    jitter = summary["stat_jitter_s"]
    assert summary["stat_interval_s"] == 0.1 and jitter["samples"] == len(stamps)
    assert jitter["late_max"] >= jitter["late_mean"] >= 0
    assert summary["lines"]["hc.log"] == len(hc) and summary["errors"] == []
    assert set(summary["pods"]) >= new | before and summary["cpu_s"] > 0
    assert any("seen" in m for m in narrated) and any("gone" in m for m in narrated)


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_collectors_skip_history_before_the_run(lab: object, tmp_path: Path) -> None:
    cluster, balancer = lab.cluster, lab.balancer  # type: ignore[attr-defined]
    wait_until(lambda: any(p.ready for p in cluster.pods()), timeout_s=120, what="a ready pod")
    since = time.time()
    collectors = Collectors(cluster, balancer, tmp_path, runlog=lambda m: None, since=since, pod_poll_s=0.2)
    collectors.start()
    try:
        wait_until(lambda: (tmp_path / "hc.log").stat().st_size > 0, timeout_s=30, what="a fresh hc line")
    finally:
        collectors.stop()
    stamps = [re.match(r"ts=(\S+)Z", ln).group(1) for ln in (tmp_path / "hc.log").read_text().splitlines()]  # type: ignore[union-attr]
    from datetime import datetime, timezone

    first = datetime.fromisoformat(stamps[0]).replace(tzinfo=timezone.utc).timestamp()
    # The pod started long before `since`; nothing from its past is in the file (1 s of slack
    # for the container clock vs the kubelet prefix).
    assert first >= since - 1.0
