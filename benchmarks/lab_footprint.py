"""Footprint of the local lab: time to `up`, memory of every lab process, time to toggle
modes, time to `down`. Not a test (numbers depend on the machine); the results go to
docs/local-lab.md.

    .venv/bin/python benchmarks/lab_footprint.py [--repeat N] [--taint-master]

Memory is reported as RSS summed over the supervisor and all its descendants (overcounts the
pages Envoy and Python processes share) and as PSS (shared pages split between sharers: the
honest sum).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from gtnb.targets.local.lab import lab_down, lab_up, local_target


def _tree(state: Path) -> list[psutil.Process]:
    record = json.loads((state / "lab.json").read_text())
    sup = psutil.Process(record["pid"])
    return [sup, *sup.children(recursive=True)]


def _memory(state: Path) -> dict[str, float]:
    rss = pss = 0
    by_name: dict[str, float] = {}
    procs = _tree(state)
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += info.pss
        cmd = p.cmdline()
        # Python processes by their module: supervisor, backend, agent, hc.
        key = cmd[2].rsplit(".", 1)[-1] if "python" in p.name() and len(cmd) > 2 and cmd[1] == "-m" else p.name()
        by_name[key] = by_name.get(key, 0.0) + info.pss / 2**20
    return {"processes": len(procs), "rss_mib": rss / 2**20, "pss_mib": pss / 2**20, **{f"pss_mib[{k}]": v for k, v in by_name.items()}}


def one_run(taint_master: bool) -> dict[str, float]:
    from gtnb.modes import toggle

    with tempfile.TemporaryDirectory(prefix="gtnb-fp-") as tmp:
        state = Path(tmp) / "lab"
        t0 = time.monotonic()
        lab_up(state, taint_master=taint_master)
        up_s = time.monotonic() - t0
        mem = _memory(state)
        with local_target(state) as target:
            t0 = time.monotonic()
            toggle(target, "improved", progress=False)
            to_improved_s = time.monotonic() - t0
            t0 = time.monotonic()
            toggle(target, "current", progress=False)
            to_current_s = time.monotonic() - t0
        t0 = time.monotonic()
        lab_down(state)
        down_s = time.monotonic() - t0
    return {"up_s": up_s, "toggle_to_improved_s": to_improved_s, "toggle_to_current_s": to_current_s,
            "down_s": down_s, **mem}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--taint-master", action="store_true", help="2 schedulable nodes: toggles hit the deadlock")
    args = p.parse_args()
    runs = [one_run(args.taint_master) for _ in range(args.repeat)]
    for key in runs[0]:
        values = [r.get(key, 0.0) for r in runs]
        print(f"{key:<40} median {statistics.median(values):8.1f}   min {min(values):8.1f}   max {max(values):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
