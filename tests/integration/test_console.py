"""The operator console under /ui (ingress/console): login, CSRF, and A's pages
(Integrations › Endpoints, Connections, Settings), driven through the Flask test client on
a real database and Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cache.context import AppContext
from cache.db import read_scope
from cache.models import SyncRun
from ingress.app import create_app
from ingress.console import connections as console_connections
from ingress.console.charts import duration_rows, durations_chart, webhook_chart, webhook_series
from ingress.webhooks import build_event
from tests.support.auth import API_KEY, AUTH
from tests.support.integrations import write_integrations
from tests.support.rows import load_run, schedule_of, trigger_run
from tests.support.tasktracker import TASKTRACKER_ENV
from workers.app_signatures import whsec_secret
from workers.events import route_event
from workers.execution import execute_run
from workers.rejections import KEY_PREFIX

KEY = "tasktracker"

#: Three syncs: webhooks for two event types, polling only, and every event type (``*``).
NANGO_YAML = """
integrations:
  tasktracker:
    syncs:
      tasks:
        description: Tasks, by webhook and poll.
        runs: every 1h
        sync_type: incremental
        output: Task
        endpoint: GET /tasks
        webhook-subscriptions: [task.created, task.updated]
      projects:
        runs: every 1 day
        output: Project
        endpoint: GET /projects
        track_deletes: true
      firehose:
        runs: every 1 day
        auto_start: false
        output: Activity
        webhook-subscriptions: ['*']
models:
  Task: {id: string, title: string, updated_at: string}
  Project: {id: string, name: string}
  Activity: {id: string}
providers:
  tasktracker:
    base_url: ${TASKTRACKER_BASE_URL:-http://127.0.0.1:8080}
    webhook_secret: ${TASKTRACKER_WEBHOOK_SECRET}
    auth: {type: bearer}
    webhook:
      signature:
        {scheme: hmac-sha256, header: X-Tracker-Signature, encoding: hex, prefix: "sha256="}
      event_type: {header: X-Tracker-Event}
      connection: {path: workspace_id, match: metadata.workspace_id}
      delivery_id: {header: X-Tracker-Delivery}
"""

#: ``tasks`` sets a merging strategy and saves two tasks; the others do nothing.
SCRIPT = """
def fetch_data(nango):
    if nango.sync_name == "tasks":
        nango.set_merging_strategy({"strategy": "newest_wins", "field": "updated_at"}, "Task")
        nango.batch_save(
            [
                {"id": "1", "title": "one", "updated_at": "2024-01-01T00:00:00Z"},
                {"id": "2", "title": "two", "updated_at": "2024-01-01T00:00:00Z"},
            ],
            "Task",
        )


def on_webhook_payload_received(nango, payload):
    pass
"""

#: A credential value that must never reach a page.
SECRET_CREDENTIAL = "sk-live-DO-NOT-SHOW-4242"

#: The app URL of the test settings: a password and a query token that must not be shown.
APP_URL = "https://hook-user:hook-password@app.example/hooks?token=query-secret"

PAGES = ["/ui/integrations", "/ui/connections", "/ui/webhooks", "/ui/notifications", "/ui/settings"]


@pytest.fixture
def make_env(make_env: Callable[..., dict[str, str]], tmp_path: Path) -> Callable[..., Any]:
    """The conftest environment, on the three-sync integration and with an app URL."""
    directory = write_integrations(tmp_path / "integrations", NANGO_YAML, SCRIPT)

    def build(**overrides: str) -> dict[str, str]:
        return make_env(
            **{
                "HOOKSYNC_INTEGRATIONS_DIR": str(directory),
                "HOOKSYNC_APP_WEBHOOK_URLS": APP_URL,
                **overrides,
            }
        )

    return build


# --- helpers ----------------------------------------------------------------------------


def token_of(html: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1).decode()


def log_in(client: FlaskClient, key: str = API_KEY, **form: str) -> Any:
    token = token_of(client.get("/ui/login").data)
    return client.post("/ui/login", data={"api_key": key, "csrf_token": token, **form})


def page_token(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.data
    return token_of(response.data)


def connect(client: FlaskClient, connection_id: str = "acme", **extra: Any) -> int:
    response = client.post(
        "/connections",
        json={
            "provider_config_key": KEY,
            "connection_id": connection_id,
            "credentials": {"type": "API_KEY", "api_key": SECRET_CREDENTIAL},
            **extra,
        },
        headers=AUTH,
    )
    assert response.status_code == 201, response.json
    return int(response.json["id"])


def connection_page(client: FlaskClient, connection_id: str = "acme") -> str:
    response = client.get(
        "/ui/connection", query_string={"integration": KEY, "connection_id": connection_id}
    )
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


def act(client: FlaskClient, action: str, sync: str = "tasks", **form: str) -> Any:
    token = token_of(connection_page(client).encode())
    return client.post(
        f"/ui/connection/{action}",
        data={
            "csrf_token": token,
            "integration": KEY,
            "connection_id": "acme",
            "sync": sync,
            **form,
        },
    )


def run_count(ctx: AppContext) -> int:
    with read_scope(ctx.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(SyncRun)) or 0)


@pytest.fixture
def console(client: FlaskClient) -> FlaskClient:
    """The test client, logged in to the console."""
    response = log_in(client)
    assert response.status_code == 302
    return client


# --- login, logout, session ------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_redirects_to_login_without_a_session(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ui/login?next=")
    assert path in response.headers["Location"]


def test_right_key_logs_in_and_follows_next(client: FlaskClient) -> None:
    response = log_in(client, next="/ui/settings")

    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/settings"
    assert client.get("/ui/settings").status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/ui", "//evil.example/ui", "/healthz", "/ui\\..\\x"]
)
def test_next_goes_only_to_console_paths(client: FlaskClient, target: str) -> None:
    response = log_in(client, next=target)

    assert response.headers["Location"] == "/ui/"


def test_wrong_key_is_refused_with_401_and_not_echoed(client: FlaskClient) -> None:
    response = log_in(client, key="guessed-key-<b>123")

    assert response.status_code == 401
    body = response.get_data(as_text=True)
    assert "Wrong API key" in body
    assert "guessed-key" not in body
    assert client.get("/ui/integrations").status_code == 302


def test_session_cookie_is_httponly_lax_and_secure_over_https(client: FlaskClient) -> None:
    token = token_of(client.get("/ui/login", base_url="https://localhost").data)
    https = client.post(
        "/ui/login",
        data={"api_key": API_KEY, "csrf_token": token},
        base_url="https://localhost",
    )
    cookie = https.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    assert "Path=/ui" in cookie
    assert API_KEY not in cookie

    plain = client.get("/ui/login", base_url="http://other")
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_a_session_is_valid_on_every_app_built_from_the_same_key(
    console: FlaskClient, ctx: AppContext
) -> None:
    # Another gunicorn worker (or machine) derives the same session key from the API key.
    cookie = console.get_cookie("hooksync_console", path="/ui")
    assert cookie is not None
    other = create_app(ctx).test_client()
    other.set_cookie("hooksync_console", cookie.value, path="/ui")

    assert other.get("/ui/settings").status_code == 200


def test_logout_ends_the_session(console: FlaskClient) -> None:
    token = page_token(console, "/ui/settings")

    response = console.post("/ui/logout", data={"csrf_token": token})

    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/login"
    assert console.get("/ui/settings").status_code == 302


def test_logout_without_the_token_is_refused(console: FlaskClient) -> None:
    response = console.post("/ui/logout", data={})

    assert response.status_code == 403
    assert console.get("/ui/settings").status_code == 200


# --- CSRF --------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_post_without_the_right_token_is_refused_and_changes_nothing(
    console: FlaskClient, ctx: AppContext, token: str | None
) -> None:
    pk = connect(console)
    runs = run_count(ctx)
    form = {"integration": KEY, "connection_id": "acme", "sync": "tasks"}
    if token is not None:
        form["csrf_token"] = token

    for action in ("pause", "trigger"):
        response = console.post(f"/ui/connection/{action}", data={**form, "reset": "on"})

        assert response.status_code == 403
        assert "reload the page" in response.get_data(as_text=True).lower()
    assert schedule_of(ctx, pk, "tasks").state == "STARTED"
    assert run_count(ctx) == runs


def test_the_login_form_needs_its_token_too(client: FlaskClient) -> None:
    client.get("/ui/login")

    response = client.post("/ui/login", data={"api_key": API_KEY})

    assert response.status_code == 403
    assert client.get("/ui/settings").status_code == 302


# --- pages -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_its_title_and_the_nav(console: FlaskClient, path: str) -> None:
    response = console.get(path)

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<title>" in html and "· hooksync</title>" in html
    for label in ("Integrations", "Connections", "Webhooks", "Notifications", "Settings"):
        assert f">{label}</a>" in html
    assert "Log out" in html


def test_integrations_lists_each_with_its_subscriptions(console: FlaskClient) -> None:
    connect(console)

    html = console.get("/ui/integrations").get_data(as_text=True)

    assert 'href="/ui/integrations/tasktracker"' in html
    assert "<code>task.created</code>" in html and "<code>*</code>" in html
    assert "tasks, projects, firehose" in html


def test_endpoints_tab_shows_each_syncs_subscriptions_or_polling_only(
    console: FlaskClient,
) -> None:
    response = console.get("/ui/integrations/tasktracker/endpoints")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    sections = dict(
        re.findall(r'<section class="card sync" id="sync-(\w+)">(.*?)</section>', html, re.S)
    )
    assert set(sections) == {"tasks", "projects", "firehose"}
    assert "<code>task.created</code>, <code>task.updated</code>" in sections["tasks"]
    assert "no webhooks — polling only" in sections["projects"]
    assert "no webhooks" not in sections["tasks"]
    assert "every event type" in sections["firehose"]
    assert "every event type" not in sections["tasks"]
    assert "<code>GET /tasks</code>" in sections["tasks"]
    assert "every 1h" in sections["tasks"] and "incremental" in sections["tasks"]
    assert re.search(r"track_deletes</dt><dd>yes", sections["projects"])
    assert re.search(r"auto_start</dt><dd>no", sections["firehose"])
    assert "Task: default (override)" in sections["tasks"]


def test_endpoints_tab_shows_the_merging_strategy_the_last_run_used(
    console: FlaskClient, ctx: AppContext
) -> None:
    pk = connect(console)
    run_id = trigger_run(ctx, pk, "tasks")
    execute_run(ctx, run_id)
    assert load_run(ctx, run_id).state == "success"

    html = console.get("/ui/integrations/tasktracker/endpoints").get_data(as_text=True)

    assert "Task: newest_wins (field: updated_at)" in html
    assert "Project: default (override)" in html


def test_an_unknown_integration_is_404(console: FlaskClient) -> None:
    assert console.get("/ui/integrations/nope/endpoints").status_code == 404


def test_connections_lists_connections_by_integration(console: FlaskClient) -> None:
    connect(console, "acme")
    connect(console, "globex")

    html = console.get("/ui/connections", query_string={"integration": KEY}).get_data(as_text=True)

    assert "connection_id=acme" in html and "connection_id=globex" in html
    assert 'class="badge started"' in html


def test_connections_list_is_bounded_and_says_so(
    console: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(console, "acme")
    connect(console, "globex")
    monkeypatch.setattr(console_connections, "MAX_LISTED", 1)

    html = console.get("/ui/connections").get_data(as_text=True)

    assert "connection_id=acme" in html and "connection_id=globex" not in html
    assert "Showing the first 1 connections" in html


def test_connection_page_shows_states_last_run_and_record_counts(
    console: FlaskClient, ctx: AppContext
) -> None:
    pk = connect(console)
    run_id = trigger_run(ctx, pk, "tasks")
    execute_run(ctx, run_id)

    html = connection_page(console)

    row = re.search(r'<tr id="sync-tasks">(.*?)</tr>', html, re.S)
    assert row, html
    assert "Task: 2" in row.group(1)
    assert "Task: 2 added, 0 updated, 0 deleted" in row.group(1)
    assert 'class="badge success"' in row.group(1)
    projects = re.search(r'<tr id="sync-projects">(.*?)</tr>', html, re.S)
    assert projects and "Project: 0" in projects.group(1) and "never" in projects.group(1)


def test_pause_start_and_trigger_forms_change_the_schedule_and_runs(
    console: FlaskClient, ctx: AppContext
) -> None:
    pk = connect(console)

    paused = act(console, "pause")
    assert paused.status_code == 302
    assert schedule_of(ctx, pk, "tasks").state == "PAUSED"
    assert 'class="badge state paused"' in connection_page(console)
    assert schedule_of(ctx, pk, "projects").state == "STARTED"

    assert act(console, "start").status_code == 302
    assert schedule_of(ctx, pk, "tasks").state == "STARTED"

    before = run_count(ctx)
    assert act(console, "trigger", reset="on").status_code == 302
    with read_scope(ctx.sessions) as session:
        newest = session.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(1)).one()
        assert run_count(ctx) == before + 1
        assert (newest.sync_name, newest.kind, newest.options) == (
            "tasks",
            "poll",
            {"reset": True},
        )
    assert "Triggered a full (reset) run of tasks." in connection_page(console)


def test_an_action_on_an_unknown_sync_or_connection_is_404(console: FlaskClient) -> None:
    connect(console)
    token = page_token(console, "/ui/connections")
    form = {"csrf_token": token, "integration": KEY, "connection_id": "acme", "sync": "tasks"}

    assert console.post("/ui/connection/pause", data={**form, "sync": "nope"}).status_code == 404
    assert (
        console.post("/ui/connection/pause", data={**form, "connection_id": "x"}).status_code == 404
    )
    assert console.post("/ui/connection/delete", data=form).status_code == 404


def test_metadata_is_escaped_and_credentials_never_shown(
    console: FlaskClient, ctx: AppContext
) -> None:
    connect(console, metadata={"note": "<script>alert('x')</script>", "workspace_id": "w1"})

    pages = [connection_page(console)] + [
        console.get(path).get_data(as_text=True)
        for path in [
            *PAGES,
            "/ui/integrations/tasktracker",
            "/ui/integrations/tasktracker/endpoints",
        ]
    ]

    assert "&lt;script&gt;alert(" in pages[0]
    assert "<script>alert(" not in pages[0]
    for html in pages:
        assert SECRET_CREDENTIAL not in html
        assert ctx.settings.encryption_key not in html
        assert API_KEY not in html


def test_settings_shows_the_whsec_secret_redacted_urls_and_version(
    console: FlaskClient, ctx: AppContext
) -> None:
    response = console.get("/ui/settings")

    html = response.get_data(as_text=True)
    assert whsec_secret("test-signing-key") in html
    assert response.json is None and response.headers["Cache-Control"] == "no-store"
    assert "https://app.example/hooks?…" in html
    assert "hook-password" not in html and "query-secret" not in html
    assert re.search(r'class="version-number">[^<]+<', html)
    assert "navigator.clipboard.writeText" in html


# --- charts (placed on the Webhooks page) -----------------------------------------------


def tracker_event(delivery: str) -> dict[str, Any]:
    headers = {"X-Tracker-Event": "task.created", "X-Tracker-Delivery": delivery}
    raw = json.dumps({"workspace_id": "nobody"}).encode()
    return build_event(
        KEY, method="POST", url=f"http://h/webhook/{KEY}", headers=headers.items(), raw=raw
    )


def signed(body: bytes) -> dict[str, str]:
    secret = TASKTRACKER_ENV["TASKTRACKER_WEBHOOK_SECRET"].encode()
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {
        "X-Tracker-Signature": f"sha256={digest}",
        "X-Tracker-Event": "task.created",
        "Content-Type": "application/json",
    }


def door_count(ctx: AppContext) -> int:
    return sum(int(ctx.redis.get(key) or 0) for key in ctx.redis.scan_iter(f"{KEY_PREFIX}*"))


def test_webhook_chart_counts_accepted_duplicates_and_door_rejections(
    client: FlaskClient, ctx: AppContext
) -> None:
    route_event(ctx, tracker_event("d-1"))  # stored, unrouted: accepted
    route_event(ctx, tracker_event("d-1"))  # the same delivery again: duplicate
    body = b'{"workspace_id": "w1"}'
    refused = client.post(f"/webhook/{KEY}", data=body, headers=signed(b"other body"))
    assert refused.status_code == 401
    assert door_count(ctx) == 1
    accepted = client.post(f"/webhook/{KEY}", data=body, headers=signed(body))
    assert accepted.status_code == 202
    assert door_count(ctx) == 1  # the accepted path counts nothing

    labels, ok, rejected, duplicate = webhook_series(ctx, datetime.now(UTC))

    assert len(labels) == len(ok) == 60
    assert (sum(ok), sum(rejected), sum(duplicate)) == (1, 1, 1)
    svg = ET.fromstring(str(webhook_chart(ctx)))
    title = svg.find("{http://www.w3.org/2000/svg}title")
    assert title is not None and title.text == (
        "Webhooks per minute: 1 accepted, 1 rejected, 1 duplicate"
    )


def test_durations_chart_shows_p50_and_p95_per_sync_of_the_last_hour(
    client: FlaskClient, ctx: AppContext
) -> None:
    pk = connect(client)
    for _ in range(2):
        execute_run(ctx, trigger_run(ctx, pk, "tasks"))

    rows = duration_rows(ctx, datetime.now(UTC))

    assert [(label, runs) for label, _, _, runs in rows] == [(f"{KEY}/tasks", 2)]
    _, p50, p95, _ = rows[0]
    assert 0 <= p50 <= p95
    svg = ET.fromstring(str(durations_chart(ctx)))
    (sync,) = svg.findall("{http://www.w3.org/2000/svg}g[@class='sync']")
    assert sync.get("data-label") == f"{KEY}/tasks" and sync.get("data-runs") == "2"
