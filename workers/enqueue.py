"""Put work on the Redis transport by task name: callers need no task imports.

Only ids travel (JSON). A lost message never loses work: the database row keeps its state
and the sweeper re-enqueues it. A received webhook has no row until a worker routes it, so
it does not travel as a Celery message at all: ``enqueue_webhook`` stores it in the durable
inbox (``workers.inbox``) and sends a ``hooksync.drain_inbox`` wake-up only when no drain is
already due to read it. A failed store raises, and the receiver answers 503 for the sender
to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from cache.context import AppContext
from config.errors import ConfigError, HooksyncError, RetriableError
from workers import inbox
from workers.celery_app import TICK_PRIORITY, WORK_PRIORITY, celery_for

__all__ = [
    "DRAIN_INBOX",
    "ROUTE_WEBHOOK",
    "RUN_SYNC",
    "DELIVER_NOTIFICATION",
    "TICK",
    "enqueue_after_commit",
    "enqueue_notifications",
    "enqueue_runs",
    "enqueue_tick",
    "enqueue_webhook",
    "wake_drain",
]

logger = logging.getLogger(__name__)

ROUTE_WEBHOOK = "hooksync.route_webhook"
DRAIN_INBOX = "hooksync.drain_inbox"
RUN_SYNC = "hooksync.run_sync"
DELIVER_NOTIFICATION = "hooksync.deliver_notification"
TICK = "hooksync.tick"


def _send(ctx: AppContext, name: str, args: list[Any], *, priority: int = WORK_PRIORITY) -> None:
    """Publish one message; raise RetriableError unless Redis accepted it.

    Celery's publish retry is off: it would block a web request for many seconds while
    Redis is down, and every caller here has a better fallback (503, or the sweeper).
    """
    celery = celery_for(ctx)
    try:
        celery.send_task(name, args=args, retry=False, priority=priority)
    except ImportError as error:
        # Not a broker problem: the install lacks a module the transport needs.
        missing = (
            f"module {error.name!r} is not installed"
            if error.name
            else f"{type(error).__name__}: {error}"
        )
        raise ConfigError(
            f"could not queue {name}: Celery's Redis transport cannot be loaded: {missing} "
            "(an incomplete installation, not a Redis connection problem); reinstall hooksync "
            "with its dependencies: pip install <hooksync wheel or source folder> (Celery's "
            "Redis support is the celery[redis] extra)"
        ) from error
    except Exception as error:  # kombu, redis-py and socket errors have no common base
        raise RetriableError(
            f"could not queue {name}: the Redis broker at {_redacted(ctx.redis_url)!r} did not "
            f"accept the message ({type(error).__name__}: {error}); is Redis running and "
            "reachable there?"
        ) from error


def _redacted(url: str) -> str:
    """The broker URL without its credentials."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}"


def enqueue_webhook(ctx: AppContext, event: dict[str, Any]) -> None:
    """Store a received webhook in the durable inbox and wake a drain if none is due.

    Returns once Redis acknowledged the entry. A wake-up that cannot be sent is only
    logged: the entry is stored, and the beat tick drains the inbox anyway.

    Raises:
        RetriableError: Redis did not acknowledge the entry; the caller answers 503.
    """
    if inbox.push(ctx.redis, event):
        try:
            wake_drain(ctx)
        except HooksyncError as error:
            logger.warning(
                "webhook %s stored, but no drain woken (%s); the tick drains it", event["id"], error
            )


def wake_drain(ctx: AppContext) -> None:
    """Send a ``hooksync.drain_inbox`` wake-up.

    Raises:
        RetriableError: Redis did not accept it.
    """
    _send(ctx, DRAIN_INBOX, [])


def enqueue_runs(ctx: AppContext, run_ids: Iterable[int], *, recovery: bool = False) -> None:
    """Queue sync runs by id.

    Args:
        recovery: Runs the sweeper takes back from a dead worker (or whose message was
            lost): sent at the tick's priority, ahead of any backlog of new work, so a
            takeover is seconds after the lease ran out and not minutes.

    Raises:
        RetriableError: Redis did not acknowledge a message (the sweeper will retry).
    """
    priority = TICK_PRIORITY if recovery else WORK_PRIORITY
    for run_id in run_ids:
        _send(ctx, RUN_SYNC, [int(run_id)], priority=priority)


def enqueue_notifications(ctx: AppContext, notification_ids: Iterable[int]) -> None:
    """Queue notification deliveries by id.

    Raises:
        RetriableError: Redis did not acknowledge a message (the sweeper will retry).
    """
    for notification_id in notification_ids:
        _send(ctx, DELIVER_NOTIFICATION, [int(notification_id)])


def enqueue_tick(ctx: AppContext) -> None:
    """Ask a worker to run the scheduler tick now (e.g. after a connection was created).

    Raises:
        RetriableError: Redis did not acknowledge the message (beat ticks anyway).
    """
    _send(ctx, TICK, [], priority=TICK_PRIORITY)


def enqueue_after_commit(
    ctx: AppContext,
    *,
    run_ids: Iterable[int] = (),
    notification_ids: Iterable[int] = (),
    tick: bool = False,
) -> None:
    """Best effort, after the rows were committed: a message that cannot be sent is logged.

    The rows are committed already, leased or due, so Redis being down now delays the work
    and never loses it: the beat tick's sweeper queues them (and ticks anyway). An API view
    that committed work must still answer, so nothing is raised.
    """
    run_ids, notification_ids = list(run_ids), list(notification_ids)
    try:
        enqueue_runs(ctx, run_ids)
        enqueue_notifications(ctx, notification_ids)
        if tick:
            enqueue_tick(ctx)
    except HooksyncError as error:
        logger.warning(
            "could not queue runs %s, notifications %s%s now (%s); the beat tick will",
            run_ids,
            notification_ids,
            " and a tick" if tick else "",
            error,
        )
