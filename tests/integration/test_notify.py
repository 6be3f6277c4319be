"""The notification outbox against a real database and a real HTTP receiver on loopback.

Every test runs on SQLite and Postgres. Retries are tested by injecting ``now`` values,
never by sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from standardwebhooks.webhooks import Webhook

import cache.db
from cache.context import AppContext
from cache.db import assert_migrated, make_engine, session_scope
from cache.models import AppEndpoint, Notification, SyncRun, utcnow
from config.errors import BadInputError, ConfigError
from config.integrations import Integrations
from config.settings import load_settings
from scheduler.tick import tick
from tests.support.auth import AUTH
from tests.support.concurrency import run_at_once
from tests.support.rows import insert_connection
from tests.support.servers import QuietHandler, free_port, serving
from workers.app_signatures import legacy_signature, whsec_secret
from workers.app_webhooks import endpoint_id
from workers.delivery import deliver
from workers.outbox import (
    DISPATCH_SKEW_SECONDS,
    NOT_SENT_GONE,
    record_completion,
    record_failure,
    record_forward,
    retry_notification,
)
from workers.outbox_views import (
    list_endpoints,
    list_notifications,
)

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

    class Handler(QuietHandler):
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

    with serving(Handler) as server:
        state.url = f"http://127.0.0.1:{server.server_port}/hooks/nango"
        yield state


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
    context.pin_integrations(Integrations())
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
        assert [row.id for row in list_notifications(session, state="failed")] == [first]
        assert [row.id for row in list_notifications(session)] == [second, first]
        with pytest.raises(BadInputError, match="state must be one of"):
            list_notifications(session, state="lost")
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
    from ingress.app import create_app

    ctx = _context(make_env, database_url, receiver.url + "?token=s3cret")
    try:
        client = create_app(ctx).test_client()
        receiver.statuses = [422]
        (notification_id,) = _complete(ctx, {"Task": {"added": 1, "updated": 0, "deleted": 0}})
        deliver(ctx, notification_id)

        assert client.get("/notifications").status_code == 401
        listed = client.get("/notifications?state=failed", headers=AUTH)
        assert listed.status_code == 200
        (item,) = listed.get_json()["notifications"]
        assert "s3cret" not in listed.get_data(as_text=True)
        assert item["url"] == receiver.url + "?…"
        assert (item["id"], item["state"], item["last_status"]) == (notification_id, "failed", 422)
        assert item["body"]["model"] == "Task"
        bad = client.get("/notifications?limit=lots", headers=AUTH)
        assert (bad.status_code, bad.get_json()["error"]["field"]) == (400, "limit")

        missing = client.post("/notifications/999999/retry", headers=AUTH)
        assert missing.status_code == 404
        retried = client.post(f"/notifications/{notification_id}/retry", headers=AUTH)
        assert retried.status_code == 200
        assert retried.get_json()["notification"]["state"] == "pending"
        deliver(ctx, notification_id)
        assert _row(ctx, notification_id).state == "delivered"
    finally:
        ctx.close()


# -- a 410 stops delivery to that URL ---------------------------------------------------------

TASK = {"Task": {"added": 1, "updated": 0, "deleted": 0}}
TWO_MODELS = {"Task": TASK["Task"], "Comment": {"added": 0, "updated": 1, "deleted": 0}}


def _by_url(ctx: AppContext, ids: list[int]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for notification_id in ids:
        grouped.setdefault(_row(ctx, notification_id).url, []).append(notification_id)
    return grouped


@pytest.fixture
def two_urls(make_env, database_url: str, receiver: Receiver) -> Iterator[AppContext]:
    """The app at ``/gone?token=…`` (it will answer 410) and at ``/kept``."""
    base = receiver.url.rsplit("/", 2)[0]
    context = _context(make_env, database_url, f"{base}/gone?token=s3cret,{base}/kept")
    yield context
    context.close()


def test_a_410_stops_every_delivery_to_that_url_but_not_to_the_others(
    two_urls: AppContext, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    gone_url, kept_url = two_urls.settings.app_webhook_urls
    ids = _by_url(two_urls, _complete(two_urls, TWO_MODELS))
    first_gone, other_gone = ids[gone_url]
    receiver.statuses = [410]
    now = utcnow()
    deliver(two_urls, first_gone, now=now)

    # The other pending row to that URL is gone without having been sent.
    row = _row(two_urls, other_gone)
    assert (row.state, row.attempts, row.last_status) == ("gone", 0, None)
    assert row.last_error == NOT_SENT_GONE
    swept = tick(two_urls, now + timedelta(days=1), housekeeping=False).notification_ids
    assert sorted(swept) == sorted(ids[kept_url])
    deliver(two_urls, other_gone, now=now + timedelta(days=1))
    assert [r.path for r in receiver.requests] == ["/gone?token=s3cret"]

    # The second URL keeps working.
    for notification_id in ids[kept_url]:
        deliver(two_urls, notification_id, now=now + timedelta(days=1))
        assert _row(two_urls, notification_id).state == "delivered"

    # New completions, failures and forwards record nothing for the gone URL.
    caplog.clear()
    caplog.set_level("WARNING", logger="workers.outbox")
    new_ids = _complete(two_urls, TWO_MODELS, connection_id="later")
    _, run_id = _make_run(two_urls, connection_id="failing")
    with session_scope(two_urls.sessions) as session:
        run = session.get(SyncRun, run_id)
        new_ids += record_failure(session, two_urls.settings, run, "script_error", "boom")
        new_ids += record_forward(session, two_urls.settings, "tracker", "acme", {"a": 1})
    assert set(_by_url(two_urls, new_ids)) == {kept_url}
    assert len(new_ids) == 4
    warnings = [r.getMessage() for r in caplog.records if "answered 410 earlier" in r.message]
    assert len(warnings) == 3  # once per call
    assert all(gone_url.split("?")[0] + "?…" in message for message in warnings)
    assert "s3cret" not in caplog.text
    for notification_id in new_ids:
        deliver(two_urls, notification_id)
    assert [r.path for r in receiver.requests].count("/gone?token=s3cret") == 1
    assert len(receiver.requests) == 1 + 2 + 4


def test_a_row_recorded_while_the_410_was_stored_is_not_sent(
    app: AppContext, receiver: Receiver
) -> None:
    (notification_id,) = _complete(app, TASK)
    # As if its recorder read the URL as active just before another worker's 410 committed.
    with session_scope(app.sessions) as session:
        session.add(AppEndpoint(url=receiver.url, gone_at=utcnow(), gone_status=410))
    deliver(app, notification_id)
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_error) == ("gone", 0, NOT_SENT_GONE)
    assert receiver.requests == []


def test_an_attempt_in_flight_when_the_url_went_gone_is_not_retried(
    app: AppContext, receiver: Receiver
) -> None:
    import requests

    (notification_id,) = _complete(app, TASK)

    def post_while_another_worker_stores_a_410(url: str, **kwargs: object) -> requests.Response:
        with session_scope(app.sessions) as session:
            session.add(AppEndpoint(url=url, gone_at=utcnow(), gone_status=410))
        response = requests.Response()
        response.status_code = 503
        response.raw = io.BytesIO(b"")
        return response

    deliver(app, notification_id, session_post=post_while_another_worker_stores_a_410)
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status) == ("gone", 1, 503)
    assert row.last_error == "HTTP 503; not retried: the app answered 410 for this URL"


def test_concurrent_410s_for_one_url_both_store_it(app: AppContext, receiver: Receiver) -> None:
    receiver.statuses = [410, 410]
    receiver.delay = 0.3
    first, second, third = _complete(
        app, {**TWO_MODELS, "Label": {"added": 1, "updated": 0, "deleted": 0}}
    )
    now = utcnow()
    run_at_once([lambda: deliver(app, first, now=now), lambda: deliver(app, second, now=now)])
    assert len(receiver.requests) == 2
    assert {_row(app, i).state for i in (first, second, third)} == {"gone"}
    with app.sessions() as session:
        (endpoint,) = session.scalars(select(AppEndpoint)).all()
        assert (endpoint.url, endpoint.gone_status) == (receiver.url, 410)
        assert endpoint.gone_at == now


def test_retrying_a_gone_notification_re_enables_its_url(
    make_env, database_url: str, receiver: Receiver
) -> None:
    from ingress.app import create_app

    secret_url = receiver.url + "?token=s3cret"
    ctx = _context(make_env, database_url, secret_url)
    try:
        client = create_app(ctx).test_client()
        assert client.get("/notifications/endpoints").status_code == 401
        listed = client.get("/notifications/endpoints", headers=AUTH).get_json()
        assert listed == {
            "endpoints": [
                {"id": endpoint_id(secret_url), "url": receiver.url + "?…",
                 "state": "active", "gone_at": None, "gone_status": None},
            ]
        }  # fmt: skip

        first, second = _complete(ctx, TWO_MODELS)
        receiver.statuses = [410]
        now = utcnow()
        deliver(ctx, first, now=now)
        assert _complete(ctx, TASK, connection_id="while-gone") == []
        gone = client.get("/notifications/endpoints", headers=AUTH)
        assert "s3cret" not in gone.get_data(as_text=True)
        (endpoint,) = gone.get_json()["endpoints"]
        assert (endpoint["state"], endpoint["gone_status"]) == ("gone", 410)
        assert endpoint["gone_at"] == now.isoformat()

        retried = client.post(f"/notifications/{first}/retry", headers=AUTH)
        assert retried.status_code == 200
        assert retried.get_json()["notification"]["state"] == "pending"
        (endpoint,) = client.get("/notifications/endpoints", headers=AUTH).get_json()["endpoints"]
        assert (endpoint["state"], endpoint["gone_at"]) == ("active", None)
        deliver(ctx, first)
        assert _row(ctx, first).state == "delivered"
        # The rows the 410 stopped stay gone until they are retried themselves...
        assert _row(ctx, second).state == "gone"
        # ...but the URL takes new notifications again.
        (later,) = _complete(ctx, TASK, connection_id="after-retry")
        deliver(ctx, later)
        assert _row(ctx, later).state == "delivered"
        assert len(receiver.requests) == 3
    finally:
        ctx.close()


def test_list_endpoints_reports_configured_urls_in_order(two_urls: AppContext) -> None:
    gone_url, kept_url = two_urls.settings.app_webhook_urls
    now = utcnow()
    with session_scope(two_urls.sessions) as session:
        session.add(AppEndpoint(url=gone_url, gone_at=now, gone_status=410))
        session.add(AppEndpoint(url="http://unconfigured.example/x", gone_at=now))
    with two_urls.sessions() as session:
        statuses = list_endpoints(session, two_urls.settings.app_webhook_urls)
    assert [(s.url, s.state, s.gone_at) for s in statuses] == [
        (gone_url, "gone", now),
        (kept_url, "active", None),
    ]


def test_the_migrations_reach_head_0006_and_go_back(database_url: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(cache.db._MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    assert ScriptDirectory.from_config(config).get_current_head() == "0006"
    engine = make_engine(database_url)
    try:
        assert_migrated(engine)
        inspector = inspect(engine)
        assert [c["name"] for c in inspector.get_columns("app_endpoints")] == [
            "url", "gone_at", "gone_status",
        ]  # fmt: skip
        primary_key = inspector.get_pk_constraint("app_endpoints")
        assert (primary_key["name"], primary_key["constrained_columns"]) == (
            "pk_app_endpoints", ["url"],
        )  # fmt: skip

        indexes = {index["name"] for index in inspector.get_indexes("sync_runs")}
        assert "ix_sync_runs_event" in indexes
        assert [c["name"] for c in inspector.get_columns("notification_attempts")] == [
            "id", "notification_id", "attempt", "attempted_at", "status", "error", "duration_ms",
        ]  # fmt: skip
        assert {index["name"] for index in inspector.get_indexes("notification_attempts")} == {
            "ix_notification_attempts_notification_id"
        }

        indexes = {index["name"] for index in inspector.get_indexes("notifications")}
        assert "ix_notifications_stream" in indexes
        columns = [c["name"] for c in inspector.get_columns("notifications")]
        assert columns[-2:] == ["claimed_at", "stream"]
        columns = [c["name"] for c in inspector.get_columns("connections")]
        assert columns[-2:] == ["state", "state_error"]

        command.downgrade(config, "0001")
        assert "app_endpoints" not in inspect(engine).get_table_names()
        assert "notification_attempts" not in inspect(engine).get_table_names()
        indexes = {index["name"] for index in inspect(engine).get_indexes("sync_runs")}
        assert "ix_sync_runs_event" not in indexes
        with pytest.raises(ConfigError, match="expected '0006'"):
            assert_migrated(engine)
        command.upgrade(config, "head")
        assert_migrated(engine)
        assert "app_endpoints" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
