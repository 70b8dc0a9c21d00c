"""Before the traffic, HAProxy's view must match the lab exactly (haproxy_stat.unsettled); after
the kill, collection goes on until HAProxy reported the killed pod's server DOWN (down_wait)."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

from gtnb.down_wait import down_seen, file_sizes, wait_down_collected
from gtnb.haproxy_stat import unsettled

BE = "istio-http-backend"


def _row(status: str, check: str) -> dict[str, str]:
    return {"pxname": BE, "status": status, "check_status": check}


def test_settled_means_exactly_the_run_pods_up_and_every_other_down() -> None:
    servers = {"master1": _row("DOWN", "L4CON"), "worker1": _row("UP", "L7OK"), "worker2": _row("DOWN", "L4CON")}
    assert unsettled(servers, {"worker1"}) == []
    # G's false positive: a replica going away after the scale-down is still UP.
    servers["worker2"] = _row("UP", "L7OK")
    assert unsettled(servers, {"worker1"}) == ["worker2 UP (should be DOWN: no Ready pod of the run on it)"]
    # Going down (UP 1/3) is not DOWN yet; going up (DOWN 1/2) is not UP yet.
    servers["worker2"] = _row("UP 1/3", "L7STS")
    servers["worker1"] = _row("DOWN 1/2", "L7OK")
    assert unsettled(servers, {"worker1"}) == [
        "worker1 DOWN 1/2 check L7OK (should be UP)",
        "worker2 UP 1/3 (should be DOWN: no Ready pod of the run on it)",
    ]
    # Right after a reload every server is `UP` with check INI, even with nothing behind it.
    fresh = {n: _row("UP", "INI") for n in ("master1", "worker1", "worker2")}
    assert len(unsettled(fresh, {"worker1"})) == 3 and all("not checked since the reload" in r
                                                           for r in unsettled(fresh, {"worker1"}))
    assert unsettled({"worker1": _row("UP", "L7OK")}, {"worker1", "worker9"}) == [
        "worker9 missing from HAProxy's backend"]
    assert unsettled({"worker2": _row("MAINT", "L7OK")}, set()) == []


def _stat_line(path: Path, ts: float, server: str, status: str) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["ts", "pxname", "svname", "scur", "status", "check_status"])
        w.writerow([f"{ts:.3f}", BE, server, 0, status, "L7OK"])


def _log_line(path: Path, server: str, state: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"2026-12-01T01:00:00.000000+00:00 Server {BE}/{server} is {state}, reason: Layer4 "
                 "connection problem, info: \"Connection refused\", check duration: 0ms.\n")


def test_only_a_down_after_the_kill_counts(tmp_path: Path) -> None:
    log, stat = tmp_path / "haproxy.log", tmp_path / "stat.csv"
    # Before the kill: worker1 went DOWN once already (an earlier scale-down) and came back.
    _log_line(log, "worker1", "DOWN")
    _stat_line(stat, 1.0, "worker1", "DOWN")
    _log_line(log, "worker1", "UP")
    _stat_line(stat, 1.2, "worker1", "UP")
    since = file_sizes(tmp_path)
    assert down_seen(tmp_path, "worker1", since, BE) == {"haproxy.log": False, "stat.csv": False}
    _log_line(log, "worker2", "DOWN")
    _stat_line(stat, 2.0, "worker2", "DOWN")
    assert down_seen(tmp_path, "worker1", since, BE) == {"haproxy.log": False, "stat.csv": False}
    _log_line(log, "worker1", "DOWN")
    assert down_seen(tmp_path, "worker1", since, BE) == {"haproxy.log": True, "stat.csv": False}
    _stat_line(stat, 2.2, "worker1", "DOWN")
    assert down_seen(tmp_path, "worker1", since, BE) == {"haproxy.log": True, "stat.csv": True}


def test_the_wait_ends_when_the_down_arrives_or_at_its_bound(tmp_path: Path) -> None:
    since = file_sizes(tmp_path)  # no files yet: both 0
    assert since == {"haproxy.log": 0, "stat.csv": 0}
    seen, waited = wait_down_collected(tmp_path, "worker1", since, timeout_s=0.3, backend=BE)
    assert seen == {"haproxy.log": False, "stat.csv": False} and waited >= 0.3
    result: list[tuple[dict[str, bool], float]] = []
    waiter = threading.Thread(target=lambda: result.append(
        wait_down_collected(tmp_path, "worker1", since, timeout_s=60, backend=BE)))
    waiter.start()
    _stat_line(tmp_path / "stat.csv", 3.0, "worker1", "DOWN")
    _log_line(tmp_path / "haproxy.log", "worker1", "DOWN")
    waiter.join(60)
    assert not waiter.is_alive() and result
    assert result[0][0] == {"haproxy.log": True, "stat.csv": True} and result[0][1] < 60
