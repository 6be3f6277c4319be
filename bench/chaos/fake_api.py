"""The external API the chaos suite's integration calls, with fault modes.

It holds the truth the cache must end equal to (items per account, each with a version the
load bumps before it sends the webhook naming it) and the effects log: one line per
``POST /effects``, which the handler sends once per execution. A fault mode answers every
request with the configured status before looking at it (a 429 carries ``Retry-After``), so a
refused ``POST /effects`` never logs an effect: what the log holds is what ran.

Runs in the driver's process, on a daemon thread; the driver reads its state directly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from bench.chaos.quiet_server import QuietServer

__all__ = ["Effect", "FakeAPI"]


@dataclass(frozen=True, slots=True)
class Effect:
    delivery: str
    account: str
    at: float  # time.time()


class FakeAPI:
    """Items, the effects log and the current fault (``fail_with``), behind a threaded server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.effects: list[Effect] = []
        #: Status every request gets while set (429 or a 5xx); None answers normally.
        self.fault_status: int | None = None
        self.faulted_requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the workers' sessions expect

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                api._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                api._handle(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what the load and the checks use ----------------------------------------------------

    def bump(self, account: str, item_id: str) -> int:
        """A new version of an item (created at version 1); the version."""
        with self._lock:
            items = self.items.setdefault(account, {})
            version = items.get(item_id, {}).get("version", 0) + 1
            items[item_id] = {"id": item_id, "account": account, "version": version}
            return int(version)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            return {account: dict(items) for account, items in self.items.items()}

    def effects_copy(self) -> list[Effect]:
        with self._lock:
            return list(self.effects)

    def fail_with(self, status: int | None) -> None:
        self.fault_status = status

    # -- serving --------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        status = self.fault_status
        if status is not None:
            with self._lock:
                self.faulted_requests += 1
            _answer(request, status, {"error": "chaos"}, retry_after=1 if status == 429 else None)
            return
        parts = request.path.split("?")[0].strip("/").split("/")
        if method == "POST" and parts == ["effects"]:
            body = json.loads(raw)
            with self._lock:
                effect = Effect(str(body["delivery"]), str(body["account"]), time.time())
                self.effects.append(effect)
            _answer(request, 200, {"ok": True})
        elif method == "GET" and len(parts) == 3 and parts[0] == "accounts" and parts[2] == "items":
            with self._lock:
                items = list(self.items.get(parts[1], {}).values())
            _answer(request, 200, {"items": items})
        elif method == "GET" and len(parts) == 4 and parts[0] == "accounts" and parts[2] == "items":
            with self._lock:
                item = self.items.get(parts[1], {}).get(parts[3])
            if item is None:
                _answer(request, 404, {"error": f"no item {parts[3]!r} in {parts[1]!r}"})
            else:
                _answer(request, 200, item)
        else:
            _answer(request, 404, {"error": f"no route {method} {request.path!r}"})


def _answer(
    request: BaseHTTPRequestHandler, status: int, body: Any, *, retry_after: int | None = None
) -> None:
    data = json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    if retry_after is not None:
        request.send_header("Retry-After", str(retry_after))
    request.end_headers()
    request.wfile.write(data)
