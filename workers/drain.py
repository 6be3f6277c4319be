"""The webhook fast path: take a batch off the inbox and carry it to the app in one go.

``drain_inbox`` is what a ``hooksync.drain_inbox`` message (the receiver's wake-up) runs:

1. clear the wake-up flag, then read up to ``BATCH_SIZE`` entries (``workers.inbox``);
2. record and route them in one transaction, the new runs claimed by this worker
   (``workers.events.route_events``), then acknowledge the entries;
3. execute the claimed runs, coalesced per (connection, sync) (``workers.coalesce``), in
   rounds of a few connections;
4. deliver each round's completion webhooks as soon as the round committed them
   (``workers.delivery.deliver_many``);

and again, while entries keep coming, for at most ``DRAIN_SECONDS`` — then it hands over to
a new wake-up, so one long drain never holds a worker process away from ticks and polls.

At low load a batch is one webhook and the path costs one Celery message and a handful of
transactions; under load batches grow by themselves (whatever arrived while the previous
batch ran) and the per-webhook cost falls. Every step keeps its row-level guarantee: a
worker that dies anywhere leaves entries pending in the inbox (reclaimed by the tick), runs
leased (re-run by the sweeper) or notifications due (retried by the sweeper).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from cache.context import AppContext
from config.errors import RetriableError
from config.logs import log_context
from workers import inbox
from workers.coalesce import execute_webhook_runs
from workers.delivery import deliver_many
from workers.enqueue import enqueue_notifications, enqueue_runs, wake_drain
from workers.events import RouteResult, route_events
from workers.execution import log_fields
from workers.runs import Claim

__all__ = ["BATCH_SIZE", "DRAIN_SECONDS", "drain_inbox", "reclaim_inbox"]

logger = logging.getLogger(__name__)

#: Entries taken per read: large enough to amortise the transactions under load, small
#: enough that one batch's handlers finish well inside a run lease.
BATCH_SIZE = 100
#: A drain hands over to a fresh wake-up after this long, so it never starves other tasks.
DRAIN_SECONDS = 2.0
#: Seconds a drain waits before putting back a batch the database could not take.
RETRY_PAUSE = 2.0


def drain_inbox(ctx: AppContext, consumer: str) -> int:
    """Process inbox batches until the inbox is empty or ``DRAIN_SECONDS`` passed.

    Returns:
        How many entries were taken.
    """
    client = ctx.redis
    deadline = time.monotonic() + DRAIN_SECONDS
    taken = 0
    while True:
        inbox.clear_wake(client)
        entries = inbox.read(client, consumer, BATCH_SIZE)
        if not entries:
            return taken
        taken += len(entries)
        if len(entries) == BATCH_SIZE:
            # More is waiting: let an idle worker process take the next batch meanwhile.
            wake_drain(ctx)
        if not _process(ctx, entries):
            return taken
        if time.monotonic() > deadline:
            wake_drain(ctx)
            return taken


def reclaim_inbox(
    ctx: AppContext, consumer: str, *, min_idle_seconds: float = inbox.RECLAIM_IDLE_SECONDS
) -> int:
    """Route entries a dead consumer left pending (run by the tick); returns their count."""
    client = ctx.redis
    taken = 0
    while True:
        entries = inbox.reclaim(client, consumer, BATCH_SIZE, min_idle_seconds=min_idle_seconds)
        if not entries:
            return taken
        logger.warning(
            "inbox: took over %d webhook(s) left pending by a worker that died", len(entries)
        )
        taken += len(entries)
        if not _process(ctx, entries):
            return taken


def _process(ctx: AppContext, entries: list[inbox.InboxEntry]) -> bool:
    """Route, execute and notify one batch; False when it must be retried later."""
    for entry in entries:
        if entry.event is None:
            logger.error("inbox entry %r dropped: %s", entry.entry_id, entry.problem)
    events = [entry.event for entry in entries if entry.event is not None]
    started = time.perf_counter()
    try:
        results = route_events(ctx, events, claim=True)
    except RetriableError as error:
        # The database cannot take them yet: back into the inbox for any worker, after a
        # pause so an outage is waited out without spinning. If Redis refuses even that,
        # they stay pending here and the tick reclaims them.
        logger.warning("inbox: %s; %d webhook(s) requeued in %ss", error, len(entries), RETRY_PAUSE)
        time.sleep(RETRY_PAUSE)
        inbox.requeue(ctx.redis, entries)
        wake_drain(ctx)
        return False
    inbox.ack(ctx.redis, [entry.entry_id for entry in entries])
    _log_routed(events, results)

    claimed: list[Claim] = []
    queued: list[int] = []
    forwards: list[int] = []
    for result in results:
        if result is None:
            continue
        if result.claimed:
            claimed.extend(result.claims)
        else:
            queued.extend(result.run_ids)
        forwards.extend(result.notification_ids)
    if queued:
        # Runs of events routed before (an entry routed twice): the usual queue.
        _best_effort(enqueue_runs, ctx, queued)
    routed = time.perf_counter()
    delivering = 0.0

    def deliver(notification_ids: list[int]) -> None:
        nonlocal delivering
        began = time.perf_counter()
        _deliver(ctx, notification_ids)
        delivering += time.perf_counter() - began

    deliver(forwards)
    notification_ids = forwards + execute_webhook_runs(ctx, claimed, deliver)
    logger.info(
        "inbox: %d webhook(s), %d run(s), %d notification(s): routed in %.1f ms, executed in "
        "%.1f ms, delivered in %.1f ms",
        len(entries),
        len(claimed),
        len(notification_ids),
        (routed - started) * 1000,
        (time.perf_counter() - routed - delivering) * 1000,
        delivering * 1000,
    )
    return True


def _deliver(ctx: AppContext, notification_ids: list[int]) -> None:
    if not notification_ids:
        return
    try:
        deliver_many(ctx, notification_ids)
    except Exception:
        # The rows are due: the sweeper delivers them on its next tick.
        logger.warning("inbox: delivery failed; the sweeper will retry", exc_info=True)
        _best_effort(enqueue_notifications, ctx, notification_ids)


def _log_routed(events: list[dict[str, Any]], results: list[RouteResult | None]) -> None:
    """One line per event routed, and one per run it made, each with the event's ids."""
    for event, result in zip(events, results, strict=True):
        if result is None:  # malformed, logged by route_events
            continue
        with log_context(event_id=event.get("id"), integration=event.get("provider_config_key")):
            logger.info(
                "webhook recorded: %s, %d run(s)",
                result.state,
                len(result.run_ids),
                extra={"state": result.state},
            )
            for claim in result.claims:
                logger.info(
                    "webhook routed to connection %r sync %r as run %s",
                    claim.connection_id,
                    claim.sync_name,
                    claim.run_id,
                    extra=log_fields(claim),
                )


def _best_effort(
    send: Callable[[AppContext, Iterable[int]], None], ctx: AppContext, ids: list[int]
) -> None:
    # The rows are committed with leases or due times: if Redis refuses now, the sweeper
    # queues them on its next tick, so this delays and never loses work.
    try:
        send(ctx, ids)
    except RetriableError as error:
        logger.warning("%s; the sweeper will pick them up", error)
