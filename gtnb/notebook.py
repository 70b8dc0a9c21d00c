"""What the scenario notebooks call: run-or-analyse, display, the final step (one import).

A notebook stays thin: its parameters cell holds literals, and every other cell is one call into
this module (or into ``gtnb.analysis``). The flow of s1..s4.ipynb::

    p = nb.parameters("S1", mode=mode, target=target, ...)   # validation: ConfigError on bad input
    outcome = nb.run_or_load(p)     # run the scenario, or take `run_dir`; a failure is recorded
    nb.show_outcome(outcome)
    run = nb.load(outcome)          # the artifacts as frames (partial ones for a failed run)
    nb.show_summary(run)
    nb.show_timeline(run)           # the six-event timeline (S2 adds nb.show_transitions(run))
    nb.show_events(run)
    nb.show_verdict(outcome, run)
    nb.finish(outcome, p)           # report.html into the run dir; raise if the run failed

A failed run does not stop the notebook at the run cell: the analysis cells still draw what the
partial artifacts hold, the report is still rendered, and `finish` raises at the very end so
papermill exits non-zero.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import artifacts_root, read_journal
from .errors import ArtifactError, ConfigError, RunError
from . import notebook_params
from .notebook_params import *  # noqa: F403 (re-exported whole, so a notebook needs one import)
from .notebook_params import NOTEBOOKS_DIR, Params, ensure_scenario
from .notebook_show import (
    PROBLEMS,
    guarded,
    narrate,
    outcome_html,
    show_compare,
    show_comparison,
    show_events,
    show_figure,
    show_outcome,
    show_summary,
    show_timeline,
    show_transitions,
    show_verdict,
)

__all__ = [
    *notebook_params.__all__,
    "Outcome",
    "run_or_load",
    "load",
    "finish",
    "finish_compare",
    "notebook_for",
    # re-exported from notebook_show, so a notebook needs one import
    "narrate",
    "outcome_html",
    "show_compare",
    "show_comparison",
    "show_events",
    "show_figure",
    "show_outcome",
    "show_summary",
    "show_timeline",
    "show_transitions",
    "show_verdict",
]

log = logging.getLogger("gtnb.notebook")


@dataclass
class Outcome:
    """What the run cell produced: the run directory (if any) and the failure (if any)."""

    params: Params
    run_dir: Path | None
    status: str  # completed | failed | aborted | running (a run killed hard)
    step: str | None = None
    error: str | None = None
    analysed_only: bool = False
    journal: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run completed (whatever its verdict)."""
        return self.status == "completed"

    def failure(self) -> str:
        """'run failed at step X: error' (empty when the run completed)."""
        if self.ok:
            return ""
        return f"run {self.status} at step {self.step or '?'}: {self.error or 'no error recorded'}"


def _find_run_dir(params: Params, since: float) -> Path | None:
    """The newest run directory of this scenario and mode created since `since` (a failed run()
    may raise before returning its path)."""
    root = params.artifacts or artifacts_root()
    found = [p.parent for p in root.glob(f"*/{params.scenario}-{params.mode}/run.json")
             if p.stat().st_mtime >= since - 1]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _outcome_from_journal(params: Params, run_dir: Path, *, analysed_only: bool,
                          error: str | None = None) -> Outcome:
    try:
        journal = read_journal(run_dir)
    except ArtifactError as exc:
        return Outcome(params, run_dir, "failed", "start", error or str(exc), analysed_only)
    status = str(journal.get("status") or "failed")
    if error and status == "completed":
        status = "failed"  # run() raised after the journal was closed: still a failure
    return Outcome(params, run_dir, status, journal.get("step"), journal.get("error") or error,
                   analysed_only, journal)


def run_or_load(params: Params) -> Outcome:
    """Run the scenario (or take `run_dir`) and return what happened; never raises for a run
    that failed, so the notebook goes on to show the partial artifacts.

    Parameters:
        params: from `parameters`.

    Returns:
        The Outcome. Bad input still raises ConfigError (nothing ran).
    """
    if params.run_dir is not None:
        log.info("analysing the existing run %s (nothing is run)", params.run_dir)
        return _outcome_from_journal(params, params.run_dir, analysed_only=True)
    from .scenarios import run  # imported here: analysis-only notebooks need no target code

    started = time.time()
    log.info("running %s in %s mode on the %s target", params.scenario, params.mode, params.target)
    try:
        run_dir = run(params.scenario, params.mode, progress=True, **params.run_kwargs())
    except ConfigError:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # the journal says failed/aborted: keep going
        found = getattr(exc, "run_dir", None) or _find_run_dir(params, started)
        message = f"{type(exc).__name__}: {exc}"
        if found is None:
            return Outcome(params, None, "failed", "start", message)
        return _outcome_from_journal(params, Path(found), analysed_only=False, error=message)
    return _outcome_from_journal(params, Path(run_dir), analysed_only=False)


@guarded("loading the artifacts")
def load(outcome: Outcome) -> Any:
    """Load the run's artifacts (``gtnb.analysis.load_run``); None when there is no run dir
    (or when loading failed: the error is shown and `finish` raises it at the end)."""
    if outcome.run_dir is None:
        return None
    from .analysis import load_run

    return load_run(outcome.run_dir)


def notebook_for(scenario: str) -> Path:
    """The notebook of a scenario: notebooks/s1.ipynb for S1."""
    return NOTEBOOKS_DIR / f"{ensure_scenario(scenario).lower()}.ipynb"


def finish(outcome: Outcome, params: Params | None = None) -> Path | None:
    """The notebook's last cell: render report.html into the run dir, then raise if the run failed.

    Parameters:
        outcome: from `run_or_load`.
        params: the Params (default: the outcome's); `report=False` skips the report (the
            re-execution that renders it passes that).

    Returns:
        The report's path (None when no report was rendered). Raises RunError for a failed run,
        after the report exists, so papermill exits non-zero.
    """
    params = params or outcome.params
    report: Path | None = None
    if params.report and outcome.run_dir is not None:
        from .report import render_report

        report = render_report(outcome.run_dir)
        print(f"report: {report}")
    where = f"; artifacts and report in {outcome.run_dir}" if outcome.run_dir else ""
    if not outcome.ok:
        raise RunError(outcome.failure() + where)
    if PROBLEMS:
        raise RunError("the run completed but its analysis failed: " + "; ".join(PROBLEMS) + where)
    return report


def finish_compare(outcome_current: Outcome, outcome_improved: Outcome, *,
                   report: bool = True) -> Path | None:
    """compare.ipynb's last cell: compare.html into the improved run's dir; raise if a run failed.

    Runs this notebook made (not loaded with `run_dir_*`) also get their own report.html, so the
    index links them like any run.

    Returns:
        The path of compare.html (None when not rendered).
    """
    path: Path | None = None
    if report:
        from .report import render_compare_report, render_report

        for o in (outcome_current, outcome_improved):
            if o.run_dir is not None and not o.analysed_only:
                print(f"{o.params.mode} report: {render_report(o.run_dir)}")
        if outcome_current.run_dir and outcome_improved.run_dir:
            path = render_compare_report(outcome_current.run_dir, outcome_improved.run_dir)
            print(f"comparison report: {path}")
    failed = [o for o in (outcome_current, outcome_improved) if not o.ok]
    if failed:
        raise RunError("; ".join(f"{o.params.mode}: {o.failure()}" for o in failed))
    if PROBLEMS:
        raise RunError("the runs completed but their analysis failed: " + "; ".join(PROBLEMS))
    return path
