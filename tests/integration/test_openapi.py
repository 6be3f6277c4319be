"""``GET /openapi.json`` (ingress/openapi.py): a valid OpenAPI 3.1 document of every route.

The route-coverage test compares the document with ``app.url_map`` both ways, so a route
added without documentation (or documentation left behind by a removed route) fails CI.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

HTTP_METHODS = ("get", "post", "put", "patch", "delete")

#: Served only for the official Nango clients, described in ``info.description``.
ALIAS_PREFIX = "/connection"


@pytest.fixture
def app(client: FlaskClient) -> Flask:
    """The app ``client`` (tests/integration/conftest.py) calls, for its ``url_map``."""
    return client.application


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return dict(response.json)


def to_openapi_path(rule: str) -> str:
    """``/webhook/<path:prefix>/<key>`` → ``/webhook/{prefix}/{key}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def is_alias(rule: str) -> bool:
    return rule == ALIAS_PREFIX or rule.startswith(ALIAS_PREFIX + "/")


def served_operations(app: Flask) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        # The console (/ui) serves HTML pages to a browser, not API operations.
        if rule.endpoint == "static" or rule.endpoint.startswith("console.") or is_alias(rule.rule):
            continue
        for method in rule.methods or ():
            if method.lower() in HTTP_METHODS:
                operations.add((to_openapi_path(rule.rule), method.lower()))
    return operations


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_is_served_without_the_api_key(client: FlaskClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/openapi.json", headers={"Authorization": "Bearer nope"}).status_code == 200


def test_every_route_is_documented_and_every_documented_route_exists(
    app: Flask, document: dict[str, Any]
) -> None:
    served = served_operations(app)
    documented = documented_operations(document)

    assert sorted(served - documented) == [], "routes missing from ingress/openapi.py"
    assert sorted(documented - served) == [], "documented routes the app does not serve"


def test_the_omitted_aliases_mirror_documented_routes(app: Flask, document: dict[str, Any]) -> None:
    aliases = {
        (to_openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if is_alias(rule.rule)
        for method in rule.methods or ()
        if method.lower() in HTTP_METHODS
    }
    assert aliases, "the /connection aliases are gone: drop the exclusion and the note"
    documented = documented_operations(document)
    for path, method in aliases:
        assert ("/connections" + path[len(ALIAS_PREFIX) :], method) in documented
    assert "/connection" in document["info"]["description"]


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))


def test_bearer_security_matches_what_the_app_enforces(
    app: Flask, client: FlaskClient, document: dict[str, Any]
) -> None:
    """Every operation not marked public answers 401 without the key; public ones do not."""
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <HOOKSYNC_SECRET_KEY>`",
    }
    assert document["security"] == [{"bearerAuth": []}]
    public = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            url = re.sub(r"\{[^}]+\}", "1", path)
            response = client.open(url, method=method.upper())
            if operation.get("security") == []:
                public.add(path)
                assert response.json.get("error", {}).get("code") != "unauthorized", path
            else:
                assert response.status_code == 401, (method, path)
                assert "401" in operation["responses"], (method, path)
    assert public == {
        "/webhook/{provider_config_key}",
        "/webhook/{prefix}/{provider_config_key}",
        "/healthz",
        "/openapi.json",
    }


def test_errors_use_the_one_error_shape(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["$ref"].startswith("#/components/responses/"), (method, path)
    for response in document["components"]["responses"].values():
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}


def test_path_parameters_are_declared(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
