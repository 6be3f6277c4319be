"""Route a received webhook: record it, dedupe it, fan it out into runs (DESIGN §6).

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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from cache.db import session_scope
from cache.models import (
    Connection,
    RunKind,
    RunState,
    SyncRun,
    WebhookDelivery,
    WebhookEvent,
    WebhookState,
    utcnow,
)
from cache.page import format_time
from config.context import AppContext
from config.errors import BadInputError, RetriableError
from workers.routing import EventPlan, EventRoute, plan_event

__all__ = ["DEDUPE_WINDOW", "RouteResult", "prune_deliveries", "replay_event", "route_event"]

#: A delivery id seen within this window is a duplicate (providers retry for days).
DEDUPE_WINDOW = timedelta(days=7)

#: ``SyncRun.sync_type`` of webhook runs, as the completion webhook reports it.
WEBHOOK_SYNC_TYPE = "WEBHOOK"


@dataclass(frozen=True)
class RouteResult:
    """What routing produced, for the caller to enqueue."""

    #: New queued ``SyncRun`` ids (``hooksync.run_sync``).
    run_ids: tuple[int, ...] = ()
    #: New forward notifications (``hooksync.deliver_notification``).
    notification_ids: tuple[int, ...] = ()
    #: The event's state after routing (a ``WebhookState`` value).
    state: str = WebhookState.RECEIVED.value


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
    now = now or utcnow()
    event_id = _event_id(event)
    row = _new_event_row(event_id, event)
    try:
        try:
            with session_scope(ctx.sessions) as session:
                existing = session.get(WebhookEvent, event_id)
                if existing is not None:
                    return _already_routed(session, existing)
                session.add(row)
                session.flush()
                return _route(session, ctx, row, now=now, dedupe=True)
        except IntegrityError:
            # Two workers got the same message at once; the other inserted the row first.
            with session_scope(ctx.sessions) as session:
                existing = session.get(WebhookEvent, event_id)
                if existing is None:
                    raise
                return _already_routed(session, existing)
    except (OperationalError, InterfaceError) as error:
        # The database is down or locked: the event exists only in this message, so the
        # caller must keep it (retry / re-publish), never drop it.
        raise RetriableError(
            f"could not record webhook event {event_id}: database unavailable "
            f"({type(error.orig).__name__ if error.orig is not None else type(error).__name__})"
        ) from error
    except SQLAlchemyError as error:
        # The database refused something routing derived from the body (say a NUL byte in
        # an event type, which Postgres text cannot hold). Keep the raw event, rejected and
        # replayable, rather than lose the only copy with the message.
        return _keep_rejected(ctx, _new_event_row(event_id, event), error)


def _keep_rejected(ctx: AppContext, row: WebhookEvent, error: Exception) -> RouteResult:
    reason = f"could not route: {type(error).__name__}"
    row.delivery_id = row.id
    row.state = WebhookState.REJECTED.value
    row.error = reason
    try:
        with session_scope(ctx.sessions) as session:
            if session.get(WebhookEvent, row.id) is None:
                session.add(row)
    except SQLAlchemyError as again:
        raise RetriableError(f"could not record webhook event {row.id}: {reason}") from again
    return RouteResult((), (), WebhookState.REJECTED.value)


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
        return _route(session, ctx, row, now=now, dedupe=False)


def prune_deliveries(session: Session, now: datetime | None = None) -> int:
    """Delete delivery ids older than the dedupe window (for the beat tick); returns the count."""
    cutoff = (now or utcnow()) - DEDUPE_WINDOW
    result = session.execute(delete(WebhookDelivery).where(WebhookDelivery.seen_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def _route(
    session: Session, ctx: AppContext, row: WebhookEvent, *, now: datetime, dedupe: bool
) -> RouteResult:
    row.routed_at = now
    integration = ctx.integrations.integrations.get(row.provider_config_key)
    if integration is None:
        return _finish(
            row,
            WebhookState.REJECTED,
            f"integration {row.provider_config_key!r} is no longer configured",
        )

    connections = session.execute(
        select(Connection.id, Connection.connection_id, Connection.metadata_json)
        .where(Connection.provider_config_key == row.provider_config_key)
        .order_by(Connection.id)
    ).all()
    pk_by_id = {cid: pk for pk, cid, _ in connections}
    plan = plan_event(
        integration, row.headers, row.body, [(cid, meta or {}) for _, cid, meta in connections]
    )
    row.delivery_id = plan.delivery_id
    row.event_type = ",".join(plan.event_types)[:255] or None
    if plan.rejection is not None:
        return _finish(row, WebhookState.REJECTED, plan.rejection)

    fresh: list[EventRoute] = []
    duplicate_of: WebhookDelivery | None = None
    for route in plan.routes:
        seen = _claim_delivery(session, row, route.delivery_id, now) if dedupe else None
        if seen is None:
            fresh.append(route)
        else:
            duplicate_of = duplicate_of or seen
    if not fresh:
        assert duplicate_of is not None
        return _finish(
            row,
            WebhookState.DUPLICATE,
            f"delivery id {duplicate_of.delivery_id!r} was already received as event "
            f"{duplicate_of.event_id} at {format_time(duplicate_of.seen_at)} (kept 7 days)",
        )

    lease = now + timedelta(seconds=ctx.settings.lease_seconds)
    runs: list[SyncRun] = []
    problems: list[str] = []
    for route in fresh:
        if route.problem is not None:
            problems.append(_describe(plan, route))
            continue
        for connection_id in route.connection_ids:
            for sync_name in route.sync_names:
                runs.append(
                    SyncRun(
                        connection_pk=pk_by_id[connection_id],
                        sync_name=sync_name,
                        kind=RunKind.WEBHOOK.value,
                        sync_type=WEBHOOK_SYNC_TYPE,
                        state=RunState.QUEUED.value,
                        webhook_event_id=row.id,
                        payload=route.payload,
                        options={},
                        created_at=now,
                        lease_expires_at=lease,
                        attempts=0,
                        result={},
                    )
                )
    previous = session.scalar(
        select(func.count(SyncRun.id)).where(SyncRun.webhook_event_id == row.id)
    )
    session.add_all(runs)
    session.flush()
    row.runs_count = int(previous or 0) + len(runs)

    notification_ids = _forward(session, ctx, row, integration.provider.forward_webhooks, fresh)
    error = "; ".join(problems) or None
    if runs:
        state = WebhookState.ROUTED
    elif all(route.rejected for route in fresh if route.problem is not None):
        state = WebhookState.REJECTED
    else:
        state = WebhookState.UNROUTED
    result = _finish(row, state, error)
    return RouteResult(tuple(run.id for run in runs), notification_ids, result.state)


def _claim_delivery(
    session: Session, row: WebhookEvent, delivery_id: str, now: datetime
) -> WebhookDelivery | None:
    """Record the first sighting of ``delivery_id``; return the earlier one if it is recent."""
    key = (row.provider_config_key, delivery_id)
    existing = session.get(WebhookDelivery, key)
    if existing is not None:
        if now - existing.seen_at < DEDUPE_WINDOW:
            return existing
        # Older than the window: a new delivery that happens to reuse the id.
        existing.event_id = row.id
        existing.seen_at = now
        return None
    try:
        with session.begin_nested():
            session.add(
                WebhookDelivery(
                    provider_config_key=row.provider_config_key,
                    delivery_id=delivery_id,
                    event_id=row.id,
                    seen_at=now,
                )
            )
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
    from workers.notify import record_forward

    ids: list[int] = []
    for route in routes:
        for connection_id in route.connection_ids or (None,):
            ids.extend(
                record_forward(
                    session, ctx.settings, row.provider_config_key, connection_id, route.payload
                )
            )
    return tuple(ids)


def _finish(row: WebhookEvent, state: WebhookState, error: str | None) -> RouteResult:
    row.state = state.value
    row.error = error
    return RouteResult(state=state.value)


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


def _new_event_row(event_id: str, event: Mapping[str, Any]) -> WebhookEvent:
    try:
        body = base64.b64decode(event["body_b64"], validate=True)
        received_at = datetime.fromisoformat(event["received_at"])
        key = str(event["provider_config_key"])
        headers = {str(k).lower(): str(v) for k, v in dict(event.get("headers") or {}).items()}
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
