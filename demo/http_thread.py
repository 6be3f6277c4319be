"""Serve a WSGI app from a background thread on loopback (for the demo's fakes)."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = ["ServerThread"]


class _QuietHandler(WSGIRequestHandler):
    """No access log: the demo's narration is the log."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ServerThread:
    """A threaded werkzeug server on 127.0.0.1 and an ephemeral port, stopped by ``stop``."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
