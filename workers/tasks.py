"""Thin task shims: take an id, call the service, classify the error.

Every task is idempotent against its row's state, and none relies on Celery retries: a
task that fails with a ``RetriableError`` leaves its row queued or leased, and the beat
tick's sweeper re-enqueues it from the database. Errors are logged and swallowed so the
message is acknowledged; the row, not the broker, remembers what is left to do. One
exception, for speed only: a run or delivery whose database is unreachable hands its
message back to the queue, so it is retried seconds after the outage instead of a lease
later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from sqlalchemy.exc import InterfaceError, OperationalError

from config.errors import RetriableError
from config.logs import log_context
from workers.celery_app import context_of
from workers.delivery import deliver
from workers.drain import drain_inbox
from workers.enqueue import enqueue_notifications, enqueue_runs
from workers.events import route_event
from workers.execution import execute_run
from workers.inbox import consumer_name

__all__ = ["TASK_OPTIONS", "classified", "register_tasks"]

logger = logging.getLogger(__name__)

#: Seconds a worker waits before handing an unroutable-for-now webhook back to the queue.
ROUTE_RETRY_PAUSE = 2.0


#: Every task's options: explicit names, no results, acknowledged after the work (the row,
#: not the message, is what a crash must not lose), and bound to its own app only.
TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "ignore_result": True,
    "acks_late": True,
    "shared": False,
}


@contextmanager
def classified(task: str, subject: object) -> Iterator[None]:
    try:
        yield
    except RetriableError as error:
        # Transient (Redis or a lock unavailable, ...): the lease sweeper retries.
        logger.warning("%s %s: %s; the sweeper will retry it", task, subject, error)
    except Reject:
        raise  # the message goes back to the queue (``requeued_while_the_database_is_down``)
    except Exception:
        logger.error("%s %s failed", task, subject, exc_info=True)


@contextmanager
def requeued_while_the_database_is_down(task: str, subject: object) -> Iterator[None]:
    """Hand the message back to the queue, after a pause, when the database is unreachable.

    Acknowledging it would leave its row to the sweeper, which re-sends a queued row's
    message only once its lease ran out (``HOOKSYNC_LEASE_SECONDS``, 90 s): every run and
    delivery consumed during an outage would wait that long after it. Requeued, the
    message is taken again within seconds of the database coming back. The pause keeps an
    outage from being a busy loop; the claim that follows is idempotent.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as error:
        logger.warning(
            "%s %s: the database is unavailable (%s); requeued in %ss",
            task,
            subject,
            type(error).__name__,
            ROUTE_RETRY_PAUSE,
        )
        time.sleep(ROUTE_RETRY_PAUSE)
        raise Reject(f"database unavailable: {type(error).__name__}", requeue=True) from None


def register_tasks(celery: Celery) -> None:
    """Register the workers' tasks on ``celery`` under their explicit names.

    The scheduler's tick is registered by ``scheduler.tasks``; ``hooksync.tasks`` composes
    both onto the app the worker runs.
    """

    def task(name: str) -> Callable[[Callable[..., None]], Task]:
        return celery.task(name=name, **TASK_OPTIONS)  # type: ignore[no-any-return]

    # Webhooks now reach workers through the inbox (``hooksync.drain_inbox``); this task
    # stays for messages a previous version queued before an upgrade. Until route_event
    # commits, the webhook exists only in such a message, so it must not let the message
    # go on a transient failure. It hands the message
    # back to the queue (routing is idempotent on the event id) after a pause, so a
    # database outage is waited out without spinning; if Redis cannot take it back either,
    # the message stays unacknowledged and Redis restores it.
    @celery.task(name="hooksync.route_webhook", **TASK_OPTIONS, acks_on_failure_or_timeout=False)
    def route_webhook(self: Task, event: dict[str, Any]) -> None:
        ctx = context_of(self.app)
        event_id = event.get("id") if isinstance(event, dict) else None
        try:
            result = route_event(ctx, event)
            enqueue_runs(ctx, result.run_ids)
            enqueue_notifications(ctx, result.notification_ids)
        except RetriableError as error:
            logger.warning(
                "route_webhook %s: %s; requeued in %ss", event_id, error, ROUTE_RETRY_PAUSE
            )
            time.sleep(ROUTE_RETRY_PAUSE)
            raise Reject(str(error), requeue=True) from error

    @task("hooksync.drain_inbox")
    def drain(self: Task) -> None:
        with classified("drain_inbox", ""):
            drain_inbox(context_of(self.app), consumer_name())

    # Both hand their message back while the database is down (see
    # ``requeued_while_the_database_is_down``): a Reject must not be acknowledged.
    requeuing = {**TASK_OPTIONS, "acks_on_failure_or_timeout": False}

    @celery.task(name="hooksync.run_sync", **requeuing)
    def run_sync(self: Task, run_id: int) -> None:
        ctx = context_of(self.app)
        # Outermost, so the shim's own error line carries the run id too.
        with (
            log_context(run_id=run_id),
            classified("run_sync", run_id),
            requeued_while_the_database_is_down("run_sync", run_id),
        ):
            notification_ids = execute_run(ctx, int(run_id), worker_id=self.request.hostname)
            enqueue_notifications(ctx, notification_ids)

    @celery.task(name="hooksync.deliver_notification", **requeuing)
    def deliver_notification(self: Task, notification_id: int) -> None:
        ctx = context_of(self.app)
        with (
            log_context(notification_id=notification_id),
            classified("deliver_notification", notification_id),
            requeued_while_the_database_is_down("deliver_notification", notification_id),
        ):
            deliver(ctx, int(notification_id))
