"""The timeline and comparison figures, drawn from synthetic run directories through load_run.

Each test reads what the figure holds (its lines, texts, bars, tick labels) and compares it with
what the run's own frames say, so a figure that drops an event, a lane or a failed request fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from synthetic_runs import write_run

from gtnb.analysis import load_run
from gtnb.analysis.plot import CUT_COLOR, OK_COLOR, headline, plot_compare, timeline
from gtnb.analysis.plot_view import EVENT_LABELS, view_of


def _load(tmp_path: Path, scenario: str, mode: str, **kw: object):
    return load_run(write_run(tmp_path, scenario, mode, stamp=f"{scenario}-{mode}", **kw))


def _texts(fig: Figure) -> list[str]:
    out = [t.get_text() for ax in fig.axes for t in ax.texts]
    return out + [fig._suptitle.get_text()] if fig._suptitle else out


def _vlines_x(ax) -> list[float]:
    """x of the axes' vertical lines (axvline: two points with equal x spanning the axes)."""
    xs = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if len(x) == 2 and x[0] == x[1] and tuple(line.get_ydata()) == (0, 1):
            xs.append(float(x[0]))
    return sorted(xs)


def _lane(fig: Figure, ylabel: str, nth: int = 0):
    lanes = [ax for ax in fig.axes if ax.get_ylabel() == ylabel]
    assert len(lanes) > nth, f"no lane labelled {ylabel!r}: {[a.get_ylabel() for a in fig.axes]}"
    return lanes[nth]


@pytest.mark.parametrize("mode", ["current", "improved"])
def test_s1_timeline_has_title_event_lines_and_labels(tmp_path: Path, mode: str) -> None:
    run = _load(tmp_path, "S1", mode)
    fig = timeline(run)
    title = fig._suptitle.get_text()
    assert "S1" in title and f"{mode} mode" in title and "2026-12-01" in title

    view = view_of(run)
    assert not view.events.empty
    assert view.events.loc[view.events["name"] == "HEALTH_FAIL", "t"].iloc[0] == pytest.approx(0)
    want = sorted(view.events["t"].tolist())
    # Every lane below the labels carries one dashed line per event, at the event's t from E1.
    for ylabel in ("client", "HAProxy"):
        assert _vlines_x(_lane(fig, ylabel)) == pytest.approx(want)
    labels = [t for t in _texts(fig)]
    for name in view.events["name"]:
        assert any(t.startswith(EVENT_LABELS[name]) for t in labels), (name, labels)
    assert "from E1" in _lane(fig, "HAProxy").get_xlabel()
    assert fig.legends, "the figure needs a legend"


def test_s1_client_bar_ends_in_its_outcome(tmp_path: Path) -> None:
    for mode, word, color in (("current", "CUT", CUT_COLOR), ("improved", "completed", OK_COLOR)):
        run = _load(tmp_path, "S1", mode)
        client = run.frames["client"]
        fig = timeline(run)
        ax = _lane(fig, "client")
        notes = [t for t in ax.texts if t.get_text().startswith(word)]
        assert len(notes) == len(client) == 1
        assert to_hex(notes[0].get_color()) == color
        # The label carries the status the client got, the time it ended, from E1.
        status = int(pd.to_numeric(client["status"]).iloc[0])
        assert str(status) in notes[0].get_text()
        t_end = view_of(run).client["t1"].iloc[0]
        assert f"t={t_end:.2f} s" in notes[0].get_text()


def test_haproxy_lane_shows_each_server_and_the_down_span(tmp_path: Path) -> None:
    run = _load(tmp_path, "S1", "improved")
    fig = timeline(run)
    ax = _lane(fig, "HAProxy")
    stat = run.frames["stat"]
    servers = sorted(set(stat["svname"]) - {"FRONTEND", "BACKEND"})
    assert [t.get_text() for t in ax.get_yticklabels()] == servers
    # A DOWN span starts where stat.csv first says DOWN, on that server's row.
    view = view_of(run)
    first_down = view.servers[view.servers["status"] == "DOWN"].iloc[0]
    spans = [(c.get_paths()[0].get_extents(), to_hex(c.get_facecolor()[0])) for c in ax.collections]
    red = [ext for ext, color in spans if color == "#e57373"]
    assert red, "no DOWN span drawn"
    assert red[0].x0 == pytest.approx(first_down["t"], abs=1e-6)
    assert red[0].y0 == pytest.approx(servers.index(first_down["server"]) - 0.35)
    assert any(t.get_text().strip() == "DOWN" for t in ax.texts)


def test_s3_points_per_request_and_rate_lanes(tmp_path: Path) -> None:
    run = _load(tmp_path, "S3", "current")
    fig = timeline(run)
    view = view_of(run)
    failed = int((~view.client["ok"]).sum())
    assert failed > 0, "the synthetic current run must cut some requests"
    ax = _lane(fig, "client")
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    sizes = {to_hex(c.get_facecolor()[0]): len(c.get_offsets()) for c in points}
    assert sizes == {OK_COLOR: len(view.client) - failed, CUT_COLOR: failed}
    rates = _lane(fig, "per s")
    bars = sum(p.get_height() for p in rates.patches)
    assert bars == failed  # errors/s bars add up to the failed requests
    workers = sorted(view.client["worker"].unique())
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"w{w}" for w in workers]
    assert f"{failed} cut" in fig._suptitle.get_text()


def test_s4_shows_chunk_arrivals(tmp_path: Path) -> None:
    run = _load(tmp_path, "S4", "current")
    fig = timeline(run)
    ax = _lane(fig, "client")
    ticks = [ln for ln in ax.get_lines() if ln.get_marker() == "|"]
    assert len(ticks) == 1
    assert len(ticks[0].get_xdata()) == len(run.frames["chunks"])
    chunks = int(pd.to_numeric(run.frames["client"]["chunks"]).iloc[0])
    assert any(f"{chunks} chunks" in t.get_text() for t in ax.texts)


def test_failed_run_without_client_still_draws(tmp_path: Path) -> None:
    run = _load(tmp_path, "S1", "current", status="failed")
    fig = timeline(run)
    assert "FAILED" in fig._suptitle.get_text()
    assert any("no client.csv" in t for t in _texts(fig))
    assert _vlines_x(_lane(fig, "HAProxy")), "the events that were seen are still drawn"


def test_compare_shares_one_time_axis(tmp_path: Path) -> None:
    cur, imp = _load(tmp_path, "S1", "current"), _load(tmp_path, "S1", "improved")
    fig = plot_compare(cur, imp)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert len(titles) == 2
    assert titles[0].startswith("current mode") and titles[1].startswith("improved mode")
    assert headline(view_of(cur)) in titles[0] and headline(view_of(imp)) in titles[1]
    limits = {tuple(np.round(ax.get_xlim(), 6)) for ax in fig.axes}
    assert len(limits) == 1, "every lane of both runs must share the time axis"
    lo, hi = limits.pop()
    for v in (view_of(cur), view_of(imp)):
        assert lo <= v.client["t0"].min() and v.client["t1"].max() <= hi
    # Each block keeps its own events: the current run's kill and the improved run's zero.
    assert len(_vlines_x(_lane(fig, "client", 0))) == len(view_of(cur).events)
    assert len(_vlines_x(_lane(fig, "client", 1))) == len(view_of(imp).events)
    assert "current vs improved" in fig._suptitle.get_text()


def test_a_rollout_draws_each_pods_events(tmp_path: Path) -> None:
    """S3 rolls several pods: each pod's E1 gets its own line, not only the first pod's."""
    from synthetic_runs import NEW_POD, T0, _iso

    run_dir = write_run(tmp_path, "S3", "improved", stamp="roll")
    second = T0 + 8.0
    with (run_dir / "hc.log").open("a") as f:
        f.write(f"ts={_iso(second)} level=info pod={NEW_POD} event=transition from=SERVING "
                "to=DRAINING reason=prestop\n")
    run = load_run(run_dir)
    e1 = view_of(run).events.query("name == 'HEALTH_FAIL'")["t"].tolist()
    assert len(e1) == 2
    lines = _vlines_x(_lane(timeline(run), "client"))
    for t in e1:
        assert any(abs(x - t) < 1e-9 for x in lines), (t, lines)


@pytest.mark.parametrize(("node", "warned"), [("worker1", False), ("master1", True)])
def test_label_names_the_server_and_flags_a_request_that_missed_the_deleted_pod(
    tmp_path: Path, node: str, warned: bool
) -> None:
    """The synthetic request went to worker1 (its HAProxy log line); the deleted pod ran on
    `node`. A request that never met the deleted pod proves nothing, and the label says so."""
    import json

    from synthetic_runs import POD

    run_dir = write_run(tmp_path, "S1", "current", stamp=node)
    journal = json.loads((run_dir / "run.json").read_text())
    journal["pod_nodes"] = {POD: node}
    (run_dir / "run.json").write_text(json.dumps(journal))
    (label,) = [t.get_text() for t in _lane(timeline(load_run(run_dir)), "client").texts]
    assert "via worker1" in label
    assert ("NOT the deleted pod's node (master1)" in label) is warned


def test_events_the_artifacts_do_not_show_are_listed(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "S1", "current", stamp="nodown")
    log = run_dir / "haproxy.log"
    log.write_text("".join(ln + "\n" for ln in log.read_text().splitlines() if "is DOWN" not in ln))
    stat = run_dir / "stat.csv"
    stat.write_text(stat.read_text().replace("DOWN", "UP"))  # HAProxy never marked it DOWN
    run = load_run(run_dir)
    names = set(view_of(run).events["name"])
    assert "LB_DOWN" not in names
    notes = [t for t in _texts(timeline(run)) if t.startswith("not seen: ")]
    assert len(notes) == 1 and EVENT_LABELS["LB_DOWN"] in notes[0]
    for name in names:
        assert EVENT_LABELS[name] not in notes[0]
