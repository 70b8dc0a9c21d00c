"""The six-event timeline: what the client saw, what HAProxy thought, and the events, on one axis.

Pure functions from a Run to a matplotlib Figure. Figures are built with
``matplotlib.figure.Figure`` rather than pyplot, so nothing leaks into pyplot's global state
(tests draw hundreds) and a notebook shows exactly the figure it asks for, once.

Reading a timeline: t = 0 is E1 (the hc sidecar's first FSM transition). The top lane labels the
events; dashed lines carry them down through every lane. The client lane shows each request as
a bar from start to end (green: completed, red: cut), or per-request points for S3's load, or
chunk arrivals for S4's stream. The HAProxy lane shows each backend server's status as stat.csv
sampled it. In current mode HAProxy marks the server DOWN (E2) and cuts its sessions there
(shutdown-sessions), before pilot-agent kills the proxy (E4), as in the seed; in improved mode
DOWN comes first too, but nothing is cut and the request completes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .plot_view import EVENT_LABELS, RunView, view_of

__all__ = ["timeline", "plot_compare", "headline", "OK_COLOR", "CUT_COLOR"]

OK_COLOR = "#2e7d32"
CUT_COLOR = "#c62828"
STATUS_COLORS = {"UP": "#66bb6a", "DOWN": "#e57373", "MAINT": "#9e9e9e"}
OTHER_STATUS = "#ffb74d"  # transitional (UP 1/2, DOWN 1/2), no check, unknown
EVENT_COLORS = {
    "HEALTH_FAIL": "#1565c0", "LB_DOWN": "#6a1b9a", "DRAIN_START": "#00838f",
    "CONNS_ZERO": "#2e7d32", "PROXY_KILLED": "#c62828", "SIGTERM": "#ef6c00",
    "POD_EXIT": "#424242",
}


def headline(view: RunView) -> str:
    """One line saying what the client saw: 'S1: 1 request, 0 completed, 1 cut (http_5xx)'."""
    c = view.client
    if c.empty:
        return "no client requests recorded"
    cut = c[~c["ok"]]
    kinds = ", ".join(f"{k or 'http ' + str(int(s))}" for k, s in
                      cut.groupby("error")["status"].first().items()) if len(cut) else ""
    text = f"{len(c)} request{'s' if len(c) != 1 else ''}: {int(c['ok'].sum())} completed, {len(cut)} cut"
    if kinds:
        text += f" ({kinds})"
    if view.scenario == "S4" and len(c) == 1:
        text += f", {int(c['chunks'].iloc[0])} chunks"
    return text


def _title(view: RunView) -> str:
    date = view.started.replace("T", " ")[:19] + " UTC" if view.started else "undated"
    status = "" if view.status in ("completed", "?") else f" — run {view.status.upper()}"
    return f"{view.scenario} · {view.mode} mode · {view.target} · {date}{status}"


def _x_range(views: list[RunView]) -> tuple[float, float]:
    ts: list[float] = []
    for v in views:
        for s in (v.client["t0"], v.client["t1"], v.events["t"], v.chunks["t"]):
            ts += [float(x) for x in pd.to_numeric(s, errors="coerce").dropna()]
    if not ts:
        return -1.0, 10.0
    lo, hi = min(ts + [0.0]), max(ts + [0.0])
    pad = max(0.5, 0.04 * (hi - lo))
    return lo - pad, hi + pad


def _event_lines(ax: Axes, view: RunView) -> None:
    for name, t in zip(view.events["name"], view.events["t"]):
        ax.axvline(t, color=EVENT_COLORS.get(name, "#616161"), ls="--", lw=1.1, alpha=0.8, zorder=1)


def _event_lane(ax: Axes, view: RunView, xlim: tuple[float, float], width_in: float) -> None:
    """Label each event at the top; a label that would overlap another moves to a new row."""
    ax.set_yticks([])
    ax.set_ylabel("events", rotation=0, ha="right", va="center")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    span = xlim[1] - xlim[0]
    # ~0.085 in per character at 8.5 pt, over the axes' ~85 % of the figure width.
    per_char = span * 0.085 / (0.85 * width_in)
    rows: list[list[tuple[float, float]]] = []  # occupied [left, right] intervals per row
    ev = view.events.sort_values("t")
    for name, t in zip(ev["name"], ev["t"]):
        text = f"{EVENT_LABELS.get(name, name)}  {t:+.2f} s"
        w = (len(text) + 2) * per_char
        right_aligned = t + w > xlim[1]  # near the right edge the label grows leftwards
        left, right = (t - w, t) if right_aligned else (t, t + w)
        row = next((i for i, taken in enumerate(rows)
                    if all(right < a or left > b for a, b in taken)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append((left, right))
        color = EVENT_COLORS.get(name, "#616161")
        ax.annotate(text, (t, 0.0), xytext=(t, 0.3 + row), ha="right" if right_aligned else "left",
                    va="center", fontsize=8.5, color=color, fontweight="bold",
                    arrowprops={"arrowstyle": "-", "color": color, "lw": 0.8},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "lw": 0.8})
    ax.set_ylim(-0.1, max(1, len(rows)) + 0.1)
    if view.events.empty:
        ax.text(0.5, 0.5, "no events found", transform=ax.transAxes, ha="center", color="#757575")
        return
    # An event the artifacts do not show is news too (e.g. HAProxy's DOWN after the run ended).
    fourth = "PROXY_KILLED" if view.mode == "current" else "CONNS_ZERO"
    expected = ("HEALTH_FAIL", "LB_DOWN", "DRAIN_START", fourth, "SIGTERM", "POD_EXIT")
    missing = [EVENT_LABELS[n] for n in expected if n not in set(view.events["name"])]
    if missing:
        ax.text(0.0, 1.0, "not seen: " + ", ".join(missing), transform=ax.transAxes, ha="left",
                va="top", fontsize=8, color="#757575", style="italic")


def _client_lane(ax: Axes, view: RunView, xlim: tuple[float, float]) -> None:
    c = view.client
    ax.set_ylabel("client", rotation=0, ha="right", va="center")
    if c.empty:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no client.csv (the run stopped before the client finished)",
                transform=ax.transAxes, ha="center", va="center", color="#757575")
        return
    if view.scenario == "S3" or len(c) > 12:
        # Load: one point per request at its end, one row per worker.
        for ok, color, marker in ((True, OK_COLOR, "o"), (False, CUT_COLOR, "X")):
            part = c[c["ok"] == ok]
            ax.scatter(part["t1"], part["worker"], s=14 if ok else 40, c=color, marker=marker,
                       zorder=3, linewidths=0.3)
        workers = sorted(c["worker"].unique())
        ax.set_yticks(workers, [f"w{w}" for w in workers], fontsize=7)
        ax.set_ylim(min(workers) - 0.7, max(workers) + 0.7)
        return
    # One or a few long requests: a bar each, ending in its outcome.
    for i, r in enumerate(c.itertuples()):
        color = OK_COLOR if r.ok else CUT_COLOR
        ax.plot([r.t0, r.t1], [i, i], color=color, lw=9, solid_capstyle="butt", alpha=0.35, zorder=2)
        ax.plot([r.t1], [i], marker="o" if r.ok else "X", ms=11, color=color, zorder=4)
        what = (f"{int(r.status)}" if r.status == r.status else "no response")
        if r.error:
            what += f" {r.error}"
        if r.curl_exit == r.curl_exit and r.curl_exit:
            what += f" (curl exit {int(r.curl_exit)})"
        label = f"{'completed' if r.ok else 'CUT'}: {what} at t={r.t1:.2f} s"
        if view.scenario == "S4":
            label += f", {int(r.chunks)} chunks"
        if isinstance(r.server, str):
            label += f", via {r.server}"
            if view.killed_node and r.server != view.killed_node:
                # The request never met the deleted pod: its outcome says nothing about the fix.
                label += f" — NOT the deleted pod's node ({view.killed_node})"
        # The label reads leftwards from the outcome unless the bar is short and near the left.
        leftwards = r.ok or r.t1 > xlim[0] + 0.5 * (xlim[1] - xlim[0])
        ax.annotate(label, (r.t1, i), xytext=(-6 if leftwards else 6, 9), textcoords="offset points",
                    fontsize=9, color=color, fontweight="bold", va="bottom",
                    ha="right" if leftwards else "left")
        arrivals = view.chunks[view.chunks["request_id"] == str(r.request_id)]
        if len(arrivals):
            ax.plot(arrivals["t"], [i] * len(arrivals), "|", color="#37474f", ms=12, mew=1.2, zorder=3)
    ax.set_yticks(range(len(c)), [str(x) for x in c["request_id"]], fontsize=7)
    ax.set_ylim(-0.8, len(c) - 0.2 + 0.6)


def _rate_lane(ax: Axes, view: RunView, xlim: tuple[float, float]) -> None:
    """S3: requests/s and errors/s per 1 s bin (by request end)."""
    c = view.client.dropna(subset=["t1"])
    bins = np.arange(np.floor(xlim[0]), np.ceil(xlim[1]) + 1.0, 1.0)
    total, _ = np.histogram(c["t1"], bins=bins)
    errors, _ = np.histogram(c.loc[~c["ok"], "t1"], bins=bins)
    ax.step(bins[:-1], total, where="post", color=OK_COLOR, lw=1.3, label="requests/s")
    ax.bar(bins[:-1], errors, width=1.0, align="edge", color=CUT_COLOR, alpha=0.8, label="errors/s")
    ax.set_ylabel("per s", rotation=0, ha="right", va="center")
    ax.legend(loc="upper right", fontsize=7, ncol=2, frameon=False)


def _status_color(status: str) -> str:
    return STATUS_COLORS.get(status.strip(), OTHER_STATUS)


def _haproxy_lane(ax: Axes, view: RunView, xlim: tuple[float, float]) -> None:
    ax.set_ylabel("HAProxy", rotation=0, ha="right", va="center")
    s = view.servers.dropna(subset=["t"]).sort_values("t")
    if s.empty:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no stat.csv samples", transform=ax.transAxes, ha="center", va="center",
                color="#757575")
        return
    names = sorted(s["server"].unique())
    for i, name in enumerate(names):
        rows = s[s["server"] == name]
        t, st = rows["t"].to_numpy(float), rows["status"].to_numpy(str)
        # A span per run of equal status, lasting until the next sample with another status.
        start = 0
        for j in range(1, len(t) + 1):
            if j == len(t) or st[j] != st[start]:
                end = t[j] if j < len(t) else t[-1] + (t[-1] - t[-2] if len(t) > 1 else 0.2)
                ax.broken_barh([(t[start], end - t[start])], (i - 0.35, 0.7),
                               color=_status_color(st[start]), lw=0)
                # Name a non-UP span only where its name fits (~7 % of the axis).
                if st[start].strip() != "UP" and end - t[start] > 0.07 * (xlim[1] - xlim[0]):
                    ax.text(t[start], i, f" {st[start]}", va="center", fontsize=7, color="#212121")
                start = j
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(-0.6, len(names) - 0.4)


def _legend_handles(view: RunView) -> list[Any]:
    handles: list[Any] = [
        Line2D([], [], color=OK_COLOR, marker="o", lw=0, label="request completed"),
        Line2D([], [], color=CUT_COLOR, marker="X", lw=0, ms=8, label="request cut"),
        Patch(color=STATUS_COLORS["UP"], label="server UP"),
        Patch(color=STATUS_COLORS["DOWN"], label="server DOWN"),
        Patch(color=OTHER_STATUS, label="transitional / other"),
    ]
    if len(view.chunks):
        handles.insert(2, Line2D([], [], color="#37474f", marker="|", lw=0, ms=10,
                                 label="chunk arrived"))
    return handles


def _draw(fig: Figure, gs: Any, view: RunView, xlim: tuple[float, float], *,
          with_xlabel: bool, sharex: Axes | None = None) -> list[Axes]:
    """Draw one run's lanes into the grid slots `gs` (events, client, [rates], haproxy)."""
    load = view.scenario == "S3"
    axes: list[Axes] = []
    for k in range(len(gs)):
        axes.append(fig.add_subplot(gs[k], sharex=sharex or (axes[0] if axes else None)))
    ev_ax, cl_ax, hp_ax = axes[0], axes[1], axes[-1]
    _event_lane(ev_ax, view, xlim, fig.get_figwidth())
    _client_lane(cl_ax, view, xlim)
    if load:
        _rate_lane(axes[2], view, xlim)
    _haproxy_lane(hp_ax, view, xlim)
    for ax in axes:
        _event_lines(ax, view) if ax is not ev_ax else None
        ax.set_xlim(*xlim)
        ax.grid(axis="x", color="#e0e0e0", lw=0.6)
        ax.set_axisbelow(True)
        if ax is not hp_ax:
            ax.tick_params(labelbottom=False)
    if with_xlabel:
        hp_ax.set_xlabel(f"t (s) from {view.anchor_name}" + (" — the hc sidecar's first transition"
                                                                 if view.anchor_name == "E1" else ""))
    return axes


def _ratios(view: RunView) -> list[float]:
    n_servers = max(1, view.servers["server"].nunique())
    events_rows = 1.3 if len(view.events) <= 7 else 2.2  # several pods' events stack higher
    client = 2.4 if view.scenario == "S3" else 1.0 + 0.35 * max(1, min(len(view.client), 6))
    lanes = [events_rows, client] + ([1.2] if view.scenario == "S3" else [])
    return lanes + [0.35 + 0.3 * n_servers]


def timeline(run: Any, *, width: float = 12.0) -> Figure:
    """Draw one run's six-event timeline with the client and HAProxy lanes.

    Parameters:
        run: a ``gtnb.analysis.Run`` (from ``load_run``).
        width: figure width in inches.

    Returns:
        The Figure (show it with ``gtnb.notebook.show_figure`` or save it with ``savefig``).
    """
    view = view_of(run)
    xlim = _x_range([view])
    ratios = _ratios(view)
    fig = Figure(figsize=(width, 0.75 * sum(ratios) + 1.2), layout="constrained")
    gs = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    _draw(fig, [gs[i] for i in range(len(ratios))], view, xlim, with_xlabel=True)
    fig.suptitle(f"{_title(view)}\n{headline(view)}", fontsize=12, fontweight="bold")
    fig.legend(handles=_legend_handles(view), loc="outside lower center", ncol=6, fontsize=8,
               frameon=False)
    return fig


def plot_compare(run_current: Any, run_improved: Any, *, width: float = 12.0) -> Figure:
    """Draw current and improved runs one above the other on a shared time axis (t from E1).

    Parameters:
        run_current: the current-mode Run.
        run_improved: the improved-mode Run of the same scenario.
        width: figure width in inches.

    Returns:
        The Figure.
    """
    views = [view_of(run_current), view_of(run_improved)]
    xlim = _x_range(views)
    blocks = [_ratios(v) for v in views]
    ratios = blocks[0] + [0.25] + blocks[1]  # a thin spacer row between the two runs
    fig = Figure(figsize=(width, 0.75 * sum(ratios) + 1.4), layout="constrained")
    gs = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    first = _draw(fig, [gs[i] for i in range(len(blocks[0]))], views[0], xlim, with_xlabel=False)
    offset = len(blocks[0]) + 1
    _draw(fig, [gs[offset + i] for i in range(len(blocks[1]))], views[1], xlim, with_xlabel=True,
          sharex=first[0])
    for v, ax in ((views[0], first[0]), (views[1], fig.axes[len(first)])):
        ax.set_title(f"{v.mode} mode — {headline(v)}", loc="left", fontsize=11, fontweight="bold",
                     color=OK_COLOR if v.client["ok"].all() and len(v.client) else CUT_COLOR)
    v = views[0]
    date = v.started.replace("T", " ")[:16] + " UTC" if v.started else ""
    fig.suptitle(f"{v.scenario}: current vs improved · {v.target} · {date}", fontsize=13,
                 fontweight="bold")
    fig.legend(handles=_legend_handles(views[0]), loc="outside lower center", ncol=6, fontsize=8,
               frameon=False)
    return fig
