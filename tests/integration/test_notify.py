"""The notification outbox against a real database and a real HTTP receiver on loopback.

Every test runs on SQLite and Postgres. Retries are tested by injecting ``now`` values,
never by sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from cache.db import session_scope
from cache.models import Notification, SyncRun, utcnow
from config.context import AppContext
from config.errors import BadInputError
from config.integrations import Integrations
from config.settings import load_settings
from scheduler.tick import tick
from tests.support.concurrency import run_at_once
from tests.support.rows import insert_connection
from tests.support.servers import free_port
from workers.notify import (
    DISPATCH_SKEW_SECONDS,
    deliver,
    list_notifications,
    record_completion,
    record_failure,
    record_forward,
    retry_notification,
)
from workers.signing import legacy_signature, whsec_secret

KEYS = ("first-signing-key", "second-signing-key")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An app endpoint: records each request, answers the queued statuses, then 200."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            time.sleep(state.delay)
            self.send_response(state.answer())
            for name, value in state.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}/hooks/nango"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def _context(make_env, database_url: str, urls: str, **env: str) -> AppContext:
    context = AppContext(
        load_settings(
            make_env(
                HOOKSYNC_DATABASE_URL=database_url,
                HOOKSYNC_APP_WEBHOOK_URLS=urls,
                HOOKSYNC_WEBHOOK_SIGNING_KEY=",".join(KEYS),
                **env,
            )
        )
    )
    # No schedules here: the tick needs no integrations file.
    context.__dict__["integrations"] = Integrations()
    return context


@pytest.fixture
def app(make_env, database_url: str, receiver: Receiver) -> Iterator[AppContext]:
    context = _context(make_env, database_url, receiver.url)
    yield context
    context.close()


STARTED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _make_run(
    ctx: AppContext, *, sync_type: str = "INCREMENTAL", connection_id: str = "acme"
) -> tuple[int, int]:
    with session_scope(ctx.sessions) as session:
        connection = insert_connection(session, "tracker", connection_id)
        run = SyncRun(
            connection_pk=connection.id,
            sync_name="tasks",
            kind="poll",
            sync_type=sync_type,
            state="success",
            started_at=STARTED,
            finished_at=STARTED + timedelta(seconds=3),
        )
        session.add(run)
        session.flush()
        return connection.id, run.id


def _complete(
    ctx: AppContext, results: dict[str, dict[str, int]], connection_id: str = "acme"
) -> list[int]:
    _, run_id = _make_run(ctx, connection_id=connection_id)
    with session_scope(ctx.sessions) as session:
        run = session.get(SyncRun, run_id)
        return record_completion(session, ctx.settings, run, results, started_at=STARTED)


def _row(ctx: AppContext, notification_id: int) -> Notification:
    with ctx.sessions() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return row


def test_completion_is_delivered_with_the_exact_nango_body(
    app: AppContext, receiver: Receiver
) -> None:
    (notification_id,) = _complete(app, {"Task": {"added": 2, "updated": 1, "deleted": 0}})
    deliver(app, notification_id)

    (request,) = receiver.requests
    assert request.path == "/hooks/nango"
    assert list(json.loads(request.body).items()) == [
        ("from", "nango"),
        ("type", "sync"),
        ("connectionId", "acme"),
        ("providerConfigKey", "tracker"),
        ("syncName", "tasks"),
        ("model", "Task"),
        ("syncType", "INCREMENTAL"),
        ("success", True),
        ("responseResults", {"added": 2, "updated": 1, "deleted": 0}),
        ("modifiedAfter", "2024-05-01T12:00:00.123Z"),
        ("queryTimeStamp", "2024-05-01T12:00:00.123Z"),
    ]
    row = _row(app, notification_id)
    assert request.body == row.body.encode()
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 200)
    assert row.delivered_at is not None and row.lease_expires_at is None


def test_every_signature_on_the_delivered_request_verifies(
    app: AppContext, receiver: Receiver
) -> None:
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    deliver(app, notification_id)

    (request,) = receiver.requests
    expected = hmac.new(KEYS[0].encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-nango-hmac-sha256"] == expected
    assert request.headers["x-nango-signature"] == legacy_signature(KEYS[0], request.body)
    assert request.headers["content-type"] == "application/json"
    for key in KEYS:
        assert Webhook(whsec_secret(key)).verify(request.body, request.headers)["model"] == "Task"
    assert request.headers["webhook-id"] == _row(app, notification_id).webhook_id
    assert request.headers["webhook-id"].startswith("msg_")


def test_one_row_per_model_and_url_and_empty_models_follow_notify_empty(
    make_env, database_url: str, receiver: Receiver
) -> None:
    urls = f"{receiver.url},{receiver.url}?second=1"
    results = {
        "Task": {"added": 0, "updated": 1, "deleted": 0},
        "Comment": {"added": 0, "updated": 0, "deleted": 0},
    }
    noisy = _context(make_env, database_url, urls)
    quiet = _context(make_env, database_url, urls, HOOKSYNC_NOTIFY_EMPTY="false")
    try:
        ids = _complete(noisy, results)
        assert len(ids) == 4
        rows = [_row(noisy, i) for i in ids]
        models = sorted(json.loads(row.body)["model"] for row in rows)
        assert models == ["Comment", "Comment", "Task", "Task"]
        # One message id per message, shared by its URLs.
        assert len({row.webhook_id for row in rows}) == 2

        quiet_ids = _complete(quiet, results, connection_id="other")
        assert [json.loads(_row(quiet, i).body)["model"] for i in quiet_ids] == ["Task", "Task"]
    finally:
        noisy.close()
        quiet.close()


def test_no_app_url_records_nothing(make_env, database_url: str) -> None:
    ctx = _context(make_env, database_url, "")
    try:
        _, run_id = _make_run(ctx)
        with session_scope(ctx.sessions) as session:
            run = session.get(SyncRun, run_id)
            assert record_completion(session, ctx.settings, run, {"Task": {"added": 1}}) == []
            assert record_failure(session, ctx.settings, run, "script_error", "boom") == []
            assert record_forward(session, ctx.settings, "tracker", "acme", {"a": 1}) == []
            assert session.scalars(select(Notification.id)).all() == []
    finally:
        ctx.close()


def test_failure_and_forward_bodies(app: AppContext, receiver: Receiver) -> None:
    _, run_id = _make_run(app, sync_type="WEBHOOK")
    with session_scope(app.sessions) as session:
        run = session.get(SyncRun, run_id)
        failure = record_failure(
            session, app.settings, run, "script_error", "KeyError: 'id'",
            started_at=STARTED, failed_at=STARTED + timedelta(seconds=2), model="Task",
        )  # fmt: skip
        forward = record_forward(session, app.settings, "tracker", "acme", {"event": "x", "n": 1})
    deliver(app, failure[0])
    deliver(app, forward[0])

    first, second = (json.loads(request.body) for request in receiver.requests)
    assert first == {
        "from": "nango",
        "type": "sync",
        "connectionId": "acme",
        "providerConfigKey": "tracker",
        "syncName": "tasks",
        "model": "Task",
        "syncType": "WEBHOOK",
        "success": False,
        "error": {"type": "script_error", "description": "KeyError: 'id'"},
        "startedAt": "2024-05-01T12:00:00.123Z",
        "failedAt": "2024-05-01T12:00:02.123Z",
    }
    assert list(second) == ["from", "type", "providerConfigKey", "connectionId", "payload"]
    assert second == {
        "from": "tracker",
        "type": "forward",
        "providerConfigKey": "tracker",
        "connectionId": "acme",
        "payload": {"event": "x", "n": 1},
    }


def test_a_500_is_retried_about_5_seconds_later_then_delivered(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    now = utcnow()
    deliver(app, notification_id, now=now)

    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == (
        "pending", 1, 500, "HTTP 500",
    )  # fmt: skip
    assert now + timedelta(seconds=4) <= row.next_attempt_at <= now + timedelta(seconds=6)

    deliver(app, notification_id, now=now + timedelta(seconds=1))  # not due yet
    assert len(receiver.requests) == 1

    deliver(app, notification_id, now=row.next_attempt_at)
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 2, 200)
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    # Each attempt is signed afresh with its own timestamp.
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    Webhook(whsec_secret(KEYS[1])).verify(second.body, second.headers)


def test_retry_after_longer_than_the_schedule_is_honoured(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.statuses = [429]
    receiver.extra_headers = {"Retry-After": "120"}
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    now = utcnow()
    deliver(app, notification_id, now=now)
    row = _row(app, notification_id)
    assert row.state == "pending"
    assert row.next_attempt_at == now + timedelta(seconds=120)


def test_410_stops_delivery_for_good(app: AppContext, receiver: Receiver) -> None:
    receiver.statuses = [410]
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    now = utcnow()
    deliver(app, notification_id, now=now)
    deliver(app, notification_id, now=now + timedelta(days=2))
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status) == ("gone", 1, 410)
    assert len(receiver.requests) == 1
    assert tick(app, now + timedelta(days=2), housekeeping=False).notification_ids == ()


def test_other_4xx_fail_at_once(app: AppContext, receiver: Receiver) -> None:
    receiver.statuses = [400]
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    deliver(app, notification_id)
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status) == ("failed", 1, 400)


def test_exhausted_after_eight_attempts(app: AppContext, receiver: Receiver) -> None:
    receiver.statuses = [503] * 20
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    now = utcnow()
    waits = []
    for _ in range(8):
        deliver(app, notification_id, now=now)
        row = _row(app, notification_id)
        if row.state == "pending":
            waits.append((row.next_attempt_at - now).total_seconds())
            now = row.next_attempt_at
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status) == ("failed", 8, 503)
    assert "gave up after 8 attempts" in (row.last_error or "")
    assert len(receiver.requests) == 8
    assert [round(w / base, 1) <= 1.2 and w / base >= 0.8 for w, base in zip(
        waits, (5, 300, 1800, 7200, 18000, 36000, 36000), strict=True)] == [True] * 7  # fmt: skip
    deliver(app, notification_id, now=now + timedelta(days=1))
    assert len(receiver.requests) == 8


def test_network_errors_are_retried_and_never_leak_the_url(make_env, database_url: str) -> None:
    secret_url = f"http://127.0.0.1:{free_port()}/hook?token=s3cret-token"
    ctx = _context(make_env, database_url, secret_url)
    try:
        (notification_id,) = _complete(ctx, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
        deliver(ctx, notification_id)
        row = _row(ctx, notification_id)
        assert (row.state, row.attempts, row.last_status) == ("pending", 1, None)
        assert row.last_error == "network error: ConnectionError"
        assert "s3cret" not in row.last_error
    finally:
        ctx.close()


def test_two_concurrent_deliveries_of_one_notification_send_once(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.delay = 0.5
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    now = utcnow()
    run_at_once([lambda: deliver(app, notification_id, now=now)] * 2, timeout=30)
    assert len(receiver.requests) == 1
    row = _row(app, notification_id)
    assert (row.state, row.attempts) == ("delivered", 1)


def test_the_sweeper_drives_retries_without_duplicate_dispatches(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    (notification_id,) = _complete(app, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
    now = utcnow()
    # Just recorded: its caller enqueues it, so the sweeper leaves it alone for a while...
    assert notification_id not in tick(app, now, housekeeping=False).notification_ids
    lease = app.settings.lease_seconds
    later = now + timedelta(seconds=lease + 1)
    # ...but re-dispatches it if that message was lost, once per lease period.
    assert tick(app, later, housekeeping=False).notification_ids == (notification_id,)
    assert tick(app, later + timedelta(seconds=1), housekeeping=False).notification_ids == ()

    # The marker never blocks the worker that receives the message, even with clock skew.
    deliver(app, notification_id, now=later - timedelta(seconds=DISPATCH_SKEW_SECONDS - 1))
    row = _row(app, notification_id)
    assert (row.state, row.attempts) == ("pending", 1)
    early = tick(app, row.next_attempt_at - timedelta(seconds=1), housekeeping=False)
    assert early.notification_ids == ()
    due = tick(app, row.next_attempt_at, housekeeping=False)
    assert due.notification_ids == (notification_id,)
    deliver(app, notification_id, now=row.next_attempt_at)
    assert _row(app, notification_id).state == "delivered"


def test_list_and_retry_a_failed_notification(app: AppContext, receiver: Receiver) -> None:
    receiver.statuses = [404]
    first, second = _complete(
        app,
        {"Task": {"added": 1, "updated": 0, "deleted": 0},
         "Comment": {"added": 1, "updated": 0, "deleted": 0}},
    )  # fmt: skip
    deliver(app, first)
    deliver(app, second)
    now = utcnow()
    with session_scope(app.sessions) as session:
        assert [row.id for row in list_notifications(session, "failed")] == [first]
        assert [row.id for row in list_notifications(session)] == [second, first]
        with pytest.raises(BadInputError, match="state must be one of"):
            list_notifications(session, "lost")
        with pytest.raises(BadInputError, match="limit"):
            list_notifications(session, limit=0)
        with pytest.raises(BadInputError, match="already delivered"):
            retry_notification(session, second, now)
        assert retry_notification(session, 999_999, now) is None
        row = retry_notification(session, first, now)
        assert row is not None and (row.state, row.attempts) == ("pending", 0)

    deliver(app, first, now=now)
    assert _row(app, first).state == "delivered"
    assert len(receiver.requests) == 3


def test_the_api_lists_and_retries_without_showing_url_secrets(
    make_env, database_url: str, receiver: Receiver
) -> None:
    from ingress import notifications
    from ingress.app import create_app

    ctx = _context(make_env, database_url, receiver.url + "?token=s3cret")
    try:
        flask_app = create_app(ctx)
        if "notifications" not in flask_app.blueprints:  # until create_app registers it
            flask_app.register_blueprint(notifications.bp)
        client = flask_app.test_client()
        auth = {"Authorization": "Bearer test-api-key"}
        receiver.statuses = [422]
        (notification_id,) = _complete(ctx, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
        deliver(ctx, notification_id)

        assert client.get("/notifications").status_code == 401
        listed = client.get("/notifications?state=failed", headers=auth)
        assert listed.status_code == 200
        (item,) = listed.get_json()["notifications"]
        assert "s3cret" not in listed.get_data(as_text=True)
        assert item["url"] == receiver.url + "?…"
        assert (item["id"], item["state"], item["last_status"]) == (notification_id, "failed", 422)
        assert item["body"]["model"] == "Task"
        bad = client.get("/notifications?limit=lots", headers=auth)
        assert (bad.status_code, bad.get_json()["error"]["field"]) == (400, "limit")

        missing = client.post("/notifications/999999/retry", headers=auth)
        assert missing.status_code == 404
        retried = client.post(f"/notifications/{notification_id}/retry", headers=auth)
        assert retried.status_code == 200
        assert retried.get_json()["notification"]["state"] == "pending"
        deliver(ctx, notification_id)
        assert _row(ctx, notification_id).state == "delivered"
    finally:
        ctx.close()
