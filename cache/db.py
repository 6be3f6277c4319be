"""Engines, sessions and migrations.

SQLite (the embedded default) is set up for several processes at once: WAL so readers never
block the writer, a busy timeout so writers queue instead of failing, and ``BEGIN IMMEDIATE``
so a transaction takes the write lock up front — a deferred transaction that reads and then
writes can fail with "database is locked" no matter how long the timeout.

Read-only work uses ``read_scope`` instead: its transaction starts with a plain deferred
``BEGIN``, which takes no write lock, so in WAL mode it reads a snapshot at once instead of
queueing behind writers (and writers never queue behind it).

SQLite writers of all our processes also queue on an ``flock`` of a file beside the
database (``session_scope``) before ``BEGIN IMMEDIATE``. SQLite's own wait for a busy
database is a sleep-and-retry loop (sleeps of up to 100 ms each), so two processes writing
small transactions back to back spend most of their time asleep; the kernel hands an flock
to the next waiter the moment it is released. SQLite's lock stays the guarantee; the flock
only orders the queue.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Result,
    create_engine,
    event,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from config.errors import ConfigError

__all__ = [
    "assert_migrated",
    "make_engine",
    "make_sessionmaker",
    "migrate",
    "rows_matched",
    "update_where",
    "read_scope",
    "session_scope",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: Execution option that ``read_scope`` sets on its connection; the SQLite "begin" hook
#: reads it to choose a deferred ``BEGIN``. Other databases ignore it.
_READ_ONLY = "hooksync_read_only"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; for SQLite, create the file's folder and apply the pragmas above."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            _create_private(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _create_private(path: Path) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does (it would use 0644).

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode, so they follow.
    A folder made here is 0700. An existing file keeps its mode (the operator's choice).
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def rows_matched(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched: how a conditional UPDATE tells who won a claim."""
    return cast("CursorResult[Any]", result).rowcount


def update_where(
    session: Session, model: type[Any], where: Sequence[ColumnElement[bool]], **values: Any
) -> int:
    """``UPDATE model SET values WHERE all of where``; the rows it matched.

    The shape of every claim and fenced write: the condition is the state the caller read
    (queued, unleased, this attempt …), so of two transactions racing for a row only one
    matches it, and the loser learns so from the count. The identity map is left alone
    (``synchronize_session=False``): callers reload what they read afterwards.
    """
    return rows_matched(
        session.execute(
            update(model)
            .where(*where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with _sqlite_write_queue(factory), factory() as session, session.begin():
        yield session


class _WriteQueue(threading.local):
    """How deep this thread holds each writer lock (``session_scope`` may nest)."""

    def __init__(self) -> None:
        self.depth: dict[str, int] = {}


_write_queue = _WriteQueue()


@contextmanager
def _sqlite_write_queue(factory: sessionmaker[Session]) -> Iterator[None]:
    """Hold the database's writer flock for the block (SQLite files only; see above)."""
    path = _sqlite_path(factory.kw.get("bind"))
    if path is None:
        yield
        return
    lock_path = path + ".writers"
    depth = _write_queue.depth.get(lock_path, 0)
    if depth:
        # Nested in a scope of this thread that holds it: a second open file's flock would
        # wait for our own, so the outer scope keeps holding it.
        _write_queue.depth[lock_path] = depth + 1
        try:
            yield
        finally:
            _write_queue.depth[lock_path] = depth
        return
    # Opened per transaction (two cheap syscalls): flock belongs to the open file, so each
    # thread and each forked process must wait on a file of its own.
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _write_queue.depth[lock_path] = 1
        try:
            yield
        finally:
            _write_queue.depth[lock_path] = 0
    finally:
        os.close(fd)  # releases the flock


def _sqlite_path(engine: Any) -> str | None:
    """The database file of a SQLite engine, None for other databases or in-memory ones."""
    url = getattr(engine, "url", None)
    if url is None or url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return str(Path(database).resolve())


@contextmanager
def read_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction that only reads; on SQLite it takes no write lock.

    The block must not write: on SQLite a deferred transaction that starts writing after a
    writer committed fails with "database is locked" (use ``session_scope`` to write).
    """
    with factory() as session, session.begin():
        # Options given here reach the connection before its transaction begins, so the
        # "begin" hook sees them (Session.connection: "when the connection is first procured").
        session.connection(execution_options={_READ_ONLY: True})
        yield session


def _alembic_config(url: str) -> Any:
    # Alembic is imported here, not at the top: every process imports this module, and
    # alembic (about 12 MB resident) is needed only by the release step and the start-up
    # check, not by a web or worker process once it runs.
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Apply every migration (the Procfile's ``release`` step). Safe to run again."""
    from alembic import command  # heavy, release step only (see _alembic_config)

    command.upgrade(_alembic_config(url), "head")


def assert_migrated(engine: Engine) -> None:
    """Refuse to serve against a database that the release step has not migrated.

    Raises:
        ConfigError: one line telling the operator to run the release step.
    """
    # Heavy, start-up checks only (see _alembic_config).
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise ConfigError(
            f"database {engine.url.render_as_string(hide_password=True)} is at migration "
            f"{current!r}, expected {head!r}: run the release step first "
            "(`hooksync migrate`, the Procfile's release process)"
        )
