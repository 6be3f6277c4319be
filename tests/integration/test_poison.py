"""Poison webhooks end in a terminal state, never in a loop (issue 9, hostile traffic).

A body nested hundreds of levels deep, or holding a lone surrogate, is refused at the door
with a 400 naming the problem; a stored event or run holding one (stored before the check
existed) ends ``rejected`` or ``error`` and the sweeper never hands it out again. Also: a
credential-like header never reaches ``webhook_events``. Real Redis, SQLite and Postgres.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from cache.context import AppContext
from cache.db import session_scope
from cache.models import Notification, SyncRun, WebhookEvent, utcnow
from ingress.app import create_app
from ingress.provider_signatures import sign_generic
from ingress.webhooks import build_event
from tests.support.auth import AUTH
from tests.support.contexts import events_context
from tests.support.rows import add_connection
from workers import runs
from workers.drain import drain_inbox
from workers.events import replay_event, route_event
from workers.execution import execute_run
from workers.payloads import MAX_DEPTH

SECRET = "s3cret"
APP_URL = "http://127.0.0.1:9/app-hook"

NANGO_YAML = """
integrations:
  open:
    syncs:
      items:
        runs: every 1h
        output: Item
        webhook-subscriptions: ['*']
models:
  Item: {id: string}
providers:
  open:
    base_url: http://127.0.0.1:9
    webhook_secret: s3cret
    webhook:
      signature: {scheme: hmac-sha256, header: X-Sig, encoding: hex, prefix: "sha256="}
      event_type: {path: type}
      connection: {path: account, match: connection_id}
      delivery_id: {header: X-Delivery-Key}
"""

#: How deep the issue's poison body was nested (accepted with 202 before the check).
POISON_DEPTH = 950


@pytest.fixture
def ctx(make_env, database_url: str, tmp_path: Path) -> Iterator[AppContext]:
    folder = tmp_path / "integrations"
    with events_context(make_env, database_url, folder, NANGO_YAML, APP_URL) as context:
        yield context


@pytest.fixture
def client(ctx: AppContext) -> FlaskClient:
    return create_app(ctx).test_client()


def deep(depth: int) -> str:
    """``{"type": "x", "account": "c1", "data": [[...]]}`` with ``depth`` levels in all."""
    return '{"type": "x", "account": "c1", "data": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


SURROGATE = '{"type": "x", "account": "c1", "name": "\\ud800"}'


def post(client: FlaskClient, raw: str, **headers: str) -> Any:
    body = raw.encode()
    return client.post(
        "/webhook/open",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Sig": sign_generic(SECRET, body, prefix="sha256="),
            **headers,
        },
    )


def stored_event(raw: str) -> dict[str, Any]:
    """The inbox entry the receiver made of ``raw`` before the check existed."""
    return build_event(
        "open", method="POST", url="http://h/webhook/open", headers=[], raw=raw.encode()
    )


def sweep_times(ctx: AppContext, times: int = 4) -> list[int]:
    """Run the sweeper ``times``, each a lease later than the last; every id it re-queued."""
    swept: list[int] = []
    for step in range(1, times + 1):
        now = utcnow() + timedelta(seconds=(ctx.settings.lease_seconds + 1) * step)
        with session_scope(ctx.sessions) as session:
            swept += runs.sweep_expired(session, now, ctx.settings.lease_seconds, 100)
    return swept


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (deep(POISON_DEPTH), f"body: nested deeper than {MAX_DEPTH} levels"),
        (deep(MAX_DEPTH + 1), f"body: nested deeper than {MAX_DEPTH} levels at $.data[0]"),
        (SURROGATE, "body: lone surrogate \\ud800 in $.name"),
        ('{"\\udfff": 1}', "body: lone surrogate \\udfff in a key at $"),
    ],
)
def test_the_door_refuses_a_poison_body_with_a_400_naming_it(
    client: FlaskClient, ctx: AppContext, raw: str, message: str
) -> None:
    reply = post(client, raw)
    assert reply.status_code == 400, reply.get_data(as_text=True)
    error = reply.get_json()["error"]
    assert error["code"] == "invalid_body" and message in error["message"], error
    assert drain_inbox(ctx, "test") == 0  # nothing was queued


def test_a_deep_ish_body_still_passes_and_runs(client: FlaskClient, ctx: AppContext) -> None:
    add_connection(ctx, "open", "c1", credentials={"type": "NONE"})
    assert post(client, deep(20)).status_code == 202
    assert post(client, deep(MAX_DEPTH)).status_code == 202
    assert drain_inbox(ctx, "test") == 2
    with session_scope(ctx.sessions) as session:
        states = list(session.scalars(select(SyncRun.state)))
    assert states == ["success", "success"]


def test_a_credential_header_never_reaches_webhook_events(
    client: FlaskClient, ctx: AppContext
) -> None:
    reply = post(
        client,
        '{"type": "x", "account": "c1"}',
        **{"X-Api-Key": "sk-live-123", "X-Session": "s-9", "X-Delivery-Key": "d-1"},
    )
    assert reply.status_code == 202
    drain_inbox(ctx, "test")
    with session_scope(ctx.sessions) as session:
        (row,) = session.scalars(select(WebhookEvent))
        headers, delivery = dict(row.headers), row.delivery_id
    assert headers["x-api-key"] == "[redacted]" and headers["x-session"] == "[redacted]"
    assert "sk-live-123" not in json.dumps(headers)
    assert headers["x-sig"].startswith("sha256=")  # the signature is kept
    # A header routing reads is kept although its name looks like a credential.
    assert headers["x-delivery-key"] == "d-1" and delivery == "d-1"


@pytest.mark.parametrize("raw", [deep(POISON_DEPTH), SURROGATE], ids=["deep", "surrogate"])
def test_a_stored_poison_event_is_rejected_on_routing_and_on_replay(
    ctx: AppContext, raw: str
) -> None:
    add_connection(ctx, "open", "c1", credentials={"type": "NONE"})
    event = stored_event(raw)
    assert route_event(ctx, event).state == "rejected"
    assert replay_event(ctx, event["id"]).state == "rejected"
    with session_scope(ctx.sessions) as session:
        row = session.get(WebhookEvent, event["id"])
        assert row is not None
        assert row.state == "rejected" and "body:" in str(row.error), row.error
        assert list(session.scalars(select(SyncRun.id))) == []
    assert sweep_times(ctx) == []


def poison_run(ctx: AppContext, raw_payload: str) -> int:
    """A queued webhook run whose stored payload is ``raw_payload`` (JSON text), as a run
    routed before the check existed holds it."""
    add_connection(ctx, "open", "c1", credentials={"type": "NONE"}, schedules=True)
    event = stored_event('{"type": "x", "account": "c1"}')
    (run_id,) = route_event(ctx, event).run_ids
    with session_scope(ctx.sessions) as session:
        session.execute(
            text("UPDATE sync_runs SET payload = :payload WHERE id = :id"),
            {"payload": raw_payload, "id": run_id},
        )
    return run_id


@pytest.mark.parametrize(
    "payload", [deep(POISON_DEPTH), "[" * 5000 + "]" * 5000], ids=["950", "5000"]
)
def test_a_run_that_cannot_be_loaded_ends_error_and_is_never_swept_again(
    ctx: AppContext, payload: str
) -> None:
    run_id = poison_run(ctx, payload)
    notification_ids: list[int] = []
    for _ in range(3):  # the first execution ends it; the others find nothing to claim
        ids = execute_run(ctx, run_id)
        if ids:
            notification_ids = ids
    assert sweep_times(ctx) == []
    with session_scope(ctx.sessions) as session:
        row = session.execute(
            select(SyncRun.state, SyncRun.attempts, SyncRun.error_type, SyncRun.error).where(
                SyncRun.id == run_id
            )
        ).one()
        assert (row.state, row.attempts, row.error_type) == ("error", 1, "unloadable_run")
        assert "could not be loaded" in str(row.error)
        bodies = list(
            session.scalars(select(Notification.body).where(Notification.id.in_(notification_ids)))
        )
    (body,) = bodies
    assert '"success":false' in body.replace(" ", "") and "unloadable_run" in body


def test_an_unloadable_run_shows_on_its_event(ctx: AppContext, client: FlaskClient) -> None:
    run_id = poison_run(ctx, deep(POISON_DEPTH))
    execute_run(ctx, run_id)
    (event,) = client.get("/webhooks/events", headers=AUTH).get_json()["events"]
    assert event["state"] == "processed", event  # no run of it is left queued or running
    (run,) = event["runs"]
    assert (run["id"], run["state"], run["error_type"]) == (run_id, "error", "unloadable_run")
    assert "could not be loaded (RecursionError" in run["error"], run


def test_an_event_routing_fails_on_is_rejected_and_leaves_the_inbox(
    client: FlaskClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.events

    def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")  # not a database error

    monkeypatch.setattr(workers.events, "_route", explode)
    assert post(client, '{"type": "x", "account": "c1"}').status_code == 202
    assert drain_inbox(ctx, "test") == 1
    assert drain_inbox(ctx, "test") == 0  # acknowledged: never handed out again
    with session_scope(ctx.sessions) as session:
        (row,) = session.scalars(select(WebhookEvent))
        assert (row.state, row.error) == ("rejected", "could not route: RecursionError")


def test_an_entry_queued_before_redaction_is_redacted_when_stored(ctx: AppContext) -> None:
    add_connection(ctx, "open", "c1", credentials={"type": "NONE"})
    event = stored_event('{"type": "x", "account": "c1"}')
    # As the receiver queued it before it redacted anything.
    event["headers"] = {"x-api-key": "sk-live-123", "x-delivery-key": "d-7"}
    assert route_event(ctx, event).state == "routed"
    with session_scope(ctx.sessions) as session:
        row = session.get(WebhookEvent, event["id"])
        assert row is not None
        assert dict(row.headers) == {"x-api-key": "[redacted]", "x-delivery-key": "d-7"}
        assert row.delivery_id == "d-7"
