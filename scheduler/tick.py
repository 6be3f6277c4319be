"""The beat tick: start due polls and recover work whose lease ran out (DESIGN §1, §7, §8).

One tick is a handful of indexed queries in short transactions, each bounded, so it stays
cheap with tens of thousands of schedules, and any number of beats may tick at once:

1. claim due schedules (``claim_due``; atomic per schedule), in batches while time allows;
2. sweep sync runs: ``queued`` ones not picked up before their lease ran out (the Redis
   message was lost) get their lease pushed forward and are re-enqueued; ``running`` ones
   whose worker went silent are re-enqueued as they are, and the execution's own claim
   takes them over;
3. sweep notifications: ``pending`` ones that are due and not dispatched recently (see
   ``workers.notify``) are stamped and re-enqueued — this is what drives delivery retries;
4. now and then, housekeeping: forget webhook delivery ids older than the dedupe window and
   release schedules whose active run is over but was never finished.

The tick only touches the database; its caller (the ``hooksync.tick`` task) enqueues the
returned ids after the transactions committed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, or_, select, tuple_, update
from sqlalchemy.orm import Session

from cache.db import session_scope
from cache.models import (
    Notification,
    NotificationState,
    RunState,
    Schedule,
    SyncRun,
    WebhookDelivery,
    utcnow,
)
from workers.notify import dispatch_marker, redispatch_cutoff
from workers.schedules import claim_due

if TYPE_CHECKING:
    from cache.context import AppContext

__all__ = ["TickResult", "tick"]

log = logging.getLogger(__name__)

#: Rows per query: claims per batch, swept runs, swept notifications, housekeeping deletes.
BATCH_SIZE = 500
#: Claim batches continue while under this share of the tick interval.
CLAIM_TIME_SHARE = 0.5
#: Delivery ids are remembered this long for dedupe (DESIGN §6).
DEDUPE_WINDOW = timedelta(days=7)
#: Housekeeping runs at most this often per process (its queries scan unindexed columns).
HOUSEKEEPING_SECONDS = 60.0

_TERMINAL_RUN_STATES = (RunState.SUCCESS.value, RunState.ERROR.value, RunState.CANCELLED.value)
_housekeeping_lock = threading.Lock()
_last_housekeeping = float("-inf")


@dataclass(frozen=True)
class TickResult:
    """Ids to enqueue: new and re-swept runs, and notifications due for an attempt."""

    run_ids: tuple[int, ...] = ()
    notification_ids: tuple[int, ...] = ()


def tick(
    ctx: AppContext, now: datetime | None = None, *, housekeeping: bool | None = None
) -> TickResult:
    """Run one scheduler tick.

    Args:
        ctx: For the sessions, settings and integrations.
        now: The tick's instant (tests inject it); defaults to the clock.
        housekeeping: Force (True) or skip (False) housekeeping; None runs it when this
            process has not in the last ``HOUSEKEEPING_SECONDS``.

    Returns:
        The run and notification ids to enqueue.
    """
    now = now or utcnow()
    settings = ctx.settings
    integrations = ctx.integrations

    run_ids: list[int] = []
    deadline = time.monotonic() + settings.tick_seconds * CLAIM_TIME_SHARE
    while True:
        with session_scope(ctx.sessions) as session:
            claimed = claim_due(
                session, integrations, now, BATCH_SIZE, lease_seconds=settings.lease_seconds
            )
        run_ids.extend(claimed)
        if len(claimed) < BATCH_SIZE or time.monotonic() > deadline:
            break

    with session_scope(ctx.sessions) as session:
        swept = _sweep_runs(session, now, settings.lease_seconds)
    with session_scope(ctx.sessions) as session:
        notification_ids = _sweep_notifications(session, now, settings.lease_seconds)

    if _housekeeping_due(housekeeping):
        with session_scope(ctx.sessions) as session:
            _forget_old_deliveries(session, now)
        with session_scope(ctx.sessions) as session:
            _release_finished_schedules(session)

    known = set(run_ids)
    run_ids.extend(run_id for run_id in swept if run_id not in known)
    if run_ids or notification_ids:
        log.info(
            "tick: %d run(s), %d notification(s) to enqueue", len(run_ids), len(notification_ids)
        )
    return TickResult(tuple(run_ids), tuple(notification_ids))


def _sweep_runs(session: Session, now: datetime, lease_seconds: int) -> list[int]:
    """Runs whose lease ran out: queued ones (the message was lost, or never sent) and
    running ones (the worker died or stopped heartbeating)."""
    queued = RunState.QUEUED.value
    running = RunState.RUNNING.value
    rows = session.execute(
        select(SyncRun.id, SyncRun.state)
        .where(
            or_(
                and_(
                    SyncRun.state == queued,
                    or_(SyncRun.lease_expires_at < now, SyncRun.lease_expires_at.is_(None)),
                ),
                and_(SyncRun.state == running, SyncRun.lease_expires_at < now),
            )
        )
        .order_by(SyncRun.id)
        .limit(BATCH_SIZE)
        .with_for_update(skip_locked=True)
    ).all()
    queued_ids = [row.id for row in rows if row.state == queued]
    if queued_ids:
        # Pushed forward so the next ticks leave it alone while this message is delivered.
        # A running one keeps its expired lease: that is what lets execute_run take it over.
        session.execute(
            update(SyncRun)
            .where(SyncRun.id.in_(queued_ids), SyncRun.state == queued)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
    if rows:
        log.warning(
            "sweeper: re-enqueueing %d run(s) whose lease expired (%d queued)",
            len(rows),
            len(queued_ids),
        )
    return [row.id for row in rows]


def _sweep_notifications(session: Session, now: datetime, lease_seconds: int) -> list[int]:
    """Pending notifications that are due and neither being sent nor dispatched lately."""
    ids = list(
        session.scalars(
            select(Notification.id)
            .where(
                Notification.state == NotificationState.PENDING.value,
                Notification.next_attempt_at <= now,
                or_(
                    Notification.lease_expires_at.is_(None),
                    Notification.lease_expires_at <= redispatch_cutoff(now, lease_seconds),
                ),
            )
            .order_by(Notification.next_attempt_at)
            .limit(BATCH_SIZE)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids))
            .values(lease_expires_at=dispatch_marker(now))
            .execution_options(synchronize_session=False)
        )
    return ids


def _housekeeping_due(forced: bool | None) -> bool:
    global _last_housekeeping
    if forced is not None:
        return forced
    with _housekeeping_lock:
        if time.monotonic() - _last_housekeeping < HOUSEKEEPING_SECONDS:
            return False
        _last_housekeeping = time.monotonic()
        return True


def _forget_old_deliveries(session: Session, now: datetime) -> int:
    """Delete up to ``BATCH_SIZE`` delivery ids older than the dedupe window."""
    keys = session.execute(
        select(WebhookDelivery.provider_config_key, WebhookDelivery.delivery_id)
        .where(WebhookDelivery.seen_at < now - DEDUPE_WINDOW)
        .limit(BATCH_SIZE)
    ).all()
    if not keys:
        return 0
    session.execute(
        delete(WebhookDelivery)
        .where(
            tuple_(WebhookDelivery.provider_config_key, WebhookDelivery.delivery_id).in_(
                [tuple(key) for key in keys]
            )
        )
        .execution_options(synchronize_session=False)
    )
    return len(keys)


def _release_finished_schedules(session: Session) -> int:
    """Clear ``active_run_id`` where that run is over or gone.

    A safety net: ``finish_poll_run`` normally does this in the run's final transaction.
    ``next_run_at`` needs no repair, claiming already put it on the grid.
    """
    rows = session.execute(
        select(Schedule.id, Schedule.active_run_id)
        .outerjoin(SyncRun, SyncRun.id == Schedule.active_run_id)
        .where(
            Schedule.active_run_id.is_not(None),
            or_(SyncRun.id.is_(None), SyncRun.state.in_(_TERMINAL_RUN_STATES)),
        )
        .limit(BATCH_SIZE)
    ).all()
    for row in rows:
        session.execute(
            update(Schedule)
            .where(Schedule.id == row.id, Schedule.active_run_id == row.active_run_id)
            .values(active_run_id=None)
            .execution_options(synchronize_session=False)
        )
    if rows:
        log.warning("released %d schedule(s) whose active run had ended", len(rows))
    return len(rows)
