"""The durable inbox and the fast path behind it (``workers.inbox``, ``workers.drain``,
``workers.coalesce``): real Redis, SQLite and Postgres, an app receiver on loopback.

A consumer that "dies" here is one that read entries and never acknowledged them, which is
exactly what ``kill -9`` between XREADGROUP and XACK leaves behind
(``tests/e2e/test_inbox_durability.py`` kills real processes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cache.context import AppContext
from cache.credentials import encrypt_credentials
from cache.db import session_scope
from cache.models import Notification, Record, SyncRun, WebhookEvent
from config.settings import load_settings
from demo.app_receiver import AppReceiver
from demo.http_thread import ServerThread
from ingress.webhooks import build_event
from tests.support.paths import REPO
from tests.support.rows import insert_connection
from workers import inbox
from workers.drain import drain_inbox, reclaim_inbox

SECRET = "bench-secret"


@pytest.fixture
def receiver() -> Iterator[tuple[AppReceiver, str]]:
    app = AppReceiver("test-signing-key")
    server = ServerThread(app.app).start()
    yield app, f"{server.url}/hooks/hooksync"
    server.stop()


@pytest.fixture
def ctx(
    make_env: Any,
    database_url: str,
    receiver: tuple[AppReceiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AppContext]:
    monkeypatch.setenv("BENCH_WEBHOOK_SECRET", SECRET)
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(REPO / "bench" / "integration"),
        HOOKSYNC_APP_WEBHOOK_URLS=receiver[1],
    )
    context = AppContext(load_settings(env))
    with session_scope(context.sessions) as session:
        for account in ("a", "b"):
            insert_connection(
                session,
                "bench",
                account,
                credentials_encrypted=encrypt_credentials(
                    context.settings.encryption_key, {"type": "NONE"}
                ),
            )
    yield context
    context.close()


def webhook(ctx: AppContext, account: str, item: str, seq: int, delivery: str) -> dict[str, Any]:
    body = json.dumps({"account": account, "item_id": item, "seq": seq, "sent_at": 0}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return build_event(
        "bench",
        method="POST",
        url="http://localhost/webhook/bench",
        headers=[
            ("Content-Type", "application/json"),
            ("X-Bench-Signature", f"sha256={signature}"),
            ("X-Bench-Event", "item.updated"),
            ("X-Bench-Delivery", delivery),
        ],
        raw=body,
    )


def push_all(ctx: AppContext, events: list[dict[str, Any]]) -> None:
    for event in events:
        inbox.push(ctx.redis, event)


def events_routed(ctx: AppContext) -> dict[str, int]:
    """Event id → its number of runs."""
    with session_scope(ctx.sessions) as session:
        ids = session.scalars(select(WebhookEvent.id)).all()
        runs = dict(
            session.execute(
                select(SyncRun.webhook_event_id, func.count()).group_by(SyncRun.webhook_event_id)
            ).all()
        )
    return {event_id: runs.get(event_id, 0) for event_id in ids}


def stored_items(ctx: AppContext) -> dict[str, dict[str, Any]]:
    with session_scope(ctx.sessions) as session:
        rows = session.execute(select(Record.external_id, Record.payload)).all()
    return {external_id: json.loads(payload) for external_id, payload in rows}


def test_the_wake_up_flag_asks_for_one_drain_until_a_drain_clears_it(ctx: AppContext) -> None:
    first = webhook(ctx, "a", "i1", 1, "d1")
    assert inbox.push(ctx.redis, first) is True
    assert inbox.push(ctx.redis, webhook(ctx, "a", "i2", 2, "d2")) is False
    inbox.clear_wake(ctx.redis)
    assert inbox.push(ctx.redis, webhook(ctx, "a", "i3", 3, "d3")) is True
    assert inbox.pending_count(ctx.redis) == 3


def test_a_drain_routes_merges_and_notifies_then_empties_the_inbox(
    ctx: AppContext, receiver: tuple[AppReceiver, str]
) -> None:
    events = [webhook(ctx, "a", f"i{n}", n, f"d{n}") for n in range(5)]
    push_all(ctx, events)
    assert drain_inbox(ctx, "worker-1") == 5
    assert inbox.pending_count(ctx.redis) == 0
    assert events_routed(ctx) == {event["id"]: 1 for event in events}
    assert set(stored_items(ctx)) == {f"i{n}" for n in range(5)}
    # One connection, one sync: the five executions make one completion webhook.
    (notice,) = receiver[0].received
    assert notice.signature_ok
    assert notice.body["connectionId"] == "a" and notice.body["syncType"] == "WEBHOOK"
    assert notice.body["responseResults"] == {"added": 5, "updated": 0, "deleted": 0}
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Notification)) == 1
        states = set(session.scalars(select(WebhookEvent.state)))
    assert states == {"processed"}


def test_coalesced_executions_write_in_arrival_order_and_count_per_connection(
    ctx: AppContext, receiver: tuple[AppReceiver, str]
) -> None:
    # The same item three times for "a" (the last one must win), one item for "b".
    push_all(
        ctx,
        [
            webhook(ctx, "a", "x", 1, "d1"),
            webhook(ctx, "b", "y", 1, "d2"),
            webhook(ctx, "a", "x", 2, "d3"),
            webhook(ctx, "a", "x", 3, "d4"),
        ],
    )
    drain_inbox(ctx, "worker-1")
    items = stored_items(ctx)
    assert items["x"]["seq"] == 3 and items["y"]["seq"] == 1
    counts = {
        notice.body["connectionId"]: notice.body["responseResults"]
        for notice in receiver[0].received
    }
    # a: added once, then changed twice; b: added once.
    assert counts == {
        "a": {"added": 1, "updated": 2, "deleted": 0},
        "b": {"added": 1, "updated": 0, "deleted": 0},
    }


def test_entries_a_dead_consumer_read_are_taken_over_and_routed_once(ctx: AppContext) -> None:
    events = [webhook(ctx, "b", f"i{n}", n, f"d{n}") for n in range(3)]
    push_all(ctx, events)
    # The consumer read them (XREADGROUP moved them to its pending list), then died.
    assert len(inbox.read(ctx.redis, "dead-worker", 10)) == 3
    assert drain_inbox(ctx, "live-worker") == 0  # not delivered twice to the group
    assert events_routed(ctx) == {}
    assert inbox.pending_count(ctx.redis) == 3  # still held, not lost

    assert reclaim_inbox(ctx, "live-worker", min_idle_seconds=0) == 3
    assert events_routed(ctx) == {event["id"]: 1 for event in events}
    assert inbox.pending_count(ctx.redis) == 0
    assert reclaim_inbox(ctx, "live-worker", min_idle_seconds=0) == 0


def test_an_entry_routed_but_not_acknowledged_is_not_routed_twice(ctx: AppContext) -> None:
    event = webhook(ctx, "a", "i1", 1, "d1")
    push_all(ctx, [event])
    drain_inbox(ctx, "worker-1")
    # As if the worker died between its commit and its XACK: the same entry comes back.
    push_all(ctx, [event])
    assert drain_inbox(ctx, "worker-2") == 1
    assert events_routed(ctx) == {event["id"]: 1}
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(SyncRun)) == 1


def test_a_database_outage_puts_the_entries_back_for_any_worker(
    make_env: Any, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_WEBHOOK_SECRET", SECRET)
    # A database that is not there (never migrated): every statement fails.
    env = make_env(
        HOOKSYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'missing.db'}",
        HOOKSYNC_INTEGRATIONS_DIR=str(REPO / "bench" / "integration"),
    )
    broken = AppContext(load_settings(env))
    try:
        event = webhook(broken, "a", "i1", 1, "d1")
        push_all(broken, [event])
        assert drain_inbox(broken, "worker-1") == 1
        # Not lost, and not stuck with worker-1: the next reader of the group gets it.
        assert inbox.reclaim(broken.redis, "worker-2", 10, min_idle_seconds=0) == []
        (entry,) = inbox.read(broken.redis, "worker-2", 10)
        assert entry.event == event
    finally:
        broken.close()


def test_a_failing_handler_fails_only_its_own_run_in_a_coalesced_group(
    ctx: AppContext, receiver: tuple[AppReceiver, str]
) -> None:
    broken = webhook(ctx, "a", "x", 2, "d2")
    body = json.dumps({"account": "a", "seq": 2}).encode()  # no item_id: the handler raises
    broken["body_b64"] = base64.b64encode(body).decode()
    broken["headers"]["x-bench-signature"] = (
        "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    )
    push_all(ctx, [webhook(ctx, "a", "x", 1, "d1"), broken, webhook(ctx, "a", "y", 3, "d3")])
    drain_inbox(ctx, "worker-1")
    with session_scope(ctx.sessions) as session:
        states = [run.state for run in session.scalars(select(SyncRun).order_by(SyncRun.id))]
    assert states == ["success", "error", "success"]
    assert set(stored_items(ctx)) == {"x", "y"}
    bodies = [notice.body for notice in receiver[0].received]
    failures = [body for body in bodies if not body["success"]]
    completions = [body for body in bodies if body["success"]]
    assert len(failures) == 1 and failures[0]["error"]["type"] == "script_error"
    assert "KeyError" in failures[0]["error"]["description"]
    (completion,) = completions  # the two successes, coalesced
    assert completion["responseResults"] == {"added": 2, "updated": 0, "deleted": 0}
