"""Verdicts: each scenario's expect lines as named checks with tolerances.

A verdict speaks of outcomes — completed vs cut, and how — never of one status code: on these
machines a cut request shows up as a 502, a reset, a stream error or even a clean-looking
truncated stream (DESIGN.md). Expectations per scenario and mode:

    S1 current   the in-flight request is cut before its full duration
    S1 improved  it completes (2xx, whole answer) after about duration_s
    S2           S1 improved + the FSM order and bounds: E1 < E2 < E3 < E4 < E5 < E6,
                 LB_DOWN within inter + (fall-1) x fastinter + check time of E1, the drain only
                 after LB_DOWN, DRAINED within one poll interval of the last in-flight request's
                 end, SIGTERM after DRAINED
    S3           current: failed requests > 0; improved: 0 failed, 0 5xx
    S4           current: the stream is cut (chunks short of the total or the final line
                 missing); improved: complete, final line included
    S1, S2, S4   the request went to the killed pod's node (its HAProxy log line's server vs
                 run.json `killed_pod`/`pod_nodes`); if not, the headline says the experiment
                 did not test the kill (verdict_kill.py)

A cut is judged as a cut whatever caused it, and never by the order of E2 and E4 in current
mode (it follows the HAProxy timings in use; the seed's and haproxy-current.cfg's is E1 < E2 <
E4, shown as an info check); the outcome then names the cut
from the evidence (cut_cause.py): the proxy killed (haproxy.log `SH--`/`SD--`) or HAProxy
shutting the session at DOWN (`DH--`/`DD--`), else the nearest event by timing.

Timing parameters come from the journal's `parameters` when present (`duration_s`,
`interval_s`, `inter_s`, `fastinter_s`, `fall`, `check_s`, `poll_interval_s`), else the
defaults of haproxy/haproxy-improved.cfg and the hc (inter 1 s, fastinter 0.5 s, fall 2,
check time 0.5 s, poll 1 s).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..vocabulary import MODES, SCENARIOS, ensure_mode, ensure_scenario_name
from .verdict_checks import Check, _main_request, fsm_checks, outcome_of, request_checks, s3_checks, s4_checks
from .verdict_kill import SERVED_BY_KILLED, current_order_check, served_by_killed_check

__all__ = ["Check", "Verdict", "verdict", "SCENARIOS", "MODES"]



@dataclass
class Verdict:
    """A run judged against its scenario's expect lines.

    Attributes:
        scenario, mode: what was judged.
        checks: the named checks (name, expected, observed, ok; ok None = shown, not judged).
        outcome: what the client saw, in words ("cut: http_5xx 502 after 5.0 s").
        cut: True when the client saw a cut (S3: any failed request), None when unknown.
        notes: caveats (missing files, failed run).
    """

    scenario: str
    mode: str
    checks: list[Check]
    outcome: str
    cut: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every judged check holds (and at least one was judged)."""
        judged = [c.ok for c in self.checks if c.ok is not None]
        return bool(judged) and all(judged)

    @property
    def headline(self) -> str:
        failed = [c.name for c in self.checks if c.ok is False]
        missed = next((c for c in self.checks if c.name == SERVED_BY_KILLED and c.ok is False), None)
        if missed is not None:  # whatever the client saw, it was not the kill's doing
            return (f"{self.scenario} {self.mode}: {self.outcome} — the experiment did not test the kill: "
                    f"{missed.observed}")
        held = "as expected" if self.ok else "NOT as expected (" + ", ".join(failed) + ")"
        return f"{self.scenario} {self.mode}: {self.outcome} — {held} in {self.mode} mode"

    def frame(self) -> pd.DataFrame:
        """The checks as a DataFrame (name, expected, observed, ok)."""
        return pd.DataFrame([c.__dict__ for c in self.checks], columns=["name", "expected", "observed", "ok"])

    def __str__(self) -> str:
        lines = [self.headline]
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "info"}[c.ok]
            lines.append(f"  [{mark}] {c.name}: expected {c.expected}; observed {c.observed}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.ok else "#c62828"
        rows = "".join(
            f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.expected)}</td>"
            f"<td>{html.escape(c.observed)}</td><td style='color:"
            f"{ {True: '#2e7d32', False: '#c62828', None: '#616161'}[c.ok]};font-weight:bold'>"
            f"{ {True: 'ok', False: 'FAIL', None: 'info'}[c.ok]}</td></tr>" for c in self.checks)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<div class='gtnb-verdict'><p style='color:{color};font-weight:bold'>"
                f"{html.escape(self.headline)}</p><table><thead><tr><th>check</th><th>expected</th>"
                f"<th>observed</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
                + (f"<ul>{notes}</ul>" if notes else "") + "</div>")


def ensure_scenario_mode(scenario: str | None, mode: str | None, where: str) -> tuple[str, str]:
    """Validate a scenario and mode, naming the allowed values and the fix."""
    name = ensure_scenario_name(scenario, where=where,
                                fix="pass scenario='S1' (or fix run.json / the directory name)")
    return name, ensure_mode(mode, where=where, fix="pass mode='current' or mode='improved'")


def verdict(run: Any, *, scenario: str | None = None, mode: str | None = None) -> Verdict:
    """Judge a run against its scenario's expect lines.

    Parameters:
        run: a Run (gtnb.analysis.load_run).
        scenario, mode: override what the journal (or directory name) says — needed for seed
            runs whose directory says neither.

    Returns:
        The Verdict (`.ok`, `.checks`, `.headline`; HTML in Jupyter, text with str()).
    """
    sc, md = ensure_scenario_mode(scenario or run.scenario, mode or run.mode, str(run.path))
    params = run.parameters
    client = run.frames["client"]
    notes = []
    status = run.journal.get("status")
    if status and status != "completed":
        notes.append(f"the run {status} at step {run.journal.get('step')!r}: judged on partial artifacts")
    if sc == "S3":
        checks, outcome, cut = s3_checks(run, md)
    elif sc == "S4":
        checks, outcome, cut = s4_checks(run, md, params)
    else:
        checks = request_checks(run, md if sc == "S1" else "improved", params)
        outcome, cut = outcome_of(client, run)
        if sc == "S2":
            if md != "improved":
                notes.append("S2 is defined for improved mode: judged as S2 improved")
            checks += fsm_checks(run, params)
    if sc != "S3":
        # Right after the termination check: a request the kill missed makes the rest moot.
        checks.insert(1, served_by_killed_check(run, _main_request(client)))
        if md == "current" and sc != "S2":
            checks.append(current_order_check(run))
    return Verdict(scenario=sc, mode=md, checks=checks, outcome=outcome, cut=cut, notes=notes + list(run.notes))
