"""The app's webhook endpoint as the chaos suite sees it, with fault modes.

Modes: ``ok`` (200), ``503``, ``429`` (with ``Retry-After``) and ``refuse`` (the listening
socket is closed, so a connect is refused; ``ok`` binds the same port again). Every request
that got an answer is kept with the Standard Webhooks ``webhook-id`` hooksync sent, the
status it got and its stream (connection, sync, model), which is what the duplicate and
order checks count.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from bench.chaos.quiet_server import QuietServer

__all__ = ["AppReceiver", "Delivery"]

#: Seconds the app asks hooksync to wait when it answers 429.
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Delivery:
    webhook_id: str
    stream: tuple[str, str, str]  # (connectionId, syncName, model)
    status: int
    signature_ok: bool
    at: float  # time.time()


class AppReceiver:
    def __init__(self, signing_key: str) -> None:
        self.signing_key = signing_key.encode()
        self.mode = "ok"
        self.received: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}/hooks/hooksync"

    def _listen(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver._receive(self)

            def log_message(self, *args: object) -> None:
                pass

        server = QuietServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set_mode(self, mode: str) -> None:
        """``ok``, ``503``, ``429`` or ``refuse``."""
        if mode not in {"ok", "503", "429", "refuse"}:
            raise ValueError(f"mode must be ok, 503, 429 or refuse, got {mode!r}")
        if mode == "refuse":
            self._close()
        elif self._server is None:
            self._listen()
        self.mode = mode

    def stop(self) -> None:
        self._close()

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self.received)

    def _receive(self, request: BaseHTTPRequestHandler) -> None:
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        mode = self.mode  # read once: the driver may switch it meanwhile
        status = 200 if mode in {"ok", "refuse"} else int(mode)
        expected = hmac.new(self.signing_key, raw, hashlib.sha256).hexdigest()
        given = request.headers.get("X-Nango-Hmac-Sha256", "")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        stream = (
            str(body.get("connectionId")),
            str(body.get("syncName")),
            str(body.get("model")),
        )
        item = Delivery(
            webhook_id=request.headers.get("webhook-id", ""),
            stream=stream,
            status=status,
            signature_ok=hmac.compare_digest(expected, given),
            at=time.time(),
        )
        with self._lock:
            self.received.append(item)
        request.send_response(status)
        if status == 429:
            request.send_header("Retry-After", str(RETRY_AFTER_SECONDS))
        request.send_header("Content-Length", "0")
        request.end_headers()
