"""Record cursors: round trip, and refusal of anything this server did not issue."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.cursor import decode_cursor, encode_cursor
from config.errors import BadInputError

KEY = "secret-key"


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_round_trip(seq: int) -> None:
    cursor = encode_cursor(seq, KEY)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor), "url-safe, no padding"
    assert len(cursor) <= 30
    assert decode_cursor(cursor, KEY) == seq


@pytest.mark.parametrize("key", ["k", "secret-key", "é" * 40, "x" * 64, "y" * 65, "z" * 500])
def test_the_mac_is_hmac_sha256(key: str) -> None:
    import base64
    import hmac

    cursor = encode_cursor(987654, key)
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    body, mac = raw[:-12], raw[-12:]
    assert mac == hmac.digest(key.encode(), b"hooksync-cursor-v1:" + body, "sha256")[:12]
    assert decode_cursor(cursor, key) == 987654


def test_cursors_are_opaque_and_distinct() -> None:
    cursors = {encode_cursor(seq, KEY) for seq in range(1000)}
    assert len(cursors) == 1000
    assert "42" not in encode_cursor(42, KEY)


def _assert_invalid(text: object, key: str = KEY) -> None:
    with pytest.raises(BadInputError) as caught:
        decode_cursor(text, key)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_cursor"
    assert caught.value.field == "cursor"


def test_a_cursor_from_another_key_is_refused() -> None:
    _assert_invalid(encode_cursor(5, "other-key"))


def test_truncated_or_extended_cursors_are_refused() -> None:
    cursor = encode_cursor(123456, KEY)
    for cut in range(len(cursor)):
        _assert_invalid(cursor[:cut])
    _assert_invalid(cursor + "A")
    _assert_invalid(cursor + "AAAA")


@given(st.integers(min_value=0, max_value=10**9), st.data())
def test_any_single_character_edit_is_refused(seq: int, data: st.DataObject) -> None:
    cursor = encode_cursor(seq, KEY)
    position = data.draw(st.integers(0, len(cursor) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    )
    edited = cursor[:position] + replacement + cursor[position + 1 :]
    if edited != cursor:
        _assert_invalid(edited)


@pytest.mark.parametrize("text", ["", "not a cursor!", "12", "=" * 8, "é", "A" * 200, None, 12])
def test_garbage_is_refused(text: object) -> None:
    _assert_invalid(text)


def test_the_message_suggests_the_fix_and_shows_a_short_value() -> None:
    with pytest.raises(BadInputError) as caught:
        decode_cursor("x" * 500, KEY)
    message = str(caught.value)
    assert "next_cursor" in message
    assert len(message) < 300


@pytest.mark.parametrize("seq", [-1, 1.5, True, "3"])
def test_encode_rejects_non_sequence_values(seq: object) -> None:
    with pytest.raises(ValueError):
        encode_cursor(seq, KEY)  # type: ignore[arg-type]
