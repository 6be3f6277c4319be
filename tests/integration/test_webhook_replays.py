"""Replayed webhooks: a captured request sent again later, with a new delivery id (issue 9).

The receiver and the router are real (``create_app`` on a real Redis, ``route_event`` on
SQLite and Postgres). ``plain`` signs the body only, like GitHub or Shopify: its captured
requests stay valid forever and a new delivery id defeats the dedupe. ``stamped`` uses the
generic scheme's signed timestamp, so the same capture is refused once it is stale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cache.context import AppContext
from config.settings import load_settings
from ingress.app import create_app
from ingress.provider_signatures import sign_generic
from tests.support.integrations import write_integrations
from tests.support.rows import add_connection
from workers import inbox
from workers.events import route_event

SECRET = "s3cret"

NANGO_YAML = """
integrations:
  plain:
    syncs:
      tasks: {runs: every 1h, output: Task, webhook-subscriptions: ['*']}
  stamped:
    syncs:
      tasks: {runs: every 1h, output: Task, webhook-subscriptions: ['*']}
models:
  Task: {id: string}
providers:
  plain:
    base_url: http://127.0.0.1:9
    webhook_secret: s3cret
    webhook:
      signature: {scheme: hmac-sha256, header: X-Sig}
      delivery_id: {header: X-Delivery}
  stamped:
    base_url: http://127.0.0.1:9
    webhook_secret: s3cret
    webhook:
      signature: {scheme: hmac-sha256, header: X-Sig, timestamp_header: X-Timestamp}
      delivery_id: {header: X-Delivery}
"""

#: An older state of task 7: what an attacker captured before the task was renamed.
OLD_STATE = json.dumps({"id": "7", "title": "old", "updated_at": "2030-01-01T00:00:00Z"}).encode()


@pytest.fixture
def ctx(make_env, database_url: str, tmp_path: Path) -> Iterator[AppContext]:
    folder = write_integrations(tmp_path / "integrations", NANGO_YAML)
    env = make_env(HOOKSYNC_INTEGRATIONS_DIR=str(folder), HOOKSYNC_DATABASE_URL=database_url)
    context = AppContext(load_settings(env))
    yield context
    context.close()


@pytest.fixture
def client(ctx: AppContext) -> FlaskClient:
    for key in ("plain", "stamped"):
        add_connection(ctx, key, "c1", {}, credentials={"type": "NONE"})
    return create_app(ctx).test_client()


def inboxed(ctx: AppContext) -> list[dict[str, Any]]:
    return [json.loads(fields[b"e"]) for _id, fields in ctx.redis.xrange(inbox.STREAM)]


def test_a_body_only_signature_accepts_a_replay_with_a_new_delivery_id(
    ctx: AppContext, client: FlaskClient
) -> None:
    # The reproduction: the capture carries no time, so it verifies whenever it is sent,
    # and the delivery id header is not signed, so the attacker picks a fresh one.
    captured = {"Content-Type": "application/json", "X-Sig": sign_generic(SECRET, OLD_STATE)}
    first = client.post("/webhook/plain", data=OLD_STATE, headers={**captured, "X-Delivery": "a"})
    replay = client.post("/webhook/plain", data=OLD_STATE, headers={**captured, "X-Delivery": "b"})

    assert (first.status_code, replay.status_code) == (202, 202)
    results = [route_event(ctx, event) for event in inboxed(ctx)]
    # Both run the sync with the old state: only the records' merging strategy
    # (newest_wins) keeps it from rolling task 7 back.
    assert [r.state for r in results] == ["routed", "routed"]
    assert all(len(r.run_ids) == 1 for r in results)


def test_the_same_delivery_id_again_is_a_duplicate(ctx: AppContext, client: FlaskClient) -> None:
    headers = {"X-Sig": sign_generic(SECRET, OLD_STATE), "X-Delivery": "a"}
    for _ in range(2):
        assert client.post("/webhook/plain", data=OLD_STATE, headers=headers).status_code == 202
    assert [route_event(ctx, e).state for e in inboxed(ctx)] == ["routed", "duplicate"]


def test_a_signed_timestamp_refuses_the_stale_capture(ctx: AppContext, client: FlaskClient) -> None:
    captured_at = str(int(time.time()) - 301)
    headers = {
        "X-Sig": sign_generic(SECRET, OLD_STATE, timestamp=captured_at),
        "X-Timestamp": captured_at,
        "X-Delivery": "b",
    }
    response = client.post("/webhook/stamped", data=OLD_STATE, headers=headers)

    assert response.status_code == 401
    error = response.json["error"]
    assert error["code"] == "stale_timestamp"
    assert error["field"] == "X-Timestamp"
    assert "'X-Timestamp'" in error["message"] and "300 s tolerance" in error["message"]
    assert inboxed(ctx) == []


def test_a_fresh_signed_timestamp_is_accepted(ctx: AppContext, client: FlaskClient) -> None:
    now = str(int(time.time()))
    headers = {
        "X-Sig": sign_generic(SECRET, OLD_STATE, timestamp=now),
        "X-Timestamp": now,
        "X-Delivery": "a",
    }
    assert client.post("/webhook/stamped", data=OLD_STATE, headers=headers).status_code == 202
    assert [route_event(ctx, e).state for e in inboxed(ctx)] == ["routed"]


@pytest.mark.parametrize(
    ("timestamp", "code", "shown"),
    [
        (None, "invalid_timestamp", "missing timestamp header 'X-Timestamp'"),
        ("yesterday", "invalid_timestamp", "'X-Timestamp' is not an integer: 'yesterday'"),
    ],
)
def test_a_missing_or_unparsable_timestamp_is_401_naming_the_header(
    ctx: AppContext, client: FlaskClient, timestamp: str | None, code: str, shown: str
) -> None:
    headers = {"X-Sig": sign_generic(SECRET, OLD_STATE, timestamp=timestamp), "X-Delivery": "a"}
    if timestamp is not None:
        headers["X-Timestamp"] = timestamp
    response = client.post("/webhook/stamped", data=OLD_STATE, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == code
    assert shown in response.json["error"]["message"]
    assert inboxed(ctx) == []


def test_the_body_signature_alone_does_not_pass_a_stamped_provider(
    ctx: AppContext, client: FlaskClient
) -> None:
    # A sender that forgot the timestamp in the signed message: the header alone is not enough.
    now = str(int(time.time()))
    headers = {"X-Sig": sign_generic(SECRET, OLD_STATE), "X-Timestamp": now}
    response = client.post("/webhook/stamped", data=OLD_STATE, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_signature"
