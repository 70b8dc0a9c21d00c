"""Where a local lab lives on loopback: its index N, the 127.N.0.0/24 addresses, and the lock
that keeps two labs (parallel tests) from ever picking the same N.

Linux answers on all of 127.0.0.0/8 without configuration, so each lab gets its own /24 and
every lab can use the same well-known ports (8443, 15021, ...) as the homelab does.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, LabError

__all__ = [
    "NODE_NAMES",
    "INDEX_RANGE",
    "LabAddresses",
    "IndexLock",
    "claim_index",
    "ensure_index",
    "lock_dir",
]

NODE_NAMES: tuple[str, ...] = ("master1", "worker1", "worker2")
INDEX_RANGE = range(100, 200)

HAPROXY_HTTPS_PORT = 8443
HAPROXY_CONTROL_PORT = 6443
API_PORT = 7000
BACKEND_PORT = 8080
# Per IGW pod, bound on its node's address (docs/contracts.md "Local lab addressing").
ENVOY_PORT = 8080
ENVOY_ADMIN_PORT = 15000
AGENT_STATUS_PORT = 15021
HC_PORT = 15080


def ensure_index(index: int) -> int:
    """Return `index` if it is a valid lab index, else raise ConfigError naming the range."""
    if not isinstance(index, int) or index not in INDEX_RANGE:
        raise ConfigError(
            f"lab index {index!r} is outside {INDEX_RANGE.start}..{INDEX_RANGE.stop - 1}: "
            "pick one in that range or leave it unset to take the first free one"
        )
    return index


@dataclass(frozen=True)
class LabAddresses:
    """The addresses and ports of lab number `index` (127.index.0.0/24)."""

    index: int

    def _ip(self, last: int) -> str:
        return f"127.{self.index}.0.{last}"

    @property
    def haproxy(self) -> str:
        return self._ip(1)

    @property
    def api(self) -> str:
        return self._ip(2)

    @property
    def backend(self) -> str:
        return self._ip(10)

    @property
    def api_url(self) -> str:
        return f"http://{self.api}:{API_PORT}"

    @property
    def backend_listen(self) -> str:
        return f"{self.backend}:{BACKEND_PORT}"

    def node(self, name: str) -> str:
        """The address of node `name` (master1 -> .11, worker1 -> .12, worker2 -> .13)."""
        if name not in NODE_NAMES:
            raise ConfigError(f"node {name!r} is not one of {', '.join(NODE_NAMES)}")
        return self._ip(11 + NODE_NAMES.index(name))

    def nodes(self) -> dict[str, str]:
        return {name: self.node(name) for name in NODE_NAMES}

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "haproxy": self.haproxy,
            "https_port": HAPROXY_HTTPS_PORT,
            "control_port": HAPROXY_CONTROL_PORT,
            "api": self.api_url,
            "backend": self.backend_listen,
            "nodes": self.nodes(),
        }


def lock_dir() -> Path:
    # Machine-wide, not per state dir: two labs in two state dirs must still not share an N.
    path = Path(tempfile.gettempdir()) / "gtnb-lab-index"
    path.mkdir(mode=0o777, exist_ok=True)
    return path


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class IndexLock:
    """An exclusive flock on one lab index, held for as long as the lab runs.

    flock locks die with the process that holds them, so a SIGKILLed supervisor frees its index
    without any clean-up."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _try_lock(index: int) -> IndexLock | None:
    fd = os.open(lock_dir() / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return IndexLock(index, fd)


def claim_index(index: int | None = None) -> IndexLock:
    """Lock a lab index: `index` if given, else the first free one in 100..199.

    Free means: no other lab holds its lock and nothing else listens on its HAProxy or API
    address (a stray process from outside gtnb).

    Returns:
        The held lock; keep it for the lab's lifetime.
    """
    candidates = [ensure_index(index)] if index is not None else list(INDEX_RANGE)
    for n in candidates:
        lock = _try_lock(n)
        if lock is None:
            continue
        addrs = LabAddresses(n)
        if _port_free(addrs.haproxy, HAPROXY_HTTPS_PORT) and _port_free(addrs.api, API_PORT):
            return lock
        lock.release()
    if index is not None:
        raise LabError(
            f"lab index {index} is in use (another lab holds it or its ports are taken): "
            "stop that lab or leave the index unset"
        )
    raise LabError(
        f"no free lab index in {INDEX_RANGE.start}..{INDEX_RANGE.stop - 1}: "
        "stop some labs (`gtnb lab down --state-dir ...`)"
    )
