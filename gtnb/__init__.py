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
]
