"""Database rows that many tests create or read back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cache.context import AppContext
from cache.credentials import encrypt_credentials
from cache.db import session_scope
from cache.models import Connection, Schedule, SyncRun, utcnow
from workers.schedules import create_schedules, trigger


def insert_connection(
    session: Session,
    key: str,
    connection_id: str,
    *,
    credentials_encrypted: str = "not-a-real-token",
    metadata: dict[str, Any] | None = None,
) -> Connection:
    """Add a connection row and flush it, so it has its id.

    The default credentials are not a Fernet token: pass ``encrypt_credentials(...)`` when
    the code under test decrypts them.
    """
    connection = Connection(
        provider_config_key=key,
        connection_id=connection_id,
        credentials_encrypted=credentials_encrypted,
        metadata_json={} if metadata is None else metadata,
    )
    session.add(connection)
    session.flush()
    return connection


def add_connection(
    ctx: AppContext,
    key: str,
    connection_id: str,
    metadata: dict[str, Any] | None = None,
    *,
    credentials: dict[str, Any] | None = None,
    schedules: bool = False,
) -> int:
    """Add a connection in a transaction of its own, committed; its id.

    Args:
        metadata: The connection's metadata (none when None).
        credentials: Stored encrypted with ``ctx``'s key, as the connections API stores
            them; None stores ``insert_connection``'s placeholder, for code that never
            decrypts them.
        schedules: Also create the schedules of the integration's syncs, as creating the
            connection through the API does (``trigger_run`` needs them).
    """
    with session_scope(ctx.sessions) as session:
        if credentials is None:
            connection = insert_connection(session, key, connection_id, metadata=metadata)
        else:
            encrypted = encrypt_credentials(ctx.settings.encryption_key, credentials)
            connection = insert_connection(
                session, key, connection_id, credentials_encrypted=encrypted, metadata=metadata
            )
        if schedules:
            create_schedules(session, ctx.integrations, connection, utcnow())
        return connection.id


def trigger_run(ctx: AppContext, connection_pk: int, sync: str, **options: Any) -> int:
    """Queue a run of one sync of the connection now, as ``POST /sync/trigger`` does; its id.

    Any ``options`` (e.g. ``reset=True``) make it a reset run, which starts over from an
    initial sync.
    """
    with session_scope(ctx.sessions) as session:
        connection = session.get(Connection, connection_pk)
        assert connection is not None
        (run_id,) = trigger(
            session, ctx.integrations, connection, [sync], utcnow(), reset=bool(options)
        )
        return run_id


def load_run(ctx: AppContext, run_id: int) -> SyncRun:
    """The ``sync_runs`` row, read in its own transaction."""
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        return run


def schedule_of(ctx: AppContext, connection_pk: int, sync_name: str = "tasks") -> Schedule:
    """The schedule row of (connection, sync), read in its own session and detached."""
    with ctx.sessions() as session:
        row = session.scalars(
            select(Schedule).where(
                Schedule.connection_pk == connection_pk, Schedule.sync_name == sync_name
            )
        ).one()
        session.expunge(row)
        return row
