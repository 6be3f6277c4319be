"""The integrations API (ingress/integrations.py): what nango.yaml declares, without secrets.

A copy of the example with a second sync (no webhooks, an optional model field) and a
second integration (a preset provider, a ``*`` subscription), so the union of
subscriptions, a sync that takes no webhooks and the ``provider`` name are all visible.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cache.context import AppContext
from config.settings import load_settings
from ingress.app import create_app
from tests.support.auth import AUTH
from tests.support.integrations import write_integrations

WEBHOOK_SECRET = "tracker-webhook-secret-7f3a9c"
CRM_SECRET = "crm-client-secret-51b2e0"
API_KEY = "tt_live_api-key-0042"
ENDPOINTS = ("/integrations", "/integrations/tasktracker", "/scripts/config")

NANGO_YAML = """\
integrations:
  tasktracker:
    syncs:
      tasks:
        description: Every task.
        runs: every 30 seconds
        sync_type: incremental
        output: Task
        endpoint: GET /tasks
        webhook-subscriptions: [task.created, task.updated]
      users:
        runs: every hour
        auto_start: false
        track_deletes: true
        version: 1.0.2
        output: User
        endpoints: [GET /users, {method: POST, path: /users/search, group: Users}]
  crm:
    syncs:
      contacts:
        runs: every day
        output: Contact
        webhook-subscriptions: "*"
      deals:
        runs: every day
        output: Contact
        webhook-subscriptions: [deal.updated, task.updated]

models:
  Task: {id: string, title: string}
  User:
    id: string
    name: string
    email?: string | null
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
  crm:
    preset: hubspot
    webhook_secret: ${CRM_WEBHOOK_SECRET}
"""


@pytest.fixture
def make_env(make_env: Callable[..., dict[str, str]], tmp_path: Path) -> Callable[..., Any]:
    directory = write_integrations(tmp_path / "integrations", NANGO_YAML)

    def build(**overrides: str) -> dict[str, str]:
        return make_env(**{"HOOKSYNC_INTEGRATIONS_DIR": str(directory), **overrides})

    return build


@pytest.fixture
def provider_env(provider_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The shared environment with this file's webhook secrets, so a test can look for them
    in what the API answers (the shared ``client`` fixture sets it before ``create_app``)."""
    secrets = {"TASKTRACKER_WEBHOOK_SECRET": WEBHOOK_SECRET, "CRM_WEBHOOK_SECRET": CRM_SECRET}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    return {**provider_env, **secrets}


def test_list_integrations(client: FlaskClient) -> None:
    response = client.get("/integrations", headers=AUTH)

    assert response.status_code == 200
    assert response.json == {
        "integrations": [
            {
                "unique_key": "tasktracker",
                "provider": "tasktracker",
                "syncs": ["tasks", "users"],
                "webhook_subscriptions": ["task.created", "task.updated"],
            },
            {
                "unique_key": "crm",
                "provider": "hubspot",
                "syncs": ["contacts", "deals"],
                # The union over the syncs, each event once, in first-seen order.
                "webhook_subscriptions": ["*", "deal.updated", "task.updated"],
            },
        ]
    }


def test_get_integration_lists_each_sync_with_its_webhook_subscriptions(
    client: FlaskClient,
) -> None:
    response = client.get("/integrations/tasktracker", headers=AUTH)

    assert response.status_code == 200
    assert response.json == {
        "integration": {
            "unique_key": "tasktracker",
            "provider": "tasktracker",
            "syncs": [
                {
                    "name": "tasks",
                    "models": ["Task"],
                    "runs": "every 30 seconds",
                    "interval_seconds": 30,
                    "sync_type": "incremental",
                    "track_deletes": False,
                    "auto_start": True,
                    "webhook_subscriptions": ["task.created", "task.updated"],
                    "description": "Every task.",
                    "endpoints": [{"method": "GET", "path": "/tasks"}],
                },
                {
                    "name": "users",
                    "models": ["User"],
                    "runs": "every hour",
                    "interval_seconds": 3600,
                    "sync_type": "full",
                    "track_deletes": True,
                    "auto_start": False,
                    "webhook_subscriptions": [],
                    "description": "",
                    "endpoints": [
                        {"method": "GET", "path": "/users"},
                        {"method": "POST", "path": "/users/search", "group": "Users"},
                    ],
                },
            ],
        }
    }


def test_unknown_integration_is_a_404_naming_the_key(client: FlaskClient) -> None:
    response = client.get("/integrations/nope-404", headers=AUTH)

    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_integration"
    assert "'nope-404'" in response.json["error"]["message"]
    assert "tasktracker" in response.json["error"]["message"]  # names what exists


def test_scripts_config_has_nangos_shape(client: FlaskClient) -> None:
    response = client.get("/scripts/config", headers=AUTH)

    assert response.status_code == 200
    body = response.json
    assert isinstance(body, list)  # Nango answers a bare array (StandardNangoConfig[])
    assert [entry["providerConfigKey"] for entry in body] == ["tasktracker", "crm"]
    tracker = body[0]
    assert tracker["provider"] == "tasktracker"
    assert tracker["actions"] == []
    tasks, users = tracker["syncs"]
    assert {
        key: tasks[key]
        for key in (
            "name",
            "type",
            "runs",
            "returns",
            "track_deletes",
            "auto_start",
            "sync_type",
            "webhookSubscriptions",
            "endpoints",
            "description",
            "version",
        )
    } == {
        "name": "tasks",
        "type": "sync",
        "runs": "every 30 seconds",
        "returns": ["Task"],
        "track_deletes": False,
        "auto_start": True,
        "sync_type": "incremental",
        "webhookSubscriptions": ["task.created", "task.updated"],
        "endpoints": [{"method": "GET", "path": "/tasks"}],
        "description": "Every task.",
        "version": None,
    }
    assert users["version"] == "1.0.2"
    assert users["webhookSubscriptions"] == []
    assert users["models"] == [
        {
            "name": "User",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "name", "type": "string"},
                {"name": "email", "type": "string | null", "optional": True},
            ],
        }
    ]
    assert body[1]["provider"] == "hubspot"
    assert body[1]["syncs"][0]["webhookSubscriptions"] == ["*"]


def test_signing_secret_is_the_standard_webhooks_secret(client: FlaskClient) -> None:
    response = client.get("/webhooks/signing-secret", headers=AUTH)

    assert response.status_code == 200
    expected = "whsec_" + base64.b64encode(b"test-signing-key").decode()
    assert response.json == {
        "standard_webhooks_secret": expected,
        "standard_webhooks_secrets": [expected],
        "header": "X-Nango-Hmac-Sha256",
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_signing_secret_lists_every_key_during_rotation(
    make_env: Callable[..., dict[str, str]],
    database_url: str,
    provider_env: dict[str, str],
) -> None:
    env = make_env(HOOKSYNC_DATABASE_URL=database_url, HOOKSYNC_WEBHOOK_SIGNING_KEY="new,old")
    ctx = AppContext(load_settings(env))
    try:
        response = create_app(ctx).test_client().get("/webhooks/signing-secret", headers=AUTH)
    finally:
        ctx.close()

    new, old = ("whsec_" + base64.b64encode(key).decode() for key in (b"new", b"old"))
    assert response.json["standard_webhooks_secret"] == new  # the key that signs HMAC
    assert response.json["standard_webhooks_secrets"] == [new, old]


@pytest.mark.parametrize("path", [*ENDPOINTS, "/webhooks/signing-secret"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}])
def test_requires_the_api_key(client: FlaskClient, path: str, headers: dict[str, str]) -> None:
    response = client.get(path, headers=headers)

    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert "tasktracker" not in response.get_data(as_text=True)


def test_no_secret_in_any_body(client: FlaskClient, ctx: AppContext) -> None:
    created = client.post(
        "/connections",
        json={
            "provider_config_key": "tasktracker",
            "connection_id": "acme",
            "credentials": {"type": "API_KEY", "api_key": API_KEY},
        },
        headers=AUTH,
    )
    assert created.status_code == 201

    secrets = [
        WEBHOOK_SECRET,
        CRM_SECRET,
        API_KEY,
        ctx.settings.secret_key,
        ctx.settings.encryption_key,
        *ctx.settings.webhook_signing_keys,  # shown only as whsec_ + base64
    ]
    for path in [*ENDPOINTS, "/integrations/crm", "/webhooks/signing-secret", "/openapi.json"]:
        response = client.get(path, headers=AUTH)
        assert response.status_code == 200, path
        text = response.get_data(as_text=True)
        for secret in secrets:
            assert secret not in text, f"{path} leaks a secret"
