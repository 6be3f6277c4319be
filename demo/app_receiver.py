"""The app side: receives hooksync's sync-completion webhooks and checks their signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, request

__all__ = ["AppReceiver", "Received"]


@dataclass(frozen=True)
class Received:
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    received_at: float  # time.monotonic()
    signature_ok: bool
    answered: int = 200  # the status this receiver answered (a non-2xx makes hooksync retry)


class AppReceiver:
    """Collects notifications; ``wait_for(predicate)`` blocks until a matching one arrives."""

    def __init__(self, signing_key: str, *, status: int = 200) -> None:
        self.signing_key = signing_key
        self.status = status
        self.received: list[Received] = []
        self._queue: queue.Queue[Received] = queue.Queue()
        self._lock = threading.Lock()
        self.app = Flask("app_receiver")
        self.app.post("/hooks/hooksync")(self._receive)

    def _receive(self) -> tuple[str, int]:
        status = self.status  # read once: a test may change it while a delivery arrives
        raw = request.get_data()
        expected = hmac.new(self.signing_key.encode(), raw, hashlib.sha256).hexdigest()
        given = request.headers.get("X-Nango-Hmac-Sha256", "")
        item = Received(
            body=json.loads(raw),
            raw=raw,
            headers={k.lower(): v for k, v in request.headers.items()},
            received_at=time.monotonic(),
            signature_ok=hmac.compare_digest(expected, given),
            answered=status,
        )
        with self._lock:
            self.received.append(item)
        self._queue.put(item)
        return ("", status)

    def next(self, timeout: float) -> Received | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def mark(self) -> int:
        """A position in the list of received notifications, for ``wait_for(after=...)``."""
        with self._lock:
            return len(self.received)

    def wait_for(self, predicate: Any, timeout: float = 30.0, *, after: int = 0) -> Received:
        """Return the first notification received at or after position ``after`` (see
        ``mark``), already here or still to come, whose body matches ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            with self._lock:
                items = self.received[seen:]
                seen += len(items)
            for item in items:
                if predicate(item.body):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching notification within {timeout}s")
            self.next(min(remaining, 0.2))
