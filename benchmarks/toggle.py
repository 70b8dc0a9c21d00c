"""The local lab's HAProxy and the mode toggle: how long a config install (check + reload) takes,
how long HAProxy then needs to have checked every server, and how long toggles take on the two
lab shapes (3 schedulable nodes: room to surge; master1 tainted: the seed's deadlock every time).

    .venv/bin/python benchmarks/toggle.py [--reloads 10] [--toggles 2]

Brings up its own labs in a temporary directory and takes them down.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gtnb.haproxy_config import check_config, render_haproxy_config
from gtnb.haproxy_stat import wait_servers_up
from gtnb.modes import toggle
from gtnb.targets.local.lab import LocalTarget, lab_down, lab_up
from gtnb.vocabulary import MODES


def _row(what: str, values: list[float]) -> None:
    print(f"| {what} | {len(values)} | {statistics.median(values):.3f} | {max(values):.3f} |")


def _timed(fn: Callable[[], object]) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reloads", type=int, default=10)
    ap.add_argument("--toggles", type=int, default=2, help="round trips current -> improved -> current per lab shape")
    args = ap.parse_args()
    print("| what | n | median s | max s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gtnb-bench-") as d:
        for taint in (False, True):
            state = Path(d) / f"lab-{'tainted' if taint else 'open'}"
            up = _timed(lambda: lab_up(state, taint_master=taint))
            try:
                t = LocalTarget(state)
                shape = "master1 tainted (seed)" if taint else "3 schedulable nodes"
                _row(f"lab up, {shape}", [up])
                if not taint:
                    texts = [render_haproxy_config(m, t.haproxy_values()) for m in MODES]
                    check, install, settle, stat = [], [], [], []
                    for i in range(args.reloads):
                        text = texts[i % 2]
                        check.append(_timed(lambda: check_config(text)))
                        install.append(_timed(lambda: t.balancer.install_config(text)))
                        nodes = [str(p.node) for p in t.cluster.pods() if p.ready]
                        settle.append(_timed(lambda: wait_servers_up(t.balancer, nodes, timeout_s=30)))
                        stat.append(_timed(t.balancer.show_stat))
                    _row("`haproxy -c` of a rendered config", check)
                    _row("install_config (check, write, reload, new worker answers)", install)
                    _row("after a reload: pod servers UP and every server checked", settle)
                    _row("show stat on the admin socket", stat)
                times: dict[str, list[float]] = {"current": [], "improved": []}
                for _ in range(args.toggles):
                    for mode in ("improved", "current"):
                        r = toggle(t, mode, progress=False, log=lambda line: None)
                        times[mode].append(r.timings_s["total"])
                for mode, values in times.items():
                    _row(f"toggle to {mode}, {shape}", values)
                same = toggle(t, "current", progress=False, log=lambda line: None)
                _row(f"toggle to the mode it is in, {shape}", [same.timings_s["total"]])
            finally:
                lab_down(state)


if __name__ == "__main__":
    main()
