"""A threaded HTTP server that keeps quiet about clients that went away.

The fakes' clients are the workers the driver kills: a connection reset mid-request is the
point of the exercise, not a traceback worth printing.
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["QuietServer"]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass
