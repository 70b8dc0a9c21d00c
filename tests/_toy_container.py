"""A toy container for the kubelet and controller tests: a real process with an HTTP server.

    python tests/_toy_container.py --listen HOST:PORT [--prestop-s S] [--ignore-sigterm]

GET /healthz answers 200; GET /prestop sleeps S seconds then answers 200. Every step is printed
(`prestop start`, `prestop done`, `sigterm`, `exit`) so tests read the order from the log.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--prestop-s", type=float, default=0.0)
    p.add_argument("--ignore-sigterm", action="store_true")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    stop = threading.Event()

    def say(text: str) -> None:
        print(text, flush=True)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/prestop":
                say("prestop start")
                time.sleep(args.prestop_s)
                say("prestop done")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    def on_term(signum: int, frame: object) -> None:
        say("sigterm")
        if not args.ignore_sigterm:
            stop.set()

    signal.signal(signal.SIGTERM, on_term)
    server = ThreadingHTTPServer((host, int(port)), H)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    say(f"listening {args.listen}")
    while not stop.wait(0.1):
        pass
    say("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
