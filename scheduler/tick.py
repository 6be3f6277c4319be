"""The beat tick: start due polls and recover work whose lease ran out.

One tick is a handful of indexed queries in short transactions, each bounded, so it stays
cheap with tens of thousands of schedules, and any number of beats may tick at once:

1. claim due schedules (``claim_due``; atomic per schedule), in batches while time allows;
2. sweep sync runs: ``queued`` ones not picked up before their lease ran out (the Redis
   message was lost) get their lease pushed forward and are re-enqueued; ``running`` ones
   whose worker went silent are re-enqueued as they are, and the execution's own claim
   takes them over;
3. sweep notifications: ``pending`` ones that are due and not dispatched recently (see
   ``workers.outbox``) are stamped and re-enqueued — this is what drives delivery retries;
4. now and then, housekeeping: forget webhook delivery ids older than the dedupe window and
   release schedules whose active run is over but was never finished.

Each step is a transition of a table's state machine, performed by the module that owns it
(``workers.schedules``, ``workers.runs``, ``workers.outbox``, ``workers.events``); the tick
decides only when. It only touches the database; its caller (the ``hooksync.tick`` task)
enqueues the returned ids after the transactions committed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from cache.context import AppContext
from cache.db import session_scope
from cache.models import utcnow
from workers import events, outbox, runs, schedules

__all__ = ["TickResult", "tick"]

log = logging.getLogger(__name__)

#: Rows per query: claims per batch, swept runs, swept notifications, housekeeping deletes.
BATCH_SIZE = 500
#: Claim batches continue while under this share of the tick interval.
CLAIM_TIME_SHARE = 0.5
#: Housekeeping runs at most this often per process (its queries scan unindexed columns).
HOUSEKEEPING_SECONDS = 60.0

_housekeeping_lock = threading.Lock()
_last_housekeeping = float("-inf")


@dataclass(frozen=True)
class TickResult:
    """Ids to enqueue: new and re-swept runs, and notifications due for an attempt."""

    run_ids: tuple[int, ...] = ()
    notification_ids: tuple[int, ...] = ()
    #: The part of ``run_ids`` the sweeper took back (a dead worker's, or a lost message's).
    swept_run_ids: tuple[int, ...] = ()

    @property
    def new_run_ids(self) -> tuple[int, ...]:
        swept = set(self.swept_run_ids)
        return tuple(run_id for run_id in self.run_ids if run_id not in swept)


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
            claimed = schedules.claim_due(
                session, integrations, now, BATCH_SIZE, lease_seconds=settings.lease_seconds
            )
        run_ids.extend(claimed)
        if len(claimed) < BATCH_SIZE or time.monotonic() > deadline:
            break

    with session_scope(ctx.sessions) as session:
        swept = runs.sweep_expired(session, now, settings.lease_seconds, BATCH_SIZE)
    with session_scope(ctx.sessions) as session:
        notification_ids = outbox.sweep_due(session, now, settings.lease_seconds, BATCH_SIZE)

    if _housekeeping_due(housekeeping):
        with session_scope(ctx.sessions) as session:
            events.prune_deliveries(session, now, limit=BATCH_SIZE)
        with session_scope(ctx.sessions) as session:
            schedules.release_finished(session, BATCH_SIZE)

    known = set(run_ids)
    swept = [run_id for run_id in swept if run_id not in known]
    run_ids.extend(swept)
    if run_ids or notification_ids:
        log.info(
            "tick: %d run(s), %d notification(s) to enqueue", len(run_ids), len(notification_ids)
        )
    return TickResult(tuple(run_ids), tuple(notification_ids), tuple(swept))


def _housekeeping_due(forced: bool | None) -> bool:
    global _last_housekeeping
    if forced is not None:
        return forced
    with _housekeeping_lock:
        if time.monotonic() - _last_housekeeping < HOUSEKEEPING_SECONDS:
            return False
        _last_housekeeping = time.monotonic()
        return True
