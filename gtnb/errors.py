"""Exceptions raised by gtnb.

Every error names the thing that is wrong and the fix, so a notebook cell that fails tells the
SRE what to do next. The tree::

    GtnbError
    ├── ConfigError          bad input: a parameter, a profile, a manifest, a HAProxy config
    ├── TargetError          the lab or cluster did not do what was asked
    │   ├── LabError             the local lab: a process would not start, stop or answer
    │   ├── RolloutError         a rollout did not finish in time
    │   │   └── RolloutDeadlock      new pods Pending while old-mode pods stay (kubernetes#116891)
    │   ├── BalancerError        HAProxy refused a config, a reload failed, a socket did not answer
    │   └── PreflightError       a preflight check failed before a run
    ├── RunError             a scenario run could not start or finish
    │   └── RunLockedError       another run holds the lab
    └── ArtifactError        a run directory or artifact file is missing or unreadable
"""

from __future__ import annotations

__all__ = [
    "GtnbError",
    "ConfigError",
    "TargetError",
    "LabError",
    "RolloutError",
    "RolloutDeadlock",
    "BalancerError",
    "PreflightError",
    "RunError",
    "RunLockedError",
    "ArtifactError",
]


class GtnbError(Exception):
    """Raised for every failure gtnb itself detects; catch this to catch them all."""


class ConfigError(GtnbError, ValueError):
    """Raised when a parameter, profile, manifest or HAProxy config is invalid."""


class TargetError(GtnbError):
    """Raised when the lab or cluster did not do what was asked."""


class LabError(TargetError):
    """Raised when a local lab process would not start, stop or answer."""


class RolloutError(TargetError):
    """Raised when a rollout did not finish within its timeout."""


class RolloutDeadlock(RolloutError):
    """Raised when new pods stay Pending while old-mode pods hold every node."""


class BalancerError(TargetError):
    """Raised when HAProxy refused a config, a reload failed or its socket did not answer."""


class PreflightError(TargetError):
    """Raised when a preflight check failed and the run was not told to go on anyway."""


class RunError(GtnbError):
    """Raised when a scenario run could not start or finish."""


class RunLockedError(RunError):
    """Raised when another run already holds the lab's lock."""


class ArtifactError(GtnbError):
    """Raised when a run directory or one of its artifact files is missing or unreadable."""
