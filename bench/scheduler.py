"""The beat tick's database cost with 10,000 schedules, 1,000 of them due (ARCHITECTURE.md §11).

    python -m bench.scheduler [--schedules N] [--due N] [--seconds N]
                              [--postgres-url URL] [--no-postgres]

For SQLite (a temp file) and Postgres (the URL given, or a throw-away server started with
``initdb``): a fresh migrated database gets N connections with one schedule each (the bench
integration's ``items`` sync), a tenth of them due, the rest later in the day, plus one
finished run per schedule as history. Then, repeated for ``--seconds`` (at least three
times), with the due schedules reset between repetitions:

* the **floor**: one raw ``SELECT count(*) FROM schedules WHERE state = 'STARTED' AND
  next_run_at <= :now`` through the same engine (how many are due: the least a tick asks);
* ``scheduler.tick.tick`` with the due schedules waiting (it claims them and creates their
  runs, sweeps leases, sweeps notifications, and does its housekeeping, forced on);
* ``tick`` again right after: nothing is due, the steady state of every other tick.

**Database time** is the time spent inside the driver: every cursor execute (timed by
SQLAlchemy's ``before/after_cursor_execute`` events) plus every commit. **Wall** is the
whole ``tick`` call. The median repetition is printed; ``queries`` counts the statements.

The ``hooksync.tick`` task then puts one Celery message per run on Redis (``enqueue_runs``,
after the tick's transactions committed). That is Redis work, not database work: it is timed
once, on the embedded Redis (AOF fsync on every write, as deployed), and printed apart.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, event, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bench.merge import postgres
from cache.context import AppContext
from cache.db import migrate, session_scope
from cache.models import Connection, RunKind, RunState, Schedule, ScheduleState, SyncRun
from config.settings import load_settings
from scheduler.tick import TickResult, tick

INTEGRATIONS_DIR = Path(__file__).resolve().parent / "integration"
INTEGRATION, SYNC = "bench", "items"

#: The issue's target: database time per tick, in milliseconds.
TARGET_MS = 100.0

#: The tick's instant. Due schedules wait since a minute before it; the others are due
#: later in the day, on the sync's one-day grid.
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
STARTS_AT = NOW - timedelta(days=30, minutes=1)
DUE_AT = NOW - timedelta(minutes=1)

MIN_REPEATS = 3


class DatabaseTimer:
    """Time spent in the driver on one engine: cursor executes and commits.

    Commits are timed from the engine's ``commit`` event (fired just before the DBAPI
    commit) to the session's ``after_commit`` (just after it); on SQLite the COMMIT is not a
    cursor execute, so the cursor events alone would miss it.
    """

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self.seconds = 0.0
        self.queries = 0
        self._started = threading.local()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._before_commit)
        event.listen(sessions, "after_commit", self._after_commit)

    def reset(self) -> None:
        self.seconds, self.queries = 0.0, 0

    def _before(self, *_args: Any) -> None:
        self._started.execute = time.perf_counter()

    def _after(self, *_args: Any) -> None:
        self.seconds += time.perf_counter() - self._started.execute
        self.queries += 1

    def _before_commit(self, *_args: Any) -> None:
        self._started.commit = time.perf_counter()

    def _after_commit(self, *_args: Any) -> None:
        started = getattr(self._started, "commit", None)
        if started is not None:
            self.seconds += time.perf_counter() - started
            self._started.commit = None


@dataclass
class Sample:
    db_ms: float
    wall_ms: float
    queries: int


@dataclass
class Row:
    backend: str
    figure: str
    ours: list[Sample]
    floor: list[Sample]

    def median(self, samples: list[Sample], attribute: str) -> float:
        return statistics.median(getattr(sample, attribute) for sample in samples)


def insert_connections(session: Session, count: int, at: datetime) -> list[int]:
    """``count`` connections of the bench integration in one statement; their ids in order."""
    session.execute(
        insert(Connection),
        [
            {
                "provider_config_key": INTEGRATION,
                "connection_id": f"acct-{index:05d}",
                "credentials_encrypted": "-",
                "metadata_json": {},
                "created_at": at,
                "updated_at": at,
            }
            for index in range(count)
        ],
    )
    return list(session.scalars(select(Connection.id).order_by(Connection.id)))


def populate(ctx: AppContext, schedules: int, due: int) -> list[int]:
    """Connections, one schedule each, and one finished run per schedule; the due ids."""
    chooser = random.Random(7)
    with session_scope(ctx.sessions) as session:
        pks = insert_connections(session, schedules, STARTS_AT)
        session.execute(
            insert(Schedule),
            [
                {
                    "connection_pk": pk,
                    "sync_name": SYNC,
                    "state": ScheduleState.STARTED.value,
                    "starts_at": STARTS_AT,
                    "next_run_at": NOW + timedelta(hours=chooser.uniform(0.1, 23.9)),
                    # Half have synced before: their next poll is incremental.
                    "last_sync_date": STARTS_AT if pk % 2 else None,
                }
                for pk in pks
            ],
        )
        session.execute(
            insert(SyncRun),
            [
                {
                    "connection_pk": pk,
                    "sync_name": SYNC,
                    "kind": RunKind.POLL.value,
                    "sync_type": "INITIAL",
                    "state": RunState.SUCCESS.value,
                    "options": {},
                    "result": {},
                    "attempts": 1,
                    "created_at": STARTS_AT,
                    "started_at": STARTS_AT,
                    "finished_at": STARTS_AT + timedelta(seconds=3),
                    "lease_expires_at": None,
                }
                for pk in pks
            ],
        )
        ids = list(session.scalars(select(Schedule.id).order_by(Schedule.id)))
    return sorted(chooser.sample(ids, due))


def make_due(ctx: AppContext, due_ids: list[int]) -> None:
    """Undo the last tick: drop the runs it created, make the same schedules due again."""
    with session_scope(ctx.sessions) as session:
        session.execute(delete(SyncRun).where(SyncRun.state == RunState.QUEUED.value))
        session.execute(
            update(Schedule)
            .where(Schedule.id.in_(due_ids))
            .values(active_run_id=None, next_run_at=DUE_AT)
        )
    if ctx.engine.dialect.name == "postgresql":
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))


def measure_floor(ctx: AppContext, timer: DatabaseTimer) -> tuple[Sample, int]:
    query = (
        select(func.count())
        .select_from(Schedule)
        .where(Schedule.state == ScheduleState.STARTED.value, Schedule.next_run_at <= NOW)
    )
    timer.reset()
    started = time.perf_counter()
    with session_scope(ctx.sessions) as session:
        count = session.scalar(query) or 0
    wall = time.perf_counter() - started
    return Sample(timer.seconds * 1000, wall * 1000, timer.queries), count


def measure_tick(ctx: AppContext, timer: DatabaseTimer, now: datetime) -> tuple[Sample, TickResult]:
    timer.reset()
    started = time.perf_counter()
    result = tick(ctx, now, housekeeping=True)
    wall = time.perf_counter() - started
    return Sample(timer.seconds * 1000, wall * 1000, timer.queries), result


def bench_backend(name: str, url: str, args: argparse.Namespace) -> tuple[list[Row], list[int]]:
    migrate(url)
    with context(url) as ctx:
        timer = DatabaseTimer(ctx.engine, ctx.sessions)
        due_ids = populate(ctx, args.schedules, args.due)
        due_rows = Row(name, f"tick, {args.due:,} of {args.schedules:,} due", [], [])
        idle_rows = Row(name, "tick, none due (steady state)", [], [])
        run_ids: list[int] = []
        budget = time.monotonic() + args.seconds
        repeats = 0
        while repeats < MIN_REPEATS or time.monotonic() < budget:
            make_due(ctx, due_ids)
            floor, count = measure_floor(ctx, timer)
            assert count == args.due, count
            sample, result = measure_tick(ctx, timer, NOW)
            assert len(result.run_ids) == args.due, len(result.run_ids)
            due_rows.floor.append(floor)
            due_rows.ours.append(sample)
            run_ids = list(result.run_ids)

            floor, count = measure_floor(ctx, timer)
            assert count == 0, count
            sample, result = measure_tick(ctx, timer, NOW + timedelta(seconds=5))
            assert result == TickResult(), result
            idle_rows.floor.append(floor)
            idle_rows.ours.append(sample)
            repeats += 1
        return [due_rows, idle_rows], run_ids


@contextmanager
def context(url: str, var_dir: str | None = None) -> Iterator[AppContext]:
    """An AppContext on ``url`` with the bench integration; secrets in a temp folder."""
    os.environ.setdefault("BENCH_WEBHOOK_SECRET", "bench-secret")
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-tick-") as folder:
        env = {
            "HOOKSYNC_DATABASE_URL": url,
            "HOOKSYNC_VAR_DIR": var_dir or folder,
            "HOOKSYNC_INTEGRATIONS_DIR": str(INTEGRATIONS_DIR),
        }
        ctx = AppContext(load_settings(env))
        try:
            yield ctx
        finally:
            ctx.close()


def bench_enqueue(run_ids: list[int]) -> float | None:
    """Milliseconds to put one message per run on the embedded Redis, as the task does."""
    try:
        from config.redis_server import ensure_embedded_redis, stop_embedded_redis
        from workers.enqueue import enqueue_runs
    except ImportError as error:
        print(f"enqueue: skipped ({error})", flush=True)
        return None
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-redis-") as folder:
        var_dir = Path(folder)
        ensure_embedded_redis(var_dir)
        try:
            with context("sqlite:///:memory:", folder) as ctx:
                enqueue_runs(ctx, run_ids[:10])  # connect and warm up
                ctx.redis.flushall()
                started = time.perf_counter()
                enqueue_runs(ctx, run_ids)
                elapsed = time.perf_counter() - started
                ctx.redis.flushall()
        finally:
            stop_embedded_redis(var_dir)
    return elapsed * 1000


_FIGURE_WIDTH = 42
_HEADER = (
    f"{'backend':<9} {'figure':<{_FIGURE_WIDTH}} {'queries':>7} {'ms':>8} {'floor ms':>9} "
    f"{'ratio':>7}  target"
)


def _print_row(row: Row) -> None:
    db = row.median(row.ours, "db_ms")
    floor = row.median(row.floor, "db_ms")
    queries = row.ours[len(row.ours) // 2].queries
    ratio = db / floor if floor else float("nan")
    mark = "ok" if round(db, 1) <= TARGET_MS else "MISS"
    print(
        f"{row.backend:<9} {row.figure + ': database':<{_FIGURE_WIDTH}} {queries:>7} "
        f"{db:>8.1f} {floor:>9.2f} {ratio:>6.0f}x  <={TARGET_MS:g} {mark}",
        flush=True,
    )
    wall = row.median(row.ours, "wall_ms")
    floor_wall = row.median(row.floor, "wall_ms")
    print(
        f"{row.backend:<9} {row.figure + ': wall':<{_FIGURE_WIDTH}} {'':>7} "
        f"{wall:>8.1f} {floor_wall:>9.2f} {wall / floor_wall:>6.0f}x  (beside it)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scheduler", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--schedules", type=int, default=10_000, help="schedules in all")
    parser.add_argument("--due", type=int, default=1_000, help="schedules due at the tick")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="time to spend repeating, per database"
    )
    parser.add_argument("--postgres-url", help="an existing Postgres (default: start one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if not 0 < args.due <= args.schedules:
        parser.error("--due must be from 1 to --schedules")
    print(
        f"{args.schedules:,} schedules, {args.due:,} due; median of repetitions over "
        f"{args.seconds:g} s per database (at least {MIN_REPEATS}); housekeeping forced on; "
        "floor = one SELECT count(*) of the due schedules"
    )
    print(_HEADER)
    run_ids: list[int] = []
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-") as folder:
        rows, run_ids = bench_backend("sqlite", f"sqlite:///{folder}/bench.db", args)
        for row in rows:
            _print_row(row)
    status = 0
    with postgres(args.postgres_url, not args.no_postgres) as url:
        if url is None:
            status = 0 if args.no_postgres else 1
        else:
            rows, _ = bench_backend("postgres", url, args)
            for row in rows:
                _print_row(row)
    enqueue_ms = bench_enqueue(run_ids)
    if enqueue_ms is not None:
        print(
            f"{'redis':<9} {f'enqueue {len(run_ids):,} run messages':<{_FIGURE_WIDTH}} "
            f"{len(run_ids):>7} {enqueue_ms:>8.1f} {'':>9} {'':>7}  (hooksync.tick task, "
            "after the tick; not database time)",
            flush=True,
        )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
