"""gtnb: graceful-termination notebooks for an Istio ingress gateway behind HAProxy."""

from __future__ import annotations

from .errors import (
    ArtifactError,
    BalancerError,
    ConfigError,
    GtnbError,
    LabError,
    PreflightError,
    RolloutDeadlock,
    RolloutError,
    RunError,
    RunLockedError,
    TargetError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
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
    "load_run",
]


def __getattr__(name: str):  # lazy: `import gtnb` (and the CLI) must not pull in pandas
    if name == "load_run":
        from .analysis import load_run

        return load_run
    raise AttributeError(f"module 'gtnb' has no attribute {name!r}")
