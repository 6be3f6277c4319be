"""The open-loop load generator of ``bench.e2e``, in its own process.

One dispatcher thread keeps an absolute schedule: webhook ``i`` is due at ``start + i / rate``
(when the rate is changed mid-plan, a new segment starts at the last due time). At each due
time it hands the webhook to an idle sender thread, so a slow answer never delays the
webhooks after it: it only occupies one of ``SENDERS`` threads. Each sender records the time
it actually started sending (``time.monotonic()``, comparable with the sink's), the time the
answer came and the status. Bodies and signatures are built before the clock starts, so the
send path is one ``http.client`` request. What shows the generator kept up is reported with
every phase: achieved vs offered rate, how late sends were, CPU time per request, and how
many senders were ever busy at once (all of them busy = the receiver was pushing back).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["LoadGenerator", "LoadResult", "Plan", "Sent", "build_webhook", "post_webhook"]

#: Sender threads. Each holds at most one request in flight; 128 cover 1,000 webhooks/s at
#: 128 ms per answer. (gunicorn's sync workers close every connection after the answer, so
#: each request reconnects; on loopback that is tens of microseconds.)
SENDERS = 128

#: Where the bench integration's webhooks go (bench/integration/nango.yaml).
WEBHOOK_PATH = "/webhook/bench"

#: From the end of the set-up (bodies built, threads started) to the first due time.
_LEAD_SECONDS = 0.2


@dataclass(frozen=True)
class Plan:
    """What to send: at most ``count`` webhooks starting at ``rate`` per second (the rate can
    be changed while it runs), webhook ``i`` to ``accounts[i % len(accounts)]``, delivery and
    item ids ``<nonce>-<phase>-<i>``."""

    phase: str
    rate: float
    count: int
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sent:
    """One webhook sent: its schedule, when it went, when the answer came, the status
    (``-1`` for a network error)."""

    index: int
    account: str
    scheduled: float
    sent_at: float
    acked_at: float
    status: int


@dataclass
class LoadResult:
    phase: str
    sent: list[Sent]
    #: How many the plan had (more than were sent when it was stopped).
    planned: int
    cpu_seconds: float
    senders: int
    max_busy: int
    errors: list[str] = field(default_factory=list)


def build_webhook(secret: bytes, account: str, webhook_id: str, seq: int) -> tuple[bytes, dict]:
    """The body and headers of one signed bench webhook (bench/integration/nango.yaml)."""
    body = json.dumps(
        {"account": account, "item_id": webhook_id, "seq": seq, "sent_at": time.time()},
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Bench-Signature": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "X-Bench-Event": "item.created",
        "X-Bench-Delivery": webhook_id,
    }
    return body, headers


def post_webhook(
    connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]
) -> tuple[float, int]:
    """POST one webhook; ``(monotonic time the send started, status)``. A network error closes
    the connection (the next request reconnects) and is raised."""
    sent_at = time.monotonic()
    try:
        connection.request("POST", WEBHOOK_PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        connection.close()
        raise
    return sent_at, response.status


class LoadGenerator:
    """A generator process: ``start(plan)``, then ``result()`` once the plan is sent or after
    ``stop()``. While it runs, ``sent_count`` (webhooks handed to a sender) is readable and
    ``set_rate`` changes the pace from the next webhook on."""

    def __init__(
        self, host: str, port: int, secret: str, nonce: str, *, senders: int = SENDERS
    ) -> None:
        self.senders = senders
        context = multiprocessing.get_context("spawn")
        self._sent = context.Value("q", 0)
        self._rate = context.Value("d", 1.0)
        self._stop = context.Event()
        self._pipe, child = context.Pipe()
        self.process = context.Process(
            target=_serve,
            args=(child, host, port, secret, nonce, senders, self._sent, self._rate, self._stop),
            name="bench-load",
            daemon=True,
        )
        self.process.start()

    @property
    def sent_count(self) -> int:
        return int(self._sent.value)

    def start(self, plan: Plan) -> None:
        self._stop.clear()
        self._sent.value = 0
        self._rate.value = plan.rate
        self._pipe.send(plan)

    def set_rate(self, rate: float) -> None:
        self._rate.value = rate

    def is_done(self) -> bool:
        return bool(self._pipe.poll())

    def result(self) -> LoadResult:
        result: LoadResult = self._pipe.recv()
        return result

    def stop(self) -> None:
        """Send nothing more in the current plan (webhooks already in flight complete)."""
        self._stop.set()

    def close(self) -> None:
        if self.process.is_alive():
            self._pipe.send(None)
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _serve(
    pipe: Connection,
    host: str,
    port: int,
    secret: str,
    nonce: str,
    senders: int,
    sent: Any,
    rate: Any,
    stop: Any,
) -> None:
    while True:
        plan = pipe.recv()
        if plan is None:
            return
        pipe.send(_run(plan, host, port, secret.encode(), nonce, senders, sent, rate, stop))


def _run(
    plan: Plan,
    host: str,
    port: int,
    secret: bytes,
    nonce: str,
    senders: int,
    sent: Any,
    rate: Any,
    stop: Any,
) -> LoadResult:
    accounts = plan.accounts
    webhooks = [
        build_webhook(secret, accounts[i % len(accounts)], f"{nonce}-{plan.phase}-{i}", i)
        for i in range(plan.count)
    ]
    results: list[Sent | None] = [None] * plan.count
    errors: list[str] = []
    due: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    lock = threading.Lock()
    busy = max_busy = 0

    def send_loop() -> None:
        nonlocal busy, max_busy
        connection = http.client.HTTPConnection(host, port, timeout=30)
        while (item := due.get()) is not None:
            i, scheduled = item
            with lock:
                busy += 1
                max_busy = max(max_busy, busy)
            body, headers = webhooks[i]
            try:
                sent_at, status = post_webhook(connection, body, headers)
            except (OSError, http.client.HTTPException) as error:
                sent_at, status = scheduled, -1
                if len(errors) < 5:
                    errors.append(f"{type(error).__name__}: {error}")
            acked_at = time.monotonic()
            with lock:
                busy -= 1
            results[i] = Sent(i, accounts[i % len(accounts)], scheduled, sent_at, acked_at, status)
        connection.close()

    threads = [threading.Thread(target=send_loop, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    # CPU from here on: the send path only (bodies and signatures are built above).
    cpu_before = time.process_time()
    start = time.monotonic() + _LEAD_SECONDS
    # The schedule is absolute: due(i) = segment start + (i - segment origin) / rate, a new
    # segment starting at the last due time when the rate changes. A late webhook never
    # moves the next one.
    segment_start, segment_origin, segment_rate = start, 0, float(rate.value)
    scheduled = start
    for i in range(plan.count):
        current = float(rate.value)
        if current != segment_rate:
            segment_start, segment_origin, segment_rate = scheduled, i - 1, current
        scheduled = segment_start + (i - segment_origin) / segment_rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            break
        sent.value += 1  # one writer (this thread); readers tolerate a stale value
        due.put((i, scheduled))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    return LoadResult(
        phase=plan.phase,
        sent=[item for item in results if item is not None],
        planned=plan.count,
        cpu_seconds=time.process_time() - cpu_before,
        senders=senders,
        max_busy=max_busy,
        errors=errors,
    )
