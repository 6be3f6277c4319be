"""``GET /scripts/config?format=`` (Nango's ``getScriptsConfig(format)``)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.auth import AUTH


def test_nango_is_the_default_format(client: FlaskClient) -> None:
    default = client.get("/scripts/config", headers=AUTH)
    nango = client.get("/scripts/config?format=nango", headers=AUTH)
    assert default.status_code == nango.status_code == 200
    assert default.json == nango.json
    assert [entry["providerConfigKey"] for entry in nango.json] == ["tasktracker"]


def test_openai_lists_no_function_since_no_action_runs(client: FlaskClient) -> None:
    response = client.get("/scripts/config?format=openai", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json == {"data": []}


def test_an_unknown_format_is_400_naming_the_field_and_value(client: FlaskClient) -> None:
    response = client.get("/scripts/config?format=yaml", headers=AUTH)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["field"] == "format"
    assert "'yaml'" in error["message"] and "nango" in error["message"]
