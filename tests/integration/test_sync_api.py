"""The sync control API (ingress/syncs.py, ARCHITECTURE.md §7) through the Flask test client.

The bundled example has a single sync, too few to tell "the named syncs" from "all of
them", so ``make_env`` is overridden to point at a copy of the example with a second sync
(``users``, paused until started) and a second integration (``crm``). The ``ctx`` fixture of
tests/conftest.py picks that up and runs every test on SQLite and on Postgres.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from cache.context import AppContext
from cache.db import session_scope
from cache.models import ModelSeq, Record, Schedule, SyncRun, utcnow
from cache.store import RecordStore
from cache.timestamps import api_time
from tests.support.auth import AUTH
from tests.support.integrations import write_integrations
from tests.support.queue import queued_messages
from tests.support.rows import schedule_of
from workers.schedules import claim_due, finish_poll_run

KEY = "tasktracker"

NANGO_YAML = """\
integrations:
  tasktracker:
    syncs:
      tasks:
        runs: every 30 seconds
        sync_type: incremental
        auto_start: true
        output: Task
        endpoint: GET /tasks
        webhook-subscriptions: [task.created, task.updated, task.deleted]
      users:
        runs: every hour
        sync_type: full
        auto_start: false
        output: User
        endpoint: GET /users
  crm:
    syncs:
      contacts:
        runs: every day
        output: Contact
        endpoint: GET /contacts

models:
  Task: {id: string, title: string}
  User: {id: string, name: string}
  Contact: {id: string, email: string}

providers:
  tasktracker:
    base_url: ${TASKTRACKER_BASE_URL}
    webhook_secret: ${TASKTRACKER_WEBHOOK_SECRET}
    auth: {type: bearer}
    webhook:
      signature:
        {scheme: hmac-sha256, header: X-Tracker-Signature, encoding: hex, prefix: "sha256="}
      event_type: {header: X-Tracker-Event}
      connection: {path: workspace_id, match: metadata.workspace_id}
      delivery_id: {header: X-Tracker-Delivery}
"""

SCRIPT = "def fetch_data(nango):\n    pass\n"

STATUS_FIELDS = [
    "id",
    "connection_id",
    "name",
    "status",
    "type",
    "finishedAt",
    "nextScheduledSyncAt",
    "frequency",
    "latestResult",
    "latestExecutionStatus",
    "recordCount",
]


@pytest.fixture
def make_env(make_env: Callable[..., dict[str, str]], tmp_path: Path) -> Callable[..., Any]:
    """The conftest environment, on the two-sync copy of the example integration."""
    directory = write_integrations(tmp_path / "integrations", NANGO_YAML, SCRIPT)

    def build(**overrides: str) -> dict[str, str]:
        return make_env(**{"HOOKSYNC_INTEGRATIONS_DIR": str(directory), **overrides})

    return build


# --- helpers ----------------------------------------------------------------------------


def connect(client: FlaskClient, connection_id: str = "acme", key: str = KEY) -> int:
    response = client.post(
        "/connections",
        json={
            "provider_config_key": key,
            "connection_id": connection_id,
            "credentials": {"type": "NONE"},
        },
        headers=AUTH,
    )
    assert response.status_code == 201, response.json
    return int(response.json["id"])


def post(client: FlaskClient, path: str, **body: Any) -> Any:
    body = {"provider_config_key": KEY, "connection_id": "acme", "syncs": ["tasks"], **body}
    body = {k: v for k, v in body.items() if v is not None}
    return client.post(path, json=body, headers=AUTH)


def status(client: FlaskClient, **params: str) -> Any:
    params = {"provider_config_key": KEY, "syncs": "*", **params}
    return client.get("/sync/status", query_string=params, headers=AUTH)


def set_frequency(client: FlaskClient, frequency: Any, **body: Any) -> Any:
    body = {
        "provider_config_key": KEY,
        "connection_id": "acme",
        "sync_name": "tasks",
        "frequency": frequency,
        **body,
    }
    return client.put("/sync/update-connection-frequency", json=body, headers=AUTH)


def runs(ctx: AppContext) -> list[SyncRun]:
    with ctx.sessions() as session:
        rows = session.scalars(select(SyncRun).order_by(SyncRun.id)).all()
        session.expunge_all()
        return list(rows)


def update_schedule(ctx: AppContext, connection_pk: int, sync_name: str, **values: Any) -> None:
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(Schedule)
            .where(Schedule.connection_pk == connection_pk, Schedule.sync_name == sync_name)
            .values(**values)
        )


def update_run(ctx: AppContext, run_id: int, **values: Any) -> None:
    with session_scope(ctx.sessions) as session:
        session.execute(update(SyncRun).where(SyncRun.id == run_id).values(**values))


def finish(ctx: AppContext, run_id: int, state: str, result: dict[str, Any] | None = None) -> None:
    """Finish a run the way a worker does: row state, then the schedule's release."""
    now = utcnow()
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        run.state = state
        run.started_at = run.created_at
        run.finished_at = now
        run.result = result or {}
        finish_poll_run(session, run, now, integrations=ctx.integrations)


def enqueued_runs(ctx: AppContext) -> list[int]:
    """Run ids of the ``hooksync.run_sync`` messages waiting in Redis."""
    messages = queued_messages(ctx.redis)
    return sorted(m["args"][0] for m in messages if m["task"] == "hooksync.run_sync")


def store(ctx: AppContext) -> RecordStore:
    return RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)


def save(ctx: AppContext, connection_pk: int, model: str, *ids: str) -> None:
    store(ctx).save(connection_pk, model, [{"id": i, "title": f"#{i}"} for i in ids])


def cached(ctx: AppContext) -> dict[tuple[int, str], int]:
    """Record rows (live and deleted) per (connection, model)."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(Record.connection_pk, Record.model, func.count()).group_by(
                Record.connection_pk, Record.model
            )
        ).all()
    return {(pk, model): count for pk, model, count in rows}


def assert_on_grid(schedule_row: Schedule, interval: int, after: datetime) -> None:
    """``next_run_at`` is the first point of ``starts_at + k * interval`` past ``after``."""
    assert schedule_row.next_run_at is not None
    offset = (schedule_row.next_run_at - schedule_row.starts_at).total_seconds()
    assert offset % interval == 0
    assert after < schedule_row.next_run_at <= after + timedelta(seconds=interval)


# --- auth -------------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/sync/trigger"),
    ("POST", "/sync/pause"),
    ("POST", "/sync/start"),
    ("GET", "/sync/status"),
    ("PUT", "/sync/update-connection-frequency"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}])
def test_every_endpoint_requires_the_api_key(
    client: FlaskClient, ctx: AppContext, method: str, path: str, headers: dict[str, str]
) -> None:
    pk = connect(client)
    body = {
        "provider_config_key": KEY,
        "connection_id": "acme",
        "syncs": ["tasks"],
        "sync_name": "tasks",
        "frequency": "every 1h",
    }
    response = client.open(
        path,
        method=method,
        json=body if method != "GET" else None,
        query_string=body if method == "GET" else None,
        headers=headers,
    )
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert runs(ctx) == []
    row = schedule_of(ctx, pk)
    assert (row.state, row.frequency_seconds) == ("STARTED", None)


# --- trigger ----------------------------------------------------------------------------


def test_trigger_creates_one_queued_poll_run_and_enqueues_it(
    client: FlaskClient, ctx: AppContext
) -> None:
    pk = connect(client)
    response = post(client, "/sync/trigger")
    assert response.status_code == 200 and response.json == {"success": True}
    (run,) = runs(ctx)
    assert (run.connection_pk, run.sync_name, run.kind, run.state, run.sync_type) == (
        pk, "tasks", "poll", "queued", "INITIAL",
    )  # fmt: skip
    assert run.options == {}
    assert schedule_of(ctx, pk).active_run_id == run.id
    assert enqueued_runs(ctx) == [run.id]


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_second_trigger_while_active_is_acknowledged_without_a_run(
    client: FlaskClient, ctx: AppContext, state: str
) -> None:
    pk = connect(client)
    post(client, "/sync/trigger")
    (first,) = runs(ctx)
    update_run(ctx, first.id, state=state)
    response = post(client, "/sync/trigger", opts={"reset": True})
    assert response.status_code == 200 and response.json == {"success": True}
    assert [run.id for run in runs(ctx)] == [first.id]
    assert enqueued_runs(ctx) == [first.id]
    assert schedule_of(ctx, pk).active_run_id == first.id
    # Once it finished, the next trigger runs again.
    finish(ctx, first.id, "success")
    post(client, "/sync/trigger")
    assert [(run.id == first.id, run.state) for run in runs(ctx)] == [
        (True, "success"),
        (False, "queued"),
    ]


def test_trigger_without_connection_id_triggers_every_connection_of_the_integration(
    client: FlaskClient, ctx: AppContext
) -> None:
    acme, globex = connect(client, "acme"), connect(client, "globex")
    connect(client, "bigco", key="crm")
    response = post(client, "/sync/trigger", connection_id=None)
    assert response.status_code == 200 and response.json == {"success": True}
    assert sorted((run.connection_pk, run.sync_name) for run in runs(ctx)) == [
        (acme, "tasks"),
        (globex, "tasks"),
    ]
    assert enqueued_runs(ctx) == [run.id for run in runs(ctx)]


def test_trigger_without_connections_is_a_no_op(client: FlaskClient, ctx: AppContext) -> None:
    response = post(client, "/sync/trigger", connection_id=None)
    assert response.status_code == 200 and response.json == {"success": True}
    assert runs(ctx) == []


@pytest.mark.parametrize(
    ("syncs", "expected"),
    [
        (["users"], ["users"]),
        ([{"name": "users"}], ["users"]),
        (["tasks", "users", "tasks"], ["tasks", "users"]),
        ("users, tasks", ["tasks", "users"]),
        (["*"], ["tasks", "users"]),
        ("*", ["tasks", "users"]),
        # Nango: an empty list is every sync (what the Node client's triggerSync(key) sends).
        ([], ["tasks", "users"]),
    ],
)
def test_trigger_runs_the_named_syncs_only(
    client: FlaskClient, ctx: AppContext, syncs: Any, expected: list[str]
) -> None:
    connect(client)
    assert post(client, "/sync/trigger", syncs=syncs).status_code == 200
    # A paused sync (users is not auto_start) can be triggered too.
    assert sorted(run.sync_name for run in runs(ctx)) == expected


@pytest.mark.parametrize(
    ("body", "sync_type", "options"),
    [
        ({}, "INCREMENTAL", {}),
        ({"opts": {"reset": False}}, "INCREMENTAL", {}),
        ({"sync_mode": "incremental"}, "INCREMENTAL", {}),
        ({"opts": {"reset": True}}, "INITIAL", {"reset": True}),
        ({"sync_mode": "full_refresh"}, "INITIAL", {"reset": True}),
        ({"opts": {"emptyCache": True}}, "INITIAL", {"reset": True, "emptyCache": True}),
        (
            {"sync_mode": "full_refresh_and_clear_cache"},
            "INITIAL",
            {"reset": True, "emptyCache": True},
        ),
    ],
)
def test_reset_makes_an_initial_run_and_forgets_last_sync_date(
    client: FlaskClient,
    ctx: AppContext,
    body: dict[str, Any],
    sync_type: str,
    options: dict[str, Any],
) -> None:
    pk = connect(client)
    last = utcnow() - timedelta(hours=1)
    update_schedule(ctx, pk, "tasks", last_sync_date=last)  # a run succeeded before
    assert post(client, "/sync/trigger", **body).json == {"success": True}
    (run,) = runs(ctx)
    assert (run.sync_type, run.options) == (sync_type, options)
    expected_last = None if options.get("reset") else last
    assert schedule_of(ctx, pk).last_sync_date == expected_last


@pytest.mark.parametrize(
    "body",
    [{"opts": {"emptyCache": True}}, {"sync_mode": "full_refresh_and_clear_cache"}],
)
def test_empty_cache_deletes_the_connections_records_of_the_syncs_models_only(
    client: FlaskClient, ctx: AppContext, body: dict[str, Any]
) -> None:
    acme, globex = connect(client, "acme"), connect(client, "globex")
    save(ctx, acme, "Task", "1", "2", "3")
    store(ctx).delete(acme, "Task", [{"id": "3"}])  # soft-deleted rows go too
    save(ctx, acme, "User", "u1")
    save(ctx, globex, "Task", "1")
    seq_before = store(ctx).current_seq(acme, "Task")
    assert post(client, "/sync/trigger", **body).status_code == 200
    assert cached(ctx) == {(acme, "User"): 1, (globex, "Task"): 1}
    # Cursors apps hold stay valid: the sequence is not reset.
    with ctx.sessions() as session:
        assert session.get(ModelSeq, (acme, "Task")).seq == seq_before  # type: ignore[union-attr]
    assert len(runs(ctx)) == 1


@pytest.mark.parametrize("body", [{}, {"opts": {"reset": True}}, {"sync_mode": "full_refresh"}])
def test_without_empty_cache_the_records_stay(
    client: FlaskClient, ctx: AppContext, body: dict[str, Any]
) -> None:
    acme = connect(client)
    save(ctx, acme, "Task", "1", "2")
    assert post(client, "/sync/trigger", **body).status_code == 200
    assert cached(ctx) == {(acme, "Task"): 2}


def test_empty_cache_while_a_run_is_active_keeps_the_records(
    client: FlaskClient, ctx: AppContext
) -> None:
    # The trigger is acknowledged without a run; emptying the cache anyway would leave it
    # empty after the in-flight (incremental) run records its last_sync_date.
    acme = connect(client)
    save(ctx, acme, "Task", "1", "2")
    post(client, "/sync/trigger")
    response = post(client, "/sync/trigger", opts={"emptyCache": True})
    assert response.status_code == 200 and response.json == {"success": True}
    assert cached(ctx) == {(acme, "Task"): 2}
    assert len(runs(ctx)) == 1


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"provider_config_key": "hubspot"}, "provider_config_key", "'hubspot'"),
        ({"provider_config_key": None}, "provider_config_key", "provider_config_key: required"),
        ({"syncs": ["nope"]}, "syncs", "'nope'"),
        ({"syncs": ["tasks", {"name": "contacts"}]}, "syncs", "syncs[1]"),
        ({"syncs": None}, "syncs", "syncs: required"),
        ({"syncs": 5}, "syncs", "got 5"),
        ({"syncs": " , "}, "syncs", "at least one sync"),
        ({"connection_id": 42}, "connection_id", "got 42"),
        ({"connection_id": ""}, "connection_id", "got ''"),
        ({"opts": "yes"}, "opts", "'yes'"),
        ({"opts": []}, "opts", "got []"),
        ({"opts": False}, "opts", "got False"),
        ({"opts": {"reset": "true"}}, "opts", "opts.reset: must be true or false, got 'true'"),
        ({"opts": {"emptyCache": 1}}, "opts", "opts.emptyCache: must be true or false, got 1"),
        ({"sync_mode": "full"}, "sync_mode", "got 'full'"),
        ({"sync_mode": ["full_refresh"]}, "sync_mode", "got ['full_refresh']"),
        ({"sync_mode": True}, "sync_mode", "got True"),
    ],
)
def test_bad_trigger_is_400_naming_the_field_and_value(
    client: FlaskClient, ctx: AppContext, body: dict[str, Any], field: str, fragment: str
) -> None:
    acme = connect(client)
    save(ctx, acme, "Task", "1")
    response = client.post(
        "/sync/trigger",
        json={"provider_config_key": KEY, "connection_id": "acme", "syncs": ["tasks"], **body},
        headers=AUTH,
    )
    assert response.status_code == 400, response.json
    assert response.json["error"]["field"] == field
    assert fragment in response.json["error"]["message"]
    assert runs(ctx) == [] and enqueued_runs(ctx) == []
    assert cached(ctx) == {(acme, "Task"): 1}


@pytest.mark.parametrize("path", ["/sync/trigger", "/sync/pause", "/sync/start"])
@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"provider_config_key": "hubspot"}, "provider_config_key", "'hubspot'"),
        ({"syncs": ["nope"]}, "syncs", "'nope'"),
        ({"syncs": None}, "syncs", "syncs: required"),
    ],
)
def test_bad_control_request_is_400_and_changes_nothing(
    client: FlaskClient,
    ctx: AppContext,
    path: str,
    body: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    acme = connect(client)
    before = schedule_of(ctx, acme)
    response = client.post(
        path,
        json={"provider_config_key": KEY, "connection_id": "acme", "syncs": ["tasks"], **body},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert fragment in response.json["error"]["message"]
    after = schedule_of(ctx, acme)
    assert (after.state, after.next_run_at) == (before.state, before.next_run_at)
    assert runs(ctx) == []


def test_pause_with_an_empty_sync_list_pauses_every_sync(
    client: FlaskClient, ctx: AppContext
) -> None:
    acme = connect(client)
    assert post(client, "/sync/start", syncs=["users"]).status_code == 200
    assert post(client, "/sync/pause", syncs=[]).status_code == 200
    assert [schedule_of(ctx, acme, name).state for name in ("tasks", "users")] == [
        "PAUSED",
        "PAUSED",
    ]


@pytest.mark.parametrize("path", ["/sync/trigger", "/sync/pause", "/sync/start"])
def test_non_json_body_is_400(client: FlaskClient, path: str) -> None:
    response = client.post(path, data="syncs=tasks", headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "body"


@pytest.mark.parametrize(
    "send",
    [
        lambda client: post(client, "/sync/trigger", connection_id="ghost"),
        lambda client: post(client, "/sync/pause", connection_id="ghost"),
        lambda client: post(client, "/sync/start", connection_id="ghost"),
        lambda client: status(client, connection_id="ghost"),
        lambda client: set_frequency(client, "every 1h", connection_id="ghost"),
        # A connection of another integration is not found under this one.
        lambda client: post(client, "/sync/trigger", connection_id="bigco"),
    ],
    ids=["trigger", "pause", "start", "status", "frequency", "other-integration"],
)
def test_unknown_connection_is_404(
    client: FlaskClient, ctx: AppContext, send: Callable[[FlaskClient], Any]
) -> None:
    connect(client, "acme")
    connect(client, "bigco", key="crm")
    response = send(client)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_connection"
    assert response.json["error"]["field"] == "connection_id"
    assert (
        "'ghost'" in response.json["error"]["message"]
        or "'bigco'" in (response.json["error"]["message"])
    )
    assert runs(ctx) == []


# --- pause and start --------------------------------------------------------------------


def test_pause_stops_scheduling_but_not_the_run_in_flight(
    client: FlaskClient, ctx: AppContext
) -> None:
    acme, globex = connect(client, "acme"), connect(client, "globex")
    post(client, "/sync/trigger")
    (run,) = runs(ctx)
    response = post(client, "/sync/pause")
    assert response.status_code == 200 and response.json == {"success": True}
    paused = schedule_of(ctx, acme)
    assert (paused.state, paused.next_run_at) == ("PAUSED", None)
    assert schedule_of(ctx, globex).state == "STARTED"  # another connection is untouched
    assert runs(ctx)[0].state == "queued" and paused.active_run_id == run.id
    # The run finishes; the scheduler does not start another for the paused sync.
    finish(ctx, run.id, "success")
    assert schedule_of(ctx, acme).next_run_at is None
    with session_scope(ctx.sessions) as session:
        claimed = claim_due(session, ctx.integrations, utcnow() + timedelta(days=1))
    assert [r.connection_pk for r in runs(ctx) if r.id in claimed] == [globex]
    tasks = status(client, connection_id="acme", syncs="tasks").json["syncs"][0]
    assert (tasks["status"], tasks["nextScheduledSyncAt"]) == ("PAUSED", None)


def test_pause_without_connection_id_pauses_every_connection(
    client: FlaskClient, ctx: AppContext
) -> None:
    acme, globex = connect(client, "acme"), connect(client, "globex")
    bigco = connect(client, "bigco", key="crm")
    assert post(client, "/sync/pause", connection_id=None, syncs="*").status_code == 200
    for pk in (acme, globex):
        for name in ("tasks", "users"):
            assert schedule_of(ctx, pk, name).state == "PAUSED"
    assert schedule_of(ctx, bigco, "contacts").state == "STARTED"


def test_start_resumes_a_never_run_sync_at_once(client: FlaskClient, ctx: AppContext) -> None:
    acme = connect(client)
    assert schedule_of(ctx, acme, "users").state == "PAUSED"  # not auto_start
    before = utcnow()
    response = post(client, "/sync/start", syncs=["users"])
    assert response.status_code == 200 and response.json == {"success": True}
    started = schedule_of(ctx, acme, "users")
    assert started.state == "STARTED"
    assert started.next_run_at is not None and before <= started.next_run_at <= utcnow()
    assert runs(ctx) == []  # start only schedules; the tick claims it


def test_start_after_pause_resumes_on_the_grid(client: FlaskClient, ctx: AppContext) -> None:
    acme = connect(client)
    update_schedule(ctx, acme, "tasks", last_sync_date=utcnow() - timedelta(minutes=5))
    post(client, "/sync/pause")
    assert schedule_of(ctx, acme).next_run_at is None
    before = utcnow()
    assert post(client, "/sync/start").json == {"success": True}
    resumed = schedule_of(ctx, acme)
    assert resumed.state == "STARTED"
    assert_on_grid(resumed, 30, before)
    assert status(client, connection_id="acme", syncs="tasks").json["syncs"][0]["status"] == (
        "SUCCESS"
    )


# --- status -----------------------------------------------------------------------------


def test_status_shape_of_a_new_connection(client: FlaskClient, ctx: AppContext) -> None:
    acme = connect(client)
    response = status(client, connection_id="acme", syncs="tasks")
    assert response.status_code == 200
    assert list(response.json) == ["syncs"]
    (tasks,) = response.json["syncs"]
    assert list(tasks) == STATUS_FIELDS
    row = schedule_of(ctx, acme)
    assert row.next_run_at is not None
    assert tasks == {
        "id": row.id,
        "connection_id": "acme",
        "name": "tasks",
        "status": "SUCCESS",  # started, waiting for its first run
        "type": "INITIAL",
        "finishedAt": None,
        "nextScheduledSyncAt": api_time(row.next_run_at),
        "frequency": "every 30 seconds",
        "latestResult": {},
        "latestExecutionStatus": None,
        "recordCount": {"Task": 0},
    }
    users = status(client, connection_id="acme", syncs="users").json["syncs"][0]
    assert (users["status"], users["nextScheduledSyncAt"]) == ("PAUSED", None)
    assert (users["frequency"], users["recordCount"]) == ("every hour", {"User": 0})


@pytest.mark.parametrize("state", ["queued", "running"])
def test_status_is_running_while_a_run_is_active(
    client: FlaskClient, ctx: AppContext, state: str
) -> None:
    connect(client)
    post(client, "/sync/trigger")
    (run,) = runs(ctx)
    update_run(ctx, run.id, state=state)
    (tasks,) = status(client, connection_id="acme", syncs="tasks").json["syncs"]
    assert (tasks["status"], tasks["latestExecutionStatus"], tasks["type"]) == (
        "RUNNING", "RUNNING", "INITIAL",
    )  # fmt: skip
    assert tasks["finishedAt"] is None
    # Paused with a run still in flight: it is running.
    post(client, "/sync/pause")
    (tasks,) = status(client, connection_id="acme", syncs="tasks").json["syncs"]
    assert tasks["status"] == "RUNNING"


@pytest.mark.parametrize(("state", "word"), [("success", "SUCCESS"), ("error", "ERROR")])
def test_status_after_a_finished_run(
    client: FlaskClient, ctx: AppContext, state: str, word: str
) -> None:
    connect(client)
    post(client, "/sync/trigger")
    (run,) = runs(ctx)
    result = {"Task": {"added": 2, "updated": 1, "deleted": 0}}
    finish(ctx, run.id, state, result)
    (finished,) = runs(ctx)
    (tasks,) = status(client, connection_id="acme", syncs="tasks").json["syncs"]
    assert tasks["status"] == word and tasks["latestExecutionStatus"] == word
    assert tasks["finishedAt"] == api_time(finished.finished_at)  # type: ignore[arg-type]
    assert tasks["latestResult"] == result
    assert tasks["type"] == "INITIAL"
    # A new run in flight: RUNNING, while the last finished one still reports its result.
    post(client, "/sync/trigger")
    (tasks,) = status(client, connection_id="acme", syncs="tasks").json["syncs"]
    assert tasks["status"] == "RUNNING" and tasks["latestExecutionStatus"] == "RUNNING"
    assert tasks["finishedAt"] == api_time(finished.finished_at)  # type: ignore[arg-type]
    assert tasks["latestResult"] == result
    expected_type = "INCREMENTAL" if state == "success" else "INITIAL"
    assert tasks["type"] == expected_type


def test_status_counts_live_records_of_the_syncs_models(
    client: FlaskClient, ctx: AppContext
) -> None:
    acme, globex = connect(client, "acme"), connect(client, "globex")
    save(ctx, acme, "Task", "1", "2", "3")
    store(ctx).delete(acme, "Task", [{"id": "2"}])
    save(ctx, acme, "User", "u1", "u2")
    save(ctx, globex, "Task", "9")
    response = status(client, connection_id="acme")
    counts = {sync["name"]: sync["recordCount"] for sync in response.json["syncs"]}
    assert counts == {"tasks": {"Task": 2}, "users": {"User": 2}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"syncs": "*"}, ["acme/tasks", "acme/users", "globex/tasks", "globex/users"]),
        ({"syncs": "users,tasks"}, ["acme/users", "acme/tasks", "globex/users", "globex/tasks"]),
        ({"syncs": "tasks, tasks"}, ["acme/tasks", "globex/tasks"]),
        ({"syncs": "users", "connection_id": "globex"}, ["globex/users"]),
        ({"syncs": "*", "connection_id": "acme"}, ["acme/tasks", "acme/users"]),
    ],
)
def test_status_lists_the_asked_syncs_of_the_asked_connections(
    client: FlaskClient, params: dict[str, str], expected: list[str]
) -> None:
    connect(client, "acme")
    connect(client, "globex")
    connect(client, "bigco", key="crm")
    response = status(client, **params)
    assert response.status_code == 200
    assert [f"{s['connection_id']}/{s['name']}" for s in response.json["syncs"]] == expected


def test_status_of_an_integration_without_connections_is_empty(client: FlaskClient) -> None:
    connect(client, "acme")
    response = status(client, provider_config_key="crm")
    assert response.status_code == 200 and response.json == {"syncs": []}


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"provider_config_key": "hubspot"}, "provider_config_key", "'hubspot'"),
        ({"provider_config_key": ""}, "provider_config_key", "required"),
        ({"syncs": "tasks,nope"}, "syncs", "'nope'"),
        ({"syncs": ""}, "syncs", "at least one sync"),
    ],
)
def test_bad_status_query_is_400(
    client: FlaskClient, params: dict[str, str], field: str, fragment: str
) -> None:
    connect(client)
    response = status(client, **params)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert fragment in response.json["error"]["message"]


def test_status_without_syncs_is_400(client: FlaskClient) -> None:
    response = client.get("/sync/status?provider_config_key=tasktracker", headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "syncs"


# --- frequency --------------------------------------------------------------------------


def test_frequency_override_moves_next_run_onto_the_new_grid(
    client: FlaskClient, ctx: AppContext
) -> None:
    acme = connect(client)
    before = utcnow()
    response = set_frequency(client, "every 1h")
    assert response.status_code == 200 and response.json == {"frequency": "every 1h"}
    row = schedule_of(ctx, acme)
    assert row.frequency_seconds == 3600
    assert_on_grid(row, 3600, before)
    assert row.next_run_at - before > timedelta(seconds=30)  # type: ignore[operator]
    (tasks,) = status(client, connection_id="acme", syncs="tasks").json["syncs"]
    assert tasks["frequency"] == "every 1h"
    assert tasks["nextScheduledSyncAt"] == api_time(row.next_run_at)  # type: ignore[arg-type]

    before = utcnow()
    restored = set_frequency(client, None)
    assert restored.status_code == 200 and restored.json == {"frequency": "every 30 seconds"}
    row = schedule_of(ctx, acme)
    assert row.frequency_seconds is None
    assert_on_grid(row, 30, before)
    (tasks,) = status(client, connection_id="acme", syncs="tasks").json["syncs"]
    assert tasks["frequency"] == "every 30 seconds"


def test_frequency_of_a_paused_sync_sets_no_due_time(client: FlaskClient, ctx: AppContext) -> None:
    acme = connect(client)
    assert set_frequency(client, "every 2 days", sync_name="users").status_code == 200
    row = schedule_of(ctx, acme, "users")
    assert (row.state, row.frequency_seconds, row.next_run_at) == ("PAUSED", 172800, None)
    # Starting it later keeps the override.
    post(client, "/sync/start", syncs=["users"])
    (users,) = status(client, connection_id="acme", syncs="users").json["syncs"]
    assert users["frequency"] == "every 2d"
    assert schedule_of(ctx, acme, "users").frequency_seconds == 172800


@pytest.mark.parametrize(
    ("frequency", "fragment"),
    [
        ("every fortnight", "'every fortnight'"),
        ("every 10s", "'every 10s'"),
        # Too large for the Postgres column and the grid arithmetic: was a 500.
        ("every 30000d", "'every 30000d'"),
        ("every 99999999999w", "'every 99999999999w'"),
        ("", "''"),
        (3600, "3600"),
    ],
)
def test_invalid_frequency_is_400_naming_the_value(
    client: FlaskClient, ctx: AppContext, frequency: Any, fragment: str
) -> None:
    acme = connect(client)
    before = schedule_of(ctx, acme)
    response = set_frequency(client, frequency)
    assert response.status_code == 400
    assert fragment in response.json["error"]["message"]
    after = schedule_of(ctx, acme)
    assert (after.frequency_seconds, after.next_run_at) == (None, before.next_run_at)


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"sync_name": "nope"}, "sync_name", "'nope'"),
        ({"sync_name": None}, "sync_name", "None"),
        ({"provider_config_key": "hubspot"}, "provider_config_key", "'hubspot'"),
        ({"connection_id": None}, "connection_id", "got None"),
    ],
)
def test_bad_frequency_request_is_400_naming_the_field(
    client: FlaskClient, body: dict[str, Any], field: str, fragment: str
) -> None:
    connect(client)
    response = set_frequency(client, "every 1h", **body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert fragment in response.json["error"]["message"]
