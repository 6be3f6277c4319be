"""Database rows that many tests create or read back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cache.context import AppContext
from cache.models import Connection, Schedule


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
