"""The scheduler's Celery task: beat publishes ``hooksync.tick``, a worker runs it.

Like every task it is a thin shim (``workers.tasks``): the tick's decisions live in the
database (``scheduler.tick``); what the tick claims is then queued by id.
"""

from __future__ import annotations

from celery import Celery, Task

from scheduler.tick import tick
from workers import inbox
from workers.celery_app import context_of
from workers.drain import reclaim_inbox
from workers.enqueue import TICK, enqueue_notifications, enqueue_runs, wake_drain
from workers.inbox import consumer_name
from workers.tasks import TASK_OPTIONS, classified

__all__ = ["register_tick"]


def register_tick(celery: Celery) -> None:
    """Register ``hooksync.tick`` on ``celery``."""

    @celery.task(name=TICK, **TASK_OPTIONS)
    def run_tick(self: Task) -> None:
        ctx = context_of(self.app)
        with classified("tick", ""):
            result = tick(ctx)
            enqueue_runs(ctx, result.swept_run_ids, recovery=True)
            enqueue_runs(ctx, result.new_run_ids)
            enqueue_notifications(ctx, result.notification_ids)
        with classified("tick", "inbox"):
            # Entries a dead worker left pending, then any whose wake-up was lost.
            reclaim_inbox(ctx, consumer_name())
            if inbox.pending_count(ctx.redis):
                wake_drain(ctx)
