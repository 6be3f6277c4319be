"""SQLAlchemy tables: the database is the source of truth for all work (ARCHITECTURE.md §1).

Every unit of work — a received webhook, a sync run, a notification — has a row with a
state and, while it is being worked on, a lease. Redis only carries ids between processes.
Migrations in ``cache/migrations`` create exactly these tables; change both together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AppEndpoint",
    "Base",
    "Connection",
    "ConnectionState",
    "ModelSeq",
    "Notification",
    "NotificationAttempt",
    "NotificationState",
    "Record",
    "RunKind",
    "RunState",
    "Schedule",
    "ScheduleState",
    "SyncRun",
    "TrackingSeen",
    "TrackingWindow",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookState",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the column.

    SQLite has no time zones; storing naive UTC everywhere keeps microseconds and ordering
    identical on SQLite and Postgres. Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class ScheduleState(str, Enum):
    STARTED = "STARTED"
    PAUSED = "PAUSED"


class RunKind(str, Enum):
    POLL = "poll"  # fetch_data, from the scheduler or a trigger
    WEBHOOK = "webhook"  # on_webhook_payload_received, from one routed event


class RunSyncType(str, Enum):
    """What a run is, as the completion webhook's ``syncType`` names it (Nango's values)."""

    INITIAL = "INITIAL"  # a poll from the start (first run, full sync, or a reset)
    INCREMENTAL = "INCREMENTAL"  # a poll from the last success's start
    WEBHOOK = "WEBHOOK"  # one webhook's handler


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in (RunState.QUEUED, RunState.RUNNING)


class WebhookState(str, Enum):
    RECEIVED = "received"
    ROUTED = "routed"  # runs were created for it
    UNROUTED = "unrouted"  # no connection or sync matched; kept, replayable
    REJECTED = "rejected"  # malformed for routing (e.g. no event type where one is needed)
    DUPLICATE = "duplicate"  # its delivery id was seen within the dedupe window
    PROCESSED = "processed"  # every run it caused has finished


class ConnectionState(str, Enum):
    ACTIVE = "active"
    #: Its token refresh was refused for good: its polls stop until new credentials come.
    REFRESH_FAILED = "refresh_failed"


class NotificationState(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # retries exhausted; replayable
    GONE = "gone"  # the app answered 410 (for this or another row to the URL): not sent again


_naming = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = _naming


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("provider_config_key", "connection_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_config_key: Mapped[str] = mapped_column(String(255))
    connection_id: Mapped[str] = mapped_column(String(255))
    #: Fernet token of the credentials JSON; never returned by the API or logged.
    credentials_encrypted: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: ``ConnectionState``: whether its credentials still work (token refresh).
    state: Mapped[str] = mapped_column(
        String(32), default=ConnectionState.ACTIVE.value, server_default="active"
    )
    #: Why the state is not ``active`` (the refusal, secrets masked); None when active.
    state_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("connection_pk", "model", "external_id"),
        # /records pages and cursors walk (connection, model) in mod_seq order.
        Index("ix_records_page", "connection_pk", "model", "mod_seq", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    connection_pk: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str] = mapped_column(String(255))
    #: Canonical JSON (sorted keys, compact) of the record as last saved.
    payload: Mapped[str] = mapped_column(Text)
    #: sha256 hex of ``payload``: an unchanged save is detected without parsing JSON.
    data_hash: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_modified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Strictly increasing in commit order within (connection, model); orders and pages.
    mod_seq: Mapped[int] = mapped_column(BigInteger)


class ModelSeq(Base):
    """The last ``mod_seq`` handed out per (connection, model).

    Writers lock this row for the length of their transaction, so sequence numbers are
    handed out — and become visible — in commit order.
    """

    __tablename__ = "model_seqs"

    connection_pk: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)


class TrackingWindow(Base):
    """An open deletion-detection window of one run for one model."""

    __tablename__ = "tracking_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"))
    connection_pk: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(255))
    #: Records with a ``mod_seq`` above this were touched during the window.
    start_seq: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrackingSeen(Base):
    """Ids saved unchanged while a window was open (an unchanged save writes no record)."""

    __tablename__ = "tracking_seen"

    window_id: Mapped[int] = mapped_column(
        ForeignKey("tracking_windows.id", ondelete="CASCADE"), primary_key=True
    )
    external_id: Mapped[str] = mapped_column(String(255), primary_key=True)


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("connection_pk", "sync_name"),
        Index("ix_schedules_due", "state", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_pk: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    sync_name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default=ScheduleState.STARTED.value)
    #: A per-connection override of the sync's ``runs``; None uses the config.
    frequency_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The poll run in flight, if any. Claiming sets it with a conditional UPDATE, which
    #: is what keeps one active polling run per (connection, sync) across any number of
    #: beat processes.
    active_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_success_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Start of the last successful run: the next incremental run's ``last_sync_date``.
    last_sync_date: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (
        Index("ix_sync_runs_lease", "state", "lease_expires_at"),
        Index("ix_sync_runs_connection", "connection_pk", "sync_name", "id"),
        # Finishing a webhook run counts its event's unfinished runs (migration 0003);
        # partial, so the polls a tick inserts by the thousand add no entry to it.
        Index(
            "ix_sync_runs_event",
            "webhook_event_id",
            postgresql_where=text("webhook_event_id IS NOT NULL"),
            sqlite_where=text("webhook_event_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_pk: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    sync_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # RunKind
    #: INITIAL | INCREMENTAL | WEBHOOK, as the completion webhook reports it.
    sync_type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=RunState.QUEUED.value)
    webhook_event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: For webhook runs: the single event (after batch splitting) this run handles.
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    #: Options from a trigger, e.g. {"reset": true}.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Queued or running work whose lease passed is re-enqueued by the sweeper.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: {model: {"added": n, "updated": n, "deleted": n}}
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_received", "received_at"),)

    #: Assigned by the receiver (no database there) and returned in its 202.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_config_key: Mapped[str] = mapped_column(String(255))
    delivery_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=WebhookState.RECEIVED.value)
    url: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    runs_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WebhookDelivery(Base):
    """First sighting of a delivery id: inserting a second one fails, which is the dedupe."""

    __tablename__ = "webhook_deliveries"

    provider_config_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Notification(Base):
    """One completion (or forwarded) webhook to one app URL: the delivery outbox."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_due", "state", "next_attempt_at"),
        # The ordering check of a claim: "an earlier pending row of this stream?" (§8).
        Index("ix_notifications_stream", "stream", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    url: Mapped[str] = mapped_column(Text)
    #: The exact bytes signed and sent, so every retry carries the same signature input.
    body: Mapped[str] = mapped_column(Text)
    #: Standard Webhooks ``webhook-id``: stable across retries so apps can dedupe.
    webhook_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=NotificationState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Set while one worker is sending, so two workers never send the same attempt.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: When a worker claimed it for sending; None while it is only dispatched (enqueued).
    #: The sweeper re-dispatches an expired send lease at once, a lost message later.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The ordered delivery stream (app URL x connection x sync x model,
    #: ``workers.app_webhooks.stream_key``): a row is sent only once every earlier row of
    #: its stream left ``pending``. None (forwards, rows before 0005): not ordered.
    stream: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NotificationAttempt(Base):
    """One POST of a notification to its app URL and what came of it (newest last).

    Written by ``workers.outbox`` in the transaction that records the attempt's outcome;
    shown by ``GET /notifications/<id>`` and the console. A retry restarts ``attempt`` at 1.
    """

    __tablename__ = "notification_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(Integer, index=True)
    #: 1 for the first POST of a retry cycle (``notifications.attempts`` after it).
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The app's HTTP status; None for a network error (no answer).
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Why it did not deliver, truncated; never holds the URL.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)


class AppEndpoint(Base):
    """Delivery state of one app webhook URL; a row exists once the URL has answered 410.

    While ``gone_at`` is set, nothing is recorded or sent for the URL (ARCHITECTURE.md §8:
    "410 stops delivery to that URL"). Retrying a notification to it clears the mark.
    """

    __tablename__ = "app_endpoints"

    #: The configured URL exactly as in ``HOOKSYNC_APP_WEBHOOK_URLS`` (may hold a token:
    #: show it only through ``workers.app_webhooks.redact_url``).
    url: Mapped[str] = mapped_column(Text, primary_key=True)
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The HTTP status that stopped delivery (410).
    gone_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
