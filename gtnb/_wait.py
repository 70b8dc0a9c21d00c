"""Waiting on conditions, never on bare sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import TargetError

T = TypeVar("T")

__all__ = ["wait_until"]


def wait_until(
    condition: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    error: type[Exception] = TargetError,
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    Parameters:
        condition: called repeatedly; exceptions propagate.
        timeout_s: how long to wait before raising `error`.
        what: the awaited condition in words, for the error message ("HAProxy to listen on ...").
        interval_s: pause between polls.

    Returns:
        The first truthy value `condition` returned.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
