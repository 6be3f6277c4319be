"""Connections API (ARCHITECTURE.md §7), in Nango's request and response shapes.

A connection is one account of one integration: its credentials (imported, stored
encrypted, never returned) and its metadata (used by webhook routing and by scripts).
Its ``state`` turns ``refresh_failed`` when its token refresh was refused for good
(``workers.token_refresh``); ``PATCH /connections/<id>`` with new credentials makes it
``active`` again and its polls due at once.
Creating one creates its schedules in the same transaction and then nudges the scheduler
so ``auto_start`` syncs run at once. Every route is served under ``/connections`` and,
for the official Nango clients, under ``/connection`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from werkzeug.routing import BaseConverter

from cache.credentials import (
    credentials_summary,
    decrypt_credentials,
    encrypt_credentials,
    validate_credentials,
)
from cache.db import read_scope, session_scope
from cache.models import Connection, ConnectionState, utcnow
from cache.timestamps import api_optional_time
from config.errors import BadInputError
from ingress.auth import current_context, require_api_key
from ingress.params import (
    connection_id_param,
    find_connection,
    json_body,
    provider_config_key,
    query_provider_config_key,
    require_connection,
    text_param,
    unknown_connection,
)
from workers.enqueue import enqueue_after_commit
from workers.schedules import create_schedules, resume_polls

__all__ = ["bp", "connection_to_json"]

log = logging.getLogger(__name__)

bp = Blueprint("connections", __name__)


class ConnectionIdConverter(BaseConverter):
    """A path segment other than ``metadata``: ``/connections/metadata`` is its own resource.

    Without it ``/connections/<connection_id>`` matches that path too, so ``OPTIONS`` (and a
    405's ``Allow``) would advertise GET and DELETE there. A connection named ``metadata``
    is reached through ``GET /connections?connection_id=metadata``.
    """

    regex = r"(?!metadata$)[^/]+"


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    # Recorded before the routes below, so it runs before their rules are compiled.
    state.app.url_map.converters["connection_id"] = ConnectionIdConverter


@bp.post("/connections")
@bp.post("/connection")
@require_api_key
def create_connection() -> tuple[Response, int]:
    """Import a connection with existing credentials: 201, 400 (names the field), 409."""
    ctx = current_context()
    body = json_body()
    key = provider_config_key(ctx, body.get("provider_config_key"))
    connection_id = connection_id_param(body.get("connection_id"))
    credentials = validate_credentials(body.get("credentials"))
    metadata = _metadata(body.get("metadata", {}), required=False)

    now = utcnow()
    try:
        with session_scope(ctx.sessions) as session:
            if find_connection(session, key, connection_id) is not None:
                raise _exists(key, connection_id)
            connection = Connection(
                provider_config_key=key,
                connection_id=connection_id,
                credentials_encrypted=encrypt_credentials(ctx.settings.encryption_key, credentials),
                metadata_json=metadata,
                created_at=now,
                updated_at=now,
            )
            session.add(connection)
            session.flush()
            create_schedules(session, ctx.integrations, connection, now)
            payload = connection_to_json(connection)
    except IntegrityError:
        # Two imports of the same connection raced; the loser sees the unique constraint.
        raise _exists(key, connection_id) from None

    # The new schedules are due now: a tick claims them at once rather than at the next beat.
    enqueue_after_commit(ctx, tick=True)
    return jsonify(payload), 201


@bp.get("/connections")
@bp.get("/connection")
@require_api_key
def list_connections() -> Response:
    """``{"connections": [...]}``; filters ``provider_config_key``, ``connection_id`` and
    ``search`` (part of the connection id, any case: Nango's ``listConnections(id, search)``).
    """
    ctx = current_context()
    query = select(Connection).order_by(Connection.id)
    key = request.args.get("provider_config_key") or request.args.get("providerConfigKey")
    if key:
        query = query.where(Connection.provider_config_key == key)
    connection_id = request.args.get("connection_id") or request.args.get("connectionId")
    if connection_id:
        query = query.where(Connection.connection_id == connection_id)
    search = text_param("search", request.args.get("search"))
    if search is not None:
        # autoescape: a "%" or "_" in the search is that character, not a wildcard.
        query = query.where(Connection.connection_id.icontains(search, autoescape=True))
    with read_scope(ctx.sessions) as session:
        rows = session.scalars(query).all()
        return jsonify({"connections": [connection_to_json(row) for row in rows]})


@bp.get("/connections/<connection_id:connection_id>")
@bp.get("/connection/<connection_id:connection_id>")
@require_api_key
def get_connection(connection_id: str) -> Response:
    """One connection with ``credentials: {"type"}`` (never a secret field)."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        row = require_connection(session, query_provider_config_key(), connection_id)
        payload = connection_to_json(row)
        creds = decrypt_credentials(ctx.settings.encryption_key, row.credentials_encrypted)
        payload["credentials"] = credentials_summary(creds)
    return jsonify(payload)


@bp.patch("/connections/<connection_id:connection_id>")
@bp.patch("/connection/<connection_id:connection_id>")
@require_api_key
def update_credentials(connection_id: str) -> Response:
    """Replace a connection's credentials (say after ``refresh_failed``): 200, 400, 404.

    A connection whose refresh was refused becomes ``active`` again and its started
    schedules are due at once; its records were kept all along.
    """
    ctx = current_context()
    body = json_body()
    key = provider_config_key(ctx, body.get("provider_config_key"))
    credentials = validate_credentials(body.get("credentials"))
    now = utcnow()
    with session_scope(ctx.sessions) as session:
        # FOR UPDATE orders concurrent PATCHes; a worker's refresh in flight stores its token
        # only over the credentials it read (compare-and-set), never over these.
        row = session.scalars(
            select(Connection)
            .where(Connection.provider_config_key == key, Connection.connection_id == connection_id)
            .with_for_update()
        ).first()
        if row is None:
            raise unknown_connection(key, connection_id)
        resumed = row.state != ConnectionState.ACTIVE.value
        row.credentials_encrypted = encrypt_credentials(ctx.settings.encryption_key, credentials)
        row.state = ConnectionState.ACTIVE.value
        row.state_error = None
        row.updated_at = now
        if resumed:
            resume_polls(session, row.id, now)
        payload = connection_to_json(row)
        payload["credentials"] = credentials_summary(credentials)
    if resumed:
        enqueue_after_commit(ctx, tick=True)
    log.info("connection %r of %r: credentials replaced", connection_id, key)
    return jsonify(payload)


@bp.delete("/connections/<connection_id:connection_id>")
@bp.delete("/connection/<connection_id:connection_id>")
@require_api_key
def delete_connection(connection_id: str) -> tuple[str, int]:
    """Delete a connection; its records, schedules and runs go with it (FK cascade)."""
    ctx = current_context()
    with session_scope(ctx.sessions) as session:
        row = require_connection(session, query_provider_config_key(), connection_id)
        session.execute(delete(Connection).where(Connection.id == row.id))
    return "", 204


@bp.post("/connections/metadata")
@bp.post("/connection/metadata")
@require_api_key
def replace_metadata() -> Response:
    """Replace the metadata of one or more connections."""
    return _update_metadata(merge=False)


@bp.patch("/connections/metadata")
@bp.patch("/connection/metadata")
@require_api_key
def merge_metadata() -> Response:
    """Shallow-merge into the metadata of one or more connections."""
    return _update_metadata(merge=True)


def connection_to_json(row: Connection) -> dict[str, Any]:
    """The API shape of a connection (Nango's): never its credentials."""
    return {
        "id": row.id,
        "connection_id": row.connection_id,
        "provider_config_key": row.provider_config_key,
        "provider": row.provider_config_key,
        "created": api_optional_time(row.created_at),
        "created_at": api_optional_time(row.created_at),
        "updated_at": api_optional_time(row.updated_at),
        "metadata": row.metadata_json or {},
        "state": row.state or ConnectionState.ACTIVE.value,
        "state_error": row.state_error,
    }


def _update_metadata(*, merge: bool) -> Response:
    ctx = current_context()
    body = json_body()
    key = provider_config_key(ctx, body.get("provider_config_key"))
    raw_ids = body.get("connection_id")
    ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
    if not ids:
        raise BadInputError(
            "connection_id: give a connection id or a non-empty list of them",
            field="connection_id",
        )
    connection_ids = [connection_id_param(value) for value in ids]
    metadata = _metadata(body.get("metadata"), required=True)
    now = utcnow()
    with session_scope(ctx.sessions) as session:
        for connection_id in connection_ids:
            # FOR UPDATE: two concurrent PATCHes must not both merge into the same old value.
            row = session.scalars(
                select(Connection)
                .where(
                    Connection.provider_config_key == key,
                    Connection.connection_id == connection_id,
                )
                .with_for_update()
            ).first()
            if row is None:
                raise unknown_connection(key, connection_id)
            row.metadata_json = {**(row.metadata_json or {}), **metadata} if merge else metadata
            row.updated_at = now
    return jsonify({"connection_id": raw_ids, "provider_config_key": key, "metadata": metadata})


def _metadata(value: object, *, required: bool) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise BadInputError("metadata: must be a JSON object", field="metadata")
    return dict(value)


def _exists(key: str, connection_id: str) -> BadInputError:
    return BadInputError(
        f"connection {connection_id!r} already exists in integration {key!r}; delete it "
        "first or update its metadata",
        code="connection_exists",
        field="connection_id",
    )
