"""``nango.paginate`` in each of Nango's styles, through the runtime and the real HTTP client,
against a real HTTP server on 127.0.0.1 that pages a list of records the way providers do:
it reads the parameters the client sent, so a wrong offset, page number, cursor or link
returns the wrong records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from config.integrations import AuthConfig, ProviderConfig
from tests.support.servers import QuietHandler, serving
from tests.unit.test_runtime_rules import FakeStore
from workers.execution import classify_error
from workers.external import ExternalAPIError
from workers.runtime import ConnectionInfo, NangoRuntime, ScriptUsageError

TOKEN = "sk-page-0123456789"
RECORDS = [{"id": i, "name": f"record {i}"} for i in range(1, 8)]


def ids(pages: list[list[dict[str, Any]]]) -> list[list[int]]:
    return [[record["id"] for record in page] for page in pages]


@dataclass
class Seen:
    """What the server received: one entry per request."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def queries(self) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in r["query"].items()} for r in self.requests]


def make_handler(seen: Seen) -> type[QuietHandler]:
    class Provider(QuietHandler):
        """Pages ``RECORDS`` in the style its path names (under ``/api``)."""

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
            )
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"error": "no token"})
            one = {name: values[0] for name, values in query.items()}
            reply = getattr(self, "_" + parts.path.removeprefix("/api/"), None)
            if reply is None:
                return self._reply(404, {"error": parts.path})
            reply(one, body)

        def _offset(self, query: dict[str, str], _body: Any) -> None:
            start, size = int(query["offset"]), int(query["limit"])
            self._reply(200, {"data": RECORDS[start : start + size]})

        def _pages(self, query: dict[str, str], _body: Any) -> None:
            page, size = int(query["page"]), int(query["per_page"])
            self._reply(200, RECORDS[(page - 1) * size : page * size])

        def _cursor(self, query: dict[str, str], _body: Any) -> None:
            after, size = int(query.get("after", 0)), int(query["limit"])
            chunk = [r for r in RECORDS if r["id"] > after][:size]
            more = chunk and chunk[-1]["id"] < RECORDS[-1]["id"]
            self._reply(
                200, {"items": chunk, "meta": {"next": str(chunk[-1]["id"]) if more else None}}
            )

        def _search(self, query: dict[str, str], body: Any) -> None:
            page = body["page"]
            after = int(page.get("cursor") or 0)
            matching = [
                r for r in RECORDS if r["id"] >= body["filter"]["min_id"] and r["id"] > after
            ]
            chunk = matching[: page["size"]]
            more = len(matching) > page["size"]
            self._reply(
                200, {"results": chunk, "next_page": {"cursor": chunk[-1]["id"] if more else None}}
            )

        def _issues(self, query: dict[str, str], _body: Any) -> None:
            page, size = int(query.get("page", 1)), int(query["per_page"])
            headers = {}
            if page * size < len(RECORDS):
                # Relative, as some providers send it; the client resolves it under base_url.
                headers["Link"] = f'</api/issues?page={page + 1}&per_page={size}>; rel="next"'
            self._reply(200, RECORDS[(page - 1) * size : page * size], headers)

        def _contacts(self, query: dict[str, str], _body: Any) -> None:
            start, size = int(query.get("from", 0)), int(query["count"])
            host = self.headers["Host"]
            nxt = f"http://{host}/api/contacts?from={start + size}&count={size}"
            more = start + size < len(RECORDS)
            self._reply(
                200,
                {
                    "contacts": RECORDS[start : start + size],
                    "paging": {"next": nxt if more else None},
                },
            )

        def _repeat(self, query: dict[str, str], _body: Any) -> None:
            self._reply(200, {"items": RECORDS[:1], "meta": {"next": "always-the-same"}})

        def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Provider


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def nango(seen: Seen) -> Iterator[NangoRuntime]:
    """A script's ``nango`` object whose provider is the paging server (real HTTP client)."""
    with serving(make_handler(seen)) as server:
        runtime = NangoRuntime(
            store=FakeStore(),
            connection=ConnectionInfo(
                pk=1,
                connection_id="conn-1",
                provider_config_key="shop",
                credentials={"type": "API_KEY", "api_key": TOKEN},
            ),
            provider=ProviderConfig(
                key="shop",
                base_url=f"http://127.0.0.1:{server.server_address[1]}/api",
                auth=AuthConfig("bearer"),
            ),
            run_id=1,
            sync_name="records",
            sync_type="INITIAL",
        )
        yield runtime
        runtime.close()


def test_offset_by_response_size(nango: NangoRuntime, seen: Seen) -> None:
    pages = list(
        nango.paginate(
            endpoint="/offset",
            paginate={
                "type": "offset",
                "offset_name_in_request": "offset",
                "limit_name_in_request": "limit",
                "limit": 3,
                "response_path": "data",
            },
        )
    )
    assert ids(pages) == [[1, 2, 3], [4, 5, 6], [7]]
    # The short third page is the last: no fourth request.
    assert [q["offset"] for q in seen.queries()] == ["0", "3", "6"]
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in seen.requests)


def test_page_numbers(nango: NangoRuntime, seen: Seen) -> None:
    pages = list(
        nango.paginate(
            endpoint="/pages",
            params={"sort": "id"},
            paginate={
                "type": "offset",
                "offset_name_in_request": "page",
                "offset_start_value": 1,
                "offset_calculation_method": "per-page",
                "limit_name_in_request": "per_page",
                "limit": 7,
            },
        )
    )
    # A full page cannot tell it is the last: the empty page after it ends the walk.
    assert ids(pages) == [[1, 2, 3, 4, 5, 6, 7]]
    assert seen.queries() == [
        {"sort": "id", "per_page": "7", "page": "1"},
        {"sort": "id", "per_page": "7", "page": "2"},
    ]


def test_cursor_in_query(nango: NangoRuntime, seen: Seen) -> None:
    pages = list(
        nango.paginate(
            endpoint="/cursor",
            paginate={
                "type": "cursor",
                "cursor_path_in_response": "meta.next",
                "cursor_name_in_request": "after",
                "limit_name_in_request": "limit",
                "limit": 4,
                "response_path": "items",
            },
        )
    )
    assert ids(pages) == [[1, 2, 3, 4], [5, 6, 7]]
    assert [q.get("after") for q in seen.queries()] == [None, "4"]


def test_cursor_in_a_post_body_with_nangos_single_dict_form(
    nango: NangoRuntime, seen: Seen
) -> None:
    checkpoints: list[Any] = []
    config = {
        "endpoint": "/search",
        "method": "POST",
        "data": {"filter": {"min_id": 2}},
        "paginate": {
            "type": "cursor",
            "cursor_path_in_response": "next_page.cursor",
            "cursor_name_in_request": "page.cursor",
            "limit_name_in_request": "page.size",
            "limit": 2,
            "response_path": "results",
            "on_page": lambda state: checkpoints.append(state["nextPageParam"]),
        },
    }
    pages = list(nango.paginate(config))
    assert ids(pages) == [[2, 3], [4, 5], [6, 7]]
    assert [r["method"] for r in seen.requests] == ["POST"] * 3
    assert [r["body"] for r in seen.requests] == [
        {"filter": {"min_id": 2}, "page": {"size": 2}},
        {"filter": {"min_id": 2}, "page": {"size": 2, "cursor": 3}},
        {"filter": {"min_id": 2}, "page": {"size": 2, "cursor": 5}},
    ]
    assert checkpoints == [3, 5, None]


def test_link_header(nango: NangoRuntime, seen: Seen) -> None:
    pages = list(
        nango.paginate(
            endpoint="/issues",
            params={"per_page": 3},
            paginate={"type": "link", "link_rel_in_response_header": "next"},
        )
    )
    assert ids(pages) == [[1, 2, 3], [4, 5, 6], [7]]
    assert [r["path"] for r in seen.requests] == ["/api/issues"] * 3
    assert seen.queries()[1:] == [{"page": "2", "per_page": "3"}, {"page": "3", "per_page": "3"}]


def test_link_in_body(nango: NangoRuntime, seen: Seen) -> None:
    pages = list(
        nango.paginate(
            endpoint="/contacts",
            params={"count": 5},
            paginate={
                "type": "link",
                "link_path_in_response_body": "paging.next",
                "response_path": "contacts",
            },
        )
    )
    assert ids(pages) == [[1, 2, 3, 4, 5], [6, 7]]
    assert seen.queries() == [{"count": "5"}, {"from": "5", "count": "5"}]


def test_hooksync_keywords_still_page_by_body_cursor(nango: NangoRuntime, seen: Seen) -> None:
    pages = list(
        nango.paginate(
            "/cursor",
            response_path="items",
            cursor_path="meta.next",
            cursor_param="after",
            limit=5,
        )
    )
    assert ids(pages) == [[1, 2, 3, 4, 5], [6, 7]]


def test_a_repeated_cursor_stops_with_a_warning(
    nango: NangoRuntime, seen: Seen, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {
        "type": "cursor",
        "cursor_path_in_response": "meta.next",
        "cursor_name_in_request": "after",
        "response_path": "items",
    }
    with caplog.at_level(logging.WARNING, logger="workers.external"):
        pages = list(nango.paginate(endpoint="/repeat", paginate=settings))
    assert len(pages) == 2 and len(seen.requests) == 2
    assert "repeated a page cursor" in caplog.text


def test_bad_settings_fail_the_script_as_a_usage_error_before_any_request(
    nango: NangoRuntime, seen: Seen
) -> None:
    with pytest.raises(
        ScriptUsageError, match="paginate.offset_name_in_request is required"
    ) as caught:
        next(nango.paginate(endpoint="/offset", paginate={"type": "offset", "limit": 3}))
    assert classify_error(caught.value)[0] == "script_usage_error"
    assert seen.requests == []


def test_a_response_without_the_list_names_the_path(nango: NangoRuntime, seen: Seen) -> None:
    settings = {"type": "offset", "offset_name_in_request": "offset", "response_path": "rows"}
    with pytest.raises(
        ExternalAPIError, match=r"GET /api/offset: expected a list at 'rows', got NoneType"
    ):
        next(nango.paginate(endpoint="/offset", params={"limit": 2}, paginate=settings))
