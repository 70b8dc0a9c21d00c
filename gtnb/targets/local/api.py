"""The supervisor's small JSON HTTP API: the local lab's "kube-apiserver".

    GET  /healthz                   200 once the lab serves
    GET  /status                    lab state, addresses, pids, rollout status
    GET  /pods                      every IGW pod (the fields of gtnb.targets.base.Pod)
    GET  /nodes                     the three nodes, with whether they are schedulable
    GET  /rollout                   the Deployment's rollout status
    GET  /versions                  versions for run.json
    POST /apply     {"manifest": "<yaml text>", "source": "<path, for messages>"}
    POST /scale     {"replicas": N}
    POST /delete    {"pod": NAME, "grace_period_s": S}
    POST /restart   {}             `kubectl rollout restart`
    POST /shutdown  {}             stop the lab (lab_down)

Errors answer `{"error": "<message>", "kind": "<gtnb.errors class>"}` with 400 (bad input),
404 (no such pod or path) or 500, so the client re-raises the same class.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ... import errors

__all__ = ["ApiServer", "Handler"]

log = logging.getLogger("gtnb.lab")

# route -> callable(body) -> JSON-able result
Handler = Callable[[dict[str, Any]], Any]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ApiServer:
    """Serves `routes` ({"GET /pods": handler, ...}) on host:port in a background thread."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        routes_ = routes

        class _Req(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # supervisor.log narrates actions, not every poll

            def _answer(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                handler = routes_.get(f"{method} {path}")
                if handler is None:
                    self._answer(404, {"error": f"no route {method} {path}", "kind": "LabError"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                    if not isinstance(body, dict):
                        raise errors.ConfigError("request body must be a JSON object")
                    self._answer(200, handler(body))
                except errors.GtnbError as exc:
                    status = 404 if "does not exist" in str(exc) else 400
                    self._answer(status, {"error": str(exc), "kind": type(exc).__name__})
                except Exception as exc:  # reported to the caller and logged, never swallowed
                    log.exception("api: %s %s failed", method, path)
                    self._answer(500, {"error": f"{type(exc).__name__}: {exc}", "kind": "LabError"})

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        self._server = _Server((host, port), _Req)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="api", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
