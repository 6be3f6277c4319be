"""The gunicorn worker class of ``hooksync web``: gunicorn's own errors answered as JSON.

gunicorn refuses some requests before the app sees them (a control character in a header:
400; a request line over ``limit_request_line``: 414; …) and renders those itself, as an
HTML page. Every other error of the API is ``{"error": {"code", "message"}}`` with
``application/json`` (``ingress.errors``), and the OpenAPI document promises that shape for
every status, so this worker keeps gunicorn's decisions (status, logging, access log) and
only replaces the page it writes.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

__all__ = ["JsonErrorWorker", "json_error_response"]


class JsonErrorWorker(SyncWorker):
    """``gunicorn.workers.sync.SyncWorker`` whose pre-app error pages are JSON."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        capture = _Capture(client)
        super().handle_error(req, capture, addr, exc)
        status, reason = _status_line(capture.data)
        if status is None:
            return  # nothing was written (the client went away): nothing to replace
        try:
            util.write_nonblock(client, json_error_response(status, reason))
        except Exception:  # noqa: BLE001 - as gunicorn: a gone client is not our error
            self.log.debug("Failed to send error message.")


def json_error_response(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 response with the API's error body, closing the connection.

    The message never repeats the request (it is what could not be parsed).
    """
    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "bad_request"
    if status >= 500:
        message = "internal server error; the details are in the server log"
    else:
        message = f"{reason}: the HTTP server could not accept this request"
    body = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Capture:
    """The client socket, except that what gunicorn writes is kept instead of sent."""

    def __init__(self, client: socket.socket) -> None:
        self._client = client
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # so ``write_nonblock`` does not toggle blocking mode on us

    def sendall(self, data: bytes) -> None:
        self.data += bytes(data)

    def send(self, data: bytes) -> int:
        self.data += bytes(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _status_line(data: bytes) -> tuple[int | None, str]:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n", data)
    if match is None:
        return None, ""
    return int(match.group(1)), match.group(2).decode("latin-1")
