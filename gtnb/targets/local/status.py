"""What a local lab is doing, readable from any process: is it running (lab.json and a live
supervisor), which pids are its own, HAProxy's view of the IGW servers, and `gtnb lab status`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import psutil

from ...errors import GtnbError
from .addresses import HAPROXY_HTTPS_PORT, LabAddresses
from .client import LocalCluster
from .haproxy import admin_command
from .state import LabState, resolve_state_dir

__all__ = ["pid_alive", "running_record", "live_record", "all_pids", "tail", "show_stat_rows", "lab_status", "BACKEND"]

BACKEND = "istio-http-backend"


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running_record(state: LabState) -> dict[str, Any] | None:
    """lab.json when its supervisor is alive and starting or serving, else None."""
    record = state.read()
    if not record or record.get("status") not in ("starting", "serving"):
        return None
    if not pid_alive(int(record.get("pid") or 0)):
        return None
    return record


def live_record(state: LabState) -> dict[str, Any] | None:
    """lab.json when its supervisor is alive and serving, else None."""
    record = running_record(state)
    return record if record and record.get("status") == "serving" else None


def all_pids(record: dict[str, Any] | None) -> set[int]:
    pids: set[int] = set()
    if not record:
        return pids
    raw = record.get("pids") or {}
    for key, value in raw.items():
        if key == "pods":
            for containers in (value or {}).values():
                pids.update(int(p) for p in containers.values())
        elif isinstance(value, int):
            pids.add(value)
    if record.get("pid"):
        pids.add(int(record["pid"]))
    return pids


def tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


def show_stat_rows(state_dir: Path) -> dict[str, dict[str, str]]:
    """HAProxy's view of the IGW backend: server name -> `show stat` row (by header name)."""
    text = admin_command(state_dir / "haproxy" / "admin.sock", "show stat")
    rows = list(csv.reader(io.StringIO(text.lstrip("# "))))
    if not rows:
        return {}
    header = rows[0]
    out: dict[str, dict[str, str]] = {}
    for row in rows[1:]:
        item = dict(zip(header, row))
        if item.get("pxname") == BACKEND and item.get("svname") not in ("FRONTEND", "BACKEND"):
            out[item["svname"]] = item
    return out


def _config_mode(state: LabState, a: LabAddresses) -> str:
    """Which mode's config HAProxy runs: the installed file compared with each mode's rendering."""
    from ...haproxy_config import MODES, render_haproxy_config
    from .haproxy import config_path
    from .values import haproxy_values

    try:
        installed = config_path(state.root).read_text()
        values = haproxy_values(a, state.root)
        for mode in MODES:
            if render_haproxy_config(mode, values) == installed:
                return mode
    except (OSError, GtnbError):
        return "unknown"
    return "custom (neither mode's rendering)"


def lab_status(state_dir: str | Path | None = None) -> str:
    """Describe the lab: addresses, pods (mode, node, phase, readiness) and HAProxy's view.

    Returns:
        A few lines of text for a person.
    """
    state = LabState(resolve_state_dir(state_dir))
    record = live_record(state)
    if record is None:
        last = state.read() or {}
        if last.get("status") in ("starting", "serving"):
            why = f" (its supervisor, pid {last.get('pid')}, died without stopping the lab)"
        elif last:
            why = f" (last status: {last.get('status')}" + (f", {last['error']}" if last.get("error") else "") + ")"
        else:
            why = ""
        return f"no lab running in {state.root}{why}; start one with `gtnb lab up`"
    cluster = LocalCluster(state.root, str(record["api"]))
    status = cluster.status()
    a = LabAddresses(int(record["index"]))
    try:
        rows = show_stat_rows(state.root)
    except Exception as exc:  # status must still show the pods when HAProxy is unwell
        rows, stat_error = {}, str(exc)
    else:
        stat_error = ""
    rs = status["rollout"]
    lines = [
        f"lab {a.index} {status['status']} in {state.root} (supervisor pid {status['pid']})",
        f"deployment mode {status['mode']}, HAProxy config {_config_mode(state, a)}; "
        f"https://example.local via {a.haproxy}:{HAPROXY_HTTPS_PORT}; "
        f"api {a.api_url}; backend {a.backend_listen}",
        f"rollout: {rs['updated']}/{rs['desired']} updated, {rs['ready']} ready, {rs['old']} old"
        + (f", pending {', '.join(rs['pending'])}" if rs["pending"] else ""),
        "",
        f"{'POD':<34} {'MODE':<9} {'NODE':<8} {'PHASE':<24} {'READY':<6} HAPROXY",
    ]
    pods = cluster.pods()
    for p in pods:
        row = rows.get(p.node or "") if p.node else None
        view = f"{row.get('status', '?')} ({row.get('check_status', '?')})" if row else "-"
        phase = p.phase + (f" ({p.reason})" if p.reason else "")
        lines.append(f"{p.name:<34} {p.mode or '-':<9} {p.node or '-':<8} {phase:<24} {str(p.ready).lower():<6} {view}")
    lines.append("")
    for node in cluster.nodes():
        holder = next((p.name for p in pods if p.node == node.name), "no pod")
        sched = "" if node.name in status.get("schedulable", []) else ", unschedulable"
        row = rows.get(node.name, {})
        view = f"{row.get('status', '?')} {row.get('check_status', '')}".strip() if row else "?"
        lines.append(f"node {node.name:<8} {node.address:<14} {holder}{sched}; HAProxy server: {view}")
    if stat_error:
        lines.append(f"HAProxy admin socket: {stat_error}")
    if status.get("error"):
        lines.insert(1, f"DEGRADED: {status['error']}")
    return "\n".join(lines)
