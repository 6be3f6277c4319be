"""Put work on the Redis transport by task name: callers need no task imports.

Only ids and the raw webhook event travel (JSON). A lost message never loses work: the
database row keeps its state and the sweeper re-enqueues it. The exception is the webhook
event, which has no row until a worker routes it, so ``enqueue_webhook`` reports a failed
publish and the receiver answers 503 for the sender to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from config.context import AppContext
from config.errors import RetriableError
from workers.celery_app import celery_for

__all__ = [
    "ROUTE_WEBHOOK",
    "RUN_SYNC",
    "DELIVER_NOTIFICATION",
    "TICK",
    "enqueue_notifications",
    "enqueue_runs",
    "enqueue_tick",
    "enqueue_webhook",
]

logger = logging.getLogger(__name__)

ROUTE_WEBHOOK = "hooksync.route_webhook"
RUN_SYNC = "hooksync.run_sync"
DELIVER_NOTIFICATION = "hooksync.deliver_notification"
TICK = "hooksync.tick"


def _send(ctx: AppContext, name: str, args: list[Any]) -> None:
    """Publish one message; raise RetriableError unless Redis accepted it.

    Celery's publish retry is off: it would block a web request for many seconds while
    Redis is down, and every caller here has a better fallback (503, or the sweeper).
    """
    celery = celery_for(ctx)
    try:
        celery.send_task(name, args=args, retry=False)
    except Exception as error:  # kombu, redis-py and socket errors have no common base
        raise RetriableError(
            f"could not queue {name}: the Redis broker did not accept the message "
            f"({type(error).__name__}); is Redis running at the configured URL?"
        ) from error


def enqueue_webhook(ctx: AppContext, event: dict[str, Any]) -> None:
    """Queue a received webhook for routing.

    Raises:
        RetriableError: Redis did not acknowledge the message; the caller answers 503.
    """
    _send(ctx, ROUTE_WEBHOOK, [event])


def enqueue_runs(ctx: AppContext, run_ids: Iterable[int]) -> None:
    """Queue sync runs by id.

    Raises:
        RetriableError: Redis did not acknowledge a message (the sweeper will retry).
    """
    for run_id in run_ids:
        _send(ctx, RUN_SYNC, [int(run_id)])


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
    _send(ctx, TICK, [])
