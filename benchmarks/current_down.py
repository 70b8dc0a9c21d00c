"""Current mode on the real local lab: when does HAProxy mark the deleted pod's server DOWN, and
which cut ends the in-flight request?

Runs S1 current `--runs` times (a short `/sleep` request, the pod deleted after `kill_after_s`)
and prints, per run, in seconds from E1 (hc's first transition, the SIGTERM):

    first_fail  first stat.csv sample of the server not plain `UP` (a failed check; 0.2 s sampling)
    down        HAProxy's `is DOWN` log line
    fail->down  down - first_fail (HAProxy: (fall-1) x fastinter)
    killed      the agent's `Aborting proxy` (terminationDrainDuration after SIGTERM)
    cut         the request's HAProxy termination state and status (DH/DD: shutdown-sessions at
                DOWN; SH: the proxy kill)

    .venv/bin/python benchmarks/current_down.py --runs 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd


def _measure(run_dir: Path) -> dict[str, object]:
    from gtnb.analysis import load_run

    run = load_run(run_dir)
    ev = run.events
    e1 = ev.loc[ev["event"] == 1, "ts"].min()
    node = (run.journal.get("pod_nodes") or {}).get(run.journal.get("killed_pod"))

    def t(mask: pd.Series) -> float | None:
        hits = ev.loc[mask, "ts"]
        return None if hits.empty else (hits.min() - e1).total_seconds()

    down = t((ev["event"] == 2) & (ev["source"] == "haproxy"))
    killed = t((ev["name"] == "PROXY_KILLED") & (ev["source"] == "agent"))
    stat = run.frames["stat"]
    mine = stat[(stat["svname"] == node) & (stat["ts"] >= e1)]
    failing = mine[mine["status"].astype(str) != "UP"]
    first_fail = None if failing.empty else (failing["ts"].min() - e1).total_seconds()
    hap = run.frames["haproxy"]
    req = hap[hap["kind"] == "request"]
    cut = "; ".join(f"{r.server} {r.termination} {r.status}" for r in req.itertuples()) or "-"
    return {"run": run_dir.parent.name, "node": node, "first_fail": first_fail, "down": down,
            "fail_to_down": None if down is None or first_fail is None else down - first_fail,
            "killed": killed, "cut": cut}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--duration-s", type=float, default=12)
    parser.add_argument("--kill-after-s", type=float, default=2)
    args = parser.parse_args()

    from gtnb.scenarios import run
    from gtnb.targets import open_target

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        state, arts = Path(tmp) / "lab", Path(tmp) / "arts"
        with open_target("local", state_dir=state):
            for _ in range(args.runs):
                run_dir = run("S1", "current", state_dir=state, artifacts=arts, progress=False,
                              duration_s=args.duration_s, kill_after_s=args.kill_after_s)
                rows.append(_measure(run_dir))
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    for col in ("first_fail", "down", "fail_to_down", "killed"):
        vals = [v for v in frame[col] if v is not None and pd.notna(v)]
        if vals:
            print(f"{col:>12}: min {min(vals):.2f}  median {statistics.median(vals):.2f}  max {max(vals):.2f}  (n={len(vals)})")


if __name__ == "__main__":
    main()
