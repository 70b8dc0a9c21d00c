"""Name what went wrong with a request and the curl exit code a seed user would have seen.

Facts measured here (Python 3.11, OpenSSL 3, httpx 0.28 / httpcore 1.0): with
`suppress_ragged_eofs=False` a TCP reset surfaces as a bare SSLEOFError and a FIN without TLS
close_notify as one whose reason is UNEXPECTED_EOF_WHILE_READING; an HTTP/2 RST_STREAM arrives
as httpcore's RemoteProtocolError carrying the h2 StreamReset event.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import h2.events
import httpx

__all__ = ["classify"]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (httpx wraps httpcore, which wraps the socket's error)."""
    seen: BaseException | None = exc
    depth = 0
    while seen is not None and depth < 10:
        yield seen
        seen, depth = seen.__cause__ or seen.__context__, depth + 1


def _h2_event(exc: BaseException) -> Any:
    """The h2 event behind an httpx error (httpcore raises RemoteProtocolError(event))."""
    for err in _chain(exc):
        for arg in err.args:
            if isinstance(arg, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                return arg
    return None


def _ssl_eof(exc: BaseException) -> ssl.SSLEOFError | None:
    return next((e for e in _chain(exc) if isinstance(e, ssl.SSLEOFError)), None)


def _code_name(code: Any) -> str:
    return getattr(code, "name", str(code))


def classify(exc: BaseException, *, http_version: str, got_headers: bool) -> tuple[str, int, str]:
    """Name what went wrong and the curl exit code a seed user would have seen.

    Parameters:
        exc: the exception the request raised.
        http_version: `HTTP/1.1` or `HTTP/2` (what was negotiated, or offered).
        got_headers: whether the response headers had arrived.

    Returns:
        (error kind, curl exit code, detail) with kinds from docs/contracts.md.
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", 28, f"{type(exc).__name__}: operation timed out"
    if isinstance(exc, httpx.ConnectError):
        # A reset or an SSL error during the handshake is curl's 35, a refused connect its 7.
        if any(isinstance(e, (ssl.SSLError, ConnectionResetError)) for e in _chain(exc)):
            return "connect_failed", 35, f"TLS handshake failed: {text}"
        return "connect_failed", 7, f"Failed to connect: {text}"
    event = _h2_event(exc)
    if isinstance(event, h2.events.StreamReset):
        return "stream_reset", 92, _code_name(event.error_code)
    if isinstance(event, h2.events.ConnectionTerminated):
        # GOAWAY: curl reports it as an HTTP/2 framing-layer error.
        return "stream_reset", 16, f"GOAWAY {_code_name(event.error_code)}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending a response" in text or (not got_headers and "disconnected" in text):
            return "connection_reset", 52, "Empty reply from server"
        if "complete message body" in text or got_headers:
            if http_version == "HTTP/2":
                return "truncated", 92, f"HTTP/2 stream was not closed cleanly: {text}"
            return "truncated", 18, f"transfer closed with outstanding read data remaining: {text}"
        return "connection_reset", 56, text
    eof = _ssl_eof(exc)
    if eof is not None and "UNEXPECTED_EOF" in str(eof):
        # The peer closed (FIN) without a TLS close_notify.
        if not got_headers:
            return "connection_reset", 52, "Empty reply from server (closed without TLS close_notify)"
        if http_version == "HTTP/2":
            return "truncated", 92, "HTTP/2 stream was not closed cleanly: connection closed"
        return "truncated", 18, "transfer closed with outstanding read data remaining"
    if isinstance(exc, httpx.WriteError):
        return "connection_reset", 55, f"Send failure: {text}"
    if isinstance(exc, (httpx.ReadError, httpx.TransportError)):
        return "connection_reset", 56, f"Recv failure: {text}"
    return "connection_reset", 56, f"{type(exc).__name__}: {text}"
