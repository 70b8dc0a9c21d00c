"""Benchmark: S3's load generator vs the seed's curl loops, and what the collectors cost.

Against the local lab (2 replicas, as S3), in one go:

1. gtnb's `Load` (10 workers, a new connection per request, as the seed's loop) for D seconds;
2. the seed's method: 10 bash loops of `curl --resolve example.local:PORT:HOST --cacert CA`
   on the same URL for D seconds;
3. gtnb's `Load` again with every collector of a run running (hc/envoy/haproxy followers,
   stat.csv at 200 ms): requests/s and the collector threads' CPU seconds.

Rounds alternate (gtnb, curl, gtnb, curl, ...) so a drift of the shared machine hits both.
Not a test: it prints a Markdown table and, with --write, saves it to benchmarks/s3_load.md.

    .venv/bin/python benchmarks/s3_load.py [--duration-s 15] [--rounds 2] [--state-dir DIR] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from gtnb._wait import wait_until
from gtnb.collect import Collectors
from gtnb.targets import open_target
from gtnb.traffic import Load, Pin

HERE = Path(__file__).resolve().parent

CURL_LOOP = r"""
end=$(( $(date +%s%N) + {duration_ns} ))
while [ $(date +%s%N) -lt $end ]; do
  curl -s -o /dev/null -w '%{{http_code}}\n' --cacert {ca} --resolve example.local:{port}:{host} \
    https://example.local:{port}{path}
done
"""


def run_gtnb(pin: Pin, workers: int, duration_s: float) -> dict[str, float]:
    cpu0 = psutil.Process().cpu_times()
    load = Load(pin, path="/fast", workers=workers, duration_s=duration_s)
    started = time.monotonic()
    load.start()
    load.join(duration_s + 60)
    elapsed = time.monotonic() - started
    cpu1 = psutil.Process().cpu_times()
    results = load.results()
    ok = sum(r.ok for r in results)
    return {"requests": len(results), "ok": ok, "elapsed_s": elapsed, "rps": len(results) / elapsed,
            "client_cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


def run_curl(pin: Pin, workers: int, duration_s: float) -> dict[str, float]:
    script = CURL_LOOP.format(duration_ns=int(duration_s * 1e9), ca=pin.ca, port=pin.port, host=pin.host, path="/fast")
    started = time.monotonic()
    procs = [subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE) for _ in range(workers)]
    codes: list[str] = []
    for p in procs:
        out, _ = p.communicate()
        codes += out.decode().split()
    elapsed = time.monotonic() - started
    return {"requests": len(codes), "ok": codes.count("200"), "elapsed_s": elapsed, "rps": len(codes) / elapsed}


def run_with_collectors(target: object, pin: Pin, workers: int, duration_s: float, out: Path) -> dict[str, float]:
    collectors = Collectors(target.cluster, target.balancer, out, runlog=lambda m: None)  # type: ignore[attr-defined]
    collectors.start()
    try:
        result = run_gtnb(pin, workers, duration_s)
    finally:
        summary = collectors.stop()
    result["collector_cpu_s"] = summary["cpu_s"]
    result["stat_samples"] = summary["stat_jitter_s"]["samples"]
    result["stat_late_p95_ms"] = (summary["stat_jitter_s"]["late_p95"] or 0) * 1000
    result["lines"] = sum(summary["lines"].values())
    return result


def _rates(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['rps']:.1f}" for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration-s", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--state-dir", default=None, help="an existing lab's state dir (default: a fresh lab)")
    ap.add_argument("--write", action="store_true", help="save the table to benchmarks/s3_load.md")
    args = ap.parse_args()
    if shutil.which("curl") is None:
        print("curl is not installed: `apt-get install curl`", file=sys.stderr)
        return 2
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="gtnb-bench-lab-")
    with open_target("local", state_dir=state_dir) as target:
        target.cluster.scale(2)
        wait_until(lambda: len([p for p in target.cluster.pods() if p.ready and p.phase == "Running"]) == 2
                   and len(target.cluster.pods()) == 2, timeout_s=180, what="2 ready pods")
        pin = Pin.from_frontend(target.balancer.frontend())
        run_gtnb(pin, args.workers, 2.0)  # warm-up: imports, first handshakes, Envoy's pools
        gtnb_runs, curl_runs = [], []
        for i in range(args.rounds):
            gtnb_runs.append(run_gtnb(pin, args.workers, args.duration_s))
            print(f"round {i + 1}: gtnb {gtnb_runs[-1]['rps']:.1f} req/s", file=sys.stderr)
            curl_runs.append(run_curl(pin, args.workers, args.duration_s))
            print(f"round {i + 1}: curl {curl_runs[-1]['rps']:.1f} req/s", file=sys.stderr)
        with tempfile.TemporaryDirectory() as out:
            with_coll = run_with_collectors(target, pin, args.workers, args.duration_s, Path(out))
    g = statistics.fmean(r["rps"] for r in gtnb_runs)
    c = statistics.fmean(r["rps"] for r in curl_runs)
    lines = [
        "# S3 load generator vs the seed's curl loops",
        "",
        f"Local lab, {args.workers} workers, `/fast`, a new TLS connection per request, "
        f"{args.duration_s:g} s per round, {args.rounds} alternating rounds; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), shared with other work.",
        "",
        "| client | requests/s (per round) | mean req/s | ok / requests |",
        "|---|---|---|---|",
        f"| gtnb `Load` (httpx, threads) | {_rates(gtnb_runs)} | {g:.1f} | "
        f"{sum(r['ok'] for r in gtnb_runs):.0f} / {sum(r['requests'] for r in gtnb_runs):.0f} |",
        f"| seed: 10 x bash loop of curl | {_rates(curl_runs)} | {c:.1f} | "
        f"{sum(r['ok'] for r in curl_runs):.0f} / {sum(r['requests'] for r in curl_runs):.0f} |",
        "",
        f"**Ratio gtnb / curl: {g / c:.2f}x** (target >= 3x).",
        "",
        "## Collectors during S3",
        "",
        "| | req/s | process CPU s | process CPU ms / request | collector threads CPU s | collector CPU share |",
        "|---|---|---|---|---|---|",
        f"| without collectors (mean of the rounds) | {g:.1f} | "
        f"{statistics.fmean(r['client_cpu_s'] for r in gtnb_runs):.2f} | "
        f"{1000 * sum(r['client_cpu_s'] for r in gtnb_runs) / sum(r['requests'] for r in gtnb_runs):.2f} | - | - |",
        f"| with every collector (stat.csv every 200 ms) | {with_coll['rps']:.1f} | {with_coll['client_cpu_s']:.2f} | "
        f"{1000 * with_coll['client_cpu_s'] / with_coll['requests']:.2f} | "
        f"{with_coll['collector_cpu_s']:.2f} | {100 * with_coll['collector_cpu_s'] / with_coll['elapsed_s']:.1f} % of one core |",
        "",
        f"The collectors wrote {with_coll['lines']:.0f} log lines and {with_coll['stat_samples']:.0f} stat samples "
        f"(p95 lateness {with_coll['stat_late_p95_ms']:.1f} ms) in {with_coll['elapsed_s']:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (HERE / "s3_load.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
