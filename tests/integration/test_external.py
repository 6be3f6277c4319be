"""ExternalClient against a real HTTP server on 127.0.0.1 (retries, Retry-After, auth)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from config.integrations import AuthConfig
from tests.support.api import Api
from workers.external import (
    ExternalAPIError,
    ExternalAPIUnavailable,
    ExternalClient,
    parse_retry_after,
)

SECRET = "sk-live-0123456789"


@pytest.fixture
def delays() -> list[float]:
    return []


def make_client(
    api: Api, delays: list[float], auth: AuthConfig | None = None, **kw: Any
) -> ExternalClient:
    return ExternalClient(
        kw.pop("base_url", api.base_url + "/v1"),
        auth or AuthConfig("bearer"),
        kw.pop("credentials", {"type": "API_KEY", "api_key": SECRET}),
        sleep=delays.append,
        timeout=5,
        provider_key="tracker",
        **kw,
    )


def test_retries_5xx_then_succeeds_with_backoff(api: Api, delays: list[float]) -> None:
    api.reply("/v1/tasks", (503, {}, {"e": 1}), (502, {}, {"e": 2}), (200, {}, {"ok": True}))
    client = make_client(api, delays)
    response = client.request("GET", "/tasks", params={"limit": 5})
    assert response.json() == {"ok": True}
    assert len(api.requests) == 3
    assert len(delays) == 2 and 1 <= delays[0] <= 2 and 2 <= delays[1] <= 3
    assert api.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert api.requests[0]["query"] == {"limit": ["5"]}
    client.close()


def test_honours_retry_after_seconds_and_http_date(api: Api, delays: list[float]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    api.reply(
        "/v1/tasks",
        (429, {"Retry-After": "7"}, {}),
        (503, {"Retry-After": when}, {}),
        (200, {}, []),
    )
    make_client(api, delays).request("GET", "tasks")
    assert delays[0] == 7.0
    assert 27 <= delays[1] <= 30


def test_too_long_retry_after_gives_up_as_retriable(api: Api, delays: list[float]) -> None:
    api.reply("/v1/tasks", (429, {"Retry-After": "3600"}, {}))
    with pytest.raises(ExternalAPIUnavailable, match="retry after 3600 s") as caught:
        make_client(api, delays).request("GET", "/tasks")
    assert caught.value.status == 429 and delays == [] and len(api.requests) == 1


def test_404_fails_at_once_without_credentials_in_the_message(
    api: Api, delays: list[float]
) -> None:
    api.reply("/v1/tasks/9", (404, {}, {"error": f"no task for key {SECRET}"}))
    client = make_client(api, delays, auth=AuthConfig("query", "api_key"))
    with pytest.raises(ExternalAPIError) as caught:
        client.request("GET", "/tasks/9", params={"expand": "all"})
    message = str(caught.value)
    assert message.startswith("GET /v1/tasks/9 returned 404")
    assert SECRET not in message and "api_key=" not in message and "expand" not in message
    assert caught.value.status == 404
    assert len(api.requests) == 1 and delays == []
    assert api.requests[0]["query"]["api_key"] == [SECRET]


def test_exhausted_retries_are_retriable(api: Api, delays: list[float]) -> None:
    api.reply("/v1/tasks", (500, {}, {"error": "boom"}))
    with pytest.raises(ExternalAPIUnavailable, match=r"returned 500 after 3 attempt") as caught:
        make_client(api, delays, max_attempts=3).request("GET", "/tasks")
    assert caught.value.status == 500 and len(api.requests) == 3 and len(delays) == 2


def test_per_call_retries_override(api: Api, delays: list[float]) -> None:
    api.reply("/v1/tasks", (500, {}, {}))
    with pytest.raises(ExternalAPIUnavailable):
        make_client(api, delays).request("GET", "/tasks", retries=0)
    assert len(api.requests) == 1


def test_network_errors_retry_and_never_show_query_credentials(delays: list[float]) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as server:
        port = server.server_address[1]  # closed again: nothing listens there any more
    client = ExternalClient(
        f"http://127.0.0.1:{port}",
        AuthConfig("query", "key"),
        {"type": "API_KEY", "api_key": SECRET},
        sleep=delays.append,
        max_attempts=2,
        timeout=2,
    )
    with pytest.raises(ExternalAPIUnavailable, match="ConnectionError") as caught:
        client.request("GET", "/tasks")
    assert SECRET not in str(caught.value) and len(delays) == 1


BEARER = (AuthConfig("bearer"), {"type": "OAUTH2", "access_token": "tok"})
BASIC = (AuthConfig("basic"), {"type": "BASIC", "username": "u", "password": "p"})
HEADER = (AuthConfig("header", "X-Api-Key"), {"type": "API_KEY", "api_key": "k1"})
NONE = (AuthConfig("none"), {"type": "NONE"})


@pytest.mark.parametrize(
    ("auth", "credentials", "check"),
    [
        (*BEARER, ("authorization", "Bearer tok")),
        (*BASIC, ("authorization", "Basic dTpw")),
        (*HEADER, ("x-api-key", "k1")),
        (*NONE, ("authorization", None)),
    ],
)
def test_auth_types(
    api: Api, delays: list[float], auth: AuthConfig, credentials: dict[str, str], check: Any
) -> None:
    api.reply("/v1/me", (200, {}, {}))
    make_client(api, delays, auth=auth, credentials=credentials).request(
        "POST", "/me", json={"a": 1}
    )
    name, value = check
    assert api.requests[0]["headers"].get(name) == value
    assert json.loads(api.requests[0]["body"]) == {"a": 1}


@pytest.mark.parametrize("auth_and_credentials", [BEARER, HEADER], ids=["bearer", "header"])
def test_credentials_never_follow_a_redirect_to_another_host(
    api: Api, delays: list[float], auth_and_credentials: tuple[AuthConfig, dict[str, str]]
) -> None:
    elsewhere = Api()  # "localhost" is another host than "127.0.0.1" to a browser or requests
    try:
        other = elsewhere.base_url.replace("127.0.0.1", "localhost")
        api.reply("/v1/me", (302, {"Location": f"{other}/landing"}, {}))
        elsewhere.reply("/landing", (200, {}, {}))
        auth, credentials = auth_and_credentials
        make_client(api, delays, auth=auth, credentials=credentials).request("GET", "/me")
        assert [r["path"] for r in elsewhere.requests] == ["/landing"]
        sent = elsewhere.requests[0]["headers"]
        assert "authorization" not in sent and "x-api-key" not in sent
    finally:
        elsewhere.close()


def test_a_same_host_redirect_keeps_the_credential_header(api: Api, delays: list[float]) -> None:
    api.reply("/v1/me", (302, {"Location": "{base}/v1/moved"}, {}))
    api.reply("/v1/moved", (200, {}, {}))
    make_client(api, delays, auth=HEADER[0], credentials=HEADER[1]).request("GET", "/me")
    assert api.requests[1]["headers"].get("x-api-key") == "k1"


def test_missing_credential_for_auth_type_is_fatal(api: Api, delays: list[float]) -> None:
    client = make_client(api, delays, credentials={"type": "NONE"})
    with pytest.raises(ExternalAPIError, match="no api_key or access_token"):
        client.request("GET", "/me")
    assert api.requests == []


def test_missing_base_url_names_the_setting(delays: list[float]) -> None:
    client = ExternalClient(None, AuthConfig("none"), {}, provider_key="tracker")
    with pytest.raises(ExternalAPIError, match=r"providers\.tracker\.base_url"):
        client.request("GET", "/tasks")


def test_absolute_urls_on_other_hosts_are_refused(api: Api, delays: list[float]) -> None:
    with pytest.raises(ExternalAPIError, match="not on providers.tracker.base_url's host"):
        make_client(api, delays).request("GET", "http://evil.example/steal")


def test_paginate_follows_body_cursor(api: Api, delays: list[float]) -> None:
    api.reply(
        "/v1/tasks",
        (200, {}, {"data": {"items": [{"id": 1}, {"id": 2}]}, "meta": {"next": "c2"}}),
        (200, {}, {"data": {"items": [{"id": 3}]}, "meta": {"next": None}}),
    )
    pages = list(
        make_client(api, delays).paginate(
            "/tasks",
            {"q": "x"},
            response_path="data.items",
            cursor_path="meta.next",
            cursor_param="after",
            limit=2,
        )
    )
    assert pages == [[{"id": 1}, {"id": 2}], [{"id": 3}]]
    assert [r["query"] for r in api.requests] == [
        {"q": ["x"], "limit": ["2"]},
        {"q": ["x"], "limit": ["2"], "after": ["c2"]},
    ]


def test_paginate_follows_link_header_and_stops_on_empty_page(
    api: Api, delays: list[float]
) -> None:
    api.reply("/v1/issues", (200, {"Link": '<{base}/v1/issues2?page=2>; rel="next"'}, [{"id": 1}]))
    api.reply("/v1/issues2", (200, {"Link": '<{base}/v1/issues3>; rel="next"'}, [{"id": 2}]))
    api.reply("/v1/issues3", (200, {"Link": '<{base}/v1/issues4>; rel="next"'}, []))
    client = make_client(api, delays, auth=AuthConfig("query", "token"))
    pages = list(client.paginate("/issues", cursor_path=None))
    assert pages == [[{"id": 1}], [{"id": 2}]]
    assert [r["path"] for r in api.requests] == ["/v1/issues", "/v1/issues2", "/v1/issues3"]
    # The next URL keeps its own query and still gets the credentials.
    assert api.requests[1]["query"] == {"page": ["2"], "token": [SECRET]}


def test_paginate_needs_a_list(api: Api, delays: list[float]) -> None:
    api.reply("/v1/tasks", (200, {}, {"tasks": {"not": "a list"}}))
    with pytest.raises(ExternalAPIError, match="expected a list at 'tasks'"):
        list(make_client(api, delays).paginate("/tasks", response_path="tasks"))


def test_paginate_stops_when_the_cursor_repeats(api: Api, delays: list[float]) -> None:
    api.reply("/v1/tasks", (200, {}, {"items": [{"id": 1}], "next_cursor": "same"}))
    pages = list(make_client(api, delays).paginate("/tasks", response_path="items"))
    assert len(pages) == 2 and len(api.requests) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 May 2024 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
