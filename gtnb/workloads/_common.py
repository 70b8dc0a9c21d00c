"""What the workloads share: timestamps, logfmt lines, addresses, env-backed flags, durations.

The workloads run as container entry points (settings from env) and as local lab processes
(settings from flags), so every flag falls back to an env var and every value is validated with
a message that names the flag, the env var and the fix.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from datetime import datetime, timezone
from typing import TextIO

from ..errors import ConfigError

__all__ = [
    "rfc3339_now",
    "logfmt_value",
    "LogfmtWriter",
    "parse_addr",
    "ensure_addr",
    "ensure_float",
    "ensure_int",
    "env_default",
    "parse_go_duration",
    "format_go_duration",
    "parse_bool",
    "add_env_flag",
]


def rfc3339_now() -> str:
    """Return the current UTC time as RFC3339 with microseconds and a `Z`, as Istio logs it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_BARE = re.compile(r"^[A-Za-z0-9_.:/?&%@+,\-]+$")


def logfmt_value(value: object) -> str:
    """Render one logfmt value: bare when safe, otherwise double-quoted with escapes."""
    text = str(value)
    if text and _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtWriter:
    """Write `ts=... level=... <fields>` lines, one per call, flushed at once.

    A lock keeps lines whole when the event loop and a signal handler both log.
    """

    def __init__(self, stream: TextIO | None = None, **fixed: object) -> None:
        self._stream = stream or sys.stdout
        self._fixed = fixed
        self._lock = threading.Lock()

    def __call__(self, event: str, level: str = "info", **fields: object) -> None:
        parts = [f"ts={rfc3339_now()}", f"level={level}"]
        parts += [f"{k}={logfmt_value(v)}" for k, v in self._fixed.items()]
        parts.append(f"event={logfmt_value(event)}")
        parts += [f"{k}={logfmt_value(v)}" for k, v in fields.items()]
        with self._lock:
            self._stream.write(" ".join(parts) + "\n")
            self._stream.flush()


def parse_addr(text: str, *, what: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv4 or `[v6]`) into host and port.

    Parameters:
        text: the address as given.
        what: the flag and env var it came from, for the error message.

    Returns:
        (host, port).
    """
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            f"{what}: {text!r} is not HOST:PORT; give e.g. 127.0.0.1:8080 (port 1-65535)"
        )
    return host, int(port_text)


def ensure_addr(text: str, *, what: str) -> str:
    """Validate `HOST:PORT` and return it unchanged (argparse `type=` helper)."""
    parse_addr(text, what=what)
    return text


def ensure_float(text: str | float, *, what: str, minimum: float = 0.0,
                 maximum: float | None = None, inclusive_min: bool = True) -> float:
    """Parse a number and check its range; the error names `what` and the allowed range."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {text!r} is not a number; give seconds, e.g. 1 or 0.5") from None
    low_ok = value >= minimum if inclusive_min else value > minimum
    if not low_ok or (maximum is not None and value > maximum) or value != value:
        bound = f"{'>=' if inclusive_min else '>'} {minimum:g}"
        if maximum is not None:
            bound += f" and <= {maximum:g}"
        raise ConfigError(f"{what}: {text!r} is out of range; it must be {bound}")
    return value


def ensure_int(text: str | int, *, what: str, minimum: int = 0) -> int:
    """Parse an integer >= `minimum`; the error names `what`."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {text!r} is not a whole number; give e.g. 2") from None
    if value < minimum:
        raise ConfigError(f"{what}: {value} is out of range; it must be >= {minimum}")
    return value


def env_default(name: str, default: str) -> str:
    """The env var's value when set and non-empty, else `default` (flags override both)."""
    value = os.environ.get(name, "")
    return value if value.strip() else default


def parse_bool(text: str, *, what: str) -> bool:
    """Parse `true/false/1/0/yes/no` the way Istio's env flags accept them."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {text!r} is not a boolean; give true or false")


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str, *, what: str) -> float:
    """Parse a Go duration string as Istio settings use them (`5s`, `1m30s`, `500ms`).

    Returns:
        Seconds as a float.
    """
    s = text.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if not m:
            raise ConfigError(
                f"{what}: {text!r} is not a duration; give a Go duration such as 5s, 500ms or 1m30s"
            )
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ConfigError(f"{what}: empty duration; give e.g. 5s")
    return total


def format_go_duration(seconds: float) -> str:
    """Format seconds as Go's time.Duration.String() does for the values we use (`5s`, `1m30s`)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    out += f"{round(secs, 9):g}s"
    return out


def add_env_flag(parser: argparse.ArgumentParser, flag: str, env: str, default: str,
                 help: str) -> None:
    """Add `flag` whose default comes from `env` (then `default`); the help names the env var."""
    parser.add_argument(flag, default=env_default(env, default),
                        help=f"{help} (env {env}, default {default})")
