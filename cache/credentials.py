"""Connection credentials: validation, and Fernet encryption at rest.

Credentials arrive through ``POST /connections`` in Nango's import shape and are stored only
as a Fernet token (``HOOKSYNC_ENCRYPTION_KEY``). Nothing here ever puts a secret value in an
error message: messages name the field and, at most, the type of the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from config.errors import BadInputError, FatalError

__all__ = [
    "CREDENTIAL_TYPES",
    "credentials_summary",
    "decrypt_credentials",
    "encrypt_credentials",
    "validate_credentials",
]

#: type -> (required fields, optional fields). Every field is a string.
CREDENTIAL_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "API_KEY": (("api_key",), ()),
    "BASIC": (("username", "password"), ()),
    "OAUTH2": (("access_token",), ("refresh_token", "expires_at")),
    "NONE": ((), ()),
}


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
    return normalised


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
    """What the API may show about credentials: their type, never a secret field."""
    return {"type": str(creds.get("type", "NONE"))}


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
