"""Fixtures shared by every tier: real servers, a migrated database, an AppContext."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache.context import AppContext
from config.settings import load_settings
from tests.support.auth import API_KEY
from tests.support.owners import OwnerWatch
from tests.support.paths import REPO
from tests.support.servers import PostgresServer, RedisServer, skip_or_fail

_db_names = itertools.count()


@pytest.fixture(scope="session")
def owner_watch() -> Iterator[OwnerWatch]:
    """Every write to a state table in this process, judged against its owner module."""
    with OwnerWatch().installed() as watch:
        yield watch


@pytest.fixture(autouse=True)
def _state_tables_written_by_their_owners(owner_watch: OwnerWatch) -> Iterator[None]:
    """Fail a test during which a state table was written outside its owner module
    (ARCHITECTURE.md §12)."""
    seen = len(owner_watch.violations)
    yield
    found = owner_watch.violations[seen:]
    assert not found, "state tables written outside their owners:\n" + "\n".join(found)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="hooksync-redis-") as folder:
        try:
            server = RedisServer(Path(folder))
        except (RuntimeError, ImportError, OSError) as error:
            skip_or_fail(f"cannot start the embedded Redis: {error}")
        yield server
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    folder = tempfile.mkdtemp(prefix="hooksync-pg-")
    try:
        server = PostgresServer(Path(folder))
    except (RuntimeError, OSError, KeyError) as error:
        skip_or_fail(f"cannot start Postgres: {error}")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database: each test runs on SQLite and on Postgres."""
    from cache.db import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hooksync.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database(f"t{next(_db_names)}_{id(request)}")
    migrate(url)
    return url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    import redis

    yield redis_server.url
    redis.Redis.from_url(redis_server.url).flushdb()


@pytest.fixture
def make_env(tmp_path: Path, redis_url: str):
    """Build a HOOKSYNC_* environment for this test; keyword arguments override."""

    def build(**overrides: str) -> dict[str, str]:
        env = {
            "HOOKSYNC_VAR_DIR": str(tmp_path / "var"),
            "HOOKSYNC_REDIS_URL": redis_url,
            "HOOKSYNC_INTEGRATIONS_DIR": str(REPO / "integrations"),
            "HOOKSYNC_SECRET_KEY": API_KEY,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": "test-signing-key",
        }
        env.update(overrides)
        return env

    return build


@pytest.fixture
def ctx(make_env, database_url: str) -> Iterator[AppContext]:
    """An AppContext on a real Redis and a fresh migrated database (SQLite and Postgres)."""
    context = AppContext(load_settings(make_env(HOOKSYNC_DATABASE_URL=database_url)))
    yield context
    context.close()
