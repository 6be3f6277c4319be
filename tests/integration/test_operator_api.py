"""The operator API the console and the CLI read: filters, details, attempts, bulk retry.

Events are routed by ``workers.events.route_events`` from the receiver's own event shape
(``ingress.webhooks.build_event``); notifications are recorded by ``workers.outbox`` and sent
by ``workers.delivery`` to a real HTTP server on loopback (``tests/support/api.Api``). Every
test runs on SQLite and Postgres (``database_url``).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from cache.context import AppContext
from cache.db import session_scope
from cache.models import Connection, NotificationAttempt, SyncRun, utcnow
from config.settings import load_settings
from ingress.app import create_app
from ingress.webhooks import build_event
from tests.support.api import Api
from tests.support.auth import AUTH
from tests.support.integrations import write_integrations
from tests.support.queue import queued_messages
from tests.support.rows import insert_connection
from workers.app_webhooks import endpoint_id
from workers.celery_app import queue_lists
from workers.delivery import deliver, deliver_many
from workers.events import route_events
from workers.outbox import (
    record_completion,
    record_forward,
    retry_notification,
)
from workers.outbox_views import (
    get_notification,
    list_endpoints,
    list_notifications,
)

NANGO_YAML = """
integrations:
  shop:
    syncs:
      orders:
        runs: every 1h
        output: Order
        webhook-subscriptions: ['*']
  crm:
    syncs:
      contacts:
        runs: every 1h
        output: Contact
        webhook-subscriptions: ['*']
models:
  Order: {id: string}
  Contact: {id: string}
providers:
  shop:
    base_url: http://127.0.0.1:9
    webhook:
      signature: {scheme: none}
      event_type: {path: type}
      connection: {path: account, match: connection_id}
  crm:
    base_url: http://127.0.0.1:9
    webhook:
      signature: {scheme: none}
      event_type: {path: type}
      connection: {path: account, match: connection_id}
"""

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
HOOK_PATH = "/hooks/app"


@pytest.fixture
def app(make_env, database_url: str, tmp_path: Path, api: Api) -> Iterator[AppContext]:
    """A context with two integrations and one app URL (with a token) on ``api``."""
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(write_integrations(tmp_path / "integrations", NANGO_YAML)),
        HOOKSYNC_APP_WEBHOOK_URLS=f"{api.base_url}{HOOK_PATH}?token=t0ken",
    )
    context = AppContext(load_settings(env))
    with session_scope(context.sessions) as session:
        for key, connection_id in (("shop", "c1"), ("shop", "c2"), ("crm", "c1")):
            insert_connection(session, key, connection_id)
    yield context
    context.close()


@pytest.fixture
def http(app: AppContext) -> FlaskClient:
    return create_app(app).test_client()


def _event(
    key: str, body: dict[str, Any], at: datetime, query: str = "", **headers: str
) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    return build_event(
        key,
        method="POST",
        url=f"http://hooksync.test/webhook/{key}{query}",
        headers=[("Content-Type", "application/json"), *headers.items()],
        raw=raw,
        received_at=at,
    )


def _queued_deliveries(ctx: AppContext) -> list[int]:
    """The notification ids queued for delivery on hooksync's Celery queue."""
    ids = []
    for message in queued_messages(ctx.redis):
        if "deliver" in message["task"]:
            ids.extend(message["args"])
    return sorted(ids)


def _ids(response: Any, key: str) -> list[Any]:
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()[key]]


# -- webhook events ---------------------------------------------------------------------


def test_events_filter_by_integration_state_and_time_and_carry_their_runs(
    app: AppContext, http: FlaskClient
) -> None:
    routed = _event("shop", {"type": "order.paid", "account": "c1"}, T0)
    unrouted = _event("shop", {"type": "order.paid", "account": "nobody"}, T0 + timedelta(hours=1))
    other = _event("crm", {"type": "contact.new", "account": "c1"}, T0 + timedelta(hours=2))
    route_events(app, [routed, unrouted, other])

    everything = _ids(http.get("/webhooks/events", headers=AUTH), "events")
    assert everything == [other["id"], unrouted["id"], routed["id"]]  # newest first
    by_key = http.get("/webhooks/events?provider_config_key=shop", headers=AUTH)
    assert _ids(by_key, "events") == [unrouted["id"], routed["id"]]
    assert _ids(http.get("/webhooks/events?state=unrouted", headers=AUTH), "events") == [
        unrouted["id"]
    ]
    # since: at or after; until: before; zone-less is UTC, any offset is converted.
    window = http.get(
        "/webhooks/events?since=2026-11-30T11:00:00&until=2026-11-30T13:00:00%2B01:00",
        headers=AUTH,
    )
    assert _ids(window, "events") == [unrouted["id"]]
    lower_case = http.get("/webhooks/events?since=2026-11-30t12:00:00z", headers=AUTH)
    assert _ids(lower_case, "events") == [other["id"]]  # RFC 3339 allows "t" and "z"
    assert _ids(http.get("/webhooks/events?limit=1", headers=AUTH), "events") == [other["id"]]

    listed = {item["id"]: item for item in by_key.get_json()["events"]}
    (run,) = listed[routed["id"]]["runs"]
    assert run["connection_id"] == "c1" and run["sync_name"] == "orders"
    assert (run["sync_type"], run["state"], run["error"]) == ("WEBHOOK", "queued", None)
    assert set(run) >= {"id", "started_at", "finished_at"}
    assert listed[unrouted["id"]]["runs"] == []
    assert listed[routed["id"]]["runs_count"] == 1  # the existing fields stay


@pytest.mark.parametrize(
    ("query", "field", "shown"),
    [
        ("since=yesterday", "since", "'yesterday'"),
        ("until=2026-13-01", "until", "'2026-13-01'"),
        ("since=", "since", "''"),
        ("limit=", "limit", "''"),
        ("limit=501", "limit", "'501'"),
        ("state=", "state", "''"),
        ("state=lost", "state", "'lost'"),
        ("provider_config_key=", "provider_config_key", "''"),
    ],
)
def test_bad_event_filters_are_400_naming_field_and_value(
    http: FlaskClient, query: str, field: str, shown: str
) -> None:
    response = http.get(f"/webhooks/events?{query}", headers=AUTH)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["field"] == field and shown in error["message"], error


def test_event_detail_shows_runs_raw_body_and_redacted_headers(
    app: AppContext, http: FlaskClient
) -> None:
    event = _event(
        "shop",
        {"type": "order.paid", "account": "c2"},
        T0,
        "?auth=url-s3cret",
        **{
            "X-Api-Key": "key-123",
            "X-Shop-Webhook-Secret": "sec-456",
            "X-Access-Token": "tok-789",
            "X-Hub-Signature-256": "sha256=abcdef",
            "X-Request-Id": "r-1",
        },
    )
    binary = build_event(
        "shop", method="POST", url="http://hooksync.test/webhook/shop", headers=[],
        raw=b"\xff\xfe not utf-8", received_at=T0,
    )  # fmt: skip
    route_events(app, [event, binary])

    response = http.get(f"/webhooks/events/{event['id']}", headers=AUTH)
    assert response.status_code == 200
    detail = response.get_json()
    text = response.get_data(as_text=True)
    assert detail["url"] == "http://hooksync.test/webhook/shop?…"
    for secret in ("key-123", "sec-456", "tok-789", "url-s3cret"):
        assert secret not in text
    headers = detail["headers"]
    assert headers["x-api-key"] == headers["x-shop-webhook-secret"] == "[redacted]"
    assert headers["x-access-token"] == "[redacted]"
    assert headers["x-hub-signature-256"] == "sha256=abcdef"  # a MAC of the body, kept
    assert headers["x-request-id"] == "r-1"
    assert detail["body_encoding"] == "utf-8"
    assert json.loads(detail["body"]) == {"type": "order.paid", "account": "c2"}
    assert [(run["connection_id"], run["sync_name"]) for run in detail["runs"]] == [
        ("c2", "orders")
    ]
    assert detail["state"] == "routed" and detail["id"] == event["id"]

    raw = http.get(f"/webhooks/events/{binary['id']}", headers=AUTH).get_json()
    assert raw["state"] == "rejected" and raw["runs"] == []
    assert raw["body_encoding"] == "base64"
    assert base64.b64decode(raw["body"]) == b"\xff\xfe not utf-8"

    missing = http.get("/webhooks/events/nope", headers=AUTH)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "unknown_event"


# -- notifications ----------------------------------------------------------------------

COUNTS = {"Order": {"added": 1, "updated": 0, "deleted": 0}}


def _complete(ctx: AppContext, key: str, connection_id: str) -> int:
    """One finished run of ``connection_id`` and its completion notification's id."""
    with session_scope(ctx.sessions) as session:
        connection = session.execute(
            select(Connection).filter_by(provider_config_key=key, connection_id=connection_id)
        ).scalar_one()
        run = SyncRun(
            connection_pk=connection.id, sync_name="orders", kind="poll",
            sync_type="INCREMENTAL", state="success", started_at=T0, finished_at=T0,
        )  # fmt: skip
        session.add(run)
        session.flush()
        (notification_id,) = record_completion(session, ctx.settings, run, COUNTS)
    return notification_id


def _forward(ctx: AppContext, connection_id: str) -> int:
    with session_scope(ctx.sessions) as session:
        # The payload names another connection: only the envelope's connectionId counts.
        payload = {"connectionId": "c2", "payload": 1}
        (notification_id,) = record_forward(session, ctx.settings, "shop", connection_id, payload)
    return notification_id


def test_notifications_filter_by_connection_state_and_time(
    app: AppContext, http: FlaskClient, api: Api
) -> None:
    first = _complete(app, "shop", "c1")
    forwarded = _forward(app, "c1")
    time.sleep(0.01)  # a boundary strictly between the two batches' created_at
    boundary = utcnow()
    time.sleep(0.01)
    second = _complete(app, "shop", "c2")
    other_integration = _complete(app, "crm", "c1")
    api.reply(HOOK_PATH, (422, {}, {}))
    deliver(app, second)

    by_connection = http.get("/notifications?connection_id=c1", headers=AUTH)
    assert _ids(by_connection, "notifications") == [other_integration, forwarded, first]
    assert _ids(http.get("/notifications?connection_id=c2", headers=AUTH), "notifications") == [
        second
    ]
    assert _ids(http.get("/notifications?state=failed", headers=AUTH), "notifications") == [second]
    since = boundary.isoformat().replace("+00:00", "Z")
    assert _ids(http.get(f"/notifications?since={since}", headers=AUTH), "notifications") == [
        other_integration,
        second,
    ]
    until = boundary.isoformat().replace("+", "%2B")
    assert _ids(http.get(f"/notifications?until={until}", headers=AUTH), "notifications") == [
        forwarded,
        first,
    ]
    assert _ids(
        http.get(f"/notifications?connection_id=c1&since={since}", headers=AUTH), "notifications"
    ) == [other_integration]
    # The service takes the same filters, keyword-only.
    with app.sessions() as session:
        rows = list_notifications(session, connection_id="c1", until=boundary, limit=1)
        assert [row.id for row in rows] == [forwarded]

    bad = ("connection_id=", "since=soon", "limit=", "limit=1001", "state=")
    for query in bad:
        field = query.split("=")[0]
        response = http.get(f"/notifications?{query}", headers=AUTH)
        assert response.status_code == 400, query
        assert response.get_json()["error"]["field"] == field, query


def test_each_attempt_is_recorded_with_its_outcome(
    app: AppContext, http: FlaskClient, api: Api
) -> None:
    retried, batched = _complete(app, "shop", "c1"), _complete(app, "shop", "c2")
    api.reply(HOOK_PATH, (500, {}, {}), (200, {}, {}))
    start = utcnow()
    deliver(app, retried, now=start)
    deliver(app, retried, now=start + timedelta(minutes=1))
    deliver_many(app, [batched], now=start)

    response = http.get(f"/notifications/{retried}", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["notification"]["state"] == "delivered"
    assert body["notification"]["attempts"] == 2
    attempts = body["attempts"]
    assert [(a["attempt"], a["status"], a["error"]) for a in attempts] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    assert [a["attempted_at"] for a in attempts] == [
        start.isoformat(),
        (start + timedelta(minutes=1)).isoformat(),
    ]
    assert all(isinstance(a["duration_ms"], int) and a["duration_ms"] >= 0 for a in attempts)
    assert "t0ken" not in response.get_data(as_text=True)

    (batch_attempt,) = http.get(f"/notifications/{batched}", headers=AUTH).get_json()["attempts"]
    assert (batch_attempt["attempt"], batch_attempt["status"]) == (1, 200)
    with app.sessions() as session:
        rows = session.scalars(select(NotificationAttempt).order_by(NotificationAttempt.id)).all()
        assert [row.notification_id for row in rows] == [retried, retried, batched]

    for path in ("/notifications/999999", f"/notifications/{2**64}", "/notifications/0"):
        missing = http.get(path, headers=AUTH)
        assert missing.status_code == 404, path
        assert missing.is_json, path


def test_ids_past_64_bits_are_unknown_not_a_crash(app: AppContext, http: FlaskClient) -> None:
    huge = 2**63
    response = http.post(f"/notifications/{huge}/retry", headers=AUTH)
    assert response.status_code == 404 and response.is_json
    with session_scope(app.sessions) as session:
        assert get_notification(session, huge) is None
        assert retry_notification(session, huge, utcnow()) is None


def test_retrying_a_delivered_notification_is_400_not_retryable(
    app: AppContext, http: FlaskClient, api: Api
) -> None:
    notification_id = _complete(app, "shop", "c1")
    api.reply(HOOK_PATH, (200, {}, {}))
    deliver(app, notification_id)
    response = http.post(f"/notifications/{notification_id}/retry", headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "not_retryable"


def test_retry_failed_requeues_failed_and_gone_since_a_time(
    app: AppContext, http: FlaskClient, api: Api
) -> None:
    old_failure = _complete(app, "shop", "c1")
    api.reply(HOOK_PATH, (422, {}, {}))
    deliver(app, old_failure)
    time.sleep(0.01)
    since = utcnow()
    failed, delivered, gone = (_complete(app, "shop", name) for name in ("c1", "c1", "c2"))
    api.reply(HOOK_PATH, (422, {}, {}), (200, {}, {}), (410, {}, {}))
    for notification_id in (failed, delivered, gone):
        deliver(app, notification_id)
    with app.sessions() as session:
        (endpoint,) = list_endpoints(session, app.settings.app_webhook_urls)
        assert endpoint.state == "gone"
    app.redis.delete(*queue_lists())

    missing = http.post("/notifications/retry-failed", headers=AUTH)
    assert missing.status_code == 400 and missing.get_json()["error"]["field"] == "since"
    bad = http.post("/notifications/retry-failed?since=last-week", headers=AUTH)
    assert bad.status_code == 400 and "'last-week'" in bad.get_json()["error"]["message"]

    response = http.post(
        f"/notifications/retry-failed?since={since.isoformat().replace('+', '%2B')}",
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.get_json() == {
        "retried": 2,
        "ids": [failed, gone],
        "since": since.isoformat(),
    }
    assert _queued_deliveries(app) == [failed, gone]  # enqueued after the commit
    with app.sessions() as session:
        states = {
            n: (get_notification(session, n).state, get_notification(session, n).attempts)  # type: ignore[union-attr]
            for n in (old_failure, failed, gone, delivered)
        }
        (endpoint,) = list_endpoints(session, app.settings.app_webhook_urls)
    assert states == {
        old_failure: ("failed", 1),
        failed: ("pending", 0),
        gone: ("pending", 0),
        delivered: ("delivered", 1),
    }
    assert endpoint.state == "active"  # the 410's mark cleared, as a single retry does


def test_an_endpoint_is_listed_with_its_id_and_re_enabled(
    app: AppContext, http: FlaskClient, api: Api
) -> None:
    (url,) = app.settings.app_webhook_urls
    stopped = _complete(app, "shop", "c1")
    api.reply(HOOK_PATH, (410, {}, {}))
    deliver(app, stopped)

    (listed,) = http.get("/notifications/endpoints", headers=AUTH).get_json()["endpoints"]
    assert listed["id"] == endpoint_id(url) and len(listed["id"]) == 12
    assert (listed["state"], listed["gone_status"]) == ("gone", 410)
    assert "t0ken" not in json.dumps(listed)
    with session_scope(app.sessions) as session:
        run = session.scalars(select(SyncRun)).first()
        assert record_completion(session, app.settings, run, COUNTS) == []  # URL is gone

    unknown = http.post("/notifications/endpoints/000000000000/enable", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["code"] == "unknown_endpoint"

    enabled = http.post(f"/notifications/endpoints/{listed['id']}/enable", headers=AUTH)
    assert enabled.status_code == 200
    assert enabled.get_json()["endpoint"] == {**listed, "state": "active", "gone_at": None,
                                              "gone_status": None}  # fmt: skip
    with session_scope(app.sessions) as session:
        run = session.scalars(select(SyncRun)).first()
        assert len(record_completion(session, app.settings, run, COUNTS)) == 1
    with app.sessions() as session:
        assert get_notification(session, stopped).state == "gone"  # type: ignore[union-attr]


def test_options_on_connections_metadata_advertises_only_its_methods(http: FlaskClient) -> None:
    response = http.open("/connections/metadata", method="OPTIONS", headers=AUTH)
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert allowed == {"POST", "PATCH", "OPTIONS"}
    # Any other id still reaches the connection routes.
    other = http.get("/connections/metadata2?provider_config_key=shop", headers=AUTH)
    assert other.get_json()["error"]["code"] == "unknown_connection"
