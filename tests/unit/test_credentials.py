"""Connection credentials: validation and encryption (cache/credentials.py)."""

from __future__ import annotations

import base64

import pytest

from cache.credentials import (
    credentials_summary,
    decrypt_credentials,
    encrypt_credentials,
    validate_credentials,
)
from config.errors import BadInputError, FatalError

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
OTHER_KEY = base64.urlsafe_b64encode(b"o" * 32).decode()
SECRET = "sk_live_do-not-leak-123"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"type": "API_KEY", "api_key": SECRET}, {"type": "API_KEY", "api_key": SECRET}),
        ({"type": "api_key", "api_key": SECRET}, {"type": "API_KEY", "api_key": SECRET}),
        (
            {"type": "BASIC", "username": "u", "password": SECRET},
            {"type": "BASIC", "username": "u", "password": SECRET},
        ),
        (
            {"type": "OAUTH2", "access_token": SECRET, "refresh_token": "r"},
            {"type": "OAUTH2", "access_token": SECRET, "refresh_token": "r"},
        ),
        ({"type": "NONE"}, {"type": "NONE"}),
    ],
)
def test_valid_credentials_are_normalised(given: dict, expected: dict) -> None:
    assert validate_credentials(given) == expected


@pytest.mark.parametrize(
    ("given", "field", "message"),
    [
        (None, "credentials", "credentials: required"),
        ([SECRET], "credentials", "credentials: must be an object, got an array"),
        ({"api_key": SECRET}, "credentials.type", "credentials.type: required"),
        ({"type": "OAUTH1"}, "credentials.type", "unknown type 'OAUTH1'"),
        (
            {"type": "API_KEY"},
            "credentials.api_key",
            "credentials.api_key: required for type 'API_KEY'",
        ),
        (
            {"type": "BASIC", "username": "u"},
            "credentials.password",
            "credentials.password: required for type 'BASIC'",
        ),
        (
            {"type": "API_KEY", "api_key": 12345},
            "credentials.api_key",
            "must be a string for type 'API_KEY', got a number",
        ),
        (
            {"type": "API_KEY", "api_key": "k", "token": SECRET},
            "credentials.token",
            "credentials.token: not a field of type 'API_KEY'",
        ),
    ],
)
def test_invalid_credentials_name_the_field_and_never_the_secret(
    given: object, field: str, message: str
) -> None:
    with pytest.raises(BadInputError) as caught:
        validate_credentials(given)
    assert caught.value.field == field
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_wrong_typed_secret_is_not_quoted() -> None:
    with pytest.raises(BadInputError) as caught:
        validate_credentials({"type": "BASIC", "username": "u", "password": ["hunter2"]})
    assert "hunter2" not in str(caught.value)


def test_encryption_round_trips_and_hides_the_secret() -> None:
    creds = {"type": "API_KEY", "api_key": SECRET}
    token = encrypt_credentials(KEY, creds)
    assert SECRET not in token
    assert decrypt_credentials(KEY, token) == creds


def test_decrypting_with_another_key_is_a_clear_fatal_error() -> None:
    token = encrypt_credentials(KEY, {"type": "NONE"})
    with pytest.raises(FatalError, match="HOOKSYNC_ENCRYPTION_KEY"):
        decrypt_credentials(OTHER_KEY, token)


def test_summary_shows_only_the_type() -> None:
    assert credentials_summary({"type": "BASIC", "username": "u", "password": SECRET}) == {
        "type": "BASIC"
    }
