"""The notification outbox: the owner of ``notifications``, ``notification_attempts`` and
``app_endpoints`` (ARCHITECTURE.md §8, §12). Every write to them is made here.

Recording and sending are separate steps. ``record_*`` add one ``notifications`` row per
(message, app URL) inside the caller's transaction, holding the exact JSON text that will
be sent (``workers.app_webhooks``); after committing, the caller enqueues the returned ids.
``workers.delivery`` sends a row: ``claim`` leases it with a conditional UPDATE (so two
workers never send the same attempt), the POST goes out outside any transaction, then
``record_outcome`` stores what came of it (``claim_many`` and ``record_deliveries`` do the
same for a batch). Retries are not Celery countdowns: a failed attempt stores
``next_attempt_at`` and the beat tick's sweeper dispatches the row again once that time has
come (``sweep_due``, called by ``scheduler.tick``).

Dispatch marker: ``lease_expires_at`` doubles as "dispatched at". A row is created with it
set to its creation time (its caller enqueues it right away), and the sweeper stamps it with
the tick time when it re-enqueues a due row; both stamp ``DISPATCH_SKEW_SECONDS`` early.
``claim`` treats any lease at or before its ``started`` as free, so the marker never blocks
a send, while the sweeper re-dispatches a row only once its marker (or a crashed sender's
lease) is ``lease_seconds`` old — a backlog of due rows does not pile up duplicate messages.

Order: a sync webhook belongs to a stream, (app URL, integration, connection, sync, model)
(``stream``, ``workers.app_webhooks.stream_key``; forwards have none). A row is claimed
(and swept) only while no earlier row of its stream is ``pending`` (``_NOT_BLOCKED``), so a
later completion never overtakes an earlier one still being retried, and a stream has at
most one POST in flight. Only a row that leaves ``pending`` (delivered, failed after its
retries, gone) releases its followers, which ``workers.delivery`` then sends at once
(``followers``). A failing app endpoint holds back only its own streams; ``waiting_behind``
counts what waits behind a row. A failed head does not block its stream forever: retrying
it (``retry_notification``) sends it after the followers that went out meanwhile.

Recovery: ``claim`` stamps ``claimed_at`` with the short send lease
(``SEND_LEASE_SECONDS``, just above the POST timeout); the sweeper re-dispatches a row whose
send lease expired at once (a crashed sender is replaced within lease + one tick), and a row
only dispatched (``claimed_at`` None, the message maybe still queued) once the longer
``lease_seconds`` passed, so a backlog does not pile up duplicate messages. A stale sender's
outcome is fenced by its lease (``record_outcome``); only "delivered" is stored regardless.

Gone URLs: a 410 marks the URL gone in ``app_endpoints`` and, in the same transaction, every
other pending row to it ``gone`` (none of them is sent). ``record_*`` then add no rows for
it. A row recorded concurrently with the 410 (it read the URL as active) is caught when a
worker claims it: the claim checks the mark and turns the row ``gone`` instead of sending.
Retrying a notification to the URL (``retry_notification``) is the operator's way back.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from cache.context import AppContext
from cache.db import rows_matched, session_scope, update_where
from cache.models import (
    AppEndpoint,
    Connection,
    Notification,
    NotificationAttempt,
    NotificationState,
    SyncRun,
    utcnow,
)
from cache.timestamps import js_time
from config.errors import BadInputError
from config.settings import Settings
from workers import metrics
from workers.app_webhooks import (
    COUNT_NAMES,
    encode_body,
    endpoint_id,
    forward_body,
    read_count,
    redact_url,
    stream_key,
    sync_envelope,
)
from workers.outbox_views import get_notification
from workers.retry import next_delay

__all__ = [
    "ATTEMPT_ERROR_CHARS",
    "DISPATCH_SKEW_SECONDS",
    "NOT_SENT_GONE",
    "RETRIABLE_STATUSES",
    "SEND_LEASE_SECONDS",
    "Attempt",
    "claim",
    "claim_many",
    "classify_status",
    "dispatch_marker",
    "enable_endpoint",
    "followers",
    "record_completion",
    "record_completions",
    "record_deliveries",
    "record_failure",
    "record_forward",
    "record_outcome",
    "redispatch_cutoff",
    "release_claim",
    "retry_failed",
    "retry_notification",
    "sweep_due",
]

log = logging.getLogger(__name__)

#: How long one worker owns a row while sending it: just above ``workers.delivery``'s POST
#: timeout (8 s), so a crashed sender is replaced within this plus one beat tick.
SEND_LEASE_SECONDS = 10
#: HTTP statuses retried besides 5xx. 410 stops delivery; any other 4xx fails at once.
RETRIABLE_STATUSES = frozenset({408, 429})
#: The dispatch marker is stamped this far in the past, so a worker whose clock runs behind
#: the beat's (or the web process's) by less than this still finds the row free to claim.
DISPATCH_SKEW_SECONDS = 30

#: ``last_error`` of a row to a URL that was marked gone before the row was sent.
NOT_SENT_GONE = (
    "not sent: the app answered 410 for this URL; retry a notification to it to re-enable"
)


def dispatch_marker(now: datetime) -> datetime:
    """The ``lease_expires_at`` that marks a row as enqueued at ``now`` (see the docstring)."""
    return now - timedelta(seconds=DISPATCH_SKEW_SECONDS)


def redispatch_cutoff(now: datetime, lease_seconds: int) -> datetime:
    """Dispatched rows (not claimed) whose marker is at or before this may be enqueued again.

    A claimed row whose send lease has expired is enqueued again at once (``sweep_due``).
    """
    return now - timedelta(seconds=lease_seconds + DISPATCH_SKEW_SECONDS)


# -- recording ------------------------------------------------------------------------------


def record_completion(
    session: Session,
    settings: Settings,
    run: SyncRun,
    results: Mapping[str, Mapping[str, int]],
    *,
    started_at: datetime | None = None,
) -> list[int]:
    """Record one success webhook per (model in ``results``, app URL).

    A model whose counts are all zero is skipped when ``settings.notify_empty`` is false.
    The caller decides which models appear in ``results`` (include the sync's output models
    with zero counts to notify about executions that changed nothing).

    Args:
        session: The caller's transaction; rows are flushed, not committed.
        settings: For the app URLs and ``notify_empty``.
        run: The finished run (its connection, sync name and ``sync_type``).
        results: ``{model: {"added": n, "updated": n, "deleted": n}}``.
        started_at: The run's start, reported as ``modifiedAfter``/``queryTimeStamp``;
            defaults to ``run.started_at``.

    Returns:
        The new notification ids, to enqueue after commit; ``[]`` when no URL is configured.
    """
    return record_completions(session, settings, [(run, results, started_at)])


def record_completions(
    session: Session,
    settings: Settings,
    completions: Sequence[tuple[SyncRun, Mapping[str, Mapping[str, int]], datetime | None]],
) -> list[int]:
    """``record_completion`` for several ``(run, results, started_at)`` in one INSERT."""
    if not settings.app_webhook_urls:
        return []
    bodies: list[tuple[dict[str, Any], int | None]] = []
    for run, results, started_at in completions:
        connection = _load_connection(session, run)
        if connection is None:
            continue
        start = js_time(started_at or run.started_at or run.created_at or utcnow())
        for model, counts in results.items():
            added, updated, deleted = (read_count(model, counts, name) for name in COUNT_NAMES)
            if not (added or updated or deleted) and not settings.notify_empty:
                continue
            body = {
                **_sync_envelope(connection, run, model),
                "success": True,
                "responseResults": {"added": added, "updated": updated, "deleted": deleted},
                "modifiedAfter": start,
                "queryTimeStamp": start,
            }
            bodies.append((body, run.id))
    return _insert(session, settings.app_webhook_urls, bodies)


def record_failure(
    session: Session,
    settings: Settings,
    run: SyncRun,
    error_type: str,
    description: str,
    *,
    started_at: datetime | None = None,
    failed_at: datetime | None = None,
    model: str | None = None,
) -> list[int]:
    """Record one failure webhook per app URL.

    Args:
        error_type: A short machine-readable kind, e.g. ``script_error``.
        description: Shown to the app; must already be free of secrets.
        started_at: Defaults to ``run.started_at``.
        failed_at: Defaults to ``run.finished_at``, then now.
        model: The sync's first output model, or None.
    """
    if not settings.app_webhook_urls:
        return []
    connection = _load_connection(session, run)
    if connection is None:
        return []
    start = started_at or run.started_at or run.created_at or utcnow()
    failed = failed_at or run.finished_at or utcnow()
    body = {
        **_sync_envelope(connection, run, model),
        "success": False,
        "error": {"type": error_type, "description": description},
        "startedAt": js_time(start),
        "failedAt": js_time(failed),
    }
    return _insert(session, settings.app_webhook_urls, [(body, run.id)])


def record_forward(
    session: Session,
    settings: Settings,
    provider_config_key: str,
    connection_id: str | None,
    payload: Any,
) -> list[int]:
    """Record one forwarded external webhook per app URL (``"type": "forward"``).

    ``from`` is the integration key: hooksync has no separate provider name.
    """
    body = forward_body(provider_config_key, connection_id, payload)
    return _insert(session, settings.app_webhook_urls, [(body, None)])


def _sync_envelope(connection: Connection, run: SyncRun, model: str | None) -> dict[str, Any]:
    return sync_envelope(
        connection_id=connection.connection_id,
        provider_config_key=connection.provider_config_key,
        sync_name=run.sync_name,
        model=model,
        sync_type=run.sync_type,
    )


def _load_connection(session: Session, run: SyncRun) -> Connection | None:
    connection = session.get(Connection, run.connection_pk)
    if connection is None:
        log.warning("run %s: connection %s is gone; no notification", run.id, run.connection_pk)
    return connection


def _insert(
    session: Session, urls: Sequence[str], bodies: Sequence[tuple[Mapping[str, Any], int | None]]
) -> list[int]:
    """One row per (body, URL); ``bodies`` are ``(body, run_id)``."""
    if not bodies or not urls:
        return []
    urls = _active_urls(session, urls)
    now = utcnow()
    rows = []
    for body, run_id in bodies:
        text = encode_body(body)
        # One id per message, shared by its URLs: each app endpoint dedupes on its own.
        webhook_id = "msg_" + uuid.uuid4().hex
        for url in urls:
            rows.append(
                {
                    "run_id": run_id,
                    "url": url,
                    "body": text,
                    "webhook_id": webhook_id,
                    "state": NotificationState.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    # The dispatch marker (see the module docstring): the caller enqueues it.
                    "lease_expires_at": dispatch_marker(now),
                    "created_at": now,
                    "stream": stream_key(url, body),
                }
            )
    if not rows:
        return []
    # One INSERT … RETURNING for every row (no unit of work): ids come back in row order.
    inserted = session.execute(_INSERT_RETURNING_ID, rows)
    return [int(notification_id) for notification_id in inserted.scalars()]


_INSERT_RETURNING_ID = insert(Notification).returning(Notification.id, sort_by_parameter_order=True)


def _active_urls(session: Session, urls: Sequence[str]) -> list[str]:
    """``urls`` without the gone ones; one warning per call names those (redacted).

    Read once per transaction: a batch records many notifications to the same URLs, and a
    410 stored meanwhile is caught when a worker claims the row (``deliver``).
    """
    key = ("hooksync_gone_urls", tuple(urls))
    gone = session.info.get(key)
    if gone is None:
        gone = session.info[key] = set(session.scalars(_GONE_OF, {"urls": sorted(set(urls))}))
    if gone:
        log.warning(
            "app URL(s) %s answered 410 earlier; no notification recorded for them "
            "(retry one of their notifications to re-enable)",
            ", ".join(sorted({redact_url(url) for url in gone})),
        )
    return [url for url in urls if url not in gone]


def classify_status(status: int | None) -> NotificationState | None:
    """Map one attempt's outcome to the next state; None means "retry later".

    ``status`` is None for a network error (no HTTP answer).
    """
    if status is None:
        return None
    if 200 <= status < 300:
        return NotificationState.DELIVERED
    if status == 410:
        return NotificationState.GONE
    if status in RETRIABLE_STATUSES or status >= 500:
        return None
    return NotificationState.FAILED


# -- sending: the claims and the outcomes of ``workers.delivery`` ---------------------------


@dataclass(frozen=True)
class Attempt:
    """One POST's outcome: the app's status (None for a network error), the error to record,
    the app's ``Retry-After`` in seconds, and how long the POST took."""

    status: int | None
    error: str | None
    retry_after: float | None
    duration_ms: int = 0


#: ``notification_attempts.error`` is cut to this many characters.
ATTEMPT_ERROR_CHARS = 500


def _attempt_row(
    notification_id: int, number: int, attempt: Attempt, at: datetime
) -> dict[str, Any]:
    """The ``notification_attempts`` values of one POST (inserted with its outcome)."""
    error = attempt.error[:ATTEMPT_ERROR_CHARS] if attempt.error else None
    return {
        "notification_id": notification_id,
        "attempt": number,
        "attempted_at": at,
        "status": attempt.status,
        "error": error,
        "duration_ms": attempt.duration_ms,
    }


_INSERT_ATTEMPT = insert(NotificationAttempt)


def claim(ctx: AppContext, notification_id: int, started: datetime, lease: datetime) -> Any:
    """Lease one row for sending until ``lease``, if it is due and nobody else is sending it.

    A row whose URL turned out gone is made ``gone`` unsent instead (see the module
    docstring).

    Returns:
        The claimed row's ``url``, ``body``, ``webhook_id``, ``attempts`` and
        ``created_at``, or None when there is nothing to send.
    """
    with session_scope(ctx.sessions) as session:
        claimed = update_where(
            session,
            Notification,
            [
                Notification.id == notification_id,
                Notification.state == NotificationState.PENDING.value,
                Notification.next_attempt_at <= started,
                or_(
                    Notification.lease_expires_at.is_(None),
                    Notification.lease_expires_at <= started,
                ),
                _NOT_BLOCKED,
            ],
            lease_expires_at=lease,
            claimed_at=started,
        )
        if not claimed:
            log.debug(
                "notification %s is not due, is being sent or waits behind an earlier one of "
                "its stream; skipped",
                notification_id,
            )
            return None
        row = session.execute(
            select(
                Notification.url,
                Notification.body,
                Notification.webhook_id,
                Notification.attempts,
                Notification.created_at,
            ).where(Notification.id == notification_id)
        ).one()
        if _is_gone(session, row.url):
            # Recorded while a 410 for its URL was being stored: it missed that update.
            session.execute(
                update(Notification)
                .where(Notification.id == notification_id)
                .values(
                    state=NotificationState.GONE.value,
                    lease_expires_at=None,
                    claimed_at=None,
                    last_error=NOT_SENT_GONE,
                )
                .execution_options(synchronize_session=False)
            )
            log.info("notification %s: its URL is gone; not sent", notification_id)
            return None
    return row


def claim_many(
    ctx: AppContext, notification_ids: list[int], started: datetime, lease: datetime
) -> tuple[list[Any], set[str]]:
    """Lease, in one transaction, every row of ``notification_ids`` that is due and free.

    Of several rows of one stream only the earliest can be claimed (``_NOT_BLOCKED`` reads
    the rows as they were before the statement): a stream never has two POSTs in flight.

    Returns:
        The claimed rows in id order (``id``, ``url``, ``body``, ``webhook_id``,
        ``attempts``, ``run_id``, ``event_id``, ``created_at``), and which of their URLs
        are gone: those rows are left for ``deliver`` (``release_claim``).
    """
    with session_scope(ctx.sessions) as session:
        # RETURNING names exactly the rows this statement claimed: two workers whose leases
        # happen to be equal still never both read a row as theirs.
        claimed = list(
            session.scalars(
                _CLAIM_MANY, {"ids": notification_ids, "p_now": started, "p_lease": lease}
            )
        )
        if not claimed:
            return [], set()
        rows = session.execute(_CLAIMED, {"ids": claimed}).all()
        gone = set(session.scalars(_GONE_OF, {"urls": sorted({row.url for row in rows})}))
    return list(rows), gone


#: The webhook event behind a notification's run (None for a poll's, or a forward), so
#: its log lines carry the event id: ``grep <event id>`` reaches the delivery.
_EVENT_OF_RUN = (
    select(SyncRun.webhook_event_id)
    .where(SyncRun.id == Notification.run_id)
    .scalar_subquery()
    .label("event_id")
)

#: An earlier row of the same stream still ``pending`` (due later, in flight, or not yet
#: sent) blocks a row; rows without a stream are never blocked. Read through
#: ``ix_notifications_stream`` (stream, state, id).
_EARLIER = aliased(Notification, name="earlier")
_NOT_BLOCKED = ~exists().where(
    _EARLIER.stream == Notification.stream,
    _EARLIER.state == NotificationState.PENDING.value,
    _EARLIER.id < Notification.id,
)

# ``claim_many``'s statements, built once (building one costs about as much as running it).
_CLAIM_MANY = (
    update(Notification)
    .where(
        Notification.id.in_(bindparam("ids", expanding=True)),
        Notification.state == NotificationState.PENDING.value,
        Notification.next_attempt_at <= bindparam("p_now"),
        or_(
            Notification.lease_expires_at.is_(None),
            Notification.lease_expires_at <= bindparam("p_now"),
        ),
        _NOT_BLOCKED,
    )
    .values(lease_expires_at=bindparam("p_lease"), claimed_at=bindparam("p_now"))
    .returning(Notification.id)
    .execution_options(synchronize_session=False)
)
_CLAIMED = (
    select(
        Notification.id,
        Notification.url,
        Notification.body,
        Notification.webhook_id,
        Notification.attempts,
        Notification.run_id,
        _EVENT_OF_RUN,
        Notification.created_at,
    )
    .where(Notification.id.in_(bindparam("ids", expanding=True)))
    .order_by(Notification.id)
)
_GONE_OF = select(AppEndpoint.url).where(
    AppEndpoint.url.in_(bindparam("urls", expanding=True)), AppEndpoint.gone_at.is_not(None)
)


def release_claim(ctx: AppContext, notification_id: int, lease: datetime) -> None:
    """End the lease ``claim_many`` took on a row, if it still holds."""
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.lease_expires_at == lease)
            .values(lease_expires_at=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )


def record_deliveries(
    ctx: AppContext, delivered: Sequence[tuple[Any, Attempt]], started: datetime, now: datetime
) -> None:
    """Record a batch's delivered POSTs (rows from ``claim_many``) in one transaction."""
    values = [{"nid": row.id, "status": attempt.status} for row, attempt in delivered]
    attempt_rows = [
        _attempt_row(row.id, row.attempts + 1, attempt, started) for row, attempt in delivered
    ]
    # Delivered is the truth even if the lease ran out meanwhile (as in ``record_outcome``).
    table = cast(Table, Notification.__table__)
    with session_scope(ctx.sessions) as session:
        session.connection().execute(
            update(table)
            .where(
                table.c.id == bindparam("nid"),
                table.c.state == NotificationState.PENDING.value,
            )
            .values(
                state=NotificationState.DELIVERED.value,
                delivered_at=now,
                attempts=table.c.attempts + 1,
                last_status=bindparam("status"),
                last_error=None,
                lease_expires_at=None,
                claimed_at=None,
            ),
            values,
        )
        # The attempts of the batch, one executemany in the same transaction.
        session.execute(_INSERT_ATTEMPT, attempt_rows)
    metrics.count_delivered([row.created_at for row, _ in delivered], now)
    for row, attempt in delivered:
        log.info(
            "notification %s delivered: status %s",
            row.id,
            attempt.status,
            extra={
                "notification_id": row.id,
                "run_id": row.run_id,
                "event_id": row.event_id,
                "url": redact_url(row.url),
                "status": attempt.status,
            },
        )


def record_outcome(
    ctx: AppContext,
    notification_id: int,
    url: str,
    lease: datetime,
    attempts: int,
    attempt: Attempt,
    now: datetime,
    rng: random.Random | None,
    *,
    created_at: datetime | None = None,
) -> None:
    """Store what came of one POST of a row leased by ``claim`` (or ``claim_many``).

    Delivered, gone and failed rows leave ``pending``; a retriable outcome schedules the
    next attempt (``workers.retry.next_delay``), or fails the row once the schedule is used
    up. The attempt is inserted into ``notification_attempts`` in the same transaction.

    Args:
        ctx: For the sessions.
        notification_id: The row that was sent.
        url: Its URL (a 410 stops every pending row to it).
        lease: The lease the claim took; the update is fenced by it, except a delivery.
        attempts: The row's attempts, this one included.
        attempt: The POST's outcome.
        now: When the POST finished.
        rng: Jitter source for the retry delay.
        created_at: The row's creation, for the delivery latency metric.
    """
    state = classify_status(attempt.status)
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status": attempt.status,
        "last_error": attempt.error,
        "lease_expires_at": None,
        "claimed_at": None,
    }
    if state is NotificationState.DELIVERED:
        values.update(state=state.value, delivered_at=now)
    elif state is NotificationState.GONE:
        values.update(state=state.value, last_error="HTTP 410: the app stopped this URL")
    elif state is NotificationState.FAILED:
        values.update(
            state=state.value,
            last_error=f"HTTP {attempt.status}: not retried (only network errors, 408, 429 "
            "and 5xx are)",
        )
    else:
        delay = next_delay(attempts, attempt.retry_after, rng)
        if delay is None:
            values.update(
                state=NotificationState.FAILED.value,
                last_error=f"{attempt.error}; gave up after {attempts} attempts",
            )
        else:
            values.update(next_attempt_at=now + timedelta(seconds=delay))

    condition = [Notification.id == notification_id]
    if state is NotificationState.DELIVERED:
        # Delivered is the truth even if our lease ran out meanwhile.
        condition.append(Notification.state == NotificationState.PENDING.value)
    else:
        condition.append(Notification.lease_expires_at == lease)
    with session_scope(ctx.sessions) as session:
        if state is NotificationState.GONE:
            # The app said so whether or not we still hold the lease. The endpoint row is
            # written first: it serializes concurrent 410s for the URL before either locks
            # notification rows (the other order deadlocks on Postgres).
            _store_gone(session, url, attempt.status or 410, now)
        elif "state" not in values and _is_gone(session, url):
            # Another row's 410 stopped the URL while this attempt was in flight.
            values.update(
                state=NotificationState.GONE.value,
                last_error=f"{attempt.error}; not retried: the app answered 410 for this URL",
            )
        updated = rows_matched(
            session.execute(
                update(Notification)
                .where(*condition)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        )
        if state is NotificationState.GONE:
            _stop_pending(session, url, attempt.status or 410, now, notification_id)
        fields = _log_fields(session, notification_id, url)
        # The POST happened whether or not the lease held: it is part of the row's history.
        started = lease - timedelta(seconds=SEND_LEASE_SECONDS)
        session.execute(_INSERT_ATTEMPT, _attempt_row(notification_id, attempts, attempt, started))
    if not updated:
        log.warning(
            "notification %s: lease lost while sending; another worker owns it", notification_id
        )
    else:
        metrics.count_notification_attempt(values.get("state", "retry"), created_at, now)
        log.info(
            "notification %s attempt %s: status %s, now %s",
            notification_id,
            attempts,
            attempt.status if attempt.status is not None else attempt.error,
            values.get("state", "pending, retry scheduled"),
            extra={**fields, "status": attempt.status},
        )


def _log_fields(session: Session, notification_id: int, url: str) -> dict[str, Any]:
    """The ids a notification's log lines carry: itself, its run, the webhook event behind
    that run, and its URL without credentials (``redact_url``)."""
    row = session.execute(
        select(Notification.run_id, _EVENT_OF_RUN).where(Notification.id == notification_id)
    ).one_or_none()
    return {
        "notification_id": notification_id,
        "run_id": row.run_id if row is not None else None,
        "event_id": row.event_id if row is not None else None,
        "url": redact_url(url),
    }


def _is_gone(session: Session, url: str) -> bool:
    return (
        session.scalar(
            select(AppEndpoint.url).where(AppEndpoint.url == url, AppEndpoint.gone_at.is_not(None))
        )
        is not None
    )


def _store_gone(session: Session, url: str, status: int, now: datetime) -> None:
    """Record ``url`` as gone.

    An upsert, so two workers storing a 410 for the same URL at once both succeed; the
    first ``gone_at`` is kept.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(AppEndpoint).values(url=url, gone_at=now, gone_status=status)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[AppEndpoint.url],
            set_={
                "gone_at": func.coalesce(AppEndpoint.gone_at, statement.excluded.gone_at),
                "gone_status": statement.excluded.gone_status,
            },
        )
    )


def _stop_pending(
    session: Session, url: str, status: int, now: datetime, notification_id: int
) -> None:
    """Make every other pending row to ``url`` ``gone``, unsent.

    Rows another worker is sending right now (their lease runs past ``now``) are left to
    that worker: ``record_outcome`` stops them unless the attempt delivered them.
    """
    stopped = rows_matched(
        session.execute(
            update(Notification)
            .where(
                Notification.url == url,
                Notification.state == NotificationState.PENDING.value,
                Notification.id != notification_id,
                or_(
                    Notification.lease_expires_at.is_(None),
                    Notification.lease_expires_at <= now,
                ),
            )
            .values(
                state=NotificationState.GONE.value,
                lease_expires_at=None,
                claimed_at=None,
                last_error=NOT_SENT_GONE,
            )
            .execution_options(synchronize_session=False)
        )
    )
    log.warning(
        "app URL %s answered %s (notification %s): delivery to it stopped, %s pending "
        "notification(s) marked gone; retry one of them to re-enable the URL",
        redact_url(url),
        status,
        notification_id,
        stopped,
    )


# -- replay and re-enabling (the API and UI; what they list is in workers.outbox_views) -----


def retry_failed(session: Session, since: datetime, now: datetime) -> list[int]:
    """Make every failed or gone notification created at or after ``since`` pending again.

    Each is retried as ``retry_notification`` retries one: a full retry cycle, and the URLs
    they were sent to re-enabled if a 410 had stopped them. The caller enqueues the returned
    ids after commit.
    """
    rows = session.execute(
        select(Notification.id, Notification.url)
        .where(
            Notification.state.in_([NotificationState.FAILED.value, NotificationState.GONE.value]),
            Notification.created_at >= since,
        )
        .order_by(Notification.id)
        .with_for_update()
    ).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    urls = sorted({row.url for row in rows})
    reenabled = rows_matched(
        session.execute(
            update(AppEndpoint)
            .where(AppEndpoint.url.in_(urls), AppEndpoint.gone_at.is_not(None))
            .values(gone_at=None, gone_status=None)
            .execution_options(synchronize_session=False)
        )
    )
    if reenabled:
        log.warning("%s app URL(s) re-enabled by retrying failed notifications", reenabled)
    session.execute(
        update(Notification)
        .where(Notification.id.in_(ids))
        .values(
            state=NotificationState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            lease_expires_at=dispatch_marker(now),  # the caller enqueues them
            claimed_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    log.info("%s failed or gone notification(s) since %s made pending", len(ids), since)
    return ids


def enable_endpoint(session: Session, endpoint: str, urls: Sequence[str]) -> str | None:
    """Clear the gone mark of the configured URL whose ``endpoint_id`` is ``endpoint``.

    The notifications the 410 stopped stay gone (retry them with ``retry_failed``).

    Returns:
        That URL (already active or not), or None when no configured URL has this id.
    """
    url = next((url for url in urls if endpoint_id(url) == endpoint), None)
    if url is None:
        return None
    enabled = rows_matched(
        session.execute(
            update(AppEndpoint)
            .where(AppEndpoint.url == url, AppEndpoint.gone_at.is_not(None))
            .values(gone_at=None, gone_status=None)
            .execution_options(synchronize_session=False)
        )
    )
    if enabled:
        log.warning("app URL %s re-enabled by the operator", redact_url(url))
    return url


def retry_notification(
    session: Session, notification_id: int, now: datetime
) -> Notification | None:
    """Make a failed or gone notification pending again, with a full retry cycle.

    This is also the operator's way back after a 410: retrying a notification whose URL is
    marked gone clears the mark, so the URL is active again (new completions are recorded
    for it). The other notifications that the 410 marked gone stay gone until they are
    retried one by one.

    Returns the row (the caller enqueues its id after commit), or None if there is no such
    notification. A pending row is returned unchanged.

    Raises:
        BadInputError: With code ``not_retryable`` for a delivered notification.
    """
    row = get_notification(session, notification_id)
    if row is None:
        return None
    if row.state == NotificationState.DELIVERED.value:
        raise BadInputError(
            f"notification {notification_id} was already delivered; only failed or gone "
            "notifications can be retried",
            code="not_retryable",
        )
    if row.state in (NotificationState.FAILED.value, NotificationState.GONE.value):
        reenabled = rows_matched(
            session.execute(
                update(AppEndpoint)
                .where(AppEndpoint.url == row.url, AppEndpoint.gone_at.is_not(None))
                .values(gone_at=None, gone_status=None)
                .execution_options(synchronize_session=False)
            )
        )
        if reenabled:
            log.warning(
                "app URL %s re-enabled by the retry of notification %s",
                redact_url(row.url),
                notification_id,
            )
        row.state = NotificationState.PENDING.value
        row.attempts = 0
        row.next_attempt_at = now
        row.lease_expires_at = dispatch_marker(now)  # the caller enqueues it
        row.claimed_at = None
        session.flush()
    return row


def sweep_due(session: Session, now: datetime, lease_seconds: int, limit: int) -> list[int]:
    """Pending notifications that are due, first of their stream, and neither being sent nor
    dispatched lately, stamped as dispatched now: the beat tick enqueues them (what drives
    delivery retries).

    A row whose send lease expired (its sender died or hung) is taken at once; a row only
    dispatched is taken once its marker is ``lease_seconds`` old (its message was lost).
    """
    ids = list(
        session.scalars(
            select(Notification.id)
            .where(
                Notification.state == NotificationState.PENDING.value,
                Notification.next_attempt_at <= now,
                or_(
                    Notification.lease_expires_at.is_(None),
                    and_(
                        Notification.claimed_at.is_not(None),
                        Notification.lease_expires_at <= now,
                    ),
                    Notification.lease_expires_at <= redispatch_cutoff(now, lease_seconds),
                ),
                _NOT_BLOCKED,
            )
            .order_by(Notification.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids))
            .values(lease_expires_at=dispatch_marker(now), claimed_at=None)
            .execution_options(synchronize_session=False)
        )
    return ids


def followers(ctx: AppContext, notification_ids: Sequence[int]) -> list[int]:
    """The next pending row of each stream whose row in ``notification_ids`` left ``pending``.

    ``workers.delivery`` sends them right after their head's outcome, so a stream's backlog
    drains without waiting for the sweeper. Ids in ascending order.
    """
    if not notification_ids:
        return []
    with session_scope(ctx.sessions) as session:
        released = (
            select(Notification.stream)
            .where(
                Notification.id.in_(list(notification_ids)),
                Notification.stream.is_not(None),
                Notification.state != NotificationState.PENDING.value,
            )
            .scalar_subquery()
        )
        ids = session.scalars(
            select(func.min(Notification.id))
            .where(
                Notification.stream.in_(released),
                Notification.state == NotificationState.PENDING.value,
            )
            .group_by(Notification.stream)
        )
        return sorted(int(notification_id) for notification_id in ids)
