"""Connection credentials: validation, and Fernet encryption at rest.

Credentials arrive through ``POST /connections`` in Nango's import shape and are stored only
as a Fernet token (``HOOKSYNC_ENCRYPTION_KEY``). Nothing here ever puts a secret value in an
error message: messages name the field and, at most, the type of the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from config.errors import BadInputError, FatalError

__all__ = [
    "CREDENTIAL_TYPES",
    "credentials_summary",
    "decrypt_credentials",
    "encrypt_credentials",
    "format_expires_at",
    "parse_expires_at",
    "validate_credentials",
]

#: type -> (required fields, optional fields). Every field is a string.
#:
#: ``OAUTH2`` takes Nango's import fields (``access_token``, ``refresh_token``,
#: ``expires_at``) plus what hooksync needs to refresh the token itself, since it has no
#: integration-level OAuth client settings: the provider's ``token_url`` and the OAuth
#: client's ``client_id`` / ``client_secret``. ``APP`` is a GitHub App installation
#: (Nango's ``app_id`` / ``installation_id``, and the app's PEM ``private_key``); its
#: ``access_token`` / ``expires_at`` are the installation token minted from them, cached.
CREDENTIAL_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "API_KEY": (("api_key",), ()),
    "BASIC": (("username", "password"), ()),
    "OAUTH2": (
        ("access_token",),
        ("refresh_token", "expires_at", "token_url", "client_id", "client_secret"),
    ),
    "APP": (("app_id", "installation_id", "private_key"), ("access_token", "expires_at")),
    "NONE": ((), ()),
}

#: Fields whose value is not a secret, so an error may quote it (capped in length).
_QUOTABLE = frozenset({"expires_at", "token_url", "app_id", "installation_id", "client_id"})
#: Fields that may be given as a JSON integer too (GitHub shows them as numbers).
_NUMERIC = frozenset({"app_id", "installation_id"})


def validate_credentials(obj: object) -> dict[str, str]:
    """Check a credentials object and return it normalised (type upper-cased, known fields only).

    Args:
        obj: The ``credentials`` value of a request body.

    Returns:
        ``{"type": ..., <fields>}`` with every required field a non-empty string.

    Raises:
        BadInputError: Naming the field (``credentials.api_key: required for type
            'API_KEY'``); secret values are never quoted.
    """
    known = ", ".join(CREDENTIAL_TYPES)
    if obj is None:
        raise BadInputError(
            f"credentials: required; give an object with a type, one of {known}",
            field="credentials",
        )
    if not isinstance(obj, Mapping):
        raise BadInputError(
            f"credentials: must be an object, got {_type_name(obj)}", field="credentials"
        )
    raw_type = obj.get("type")
    if not isinstance(raw_type, str) or not raw_type.strip():
        raise BadInputError(f"credentials.type: required; one of {known}", field="credentials.type")
    cred_type = raw_type.strip().upper()
    if cred_type not in CREDENTIAL_TYPES:
        # The type is not a secret, but cap its length: it is attacker-controlled text.
        raise BadInputError(
            f"credentials.type: unknown type {raw_type[:40]!r}; use one of {known}",
            field="credentials.type",
        )
    required, optional = CREDENTIAL_TYPES[cred_type]
    unknown = sorted(
        str(name)[:60] for name in obj if name != "type" and name not in required + optional
    )
    if unknown:
        allowed = ", ".join(required + optional) or "no other field"
        raise BadInputError(
            f"credentials.{unknown[0]}: not a field of type {cred_type!r} (allowed: {allowed})",
            field=f"credentials.{unknown[0]}",
        )
    normalised = {"type": cred_type}
    for name in required:
        value = obj.get(name)
        if value is None or value == "":
            raise BadInputError(
                f"credentials.{name}: required for type {cred_type!r}", field=f"credentials.{name}"
            )
        if name in _NUMERIC and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise BadInputError(
                f"credentials.{name}: must be a string for type {cred_type!r}, "
                f"got {_type_name(value)}",
                field=f"credentials.{name}",
            )
        normalised[name] = value
    for name in optional:
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadInputError(
                f"credentials.{name}: must be a string, got {_type_name(value)}",
                field=f"credentials.{name}",
            )
        normalised[name] = value
    _check_token_fields(cred_type, normalised)
    return normalised


def _check_token_fields(cred_type: str, creds: dict[str, str]) -> None:
    """The fields token refresh relies on: dates, URLs, ids and keys it can use."""
    if "expires_at" in creds:
        try:
            creds["expires_at"] = format_expires_at(parse_expires_at(creds["expires_at"]))
        except ValueError:
            raise _bad(
                "expires_at",
                creds["expires_at"],
                "is not an ISO 8601 date-time; give e.g. '2026-12-01T12:00:00Z'",
            ) from None
    if cred_type == "OAUTH2":
        # A refresh_token without a token_url is kept (Nango's import takes it alone), but
        # hooksync cannot refresh with it: the token is then used until the API says 401.
        url = creds.get("token_url")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _bad("token_url", url, "must be an http:// or https:// URL")
    if cred_type == "APP":
        for name in ("app_id", "installation_id"):
            if not creds[name].isdigit():
                raise _bad(name, creds[name], "must be the GitHub App's numeric id")
        if not _is_rsa_pem(creds["private_key"]):
            # Never quote the value: it is the app's private key.
            raise BadInputError(
                "credentials.private_key: not a PEM RSA private key; paste the whole .pem file "
                "GitHub generated for the app, '-----BEGIN RSA PRIVATE KEY-----' line included",
                field="credentials.private_key",
            )


def _bad(name: str, value: str, problem: str) -> BadInputError:
    assert name in _QUOTABLE, name  # a secret field must never be quoted
    return BadInputError(
        f"credentials.{name}: {value[:200]!r} {problem}", field=f"credentials.{name}"
    )


def _is_rsa_pem(text: str) -> bool:
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return isinstance(key, RSAPrivateKey)


def parse_expires_at(value: str) -> datetime:
    """An ISO 8601 date-time as an aware UTC datetime (a value without offset is UTC).

    Raises:
        ValueError: not an ISO 8601 date-time.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except OverflowError:
        # Year 1 or 9999 pushed past the calendar by its offset.
        raise ValueError(f"{value!r} is out of range") from None


def format_expires_at(value: datetime) -> str:
    """How ``expires_at`` is stored: UTC, seconds precision, ``Z`` (Nango's shape)."""
    # isoformat, not strftime: %Y drops the leading zeros of a year below 1000.
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def encrypt_credentials(key: str, creds: Mapping[str, Any]) -> str:
    """Return the Fernet token (text) of ``creds`` as JSON, under ``key``."""
    plain = json.dumps(dict(creds), separators=(",", ":"), sort_keys=True).encode()
    return Fernet(key.encode()).encrypt(plain).decode()


def decrypt_credentials(key: str, token: str) -> dict[str, Any]:
    """Decrypt a token written by ``encrypt_credentials``.

    Raises:
        FatalError: The token was not made with ``key`` (the encryption key changed) or is
            corrupt; retrying cannot help.
    """
    try:
        plain = Fernet(key.encode()).decrypt(token.encode())
    except (InvalidToken, ValueError):
        raise FatalError(
            "stored connection credentials cannot be decrypted with HOOKSYNC_ENCRYPTION_KEY; "
            "was the key changed? Restore the old key or import the connection again"
        ) from None
    data = json.loads(plain)
    if not isinstance(data, dict):
        raise FatalError("stored connection credentials are not an object; import them again")
    return data


def credentials_summary(creds: Mapping[str, Any]) -> dict[str, str]:
    """What the API may show about credentials: their type and the non-secret fields that
    say whether (and when) they expire, never a secret field."""
    summary = {"type": str(creds.get("type", "NONE"))}
    for name in ("expires_at", "app_id", "installation_id"):
        if creds.get(name):
            summary[name] = str(creds[name])
    return summary


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
