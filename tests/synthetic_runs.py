"""Synthetic run directories shaped exactly as docs/contracts.md's "Artifacts" says.

They stand in for the local lab where a test is about analysis, plots or reports (not about the
lab): each writer lays down run.json, client.csv, hc.log, envoy.log, haproxy.log, stat.csv and
run.log for one scenario and mode, with the timings the seed reports (S1 current: 502 at ~10 s;
improved: 200 after the full request).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["write_run", "T0"]

# 2026-12-01T00:20:00Z: the wall-clock start of every synthetic run.
T0 = datetime(2026, 12, 1, 0, 20, 0, tzinfo=timezone.utc).timestamp()
POD = "service-a-igw-7c9d8b6f5-x2x7q"
NEW_POD = "service-a-igw-7c9d8b6f5-k8p2m"
SERVERS = ("master1", "worker1", "worker2")
CLIENT_COLUMNS = [
    "worker", "request_id", "path", "http_version", "t_start", "t_end", "status", "error",
    "curl_exit", "bytes", "chunks", "complete", "detail",
]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso_nano(t: float) -> str:
    return _iso(t)[:-1] + "000Z"


def _haproxy_iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _clf(t: float) -> str:
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%d/%b/%Y:%H:%M:%S.") + f"{d.microsecond // 1000:03d}"


def write_run(
    root: Path,
    scenario: str = "S1",
    mode: str = "current",
    *,
    status: str = "completed",
    duration_s: float = 12.0,
    kill_after_s: float = 2.0,
    stamp: str = "20261201-002000",
    current_cut: str = "down",
    server: str = "worker1",
) -> Path:
    """Write one synthetic run directory under `root` and return it.

    Parameters:
        root: the artifacts root; the run goes to `<root>/<stamp>/<scenario>-<mode>/`.
        scenario: S1 | S2 | S3 | S4.
        mode: current | improved.
        status: the journal status (completed | failed | aborted); a failed run stops after
            the kill, leaves no client.csv and names its step.
        duration_s, kill_after_s: the run's parameters.
        current_cut: which cut comes first in current mode: `down` (the default, the seed's and
            haproxy-current.cfg's order: HAProxy marks DOWN ~2.5 s after E1 and shutdown-sessions
            cuts the request, DH--, before the kill) or `proxy` (pilot-agent kills Envoy first,
            HAProxy marks DOWN after; request logged SH--: slower HAProxy timings do that).
        server: the HAProxy server the requests went to; the killed pod is on worker1
            (run.json `pod_nodes`), so another server is a run whose kill missed the request.

    Returns:
        The run directory.
    """
    run_dir = root / stamp / f"{scenario}-{mode}"
    run_dir.mkdir(parents=True)
    improved = mode == "improved"
    kill = T0 + kill_after_s
    end = T0 + duration_s
    # The six events' true times, as the seed's mechanism produces them.
    e1 = kill + 0.05
    if improved:
        e2, e3 = e1 + 1.3, e1 + 2.0
        e4 = end + 0.02 if scenario != "S3" else e3 + 1.0
        e5, e6 = e4 + 0.1, e4 + 0.3
    else:
        e3, e5 = e1, e1
        e4 = e1 + 5.0
        e2 = e4 + 1.2 if current_cut == "proxy" else e1 + 2.5
        e6 = e4 + 0.05

    hc = [f"ts={_iso(e1)} level=info pod={POD} event=transition from=SERVING to="
          + ("DRAINING reason=prestop" if improved else "TERMINATING reason=sigterm")]
    if improved:
        hc += [f"ts={_iso(e1 + 0.5 + i)} level=info pod={POD} event=check code=503 state=DRAINING"
               for i in range(2)]
        hc.append(f"ts={_iso(e3)} level=info pod={POD} event=drain_start "
                  f"url=http://127.100.0.12:15000/drain_listeners?graceful status=200")
        t = e3 + 1.0
        while t < e4:
            hc.append(f"ts={_iso(t)} level=info pod={POD} event=poll rq_active=1 cx_active=1")
            t += 1.0
        hc.append(f"ts={_iso(e4)} level=info pod={POD} event=poll rq_active=0 cx_active=0")
        hc.append(f"ts={_iso(e4)} level=info pod={POD} event=transition from=DRAINING to=DRAINED "
                  "reason=zero_active")
        hc.append(f"ts={_iso(e5)} level=info pod={POD} event=signal signal=SIGTERM")
    hc.append(f"ts={_iso(e6 - 0.01)} level=info pod={POD} event=exit")
    (run_dir / "hc.log").write_text("\n".join(hc) + "\n")

    agent = [(e5, "info", "Agent draining Proxy for termination"),
             (e5, "info", "Graceful termination period is 5s, starting...")]
    if improved:
        agent.append((e5 + 0.1, "info", "There are no more active connections. terminating proxy..."))
    else:
        agent += [(e4 - 0.001, "info",
                   "Graceful termination period complete, terminating remaining proxies."),
                  (e4, "warn", "Aborting proxy")]
    agent.append((e6, "info", "Agent has successfully terminated"))
    lines = [f"[pod/{POD}/istio-proxy] {_iso_nano(t + 0.0001)} {_iso(t)}\t{lvl}\t{msg}"
             for t, lvl, msg in agent]
    (run_dir / "envoy.log").write_text("\n".join(lines) + "\n")

    # client.csv and the matching HAProxy request log lines.
    rows: list[dict[str, object]] = []
    chunks: list[tuple[str, int, float]] = []
    if scenario in ("S1", "S2"):
        t_end = end if improved else (e4 + 0.01 if current_cut == "proxy" or scenario not in ("S1", "S2")
                                      else e2 + 0.001)
        rows.append(dict(worker=0, request_id="r0", path=f"/sleep?seconds={duration_s:g}",
                         http_version="HTTP/1.1", t_start=T0, t_end=t_end,
                         status=200 if improved else 502, error="" if improved else "http_5xx",
                         curl_exit=0, bytes=20, chunks=0, complete=improved, detail=""))
    elif scenario == "S4":
        last = end if improved else (e2 if current_cut == "down" else e4)
        k, t = 0, T0 + 1.0
        while t <= last:
            k += 1
            chunks.append(("r0", k, t))
            t += 1.0
        rows.append(dict(worker=0, request_id="r0", path=f"/stream?seconds={duration_s:g}&interval=1",
                         http_version="HTTP/2", t_start=T0, t_end=last + 0.01,
                         status=200, error="" if improved else "stream_reset",
                         curl_exit=0 if improved else 92, bytes=8 * k, chunks=k,
                         complete=improved, detail="" if improved else "CANCEL"))
    else:  # S3: 4 workers looping /fast; current loses the requests in flight at the kill.
        n = 0
        for w in range(4):
            t = T0 + 0.01 * w
            while t < end:
                cut = not improved and abs(t - (e2 if current_cut == "down" else e4)) < 0.25
                rows.append(dict(worker=w, request_id=f"r{n}", path="/fast", http_version="HTTP/1.1",
                                 t_start=t, t_end=t + 0.05, status="" if cut else 200,
                                 error="connection_reset" if cut else "", curl_exit=56 if cut else 0,
                                 bytes=0 if cut else 3, chunks=0, complete=not cut, detail=""))
                n += 1
                t += 0.2
    if status != "completed":
        rows = []  # the run stopped before the client finished
    if rows or status == "completed":
        with (run_dir / "client.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CLIENT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    if chunks:
        with (run_dir / "chunks.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("request_id", "k", "t"), *chunks])

    hap = [f"{_haproxy_iso(e2)} Server istio-http-backend/worker1 is DOWN, reason: Layer7 wrong "
           'status, code: 503, info: "Service Unavailable", check duration: 1ms. 2 active and 0 '
           "backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue."]
    for r in rows[:50]:
        code = r["status"] or -1
        state = "----" if r["error"] == "" else ("DH--" if current_cut == "down" else "SH--")
        hap.append(f"{_haproxy_iso(float(r['t_end']))} 127.0.0.1:4{len(hap):04d} "
                   f"[{_clf(float(r['t_start']))}] fe-https istio-http-backend/{server} 0/0/0/-1/"
                   f"{int((float(r['t_end']) - float(r['t_start'])) * 1000)} {code} 20 - - {state} "
                   f"1/1/0/0/0 0/0 \"GET {r['path']} HTTP/1.1\"")
    (run_dir / "haproxy.log").write_text("\n".join(hap) + "\n")

    with (run_dir / "stat.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ts", "pxname", "svname", "scur", "stot", "status", "check_status",
                         "hrsp_5xx"])
        t, stop = T0, (end if status == "completed" else e4) + 1.0
        while t <= stop:
            for sv in SERVERS:
                down = sv == "worker1" and t >= e2
                writer.writerow([f"{t:.3f}", "istio-http-backend", sv, 0, 10,
                                 "DOWN" if down else "UP", "L7STS" if down else "L7OK", 0])
            writer.writerow([f"{t:.3f}", "istio-http-backend", "BACKEND", 1, 30, "UP", "", 0])
            t += 0.2

    steps = [(T0 - 3, f"toggle {mode}: manifest applied, haproxy cfg installed"),
             (T0 - 0.5, "replicas set to " + ("2" if scenario == "S3" else "1")),
             (T0, "traffic started"), (kill, f"kill issued: delete pod {POD} grace 210")]
    if status == "completed":
        steps.append((end + 0.5, "traffic finished; collectors stopped"))
    (run_dir / "run.log").write_text("".join(f"{_iso(t)} {m}\n" for t, m in steps))

    journal = {
        "schema": 1, "gtnb_version": "0.1.0",
        "versions": {"haproxy": "2.6.12", "envoy": "1.40.0", "kubernetes": None},
        "target": "local", "scenario": scenario, "mode": mode,
        "parameters": {"duration_s": duration_s, "kill_after_s": kill_after_s,
                       "grace_period_s": 210, **({"workers": 4} if scenario == "S3" else {})},
        "started_at": _iso(T0 - 3), "ended_at": _iso(end + 1.0), "status": status,
        "step": "done" if status == "completed" else "wait_traffic",
        "error": None if status == "completed" else "timed out after 30 s waiting for the client",
        "sha256": {"manifest": "0" * 64, "haproxy_cfg": "1" * 64},
        "clock_offsets_s": {"local": 0.0}, "stat_interval_s": 0.2, "stat_jitter_s": {},
        "killed_pod": None if scenario == "S3" else POD, "verdict": None,  # a rollout kills no one pod
        "pod_nodes": {POD: "worker1"},
    }
    (run_dir / "run.json").write_text(json.dumps(journal, indent=2) + "\n")
    return run_dir
