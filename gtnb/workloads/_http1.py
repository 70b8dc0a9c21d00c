"""A tiny HTTP/1.1 server (asyncio + h11) for the hc sidecar.

Why not hypercorn here: hypercorn sends status lines without a reason phrase (`HTTP/1.1 503 `),
and HAProxy quotes the phrase in its DOWN line (`code: 503, info: "Service Unavailable"`), the
form real homelab logs show. The hc serves three tiny GETs, so a few lines of h11 do it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import h11

__all__ = ["Handler", "Http1Server"]

# (method, path) -> (status, body, content type)
Handler = Callable[[str, str], Awaitable[tuple[int, str, str]]]

MAX_REQUEST_BYTES = 64 * 1024  # health checks and hooks send a few hundred bytes


class Http1Server:
    """Serve `handler` on HOST:PORT until `close()`; keep-alive honoured, bodies ignored."""

    def __init__(self, handler: Handler, host: str, port: int) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop listening; give open requests `grace_s` to finish, then drop the connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._connections:
            _, pending = await asyncio.wait(self._connections, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass  # the peer went away or spoke nonsense: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        while True:
            request: h11.Request | None = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)  # b"" = EOF, h11 turns it into ConnectionClosed
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    request = event
                if isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            status, body, content_type = await self.handler(request.method.decode(), request.target.decode())
            data = body.encode()
            headers = [("content-type", content_type), ("content-length", str(len(data)))]
            out = conn.send(h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase))
            out += conn.send(h11.Data(data=data)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            writer.write(out or b"")
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
