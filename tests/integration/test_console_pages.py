"""The console's Webhooks and Notifications pages through Flask's test client, on a real
Redis and a real database (SQLite and Postgres): filters, header redaction, replay and retry
through their forms, and the CSRF refusal of a form posted without its token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from cache.context import AppContext
from cache.db import session_scope
from cache.models import Notification, SyncRun, WebhookEvent, utcnow
from config.settings import load_settings
from ingress.app import create_app
from ingress.webhooks import build_event
from tests.support.api import Api
from tests.support.auth import API_KEY
from tests.support.rows import add_connection
from workers.app_webhooks import endpoint_id
from workers.delivery import deliver
from workers.events import route_event
from workers.outbox import record_completion

APP_PATH = "/hooks/app"
#: What a credential-like header of a stored event holds: it must never reach the page.
SECRET_VALUES = ("key-1234567890", "tok-1234567890", "sec-1234567890")


@pytest.fixture
def ctx(
    make_env, database_url: str, api: Api, provider_env: dict[str, str]
) -> Iterator[AppContext]:
    """The shared context plus an app URL: the scripted ``api`` server answers the app."""
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_APP_WEBHOOK_URLS=f"{api.base_url}{APP_PATH}?token=app-url-token",
    )
    context = AppContext(load_settings(env))
    yield context
    context.close()


@pytest.fixture
def console(ctx: AppContext) -> FlaskClient:
    """A test client logged in to the console with the API key."""
    client = create_app(ctx).test_client()
    response = client.post(
        "/ui/login", data={"api_key": API_KEY, "csrf_token": csrf_of(client, "/ui/login")}
    )
    assert response.status_code == 302, response.text
    return client


def csrf_of(client: FlaskClient, path: str) -> str:
    """The CSRF token in the forms of the page at ``path``."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


def tracker_event(
    workspace: str, delivery: str, *, hours_ago: float = 0, key: str = "tasktracker"
) -> dict[str, Any]:
    """A task.updated event as the receiver queues it, with credential-like headers."""
    body = json.dumps({"event": "task.updated", "task_id": "T-1", "workspace_id": workspace})
    headers = {
        "Content-Type": "application/json",
        "X-Tracker-Event": "task.updated",
        "X-Tracker-Delivery": delivery,
        "X-Tracker-Signature": "sha256=abc",
        "X-Api-Key": SECRET_VALUES[0],
        "X-Webhook-Token": SECRET_VALUES[1],
        "X-Client-Secret": SECRET_VALUES[2],
    }
    return build_event(
        key,
        method="POST",
        url=f"http://h/webhook/{key}",
        headers=headers.items(),
        raw=body.encode(),
        received_at=utcnow() - timedelta(hours=hours_ago),
    )


def runs_of(ctx: AppContext, event_id: str) -> list[SyncRun]:
    with ctx.sessions() as session:
        return list(session.query(SyncRun).filter_by(webhook_event_id=event_id))


def notification(ctx: AppContext, notification_id: int) -> Notification:
    with ctx.sessions() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return row


def failed_notification(ctx: AppContext, api: Api, connection_id: str = "acme") -> int:
    """A notification about a run of ``connection_id`` that the app refused with a 400."""
    add_connection(ctx, "tasktracker", connection_id, {"workspace_id": f"ws-{connection_id}"})
    event = tracker_event(f"ws-{connection_id}", f"d-{connection_id}")
    (run_id,) = route_event(ctx, event).run_ids
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        counts = {"Task": {"added": 0, "updated": 1, "deleted": 0}}
        (notification_id,) = record_completion(session, ctx.settings, run, counts)
    api.reply(APP_PATH, (400, {}, {"error": "bad"}))
    deliver(ctx, notification_id)
    assert notification(ctx, notification_id).state == "failed"
    return notification_id


# --- access -------------------------------------------------------------------------------


def test_the_pages_need_a_login(ctx: AppContext) -> None:
    client = create_app(ctx).test_client()
    for path in ("/ui/webhooks", "/ui/notifications"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/ui/login")


# --- webhooks -----------------------------------------------------------------------------


def test_webhooks_list_shows_the_routing_outcome_and_filters(
    ctx: AppContext, console: FlaskClient
) -> None:
    add_connection(ctx, "tasktracker", "acme", {"workspace_id": "ws1"})
    routed = route_event(ctx, tracker_event("ws1", "d-routed"))
    unrouted = route_event(ctx, tracker_event("ws-nobody", "d-unrouted"))
    old = route_event(ctx, tracker_event("ws1", "d-old", hours_ago=48))
    assert (routed.state, unrouted.state) == ("routed", "unrouted")

    page = console.get("/ui/webhooks").text
    assert page.count("data-event-id=") == 3
    charts = re.search(r'<section class="charts">(.*?)</section>', page, re.S)
    assert charts and charts.group(1).count("<svg") == 2  # per minute, run durations
    row = _row(page, "d-routed")
    assert "acme › tasks" in row and 'class="badge queued"' in row
    assert "no run" in _row(page, "d-unrouted")

    only_unrouted = console.get("/ui/webhooks?state=unrouted").text
    assert "d-unrouted" in only_unrouted and "d-routed" not in only_unrouted
    recent = console.get("/ui/webhooks?since=1h").text
    assert "d-routed" in recent and "d-old" not in recent
    other = console.get("/ui/webhooks?integration=other").text
    assert "data-event-id=" not in other and "No events match" in other
    assert old.run_ids  # the old event was routed too: only the time filter hid it

    bad = console.get("/ui/webhooks?since=yesterday")
    assert bad.status_code == 400
    assert "since: expected an age" in bad.text and "&#39;yesterday&#39;" in bad.text


def test_event_page_shows_the_body_and_redacts_credential_headers(
    ctx: AppContext, console: FlaskClient
) -> None:
    add_connection(ctx, "tasktracker", "acme", {"workspace_id": "ws1"})
    event = tracker_event("ws1", "d-1")
    route_event(ctx, event)

    page = console.get(f"/ui/webhooks/{event['id']}").text
    assert "ws1" in page and "task_id" in page  # the raw body
    assert "sha256=abc" in page  # a signature is a MAC of the body, not a secret
    for secret in SECRET_VALUES:
        assert secret not in page
    for name in ("x-api-key", "x-webhook-token", "x-client-secret"):
        assert re.search(rf"{name}</th><td class=\"mono\">\[redacted\]<", page), name
    assert console.get("/ui/webhooks/no-such-event").status_code == 404


def test_replay_through_the_form_routes_the_event_again(
    ctx: AppContext, console: FlaskClient
) -> None:
    add_connection(ctx, "tasktracker", "acme", {"workspace_id": "ws1"})
    event = tracker_event("ws1", "d-1")
    route_event(ctx, event)
    assert len(runs_of(ctx, event["id"])) == 1

    token = csrf_of(console, f"/ui/webhooks/{event['id']}")
    response = console.post(f"/ui/webhooks/{event['id']}/replay", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/ui/webhooks/{event['id']}"
    assert len(runs_of(ctx, event["id"])) == 2
    shown = console.get(response.headers["Location"]).text
    assert "Replayed: 1 run queued" in shown
    assert shown.count("data-run-id=") == 2


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    ctx: AppContext, console: FlaskClient, api: Api
) -> None:
    notification_id = failed_notification(ctx, api)
    with ctx.sessions() as session:
        (event,) = session.query(WebhookEvent).all()
        event_id = event.id

    for path, data in (
        (f"/ui/webhooks/{event_id}/replay", {}),
        (f"/ui/notifications/{notification_id}/retry", {"csrf_token": "forged"}),
        ("/ui/notifications/retry-failed", {"since": "1h"}),
    ):
        response = console.post(path, data=data)
        assert response.status_code == 403, path
        assert "Form expired or forged" in response.text
    assert len(runs_of(ctx, event_id)) == 1
    assert notification(ctx, notification_id).state == "failed"


# --- notifications ------------------------------------------------------------------------


def test_notifications_list_shows_attempts_and_filters(
    ctx: AppContext, console: FlaskClient, api: Api
) -> None:
    failed = failed_notification(ctx, api, "acme")
    api.reply(APP_PATH, (200, {}, {}))
    delivered = failed_notification_then_delivered(ctx, api, "globex")

    page = console.get("/ui/notifications").text
    row = _notification_row(page, failed)
    assert 'class="badge failed"' in row and "HTTP 400" in row and ">Retry<" in row
    assert "acme › tasks" in row
    assert "app-url-token" not in page  # the app URL's query string is a credential
    assert ">Retry<" not in _notification_row(page, delivered)

    only_failed = console.get("/ui/notifications?state=failed").text
    assert f'data-notification-id="{failed}"' in only_failed
    assert f'data-notification-id="{delivered}"' not in only_failed
    globex = console.get("/ui/notifications?connection=globex").text
    assert f'data-notification-id="{delivered}"' in globex
    assert f'data-notification-id="{failed}"' not in globex
    assert "data-notification-id=" not in console.get("/ui/notifications?since=2099-01-01").text
    assert console.get("/ui/notifications?state=lost").status_code == 400

    detail = console.get(f"/ui/notifications/{failed}").text
    assert detail.count("<td>1</td>") == 1 and ">400<" in detail  # the one attempt
    assert console.get("/ui/notifications/999999").status_code == 404


def failed_notification_then_delivered(ctx: AppContext, api: Api, connection_id: str) -> int:
    """A notification about ``connection_id`` that the app accepted at once."""
    add_connection(ctx, "tasktracker", connection_id, {"workspace_id": f"ws-{connection_id}"})
    (run_id,) = route_event(ctx, tracker_event(f"ws-{connection_id}", f"d-{connection_id}")).run_ids
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        counts = {"Task": {"added": 1, "updated": 0, "deleted": 0}}
        (notification_id,) = record_completion(session, ctx.settings, run, counts)
    deliver(ctx, notification_id)
    assert notification(ctx, notification_id).state == "delivered"
    return notification_id


def test_retry_through_the_form_makes_a_failed_notification_pending(
    ctx: AppContext, console: FlaskClient, api: Api
) -> None:
    notification_id = failed_notification(ctx, api)
    token = csrf_of(console, "/ui/notifications")

    response = console.post(
        f"/ui/notifications/{notification_id}/retry", data={"csrf_token": token}
    )
    assert response.status_code == 302
    row = notification(ctx, notification_id)
    assert (row.state, row.attempts) == ("pending", 0)
    assert "queued for delivery again" in console.get(response.headers["Location"]).text

    api.reply(APP_PATH, (200, {}, {}))
    deliver(ctx, notification_id)
    assert notification(ctx, notification_id).state == "delivered"
    again = console.post(f"/ui/notifications/{notification_id}/retry", data={"csrf_token": token})
    assert "already delivered" in console.get(again.headers["Location"]).text


def test_retry_failed_since_a_time_retries_each_failed_one(
    ctx: AppContext, console: FlaskClient, api: Api
) -> None:
    first = failed_notification(ctx, api, "acme")
    second = failed_notification(ctx, api, "globex")
    token = csrf_of(console, "/ui/notifications")

    refused = console.post(
        "/ui/notifications/retry-failed", data={"csrf_token": token, "since": "soon"}
    )
    assert "since: expected an age" in console.get(refused.headers["Location"]).text
    assert notification(ctx, first).state == "failed"

    response = console.post(
        "/ui/notifications/retry-failed", data={"csrf_token": token, "since": "1h"}
    )
    assert response.status_code == 302
    assert "2 failed notifications since" in console.get("/ui/notifications").text
    assert {notification(ctx, first).state, notification(ctx, second).state} == {"pending"}


def test_a_gone_app_url_is_shown_and_re_enabled(
    ctx: AppContext, console: FlaskClient, api: Api
) -> None:
    add_connection(ctx, "tasktracker", "acme", {"workspace_id": "ws1"})
    (run_id,) = route_event(ctx, tracker_event("ws1", "d-1")).run_ids
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        (notification_id,) = record_completion(
            session, ctx.settings, run, {"Task": {"added": 1, "updated": 0, "deleted": 0}}
        )
    api.reply(APP_PATH, (410, {}, {}))
    deliver(ctx, notification_id)
    (url,) = ctx.settings.app_webhook_urls

    page = console.get("/ui/notifications").text
    endpoint = re.search(rf'data-endpoint-id="{endpoint_id(url)}".*?</tr>', page, re.S)
    assert (
        endpoint and 'class="badge gone"' in endpoint.group(0) and "Re-enable" in endpoint.group(0)
    )

    token = csrf_of(console, "/ui/notifications")
    response = console.post(
        f"/ui/notifications/endpoints/{endpoint_id(url)}/enable", data={"csrf_token": token}
    )
    assert response.status_code == 302
    page = console.get("/ui/notifications").text
    assert "is active again" in page
    endpoint = re.search(rf'data-endpoint-id="{endpoint_id(url)}".*?</tr>', page, re.S)
    assert endpoint and 'class="badge active"' in endpoint.group(0)
    missing = console.post(
        "/ui/notifications/endpoints/000000000000/enable", data={"csrf_token": token}
    )
    assert missing.status_code == 404


def _row(page: str, delivery_id: str) -> str:
    found = re.search(
        rf'<tr data-event-id="[^"]+" data-delivery-id="{delivery_id}">.*?</tr>', page, re.S
    )
    assert found, f"no row for delivery {delivery_id!r}"
    return found.group(0)


def _notification_row(page: str, notification_id: int) -> str:
    found = re.search(rf'<tr data-notification-id="{notification_id}">.*?</tr>', page, re.S)
    assert found, f"no row for notification {notification_id}"
    return found.group(0)
