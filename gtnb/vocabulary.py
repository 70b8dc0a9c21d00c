"""gtnb's vocabulary: the modes, scenarios and targets by name, and their `ensure_*` checks.

One place for the names, so a new mode or scenario is added once. This module imports nothing
from gtnb but the errors, so every layer (targets, analysis, notebooks) may import it. Callers
that know more about the fix (the notebook's `-p mode improved`, the verdict's `mode=`) pass a
`fix` (and `sep`, `where`) rather than writing their own check.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError

__all__ = [
    "MODES",
    "SCENARIOS",
    "TARGETS",
    "ensure_one_of",
    "ensure_mode",
    "ensure_scenario_name",
    "ensure_target",
    "other_mode",
]

MODES = ("current", "improved")
SCENARIOS = ("S1", "S2", "S3", "S4")
TARGETS = ("local", "homelab")

PICK = "pick one of those"


def ensure_one_of(
    kind: str,
    value: object,
    choices: Sequence[str],
    *,
    fix: str = PICK,
    sep: str = ", ",
    where: str | None = None,
) -> str:
    """Return `value` if it is one of `choices`, else raise ConfigError naming them and the fix.

    Parameters:
        kind: what the value is ("mode", "target", ...), the message's first word.
        value: the value to check.
        choices: the allowed values.
        fix: what to do about it, after a colon.
        sep: how the choices are joined (the notebooks write `current | improved`).
        where: the file or call the value came from, put before the message.
    Returns:
        `value` as a str.
    """
    if value not in choices:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{kind} {value!r} is not one of {sep.join(choices)}: {fix}")
    return str(value)


def ensure_mode(mode: object, *, fix: str = PICK, sep: str = ", ", where: str | None = None) -> str:
    """Return `mode` if it is current or improved, else raise ConfigError (see ensure_one_of)."""
    return ensure_one_of("mode", mode, MODES, fix=fix, sep=sep, where=where)


def ensure_target(name: object, *, fix: str = PICK, sep: str = ", ", where: str | None = None) -> str:
    """Return `name` if it is local or homelab, else raise ConfigError (see ensure_one_of)."""
    return ensure_one_of("target", name, TARGETS, fix=fix, sep=sep, where=where)


def ensure_scenario_name(name: object, *, fix: str = PICK, where: str | None = None) -> str:
    """Return the scenario name S1..S4 (any case, spaces stripped), else raise ConfigError.

    The message quotes `name` as given (not upper-cased), so the user sees what they typed.
    """
    key = str(name).strip().upper()
    if key not in SCENARIOS:
        ensure_one_of("scenario", name, SCENARIOS, fix=fix, where=where)
    return key


def other_mode(mode: str) -> str:
    """Return the mode that is not `mode` (a toggle's way back)."""
    return next(m for m in MODES if m != ensure_mode(mode))
