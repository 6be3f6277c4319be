"""Schedules, claims, sync control and the tick's sweeper on SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, insert, select, update

from cache.context import AppContext
from cache.db import session_scope
from cache.models import Connection, Schedule, SyncRun, WebhookDelivery
from config.errors import BadInputError
from config.integrations import IntegrationConfig, Integrations, ProviderConfig, SyncConfig
from scheduler.tick import TickResult, tick
from tests.support.concurrency import run_at_once
from tests.support.rows import insert_connection, schedule_of
from workers.schedules import (
    claim_due,
    create_schedules,
    finish_poll_run,
    pause,
    set_frequency,
    start,
    trigger,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

INTEGRATIONS = Integrations(
    by_key={
        "tracker": IntegrationConfig(
            key="tracker",
            syncs={
                "tasks": SyncConfig(
                    name="tasks",
                    integration="tracker",
                    runs="every 5 minutes",
                    interval_seconds=300,
                    output=("Task",),
                    auto_start=True,
                    sync_type="incremental",
                ),
                "users": SyncConfig(
                    name="users",
                    integration="tracker",
                    runs="every hour",
                    interval_seconds=3600,
                    output=("User",),
                    auto_start=False,
                    sync_type="full",
                ),
            },  # fmt: skip
            provider=ProviderConfig(key="tracker"),
        )
    }
)


@pytest.fixture
def app(ctx: AppContext) -> AppContext:
    ctx.pin_integrations(INTEGRATIONS)
    return ctx


def _connect(ctx: AppContext, connection_id: str = "acme", now: datetime = T0) -> int:
    with session_scope(ctx.sessions) as session:
        connection = insert_connection(session, "tracker", connection_id)
        create_schedules(session, INTEGRATIONS, connection, now)
        return connection.id


def _run(ctx: AppContext, run_id: int) -> SyncRun:
    with ctx.sessions() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        return run


def _claim(ctx: AppContext, now: datetime, limit: int = 100) -> list[int]:
    with session_scope(ctx.sessions) as session:
        return claim_due(session, INTEGRATIONS, now, limit, lease_seconds=90)


def _count_runs(ctx: AppContext) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(SyncRun)) or 0


def _finish(ctx: AppContext, run_id: int, now: datetime, *, state: str = "success") -> None:
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        run.state = state
        run.started_at = run.started_at or run.created_at
        run.finished_at = now
        finish_poll_run(session, run, now, integrations=INTEGRATIONS)


def test_create_schedules_starts_auto_start_syncs_at_once(app: AppContext) -> None:
    pk = _connect(app)
    tasks, users = schedule_of(app, pk, "tasks"), schedule_of(app, pk, "users")
    assert (tasks.state, tasks.starts_at, tasks.next_run_at) == ("STARTED", T0, T0)
    assert (users.state, users.next_run_at) == ("PAUSED", None)
    with session_scope(app.sessions) as session:  # idempotent
        connection = session.get(Connection, pk)
        assert create_schedules(session, INTEGRATIONS, connection, T0) == []


def test_claiming_twice_at_the_same_instant_creates_one_run(app: AppContext) -> None:
    pk = _connect(app)
    (run_id,) = _claim(app, T0)
    assert _claim(app, T0) == []
    assert _count_runs(app) == 1
    run = _run(app, run_id)
    assert (run.kind, run.sync_type, run.state, run.sync_name) == (
        "poll", "INITIAL", "queued", "tasks",
    )  # fmt: skip
    assert run.lease_expires_at == T0 + timedelta(seconds=90)
    schedule = schedule_of(app, pk)
    assert schedule.active_run_id == run_id
    assert schedule.next_run_at == T0 + timedelta(minutes=5)  # already on the grid
    # Due again by the clock, but its run is still active: no second run.
    assert _claim(app, T0 + timedelta(minutes=20)) == []


def test_concurrent_claims_create_exactly_one_run_perschedule_of(app: AppContext) -> None:
    schedules = 30
    for index in range(schedules):
        _connect(app, f"conn-{index}")
    results = run_at_once([lambda: _claim(app, T0, limit=schedules)] * 4)
    claimed = [run_id for batch in results for run_id in batch]
    assert len(claimed) == len(set(claimed)) == schedules
    assert _count_runs(app) == schedules
    with app.sessions() as session:
        active = session.scalars(
            select(Schedule.active_run_id).where(Schedule.sync_name == "tasks")
        ).all()
    assert sorted(active) == sorted(claimed)


def test_concurrent_triggers_start_one_run(app: AppContext) -> None:
    pk = _connect(app)

    def fire() -> list[int]:
        with session_scope(app.sessions) as session:
            connection = session.get(Connection, pk)
            return trigger(session, INTEGRATIONS, connection, ["tasks"], T0)

    results = run_at_once([fire] * 3)
    assert sorted(len(batch) for batch in results) == [0, 0, 1]
    assert _count_runs(app) == 1


def test_finishing_moves_to_the_grid_skipping_missed_slots(app: AppContext) -> None:
    pk = _connect(app)
    (run_id,) = _claim(app, T0)
    # The run took 17.5 minutes: the slots at +5, +10 and +15 are skipped, not queued.
    finished = T0 + timedelta(minutes=17, seconds=30)
    _finish(app, run_id, finished)
    schedule = schedule_of(app, pk)
    assert schedule.active_run_id is None
    assert schedule.next_run_at == T0 + timedelta(minutes=20)
    assert schedule.last_sync_date == _run(app, run_id).started_at
    assert schedule.last_success_run_id == run_id

    assert _claim(app, T0 + timedelta(minutes=19)) == []
    (second,) = _claim(app, T0 + timedelta(minutes=20))
    assert _run(app, second).sync_type == "INCREMENTAL"


def test_a_failed_run_keeps_the_last_sync_date(app: AppContext) -> None:
    pk = _connect(app)
    (run_id,) = _claim(app, T0)
    _finish(app, run_id, T0 + timedelta(seconds=10), state="error")
    schedule = schedule_of(app, pk)
    assert (schedule.active_run_id, schedule.last_sync_date) == (None, None)
    (retry,) = _claim(app, T0 + timedelta(minutes=5))
    assert _run(app, retry).sync_type == "INITIAL"


def test_finishing_without_integrations_uses_the_override_or_the_claimed_slot(
    app: AppContext,
) -> None:
    pk = _connect(app)
    (run_id,) = _claim(app, T0)
    with session_scope(app.sessions) as session:
        run = session.get(SyncRun, run_id)
        run.state, run.started_at = "success", T0
        finish_poll_run(session, run, T0 + timedelta(minutes=7))
    assert schedule_of(app, pk).next_run_at == T0 + timedelta(minutes=5)  # the claimed slot

    with session_scope(app.sessions) as session:
        connection = session.get(Connection, pk)
        set_frequency(session, INTEGRATIONS, connection, "tasks", "every 2 minutes", T0)
    (second,) = _claim(app, T0 + timedelta(minutes=7))
    with session_scope(app.sessions) as session:
        run = session.get(SyncRun, second)
        run.state, run.started_at = "success", T0 + timedelta(minutes=7)
        finish_poll_run(session, run, T0 + timedelta(minutes=9))
    assert schedule_of(app, pk).next_run_at == T0 + timedelta(minutes=10)


def test_a_claim_that_loses_leaves_no_run(app: AppContext) -> None:
    # Another beat claims one schedule after this batch read it and inserted its runs, but
    # before the batch's UPDATE: that claim must lose, and its run must go with it.
    first, second = _connect(app, "first"), _connect(app, "second")
    taken = schedule_of(app, second).id
    fired: list[str] = []

    def claim_meanwhile(conn, cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO sync_runs") and not fired:
            fired.append(statement)
            other = conn.connection.dbapi_connection.cursor()
            other.execute(f"UPDATE schedules SET active_run_id = -1 WHERE id = {taken}")
            other.close()

    event.listen(app.engine, "after_cursor_execute", claim_meanwhile)
    try:
        (run_id,) = _claim(app, T0)
    finally:
        event.remove(app.engine, "after_cursor_execute", claim_meanwhile)
    assert fired
    assert _count_runs(app) == 1
    assert (_run(app, run_id).connection_pk, schedule_of(app, first).active_run_id) == (
        first, run_id,
    )  # fmt: skip
    assert (schedule_of(app, second).active_run_id, schedule_of(app, second).next_run_at) == (
        -1, T0,
    )  # fmt: skip


def test_trigger_runs_now_once_and_acknowledges_while_active(app: AppContext) -> None:
    pk = _connect(app)
    with session_scope(app.sessions) as session:
        connection = session.get(Connection, pk)
        (run_id,) = trigger(session, INTEGRATIONS, connection, ["users"], T0)  # paused sync
        assert trigger(session, INTEGRATIONS, connection, ["users"], T0) == []
        with pytest.raises(BadInputError, match="'nope' is not a sync") as error:
            trigger(session, INTEGRATIONS, connection, ["nope"], T0)
        assert error.value.field == "syncs"
    run = _run(app, run_id)
    assert (run.sync_name, run.kind, run.sync_type, run.options) == ("users", "poll", "INITIAL", {})
    assert schedule_of(app, pk, "users").active_run_id == run_id


def test_trigger_with_reset_runs_a_full_sync(app: AppContext) -> None:
    pk = _connect(app)
    (run_id,) = _claim(app, T0)
    _finish(app, run_id, T0 + timedelta(seconds=5))
    with session_scope(app.sessions) as session:
        connection = session.get(Connection, pk)
        (reset_run,) = trigger(session, INTEGRATIONS, connection, ["tasks"], T0, reset=True)
    run = _run(app, reset_run)
    assert (run.sync_type, run.options) == ("INITIAL", {"reset": True})
    assert schedule_of(app, pk).last_sync_date is None


def test_pause_start_and_frequency(app: AppContext) -> None:
    pk = _connect(app)
    with session_scope(app.sessions) as session:
        connection = session.get(Connection, pk)
        pause(session, INTEGRATIONS, connection, ["tasks"], T0)
    assert _claim(app, T0 + timedelta(hours=1)) == []
    assert schedule_of(app, pk).next_run_at is None

    later = T0 + timedelta(hours=1, minutes=1)
    with session_scope(app.sessions) as session:
        connection = session.get(Connection, pk)
        start(session, INTEGRATIONS, connection, ["tasks", "users"], later)
    # Never ran: due at once.
    assert schedule_of(app, pk).next_run_at == later
    assert schedule_of(app, pk, "users").state == "STARTED"
    assert len(_claim(app, later)) == 2

    with session_scope(app.sessions) as session:
        connection = session.get(Connection, pk)
        with pytest.raises(BadInputError, match="invalid frequency"):
            set_frequency(session, INTEGRATIONS, connection, "tasks", "every 3 fortnights", T0)
        schedule = set_frequency(session, INTEGRATIONS, connection, "tasks", "every 30 minutes",
                                 later)  # fmt: skip
        assert schedule.frequency_seconds == 1800
        assert schedule.next_run_at == T0 + timedelta(hours=1, minutes=30)
        schedule = set_frequency(session, INTEGRATIONS, connection, "tasks", None, later)
        assert schedule.frequency_seconds is None
        assert schedule.next_run_at == T0 + timedelta(hours=1, minutes=5)


def test_schedules_of_removed_syncs_are_skipped(app: AppContext) -> None:
    pk = _connect(app)
    with session_scope(app.sessions) as session:
        session.add(Schedule(connection_pk=pk, sync_name="removed", state="STARTED",
                             starts_at=T0, next_run_at=T0))  # fmt: skip
    assert [_run(app, run_id).sync_name for run_id in _claim(app, T0)] == ["tasks"]
    assert schedule_of(app, pk, "removed").next_run_at == T0 + timedelta(hours=1)


def test_tick_claims_due_schedules(app: AppContext) -> None:
    _connect(app)
    result = tick(app, T0, housekeeping=False)
    assert isinstance(result, TickResult)
    assert len(result.run_ids) == 1
    assert tick(app, T0, housekeeping=False) == TickResult((), ())


def test_sweeper_re_enqueues_an_expired_queued_run_once_per_lease(app: AppContext) -> None:
    _connect(app)
    (run_id,) = tick(app, T0, housekeeping=False).run_ids
    assert tick(app, T0 + timedelta(seconds=89), housekeeping=False).run_ids == ()
    expired = T0 + timedelta(seconds=91)
    assert tick(app, expired, housekeeping=False).run_ids == (run_id,)
    run = _run(app, run_id)
    assert run.state == "queued"
    assert run.lease_expires_at == expired + timedelta(seconds=90)
    assert tick(app, expired + timedelta(seconds=5), housekeeping=False).run_ids == ()


def test_sweeper_hands_a_silent_running_run_back_untouched(app: AppContext) -> None:
    _connect(app)
    (run_id,) = tick(app, T0, housekeeping=False).run_ids
    lease = T0 + timedelta(seconds=30)
    with session_scope(app.sessions) as session:
        session.execute(update(SyncRun).where(SyncRun.id == run_id)
                        .values(state="running", lease_expires_at=lease))  # fmt: skip
    assert tick(app, T0 + timedelta(seconds=29), housekeeping=False).run_ids == ()
    swept = tick(app, T0 + timedelta(seconds=31), housekeeping=False)
    # Sent as a takeover (ahead of new work), not as a new run.
    assert swept.run_ids == swept.swept_run_ids == (run_id,) and swept.new_run_ids == ()
    run = _run(app, run_id)
    assert (run.state, run.lease_expires_at) == ("running", lease)


def test_housekeeping_forgets_old_delivery_ids_and_releases_ended_runs(app: AppContext) -> None:
    pk = _connect(app)
    (run_id,) = _claim(app, T0)
    with session_scope(app.sessions) as session:
        session.execute(update(SyncRun).where(SyncRun.id == run_id).values(state="cancelled"))
        session.add_all(
            [
                WebhookDelivery(provider_config_key="tracker", delivery_id="old",
                                event_id="e1", seen_at=T0 - timedelta(days=8)),
                WebhookDelivery(provider_config_key="tracker", delivery_id="new",
                                event_id="e2", seen_at=T0 - timedelta(days=6)),
            ]
        )  # fmt: skip
    tick(app, T0, housekeeping=True)
    with app.sessions() as session:
        kept = session.scalars(select(WebhookDelivery.delivery_id)).all()
    assert kept == ["new"]
    assert schedule_of(app, pk).active_run_id is None


def test_a_tick_over_ten_thousand_schedules_claims_exactly_the_due_ones(app: AppContext) -> None:
    # How fast it is belongs to bench/, not here: this checks what it claims.
    total, due = 10_000, 300
    with session_scope(app.sessions) as session:
        session.execute(
            insert(Connection),
            [
                {"provider_config_key": "tracker", "connection_id": f"c{i}",
                 "credentials_encrypted": "x", "metadata_json": {}, "created_at": T0,
                 "updated_at": T0}
                for i in range(total)
            ],
        )  # fmt: skip
        pks = session.scalars(select(Connection.id).order_by(Connection.id)).all()
        session.execute(
            insert(Schedule),
            [
                {"connection_pk": pk, "sync_name": "tasks", "state": "STARTED", "starts_at": T0,
                 "next_run_at": T0 if index < due else T0 + timedelta(minutes=5)}
                for index, pk in enumerate(pks)
            ],
        )  # fmt: skip
    result = tick(app, T0 + timedelta(seconds=1), housekeeping=True)
    assert len(result.run_ids) == due
    assert tick(app, T0 + timedelta(seconds=2), housekeeping=True) == TickResult((), ())
