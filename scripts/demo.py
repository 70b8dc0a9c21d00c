"""The main job (`make demo`): S1 in both modes on the local lab, through papermill, with reports.

Brings the local lab up once, runs notebooks/s1.ipynb under papermill in `current` then
`improved` mode, renders both runs' report.html and artifacts/index.html, takes the lab down
(always, also on an error or Ctrl-C) and prints the paths of the two reports and the index last.
Progress is narrated on stderr; stdout carries only the three paths.

Durations: the seed runs a 60 s request killed at 5 s. The demo uses `duration_s=20`,
`kill_after_s=3`: in current mode HAProxy marks the pod DOWN 2-3 s after its hc fails and
`shutdown-sessions` cuts the request then (before pilot-agent's 5 s kill: docs/assets.md), at
t ~ 5-6 s from its start, well before it would have finished; improved mode holds the pod until
the request completes at 20 s. A 502 at ~5-6 s against a 200 at 20 s reads at a glance on the
timeline, and the demo takes about a third of the seed's time.
Override with `GTNB_DEMO_DURATION_S` / `GTNB_DEMO_KILL_AFTER_S` for the seed's numbers.

A lab that was already up (`gtnb lab up`) is used and left up; a lab the demo started is taken
down at the end. `--state-dir` and `--artifacts` choose another lab state directory and
artifacts root (defaults: `.lab/` and `artifacts/`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from gtnb.artifacts import REPO_ROOT, artifacts_root
from gtnb.errors import GtnbError
from gtnb.report import render_index
from gtnb.targets.local import lab
from gtnb.vocabulary import MODES

log = logging.getLogger("gtnb.demo")
NOTEBOOK = REPO_ROOT / "notebooks" / "s1.ipynb"


def _newest_run(root: Path, scenario: str, mode: str, since: float) -> Path | None:
    """The run directory this demo's notebook created (the newest one since `since`)."""
    found = [p.parent for p in root.glob(f"*/{scenario}-{mode}/run.json")
             if p.stat().st_mtime >= since - 1]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_mode(mode: str, params: dict[str, object], workdir: Path, root: Path) -> tuple[Path | None, bool]:
    """Run s1.ipynb in `mode` under papermill.

    Returns:
        (the run directory or None, whether the notebook ran without raising).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = time.time()
    log.info("S1 in %s mode: running notebooks/s1.ipynb under papermill (%s)", mode,
             ", ".join(f"{k}={v}" for k, v in params.items()))
    ok = True
    try:
        papermill.execute_notebook(
            str(NOTEBOOK), str(workdir / f"s1-{mode}.ipynb"), parameters={"mode": mode, **params},
            progress_bar=True, log_output=True, cwd=str(NOTEBOOK.parent), kernel_name="python3",
        )
    except PapermillExecutionError as exc:
        ok = False
        log.error("S1 in %s mode failed: %s: %s", mode, exc.ename, exc.evalue)
    run_dir = _newest_run(root, "S1", mode, started)
    log.info("S1 in %s mode: %s in %.0f s -> %s", mode, "done" if ok else "FAILED",
             time.time() - started, run_dir)
    return run_dir, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="S1 in both modes on the local lab, with reports")
    ap.add_argument("--state-dir", default="", help="local lab state directory (default .lab/)")
    ap.add_argument("--artifacts", default="", help="artifacts root (default artifacts/)")
    args = ap.parse_args(argv)
    root = artifacts_root(args.artifacts or None)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # papermill's own logger echoes every kernel output line (log_output): the run narrated.
    logging.getLogger("papermill").setLevel(logging.INFO)
    params: dict[str, object] = {
        "duration_s": float(os.environ.get("GTNB_DEMO_DURATION_S", "20")),
        "kill_after_s": float(os.environ.get("GTNB_DEMO_KILL_AFTER_S", "3")),
        "state_dir": args.state_dir,
        "artifacts": str(root),
    }
    log.info("bringing the local lab up (real HAProxy + real Envoy on loopback)")
    status = lab.lab_up(args.state_dir or None)
    started_here = not status.startswith("lab already up")
    log.info("%s", status.splitlines()[0])
    reports: list[Path] = []
    failed: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gtnb-demo-") as tmp:
            for mode in MODES:
                run_dir, ok = run_mode(mode, params, Path(tmp), root)
                if not ok:
                    failed.append(mode)
                if run_dir is not None and (run_dir / "report.html").exists():
                    reports.append(run_dir / "report.html")
                else:
                    log.error("S1 in %s mode left no report", mode)
    finally:
        if started_here:
            log.info("taking the lab down")
            log.info("%s", lab.lab_down(args.state_dir or None))
        else:
            log.info("the lab was up before the demo: leaving it up (`gtnb lab down` stops it)")
    index = render_index(root)
    for path in reports:
        print(path)
    print(index)
    if failed:
        log.error("failed: %s (their reports say where)", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GtnbError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        sys.exit(130)
