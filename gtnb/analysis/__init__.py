"""Analysis: artifact files -> typed frames -> the six events -> alignment on E1 -> verdicts.

Pure functions on files and DataFrames; nothing here imports gtnb.targets.

    run = load_run("artifacts/20261201-002000/S1-current")
    print(run.summary())            # what loaded, what was missing or skipped
    run.events                      # the six events, t in seconds from E1
    aligned = align(run)            # every frame gains `t`
    verdict(run)                    # the scenario's expect lines as named checks
    compare(run_current, run_improved)
"""

from __future__ import annotations

from ._lines import ParseResult, Skipped
from .compare import Comparison, compare
from .events import align, apply_clock_offsets, find_events, write_events_csv
from .parse_client import parse_chunks, parse_client
from .parse_envoy import parse_envoy
from .parse_haproxy import parse_haproxy
from .parse_hc import parse_hc
from .parse_seed import parse_curl_out, parse_curl_stream, parse_curl_tsv, parse_seed
from .parse_stat import parse_stat
from .run import Run, load_run
from .verdict import Check, Verdict, verdict

__all__ = [
    "ParseResult", "Skipped",
    "parse_hc", "parse_envoy", "parse_haproxy", "parse_stat", "parse_client", "parse_chunks",
    "parse_curl_out", "parse_curl_stream", "parse_curl_tsv", "parse_seed",
    "Run", "load_run", "find_events", "align", "write_events_csv", "apply_clock_offsets",
    "Check", "Verdict", "verdict", "Comparison", "compare",
]
