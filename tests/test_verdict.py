"""Verdicts and comparisons on runs that imitate both modes (and broken experiments)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from synthetic_runs import write_run

from gtnb.analysis import compare, load_run, verdict
from gtnb.errors import ConfigError


def _run(tmp_path: Path, scenario: str, mode: str, **kw):
    return load_run(write_run(tmp_path, scenario, mode, stamp=f"{scenario}{mode}", **kw))


@pytest.mark.parametrize("scenario", ["S1", "S3", "S4"])
def test_each_mode_shows_its_outcome_and_the_pair_holds(tmp_path: Path, scenario: str) -> None:
    cur, imp = _run(tmp_path, scenario, "current"), _run(tmp_path, scenario, "improved")
    vc, vi = verdict(cur), verdict(imp)
    assert vc.ok and vc.cut is True, str(vc)
    assert vi.ok and vi.cut is False, str(vi)
    c = compare(cur, imp)
    assert c.holds and "the evidence holds" in c.headline
    assert "<table>" in vc._repr_html_() and "[FAIL]" not in str(vi)


@pytest.mark.parametrize("first, cause", [
    ("proxy", "the proxy was killed: Envoy closed or reset the connection (haproxy.log SH--, 502)"),
    ("down", "HAProxy shut the session when it marked the server DOWN, on-marked-down shutdown-sessions "
             "(haproxy.log DH--, 502)"),
])
def test_current_cut_holds_in_either_event_order_and_names_its_cause(tmp_path: Path, first: str, cause: str) -> None:
    # Judged on the outcome (cut), never on E2 vs E4; the text says which cut it was.
    v = verdict(load_run(write_run(tmp_path, "S1", "current", current_cut=first)))
    assert v.ok and v.cut, str(v)
    assert cause in v.outcome and cause in v.headline
    observed = next(c.observed for c in v.checks if c.name == "in-flight request cut")
    assert observed.endswith(cause), observed


def test_cut_without_a_haproxy_line_is_named_by_timing(tmp_path: Path) -> None:
    # HTTP/2 streams refused by a dying Envoy leave no HAProxy request line.
    run_dir = write_run(tmp_path, "S1", "current", current_cut="proxy")
    lines = (run_dir / "haproxy.log").read_text().splitlines()
    (run_dir / "haproxy.log").write_text("\n".join(x for x in lines if "GET " not in x) + "\n")
    v = verdict(load_run(run_dir))
    assert v.ok and "the proxy was killed (pilot-agent's `Aborting proxy`) 0.01 s before the client saw the cut" \
        " (by timing" in v.outcome, v.outcome


def test_improved_completed_names_no_cut(tmp_path: Path) -> None:
    v = verdict(load_run(write_run(tmp_path, "S1", "improved")))
    assert v.ok and not v.cut and " — " not in v.outcome, v.outcome


def test_a_run_judged_as_the_other_mode_fails(tmp_path: Path) -> None:
    cur = _run(tmp_path, "S1", "current")
    v = verdict(cur, mode="improved")
    assert not v.ok
    failed = [c.name for c in v.checks if c.ok is False]
    assert failed == ["in-flight request completed"]
    assert "NOT as expected" in v.headline


def test_s2_checks_order_and_bounds(tmp_path: Path) -> None:
    run = _run(tmp_path, "S2", "improved")
    v = verdict(run)
    names = [c.name for c in v.checks]
    assert {"events in order", "LB_DOWN on time", "drain after LB_DOWN",
            "DRAINED after the last request", "SIGTERM after DRAINED"} <= set(names)
    assert v.ok, str(v)
    on_time = next(c for c in v.checks if c.name == "LB_DOWN on time")
    assert "timings from haproxy-improved.cfg defaults" in on_time.expected  # the journal has none
    # Tighter HAProxy timings than the synthetic DOWN (1.3 s after E1) must fail the bound.
    j = json.loads((run.path / "run.json").read_text())
    j["parameters"].update(inter_s=0.5, fastinter_s=0.2, fall=2, check_s=0.1)
    (run.path / "run.json").write_text(json.dumps(j))
    v = verdict(load_run(run.path))
    assert [c.name for c in v.checks if c.ok is False] == ["LB_DOWN on time"]
    on_time = next(c for c in v.checks if c.name == "LB_DOWN on time")
    assert "within 0.8 s of E1" in on_time.expected and "timings from run.json" in on_time.expected


def test_same_outcome_in_both_modes_means_a_broken_experiment(tmp_path: Path) -> None:
    cur = _run(tmp_path, "S1", "current")
    imp_dir = write_run(tmp_path, "S1", "improved", stamp="x")
    # Make the "improved" run's request cut as well (say the toggle did not take effect).
    rows = list(csv.DictReader((imp_dir / "client.csv").open()))
    rows[0].update(status="502", error="http_5xx", complete="false", t_end=str(float(rows[0]["t_start"]) + 7))
    with (imp_dir / "client.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    c = compare(cur, load_run(imp_dir))
    assert not c.holds and "experiment is broken" in c.headline and "both modes" in c.headline


def test_s3_improved_with_failures_does_not_hold(tmp_path: Path) -> None:
    d = write_run(tmp_path, "S3", "improved", stamp="y")
    rows = list(csv.DictReader((d / "client.csv").open()))
    rows[5].update(status="", error="connection_reset", curl_exit="56", complete="false")
    with (d / "client.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    v = verdict(load_run(d))
    assert not v.ok and "1 of" in v.outcome and "connection_reset" in v.outcome


def test_bad_scenario_mode_and_pairs_are_named(tmp_path: Path) -> None:
    cur, imp = _run(tmp_path, "S1", "current"), _run(tmp_path, "S1", "improved")
    with pytest.raises(ConfigError, match="mode 'fast' is not one of current, improved"):
        verdict(cur, mode="fast")
    with pytest.raises(ConfigError, match="swapped"):
        compare(imp, cur)
    other = _run(tmp_path, "S4", "improved")
    with pytest.raises(ConfigError, match="same scenario"):
        compare(cur, other)


# --- on the real local lab ----------------------------------------------------------------------
# Two short S1 runs on real HAProxy + Envoy: the analysis must see the cut in current mode, the
# completed request in improved mode, S2's FSM order and bounds, and the pair must hold.


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory: pytest.TempPathFactory):
    from gtnb.scenarios import run
    from gtnb.targets import open_target

    state, arts = tmp_path_factory.mktemp("lab"), tmp_path_factory.mktemp("artifacts")
    with open_target("local", state_dir=state):
        cur = run("S1", "current", state_dir=state, artifacts=arts, progress=False, duration_s=8, kill_after_s=2)
        imp = run("S1", "improved", state_dir=state, artifacts=arts, progress=False, duration_s=8, kill_after_s=2)
    return load_run(cur), load_run(imp)


@pytest.mark.lab
def test_real_lab_runs_judged(lab_runs) -> None:
    cur, imp = lab_runs
    for run in (cur, imp):
        assert not run.skipped.get("hc") and not run.skipped.get("envoy"), run.summary()
        assert {"HEALTH_FAIL", "DRAIN_START", "POD_EXIT"} <= set(run.events["name"]), run.summary()
    # Current mode's DOWN may come after the run stopped collecting (the pod is gone by then);
    # improved mode's comes first, inside the run.
    assert "LB_DOWN" in set(imp.events["name"]), imp.summary()
    vc, vi = verdict(cur), verdict(imp)
    assert vc.ok and vc.cut, str(vc)
    assert vi.ok and vi.cut is False, str(vi)
    s2 = verdict(imp, scenario="S2")
    assert s2.ok, str(s2)
    assert compare(cur, imp).holds
    assert "CONNS_ZERO" in set(imp.events["name"]) and "PROXY_KILLED" in set(cur.events["name"])


def test_seed_runs_are_judged_on_what_they_recorded(tmp_path: Path) -> None:
    import shutil

    fix = Path(__file__).parent / "fixtures" / "analysis"
    d = tmp_path / "20260628-101500" / "S1-rerun"
    shutil.copytree(fix / "seed-s1", d)
    run = load_run(d)
    with pytest.raises(ConfigError, match="pass mode='current'"):
        verdict(run)  # the seed's directory names no mode
    v = verdict(run, mode="current")
    assert v.ok and v.cut and "502" in v.outcome
    judged = {c.name: c.ok for c in v.checks}
    # No hc.log: the kill timing is not judged; no journal: nor the request's server.
    assert judged == {"termination during the request": None, "request on the killed pod's node": None,
                      "in-flight request cut": True, "current-mode order": None}
    assert not verdict(run, mode="improved").ok
    # An hc.log that is there but never shows E1 fails the timing check instead.
    (d / "hc.log").write_text("")
    judged = {c.name: c.ok for c in verdict(load_run(d), mode="current").checks}
    assert (judged["termination during the request"], judged["in-flight request cut"]) == (False, True)


@pytest.mark.parametrize("scenario, mode", [("S1", "current"), ("S1", "improved"), ("S4", "current")])
def test_a_request_the_kill_missed_tested_nothing(tmp_path: Path, scenario: str, mode: str) -> None:
    # G's run: after the scale-down to one replica the request went to a replica still going
    # away (worker2) while the deleted pod was on worker1; the client still saw a cut.
    hit = verdict(_run(tmp_path, scenario, mode))
    check = next(c for c in hit.checks if c.name == "request on the killed pod's node")
    assert check.ok is True and check.observed.startswith("worker1 ")
    missed = verdict(load_run(write_run(tmp_path, scenario, mode, stamp="missed", server="worker2")))
    assert not missed.ok and "as expected" not in missed.headline
    assert "the experiment did not test the kill: the request went to worker2, the killed pod " \
           "service-a-igw-7c9d8b6f5-x2x7q was on worker1" in missed.headline, missed.headline


def test_current_order_is_shown_as_the_seed_has_it(tmp_path: Path) -> None:
    seed_order = verdict(_run(tmp_path, "S1", "current", current_cut="down"))
    check = next(c for c in seed_order.checks if c.name == "current-mode order")
    assert check.ok is None and "E1 < E2" in check.expected and "killed first" not in check.observed
    other = verdict(load_run(write_run(tmp_path, "S1", "current", stamp="proxy", current_cut="proxy")))
    check = next(c for c in other.checks if c.name == "current-mode order")
    assert other.ok and "the proxy was killed first" in check.observed


def test_an_http2_request_line_is_found_by_its_absolute_uri(tmp_path: Path) -> None:
    # HAProxy logs HTTP/2 requests as `GET https://example.local/stream?... HTTP/2.0` (seen on
    # the local lab): the request's server and its cut come from that line, not from timing.
    run_dir = write_run(tmp_path, "S4", "current", current_cut="down")
    log = run_dir / "haproxy.log"
    log.write_text(log.read_text().replace('"GET /stream', '"GET https://example.local/stream')
                   .replace(" HTTP/1.1\"", " HTTP/2.0\""))
    assert "GET https://example.local/stream" in log.read_text()
    v = verdict(load_run(run_dir))
    served = next(c for c in v.checks if c.name == "request on the killed pod's node")
    assert served.ok is True and "(haproxy.log DH--" in v.outcome, str(v)
