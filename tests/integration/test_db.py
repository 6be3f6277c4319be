"""Transactions on SQLite: writers take the lock up front, ``read_scope`` readers take none."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cache.db import make_engine, make_sessionmaker, migrate, read_scope, session_scope
from cache.models import Connection
from cache.store import RecordStore
from tests.support.rows import insert_connection

#: Milliseconds a blocked statement waits for the write lock before "database is locked".
BUSY_MS = 300


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'hooksync.db'}"
    migrate(url)
    engine = make_engine(url)

    # Registered after make_engine's own "connect" hook, so it runs after it and overrides
    # the 30 s busy timeout: a test that would block fails fast instead.
    @event.listens_for(engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA busy_timeout={BUSY_MS}")

    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def count_connections(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Connection)) or 0)


def test_read_scope_reads_while_a_writer_holds_the_lock(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        insert_connection(session, "tasktracker", "committed")
    with session_scope(sessions) as writer:  # BEGIN IMMEDIATE: the write lock, held to commit
        insert_connection(writer, "tasktracker", "uncommitted")
        started = time.monotonic()
        with read_scope(sessions) as reader:
            # The snapshot of the last commit, at once: the writer's row is not in it.
            assert count_connections(reader) == 1
        assert time.monotonic() - started < BUSY_MS / 1000
    with read_scope(sessions) as reader:
        assert count_connections(reader) == 2


def test_a_write_scope_waits_for_the_lock_and_times_out(sessions: sessionmaker[Session]) -> None:
    """The control: the same read in ``session_scope`` (every read path before read_scope)."""
    with session_scope(sessions) as writer:
        insert_connection(writer, "tasktracker", "uncommitted")
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            with session_scope(sessions) as reader:
                count_connections(reader)
        assert time.monotonic() - started >= BUSY_MS / 1000 * 0.9


def test_records_reads_do_not_wait_for_a_writer(sessions: sessionmaker[Session]) -> None:
    store = RecordStore(sessions, cursor_key="test-key")
    with session_scope(sessions) as session:
        connection_pk = insert_connection(session, "tasktracker", "c1").id
    store.save(connection_pk, "Task", [{"id": "a"}, {"id": "b"}])
    with session_scope(sessions) as writer:
        insert_connection(writer, "tasktracker", "c2")
        assert store.count_records(connection_pk, "Task") == 2
        page = store.list_records(connection_pk, "Task")
        assert [record["id"] for record in page.records] == ["a", "b"]


def test_an_open_read_scope_does_not_block_a_writer(sessions: sessionmaker[Session]) -> None:
    with read_scope(sessions) as reader:
        assert count_connections(reader) == 0
        with session_scope(sessions) as writer:
            insert_connection(writer, "tasktracker", "written-during-read")
        assert count_connections(reader) == 0  # still its own snapshot
    with read_scope(sessions) as reader:
        assert count_connections(reader) == 1
