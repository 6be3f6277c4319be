"""Sending the outbox's notifications to the app over HTTP (ARCHITECTURE.md §8).

``deliver`` sends one row and ``deliver_many`` a batch; the rows' state is the outbox's
(``workers.outbox``): it claims them (a conditional UPDATE, so two workers never send the
same attempt), and it records each outcome. Here is only what happens in between, outside
any transaction: the signed POST (8 s timeout, no redirects), over the process's keep-alive
poster, a batch's POSTs side by side on the process's sender threads.

Order: the outbox claims only the first pending row of a stream (one app URL, connection,
sync and model). When a row leaves ``pending`` its stream's next row is sent right away
(``followers``), for up to ``HANDOFF_ROUNDS`` rounds and ``HANDOFF_SECONDS`` per task (the
inbox drain calls ``deliver_many`` too, and a slow app must not hold it); the sweeper
dispatches the rest.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from cache.context import AppContext
from cache.models import NotificationState, utcnow
from workers.app_signatures import signed_headers
from workers.external import parse_retry_after
from workers.outbox import (
    SEND_LEASE_SECONDS,
    Attempt,
    claim,
    claim_many,
    classify_status,
    followers,
    record_deliveries,
    record_outcome,
    release_claim,
)

__all__ = [
    "HANDOFF_ROUNDS",
    "HANDOFF_SECONDS",
    "PARALLEL_POSTS",
    "TIMEOUT_SECONDS",
    "Poster",
    "deliver",
    "deliver_many",
]

#: Per-request timeout of a delivery POST (connect, and the answer's status and headers);
#: the outbox's send lease (``SEND_LEASE_SECONDS``) is just above it.
TIMEOUT_SECONDS = 8
#: Rounds of stream followers one task sends after its own rows (see the docstring).
HANDOFF_ROUNDS = 50
#: No new round of followers starts once a task has spent this long on them.
HANDOFF_SECONDS = 10.0

Poster = Callable[..., requests.Response]


def deliver(
    ctx: AppContext,
    notification_id: int,
    *,
    now: datetime | None = None,
    session_post: Poster | None = None,
    rng: random.Random | None = None,
) -> None:
    """Send one notification once, if it is due and nobody else is sending it.

    Idempotent against the row's state: a delivered, gone, failed, not-yet-due or
    currently-leased row is left alone, so a duplicate task message changes nothing.

    Args:
        ctx: For the sessions and the signing keys.
        notification_id: The row to send.
        now: The attempt's instant (tests inject it); defaults to the clock.
        session_post: ``requests.post`` or a stand-in with the same signature; default:
            the process's keep-alive poster.
        rng: Jitter source for the retry delay.
    """
    if _deliver_one(ctx, notification_id, now, session_post, rng):
        _send_followers(ctx, [notification_id], now)


def _deliver_one(
    ctx: AppContext,
    notification_id: int,
    now: datetime | None,
    session_post: Poster | None,
    rng: random.Random | None,
) -> bool:
    """``deliver`` without the followers; whether a POST went out."""
    started = now or utcnow()
    lease = started + timedelta(seconds=SEND_LEASE_SECONDS)
    row = claim(ctx, notification_id, started, lease)
    if row is None:
        return False
    body = row.body.encode("utf-8")
    headers = signed_headers(
        ctx.settings.webhook_signing_keys, row.webhook_id, int(started.timestamp()), body
    )
    headers["User-Agent"] = "hooksync"
    attempt = _post(session_post or _keep_alive_post(ctx), row.url, body, headers, started)
    finished = now or utcnow()
    record_outcome(
        ctx, notification_id, row.url, lease, row.attempts + 1, attempt, finished, rng,
        created_at=row.created_at,
    )  # fmt: skip
    return True


def deliver_many(
    ctx: AppContext, notification_ids: Sequence[int], *, now: datetime | None = None
) -> None:
    """Send several notifications now, as ``deliver`` does one by one, in fewer transactions.

    One transaction claims every row that is due and free, the POSTs go out in id order over
    the process's keep-alive session, and one transaction records the deliveries; any other
    outcome (a retry, a 410, a failure) is recorded row by row by ``deliver``'s own rules.
    The rows are taken ``PARALLEL_POSTS`` at a time, each group under its own send lease (a
    lease covers one POST's timeout, not a queue of them); then their streams' followers.
    """
    sent: list[int] = []
    for start in range(0, len(notification_ids), PARALLEL_POSTS):
        sent += _deliver_group(ctx, notification_ids[start : start + PARALLEL_POSTS], now)
    _send_followers(ctx, sent, now)


def _send_followers(ctx: AppContext, sent: Sequence[int], now: datetime | None) -> None:
    """Send the next row of each stream that ``sent`` released, and theirs, a bounded while."""
    deadline = time.monotonic() + HANDOFF_SECONDS
    for _ in range(HANDOFF_ROUNDS):
        if time.monotonic() > deadline:
            return
        ids = followers(ctx, sent)
        if not ids:
            return
        sent = []
        for start in range(0, len(ids), PARALLEL_POSTS):
            sent += _deliver_group(ctx, ids[start : start + PARALLEL_POSTS], now)


def _deliver_group(
    ctx: AppContext, notification_ids: Sequence[int], now: datetime | None
) -> list[int]:
    """One claim, up to ``PARALLEL_POSTS`` POSTs side by side, their outcomes; the ids sent."""
    if not notification_ids:
        return []
    started = now or utcnow()
    lease = started + timedelta(seconds=SEND_LEASE_SECONDS)
    rows, gone = claim_many(ctx, list(notification_ids), started, lease)
    post = _keep_alive_post(ctx)
    sendable = []
    for row in rows:
        if row.url in gone:
            # Claimed, and now left for ``deliver`` to turn gone; it is free again once
            # this lease ends, or at once through the retry path below.
            release_claim(ctx, row.id, lease)
            _deliver_one(ctx, row.id, now, None, None)
        else:
            sendable.append(row)

    def send(row: Any) -> Attempt:
        body = row.body.encode("utf-8")
        headers = signed_headers(
            ctx.settings.webhook_signing_keys, row.webhook_id, int(started.timestamp()), body
        )
        headers["User-Agent"] = "hooksync"
        return _post(post, row.url, body, headers, started)

    # The POSTs of a batch go to different (connection, sync, model) streams: sent side by
    # side, a batch waits for the slowest answer instead of the sum of all of them.
    attempts = list(_senders(ctx).map(send, sendable)) if len(sendable) > 1 else map(send, sendable)
    finished = now or utcnow()
    delivered: list[tuple[Any, Attempt]] = []
    for row, attempt in zip(sendable, attempts, strict=True):
        if classify_status(attempt.status) is NotificationState.DELIVERED:
            delivered.append((row, attempt))
            continue
        record_outcome(
            ctx, row.id, row.url, lease, row.attempts + 1, attempt, finished, None,
            created_at=row.created_at,
        )  # fmt: skip
    if delivered:
        record_deliveries(ctx, delivered, started, finished)
    return [row.id for row in rows]


# -- posting ------------------------------------------------------------------------------

#: Where ``_keep_alive_post`` keeps the HTTP session of an ``AppContext``.
_HTTP_KEY = "notify_http"
#: Where ``_senders`` keeps the delivery threads of an ``AppContext``.
_SENDERS_KEY = "notify_senders"
#: POSTs of one batch in flight at once.
PARALLEL_POSTS = 8


def _senders(ctx: AppContext) -> ThreadPoolExecutor:
    """The process's delivery threads (made on first use, so after a prefork fork)."""
    return ctx.handle(
        _SENDERS_KEY,
        lambda: ThreadPoolExecutor(PARALLEL_POSTS, thread_name_prefix="hooksync-deliver"),
        close=lambda pool: pool.shutdown(wait=False),
    )


def _keep_alive_post(ctx: AppContext) -> Poster:
    """The process's keep-alive poster (``_Poster``), made on first use."""
    return ctx.handle(_HTTP_KEY, _Poster)


class _Poster:
    """``requests.post``'s signature and errors over urllib3 pools, kept per app host.

    A delivery needs none of what ``requests`` adds per call (cookies, hooks, auth, proxy
    lookup in the environment, redirects), and that costs about three times the POST
    itself; the profile of the webhook path showed it. Proxies the environment names for
    an app URL (``HTTPS_PROXY``, ``NO_PROXY``, …) are looked up once per URL.
    """

    def __init__(self) -> None:
        self._direct = urllib3.PoolManager(num_pools=32, maxsize=4, retries=False)
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._route: dict[str, urllib3.PoolManager] = {}

    def __call__(
        self,
        url: str,
        *,
        data: bytes,
        headers: Mapping[str, str],
        timeout: float,
        allow_redirects: bool = False,
        stream: bool = True,
    ) -> Any:
        manager = self._route.get(url) or self._manager_for(url)
        try:
            response = manager.request(
                "POST",
                url,
                body=data,
                headers=dict(headers),
                # total: connecting and reading the answer's head share one timeout, so
                # a POST ends within the outbox's send lease.
                timeout=urllib3.Timeout(connect=timeout, read=timeout, total=timeout),
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.NewConnectionError as error:
            # (urllib3 files a refused connection under its timeouts; requests does not)
            raise requests.ConnectionError(type(error).__name__) from None
        except urllib3.exceptions.TimeoutError as error:
            raise requests.Timeout(type(error).__name__) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise requests.ConnectionError(type(error).__name__) from None
        return _Answer(response)

    def _manager_for(self, url: str) -> urllib3.PoolManager:
        proxy = requests.utils.get_environ_proxies(url).get(urlsplit(url).scheme)
        manager: urllib3.PoolManager = self._direct
        if proxy:
            if proxy not in self._proxied:
                self._proxied[proxy] = urllib3.ProxyManager(proxy, retries=False)
            manager = self._proxied[proxy]
        self._route[url] = manager
        return manager


class _Answer:
    """The part of a ``requests.Response`` that ``_post`` reads."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers

    def close(self) -> None:
        remaining = self._response.length_remaining
        if remaining is not None and remaining <= _DRAIN_LIMIT:
            # Read what little the app answered, so the connection goes back to the pool.
            self._response.drain_conn()
        else:
            self._response.close()  # a big or unsized answer is not worth reading
        self._response.release_conn()


#: An app's answer up to this size is read to keep its connection; a larger one closes it.
_DRAIN_LIMIT = 64 * 1024


def _post(
    session_post: Poster, url: str, body: bytes, headers: dict[str, str], now: datetime
) -> Attempt:
    clock = time.monotonic()
    try:
        # Redirects are not followed: requests would turn a POST into a GET on 301/302.
        # stream=True: only the status and headers matter; the answer's body is never read.
        response = session_post(
            url,
            data=body,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout as error:
        # Only the exception's class: its message repeats the URL, which may hold a token.
        return Attempt(
            None,
            f"network error: {type(error).__name__} (no answer in time)",
            None,
            _elapsed_ms(clock),
        )
    except requests.RequestException as error:
        return Attempt(None, f"network error: {type(error).__name__}", None, _elapsed_ms(clock))
    status = response.status_code
    response.close()
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
    return Attempt(
        status, None if 200 <= status < 300 else f"HTTP {status}", retry_after, _elapsed_ms(clock)
    )


def _elapsed_ms(since: float) -> int:
    return max(0, round((time.monotonic() - since) * 1000))
