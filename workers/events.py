"""The webhook events state machine: the one module that writes ``webhook_events`` and
``webhook_deliveries`` (ARCHITECTURE.md §6, §12).

::

    received ──route──► routed ──(its last run finished)──► processed
                  ├───► unrouted   (no connection or sync subscribes to it)
                  ├───► duplicate  (its delivery id was seen in the last DEDUPE_WINDOW)
                  └───► rejected   (the body cannot be read)


``route_event`` runs in a worker for each event the receiver queued. In one transaction it
inserts the ``webhook_events`` row, claims each delivery id in ``webhook_deliveries``
(a delivery seen in the last 7 days is a duplicate and runs nothing), and creates one
queued ``SyncRun`` per (event, matching connection, subscribed sync). Each run gets a lease
at once, so if the Celery message that should start it is lost, the sweeper re-enqueues it.

Idempotency: the event id is the primary key of its row. A redelivered Celery message finds
the row and returns the runs it already created that are still queued, creating nothing.
The decisions themselves are pure (``workers/routing.py``); this module only persists them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, defer

from cache.context import AppContext
from cache.db import session_scope
from cache.models import (
    Connection,
    RunState,
    SyncRun,
    WebhookDelivery,
    WebhookEvent,
    WebhookState,
    utcnow,
)
from cache.timestamps import api_time
from config.errors import BadInputError, HooksyncError, RetriableError
from workers import metrics
from workers.outbox import record_forward
from workers.payloads import redact_headers
from workers.routing import EventPlan, EventRoute, plan_event, routing_headers
from workers.runs import Claim, new_webhook_run

__all__ = [
    "DEDUPE_WINDOW",
    "MAX_LIST_LIMIT",
    "RouteResult",
    "connection_ids",
    "count_per_minute",
    "get_event",
    "list_events",
    "mark_processed",
    "prune_deliveries",
    "replay_event",
    "route_event",
    "route_events",
    "runs_of_events",
]

log = logging.getLogger(__name__)

#: A delivery id seen within this window is a duplicate (providers retry for days).
DEDUPE_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class RouteResult:
    """What routing produced, for the caller to enqueue."""

    #: New queued ``SyncRun`` ids (``hooksync.run_sync``).
    run_ids: tuple[int, ...] = ()
    #: New forward notifications (``hooksync.deliver_notification``).
    notification_ids: tuple[int, ...] = ()
    #: The event's state after routing (a ``WebhookState`` value).
    state: str = WebhookState.RECEIVED.value
    #: ``run_ids`` were created claimed by the caller (``route_events(claim=True)``): it
    #: executes them itself instead of enqueueing them.
    claimed: bool = False
    #: The claims of those runs, everything their execution needs (when ``claimed``).
    claims: tuple[Claim, ...] = ()


def route_event(
    ctx: AppContext, event: Mapping[str, Any], *, now: datetime | None = None
) -> RouteResult:
    """Record and route one event queued by the receiver.

    Args:
        event: The receiver's event dict (contract "Data shapes").
        now: The routing time (tests); defaults to the current UTC time.

    Returns:
        The runs and notifications to enqueue. For a redelivered event: its runs that are
        still queued, and no notification (pending notifications are swept anyway).

    Raises:
        BadInputError: The event dict itself is malformed (not something the receiver makes).
        RetriableError: The database is unreachable; the event was not recorded, so the
            caller must keep the message (re-publish it) rather than acknowledge it away.
    """
    # A malformed event is the caller's error (the receiver never makes one): raise it.
    _new_event_row(_event_id(event), event)
    result = route_events(ctx, [event], now=now)[0]
    assert result is not None
    return result


def route_events(
    ctx: AppContext,
    events: Sequence[Mapping[str, Any]],
    *,
    now: datetime | None = None,
    claim: bool = False,
) -> list[RouteResult | None]:
    """Record and route several events in one transaction (the inbox drain's batch).

    The batch is routed in one go: the integration's connections and the delivery ids
    already seen are read once, and the rows are inserted in one flush. If that fails as a
    whole (a delivery id claimed by another worker meanwhile, or a value the database
    refuses, such as a NUL byte in an event type that Postgres text cannot hold), the batch
    is routed again one event per savepoint, so only the offending event is kept
    ``rejected`` and the others route as usual.

    Args:
        events: The receiver's event dicts, in arrival order.
        now: The routing time (tests); defaults to the current UTC time.
        claim: Create the new runs already claimed by the caller (``running``, first
            attempt, a fresh lease) because it executes them right away; a caller that dies
            first leaves them to the sweeper when the lease runs out, like any claim.

    Returns:
        One result per event, in order; None for a malformed event (logged, not stored:
        the receiver never makes one).

    Raises:
        RetriableError: The database is unreachable; nothing was recorded, so the caller
            must keep the events (leave them in the inbox) rather than acknowledge them.
    """
    now = now or utcnow()
    results: list[RouteResult | None] = [None] * len(events)
    parsed: list[tuple[int, str, Mapping[str, Any]]] = []
    for index, event in enumerate(events):
        try:
            parsed.append((index, _event_id(event), event))
        except BadInputError as error:
            log.error("webhook event dropped: %s", error)
    if not parsed:
        return results
    try:
        with session_scope(ctx.sessions) as session:
            ids = {event_id for _, event_id, _ in parsed}
            known = {row.id: row for row in session.scalars(_EVENTS_BY_ID, {"ids": list(ids)})}
            fresh: dict[str, tuple[int, Mapping[str, Any]]] = {}
            for index, event_id, event in parsed:
                existing = known.get(event_id)
                if existing is not None:
                    results[index] = _already_routed(session, existing)
                elif event_id in fresh:
                    results[index] = RouteResult(
                        state=WebhookState.ROUTED.value
                    )  # the same entry twice
                else:
                    fresh[event_id] = (index, event)
            rows = _new_rows(ctx, fresh)
            try:
                with session.begin_nested():
                    for index, result in _route_batch(session, ctx, rows, now=now, claim=claim):
                        results[index] = result
            except (OperationalError, InterfaceError):
                raise
            except Exception:  # noqa: BLE001 - one event's fault must not hold the batch back
                log.info("routing the batch of %d at once failed; routing one by one", len(rows))
                for index, row in _new_rows(ctx, fresh):
                    results[index] = _route_new(session, ctx, row, now=now, claim=claim)
    except (OperationalError, InterfaceError) as error:
        # The database is down or locked: the events exist only in the inbox, so the
        # caller must keep them, never drop them.
        raise RetriableError(
            f"could not record {len(parsed)} webhook event(s): database unavailable "
            f"({type(error.orig).__name__ if error.orig is not None else type(error).__name__})"
        ) from error
    # Committed: count each event recorded now (a redelivered one was counted before).
    metrics.count_routed(
        (str(events[index].get("provider_config_key")), recorded.state)
        for index, _ in fresh.values()
        if (recorded := results[index]) is not None
    )
    return results


def _new_rows(
    ctx: AppContext, fresh: Mapping[str, tuple[int, Mapping[str, Any]]]
) -> list[tuple[int, WebhookEvent]]:
    rows = []
    for event_id, (index, event) in fresh.items():
        try:
            keep = _routing_headers(ctx, str(event.get("provider_config_key")))
            rows.append((index, _new_event_row(event_id, event, keep)))
        except BadInputError as error:
            log.error("webhook event dropped: %s", error)
    return rows


class _Batch:
    """What routing a batch reads once: each integration's connections, known deliveries."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._connections: dict[str, list[_ConnectionRow]] = {}
        #: (provider_config_key, delivery_id) → its row: prefetched, or added by this batch.
        self.deliveries: dict[tuple[str, str], WebhookDelivery] = {}

    def connections(self, key: str) -> list[_ConnectionRow]:
        if key not in self._connections:
            self._connections[key] = _connections_of(self._session, key)
        return self._connections[key]

    def prefetch_deliveries(self, pairs: set[tuple[str, str]]) -> None:
        if not pairs:
            return
        found = self._session.scalars(_DELIVERIES_SEEN, {"pairs": list(pairs)})
        for row in found:
            self.deliveries[(row.provider_config_key, row.delivery_id)] = row


def _route_batch(
    session: Session,
    ctx: AppContext,
    rows: list[tuple[int, WebhookEvent]],
    *,
    now: datetime,
    claim: bool,
) -> list[tuple[int, RouteResult]]:
    """Route new events together: plan all, read what they need once, insert in one flush."""
    batch = _Batch(session)
    plans: list[EventPlan | None] = []
    for _, row in rows:
        integration = ctx.integrations.by_key.get(row.provider_config_key)
        plans.append(
            None
            if integration is None
            else plan_event(
                integration,
                row.headers,
                row.body,
                [(c[1], c[2] or {}) for c in batch.connections(row.provider_config_key)],
            )
        )
    batch.prefetch_deliveries(
        {
            (row.provider_config_key, route.delivery_id)
            for (_, row), plan in zip(rows, plans, strict=True)
            if plan is not None and plan.rejection is None
            for route in plan.routes
        }
    )
    routed: list[tuple[int, WebhookEvent, _Routed]] = []
    for (index, row), plan in zip(rows, plans, strict=True):
        session.add(row)
        routed.append(
            (
                index,
                row,
                _route(
                    session, ctx, row, now=now, dedupe=True, claim=claim, plan=plan, batch=batch
                ),
            )
        )
    session.flush()
    return [(index, outcome.result(row, claim)) for index, row, outcome in routed]


def _route_new(
    session: Session, ctx: AppContext, row: WebhookEvent, *, now: datetime, claim: bool
) -> RouteResult:
    """Insert and route one new event inside a savepoint of the batch's transaction."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            routed = _route(session, ctx, row, now=now, dedupe=True, claim=claim)
            session.flush()
            return routed.result(row, claim)
    except IntegrityError:
        # Two workers routed the same event at once; the other inserted the row first.
        existing = session.get(WebhookEvent, row.id, populate_existing=True)
        if existing is None:
            raise
        return _already_routed(session, existing)
    except (OperationalError, InterfaceError):
        raise
    except Exception as error:  # noqa: BLE001 - anything else is this event's own fault
        # The database refused something routing derived from the body, or routing itself
        # failed on it (a RecursionError...). Keep the raw event, rejected and replayable,
        # rather than lose the only copy or leave it in the inbox to fail again forever.
        log.warning("webhook event %s rejected: could not route it", row.id, exc_info=True)
        rejected = _rejected_row(row, error)
        with session.begin_nested():
            session.add(rejected)
        return RouteResult((), (), WebhookState.REJECTED.value)


def _rejected_row(row: WebhookEvent, error: Exception) -> WebhookEvent:
    rejected = WebhookEvent(
        id=row.id,
        provider_config_key=row.provider_config_key,
        delivery_id=row.id,
        event_type=None,
        state=WebhookState.REJECTED.value,
        url=row.url,
        headers=row.headers,
        body=row.body,
        received_at=row.received_at,
        runs_count=0,
        error=f"could not route: {type(error).__name__}",
    )
    return rejected


def replay_event(ctx: AppContext, event_id: str, *, now: datetime | None = None) -> RouteResult:
    """Route a stored event again, bypassing the dedupe (``POST /webhooks/events/<id>/replay``).

    Raises:
        BadInputError: code ``unknown_event`` when no event has that id.
    """
    now = now or utcnow()
    with session_scope(ctx.sessions) as session:
        row = session.get(WebhookEvent, event_id, with_for_update=True)
        if row is None:
            raise BadInputError(
                f"no webhook event with id {event_id[:80]!r}",
                code="unknown_event",
                field="event_id",
            )
        routed = _route(session, ctx, row, now=now, dedupe=False)
        session.flush()
        return routed.result(row, claim=False)


def prune_deliveries(session: Session, now: datetime | None = None, *, limit: int = 500) -> int:
    """Forget up to ``limit`` delivery ids older than the dedupe window; how many.

    The beat tick's housekeeping calls it; bounded, so one tick never holds a long delete.
    """
    cutoff = (now or utcnow()) - DEDUPE_WINDOW
    keys = session.execute(
        select(WebhookDelivery.provider_config_key, WebhookDelivery.delivery_id)
        .where(WebhookDelivery.seen_at < cutoff)
        .limit(limit)
    ).all()
    if keys:
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


# -- listing (the API and the console) ----------------------------------------------------

#: The largest ``limit`` of ``list_events``.
MAX_LIST_LIMIT = 500


def list_events(
    session: Session,
    *,
    provider_config_key: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[WebhookEvent]:
    """Received events, newest first, filtered.

    Args:
        provider_config_key: Only this integration's.
        state: Only this ``WebhookState`` value.
        since: Received at or after this instant.
        until: Received before this instant.
        limit: 1 to ``MAX_LIST_LIMIT``.

    Raises:
        BadInputError: An unknown state or a limit out of range (naming the field).
    """
    query = select(WebhookEvent).order_by(WebhookEvent.received_at.desc(), WebhookEvent.id)
    if state is not None:
        known = [item.value for item in WebhookState]
        if state not in known:
            raise BadInputError(
                f"state: unknown state {state[:40]!r}; use one of {', '.join(known)}",
                field="state",
            )
        query = query.where(WebhookEvent.state == state)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadInputError(
            f"limit: must be a whole number from 1 to {MAX_LIST_LIMIT}, got {limit!r}",
            field="limit",
        )
    if provider_config_key is not None:
        query = query.where(WebhookEvent.provider_config_key == provider_config_key)
    if since is not None:
        query = query.where(WebhookEvent.received_at >= since)
    if until is not None:
        query = query.where(WebhookEvent.received_at < until)
    return list(session.scalars(query.limit(limit)))


def get_event(session: Session, event_id: str) -> WebhookEvent | None:
    """One stored event (with its headers and raw body), or None."""
    return session.get(WebhookEvent, event_id)


def runs_of_events(session: Session, event_ids: Sequence[str]) -> dict[str, list[SyncRun]]:
    """The runs each event caused (``sync_runs.webhook_event_id``), oldest first.

    Every id in ``event_ids`` is a key, with ``[]`` when it caused none. Read-only.
    """
    runs: dict[str, list[SyncRun]] = {event_id: [] for event_id in event_ids}
    if not runs:
        return runs
    # Without the payload: a listing has no use for it, and a poison one stored before the
    # door refused it (nested too deeply to decode) would fail the whole page.
    for run in session.scalars(
        select(SyncRun)
        .where(SyncRun.webhook_event_id.in_(list(runs)))
        .options(defer(SyncRun.payload, raiseload=True))
        .order_by(SyncRun.id)
    ):
        runs[run.webhook_event_id or ""].append(run)
    return runs


def connection_ids(session: Session, connection_pks: Iterable[int]) -> dict[int, str]:
    """``{connections.id: connection_id}`` for showing runs (``SyncRun.connection_pk``)."""
    pks = sorted(set(connection_pks))
    if not pks:
        return {}
    return dict(
        session.execute(
            select(Connection.id, Connection.connection_id).where(Connection.id.in_(pks))
        ).all()
    )


def mark_processed(session: Session, event_ids: list[str]) -> None:
    """Mark each routed event processed once none of its runs is queued or running any more.

    The event rows are locked first (in id order, so two batches cannot deadlock), so two
    workers finishing runs of one event at once serialize here, and the second one's next
    statement sees the first one's runs as finished (READ COMMITTED re-reads per statement).
    """
    session.execute(_LOCK_EVENTS, {"ids": event_ids}).all()
    session.execute(_EVENTS_PROCESSED, {"ids": event_ids})


@dataclass(frozen=True)
class _Routed:
    """What ``_route`` decided for one event; its runs get their ids at the next flush."""

    runs: tuple[SyncRun, ...] = ()
    notification_ids: tuple[int, ...] = ()
    #: pk → (pk, connection_id, metadata, credentials_encrypted) of the runs' connections.
    connections: Mapping[int, _ConnectionRow] = field(default_factory=dict)

    def result(self, row: WebhookEvent, claim: bool) -> RouteResult:
        run_ids = tuple(run.id for run in self.runs)
        if not claim:
            return RouteResult(run_ids, self.notification_ids, row.state)
        claims = tuple(
            Claim(
                run_id=run.id,
                attempt=run.attempts,
                kind=run.kind,
                sync_name=run.sync_name,
                sync_type=run.sync_type,
                started_at=run.started_at or run.created_at,
                payload=run.payload,
                options={},
                webhook_event_id=run.webhook_event_id,
                connection_pk=run.connection_pk,
                connection_id=self.connections[run.connection_pk][1],
                provider_config_key=row.provider_config_key,
                credentials_encrypted=self.connections[run.connection_pk][3],
                metadata=dict(self.connections[run.connection_pk][2] or {}),
                last_sync_date=None,
            )
            for run in self.runs
        )
        return RouteResult(run_ids, self.notification_ids, row.state, True, claims)


def _route(
    session: Session,
    ctx: AppContext,
    row: WebhookEvent,
    *,
    now: datetime,
    dedupe: bool,
    claim: bool = False,
    plan: EventPlan | None = None,
    batch: _Batch | None = None,
) -> _Routed:
    """Route ``row`` (already added to the session) and set its outcome on it.

    Args:
        dedupe: Claim the delivery ids (a new event); False replays, bypassing the dedupe.
        plan: The event's plan when the caller made it already (a batch).
        batch: The batch's shared reads; None reads them for this event alone.
    """
    row.routed_at = now
    integration = ctx.integrations.by_key.get(row.provider_config_key)
    if integration is None:
        _finish(
            row,
            WebhookState.REJECTED,
            f"integration {row.provider_config_key!r} is no longer configured",
        )
        return _Routed()

    connections = (
        batch.connections(row.provider_config_key)
        if batch is not None
        else _connections_of(session, row.provider_config_key)
    )
    pk_by_id = {connection[1]: connection[0] for connection in connections}
    if plan is None:
        plan = plan_event(
            integration,
            row.headers,
            row.body,
            [(connection[1], connection[2] or {}) for connection in connections],
        )
    row.delivery_id = plan.delivery_id
    row.event_type = ",".join(plan.event_types)[:255] or None
    if plan.rejection is not None:
        _finish(row, WebhookState.REJECTED, plan.rejection)
        return _Routed()

    fresh: list[EventRoute] = []
    duplicate_of: WebhookDelivery | None = None
    for route in plan.routes:
        seen = _claim_delivery(session, row, route.delivery_id, now, batch) if dedupe else None
        if seen is None:
            fresh.append(route)
        else:
            duplicate_of = duplicate_of or seen
    if not fresh:
        assert duplicate_of is not None
        _finish(
            row,
            WebhookState.DUPLICATE,
            f"delivery id {duplicate_of.delivery_id!r} was already received as event "
            f"{duplicate_of.event_id} at {api_time(duplicate_of.seen_at)} (kept 7 days)",
        )
        return _Routed()

    # A claimed run is running: the short run lease its heartbeat renews. A queued one's
    # lease is the time by which its message must have been picked up.
    lease = now + timedelta(
        seconds=ctx.settings.run_lease_seconds if claim else ctx.settings.lease_seconds
    )
    runs: list[SyncRun] = []
    problems: list[str] = []
    for route in fresh:
        if route.problem is not None:
            problems.append(_describe(plan, route))
            continue
        for connection_id in route.connection_ids:
            for sync_name in route.sync_names:
                runs.append(
                    new_webhook_run(
                        connection_pk=pk_by_id[connection_id],
                        sync_name=sync_name,
                        event_id=row.id,
                        payload=route.payload,
                        now=now,
                        lease=lease,
                        claimed=claim,
                    )
                )
    # A new event has no runs yet; a replayed one adds to those it had.
    previous = (
        0
        if dedupe
        else session.scalar(
            select(func.count(SyncRun.id)).where(SyncRun.webhook_event_id == row.id)
        )
    )
    session.add_all(runs)
    row.runs_count = int(previous or 0) + len(runs)

    notification_ids = _forward(session, ctx, row, integration.provider.forward_webhooks, fresh)
    error = "; ".join(problems) or None
    if runs:
        state = WebhookState.ROUTED
    elif all(route.rejected for route in fresh if route.problem is not None):
        state = WebhookState.REJECTED
    else:
        state = WebhookState.UNROUTED
    _finish(row, state, error)
    by_pk = {connection[0]: connection for connection in connections}
    return _Routed(
        tuple(runs), notification_ids, {run.connection_pk: by_pk[run.connection_pk] for run in runs}
    )


#: ``(pk, connection_id, metadata, credentials_encrypted)`` of a connection.
_ConnectionRow = tuple[int, str, Any, str]


def _connections_of(session: Session, key: str) -> list[_ConnectionRow]:
    """Every connection of integration ``key`` (with what a claim of its runs needs)."""
    return [
        (pk, cid, meta, credentials)
        for pk, cid, meta, credentials in session.execute(_CONNECTIONS_OF, {"key": key})
    ]


# The batch's reads, built once (building a statement costs about as much as running it).
_EVENTS_BY_ID = select(WebhookEvent).where(WebhookEvent.id.in_(bindparam("ids", expanding=True)))
_DELIVERIES_SEEN = select(WebhookDelivery).where(
    tuple_(WebhookDelivery.provider_config_key, WebhookDelivery.delivery_id).in_(
        bindparam("pairs", expanding=True)
    )
)
_CONNECTIONS_OF = (
    select(
        Connection.id,
        Connection.connection_id,
        Connection.metadata_json,
        Connection.credentials_encrypted,
    )
    .where(Connection.provider_config_key == bindparam("key"))
    .order_by(Connection.id)
)


def _claim_delivery(
    session: Session,
    row: WebhookEvent,
    delivery_id: str,
    now: datetime,
    batch: _Batch | None = None,
) -> WebhookDelivery | None:
    """Record the first sighting of ``delivery_id``; return the earlier one if it is recent.

    In a batch the sighting is looked up in what the batch prefetched (or added itself) and
    added without a savepoint: a provider retry that another worker committed meanwhile
    fails the batch's flush, and the caller routes the batch again one event at a time.
    """
    key = (row.provider_config_key, delivery_id)
    existing = batch.deliveries.get(key) if batch is not None else session.get(WebhookDelivery, key)
    if existing is not None:
        if now - existing.seen_at < DEDUPE_WINDOW:
            return existing
        # Older than the window: a new delivery that happens to reuse the id.
        existing.event_id = row.id
        existing.seen_at = now
        return None
    sighting = WebhookDelivery(
        provider_config_key=row.provider_config_key,
        delivery_id=delivery_id,
        event_id=row.id,
        seen_at=now,
    )
    if batch is not None:
        session.add(sighting)
        batch.deliveries[key] = sighting
        return None
    try:
        with session.begin_nested():
            session.add(sighting)
    except IntegrityError:
        # A provider retry raced this one in another worker, which committed first.
        return session.get(WebhookDelivery, key, populate_existing=True)
    return None


def _forward(
    session: Session,
    ctx: AppContext,
    row: WebhookEvent,
    enabled: bool,
    routes: list[EventRoute],
) -> tuple[int, ...]:
    """Forward each (non-duplicate) event raw to the app, once per matching connection.

    An event that matched no connection is forwarded once without a connection id, so the
    app still sees what the provider sent.
    """
    if not enabled:
        return ()
    ids: list[int] = []
    for route in routes:
        for connection_id in route.connection_ids or (None,):
            ids.extend(
                record_forward(
                    session, ctx.settings, row.provider_config_key, connection_id, route.payload
                )
            )
    return tuple(ids)


def _finish(row: WebhookEvent, state: WebhookState, error: str | None) -> None:
    row.state = state.value
    row.error = error


def _already_routed(session: Session, row: WebhookEvent) -> RouteResult:
    run_ids = session.scalars(
        select(SyncRun.id)
        .where(SyncRun.webhook_event_id == row.id, SyncRun.state == RunState.QUEUED.value)
        .order_by(SyncRun.id)
    ).all()
    return RouteResult(tuple(run_ids), (), row.state)


def _describe(plan: EventPlan, route: EventRoute) -> str:
    if route.index is None:
        return str(route.problem)
    return f"event {route.index}: {route.problem}"


def _event_id(event: Mapping[str, Any]) -> str:
    value = event.get("id")
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadInputError(f"event id must be a string of 1-64 characters, got {value!r}")
    return value


def _routing_headers(ctx: AppContext, provider_config_key: str) -> frozenset[str]:
    """The headers routing reads for an integration (kept unredacted); none when unknown."""
    try:
        integration = ctx.integrations.by_key.get(provider_config_key)
    except HooksyncError:  # a broken configuration: redact everything credential-like
        return frozenset()
    return routing_headers(integration.provider.webhook) if integration else frozenset()


def _new_event_row(
    event_id: str, event: Mapping[str, Any], keep: frozenset[str] = frozenset()
) -> WebhookEvent:
    try:
        body = base64.b64decode(event["body_b64"], validate=True)
        received_at = datetime.fromisoformat(event["received_at"])
        key = str(event["provider_config_key"])
        # The receiver redacted them already; again here for entries queued before it did.
        headers = redact_headers(
            {str(k).lower(): str(v) for k, v in dict(event.get("headers") or {}).items()}, keep
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise BadInputError(f"event {event_id} is malformed: {error!r}") from None
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return WebhookEvent(
        id=event_id,
        provider_config_key=key,
        delivery_id="",  # set by routing, in the same transaction
        event_type=None,
        state=WebhookState.RECEIVED.value,
        url=str(event.get("url", "")),
        headers=headers,
        body=body,
        received_at=received_at,
        runs_count=0,
    )


_LOCK_EVENTS = (
    select(WebhookEvent.id)
    .where(WebhookEvent.id.in_(bindparam("ids", expanding=True)))
    .order_by(WebhookEvent.id)
    .with_for_update()
)
_EVENTS_PROCESSED = (
    update(WebhookEvent)
    .where(
        WebhookEvent.id.in_(bindparam("ids", expanding=True)),
        WebhookEvent.state == WebhookState.ROUTED.value,
        ~select(SyncRun.id)
        .where(
            SyncRun.webhook_event_id == WebhookEvent.id,
            SyncRun.state.in_([RunState.QUEUED.value, RunState.RUNNING.value]),
        )
        .exists(),
    )
    .values(state=WebhookState.PROCESSED.value)
    .execution_options(synchronize_session=False)
)


# -- reads for the console's chart ----------------------------------------------------------


def count_per_minute(session: Session, since: datetime) -> list[tuple[str, str, int]]:
    """Stored events received since ``since``, counted by minute and state (one query).

    Returns:
        ``[(minute, state, count)]``, the minute as ``YYYY-MM-DD HH:MM`` in UTC.
    """
    column = WebhookEvent.received_at
    if session.get_bind().dialect.name == "postgresql":
        minute = func.to_char(func.date_trunc("minute", column), "YYYY-MM-DD HH24:MI")
    else:  # SQLite: the naive UTC text sorts and cuts like an ISO time
        minute = func.strftime("%Y-%m-%d %H:%M", column)
    rows = session.execute(
        select(minute, WebhookEvent.state, func.count())
        .where(column >= since)
        .group_by(minute, WebhookEvent.state)
    ).all()
    return [(str(at), str(state), int(count)) for at, state, count in rows]
