"""The webhook receiver and the events API on a real Redis (ingress/webhooks.py, app.py).

Receiver tests run against a context whose database URL cannot even be opened, and check
afterwards that no engine was created: the receiver must never touch the database.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cache.context import AppContext
from config.errors import ConfigError
from config.settings import load_settings
from ingress.app import create_app
from ingress.provider_signatures import sign_generic
from tests.support.auth import API_KEY, AUTH
from tests.support.integrations import write_integrations
from tests.support.queue import queued_messages
from tests.support.rows import insert_connection
from tests.support.servers import free_port
from workers import inbox
from workers.celery_app import queue_lists

SECRET = "s3cret"
LIMIT = 2048

NANGO_YAML = """
integrations:
  tracker:
    syncs:
      tasks:
        runs: every 1h
        output: Task
        webhook-subscriptions: [task.created, task.updated]
  open:
    syncs:
      items:
        runs: every 1h
        output: Item
        webhook-subscriptions: ['*']
  nosecret:
    syncs:
      things:
        runs: every 1h
        output: Item
models:
  Task: {id: string}
  Item: {id: string}
providers:
  tracker:
    base_url: http://127.0.0.1:9
    webhook_secret: [s3cret-old, s3cret]
    webhook:
      signature: {scheme: hmac-sha256, header: X-Sig, encoding: hex, prefix: "sha256="}
      event_type: {header: X-Event}
      connection: {path: workspace_id, match: metadata.workspace_id}
      delivery_id: {header: X-Delivery}
  open:
    base_url: http://127.0.0.1:9
    webhook:
      signature: {scheme: none}
      event_type: {path: type}
      connection: {path: account, match: connection_id}
  nosecret:
    base_url: http://127.0.0.1:9
    webhook:
      signature: {scheme: hmac-sha256, header: X-Sig}
"""


@pytest.fixture
def integrations_dir(tmp_path: Path) -> Path:
    return write_integrations(tmp_path / "integrations", NANGO_YAML)


@pytest.fixture
def receiver_ctx(make_env, integrations_dir: Path) -> Iterator[AppContext]:
    """A context whose database cannot be opened (a path under /dev/null)."""
    env = make_env(
        HOOKSYNC_INTEGRATIONS_DIR=str(integrations_dir),
        HOOKSYNC_DATABASE_URL="sqlite:////dev/null/hooksync/nowhere.db",
        HOOKSYNC_MAX_WEBHOOK_BYTES=str(LIMIT),
    )
    context = AppContext(load_settings(env))
    yield context
    # The receiver never asked for the database.
    assert "engine" not in context.__dict__
    assert "sessions" not in context.__dict__
    context.close()


@pytest.fixture
def client(receiver_ctx: AppContext) -> FlaskClient:
    return create_app(receiver_ctx, check_database=False).test_client()


def signed(body: bytes, secret: str = SECRET, **headers: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Sig": sign_generic(secret, body, prefix="sha256="),
        **headers,
    }


def inboxed(ctx: AppContext) -> list[dict[str, Any]]:
    """The webhooks waiting in the durable inbox (``workers.inbox``), decoded."""
    return [json.loads(fields[b"e"]) for _id, fields in ctx.redis.xrange(inbox.STREAM)]


def queued(ctx: AppContext) -> list[dict[str, Any]]:
    """The messages on hooksync's Celery queue, decoded (task name + arguments)."""
    return queued_messages(ctx.redis)


BODY = json.dumps({"workspace_id": "w1", "task_id": 7}).encode()


# --- checks in order: 404, 413, 401, 400 ------------------------------------------------


def test_unknown_integration_is_404_before_anything_else(
    client: FlaskClient, receiver_ctx: AppContext
) -> None:
    response = client.post("/webhook/nope", data=b"x" * (LIMIT + 10), headers={"X-Sig": "bad"})
    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_integration"
    assert "'nope'" in response.json["error"]["message"]
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


def test_body_over_the_limit_is_413_before_the_signature(
    client: FlaskClient, receiver_ctx: AppContext
) -> None:
    response = client.post("/webhook/tracker", data=b"{" + b" " * LIMIT + b"}")
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    assert str(LIMIT) in response.json["error"]["message"]
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


def test_body_exactly_at_the_limit_is_accepted(client: FlaskClient) -> None:
    body = b'{"workspace_id": "w1"' + b" " * (LIMIT - 22) + b"}"
    assert len(body) == LIMIT
    assert client.post("/webhook/tracker", data=body, headers=signed(body)).status_code == 202


def test_body_without_content_length_is_measured_while_read(
    client: FlaskClient, receiver_ctx: AppContext
) -> None:
    big = b"{" + b" " * (LIMIT * 4) + b"}"
    response = client.post(
        "/webhook/tracker",
        input_stream=io.BytesIO(big),
        headers={"Transfer-Encoding": "chunked", **signed(big)},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing signature header 'X-Sig'"),
        ({"X-Sig": "sha256=" + "0" * 64}, "does not match"),
        ({"X-Sig": sign_generic("wrong", BODY, prefix="sha256=")}, "does not match"),
    ],
)
def test_bad_or_missing_signature_is_401_and_queues_nothing(
    client: FlaskClient, receiver_ctx: AppContext, headers: dict[str, str], message: str
) -> None:
    response = client.post("/webhook/tracker", data=BODY, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_signature"
    assert message in response.json["error"]["message"]
    assert SECRET not in response.get_data(as_text=True)
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


def test_provider_without_a_secret_is_401_saying_so(
    client: FlaskClient, receiver_ctx: AppContext
) -> None:
    response = client.post("/webhook/nosecret", data=BODY, headers=signed(BODY))
    assert response.status_code == 401
    assert "webhook_secret is not configured" in response.json["error"]["message"]
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


def test_signature_is_checked_before_the_body_is_parsed(client: FlaskClient) -> None:
    response = client.post("/webhook/tracker", data=b"{not json", headers={"X-Sig": "x"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON: Expecting property name enclosed in double quotes at"),
        (b"", "body is empty"),
    ],
)
def test_unparsable_signed_body_is_400_naming_the_position(
    client: FlaskClient, receiver_ctx: AppContext, body: bytes, message: str
) -> None:
    response = client.post("/webhook/tracker", data=body, headers=signed(body))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_body"
    assert message in response.json["error"]["message"]
    if body:
        assert "line 1 column 2" in response.json["error"]["message"]
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


# --- accepted ---------------------------------------------------------------------------


def test_accepted_webhook_puts_exactly_one_message_on_redis(
    client: FlaskClient, receiver_ctx: AppContext
) -> None:
    headers = signed(
        BODY, **{"X-Event": "task.created", "X-Delivery": "d-1", "Authorization": "Bearer x"}
    )
    response = client.post("/webhook/tracker?src=test", data=BODY, headers=headers)
    assert response.status_code == 202
    assert response.json["status"] == "accepted"

    (event,) = inboxed(receiver_ctx)
    assert queued(receiver_ctx) == [{"task": "hooksync.drain_inbox", "args": []}]
    assert event["id"] == response.json["id"]
    assert event["provider_config_key"] == "tracker"
    assert event["method"] == "POST"
    assert event["url"] == "http://localhost/webhook/tracker?src=test"
    assert base64.b64decode(event["body_b64"]) == BODY
    assert event["headers"]["x-event"] == "task.created"
    assert event["headers"]["x-delivery"] == "d-1"
    assert "authorization" not in event["headers"]
    assert event["received_at"].endswith("+00:00") and "." in event["received_at"]


def test_a_rotated_out_secret_still_verifies(client: FlaskClient) -> None:
    response = client.post("/webhook/tracker", data=BODY, headers=signed(BODY, "s3cret-old"))
    assert response.status_code == 202


def test_nango_path_shape_is_accepted(client: FlaskClient, receiver_ctx: AppContext) -> None:
    response = client.post("/webhook/env/prod/tracker", data=BODY, headers=signed(BODY))
    assert response.status_code == 202
    assert inboxed(receiver_ctx)[0]["provider_config_key"] == "tracker"


def test_slack_url_verification_is_answered_inline(
    client: FlaskClient, receiver_ctx: AppContext
) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
    response = client.post("/webhook/open", data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.json == {"challenge": "abc123"}
    assert inboxed(receiver_ctx) == [] and queued(receiver_ctx) == []


def test_redis_down_is_503_with_retry_after(make_env, integrations_dir: Path) -> None:
    env = make_env(
        HOOKSYNC_INTEGRATIONS_DIR=str(integrations_dir),
        HOOKSYNC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        HOOKSYNC_DATABASE_URL="sqlite:////dev/null/hooksync/nowhere.db",
    )
    context = AppContext(load_settings(env))
    try:
        app = create_app(context, check_database=False)
        response = app.test_client().post("/webhook/tracker", data=BODY, headers=signed(BODY))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json["error"]["code"] == "queue_unavailable"
        assert "engine" not in context.__dict__
    finally:
        context.close()


# --- app-level behaviour ----------------------------------------------------------------


def test_healthz_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_unknown_route_and_wrong_method_answer_json(client: FlaskClient) -> None:
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.get("/webhook/tracker")
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


def test_api_needs_the_bearer_key_and_never_echoes_it(client: FlaskClient) -> None:
    missing = client.get("/webhooks/events")
    assert missing.status_code == 401 and missing.json["error"]["code"] == "unauthorized"
    wrong = client.get("/webhooks/events", headers={"Authorization": "Bearer guess-me-123"})
    assert wrong.status_code == 401
    assert "guess-me-123" not in wrong.get_data(as_text=True)
    assert API_KEY not in wrong.get_data(as_text=True)


def test_an_unexpected_error_is_a_500_that_leaks_nothing(receiver_ctx: AppContext) -> None:
    app: Flask = create_app(receiver_ctx, check_database=False)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("db password is hunter2")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_error"
    assert "hunter2" not in response.get_data(as_text=True)


def test_create_app_refuses_an_unmigrated_database(
    make_env, integrations_dir: Path, tmp_path: Path
) -> None:
    env = make_env(
        HOOKSYNC_INTEGRATIONS_DIR=str(integrations_dir),
        HOOKSYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}",
    )
    context = AppContext(load_settings(env))
    try:
        with pytest.raises(ConfigError, match="run the release step"):
            create_app(context)
    finally:
        context.close()


def test_create_app_refuses_a_broken_integrations_file(make_env, tmp_path: Path) -> None:
    folder = write_integrations(
        tmp_path / "bad", NANGO_YAML.replace("runs: every 1h", "runs: evry 1h", 1)
    )
    env = make_env(HOOKSYNC_INTEGRATIONS_DIR=str(folder))
    with pytest.raises(ConfigError, match="evry 1h"):
        create_app(AppContext(load_settings(env)), check_database=False)


def test_create_app_without_a_context_reads_the_environment(
    make_env, integrations_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(HOOKSYNC_INTEGRATIONS_DIR=str(integrations_dir))
    env["HOOKSYNC_DATABASE_URL"] = database_url
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    context: AppContext = app.extensions["hooksync"]
    try:
        assert context.settings.database_url == database_url
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        context.close()


# --- events API (touches the database) --------------------------------------------------


@pytest.fixture
def api_ctx(make_env, integrations_dir: Path, database_url: str) -> Iterator[AppContext]:
    env = make_env(HOOKSYNC_INTEGRATIONS_DIR=str(integrations_dir))
    context = AppContext(load_settings({**env, "HOOKSYNC_DATABASE_URL": database_url}))
    yield context
    context.close()


def test_events_are_listed_and_replayed(api_ctx: AppContext) -> None:
    from cache.credentials import encrypt_credentials
    from cache.db import session_scope
    from cache.models import SyncRun
    from workers.events import route_event

    with session_scope(api_ctx.sessions) as session:
        insert_connection(
            session,
            "tracker",
            "c1",
            credentials_encrypted=encrypt_credentials(
                api_ctx.settings.encryption_key, {"type": "NONE"}
            ),
            metadata={"workspace_id": "w1"},
        )
    client = create_app(api_ctx).test_client()
    headers = signed(BODY, **{"X-Event": "task.created", "X-Delivery": "d-1"})
    accepted = client.post("/webhook/tracker", data=BODY, headers=headers)
    (queued_event,) = inboxed(api_ctx)
    api_ctx.redis.delete(*queue_lists())
    route_event(api_ctx, queued_event)

    listed = client.get("/webhooks/events?limit=10", headers=AUTH)
    assert listed.status_code == 200
    (event,) = listed.json["events"]
    assert event["id"] == accepted.json["id"]
    assert event["state"] == "routed" and event["runs_count"] == 1
    assert event["event_type"] == "task.created" and event["error"] is None
    assert client.get("/webhooks/events?state=duplicate", headers=AUTH).json["events"] == []

    replayed = client.post(f"/webhooks/events/{event['id']}/replay", headers=AUTH)
    assert replayed.status_code == 200
    assert replayed.json["runs_count"] == 2
    (run_id,) = replayed.json["run_ids"]
    assert [m for m in queued(api_ctx)] == [{"task": "hooksync.run_sync", "args": [run_id]}]
    with session_scope(api_ctx.sessions) as session:
        assert session.get(SyncRun, run_id).webhook_event_id == event["id"]


def test_events_api_errors_name_the_parameter(api_ctx: AppContext) -> None:
    client = create_app(api_ctx).test_client()
    bad_limit = client.get("/webhooks/events?limit=0", headers=AUTH)
    assert bad_limit.status_code == 400 and bad_limit.json["error"]["field"] == "limit"
    bad_state = client.get("/webhooks/events?state=nope", headers=AUTH)
    assert bad_state.status_code == 400 and "'nope'" in bad_state.json["error"]["message"]
    unknown = client.post("/webhooks/events/abc/replay", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "unknown_event"
