"""The one definition of an acceptable webhook payload, and header redaction (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import BadInputError
from workers.payloads import (
    MAX_DEPTH,
    REDACTED,
    check_payload,
    json_path,
    redact_headers,
)
from workers.routing import parse_body


def nested(depth: int) -> Any:
    """``depth`` levels: objects and arrays alternating, the root an object."""
    document: Any = 1
    for level in range(depth):
        document = {"a": document} if level % 2 else [document]
    return document


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("depth", [1, 20, MAX_DEPTH])
def test_nesting_up_to_the_limit_passes(depth: int) -> None:
    check_payload(nested(depth))


def test_one_level_more_is_refused_naming_where() -> None:
    document = {"a": {"b": [nested(MAX_DEPTH - 2)]}}  # MAX_DEPTH + 1 levels in all
    with pytest.raises(BadInputError) as raised:
        check_payload(document)
    assert raised.value.code == "invalid_body"
    assert str(raised.value).startswith(f"body: nested deeper than {MAX_DEPTH} levels at $.a.b[0]")


def test_a_document_too_deep_for_the_stack_is_refused_not_crashed_on() -> None:
    with pytest.raises(BadInputError, match="nested deeper than"):
        check_payload(nested(100_000))  # iterative: no RecursionError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"x": "a\\ud800b"}', "lone surrogate \\ud800 in $.x"),
        ('[1, {"y": ["\\udc00"]}]', "lone surrogate \\udc00 in $[1].y[0]"),
        ('{"\\ud83d": 1}', 'lone surrogate \\ud83d in a key at $["\\ud83d"]'),
    ],
)
def test_a_lone_surrogate_is_refused_naming_where(raw: str, message: str) -> None:
    with pytest.raises(BadInputError) as raised:
        parse_body(raw.encode())
    assert message in str(raised.value)


def test_a_surrogate_pair_is_a_whole_character() -> None:
    assert parse_body(b'{"x": "\\ud83d\\ude00"}') == {"x": "\N{GRINNING FACE}"}


def test_parse_body_applies_the_check_to_a_form_payload_too() -> None:
    raw = b"payload=" + b"%5B" * (MAX_DEPTH + 1) + b"%5D" * (MAX_DEPTH + 1)
    with pytest.raises(BadInputError, match="form field 'payload': nested deeper than"):
        parse_body(raw, "application/x-www-form-urlencoded")


#: Text that sometimes holds a lone surrogate (category Cs, which ``st.text`` leaves out).
TEXT = st.text(st.characters(categories=["Cs", "Ll", "Nd"]), max_size=4)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | TEXT,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3)
        ),
        max_leaves=40,
    )
)
def test_the_check_refuses_exactly_what_is_too_deep_or_not_utf8(document: Any) -> None:
    encodable = True
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        encodable = False
    limit = 3
    try:
        check_payload(document, max_depth=limit)
        refused = False
    except BadInputError:
        refused = True
    assert refused == (depth_of(document) > limit or not encodable)


def test_json_path_quotes_odd_keys_and_cuts_long_paths() -> None:
    assert json_path(["a", 0, "b c", 'q"']) == '$.a[0]["b c"]["q\\u0022"]'
    assert json_path([0] * 200).endswith("...") and len(json_path([0] * 200)) <= 163


def test_credential_like_headers_are_redacted_and_signatures_kept() -> None:
    headers = {
        "X-Api-Key": "k",
        "x-auth-token": "t",
        "X-Client-Secret": "s",
        "x-session-id": "s",
        "x-password": "p",
        "Set-Cookie": "c",
        "x-hub-signature-256": "sha256=ab",
        "stripe-signature": "t=1,v1=ab",
        "webhook-signature": "v1,ab",
        "x-slack-signature": "v0=ab",
        "x-hubspot-signature-v3": "ab",
        "linear-signature": "ab",
        "x-shopify-hmac-sha256": "ab",
        "content-type": "application/json",
    }
    redacted = redact_headers(headers)
    secret = {"X-Api-Key", "x-auth-token", "X-Client-Secret", "x-session-id", "x-password"}
    assert {name for name, value in redacted.items() if value == REDACTED} == secret | {
        "Set-Cookie"
    }


def test_headers_routing_reads_are_kept() -> None:
    headers = {"X-Delivery-Key": "d-1", "X-Api-Key": "k"}
    assert redact_headers(headers, keep=["x-delivery-key"]) == {
        "X-Delivery-Key": "d-1",
        "X-Api-Key": REDACTED,
    }
