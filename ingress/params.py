"""Request parameters shared by the API blueprints, validated with errors that name the field."""

from __future__ import annotations

from typing import Any

from flask import request
from sqlalchemy import select
from sqlalchemy.orm import Session

from cache.context import AppContext
from cache.models import Connection
from config.errors import BadInputError

__all__ = [
    "connection_id_param",
    "find_connection",
    "json_body",
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
