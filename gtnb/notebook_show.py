"""What a notebook cell displays: figures as inline PNGs, tables as HTML, verdicts.

Every function degrades to plain text outside IPython, so the same calls work from a script.
A Run that is None (no run directory at all) shows a note instead of failing: the notebook of a
failed run must still get to its last cell.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .notebook import Outcome

__all__ = [
    "PROBLEMS",
    "guarded",
    "narrate",
    "show_figure",
    "outcome_html",
    "show_outcome",
    "show_summary",
    "show_timeline",
    "show_events",
    "show_transitions",
    "show_compare",
    "show_verdict",
    "show_comparison",
]


F = TypeVar("F", bound=Callable[..., Any])

# Analysis steps that raised in this kernel: `finish` raises with them at the very end, after the
# report exists, instead of the first failing cell stopping the notebook before its report.
PROBLEMS: list[str] = []


def guarded(step: str) -> Callable[[F], F]:
    """Run an analysis step so that an exception is shown and recorded, not raised.

    Parameters:
        step: the step's name in words ("the timeline"), for the message and `PROBLEMS`.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown here, raised by finish()
                PROBLEMS.append(f"{step}: {type(exc).__name__}: {exc}")
                tb = "".join(traceback.format_exception(exc)[-3:])
                _html(f"<div style='border:2px solid #c62828;padding:6px'><b style='color:#c62828'>"
                      f"{html.escape(step)} failed: {html.escape(type(exc).__name__)}: "
                      f"{html.escape(str(exc))}</b><pre>{html.escape(tb)}</pre></div>",
                      f"{step} failed: {type(exc).__name__}: {exc}\n{tb}")
                return None

        return inner  # type: ignore[return-value]

    return wrap


def narrate(level: int = logging.INFO) -> None:
    """Show gtnb's notebook and report log lines in the cell output, once per kernel.

    The run itself narrates through its own echo (run.log lines and tqdm on stderr), so only
    the loggers of the notebook's own steps are attached here: no line appears twice.
    """
    # Without ipywidgets tqdm.auto falls back to text bars (safe with the run's collector
    # threads) but warns "IProgress not found" first: that advice is not for this notebook.
    warnings.filterwarnings("ignore", message="IProgress not found")
    for name in ("gtnb.notebook", "gtnb.report"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_gtnb", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
            handler._gtnb = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(level)


def _display(obj: Any) -> None:
    try:
        from IPython.display import display
    except ImportError:  # outside IPython: text is the display
        print(obj)
        return
    display(obj)


def _html(markup: str, text: str) -> None:
    try:
        from IPython.display import HTML
    except ImportError:
        print(text)
        return
    _display(HTML(markup))


def _note(text: str, color: str = "#757575") -> None:
    _html(f"<p style='color:{color}'><b>{html.escape(text)}</b></p>", text)


def show_figure(fig: Any, *, dpi: int = 110) -> None:
    """Display a matplotlib Figure as an inline base64 PNG, its title as the alt text.

    The figure travels as an HTML <img> rather than an image/png output so that the alt text
    survives into the HTML report (nbconvert's template drops image metadata).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else "figure"
    alt = html.escape(title.replace("\n", " — "), quote=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    _html(f"<img alt=\"{alt}\" src=\"data:image/png;base64,{data}\" style=\"max-width:100%\">",
          f"<figure: {title}>")


def _table(rows: list[tuple[str, Any]], caption: str) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='gtnb-params'><caption>{html.escape(caption)}</caption>{body}</table>"


def outcome_html(outcome: Outcome) -> str:
    """The run's parameters and status as an HTML table (also the report's header)."""
    j = outcome.journal
    rows: list[tuple[str, Any]] = [
        ("scenario", j.get("scenario", outcome.params.scenario)),
        ("mode", j.get("mode", outcome.params.mode)),
        ("target", j.get("target", outcome.params.target)),
        ("status", outcome.status + ("" if outcome.ok else f" at step {outcome.step}")),
    ]
    rows += [(k, v) for k, v in (j.get("parameters") or {}).items()]
    rows += [("started", j.get("started_at")), ("ended", j.get("ended_at")),
             ("versions", ", ".join(f"{k} {v}" for k, v in (j.get("versions") or {}).items() if v)),
             ("killed pod", j.get("killed_pod")), ("run directory", outcome.run_dir)]
    box = ""
    if not outcome.ok:
        box = (f"<div style='border:2px solid #c62828;padding:6px;color:#c62828'><b>"
               f"{html.escape(outcome.failure())}</b></div>")
    return box + _table(rows, "run parameters")


def show_outcome(outcome: Outcome) -> None:
    """Display the run's parameters and status (and the failure, if any)."""
    _html(outcome_html(outcome), outcome.failure() or f"run completed: {outcome.run_dir}")


@guarded("the load summary")
def show_summary(run: Any) -> None:
    """Display what was loaded, missing or skipped (``Run.summary()``)."""
    if run is None:
        _note("nothing to load: the run left no run directory")
        return
    summary = run.summary()
    if isinstance(summary, str):  # a text block: keep its lines
        _html(f"<pre>{html.escape(summary)}</pre>", summary)
    else:
        _display(summary)


@guarded("the timeline")
def show_timeline(run: Any) -> None:
    """Display the run's six-event timeline (``gtnb.analysis.plot.timeline``)."""
    if run is None:
        _note("no timeline: the run left no artifacts")
        return
    from .analysis.plot import timeline

    show_figure(timeline(run))


@guarded("the events table")
def show_events(run: Any) -> None:
    """Display the six events: name, t from E1, source and the evidence line."""
    if run is None:
        return
    events = run.events
    if events is None or len(events) == 0:
        _note("no events found in the artifacts", "#c62828")
        return
    cols = [c for c in ("name", "t", "source", "pod", "note", "evidence") if c in events.columns]
    _display(events[cols])


@guarded("the hc transitions")
def show_transitions(run: Any) -> None:
    """Display the hc sidecar's FSM transitions (S2: the drain FSM's timing)."""
    if run is None:
        return
    hc = run.frames.get("hc")
    if hc is None or len(hc) == 0 or "event" not in hc.columns:
        _note("hc.log has no lines", "#c62828")
        return
    _display(hc[hc["event"] == "transition"].dropna(axis=1, how="all"))


@guarded("the comparison figure")
def show_compare(run_current: Any, run_improved: Any) -> None:
    """Display both runs' timelines on one time axis (``plot_compare``)."""
    if run_current is None or run_improved is None:
        _note("no comparison figure: a run left no artifacts")
        return
    from .analysis.plot import plot_compare

    show_figure(plot_compare(run_current, run_improved))


@guarded("the verdict")
def show_verdict(outcome: Outcome, run: Any) -> Any:
    """Display the run's verdict (``gtnb.analysis.verdict``), after the failure if the run failed.

    Returns:
        The Verdict, or None when there was nothing to judge.
    """
    if not outcome.ok:
        _note(f"The run {outcome.status} at step {outcome.step}: {outcome.error}. "
              "The verdict below judges the partial artifacts.", "#c62828")
    if run is None:
        return None
    from .analysis import verdict

    result = verdict(run)
    _display(result)
    return result


@guarded("the comparison verdict")
def show_comparison(run_current: Any, run_improved: Any) -> Any:
    """Display the pair's verdict (``gtnb.analysis.compare``): does the evidence hold?

    Returns:
        The comparison verdict, or None when a run is missing.
    """
    if run_current is None or run_improved is None:
        _note("no comparison: a run left no artifacts", "#c62828")
        return None
    from .analysis import compare

    result = compare(run_current, run_improved)
    _display(result)
    return result
