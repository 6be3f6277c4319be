"""execute_run end to end on a real database (SQLite and Postgres) and a real Redis.

Scripts live in a temporary integrations folder: the bundled task-tracker example (run
against a local fake API) plus a ``toy`` integration whose script does what the
connection's metadata says, so each test picks a behaviour by creating a connection.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cache.context import AppContext
from cache.db import session_scope
from cache.models import (
    Connection,
    Notification,
    RunKind,
    RunState,
    Schedule,
    SyncRun,
    TrackingWindow,
    WebhookEvent,
    WebhookState,
    utcnow,
)
from cache.store import RecordStore
from config.settings import load_settings
from tests.support.api import Api
from tests.support.integrations import extend_example_integrations
from tests.support.rows import add_connection, load_run, trigger_run
from tests.support.tasktracker import task
from workers.execution import LeaseHeartbeat, LeaseLost, execute_run
from workers.retry import MAX_ATTEMPTS, MAX_TRANSIENT_ATTEMPTS

SECRET = "sk-test-7f3a9c1e"
APP_URL = "http://127.0.0.1:9/hooks"
#: Every connection's credentials: the scripts call the fake API with this key.
CREDENTIALS = {"type": "API_KEY", "api_key": SECRET}

#: Called by the toy script in "takeover" mode (set by the test that uses it).
TAKEOVER: Callable[[], None] | None = None

TOY_YAML = """
  toy:
    syncs:
      items:
        runs: every hour
        sync_type: full
        track_deletes: true
        auto_start: false
        output: Item
      bare:
        runs: every hour
        auto_start: false
        output: Item
"""

TOY_MODELS = """
  Item:
    id: string
    name: string
"""

TOY_PROVIDER = """
  toy:
    base_url: ${TOY_BASE_URL}
    auth: {type: query, name: api_key}
"""

ITEMS_SCRIPT = """
def fetch_data(nango):
    meta = nango.get_metadata()
    mode = meta.get("mode", "save")
    if mode == "strategy_late":
        nango.batch_save([{"id": "1", "name": "a"}], "Item")
        nango.set_merging_strategy({"strategy": "override"}, "Item")
    elif mode == "bad_records":
        nango.batch_save([{"id": "1", "name": "a"}, {"name": "no id"}], "Item")
    elif mode == "boom":
        nango.batch_save([{"id": "1", "name": "a"}], "Item")
        key = nango.get_connection()["credentials"]["api_key"]
        raise ValueError("exploded while using " + key)
    elif mode == "transient":
        from config.errors import RetriableError
        tries = meta.get("tries", 0)
        nango.update_metadata({"tries": tries + 1})
        if tries < meta.get("fail_times", 1):
            raise RetriableError("connection lock busy")
        nango.batch_save([{"id": "1", "name": "a"}], "Item")
    elif mode == "api_404":
        nango.get(endpoint="/missing", params={"x": 1})
    elif mode == "takeover":
        import time
        import tests.integration.test_execution as t
        nango.batch_save([{"id": "1", "name": "a"}], "Item")
        t.TAKEOVER()
        time.sleep(meta.get("sleep", 0))
        nango.batch_save([{"id": "2", "name": "b"}], "Item")
    else:
        ids = meta.get("ids", ["1", "2", "3"])
        nango.batch_save([{"id": i, "name": "item " + i} for i in ids], "Item")
        nango.update_metadata({"runs": meta.get("runs", 0) + 1})
        nango.log("saved", len(ids), "items")


def on_webhook_payload_received(nango, payload):
    nango.batch_save([{"id": str(payload["id"]), "name": payload["name"]}], "Item")
"""

BARE_SCRIPT = """
def fetch_data(nango):
    pass
"""


@pytest.fixture
def integrations_dir(tmp_path: Path) -> Path:
    return extend_example_integrations(
        tmp_path / "integrations",
        syncs=TOY_YAML,
        models=TOY_MODELS,
        provider=TOY_PROVIDER,
        scripts={"toy/syncs/items.py": ITEMS_SCRIPT, "toy/syncs/bare.py": BARE_SCRIPT},
    )


@pytest.fixture
def wctx(
    make_env: Callable[..., dict[str, str]],
    database_url: str,
    integrations_dir: Path,
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AppContext]:
    monkeypatch.setenv("TASKTRACKER_BASE_URL", api.base_url)
    monkeypatch.setenv("TASKTRACKER_WEBHOOK_SECRET", "tracker-secret")
    monkeypatch.setenv("TOY_BASE_URL", api.base_url)
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(integrations_dir),
        HOOKSYNC_APP_WEBHOOK_URLS=APP_URL,
    )
    context = AppContext(load_settings(env))
    assert not context.integrations.errors
    yield context
    context.close()


def add_webhook_run(
    ctx: AppContext, connection_pk: int, sync: str, payload: Any, event_id: str | None = None
) -> int:
    with session_scope(ctx.sessions) as session:
        run = SyncRun(
            connection_pk=connection_pk,
            sync_name=sync,
            kind=RunKind.WEBHOOK.value,
            sync_type="WEBHOOK",
            state=RunState.QUEUED.value,
            payload=payload,
            webhook_event_id=event_id,
            options={},
            result={},
        )
        session.add(run)
        session.flush()
        return run.id


def add_event(ctx: AppContext, event_id: str, key: str = "toy") -> None:
    with session_scope(ctx.sessions) as session:
        session.add(
            WebhookEvent(
                id=event_id,
                provider_config_key=key,
                delivery_id=f"d-{event_id}",
                event_type="item.updated",
                state=WebhookState.ROUTED.value,
                url="http://localhost/webhook/toy",
                headers={},
                body=b"{}",
                received_at=utcnow(),
            )
        )


def load_schedule(ctx: AppContext, connection_pk: int, sync: str) -> Schedule:
    with session_scope(ctx.sessions) as session:
        return session.scalars(
            select(Schedule).where(
                Schedule.connection_pk == connection_pk, Schedule.sync_name == sync
            )
        ).one()


def store_of(ctx: AppContext) -> RecordStore:
    return RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)


def notification_bodies(ctx: AppContext, ids: list[int]) -> list[str]:
    with session_scope(ctx.sessions) as session:
        rows = session.scalars(select(Notification).where(Notification.id.in_(ids))).all()
        return [row.body for row in rows]


# -- the bundled example -----------------------------------------------------------------------


def test_example_poll_runs_initial_then_incremental(wctx: AppContext, api: Api) -> None:
    api.reply(
        "/tasks",
        (200, {}, {"tasks": [task(1, "a"), task(2, "b")], "next_cursor": "p2"}),
        (200, {}, {"tasks": [task(3, "c")], "next_cursor": None}),
        (200, {}, {"tasks": [task(2, "b2", "2024-02-01T00:00:00Z")], "next_cursor": None}),
    )
    pk = add_connection(
        wctx, "tasktracker", "acme", {"workspace_id": "w1"}, credentials=CREDENTIALS, schedules=True
    )
    run_id = trigger_run(wctx, pk, "tasks")

    notification_ids = execute_run(wctx, run_id, worker_id="test")

    run = load_run(wctx, run_id)
    assert (run.state, run.sync_type, run.attempts) == ("success", "INITIAL", 1)
    assert run.result == {"Task": {"added": 3, "updated": 0, "deleted": 0}}
    assert run.finished_at is not None and run.lease_expires_at is None and run.error is None
    assert store_of(wctx).count_records(pk, "Task") == 3
    assert api.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert api.requests[1]["query"]["cursor"] == ["p2"]
    schedule = load_schedule(wctx, pk, "tasks")
    assert schedule.active_run_id is None and schedule.last_sync_date == run.started_at
    (body,) = notification_bodies(wctx, notification_ids)
    assert '"syncType":"INITIAL"' in body and '"added":3' in body

    second = trigger_run(wctx, pk, "tasks")
    execute_run(wctx, second)
    run2 = load_run(wctx, second)
    assert (run2.state, run2.sync_type) == ("success", "INCREMENTAL")
    assert run2.result == {"Task": {"added": 0, "updated": 1, "deleted": 0}}
    assert api.requests[-1]["query"]["updated_after"] == [run.started_at.isoformat()]
    assert load_schedule(wctx, pk, "tasks").last_sync_date == run2.started_at


def test_reset_option_forces_a_full_run(wctx: AppContext, api: Api) -> None:
    api.reply("/tasks", (200, {}, {"tasks": [task(1, "a")]}))
    pk = add_connection(
        wctx, "tasktracker", "acme", {"workspace_id": "w1"}, credentials=CREDENTIALS, schedules=True
    )
    execute_run(wctx, trigger_run(wctx, pk, "tasks"))
    run_id = trigger_run(wctx, pk, "tasks", reset=True)
    execute_run(wctx, run_id)
    assert load_run(wctx, run_id).sync_type == "INITIAL"
    assert "updated_after" not in api.requests[-1]["query"]


def test_example_webhook_run_fetches_and_saves(wctx: AppContext, api: Api) -> None:
    api.reply("/tasks/5", (200, {}, task(5, "from webhook")))
    pk = add_connection(
        wctx, "tasktracker", "acme", {"workspace_id": "w1"}, credentials=CREDENTIALS, schedules=True
    )
    run_id = add_webhook_run(wctx, pk, "tasks", {"event": "task.updated", "task_id": 5})
    ids = execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.sync_type) == ("success", "WEBHOOK")
    assert run.result == {"Task": {"added": 1, "updated": 0, "deleted": 0}}
    (body,) = notification_bodies(wctx, ids)
    assert '"syncType":"WEBHOOK"' in body
    deleted = add_webhook_run(wctx, pk, "tasks", {"event": "task.deleted", "task_id": 5})
    execute_run(wctx, deleted)
    assert load_run(wctx, deleted).result["Task"]["deleted"] == 1
    assert store_of(wctx).count_records(pk, "Task") == 0


# -- idempotency and leases -------------------------------------------------------------------


def test_execute_run_is_idempotent(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    assert execute_run(wctx, run_id)
    finished = load_run(wctx, run_id)
    assert execute_run(wctx, run_id) == []
    again = load_run(wctx, run_id)
    assert (again.attempts, again.finished_at, again.result) == (
        1,
        finished.finished_at,
        finished.result,
    )
    assert store_of(wctx).count_records(pk, "Item") == 3
    assert execute_run(wctx, 999_999) == []


def test_running_run_with_live_lease_is_not_claimed_but_expired_one_is(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    with session_scope(wctx.sessions) as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(state="running", attempts=1, lease_expires_at=utcnow() + timedelta(minutes=1))
        )
    assert execute_run(wctx, run_id) == []
    assert load_run(wctx, run_id).state == "running"
    with session_scope(wctx.sessions) as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        # The dead first attempt left a deletion-detection window open.
        session.add(TrackingWindow(run_id=run_id, connection_pk=pk, model="Item", start_seq=0))
    execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.attempts) == ("success", 2)
    with session_scope(wctx.sessions) as session:
        assert session.scalars(select(TrackingWindow)).all() == []


def test_a_run_whose_workers_keep_dying_ends_as_an_error_without_running(
    wctx: AppContext,
) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    with session_scope(wctx.sessions) as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(
                state="running",
                attempts=MAX_ATTEMPTS,
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    ids = execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type, run.attempts) == ("error", "worker_lost", 6)
    assert store_of(wctx).count_records(pk, "Item") == 0  # the script did not run again
    (body,) = notification_bodies(wctx, ids)
    assert '"success":false' in body and "worker_lost" in body
    assert load_schedule(wctx, pk, "items").active_run_id is None


def test_a_run_taken_over_midway_drops_its_outcome(
    wctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    pk = add_connection(
        wctx, "toy", "c1", {"mode": "takeover"}, credentials=CREDENTIALS, schedules=True
    )
    run_id = trigger_run(wctx, pk, "items")

    def take_over() -> None:  # the sweeper re-queued it and another worker claimed it
        with session_scope(wctx.sessions) as session:
            session.execute(update(SyncRun).where(SyncRun.id == run_id).values(attempts=2))

    monkeypatch.setattr(f"{__name__}.TAKEOVER", take_over)
    assert execute_run(wctx, run_id) == []
    run = load_run(wctx, run_id)
    assert (run.state, run.attempts, run.finished_at) == ("running", 2, None)


def test_a_run_that_lost_its_lease_stops_writing(
    wctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 5 s lease beats every 1.7 s; the script sleeps past a beat after the takeover.
    ctx = AppContext(dataclasses.replace(wctx.settings, run_lease_seconds=5))
    try:
        pk = add_connection(
            ctx,
            "toy",
            "c1",
            {"mode": "takeover", "sleep": 2.5},
            credentials=CREDENTIALS,
            schedules=True,
        )
        run_id = trigger_run(ctx, pk, "items")

        def take_over() -> None:
            with session_scope(ctx.sessions) as session:
                session.execute(update(SyncRun).where(SyncRun.id == run_id).values(attempts=2))

        monkeypatch.setattr(f"{__name__}.TAKEOVER", take_over)
        assert execute_run(ctx, run_id) == []
        assert load_run(ctx, run_id).state == "running"
        page = store_of(ctx).list_records(pk, "Item")
        assert [record["id"] for record in page.records] == ["1"]  # "2" was never written
        with session_scope(ctx.sessions) as session:
            assert session.scalars(select(TrackingWindow)).all() == []
    finally:
        ctx.close()


def test_heartbeat_extends_the_lease_and_notices_a_takeover(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    soon = utcnow() + timedelta(seconds=5)
    with session_scope(wctx.sessions) as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(state="running", attempts=1, lease_expires_at=soon)
        )
    heartbeat = LeaseHeartbeat(wctx, run_id, 1, 90, interval=0.05)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 10
        while (load_run(wctx, run_id).lease_expires_at or soon) <= soon + timedelta(seconds=60):
            assert time.monotonic() < deadline, "the heartbeat never extended the lease"
            time.sleep(0.05)
        heartbeat.check()  # still ours
        with session_scope(wctx.sessions) as session:
            session.execute(update(SyncRun).where(SyncRun.id == run_id).values(state="queued"))
        while not heartbeat.is_lost:
            assert time.monotonic() < deadline, "the heartbeat never noticed the takeover"
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="lost its lease"):
            heartbeat.check()
    finally:
        heartbeat.stop()


# -- failures ------------------------------------------------------------------------------------


def test_script_error_fails_the_run_without_secrets(wctx: AppContext) -> None:
    pk = add_connection(
        wctx, "toy", "c1", {"mode": "boom"}, credentials=CREDENTIALS, schedules=True
    )
    run_id = trigger_run(wctx, pk, "items")
    ids = execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type) == ("error", "script_error")
    assert run.error == "ValueError: exploded while using *** (at items.py:13 in fetch_data)"
    assert run.result == {"Item": {"added": 1, "updated": 0, "deleted": 0}}
    (body,) = notification_bodies(wctx, ids)
    assert '"success":false' in body and SECRET not in body and "script_error" in body
    schedule = load_schedule(wctx, pk, "items")
    assert schedule.active_run_id is None and schedule.last_sync_date is None


def test_a_transient_failure_requeues_the_run_and_the_sweeper_retries_it(
    wctx: AppContext,
) -> None:
    from scheduler.tick import tick

    pk = add_connection(
        wctx,
        "toy",
        "c1",
        {"mode": "transient", "fail_times": 1},
        credentials=CREDENTIALS,
        schedules=True,
    )
    run_id = trigger_run(wctx, pk, "items")
    assert execute_run(wctx, run_id) == []  # no failure notification for a retriable error
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type) == ("queued", "temporary_error")
    assert run.lease_expires_at is not None
    retry_at = run.lease_expires_at
    assert tick(wctx, retry_at - timedelta(seconds=1)).run_ids == ()  # backing off
    assert run_id in tick(wctx, retry_at + timedelta(seconds=1)).run_ids

    ids = execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.attempts) == ("success", 2)
    assert store_of(wctx).count_records(pk, "Item") == 1
    (body,) = notification_bodies(wctx, ids)
    assert '"success":true' in body


def test_a_run_failing_transiently_every_time_ends_as_error(wctx: AppContext) -> None:
    pk = add_connection(
        wctx,
        "toy",
        "c1",
        {"mode": "transient", "fail_times": 99},
        credentials=CREDENTIALS,
        schedules=True,
    )
    run_id = trigger_run(wctx, pk, "items")
    for attempt in range(1, MAX_TRANSIENT_ATTEMPTS):
        assert execute_run(wctx, run_id) == []
        assert load_run(wctx, run_id).state == "queued", f"attempt {attempt}"
    ids = execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type, run.attempts) == ("error", "temporary_error", 5)
    (body,) = notification_bodies(wctx, ids)
    assert '"success":false' in body and "connection lock busy" in body


def test_failed_full_run_deletes_nothing_and_successful_one_does(wctx: AppContext) -> None:
    pk = add_connection(
        wctx, "toy", "c1", {"ids": ["1", "2", "3"]}, credentials=CREDENTIALS, schedules=True
    )
    execute_run(wctx, trigger_run(wctx, pk, "items"))
    with session_scope(wctx.sessions) as session:
        connection = session.get(Connection, pk)
        assert connection is not None
        assert connection.metadata_json == {"ids": ["1", "2", "3"], "runs": 1}
        connection.metadata_json = {"mode": "boom"}
    execute_run(wctx, trigger_run(wctx, pk, "items"))
    assert store_of(wctx).count_records(pk, "Item") == 3

    with session_scope(wctx.sessions) as session:
        connection = session.get(Connection, pk)
        assert connection is not None
        connection.metadata_json = {"ids": ["1", "3"]}
    run_id = trigger_run(wctx, pk, "items")
    execute_run(wctx, run_id)
    assert load_run(wctx, run_id).result == {"Item": {"added": 0, "updated": 1, "deleted": 1}}
    assert store_of(wctx).count_records(pk, "Item") == 2


@pytest.mark.parametrize(
    ("mode", "error_type", "fragment"),
    [
        ("strategy_late", "script_usage_error", "call it first"),
        ("bad_records", "invalid_records", "1"),
        ("api_404", "external_api_error", "GET /missing returned 404"),
    ],
)
def test_failures_are_classified(
    wctx: AppContext, mode: str, error_type: str, fragment: str
) -> None:
    pk = add_connection(wctx, "toy", "c1", {"mode": mode}, credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type) == ("error", error_type)
    assert fragment in (run.error or "") and SECRET not in (run.error or "")
    if mode == "bad_records":
        assert store_of(wctx).count_records(pk, "Item") == 0


def test_missing_webhook_handler_names_path_and_function(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = add_webhook_run(wctx, pk, "bare", {"id": 1})
    execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert run.state == "error" and run.error_type == "script_error"
    assert "toy/syncs/bare.py" in (run.error or "")
    assert "on_webhook_payload_received" in (run.error or "")


def test_sync_removed_from_config_fails_clearly(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = add_webhook_run(wctx, pk, "vanished", {"id": 1})
    execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type) == ("error", "config_error")
    assert "'vanished'" in (run.error or "")


# -- webhook events ------------------------------------------------------------------------------


def test_event_is_processed_when_its_last_run_finishes(wctx: AppContext) -> None:
    first_pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    second_pk = add_connection(wctx, "toy", "c2", credentials=CREDENTIALS, schedules=True)
    add_event(wctx, "ev1")
    first = add_webhook_run(wctx, first_pk, "items", {"id": 1, "name": "x"}, "ev1")
    second = add_webhook_run(wctx, second_pk, "items", {"id": 1, "name": "x"}, "ev1")

    def event_state() -> str:
        with session_scope(wctx.sessions) as session:
            event = session.get(WebhookEvent, "ev1")
            assert event is not None
            return event.state

    execute_run(wctx, first)
    assert event_state() == "routed"
    execute_run(wctx, second)
    assert event_state() == "processed"
    assert load_run(wctx, second).result == {"Item": {"added": 1, "updated": 0, "deleted": 0}}
