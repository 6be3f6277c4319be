"""The app side of ``bench.e2e``: a receiver for hooksync's completion webhooks, in its own
process so that neither the load generator nor the bench's bookkeeping shares its GIL.

    python -m bench.e2e_sink --port PORT --out FILE

It answers every ``POST`` with an empty 200 over HTTP/1.1 (keep-alive when the sender wants
it) and appends one tab-separated line per notification to ``FILE``::

    received_at  connectionId  syncType  success  added+updated  webhook-id  signature_ok

``received_at`` is ``time.monotonic()`` (``CLOCK_MONOTONIC``, comparable across processes on
Linux) taken as soon as the request's headers are parsed. The signature check is one HMAC of
a small body: cheap, and a mismatch would mean the bench reads the wrong stack.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

__all__ = ["SIGNING_KEY_ENV", "Note", "parse_line"]

#: Where the sink finds hooksync's signing key (kept off the command line).
SIGNING_KEY_ENV = "BENCH_SINK_SIGNING_KEY"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Sink

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        received_at = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.record(received_at, raw, self.headers)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Silent: a line per request would cost more than the request."""


class _Sink(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port: int, out: IO[str], signing_key: bytes) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.out = out
        self.signing_key = signing_key
        self.lock = threading.Lock()

    def record(self, received_at: float, raw: bytes, headers: Any) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        results = body.get("responseResults") or {}
        changed = int(results.get("added", 0)) + int(results.get("updated", 0))
        expected = hmac.new(self.signing_key, raw, hashlib.sha256).hexdigest()
        signature_ok = hmac.compare_digest(expected, headers.get("X-Nango-Hmac-Sha256", ""))
        fields = (
            f"{received_at:.6f}",
            str(body.get("connectionId", "")),
            str(body.get("syncType", "")),
            "1" if body.get("success") else "0",
            str(changed),
            headers.get("webhook-id", ""),
            "1" if signature_ok else "0",
        )
        with self.lock:
            self.out.write("\t".join(fields) + "\n")
            self.out.flush()


@dataclass(frozen=True, slots=True)
class Note:
    """One notification as the sink recorded it."""

    received_at: float
    connection_id: str
    sync_type: str
    success: bool
    #: ``added + updated``: how many of the connection's webhooks it covers.
    changed: int
    webhook_id: str


def parse_line(line: str) -> tuple[Note, bool]:
    """A ``FILE`` line as a ``Note`` and whether its signature checked out."""
    at, connection_id, sync_type, success, changed, webhook_id, signature_ok = line.split("\t")
    note = Note(float(at), connection_id, sync_type, success == "1", int(changed), webhook_id)
    return note, signature_ok.strip() == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True, help="file to append notifications to")
    args = parser.parse_args()
    signing_key = os.environ[SIGNING_KEY_ENV].encode()
    with open(args.out, "a", encoding="utf-8") as out:
        _Sink(args.port, out, signing_key).serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
