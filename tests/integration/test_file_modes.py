"""Files hooksync creates are owner-only, like var/secrets.json (issue 9, hostile traffic).

A fresh SQLite database with its WAL and shared-memory files, and a freshly started
embedded Redis with its AOF, log and folder, ``var/`` with its secrets and metrics folder:
0600 files, 0700 folders.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from cache.db import make_engine
from config.redis_server import ensure_embedded_redis, stop_embedded_redis
from config.settings import _read_or_create_secrets_file
from hooksync.metrics import MULTIPROC_ENV, prepare_metrics_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_sqlite_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "data" / "hooksync.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:  # a write, so the WAL and SHM files exist
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()
        assert {p.name: oct(mode(p)) for p in (path, wal, shm)} == {
            p.name: "0o600" for p in (path, wal, shm)
        }
        assert oct(mode(path.parent)) == "0o700"
    finally:
        engine.dispose()


def test_a_freshly_started_embedded_redis_writes_owner_only_files(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    url = ensure_embedded_redis(var_dir)
    try:
        client = redis.Redis.from_url(url)
        client.set("k", "v")  # appended to the AOF (appendfsync always)
        client.close()
        folder = var_dir / "redis"
        files = [p for p in folder.rglob("*") if p.is_file() and not p.is_socket()]
        dirs = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        assert any("aof" in p.name for p in files), files  # the AOF is among them
        assert any(p.name == "redis.log" for p in files), files
        assert {str(p): oct(mode(p)) for p in files} == {str(p): "0o600" for p in files}
        assert {str(p): oct(mode(p)) for p in dirs} == {str(p): "0o700" for p in dirs}
    finally:
        stop_embedded_redis(var_dir)


def test_var_and_its_secrets_and_metrics_folders_are_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prepare_metrics_dir exports the variable into os.environ. A plain delenv of an unset
    # variable records nothing to undo, and the leaked folder would turn this process's
    # later /metrics scrapes into reads of a deleted folder (tests/integration/test_metrics).
    monkeypatch.setenv(MULTIPROC_ENV, "unset-after-the-test")
    monkeypatch.delenv(MULTIPROC_ENV)
    var_dir = tmp_path / "var"
    secrets_file = var_dir / "secrets.json"
    _read_or_create_secrets_file(secrets_file)
    metrics = prepare_metrics_dir(var_dir)
    assert {p.name: oct(mode(p)) for p in (var_dir, secrets_file, metrics)} == {
        "var": "0o700",
        "secrets.json": "0o600",
        "metrics": "0o700",
    }
