"""``GET /connections?search=`` (Nango's ``listConnections(connectionId, search)``)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.auth import AUTH


def _create(client: FlaskClient, connection_id: str) -> None:
    response = client.post(
        "/connections",
        json={
            "provider_config_key": "tasktracker",
            "connection_id": connection_id,
            "credentials": {"type": "NONE"},
        },
        headers=AUTH,
    )
    assert response.status_code == 201, response.json


def _ids(client: FlaskClient, query: str) -> list[str]:
    response = client.get(f"/connections?{query}", headers=AUTH)
    assert response.status_code == 200, response.json
    return [connection["connection_id"] for connection in response.json["connections"]]


def test_search_matches_part_of_the_connection_id_in_any_case(client: FlaskClient) -> None:
    for connection_id in ("Acme-EU", "acme-us", "globex", "100%_sure", "100x-sure"):
        _create(client, connection_id)
    assert _ids(client, "search=ACME") == ["Acme-EU", "acme-us"]
    assert _ids(client, "search=Me-U") == ["acme-us"]
    assert _ids(client, "search=nobody") == []
    # LIKE's wildcards are plain characters here: "%_" matches only the id holding them.
    assert _ids(client, "search=0%25_s") == ["100%_sure"]
    # Combined with the other filters (the client sends connectionId and search together).
    assert _ids(client, "search=acme&connectionId=acme-us") == ["acme-us"]
    assert _ids(client, "search=acme&provider_config_key=other") == []


def test_a_bad_search_is_400_naming_the_field_and_value(client: FlaskClient) -> None:
    for value in ("", "x" * 256):
        response = client.get("/connections", query_string={"search": value}, headers=AUTH)
        assert response.status_code == 400, response.json
        error = response.json["error"]
        assert error["field"] == "search"
        assert repr(value[:40]) in error["message"]
