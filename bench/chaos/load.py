"""The signed webhook load, sent as a provider sends: what got no answer is sent again.

A dispatcher releases webhook ``i`` at ``start + i / rate`` to a pool of sender threads. For
each one the sender first bumps the item's version at the fake API (the change the webhook
announces), then POSTs the signed webhook to one of the webs. No answer (refused, reset,
timed out), a 5xx or a 429 is retried, with the *same* delivery id and body, against the
other web after a short back-off, until a 202 or ``GIVE_UP_SECONDS``; so hooksync sees
the duplicates a real provider's retries produce. A 202 is an acknowledgement: hooksync has
promised to process the webhook, and the checks hold it to that.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Load", "LoadStats"]

WEBHOOK_PATH = "/webhook/chaos"
#: A webhook still without a 202 after this long is given up (reported, not a loss).
GIVE_UP_SECONDS = 120.0
#: Items per account the webhooks change (few, so one item gets many versions).
ITEMS_PER_ACCOUNT = 5
SENDERS = 24


@dataclass
class LoadStats:
    #: delivery id -> (account, time.time() of its 202)
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)
    given_up: list[str] = field(default_factory=list)
    #: Answers other than 202, and "no answer", by kind.
    answers: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    sent: int = 0


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Load:
    def __init__(
        self,
        *,
        ports: Sequence[int],
        secret: str,
        accounts: Sequence[str],
        bump: Callable[[str, str], int],
        rate: float,
        nonce: str,
    ) -> None:
        self.ports = tuple(ports)
        self.secret = secret.encode()
        self.accounts = tuple(accounts)
        self.bump = bump
        self.rate = rate
        self.nonce = nonce
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._random = random.Random(nonce)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._dispatch, daemon=True)]
        self._threads += [threading.Thread(target=self._send, daemon=True) for _ in range(SENDERS)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """No new webhook; those in flight are retried until acknowledged or given up."""
        self._stop.set()
        for _ in range(SENDERS):
            self._queue.put(None)
        for thread in self._threads:
            thread.join(GIVE_UP_SECONDS + 30)

    def acked_until(self, until: float) -> list[str]:
        """Delivery ids acknowledged (202) at or before ``until`` (``time.time()``)."""
        with self._lock:
            return [delivery for delivery, (_a, at) in self.stats.acked.items() if at <= until]

    def _dispatch(self) -> None:
        started = time.monotonic()
        index = 0
        while not self._stop.is_set():
            due = started + index / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            self._queue.put(index)
            index += 1

    def _send(self) -> None:
        connections: dict[int, http.client.HTTPConnection] = {}
        while (index := self._queue.get()) is not None:
            account = self.accounts[index % len(self.accounts)]
            item_id = f"item-{self._random.randrange(ITEMS_PER_ACCOUNT)}"
            delivery = f"{self.nonce}-{index}"
            version = self.bump(account, item_id)
            body = json.dumps(
                {"account": account, "item_id": item_id, "delivery": delivery, "version": version},
                separators=(",", ":"),
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Chaos-Signature": sign(self.secret, body),
                "X-Chaos-Event": "item.updated",
                "X-Chaos-Delivery": delivery,
            }
            with self._lock:
                self.stats.sent += 1
            self._deliver(connections, index, account, delivery, body, headers)

    def _deliver(
        self,
        connections: dict[int, http.client.HTTPConnection],
        index: int,
        account: str,
        delivery: str,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        deadline = time.monotonic() + GIVE_UP_SECONDS
        attempt = 0
        while True:
            port = self.ports[(index + attempt) % len(self.ports)]
            answer = _post(connections, port, body, headers)
            if answer == "202":
                with self._lock:
                    self.stats.acked[delivery] = (account, time.time())
                    self.stats.resent += attempt
                return
            with self._lock:
                self.stats.answers[answer] += 1
            if answer.startswith("4") and answer != "429":
                # Refused for good (a bug in the suite or the receiver): not retried.
                with self._lock:
                    self.stats.given_up.append(delivery)
                return
            attempt += 1
            if time.monotonic() > deadline:
                with self._lock:
                    self.stats.given_up.append(delivery)
                return
            time.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)))


def _post(
    connections: dict[int, http.client.HTTPConnection],
    port: int,
    body: bytes,
    headers: dict[str, str],
) -> str:
    """The status as text, or ``no answer``."""
    connection = connections.get(port)
    if connection is None:
        connection = connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", WEBHOOK_PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException):
        connection.close()
        connections.pop(port, None)
        return "no answer"
