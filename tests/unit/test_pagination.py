"""The page walk of each pagination style (workers/pagination.py): pure, no HTTP.

``walk`` plays the part of ``ExternalClient.paginate``: it hands each request's scripted
response to the walk and collects the requests the walk asks for.
"""

from __future__ import annotations

from typing import Any

import pytest

from workers.pagination import (
    PageRequest,
    PageWalk,
    Pagination,
    PaginationConfigError,
    UnexpectedPage,
    parse_pagination,
    resolve_link,
    select_pagination,
)

BASE = "https://api.example.com/v2"


def walk(
    settings: dict[str, Any] | Pagination,
    responses: list[tuple[Any, dict[str, str]]],
    **kw: Any,
) -> tuple[list[PageRequest], PageWalk]:
    """The requests a walk makes when the API answers ``responses`` (body, links) in order."""
    config = settings if isinstance(settings, Pagination) else parse_pagination(settings)
    kw.setdefault("endpoint", "/items")
    kw.setdefault("base_url", BASE)
    page_walk = PageWalk(config, **kw)
    requests: list[PageRequest] = []
    request: PageRequest | None = page_walk.first()
    for body, links in responses:
        assert request is not None, f"the walk stopped early, after {requests}"
        requests.append(request)
        request = page_walk.after(request, body, links, page_walk.items(body))
    assert request is None, f"the walk wanted one more page: {request}"
    return requests, page_walk


def rows(*ids: int) -> list[dict[str, int]]:
    return [{"id": i} for i in ids]


# -- offset -------------------------------------------------------------------------------


def test_offset_by_response_size_adds_each_page_length_and_stops_at_an_empty_page() -> None:
    settings = {"type": "offset", "offset_name_in_request": "offset", "response_path": "data"}
    requests, _ = walk(
        settings,
        [({"data": rows(1, 2, 3)}, {}), ({"data": rows(4, 5)}, {}), ({"data": []}, {})],
        params={"q": "x"},
    )
    assert [r.params for r in requests] == [
        {"q": "x", "offset": "0"},
        {"q": "x", "offset": "3"},
        {"q": "x", "offset": "5"},
    ]
    assert [r.page_param for r in requests] == [0, 3, 5]


def test_offset_stops_at_a_page_shorter_than_the_limit() -> None:
    settings = {
        "type": "offset",
        "offset_name_in_request": "$skip",
        "limit_name_in_request": "$top",
        "limit": "2",
    }
    requests, _ = walk(settings, [(rows(1, 2), {}), (rows(3), {})])
    assert [r.params for r in requests] == [
        {"$top": "2", "$skip": "0"},
        {"$top": "2", "$skip": "2"},
    ]


def test_page_numbers_are_offset_per_page_from_the_start_value() -> None:
    settings = {
        "type": "offset",
        "offset_name_in_request": "page",
        "offset_start_value": 1,
        "offset_calculation_method": "per-page",
        "limit_name_in_request": "per_page",
        "limit": 2,
    }
    requests, _ = walk(settings, [(rows(1, 2), {}), (rows(3, 4), {}), ([], {})])
    assert [r.params for r in requests] == [
        {"per_page": 2, "page": "1"},
        {"per_page": 2, "page": "2"},
        {"per_page": 2, "page": "3"},
    ]


def test_offset_without_limit_name_uses_the_limit_only_to_spot_the_last_page() -> None:
    # Xero's page size is fixed: Nango scripts set ``limit`` without a parameter name.
    settings = {"type": "offset", "offset_name_in_request": "page", "limit": 3}
    requests, _ = walk(settings, [(rows(1, 2, 3), {}), (rows(4), {})])
    assert [r.params for r in requests] == [{"page": "0"}, {"page": "3"}]


# -- cursor -------------------------------------------------------------------------------


CURSOR = {
    "type": "cursor",
    "cursor_path_in_response": "meta.next",
    "cursor_name_in_request": "after",
    "response_path": "items",
}


def test_cursor_in_query_is_sent_until_the_response_has_none() -> None:
    requests, _ = walk(
        {**CURSOR, "limit": 2, "limit_name_in_request": "limit"},
        [
            ({"items": rows(1, 2), "meta": {"next": "c2"}}, {}),
            ({"items": rows(3, 4), "meta": {"next": 17}}, {}),
            ({"items": rows(5), "meta": {}}, {}),
        ],
        params={"q": "x"},
    )
    assert [r.params for r in requests] == [
        {"q": "x", "limit": 2},
        {"q": "x", "limit": 2, "after": "c2"},
        {"q": "x", "limit": 2, "after": 17},
    ]
    assert all(r.body is None for r in requests)


@pytest.mark.parametrize("last", [None, "", "   ", False])
def test_cursor_null_blank_or_false_ends_the_walk(last: Any) -> None:
    requests, _ = walk(
        CURSOR,
        [
            ({"items": rows(1), "meta": {"next": " c2 "}}, {}),
            ({"items": rows(2), "meta": {"next": last}}, {}),
        ],
    )
    assert requests[1].params == {"after": "c2"}  # stripped, as Nango does


def test_cursor_short_page_is_not_the_end() -> None:
    # A cursor API may return fewer rows than asked (filtered pages): only the cursor says.
    requests, _ = walk(
        {**CURSOR, "limit": 5, "limit_name_in_request": "limit"},
        [({"items": rows(1), "meta": {"next": "c2"}}, {}), ({"items": rows(2), "meta": {}}, {})],
    )
    assert len(requests) == 2


def test_cursor_that_is_an_object_is_a_clear_error() -> None:
    config = parse_pagination({**CURSOR, "cursor_path_in_response": "meta"})
    page_walk = PageWalk(config, endpoint="/items")
    body = {"items": rows(1), "meta": {"next": "c2"}}
    with pytest.raises(UnexpectedPage, match="cursor at 'meta' is a dict"):
        page_walk.after(page_walk.first(), body, {}, page_walk.items(body))


def test_a_repeated_cursor_stops_the_walk_and_says_so() -> None:
    requests, page_walk = walk(
        CURSOR,
        [
            ({"items": rows(1), "meta": {"next": "same"}}, {}),
            ({"items": rows(1), "meta": {"next": "same"}}, {}),
        ],
    )
    assert len(requests) == 2 and page_walk.repeated


def test_cursor_in_a_post_body_nests_dotted_names_and_keeps_the_filters() -> None:
    settings = {
        "type": "cursor",
        "cursor_path_in_response": "pages.next.starting_after",
        "cursor_name_in_request": "pagination.starting_after",
        "limit_name_in_request": "pagination.per_page",
        "limit": 50,
        "response_path": "data",
    }
    requests, _ = walk(
        settings,
        [
            ({"data": rows(1), "pages": {"next": {"starting_after": "c2"}}}, {}),
            ({"data": rows(2), "pages": {"next": None}}, {}),
        ],
        method="POST",
        data={"query": {"field": "open"}, "pagination": {"sort": "asc"}},
        params={"v": "1"},
    )
    assert [r.body for r in requests] == [
        {"query": {"field": "open"}, "pagination": {"sort": "asc", "per_page": 50}},
        {
            "query": {"field": "open"},
            "pagination": {"sort": "asc", "per_page": 50, "starting_after": "c2"},
        },
    ]
    assert [r.params for r in requests] == [{"v": "1"}, {"v": "1"}]


def test_in_body_overrides_the_method() -> None:
    into_query, _ = walk(
        {**CURSOR, "in_body": False},
        [({"items": rows(1), "meta": {"next": "c2"}}, {}), ({"items": rows(2)}, {})],
        method="POST",
        data={"filter": 1},
    )
    assert into_query[1].params == {"after": "c2"} and into_query[1].body == {"filter": 1}
    into_body, _ = walk(
        {**CURSOR, "in_body": True},
        [({"items": rows(1), "meta": {"next": "c2"}}, {}), ({"items": rows(2)}, {})],
    )
    assert into_body[0].body == {} and into_body[1].body == {"after": "c2"}
    assert into_body[1].params == {}


def test_offset_in_a_body_is_a_number() -> None:
    requests, _ = walk(
        {"type": "offset", "offset_name_in_request": "start"},
        [(rows(1, 2), {}), ([], {})],
        method="PUT",
    )
    assert [r.body for r in requests] == [{"start": 0}, {"start": 2}]


def test_a_body_that_is_not_a_dict_cannot_carry_the_parameters() -> None:
    with pytest.raises(PaginationConfigError, match=r"data must be a dict, got list \[1\]"):
        PageWalk(parse_pagination(CURSOR), method="POST", endpoint="/x", data=[1])


# -- link ---------------------------------------------------------------------------------


def test_link_header_is_followed_without_the_first_params() -> None:
    settings = {"type": "link", "link_rel_in_response_header": "next"}
    requests, _ = walk(
        settings,
        [
            (rows(1), {"next": f"{BASE}/items?page=2&per_page=1"}),
            (rows(2), {"next": "/v2/items?page=3&per_page=1", "last": "x"}),
            (rows(3), {"last": "x"}),
        ],
        params={"per_page": 1},
    )
    assert [(r.endpoint, r.params) for r in requests] == [
        ("/items", {"per_page": 1}),
        (f"{BASE}/items?page=2&per_page=1", {}),
        (f"{BASE}/items?page=3&per_page=1", {}),
    ]
    assert requests[1].page_param == f"{BASE}/items?page=2&per_page=1"


def test_link_in_body_and_a_repeated_link_stops() -> None:
    settings = {
        "type": "link",
        "link_path_in_response_body": "paging.next",
        "response_path": "results",
    }
    requests, page_walk = walk(
        settings,
        [
            ({"results": rows(1), "paging": {"next": "items?after=2"}}, {}),
            ({"results": rows(2), "paging": {"next": "items?after=2"}}, {}),
        ],
    )
    assert [r.endpoint for r in requests] == ["/items", f"{BASE}/items?after=2"]
    assert page_walk.repeated


def test_link_stops_when_the_body_has_no_link() -> None:
    settings = {"type": "link", "link_path_in_response_body": "next_url", "response_path": "x"}
    requests, page_walk = walk(settings, [({"next_url": None, "x": rows(1)}, {})])
    assert len(requests) == 1 and not page_walk.repeated


def test_link_style_reads_its_items_at_response_path() -> None:
    page_walk = PageWalk(
        parse_pagination(
            {"type": "link", "link_rel_in_response_header": "next", "response_path": "data[0].rows"}
        ),
        endpoint="/x",
    )
    assert page_walk.items({"data": [{"rows": rows(1)}]}) == rows(1)
    with pytest.raises(UnexpectedPage, match=r"expected a list at 'data\[0\].rows', got NoneType"):
        page_walk.items({"data": []})


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://other.example/x?p=2", "https://other.example/x?p=2"),
        ("/v2/items?p=2", "https://api.example.com/v2/items?p=2"),
        ("/items?p=2", "https://api.example.com/v2/items?p=2"),
        ("/v2?p=2", "https://api.example.com/v2?p=2"),
        ("/v2x/items", "https://api.example.com/v2/v2x/items"),
        ("items?p=2", "https://api.example.com/v2/items?p=2"),
    ],
)
def test_resolve_link(link: str, expected: str) -> None:
    assert resolve_link(link, BASE) == expected


# -- hooksync's original style and the guards ------------------------------------------------


def test_auto_follows_the_body_cursor_then_the_link_header() -> None:
    requests, _ = walk(
        Pagination.auto(limit=10, response_path="x"),
        [
            ({"next_cursor": "c2", "x": rows(1)}, {}),
            ({"next_cursor": None, "x": rows(2)}, {"next": f"{BASE}/items?p=3"}),
            ({"x": rows(3)}, {}),
        ],
    )
    assert [(r.endpoint, r.params) for r in requests] == [
        ("/items", {"limit": 10}),
        ("/items", {"limit": 10, "cursor": "c2"}),
        (f"{BASE}/items?p=3", {}),
    ]


def test_auto_reads_items_at_the_body_when_no_path() -> None:
    page_walk = PageWalk(Pagination.auto(), endpoint="/x")
    with pytest.raises(UnexpectedPage, match="expected a list as the body, got dict"):
        page_walk.items({"next_cursor": "c"})


def test_max_pages_stops_any_style() -> None:
    requests, _ = walk(CURSOR, [({"items": rows(1), "meta": {"next": "c2"}}, {})], max_pages=1)
    assert len(requests) == 1


def test_an_empty_page_has_no_successor() -> None:
    page_walk = PageWalk(parse_pagination(CURSOR), endpoint="/x")
    assert page_walk.after(page_walk.first(), {"items": [], "meta": {"next": "c"}}, {}, []) is None


# -- bad settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("cursor", r"paginate must be a dict .* got str 'cursor'"),
        ({}, r"paginate.type is required: one of 'cursor', 'link', 'offset'"),
        ({"type": "page"}, r"paginate.type must be one of .* got 'page'"),
        (
            {"type": "cursor", "cursor_name_in_request": "c"},
            r"paginate.cursor_path_in_response is required",
        ),
        (
            {**CURSOR, "limit": 10},
            r"limit_name_in_request is required for type 'cursor' when limit is set \(limit=10\)",
        ),
        (
            {"type": "link"},
            r"link_rel_in_response_header .* or paginate.link_path_in_response_body",
        ),
        ({"type": "offset"}, r"paginate.offset_name_in_request is required for type 'offset'"),
        (
            {**CURSOR, "cursor_pth_in_response": "x"},
            r"cursor_pth_in_response .* did you mean 'cursor_path_in_response'",
        ),
        (
            {**CURSOR, "offset_name_in_request": "o"},
            r"offset_name_in_request belongs to type 'offset', not to type 'cursor'",
        ),
        (
            {**CURSOR, "limit": 0, "limit_name_in_request": "l"},
            r"paginate.limit must be a positive integer, got 0",
        ),
        ({**CURSOR, "limit": True, "limit_name_in_request": "l"}, r"got True"),
        (
            {**CURSOR, "cursor_name_in_request": ""},
            r"cursor_name_in_request must be a non-empty string, got ''",
        ),
        ({**CURSOR, "in_body": "yes"}, r"paginate.in_body must be True or False, got 'yes'"),
        ({**CURSOR, "on_page": "save"}, r"paginate.on_page must be a function, got 'save'"),
        (
            {"type": "offset", "offset_name_in_request": "o", "offset_start_value": -1},
            r"offset_start_value must be an integer >= 0, got -1",
        ),
        (
            {"type": "offset", "offset_name_in_request": "o", "offset_calculation_method": "page"},
            r"offset_calculation_method must be one of 'per-page', 'by-response-size', got 'page'",
        ),
    ],
)
def test_bad_settings_name_the_key_and_the_value(settings: Any, message: str) -> None:
    with pytest.raises(PaginationConfigError, match=message):
        parse_pagination(settings)


def test_settings_and_old_keywords_do_not_mix() -> None:
    with pytest.raises(
        PaginationConfigError, match=r"cursor_path -> paginate\['cursor_path_in_response'\]"
    ) as caught:
        select_pagination(CURSOR, cursor_path="meta.next")
    assert caught.value.key == "cursor_path"
    assert select_pagination(CURSOR, cursor_path="next_cursor").type == "cursor"
    assert select_pagination(None, limit=5) == Pagination.auto(limit=5)


def test_the_method_is_read_in_any_case() -> None:
    requests, _ = walk(
        {"type": "offset", "offset_name_in_request": "start"},
        [(rows(1), {}), ([], {})],
        method="post",
    )
    assert requests[0].body == {"start": 0} and requests[0].params == {}
