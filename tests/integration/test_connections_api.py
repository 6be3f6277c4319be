"""The connections API (ingress/connections.py) on the bundled example integration."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from cache.context import AppContext
from cache.credentials import decrypt_credentials
from cache.db import session_scope
from cache.models import Connection, Record, Schedule, utcnow
from tests.support.auth import AUTH
from tests.support.queue import queued_messages

SECRET = "tt_live_secret-value-0042"


def new_connection(**overrides: Any) -> dict[str, Any]:
    body = {
        "provider_config_key": "tasktracker",
        "connection_id": "acme",
        "credentials": {"type": "API_KEY", "api_key": SECRET},
        "metadata": {"workspace_id": "w1"},
    }
    body.update(overrides)
    return body


def create(client: FlaskClient, **overrides: Any) -> Any:
    return client.post("/connections", json=new_connection(**overrides), headers=AUTH)


def assert_no_secret(response: Any) -> None:
    assert SECRET not in response.get_data(as_text=True)


def queued_tasks(ctx: AppContext) -> list[str]:
    return [message["task"] for message in queued_messages(ctx.redis)]


# --- create -----------------------------------------------------------------------------


def test_create_returns_201_without_credentials(client: FlaskClient, ctx: AppContext) -> None:
    before = utcnow()
    response = create(client)
    assert response.status_code == 201
    body = response.json
    assert set(body) == {
        "id",
        "connection_id",
        "provider_config_key",
        "provider",
        "created",
        "created_at",
        "updated_at",
        "metadata",
        "state",
        "state_error",
    }
    assert (body["state"], body["state_error"]) == ("active", None)
    assert body["connection_id"] == "acme" and body["provider_config_key"] == "tasktracker"
    assert body["provider"] == "tasktracker" and body["metadata"] == {"workspace_id": "w1"}
    assert body["created_at"] >= before.isoformat(timespec="microseconds")
    assert_no_secret(response)


def test_credentials_are_stored_encrypted(client: FlaskClient, ctx: AppContext) -> None:
    create(client)
    with session_scope(ctx.sessions) as session:
        stored = session.execute(text("SELECT credentials_encrypted FROM connections")).scalar()
        dump = json.dumps(
            [list(map(str, row)) for row in session.execute(text("SELECT * FROM connections"))]
        )
    assert SECRET not in dump and SECRET not in stored
    assert SECRET.encode() not in base64.urlsafe_b64decode(stored + "==")
    assert decrypt_credentials(ctx.settings.encryption_key, stored) == {
        "type": "API_KEY",
        "api_key": SECRET,
    }


def test_create_makes_schedules_and_nudges_the_scheduler(
    client: FlaskClient, ctx: AppContext
) -> None:
    connection_pk = create(client).json["id"]
    with session_scope(ctx.sessions) as session:
        schedules = session.scalars(
            select(Schedule).where(Schedule.connection_pk == connection_pk)
        ).all()
        assert [(s.sync_name, s.state) for s in schedules] == [("tasks", "STARTED")]
        assert schedules[0].next_run_at is not None  # auto_start: due at once
    assert queued_tasks(ctx) == ["hooksync.tick"]


def test_duplicate_is_409(client: FlaskClient, ctx: AppContext) -> None:
    assert create(client).status_code == 201
    response = create(client, metadata={"other": 1})
    assert response.status_code == 409
    assert response.json["error"]["code"] == "connection_exists"
    assert_no_secret(response)
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Connection)) == 1


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"provider_config_key": "hubspot"}, "provider_config_key", "'hubspot'"),
        ({"provider_config_key": None}, "provider_config_key", "provider_config_key: required"),
        ({"connection_id": ""}, "connection_id", "connection_id: required"),
        ({"connection_id": "x" * 300}, "connection_id", "at most 255"),
        (
            {"credentials": {"type": "API_KEY"}},
            "credentials.api_key",
            "credentials.api_key: required for type 'API_KEY'",
        ),
        (
            {"credentials": {"type": "BASIC", "username": "u", "password": 5}},
            "credentials.password",
            "credentials.password: must be a string",
        ),
        ({"credentials": None}, "credentials", "credentials: required"),
        ({"metadata": [1]}, "metadata", "metadata: must be a JSON object"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    client: FlaskClient, ctx: AppContext, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = create(client, **overrides)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert message in response.json["error"]["message"]
    assert_no_secret(response)
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Connection)) == 0


def test_non_json_body_is_400(client: FlaskClient) -> None:
    response = client.post("/connections", data="nope", headers=AUTH)
    assert response.status_code == 400
    assert "JSON object" in response.json["error"]["message"]


# --- read -------------------------------------------------------------------------------


def test_list_and_filter(client: FlaskClient) -> None:
    create(client, connection_id="a")
    create(client, connection_id="b", credentials={"type": "NONE"})
    everything = client.get("/connections", headers=AUTH)
    assert [c["connection_id"] for c in everything.json["connections"]] == ["a", "b"]
    assert_no_secret(everything)
    only_b = client.get("/connections?connectionId=b", headers=AUTH).json["connections"]
    assert [c["connection_id"] for c in only_b] == ["b"]
    by_key = client.get("/connections?provider_config_key=other", headers=AUTH)
    assert by_key.json == {"connections": []}


def test_get_one_shows_the_credential_type_only(client: FlaskClient) -> None:
    create(client)
    response = client.get("/connections/acme?provider_config_key=tasktracker", headers=AUTH)
    assert response.status_code == 200
    assert response.json["credentials"] == {"type": "API_KEY"}
    assert response.json["metadata"] == {"workspace_id": "w1"}
    assert_no_secret(response)
    # Nango's singular path works too, and the key may be omitted when unambiguous.
    assert client.get("/connection/acme", headers=AUTH).json["connection_id"] == "acme"


def test_unknown_connection_is_404(client: FlaskClient) -> None:
    response = client.get("/connections/ghost?provider_config_key=tasktracker", headers=AUTH)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_connection"
    assert "'ghost'" in response.json["error"]["message"]


# --- delete -----------------------------------------------------------------------------


def test_delete_cascades_records_and_schedules(client: FlaskClient, ctx: AppContext) -> None:
    pk = create(client).json["id"]
    now = utcnow()
    with session_scope(ctx.sessions) as session:
        session.add(
            Record(
                connection_pk=pk,
                model="Task",
                external_id="1",
                payload="{}",
                data_hash="0" * 64,
                first_seen_at=now,
                last_modified_at=now,
                mod_seq=1,
            )
        )
    response = client.delete("/connections/acme?provider_config_key=tasktracker", headers=AUTH)
    assert response.status_code == 204 and response.get_data() == b""
    with session_scope(ctx.sessions) as session:
        for model in (Connection, Record, Schedule):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    again = client.delete("/connections/acme?provider_config_key=tasktracker", headers=AUTH)
    assert again.status_code == 404


# --- metadata ---------------------------------------------------------------------------


def test_metadata_replace_and_merge(client: FlaskClient) -> None:
    create(client)
    body = {"connection_id": "acme", "provider_config_key": "tasktracker"}
    replaced = client.post(
        "/connections/metadata", json={**body, "metadata": {"a": 1, "b": 2}}, headers=AUTH
    )
    assert replaced.status_code == 200
    assert replaced.json == {**body, "metadata": {"a": 1, "b": 2}}
    merged = client.patch(
        "/connections/metadata", json={**body, "metadata": {"b": 3, "c": 4}}, headers=AUTH
    )
    assert merged.status_code == 200
    stored = client.get("/connections/acme", headers=AUTH).json["metadata"]
    assert stored == {"a": 1, "b": 3, "c": 4}  # workspace_id was replaced away


def test_metadata_for_several_connections(client: FlaskClient) -> None:
    create(client, connection_id="a")
    create(client, connection_id="b")
    response = client.patch(
        "/connection/metadata",
        json={
            "connection_id": ["a", "b"],
            "provider_config_key": "tasktracker",
            "metadata": {"x": 1},
        },
        headers=AUTH,
    )
    assert response.status_code == 200 and response.json["connection_id"] == ["a", "b"]
    for name in ("a", "b"):
        metadata = client.get(f"/connections/{name}", headers=AUTH).json["metadata"]
        assert metadata == {"workspace_id": "w1", "x": 1}


def test_metadata_errors(client: FlaskClient) -> None:
    create(client)
    unknown = client.post(
        "/connections/metadata",
        json={"connection_id": "ghost", "provider_config_key": "tasktracker", "metadata": {}},
        headers=AUTH,
    )
    assert unknown.status_code == 404
    not_object = client.post(
        "/connections/metadata",
        json={"connection_id": "acme", "provider_config_key": "tasktracker", "metadata": "x"},
        headers=AUTH,
    )
    assert not_object.status_code == 400 and not_object.json["error"]["field"] == "metadata"


# --- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/connections"),
        ("get", "/connections"),
        ("get", "/connections/acme"),
        ("delete", "/connections/acme"),
        ("post", "/connections/metadata"),
        ("patch", "/connections/metadata"),
    ],
)
def test_every_endpoint_needs_the_api_key(client: FlaskClient, method: str, path: str) -> None:
    response = getattr(client, method)(
        path, json=new_connection(), headers={"Authorization": "Bearer wrong"}
    )
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert_no_secret(response)
