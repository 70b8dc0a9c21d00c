"""SshBalancer over a real sshd on loopback: `show stat` latency and clock-offset bias, through the
long-lived helper channel vs one SSH exec per call, direct and through a jump host.

    .venv/bin/python benchmarks/ssh_balancer.py [--samples 50]

Starts the test harness's sshd and master-worker HAProxy (tests/_sshd.py) as children, measures,
stops them. Both clocks are the same here, so any offset measured is the method's bias.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _sshd import running_haproxy, running_sshd  # noqa: E402

from gtnb.targets.ssh import SshBalancer  # noqa: E402


def _ms(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    print("| path | method | connect ms | show stat median ms | p90 ms | clock offset ms (bias) | round trip ms |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d, running_sshd(Path(d) / "sshd") as sshd, \
            running_haproxy(Path(d) / "node") as node:
        for jump in (False, True):
            for method, python in (("helper", "python3"), ("exec per call", "/nonexistent/python3")):
                t0 = time.monotonic()
                b = SshBalancer(node.settings(sshd.host(jump=jump), python=python), node.frontend())
                connect = time.monotonic() - t0
                try:
                    b.show_stat()  # starts the helper (or finds it cannot)
                    times = []
                    for _ in range(args.samples):
                        t = time.monotonic()
                        b.show_stat()
                        times.append(time.monotonic() - t)
                    offset = b.clock_offset_s()
                    rtt = b.last_round_trip_s or 0.0
                finally:
                    b.close()
                print(f"| {'jump' if jump else 'direct'} | {method} | {connect * 1000:.0f} | "
                      f"{statistics.median(times) * 1000:.1f} | {_ms(times, 0.9):.1f} | {offset * 1000:+.2f} | "
                      f"{rtt * 1000:.1f} |")


if __name__ == "__main__":
    main()
