"""load_run(): one run directory -> a Run (journal, frames, what was skipped, the six events).

Works on gtnb's own run directories (docs/contracts.md "Artifacts") and on the seed's bash-run
directories (curl.out / curl.body / curl.tsv instead of client.csv). A missing file loads as an
empty frame with the right columns and is noted in `summary()`; a malformed line is skipped and
counted, never fatal. Clock offsets recorded in the journal are applied on load, so every frame's
`ts` is on the runner's clock.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ArtifactError
from ._lines import Skipped, empty_frame
from .parse_client import CHUNK_COLUMNS, CLIENT_COLUMNS, parse_chunks, parse_client
from .parse_envoy import ENVOY_COLUMNS, parse_envoy
from .parse_haproxy import HAPROXY_COLUMNS, parse_haproxy
from .parse_hc import HC_COLUMNS, parse_hc
from .parse_seed import SEED_FILES, parse_seed
from .parse_stat import STAT_COLUMNS, parse_stat

__all__ = ["Run", "load_run", "FRAMES", "RUN_FILES"]

log = logging.getLogger(__name__)

# Frame name -> (file names tried in order, parser, empty columns).
FRAMES: dict[str, tuple[tuple[str, ...], Any, dict[str, str]]] = {
    "hc": (("hc.log",), parse_hc, HC_COLUMNS),
    "envoy": (("envoy.log",), parse_envoy, ENVOY_COLUMNS),
    "haproxy": (("haproxy.log",), parse_haproxy, HAPROXY_COLUMNS),
    "stat": (("stat.csv", "stat-timeline.csv"), parse_stat, STAT_COLUMNS),
    "client": (("client.csv",), parse_client, CLIENT_COLUMNS),
    "chunks": (("chunks.csv",), parse_chunks, CHUNK_COLUMNS),
}
RUN_FILES = ("run.json", "run.log", "hc.log", "envoy.log", "haproxy.log", "stat.csv",
             "stat-timeline.csv", "client.csv", *SEED_FILES)
_DIR_NAME = re.compile(r"(?P<scenario>S\d)(?:-(?P<mode>current|improved))?", re.I)


@dataclass
class Run:
    """One run's artifacts as pandas frames.

    Attributes:
        path: the run directory.
        journal: run.json as a dict ({} when missing or unreadable; see `notes`).
        frames: hc, envoy, haproxy, stat, client, chunks (empty typed frames when missing).
        skipped: per frame, the lines its parser skipped.
        notes: what was missing, unreadable or corrected, in words.
        events: the six events (see gtnb.analysis.events), one row per sighting.
    """

    path: Path
    journal: dict[str, Any]
    frames: dict[str, pd.DataFrame]
    skipped: dict[str, list[Skipped]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    aligned: bool = False  # True once align() added `t` columns

    @property
    def scenario(self) -> str | None:
        """S1..S4 from the journal, else from the directory name (`S1-current`, `S1-rerun`)."""
        value = self.journal.get("scenario")
        if value:
            return str(value).upper()
        m = _DIR_NAME.match(self.path.name)
        return m["scenario"].upper() if m else None

    @property
    def mode(self) -> str | None:
        """current | improved from the journal, else from the directory name."""
        value = self.journal.get("mode")
        if value:
            return str(value)
        m = _DIR_NAME.match(self.path.name)
        return m["mode"].lower() if m and m["mode"] else None

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.journal.get("parameters") or {})

    def summary(self) -> str:
        """What was loaded, missing, skipped and corrected, one line each."""
        out = [f"run {self.path} ({self.scenario or '?'} {self.mode or '?'}, "
               f"status {self.journal.get('status', '?')})"]
        for name, frame in self.frames.items():
            skipped = self.skipped.get(name, [])
            line = f"  {name}: {len(frame)} rows"
            if skipped:
                reasons: dict[str, int] = {}
                for s in skipped:
                    reasons[s.reason] = reasons.get(s.reason, 0) + 1
                top = "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
                line += f", {len(skipped)} lines skipped ({top}; first at line {skipped[0].line_no})"
            out.append(line)
        out += [f"  note: {n}" for n in self.notes]
        if not self.events.empty:
            out.append(f"  events: {', '.join(dict.fromkeys(self.events['name']))}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, scenario={self.scenario!r}, mode={self.mode!r})"


def load_run(path: str | Path) -> Run:
    """Load a run directory.

    Parameters:
        path: `artifacts/<stamp>/<scenario>-<mode>/` (or a seed run directory).

    Returns:
        The Run: journal, frames (clock offsets applied), skipped lines, notes and events.

    Raises:
        ArtifactError: the path does not exist or holds none of a run's files.
    """
    from .events import apply_clock_offsets, find_events  # events imports Run's module

    d = Path(path)
    if not d.exists():
        raise ArtifactError(f"run directory {d} does not exist: pass a directory like "
                            "artifacts/<YYYYmmdd-HHMMSS>/<scenario>-<mode>/")
    if not d.is_dir():
        raise ArtifactError(f"{d} is a file, not a run directory: pass the directory that holds it ({d.parent})")
    if not any((d / f).is_file() for f in RUN_FILES):
        runs = sorted(p.parent.name + "/" + p.name if p.parent != d else p.name
                      for p in d.glob("*/*") if p.is_dir() and any((p / f).is_file() for f in RUN_FILES))
        runs += sorted(p.name for p in d.glob("*") if p.is_dir() and any((p / f).is_file() for f in RUN_FILES))
        hint = f"; run directories below it: {', '.join(runs[:5])}" if runs else ""
        raise ArtifactError(f"{d} is not a run directory: none of run.json, client.csv, hc.log, "
                            f"envoy.log, haproxy.log, stat.csv or curl.* is in it{hint}")
    notes: list[str] = []
    journal = _journal(d, notes)
    frames: dict[str, pd.DataFrame] = {}
    skipped: dict[str, list[Skipped]] = {}
    year = _year(journal)
    for name, (files, parser, columns) in FRAMES.items():
        found = next((d / f for f in files if (d / f).is_file()), None)
        if found is None:
            frames[name] = empty_frame(columns)
            if name not in ("client", "chunks"):
                notes.append(f"{files[0]} missing: the {name} frame is empty")
            continue
        result = parser(found, year=year) if name == "haproxy" else parser(found)
        frames[name], skipped[name] = result.frame, result.skipped
        log.info("loaded %s: %d rows, %d lines skipped", found.name, len(result.frame), len(result.skipped))
    if not (d / "client.csv").is_file():
        seed = parse_seed(d)
        if seed is not None:
            (client, chunks) = seed
            frames["client"], skipped["client"] = client.frame, client.skipped
            frames["chunks"], skipped["chunks"] = chunks.frame, chunks.skipped
            notes.append("client frame read from the seed's curl files (no start times for curl.out/curl.body)")
        else:
            notes.append("client.csv missing: no client rows (a run that stopped before traffic ended?)")
    frames = apply_clock_offsets(frames, journal, notes)
    run = Run(path=d, journal=journal, frames=frames, skipped=skipped, notes=notes)
    run.events = find_events(run)
    ev = run.events
    for pod in ev.loc[ev["name"] == "HEALTH_FAIL", "pod"].dropna().unique() if not ev.empty else []:
        if not ((ev["name"] == "LB_DOWN") & (ev["pod"] == pod)).any():
            notes.append(f"no LB_DOWN for pod {pod}: HAProxy had not marked its server DOWN by the "
                         "end of the logs (collection stopped before HAProxy logged it)")
    log.info("%s: %d events (%s)", d, len(ev), ", ".join(dict.fromkeys(ev["name"])) if not ev.empty else "none")
    return run


def _journal(d: Path, notes: list[str]) -> dict[str, Any]:
    f = d / "run.json"
    if not f.is_file():
        notes.append("run.json missing: no journal (scenario and mode taken from the directory name)")
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        notes.append(f"run.json unreadable ({exc}): journal ignored")
        return {}
    if not isinstance(data, dict):
        notes.append("run.json is not a JSON object: journal ignored")
        return {}
    return data


def _year(journal: dict[str, Any]) -> int | None:
    """The run's year, for syslog lines that carry none."""
    started = journal.get("started_at")
    if isinstance(started, str) and len(started) >= 4 and started[:4].isdigit():
        return int(started[:4])
    return None
