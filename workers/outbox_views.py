"""What the API, the console and ``/metrics`` read of the notification outbox.

Read-only views of ``notifications``, ``notification_attempts`` and ``app_endpoints``:
listings with their filters, one row and its attempts, the backlog behind a stream's head,
the oldest pending row. Every write to those tables, and what the states mean, is
``workers.outbox``'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from cache.models import (
    AppEndpoint,
    Connection,
    Notification,
    NotificationAttempt,
    NotificationState,
    SyncRun,
)
from config.errors import BadInputError

__all__ = [
    "MAX_ID",
    "MAX_LIST_LIMIT",
    "EndpointStatus",
    "get_notification",
    "list_attempts",
    "list_endpoints",
    "list_notifications",
    "oldest_pending",
    "waiting_behind",
]


@dataclass(frozen=True)
class EndpointStatus:
    """One configured app URL and whether delivery to it is stopped."""

    url: str
    gone_at: datetime | None
    gone_status: int | None

    @property
    def state(self) -> str:
        return "active" if self.gone_at is None else "gone"


def list_endpoints(session: Session, urls: Sequence[str]) -> list[EndpointStatus]:
    """The state of each URL in ``urls`` (the configured ones), in that order.

    ``url`` is the full URL: redact it (``redact_url``) before showing it.
    """
    found = {
        row.url: row
        for row in session.scalars(select(AppEndpoint).where(AppEndpoint.url.in_(set(urls))))
    }
    statuses = []
    for url in urls:
        row = found.get(url)
        gone_at = row.gone_at if row is not None else None
        statuses.append(EndpointStatus(url, gone_at, row.gone_status if row and gone_at else None))
    return statuses


def list_notifications(
    session: Session,
    *,
    state: str | None = None,
    connection_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[Notification]:
    """Newest first, filtered.

    Args:
        state: Only this state (``pending``/``delivered``/``failed``/``gone``).
        connection_id: Only notifications about this connection id (any integration): the
            run's connection for sync webhooks, ``connectionId`` for forwards.
        since: Created at or after this instant.
        until: Created before this instant.
        limit: 1 to ``MAX_LIST_LIMIT``.

    Raises:
        BadInputError: An unknown state or a limit out of range (naming the field).
    """
    query = select(Notification).order_by(Notification.id.desc())
    if state is not None:
        try:
            query = query.where(Notification.state == NotificationState(state).value)
        except ValueError:
            allowed = ", ".join(s.value for s in NotificationState)
            raise BadInputError(
                f"state must be one of {allowed}, got {state!r}", field="state"
            ) from None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadInputError(
            f"limit must be from 1 to {MAX_LIST_LIMIT}, got {limit!r}", field="limit"
        )
    if connection_id is not None:
        runs_of_connection = (
            select(SyncRun.id)
            .join(Connection, Connection.id == SyncRun.connection_pk)
            .where(Connection.connection_id == connection_id)
        )
        query = query.where(
            or_(
                Notification.run_id.in_(runs_of_connection),
                and_(Notification.run_id.is_(None), _forward_for(session, connection_id)),
            )
        )
    if since is not None:
        query = query.where(Notification.created_at >= since)
    if until is not None:
        query = query.where(Notification.created_at < until)
    return list(session.scalars(query.limit(limit)))


def _forward_for(session: Session, connection_id: str) -> ColumnElement[bool]:
    """A forward's body names ``connection_id`` as its top-level ``connectionId``.

    The text match (``encode_body`` is deterministic) narrows the rows cheaply; the JSON
    read decides, since the forwarded payload may hold the same text anywhere.
    """
    marker = f'"connectionId":{_json_value(connection_id)},'
    if session.get_bind().dialect.name == "postgresql":
        top_level = sql_cast(Notification.body, postgresql.JSONB)["connectionId"].astext
    else:
        top_level = func.json_extract(Notification.body, "$.connectionId")
    return and_(Notification.body.contains(marker, autoescape=True), top_level == connection_id)


#: The largest ``limit`` of ``list_notifications``.
MAX_LIST_LIMIT = 1000
#: Ids are 64-bit signed integers in both databases; a larger one names no row (and SQLite
#: would raise OverflowError binding it).
MAX_ID = 2**63 - 1


def _json_value(value: Any) -> str:
    """One JSON value as ``encode_body`` writes it inside a body."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def get_notification(session: Session, notification_id: int) -> Notification | None:
    """One notification, or None (also for an id no row can have)."""
    if not 0 < notification_id <= MAX_ID:
        return None
    return session.get(Notification, notification_id)


def list_attempts(session: Session, notification_id: int) -> list[NotificationAttempt]:
    """Every recorded POST of a notification, oldest first."""
    if not 0 < notification_id <= MAX_ID:
        return []
    return list(
        session.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.notification_id == notification_id)
            .order_by(NotificationAttempt.id)
        )
    )


def waiting_behind(session: Session, notifications: Sequence[Notification]) -> dict[int, int]:
    """How many pending rows of its stream wait behind each pending row of ``notifications``.

    For a stream's head that is its backlog; 0 for rows without a stream or not pending.
    One query for a whole listing.
    """
    heads = [
        row.id
        for row in notifications
        if row.stream is not None and row.state == NotificationState.PENDING.value
    ]
    counts = dict.fromkeys((row.id for row in notifications), 0)
    if not heads:
        return counts
    later = aliased(Notification, name="later")
    rows = session.execute(
        select(Notification.id, func.count(later.id))
        .join(
            later,
            and_(
                later.stream == Notification.stream,
                later.state == NotificationState.PENDING.value,
                later.id > Notification.id,
            ),
        )
        .where(Notification.id.in_(heads))
        .group_by(Notification.id)
    )
    for notification_id, count in rows:
        counts[notification_id] = int(count)
    return counts


def oldest_pending(session: Session) -> datetime | None:
    """When the oldest notification not yet delivered (nor given up) was created (``/metrics``).

    Reads only the pending rows, through the ``(state, next_attempt_at)`` index.
    """
    return session.scalar(
        select(Notification.created_at)
        .where(Notification.state == NotificationState.PENDING.value)
        .order_by(Notification.created_at)
        .limit(1)
    )
