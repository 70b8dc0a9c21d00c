"""Benchmark: parse a 1,000,000-line envoy.log vs pandas.read_csv on a CSV of the same size.

    .venv/bin/python benchmarks/parse_envoy.py [--lines 1000000] [--repeat 3] [--dir /tmp/gtnb-bench]

Generates (once, cached in --dir) an envoy.log with the realistic mix of a busy gateway —
mostly Istio text access-log lines with the `kubectl logs --prefix --timestamps` prefix, a few
percent pilot-agent and Envoy lines — and a CSV with the same rows and the access log's fields
as columns (about the same bytes). Each parse runs in a fresh subprocess, so its wall time and
peak memory (ru_maxrss of that process, minus the interpreter's baseline) are its own; the two
alternate `--repeat` times and the best of each is compared, in wall time and in CPU time (CPU
time is the steadier of the two on a shared, loaded machine). Target: parse_envoy <= 2x read_csv.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

POD = "service-a-igw-7c9d8b6f5-x2x7q"
FIELDS = ["pod", "container", "logged", "start", "method", "path", "protocol", "status", "flags",
          "details", "termination", "upstream_failure", "bytes_received", "bytes_sent",
          "duration_ms", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id",
          "authority", "upstream_host", "upstream_cluster", "upstream_local", "downstream_local",
          "downstream_remote", "sni", "route"]
AGENT = ["There are still 3 active connections", "Checking for active connections...",
         "Agent draining Proxy for termination", "Graceful termination period is 5s, starting..."]


def _iso(t: float, digits: int = 6) -> str:
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}"[:digits].ljust(digits, "0") + "Z"


def generate(d: Path, n: int) -> tuple[Path, Path]:
    """Write envoy.log and envoy.csv with n rows each (skipped when they exist)."""
    log, csv = d / f"envoy-{n}.log", d / f"envoy-{n}.csv"
    if log.exists() and csv.exists():
        return log, csv
    d.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(1)
    base = 1782641700.0
    with log.open("w") as fl, csv.open("w") as fc:
        fc.write(",".join(FIELDS) + "\n")
        for i in range(n):
            t = base + i * 0.001
            logged = _iso(t, 6)[:-1] + "000Z"
            r = rnd.random()
            if r < 0.97:
                path = rnd.choice(["/fast", "/fast", "/fast", "/sleep?seconds=1", "/stream?seconds=5&interval=1"])
                code, flags = (200, "-") if rnd.random() < 0.99 else rnd.choice([(503, "UC"), (0, "DC"), (502, "UF")])
                dur = rnd.randint(1, 40)
                start = _iso(t - dur / 1000, 3)
                v = [POD, "istio-proxy", logged, start, "GET", path, "HTTP/1.1", str(code), flags,
                     "via_upstream", "-", "-", "0", str(rnd.randint(3, 900)), str(dur), str(max(dur - 1, 0)),
                     "127.0.0.1", "python-httpx/0.27.0", f"{rnd.getrandbits(64):016x}-{i:08d}",
                     "example.local", "127.100.0.10:8080", "outbound|8080||service-a-backend.service-a.svc.cluster.local",
                     "127.100.0.11:40000", "127.100.0.11:8080", f"127.100.0.1:{30000 + i % 30000}", "-", "-"]
                fl.write(f"[pod/{POD}/istio-proxy] {logged} [{start}] \"{v[4]} {v[5]} {v[6]}\" {v[7]} {v[8]} "
                         f"{v[9]} {v[10]} \"{v[11]}\" {v[12]} {v[13]} {v[14]} {v[15]} \"{v[16]}\" \"{v[17]}\" "
                         f"\"{v[18]}\" \"{v[19]}\" \"{v[20]}\" {v[21]} {v[22]} {v[23]} {v[24]} {v[25]} {v[26]}\n")
                fc.write(",".join(v) + "\n")
            else:
                if r < 0.985:
                    line = f"{_iso(t)}\tinfo\t{rnd.choice(AGENT)}"
                else:
                    dd = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                    line = f"[{dd}][14][info][main] [source/server/server.cc:1028] shutting down server instance"
                fl.write(f"[pod/{POD}/istio-proxy] {logged} {line}\n")
                fc.write(",".join([POD, "istio-proxy", logged] + [""] * (len(FIELDS) - 3)) + "\n")
    return log, csv


CHILD = r"""
import json, resource, sys, time
import pandas as pd
from gtnb.analysis import parse_envoy
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kind, path = sys.argv[1], sys.argv[2]
t, c = time.perf_counter(), time.process_time()
if kind == "parse_envoy":
    frame, skipped = parse_envoy(path)
    rows, extra = len(frame), len(skipped)
else:
    frame = pd.read_csv(path)
    rows, extra = len(frame), 0
wall, cpu = time.perf_counter() - t, time.process_time() - c
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": (peak - base) / 1024, "rows": rows, "skipped": extra,
                  "frame_mb": frame.memory_usage(deep=True).sum() / 2**20}))
"""


def measure(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/gtnb-bench"))
    args = ap.parse_args()
    log, csv = generate(args.dir, args.lines)
    print(f"envoy.log {log.stat().st_size / 2**20:.0f} MiB, CSV {csv.stat().st_size / 2**20:.0f} MiB, "
          f"{args.lines:,} lines each")
    best: dict[str, dict[str, float]] = {}
    cpu_best: dict[str, float] = {}
    for i in range(args.repeat):
        for kind, path in (("read_csv", csv), ("parse_envoy", log)):
            m = measure(kind, path)
            print(f"  run {i + 1} {kind:11s} {m['wall_s']:6.2f} s (cpu {m['cpu_s']:6.2f} s)  peak +{m['peak_mb']:6.0f} MiB  "
                  f"frame {m['frame_mb']:5.0f} MiB  rows {m['rows']:,}  skipped {m['skipped']}")
            if kind not in best or m["wall_s"] < best[kind]["wall_s"]:
                best[kind] = m
            cpu_best[kind] = min(cpu_best.get(kind, float("inf")), m["cpu_s"])
    ratio = best["parse_envoy"]["wall_s"] / best["read_csv"]["wall_s"]
    cpu_ratio = cpu_best["parse_envoy"] / cpu_best["read_csv"]
    mem = best["parse_envoy"]["peak_mb"] / max(best["read_csv"]["peak_mb"], 1)
    print(f"best: parse_envoy {best['parse_envoy']['wall_s']:.2f} s vs read_csv {best['read_csv']['wall_s']:.2f} s "
          f"-> ratio {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'}); "
          f"CPU time ratio {cpu_ratio:.2f}x ({cpu_best['parse_envoy']:.2f} vs {cpu_best['read_csv']:.2f} s); "
          f"peak memory {best['parse_envoy']['peak_mb']:.0f} vs {best['read_csv']['peak_mb']:.0f} MiB ({mem:.1f}x)")


if __name__ == "__main__":
    main()
