"""Routing received webhooks into runs (workers/events.py), on SQLite and Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cache.context import AppContext
from cache.db import session_scope
from cache.models import (
    Notification,
    SyncRun,
    WebhookDelivery,
    WebhookEvent,
)
from config.errors import BadInputError, RetriableError
from config.settings import load_settings
from ingress.webhooks import build_event
from tests.support.concurrency import run_at_once
from tests.support.contexts import events_context
from tests.support.rows import add_connection
from tests.support.servers import free_port
from workers.events import RouteResult, prune_deliveries, replay_event, route_event

NANGO_YAML = """
integrations:
  tracker:
    syncs:
      tasks:
        runs: every 1h
        output: Task
        webhook-subscriptions: [task.created, task.updated]
      audit:
        runs: every 1h
        output: Task
        webhook-subscriptions: [task.created, task.deleted]
  open:
    syncs:
      items:
        runs: every 1h
        output: Item
        webhook-subscriptions: ['*']
models:
  Task: {id: string}
  Item: {id: string}
providers:
  tracker:
    base_url: http://127.0.0.1:9
    webhook_secret: s3cret
    webhook:
      signature: {scheme: hmac-sha256, header: X-Sig, encoding: hex, prefix: "sha256="}
      event_type: {header: X-Event}
      connection: {path: workspace_id, match: metadata.workspace_id}
      delivery_id: {header: X-Delivery}
  open:
    base_url: http://127.0.0.1:9
    forward_webhooks: true
    webhook:
      signature: {scheme: none}
      event_type: {path: type}
      connection: {path: account, match: connection_id}
      batch: {path: events}
"""

APP_URL = "http://127.0.0.1:9/app-hook"
#: Credentials of the connections here (stored encrypted, as the API stores them).
CREDENTIALS = {"type": "NONE"}
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ctx(make_env, database_url: str, tmp_path: Path) -> Iterator[AppContext]:
    """Like the shared ``ctx`` fixture, on this file's integrations and with an app URL."""
    folder = tmp_path / "integrations"
    with events_context(make_env, database_url, folder, NANGO_YAML, APP_URL) as context:
        yield context


def tracker_event(
    body: dict[str, Any] | bytes, event: str | None = "task.created", delivery: str = "d-1"
) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Delivery": delivery}
    if event is not None:
        headers["X-Event"] = event
    return build_event(
        "tracker", method="POST", url="http://h/webhook/tracker", headers=headers.items(), raw=raw
    )


def event_row(ctx: AppContext, event_id: str) -> WebhookEvent:
    with session_scope(ctx.sessions) as session:
        row = session.get(WebhookEvent, event_id)
        assert row is not None
        return row


def runs_of(ctx: AppContext, event_id: str) -> list[SyncRun]:
    with session_scope(ctx.sessions) as session:
        query = select(SyncRun).where(SyncRun.webhook_event_id == event_id).order_by(SyncRun.id)
        return list(session.scalars(query))


def count(ctx: AppContext, model: type) -> int:
    with session_scope(ctx.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- fan-out ----------------------------------------------------------------------------


def test_one_run_per_matching_connection_and_subscribed_sync(ctx: AppContext) -> None:
    pk1 = add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    pk2 = add_connection(ctx, "tracker", "c2", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    add_connection(ctx, "tracker", "c3", {"workspace_id": "w2"}, credentials=CREDENTIALS)
    event = tracker_event({"workspace_id": "w1", "task_id": 7})

    result = route_event(ctx, event, now=NOW)

    assert isinstance(result, RouteResult) and result.state == "routed"
    runs = runs_of(ctx, event["id"])
    assert [run.id for run in runs] == list(result.run_ids)
    assert sorted((run.connection_pk, run.sync_name) for run in runs) == sorted(
        [(pk1, "tasks"), (pk1, "audit"), (pk2, "tasks"), (pk2, "audit")]
    )
    for run in runs:
        assert (run.kind, run.sync_type, run.state) == ("webhook", "WEBHOOK", "queued")
        assert run.payload == {"workspace_id": "w1", "task_id": 7}
        assert run.lease_expires_at == NOW + timedelta(seconds=90)
    row = event_row(ctx, event["id"])
    assert (row.state, row.runs_count, row.error) == ("routed", 4, None)
    assert (row.delivery_id, row.event_type) == ("d-1", "task.created")
    assert row.routed_at == NOW
    assert row.body == json.dumps({"workspace_id": "w1", "task_id": 7}).encode()
    assert row.headers["x-event"] == "task.created"
    assert result.notification_ids == ()  # tracker does not forward


def test_only_subscribed_syncs_run(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    event = tracker_event({"workspace_id": "w1"}, event="task.updated")
    route_event(ctx, event, now=NOW)
    assert [run.sync_name for run in runs_of(ctx, event["id"])] == ["tasks"]


# --- dedupe -----------------------------------------------------------------------------


def test_a_delivery_seen_within_7_days_is_a_duplicate(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    first = tracker_event({"workspace_id": "w1"})
    route_event(ctx, first, now=NOW)
    again = tracker_event({"workspace_id": "w1"})  # the provider's retry: same delivery id

    result = route_event(ctx, again, now=NOW + timedelta(days=6))

    assert result.run_ids == () and result.state == "duplicate"
    row = event_row(ctx, again["id"])
    assert row.state == "duplicate" and row.runs_count == 0
    assert first["id"] in str(row.error) and "'d-1'" in str(row.error)


def test_a_delivery_older_than_7_days_runs_again(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    route_event(ctx, tracker_event({"workspace_id": "w1"}), now=NOW)
    later = tracker_event({"workspace_id": "w1"})
    result = route_event(ctx, later, now=NOW + timedelta(days=8))
    assert result.state == "routed" and len(result.run_ids) == 2
    with session_scope(ctx.sessions) as session:
        delivery = session.get(WebhookDelivery, ("tracker", "d-1"))
        assert delivery is not None and delivery.event_id == later["id"]


def test_prune_deliveries_drops_only_expired_ids(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    route_event(ctx, tracker_event({"workspace_id": "w1"}, delivery="old"), now=NOW)
    route_event(
        ctx, tracker_event({"workspace_id": "w1"}, delivery="new"), now=NOW + timedelta(days=5)
    )
    with session_scope(ctx.sessions) as session:
        assert prune_deliveries(session, NOW + timedelta(days=8)) == 1
        assert session.get(WebhookDelivery, ("tracker", "new")) is not None


# --- idempotency ------------------------------------------------------------------------


def test_a_redelivered_message_creates_nothing_twice(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    event = tracker_event({"workspace_id": "w1"})
    first = route_event(ctx, event, now=NOW)

    again = route_event(ctx, event, now=NOW + timedelta(seconds=5))

    assert again.run_ids == first.run_ids and again.state == "routed"
    assert count(ctx, SyncRun) == 2 and count(ctx, WebhookEvent) == 1
    # Once a run has started, a redelivery no longer hands it out.
    with session_scope(ctx.sessions) as session:
        session.get(SyncRun, first.run_ids[0]).state = "running"
    assert route_event(ctx, event).run_ids == first.run_ids[1:]


# --- unrouted and rejected are kept -----------------------------------------------------


def test_no_matching_connection_is_kept_unrouted(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    event = tracker_event({"workspace_id": "w9"})
    result = route_event(ctx, event, now=NOW)
    assert result.state == "unrouted" and result.run_ids == ()
    row = event_row(ctx, event["id"])
    assert row.state == "unrouted"
    assert row.error == "no connection has metadata.workspace_id == 'w9'"


def test_an_event_the_database_refuses_is_kept_rejected_not_lost(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import DataError

    import workers.events

    def refuse(*_args: Any, **_kwargs: Any) -> RouteResult:
        # What Postgres answers for a NUL byte in an event type read from the body.
        raise DataError("INSERT ...", {}, ValueError("A string literal cannot contain NUL"))

    monkeypatch.setattr(workers.events, "_route", refuse)
    event = tracker_event({"workspace_id": "w1"})
    assert route_event(ctx, event, now=NOW) == RouteResult((), (), "rejected")
    row = event_row(ctx, event["id"])
    assert (row.state, row.error) == ("rejected", "could not route: DataError")
    assert json.loads(row.body) == {"workspace_id": "w1"}  # kept whole, replayable


def test_no_subscribed_sync_is_kept_unrouted(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    event = tracker_event({"workspace_id": "w1"}, event="task.archived")
    assert route_event(ctx, event, now=NOW).state == "unrouted"
    assert "subscribes to event type 'task.archived'" in str(event_row(ctx, event["id"]).error)


@pytest.mark.parametrize(
    ("body", "event", "message"),
    [
        (b"{not json", "task.created", "not valid JSON"),
        ({"workspace_id": "w1"}, None, "no event type: header 'X-Event' is missing"),
    ],
)
def test_malformed_events_are_kept_rejected(
    ctx: AppContext, body: Any, event: str | None, message: str
) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    received = tracker_event(body, event=event)
    result = route_event(ctx, received, now=NOW)
    assert result.state == "rejected" and result.run_ids == ()
    row = event_row(ctx, received["id"])
    assert row.state == "rejected" and message in str(row.error)


# --- batches and forwarding -------------------------------------------------------------


def open_event(body: Any) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    return build_event("open", method="POST", url="http://h/webhook/open", headers=[], raw=raw)


BATCH = {
    "events": [
        {"type": "item.created", "account": "c1", "n": 0},
        {"type": "item.updated", "account": "c2", "n": 1},
        {"type": "item.updated", "account": "zz", "n": 2},
    ]
}


def test_a_batch_is_split_and_each_event_routed(ctx: AppContext) -> None:
    pk1 = add_connection(ctx, "open", "c1", credentials=CREDENTIALS)
    pk2 = add_connection(ctx, "open", "c2", credentials=CREDENTIALS)
    event = open_event(BATCH)

    result = route_event(ctx, event, now=NOW)

    runs = runs_of(ctx, event["id"])
    assert [(run.connection_pk, run.payload["n"]) for run in runs] == [(pk1, 0), (pk2, 1)]
    row = event_row(ctx, event["id"])
    assert row.state == "routed" and row.runs_count == 2
    assert row.event_type == "item.created,item.updated"
    assert row.error == "event 2: no connection has connection_id == 'zz'"
    # Each event is forwarded raw, with its connection (none for the unmatched one).
    with session_scope(ctx.sessions) as session:
        bodies = [
            json.loads(n.body)
            for n in session.scalars(select(Notification).order_by(Notification.id))
        ]
    assert [n.id for n in _notifications(ctx)] == list(result.notification_ids)
    assert [(b["type"], b["connectionId"], b["payload"]["n"]) for b in bodies] == [
        ("forward", "c1", 0),
        ("forward", "c2", 1),
        ("forward", None, 2),
    ]
    assert all(b["providerConfigKey"] == "open" for b in bodies)


def test_each_event_of_a_batch_dedupes_separately(ctx: AppContext) -> None:
    add_connection(ctx, "open", "c1", credentials=CREDENTIALS)
    add_connection(ctx, "open", "c2", credentials=CREDENTIALS)
    route_event(ctx, open_event(BATCH), now=NOW)
    again = open_event(BATCH)
    result = route_event(ctx, again, now=NOW + timedelta(minutes=1))
    assert result.state == "duplicate" and result.notification_ids == ()
    with session_scope(ctx.sessions) as session:
        ids = set(session.scalars(select(WebhookDelivery.delivery_id)))
    assert {i.rsplit(":", 1)[1] for i in ids} == {"0", "1", "2"}


def _notifications(ctx: AppContext) -> list[Notification]:
    with session_scope(ctx.sessions) as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


# --- replay -----------------------------------------------------------------------------


def test_replay_bypasses_the_dedupe_and_counts_all_runs(ctx: AppContext) -> None:
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    route_event(ctx, tracker_event({"workspace_id": "w1"}), now=NOW)
    duplicate = tracker_event({"workspace_id": "w1"})
    assert route_event(ctx, duplicate, now=NOW).state == "duplicate"

    result = replay_event(ctx, duplicate["id"], now=NOW + timedelta(hours=1))

    assert result.state == "routed" and len(result.run_ids) == 2
    assert [run.id for run in runs_of(ctx, duplicate["id"])] == list(result.run_ids)
    again = replay_event(ctx, duplicate["id"])
    row = event_row(ctx, duplicate["id"])
    assert row.runs_count == 4 and row.error is None
    assert set(again.run_ids).isdisjoint(result.run_ids)


def test_replay_of_an_unrouted_event_routes_it_once_the_connection_exists(
    ctx: AppContext,
) -> None:
    event = tracker_event({"workspace_id": "w5"})
    assert route_event(ctx, event, now=NOW).state == "unrouted"
    add_connection(ctx, "tracker", "late", {"workspace_id": "w5"}, credentials=CREDENTIALS)
    assert len(replay_event(ctx, event["id"]).run_ids) == 2


def test_replay_of_an_unknown_event_is_a_clear_error(ctx: AppContext) -> None:
    with pytest.raises(BadInputError) as caught:
        replay_event(ctx, "no-such-event")
    assert caught.value.code == "unknown_event"


# --- concurrency ------------------------------------------------------------------------


@pytest.mark.parametrize("same_event", [True, False], ids=["redelivery", "provider-retry"])
def test_concurrent_routing_creates_runs_once(ctx: AppContext, same_event: bool) -> None:
    """Two workers route the same message, or two deliveries with one id, at the same time."""
    add_connection(ctx, "tracker", "c1", {"workspace_id": "w1"}, credentials=CREDENTIALS)
    first = tracker_event({"workspace_id": "w1"})
    events = [first, first if same_event else tracker_event({"workspace_id": "w1"})]
    results = run_at_once([partial(route_event, ctx, event, now=NOW) for event in events])
    assert count(ctx, SyncRun) == 2
    if same_event:
        assert [r.run_ids for r in results] == [results[0].run_ids] * 2
    else:
        assert sorted(r.state for r in results) == ["duplicate", "routed"]


def test_an_unreachable_database_is_a_retriable_error(make_env) -> None:
    """The event lives only in its message until recorded: the caller must not drop it."""
    env = make_env(HOOKSYNC_DATABASE_URL=f"postgresql://u:p@127.0.0.1:{free_port()}/none")
    context = AppContext(load_settings(env))
    try:
        with pytest.raises(RetriableError, match="database unavailable"):
            route_event(context, tracker_event({"workspace_id": "w1"}))
    finally:
        context.close()
