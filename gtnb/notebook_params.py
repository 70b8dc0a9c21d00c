"""A notebook's parameters: the `ensure_*` checks and the validated Params.

The parameters cell holds literals (papermill overrides them); the check cell passes them to
`parameters` (or `compare_parameters`), which raises ConfigError naming the bad value and the
allowed ones before anything runs. With `run_dir` set, mode, target and durations come from that
run's journal: an existing run is analysed as it was run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import REPO_ROOT, artifacts_root, read_journal
from .errors import ArtifactError, ConfigError
from .notebook_show import PROBLEMS
from . import vocabulary
from .vocabulary import MODES, SCENARIOS, TARGETS, ensure_scenario_name

__all__ = [
    "SCENARIOS",
    "MODES",
    "TARGETS",
    "NOTEBOOKS_DIR",
    "Params",
    "ensure_scenario",
    "ensure_mode",
    "ensure_target",
    "ensure_duration",
    "ensure_workers",
    "ensure_path",
    "ensure_run_dir",
    "parameters",
    "compare_parameters",
]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def ensure_scenario(scenario: str) -> str:
    """Return the scenario name (S1..S4, any case) or raise ConfigError listing the allowed ones."""
    return ensure_scenario_name(scenario, fix="set `scenario` to one of those")


def ensure_mode(mode: str) -> str:
    """Return `mode` if it is current or improved, else raise ConfigError naming both."""
    return vocabulary.ensure_mode(
        mode, sep=" | ", fix="set `mode` in the parameters cell (or `-p mode improved` with papermill)"
    )


def ensure_target(target: str) -> str:
    """Return `target` if it is local or homelab, else raise ConfigError naming both."""
    return vocabulary.ensure_target(
        target, sep=" | ", fix="`local` runs the lab on this machine, `homelab` needs a `profile`"
    )


def ensure_duration(name: str, value: Any, *, minimum: float = 0.0) -> float | None:
    """Return `value` as seconds (None = the scenario's default), or raise ConfigError.

    Parameters:
        name: the parameter's name, for the message.
        value: a number of seconds, or None.
        minimum: the smallest allowed value (exclusive for 0).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} = {value!r} is not a number of seconds: give e.g. {name} = 6")
    if value < minimum or (minimum == 0.0 and value <= 0):
        raise ConfigError(f"{name} = {value!r} must be > {minimum:g} s")
    return float(value)


def ensure_workers(value: Any) -> int | None:
    """Return S3's worker count (None = default), or raise ConfigError for a non-positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"workers = {value!r} must be a whole number >= 1 (the seed uses 10)")
    return value


def ensure_path(value: Any) -> str | None:
    """Return S3's request path (None or "" = the default, /fast), or raise ConfigError."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"path = {value!r} must start with '/': give e.g. path = \"/fast\" "
                          "(the seed's) or \"/sleep?seconds=0.2\"")
    return value


def ensure_run_dir(run_dir: str | Path, scenario: str) -> Path:
    """Return an existing run directory of `scenario`, or raise ConfigError saying what is wrong.

    Parameters:
        run_dir: a run directory (`artifacts/<ts>/<scenario>-<mode>/`), absolute or relative to
            the working directory or the repo root.
        scenario: the notebook's scenario; the run's journal must name the same one.
    """
    path = Path(run_dir).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    path = path.resolve()
    if not path.is_dir():
        raise ConfigError(f"run_dir {str(run_dir)!r} is not a directory: give a run directory "
                          f"such as artifacts/<YYYYmmdd-HHMMSS>/{scenario}-current")
    try:
        journal = read_journal(path)
    except ArtifactError as exc:
        raise ConfigError(f"run_dir {str(run_dir)!r} is not a gtnb run directory: {exc}") from exc
    if str(journal.get("scenario", "")).upper() != scenario:
        raise ConfigError(
            f"run_dir {str(run_dir)!r} holds a {journal.get('scenario')} run, not {scenario}: "
            f"open {str(journal.get('scenario', 's?')).lower()}.ipynb for it"
        )
    return path


@dataclass(frozen=True)
class Params:
    """A notebook's validated parameters (None = the scenario's default)."""

    scenario: str
    mode: str
    target: str = "local"
    duration_s: float | None = None
    kill_after_s: float | None = None
    grace_period_s: float | None = None
    workers: int | None = None
    path: str | None = None
    run_dir: Path | None = None
    profile: str | None = None
    artifacts: Path | None = None
    state_dir: str | None = None
    report: bool = True

    def run_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``gtnb.scenarios.run`` (defaults left out)."""
        extra = {k: v for k, v in (("duration_s", self.duration_s), ("kill_after_s", self.kill_after_s),
                                   ("grace_period_s", self.grace_period_s), ("workers", self.workers),
                                   ("path", self.path))
                 if v is not None}
        return {"target": self.target, "profile": self.profile, "state_dir": self.state_dir,
                "artifacts": str(self.artifacts) if self.artifacts else None, **extra}



def parameters(
    scenario: str,
    *,
    mode: str,
    target: str = "local",
    duration_s: Any = None,
    kill_after_s: Any = None,
    grace_period_s: Any = None,
    workers: Any = None,
    path: Any = None,
    run_dir: str | Path = "",
    profile: str | Path = "",
    artifacts: str | Path = "",
    state_dir: str | Path = "",
    report: bool = True,
) -> Params:
    """Validate a notebook's parameters cell and return them as Params.

    Parameters:
        scenario: the notebook's scenario (S1..S4).
        mode, target, duration_s, kill_after_s, grace_period_s, workers, path, run_dir, profile,
        artifacts, state_dir, report: the parameters cell's values, as DESIGN.md's "Public
            surface" and the CLI name them; empty strings and None mean "default". `workers`
            and `path` are S3's.

    Returns:
        The Params. When `run_dir` is set, mode and target come from that run's journal.
    """
    PROBLEMS.clear()  # a notebook starts here: forget an earlier execution's problems
    scenario = ensure_scenario(scenario)
    mode = ensure_mode(mode)
    if scenario == "S2" and mode != "improved":
        raise ConfigError("S2 runs in improved mode only (it times the improved drain FSM): set "
                          "mode = 'improved', or use s1.ipynb for the current side")
    target = ensure_target(target)
    existing = ensure_run_dir(run_dir, scenario) if run_dir else None
    if existing is not None:
        # Analysing an existing run: what it was run with is what counts, not this cell's defaults.
        journal = read_journal(existing)
        mode, target = str(journal.get("mode", mode)), str(journal.get("target", target))
        recorded = journal.get("parameters") or {}
        duration_s = recorded.get("duration_s", duration_s)
        kill_after_s = recorded.get("kill_after_s", kill_after_s)
        grace_period_s = recorded.get("grace_period_s", grace_period_s)
        workers = recorded.get("workers", workers)
        path = recorded.get("path", path)
    elif target == "homelab" and not profile:
        raise ConfigError("target 'homelab' needs `profile`: the path of a lab profile YAML "
                          "(see profiles/), or use target = 'local'")
    kill = ensure_duration("kill_after_s", kill_after_s)
    duration = ensure_duration("duration_s", duration_s)
    if kill is not None and duration is not None and kill >= duration:
        raise ConfigError(f"kill_after_s = {kill:g} must be shorter than duration_s = {duration:g}: "
                          "the request has to be in flight when the pod goes")
    return Params(
        scenario=scenario, mode=mode, target=target, duration_s=duration, kill_after_s=kill,
        grace_period_s=ensure_duration("grace_period_s", grace_period_s),
        workers=ensure_workers(workers), path=ensure_path(path), run_dir=existing,
        profile=str(profile) if profile else None,
        artifacts=artifacts_root(artifacts) if artifacts else None,
        state_dir=str(state_dir) if state_dir else None, report=bool(report),
    )


def compare_parameters(
    scenario: str,
    *,
    target: str = "local",
    duration_s: Any = None,
    kill_after_s: Any = None,
    grace_period_s: Any = None,
    workers: Any = None,
    path: Any = None,
    run_dir_current: str | Path = "",
    run_dir_improved: str | Path = "",
    profile: str | Path = "",
    artifacts: str | Path = "",
    state_dir: str | Path = "",
    report: bool = True,
) -> tuple[Params, Params]:
    """Validate compare.ipynb's parameters: one Params per mode.

    Parameters:
        scenario: S1, S3 or S4 (S2 is improved-only).
        run_dir_current, run_dir_improved: existing runs to compare instead of running them;
            each must be of `scenario` and of its mode.
        the rest: as in `parameters`; `workers` and `path` are used by S3 only,
            `grace_period_s` by S1/S4.

    Returns:
        (current Params, improved Params).
    """
    name = ensure_scenario(scenario)
    if name == "S2":
        raise ConfigError("scenario 'S2' runs in improved mode only: compare S1 (the same "
                          "request in both modes), or open s2.ipynb")
    common = dict(target=target, duration_s=duration_s, kill_after_s=kill_after_s,
                  grace_period_s=None if name == "S3" else grace_period_s,
                  workers=workers if name == "S3" else None,
                  path=path if name == "S3" else None, profile=profile,
                  artifacts=artifacts, state_dir=state_dir, report=report)
    pair = (parameters(name, mode="current", run_dir=run_dir_current, **common),
            parameters(name, mode="improved", run_dir=run_dir_improved, **common))
    for p, want, given in ((pair[0], "current", run_dir_current),
                           (pair[1], "improved", run_dir_improved)):
        if given and p.mode != want:
            raise ConfigError(f"run_dir_{want} {str(given)!r} is a {p.mode}-mode run: give a "
                              f"{want}-mode run directory")
    return pair
