"""The `${GTNB_*}` values that render haproxy/haproxy-<mode>.cfg for one local lab."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .addresses import API_PORT, HAPROXY_CONTROL_PORT, HAPROXY_HTTPS_PORT, LabAddresses, lock_dir

__all__ = ["haproxy_values", "lab_certs"]


def lab_certs() -> tuple[Path, Path]:
    """(ca.pem, example.local.pem), made once. Serialized across processes: labs starting side
    by side must not both write a new CA and leave a certificate signed by the other one."""
    from ...certs import ensure_certs

    fd = os.open(lock_dir() / "certs.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return ensure_certs()
    finally:
        os.close(fd)


def haproxy_values(addresses: LabAddresses, state_dir: Path) -> dict[str, str]:
    """The values for gtnb.haproxy_config.render_haproxy_config (names in docs/contracts.md).

    Parameters:
        addresses: the lab's addresses.
        state_dir: the lab's state directory (the admin socket lives in it).

    Returns:
        One string per `${GTNB_*}` variable of the committed configs.
    """
    _, pem = lab_certs()
    nodes = addresses.nodes()
    return {
        "GTNB_FRONTEND_ADDR": addresses.haproxy,
        "GTNB_FRONTEND_PORT": str(HAPROXY_HTTPS_PORT),
        "GTNB_API_PORT": str(HAPROXY_CONTROL_PORT),
        "GTNB_APISERVER": f"{addresses.api}:{API_PORT}",
        "GTNB_CERT": str(pem),
        "GTNB_ADMIN_SOCKET": str(state_dir / "haproxy" / "admin.sock"),
        # HAProxy runs in the foreground (-db): its log goes to stdout, into haproxy.log.
        "GTNB_LOG_TARGET": "stdout",
        "GTNB_LOG_FORMAT": "iso",
        "GTNB_MASTER1_ADDR": nodes["master1"],
        "GTNB_WORKER1_ADDR": nodes["worker1"],
        "GTNB_WORKER2_ADDR": nodes["worker2"],
    }
