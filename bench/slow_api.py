"""A slow external API for the scale-out benchmark: every request waits, then answers ``{}``.

    python -m bench.slow_api --port PORT [--delay 0.05]

Threaded (one thread per request), so the delay is pure waiting: N requests in flight take
``delay`` together, never ``N * delay``, and the API is never what bounds the workers.
"""

from __future__ import annotations

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["main"]


class _Handler(BaseHTTPRequestHandler):
    delay = 0.05
    protocol_version = "HTTP/1.1"  # keep-alive: the worker's session reuses its connection

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        time.sleep(self.delay)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: one line per request would cost more than the request."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_api", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per request")
    args = parser.parse_args(argv)
    _Handler.delay = args.delay
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
