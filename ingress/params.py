"""Request parameters shared by the API blueprints, validated with errors that name the field."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import request
from sqlalchemy import select
from sqlalchemy.orm import Session

from cache.context import AppContext
from cache.models import Connection
from config.errors import BadInputError

__all__ = [
    "choice_param",
    "connection_id_param",
    "find_connection",
    "json_body",
    "limit_param",
    "text_param",
    "time_param",
    "provider_config_key",
    "query_provider_config_key",
    "require_connection",
    "unknown_connection",
]

_MAX_ID_LENGTH = 255


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadInputError(
            "request body must be a JSON object (Content-Type: application/json)", field="body"
        )
    return body


def provider_config_key(ctx: AppContext, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadInputError(
            "provider_config_key: required; the integration key from nango.yaml",
            field="provider_config_key",
        )
    if value not in ctx.integrations.by_key:
        known = ", ".join(sorted(ctx.integrations.by_key)) or "none"
        raise BadInputError(
            f"provider_config_key: no integration {value[:100]!r} in nango.yaml "
            f"(configured: {known})",
            code="unknown_provider_config_key",
            field="provider_config_key",
        )
    return value


def connection_id_param(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInputError("connection_id: required; a non-empty string", field="connection_id")
    if len(value) > _MAX_ID_LENGTH:
        raise BadInputError(
            f"connection_id: at most {_MAX_ID_LENGTH} characters, got {len(value)}",
            field="connection_id",
        )
    return value


def find_connection(session: Session, key: str, connection_id: str) -> Connection | None:
    return session.scalars(
        select(Connection).where(
            Connection.provider_config_key == key, Connection.connection_id == connection_id
        )
    ).first()


def require_connection(session: Session, key: str | None, connection_id: str) -> Connection:
    """The connection named by id (and key); without a key the id must be unambiguous."""
    if key:
        row = find_connection(session, key, connection_id)
        if row is None:
            raise unknown_connection(key, connection_id)
        return row
    rows = session.scalars(
        select(Connection).where(Connection.connection_id == connection_id).limit(2)
    ).all()
    if not rows:
        raise unknown_connection(None, connection_id)
    if len(rows) > 1:
        raise BadInputError(
            f"provider_config_key: connection {connection_id!r} exists in several "
            "integrations; add ?provider_config_key=",
            field="provider_config_key",
        )
    return rows[0]


def unknown_connection(key: str | None, connection_id: str) -> BadInputError:
    where = f" in integration {key!r}" if key else ""
    return BadInputError(
        f"connection {connection_id[:100]!r} not found{where}",
        code="unknown_connection",
        field="connection_id",
    )


def query_provider_config_key() -> str | None:
    return request.args.get("provider_config_key") or request.args.get("providerConfigKey")


# -- query parameters of the listings ----------------------------------------------------
# Each takes the parameter's name and its raw value (``request.args.get(name)``, None when
# absent), so the console's forms can use them too. A parameter given empty (``limit=``)
# is refused like any other bad value: the OpenAPI document types it, so accepting "" would
# make the contract a lie.


def limit_param(name: str, raw: str | None, *, default: int, maximum: int) -> int:
    """A page size from 1 to ``maximum``; ``default`` when absent."""
    if raw is None:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0
    if not 1 <= value <= maximum:
        raise BadInputError(
            f"{name}: must be a whole number from 1 to {maximum}, got {raw[:20]!r}", field=name
        )
    return value


def time_param(name: str, raw: str | None, *, required: bool = False) -> datetime | None:
    """An ISO 8601 instant (a zone-less one is UTC), as an aware UTC datetime."""
    if raw is None:
        if required:
            raise BadInputError(
                f"{name}: required; an ISO 8601 time such as 2026-12-01T10:00:00Z", field=name
            )
        return None
    try:
        # Upper case: RFC 3339 allows a lower-case "t" and "z", Python's parser does not.
        value = datetime.fromisoformat(raw.strip().upper()) if raw.strip() else None
        if value is not None:
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        value = None
    if value is None:
        raise BadInputError(
            f"{name}: not an ISO 8601 time (e.g. 2026-12-01T10:00:00Z), got {raw[:40]!r}",
            field=name,
        )
    return value


def choice_param(name: str, raw: str | None, choices: Iterable[str]) -> str | None:
    """One of ``choices`` (e.g. a state enum's values), or None when absent."""
    if raw is None:
        return None
    known = list(choices)
    if raw not in known:
        raise BadInputError(
            f"{name}: must be one of {', '.join(known)}, got {raw[:40]!r}", field=name
        )
    return raw


def text_param(name: str, raw: str | None, *, max_length: int = _MAX_ID_LENGTH) -> str | None:
    """A non-empty string filter (a key, an id), or None when absent."""
    if raw is None:
        return None
    if not raw or len(raw) > max_length:
        raise BadInputError(
            f"{name}: must be 1 to {max_length} characters, got {raw[:40]!r}", field=name
        )
    return raw
