"""Targets: where a run happens. `local` (default) is the lab of real processes on loopback;
`homelab` is a Kubernetes cluster with Istio and an HAProxy node over SSH."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..vocabulary import TARGETS, ensure_target
from .base import Balancer, Cluster, Frontend, Node, Pod, RolloutStatus, Target

__all__ = [
    "TARGETS",
    "open_target",
    "ensure_target_name",
    "Target",
    "Cluster",
    "Balancer",
    "Pod",
    "Node",
    "Frontend",
    "RolloutStatus",
]


def ensure_target_name(name: str) -> str:
    """Return `name` if it is local or homelab, else raise ConfigError naming both."""
    return ensure_target(name)


@contextmanager
def open_target(
    name: str = "local", *, profile: str | Path | None = None, state_dir: str | Path | None = None
) -> Iterator[Target]:
    """Open a target for the duration of a block.

    Parameters:
        name: `local` or `homelab`.
        profile: the lab profile file (required for `homelab`).
        state_dir: the local lab's state directory (default `.lab/` in the repo root).

    Returns:
        A context manager yielding the Target. For `local` it attaches to a lab started by
        `gtnb lab up`, or brings one up for the block and takes it down afterwards.
    """
    ensure_target_name(name)
    if name == "local":
        from .local.lab import local_target

        with local_target(state_dir=state_dir) as target:
            yield target
    else:
        from .homelab import homelab_target

        with homelab_target(profile) as target:
            yield target
