"""Where clients connect, as curl's `--resolve example.local:443:<balancer>` does: the balancer's
address, `Host: example.local`, SNI `example.local`, verified against the lab's private CA."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import ConfigError
from ..targets.base import Frontend

__all__ = ["Pin"]

_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Pin:
    """Where and as whom to connect: curl's `--resolve`, as an httpx client needs it.

    Parameters:
        host, port: the balancer's address.
        sni: the virtual host (`example.local`): Host header, SNI and certificate name.
        ca: the private CA file.
    """

    host: str
    port: int
    sni: str
    ca: Path

    @classmethod
    def from_frontend(cls, frontend: Frontend) -> Pin:
        return cls(frontend.host, frontend.port, frontend.sni, Path(frontend.ca))

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh context per client: httpcore sets ALPN on the context it is given, so a
        shared one would let an HTTP/2 client change what an HTTP/1.1 client offers."""
        if not self.ca.is_file():
            raise ConfigError(f"CA file {self.ca} does not exist: run `gtnb certs` to create it")
        ctx = _StrictContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
        ctx.load_verify_locations(cafile=str(self.ca))
        return ctx

    def client(self, *, http2: bool = False, keepalive: bool = True, timeout_s: float = 30.0) -> httpx.Client:
        """An httpx client pinned to the balancer.

        Parameters:
            http2: offer h2 in ALPN (HAProxy then speaks HTTP/2); else HTTP/1.1 only.
            keepalive: reuse connections; False opens a new connection per request, as a
                curl loop does.
            timeout_s: read timeout (the longest wait for the next bytes).
        """
        return httpx.Client(
            base_url=self.base_url,
            verify=self.ssl_context(),
            http1=True,
            http2=http2,
            timeout=httpx.Timeout(timeout_s, connect=_CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_keepalive_connections=None if keepalive else 0),
            headers={"host": self.sni},
            trust_env=False,  # a proxy from the environment must never sit between us and the lab
        )

    def extensions(self, trace: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
        ext: dict[str, Any] = {"sni_hostname": self.sni}
        if trace is not None:
            ext["trace"] = trace
        return ext


class _StrictContext(ssl.SSLContext):
    """Surfaces a peer that vanished without TLS close_notify instead of reading it as a clean
    end: Python's default (`suppress_ragged_eofs`) turns a TCP reset into b"", so a reset would
    look like an empty reply. Measured here: a reset raises a bare SSLEOFError, a FIN without
    close_notify one whose reason is UNEXPECTED_EOF_WHILE_READING."""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        kwargs["suppress_ragged_eofs"] = False
        return super().wrap_socket(sock, *args, **kwargs)
