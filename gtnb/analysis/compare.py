"""compare(): a current/improved pair of runs -> does the evidence hold?

The seed's lesson: the same expect line in both modes means the experiment is broken, not that
the fix works. So the pair holds only when each run shows its own mode's outcome (current cut,
improved completed) and the two differ.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .verdict import Verdict, verdict

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    """The verdict on a pair: `holds`, a headline, and each run's Verdict."""

    scenario: str
    current: Verdict
    improved: Verdict
    holds: bool
    headline: str

    @property
    def ok(self) -> bool:
        return self.holds

    def __str__(self) -> str:
        return "\n".join([self.headline, "", "current:", str(self.current), "", "improved:", str(self.improved)])

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.holds else "#c62828"
        rows = "".join(
            f"<tr><td>{m}</td><td>{html.escape(v.outcome)}</td><td>"
            f"{'ok' if v.ok else 'FAIL'}</td></tr>" for m, v in (("current", self.current), ("improved", self.improved)))
        return (f"<div class='gtnb-compare'><p style='color:{color};font-weight:bold'>"
                f"{html.escape(self.headline)}</p><table><thead><tr><th>mode</th><th>outcome</th>"
                f"<th>checks</th></tr></thead><tbody>{rows}</tbody></table>"
                f"<h4>current</h4>{self.current._repr_html_()}<h4>improved</h4>{self.improved._repr_html_()}</div>")


def compare(run_current: Any, run_improved: Any) -> Comparison:
    """Judge a current/improved pair of runs of one scenario.

    Parameters:
        run_current: the current-mode Run.
        run_improved: the improved-mode Run.

    Returns:
        The Comparison: holds when current was cut and improved completed, each as its checks expect.

    Raises:
        ConfigError: the runs are swapped, of different scenarios, or not a current/improved pair.
    """
    mc, mi = run_current.mode, run_improved.mode
    if mc == "improved" and mi == "current":
        raise ConfigError("compare(run_current, run_improved): the runs are swapped "
                          f"({run_current.path} is improved, {run_improved.path} is current); swap the arguments")
    if (mc, mi) != ("current", "improved"):
        raise ConfigError(f"compare() needs a current and an improved run; got {mc!r} "
                          f"({run_current.path}) and {mi!r} ({run_improved.path})")
    sc, si = run_current.scenario, run_improved.scenario
    if sc != si:
        raise ConfigError(f"compare() needs two runs of one scenario; got {sc} and {si}: pick runs of the same scenario")
    vc, vi = verdict(run_current), verdict(run_improved)
    if vc.cut is not None and vc.cut == vi.cut:
        what = "cut" if vc.cut else "completed"
        head = (f"{sc}: the experiment is broken — both modes show the same outcome ({what}: "
                f"current {vc.outcome}; improved {vi.outcome}). Check that traffic went to the pod "
                "that was killed (replicas) and that the mode toggle took effect.")
        holds = False
    elif vc.cut is False and vi.cut is True:
        head = (f"{sc}: reversed — current completed ({vc.outcome}) while improved was cut "
                f"({vi.outcome}); the modes may be swapped")
        holds = False
    elif vc.ok and vi.ok:
        head = f"{sc}: the evidence holds — current: {vc.outcome}; improved: {vi.outcome}"
        holds = True
    else:
        failed = [f"{m} {c.name}" for m, v in (("current", vc), ("improved", vi)) for c in v.checks if c.ok is False]
        head = f"{sc}: the evidence does not hold — failed checks: {', '.join(failed) or 'outcome unknown'}"
        holds = False
    return Comparison(scenario=sc or "?", current=vc, improved=vi, holds=holds, headline=head)
