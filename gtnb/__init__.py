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
    "run",
    "load_run",
    "toggle",
]

# The three entry points DESIGN.md promises (`from gtnb import run, load_run, toggle`), loaded on
# first use: `import gtnb` (and so the CLI) must not pull in pandas, httpx or matplotlib.
_LAZY = {
    "run": ("gtnb.scenarios", "run"),
    "load_run": ("gtnb.analysis", "load_run"),
    "toggle": ("gtnb.modes", "toggle"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'gtnb' has no attribute {name!r}")
