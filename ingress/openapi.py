"""``GET /openapi.json``: the OpenAPI 3.1 document of every route the app serves.

The document is data written here by hand, next to the views it describes, not generated
from them: a generator would document whatever the code happens to do, while this is the
contract. ``tests/integration/test_openapi.py`` keeps the two in step — every Flask rule
must appear here and every path here must be a Flask rule — so a new route without
documentation fails CI.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from flask import Blueprint, Response, jsonify

from cache.models import NotificationState, WebhookState
from cache.page import FILTERS, MAX_IDS, MAX_LIMIT

__all__ = ["bp", "build_document"]

bp = Blueprint("openapi", __name__)

#: The project version shown in ``info.version`` (pyproject's ``version``).
API_VERSION = "0.1.0"

Schema = dict[str, Any]


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The document; public, like ``/healthz`` (it holds no secret)."""
    return jsonify(build_document())


@functools.cache
def _document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hooksync",
            "version": API_VERSION,
            "description": _DESCRIPTION,
        },
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in _TAGS],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <HOOKSYNC_SECRET_KEY>`",
                }
            },
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
        },
    }


def build_document() -> Schema:
    """Return a fresh copy of the OpenAPI document (callers may mutate it)."""
    return copy.deepcopy(_document())


_DESCRIPTION = """\
Nango-compatible real-time sync: external webhooks in, a records cache, signed completion
webhooks out. Every endpoint but `/webhook/*`, `/healthz` and `/openapi.json` needs
`Authorization: Bearer <HOOKSYNC_SECRET_KEY>`. Every error is
`{"error": {"code", "message", "field"?}}`.

Aliases not listed as paths: every `/connections…` route is also served under
`/connection…` (the paths the official Nango Node client calls), with the same parameters
and responses. `/records/` (trailing slash, also called by that client) is listed.
"""

_TAGS = ("webhooks", "records", "connections", "syncs", "notifications", "integrations", "meta")


# --- small builders -------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(name: str) -> Schema:
    return {"type": "array", "items": _ref(name)}


def _json(schema: Schema, description: str = "OK", **extra: Any) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _errors(*statuses: int) -> dict[str, Schema]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        409: "Conflict",
        413: "PayloadTooLarge",
        503: "Unavailable",
    }
    return {str(status): {"$ref": f"#/components/responses/{names[status]}"} for status in statuses}


def _body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string"},
        "description": description,
    }


def _op(
    tag: str,
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    public: bool = False,
    errors: tuple[int, ...] = (),
) -> Schema:
    operation: Schema = {"tags": [tag], "operationId": operation_id, "summary": summary}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    if public:
        operation["security"] = []
    statuses = errors if public else (401, *errors)
    operation["responses"] = {**responses, **_errors(*sorted(set(statuses)))}
    return operation


_STRING: Schema = {"type": "string"}
_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
_STRINGS: Schema = {"type": "array", "items": _STRING}
_INTEGERS: Schema = {"type": "array", "items": {"type": "integer"}}
_KEY_QUERY = _query(
    "provider_config_key",
    _STRING,
    "The integration key from nango.yaml (`providerConfigKey` is accepted too).",
)
_SUCCESS = _json(
    {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"const": True}},
    }
)


# --- schemas ----------------------------------------------------------------------------


def _object(properties: dict[str, Schema], required: str = "", **extra: Any) -> Schema:
    """An object schema; ``required`` lists the required property names, space-separated."""
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required.split()
    return schema


_SYNC_NAMES: Schema = {
    "description": "Sync names: a list (of names or `{name}` objects; `[]` = every sync), "
    "a comma-separated string, or `*`.",
    "oneOf": [
        {
            "type": "array",
            "items": {"oneOf": [_STRING, _object({"name": _STRING}, "name")]},
        },
        _STRING,
    ],
}

_CONTROL = _object(
    {
        "provider_config_key": _STRING,
        "syncs": _SYNC_NAMES,
        "connection_id": {
            "type": "string",
            "description": "One connection; absent = every connection of the integration.",
        },
    },
    "provider_config_key syncs",
)

_SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "examples": ["unknown_connection"]},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "The parameter at fault."},
                },
                "code message",
            )
        },
        "error",
    ),
    "Credentials": {
        "oneOf": [
            _object({"type": {"const": "API_KEY"}, "api_key": _STRING}, "type api_key"),
            _object(
                {"type": {"const": "BASIC"}, "username": _STRING, "password": _STRING},
                "type username password",
            ),
            _object({"type": {"const": "OAUTH2"}, "access_token": _STRING}, "type access_token"),
            _object({"type": {"const": "NONE"}}, "type"),
        ]
    },
    "ConnectionCreate": _object(
        {
            "provider_config_key": _STRING,
            "connection_id": {"type": "string", "maxLength": 255},
            "credentials": _ref("Credentials"),
            "metadata": {"type": "object"},
        },
        "provider_config_key connection_id credentials",
    ),
    "Connection": _object(
        {
            "id": {"type": "integer"},
            "connection_id": _STRING,
            "provider_config_key": _STRING,
            "provider": _STRING,
            "created": _TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
            "metadata": {"type": "object"},
            "credentials": _object(
                {"type": {"enum": ["API_KEY", "BASIC", "OAUTH2", "NONE"]}},
                "type",
                description="Only on `GET /connections/{connection_id}`: the type, never a secret.",
            ),
        },
        "id connection_id provider_config_key metadata",
    ),
    "MetadataUpdate": _object(
        {
            "provider_config_key": _STRING,
            "connection_id": {"oneOf": [_STRING, {"type": "array", "items": _STRING}]},
            "metadata": {"type": "object"},
        },
        "provider_config_key connection_id metadata",
    ),
    "Record": {
        "type": "object",
        "description": "The record as the script saved it, plus `_nango_metadata`.",
        "required": ["id", "_nango_metadata"],
        "properties": {
            "id": _STRING,
            "_nango_metadata": _object(
                {
                    "first_seen_at": {"type": "string", "format": "date-time"},
                    "last_modified_at": {"type": "string", "format": "date-time"},
                    "last_action": {"enum": ["ADDED", "UPDATED", "DELETED"]},
                    "deleted_at": _TIME,
                    "cursor": _STRING,
                },
                "first_seen_at last_modified_at last_action deleted_at cursor",
            ),
        },
        "additionalProperties": True,
    },
    "RecordsPage": _object(
        {
            "records": {"type": "array", "items": _ref("Record")},
            "next_cursor": _NULLABLE_STRING,
        },
        "records next_cursor",
    ),
    "TriggerRequest": {
        **_CONTROL,
        "properties": {
            **_CONTROL["properties"],
            "opts": _object({"reset": {"type": "boolean"}, "emptyCache": {"type": "boolean"}}),
            "sync_mode": {
                "enum": ["incremental", "full_refresh", "full_refresh_and_clear_cache"],
                "description": "Legacy form of `opts`.",
            },
        },
    },
    "ControlRequest": _CONTROL,
    "SyncStatus": _object(
        {
            "id": {"type": ["integer", "null"]},
            "connection_id": _STRING,
            "name": _STRING,
            "status": {"enum": ["RUNNING", "PAUSED", "SUCCESS", "ERROR", "STOPPED"]},
            "type": {"enum": ["INITIAL", "INCREMENTAL"]},
            "finishedAt": _TIME,
            "nextScheduledSyncAt": _TIME,
            "frequency": _STRING,
            "latestResult": {
                "type": "object",
                "additionalProperties": _object(
                    {
                        "added": {"type": "integer"},
                        "updated": {"type": "integer"},
                        "deleted": {"type": "integer"},
                    }
                ),
            },
            "latestExecutionStatus": {
                "enum": ["RUNNING", "SUCCESS", "ERROR", "STOPPED", None],
            },
            "recordCount": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "id connection_id name status type finishedAt nextScheduledSyncAt frequency "
        "latestResult latestExecutionStatus recordCount",
    ),
    "FrequencyUpdate": _object(
        {
            "provider_config_key": _STRING,
            "connection_id": _STRING,
            "sync_name": _STRING,
            "frequency": {
                "type": ["string", "null"],
                "description": "e.g. `every 1h`; `null` restores the nango.yaml `runs`.",
            },
        },
        "provider_config_key connection_id sync_name frequency",
    ),
    "WebhookEvent": _object(
        {
            "id": _STRING,
            "provider_config_key": _STRING,
            "delivery_id": _NULLABLE_STRING,
            "event_type": _NULLABLE_STRING,
            "state": {"enum": [state.value for state in WebhookState]},
            "received_at": _TIME,
            "routed_at": _TIME,
            "runs_count": {"type": ["integer", "null"]},
            "error": _NULLABLE_STRING,
        },
        "id provider_config_key state received_at",
    ),
    "Notification": _object(
        {
            "id": {"type": "integer"},
            "run_id": {"type": ["integer", "null"]},
            "url": {"type": "string", "description": "Without credentials or query string."},
            "webhook_id": _STRING,
            "state": {"enum": [state.value for state in NotificationState]},
            "attempts": {"type": "integer"},
            "next_attempt_at": _TIME,
            "last_status": {"type": ["integer", "null"]},
            "last_error": _NULLABLE_STRING,
            "created_at": _TIME,
            "delivered_at": _TIME,
            "body": {"type": "object", "description": "The JSON body sent to the app."},
        },
        "id url webhook_id state attempts body",
    ),
    "SyncDescription": _object(
        {
            "name": _STRING,
            "models": _STRINGS,
            "runs": {"type": "string", "examples": ["every 30 seconds"]},
            "interval_seconds": {"type": "integer"},
            "sync_type": {"enum": ["incremental", "full"]},
            "track_deletes": {"type": "boolean"},
            "auto_start": {"type": "boolean"},
            "webhook_subscriptions": {
                **_STRINGS,
                "description": "Event types that run the sync's webhook handler; `*` = all; "
                "empty = the sync does not take webhooks.",
            },
            "description": _STRING,
            "endpoints": {"type": "array", "items": _ref("Endpoint")},
        },
        "name models runs interval_seconds sync_type track_deletes auto_start "
        "webhook_subscriptions description endpoints",
    ),
    "Endpoint": _object(
        {
            "method": {"enum": ["GET", "POST", "PATCH", "PUT", "DELETE"]},
            "path": _STRING,
            "group": _STRING,
        },
        "method path",
    ),
    "ModelSchema": _object(
        {
            "name": _STRING,
            "fields": {
                "type": "array",
                "items": _object(
                    {"name": _STRING, "type": {}, "optional": {"type": "boolean"}}, "name type"
                ),
            },
        },
        "name fields",
    ),
    "NangoSyncConfig": _object(
        {
            "name": _STRING,
            "type": {"const": "sync"},
            "runs": _STRING,
            "returns": _STRINGS,
            "description": _STRING,
            "track_deletes": {"type": "boolean"},
            "auto_start": {"type": "boolean"},
            "attributes": {"type": "object"},
            "scopes": _STRINGS,
            "version": _NULLABLE_STRING,
            "is_public": {"type": "boolean"},
            "pre_built": {"type": "boolean"},
            "endpoints": {"type": "array", "items": _ref("Endpoint")},
            "input": {"oneOf": [_ref("ModelSchema"), {"type": "null"}]},
            "enabled": {"type": "boolean"},
            "models": {"type": "array", "items": _ref("ModelSchema")},
            "sync_type": {"enum": ["incremental", "full"]},
            "webhookSubscriptions": _STRINGS,
            "json_schema": {"type": ["object", "null"]},
        },
        "name type runs returns track_deletes auto_start sync_type webhookSubscriptions "
        "endpoints description version",
    ),
    "SigningSecret": _object(
        {
            "standard_webhooks_secret": {"type": ["string", "null"], "pattern": "^whsec_"},
            "standard_webhooks_secrets": {
                **_STRINGS,
                "description": "Every active key during a rotation, the signing one first.",
            },
            "header": {"const": "X-Nango-Hmac-Sha256"},
        },
        "standard_webhooks_secret standard_webhooks_secrets header",
    ),
    "ReplayResult": {
        "allOf": [
            _ref("WebhookEvent"),
            _object(
                {"run_ids": _INTEGERS, "notification_ids": _INTEGERS},
                "run_ids notification_ids",
            ),
        ]
    },
    "NotificationEndpoint": _object(
        {
            "url": _STRING,
            "state": {"enum": ["active", "gone"]},
            "gone_at": _TIME,
            "gone_status": {"type": ["integer", "null"]},
        },
        "url state",
    ),
    "IntegrationSummary": _object(
        {
            "unique_key": _STRING,
            "provider": _STRING,
            "syncs": _STRINGS,
            "webhook_subscriptions": {**_STRINGS, "description": "Union over its syncs."},
        },
        "unique_key provider syncs webhook_subscriptions",
    ),
    "Integration": _object(
        {"unique_key": _STRING, "provider": _STRING, "syncs": _array("SyncDescription")},
        "unique_key provider syncs",
    ),
    "StandardNangoConfig": _object(
        {
            "providerConfigKey": _STRING,
            "provider": _STRING,
            "syncs": {"type": "array", "items": _ref("NangoSyncConfig")},
            "actions": {"type": "array", "items": {}, "maxItems": 0},
            "on-events": {"type": "array", "items": {}, "maxItems": 0},
        },
        "providerConfigKey syncs actions",
    ),
}

_RESPONSES: dict[str, Schema] = {
    name: _json(_ref("Error"), description)
    for name, description in (
        ("BadRequest", "A malformed parameter or body; `error.field` names it."),
        ("Unauthorized", "Missing or wrong bearer key (or, on `/webhook/*`, bad signature)."),
        ("NotFound", "Unknown integration, connection, event or notification."),
        ("Conflict", "The connection already exists."),
        ("PayloadTooLarge", "Body over the size limit."),
    )
}
_RESPONSES["Unavailable"] = _json(
    _ref("Error"),
    "Redis or the database is briefly unavailable; retry after `Retry-After` seconds.",
    headers={"Retry-After": {"schema": {"type": "integer"}}},
)


# --- paths ------------------------------------------------------------------------------


def _paths() -> dict[str, Schema]:
    records = _op(
        "records",
        "listRecords",
        "Nango's records API: changes since a cursor, ascending by modification sequence.",
        {"200": _json(_ref("RecordsPage"))},
        parameters=[
            _query("model", _STRING, "The model name, e.g. `Task`.", required=True),
            _query("cursor", _STRING, "`next_cursor` or a record's `_nango_metadata.cursor`."),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
                "Page size.",
            ),
            _query(
                "modified_after",
                {"type": "string", "format": "date-time"},
                "Strictly after this time (no zone = UTC).",
            ),
            _query(
                "filter",
                _STRING,
                f"Comma list of {', '.join(sorted(FILTERS))}: the union of those sets.",
            ),
            {
                **_query("ids", {"type": "array", "items": _STRING, "maxItems": MAX_IDS}, ""),
                "description": f"Record ids; repeatable or comma-separated, at most {MAX_IDS}.",
                "style": "form",
                "explode": True,
            },
            {"name": "Connection-Id", "in": "header", "required": True, "schema": _STRING},
            {"name": "Provider-Config-Key", "in": "header", "required": True, "schema": _STRING},
        ],
        errors=(400, 404),
    )
    records_slash = {
        **records,
        "operationId": "listRecordsSlash",
        "summary": "Same as `GET /records` (the path the official Nango Node client calls).",
    }
    webhook_responses = {
        "202": _json(
            _object({"status": {"const": "accepted"}, "id": _STRING}, "status id"),
            "Queued on Redis.",
        ),
        "200": _json(
            _object({"challenge": {}}, "challenge"), "Slack `url_verification` answered inline."
        ),
    }
    webhook_body = {
        "required": False,
        "description": "The provider's raw webhook; its signature is checked on these bytes.",
        "content": {"*/*": {"schema": {}}},
    }
    receiver_errors = (400, 401, 404, 413, 503)
    connection_id = _path("connection_id", "The connection id chosen at import.")
    metadata_body = _body(_ref("MetadataUpdate"))
    metadata_reply = {
        "200": _json(
            _object(
                {
                    "connection_id": {"oneOf": [_STRING, _STRINGS]},
                    "provider_config_key": _STRING,
                    "metadata": {"type": "object"},
                }
            )
        )
    }
    return {
        "/webhook/{provider_config_key}": {
            "post": _op(
                "webhooks",
                "receiveWebhook",
                "Receive an external API's webhook: verify its signature, queue it, 202.",
                webhook_responses,
                parameters=[_path("provider_config_key", "The integration key.")],
                body=webhook_body,
                public=True,
                errors=receiver_errors,
            )
        },
        "/webhook/{prefix}/{provider_config_key}": {
            "post": _op(
                "webhooks",
                "receiveWebhookPrefixed",
                "Same as `POST /webhook/{provider_config_key}`, under any prefix (may hold `/`).",
                webhook_responses,
                parameters=[
                    _path("prefix", "Ignored path segment(s), e.g. an environment name."),
                    _path("provider_config_key", "The integration key."),
                ],
                body=webhook_body,
                public=True,
                errors=receiver_errors,
            )
        },
        "/webhooks/events": {
            "get": _op(
                "webhooks",
                "listWebhookEvents",
                "Received webhooks, newest first, with their routing outcome.",
                _envelope("events", _array("WebhookEvent")),
                parameters=[
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        "How many.",
                    ),
                    _query("state", {"enum": [s.value for s in WebhookState]}, "Only this state."),
                    _query("provider_config_key", _STRING, "Only this integration."),
                ],
                errors=(400,),
            )
        },
        "/webhooks/events/{event_id}/replay": {
            "post": _op(
                "webhooks",
                "replayWebhookEvent",
                "Route a stored webhook again (bypassing the dedupe) and queue what it makes.",
                {"200": _json(_ref("ReplayResult"))},
                parameters=[_path("event_id", "The event id (`id` of `GET /webhooks/events`).")],
                errors=(404, 503),
            )
        },
        "/webhooks/signing-secret": {
            "get": _op(
                "webhooks",
                "getSigningSecret",
                "The Standard Webhooks secret(s) to verify hooksync's webhooks to the app.",
                {"200": _json(_ref("SigningSecret"))},
            )
        },
        "/records": {"get": records},
        "/records/": {"get": records_slash},
        "/connections": {
            "post": _op(
                "connections",
                "createConnection",
                "Import a connection with existing credentials (stored encrypted, never returned).",
                {"201": _json(_ref("Connection"), "Created.")},
                body=_body(_ref("ConnectionCreate")),
                errors=(400, 409),
            ),
            "get": _op(
                "connections",
                "listConnections",
                "List connections.",
                _envelope("connections", _array("Connection")),
                parameters=[
                    _KEY_QUERY,
                    _query("connection_id", _STRING, "Only this connection id."),
                ],
            ),
        },
        "/connections/{connection_id}": {
            "get": _op(
                "connections",
                "getConnection",
                "One connection, with `credentials: {type}` (never a secret).",
                {"200": _json(_ref("Connection"))},
                parameters=[connection_id, _KEY_QUERY],
                errors=(400, 404),
            ),
            "delete": _op(
                "connections",
                "deleteConnection",
                "Delete a connection with its records, schedules and runs.",
                {"204": {"description": "Deleted."}},
                parameters=[connection_id, _KEY_QUERY],
                errors=(400, 404),
            ),
        },
        "/connections/metadata": {
            "post": _op(
                "connections",
                "replaceConnectionMetadata",
                "Replace the metadata of one or more connections.",
                metadata_reply,
                body=metadata_body,
                errors=(400, 404),
            ),
            "patch": _op(
                "connections",
                "mergeConnectionMetadata",
                "Shallow-merge into the metadata of one or more connections.",
                metadata_reply,
                body=metadata_body,
                errors=(400, 404),
            ),
        },
        "/sync/trigger": {
            "post": _op(
                "syncs",
                "triggerSync",
                "Run syncs now; a sync already running is acknowledged without a second run.",
                {"200": _SUCCESS},
                body=_body(_ref("TriggerRequest")),
                errors=(400, 404),
            )
        },
        "/sync/pause": {
            "post": _op(
                "syncs",
                "pauseSync",
                "Stop scheduling the syncs (webhooks still run them).",
                {"200": _SUCCESS},
                body=_body(_ref("ControlRequest")),
                errors=(400, 404),
            )
        },
        "/sync/start": {
            "post": _op(
                "syncs",
                "startSync",
                "Resume the syncs on their frequency grid.",
                {"200": _SUCCESS},
                body=_body(_ref("ControlRequest")),
                errors=(400, 404),
            )
        },
        "/sync/status": {
            "get": _op(
                "syncs",
                "getSyncStatus",
                "Each sync's state, last and next run, latest result and record counts.",
                _envelope("syncs", _array("SyncStatus")),
                parameters=[
                    {**_KEY_QUERY, "required": True},
                    _query("syncs", _STRING, "Comma list of sync names, or `*`.", required=True),
                    _query("connection_id", _STRING, "Only this connection."),
                ],
                errors=(400, 404),
            )
        },
        "/sync/update-connection-frequency": {
            "put": _op(
                "syncs",
                "updateConnectionFrequency",
                "Override one sync's frequency for one connection.",
                _envelope("frequency", _STRING),
                body=_body(_ref("FrequencyUpdate")),
                errors=(400, 404),
            )
        },
        "/notifications": {
            "get": _op(
                "notifications",
                "listNotifications",
                "Completion-webhook deliveries (the outbox), newest first.",
                _envelope("notifications", _array("Notification")),
                parameters=[
                    _query(
                        "state", {"enum": [s.value for s in NotificationState]}, "Only this state."
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "How many.",
                    ),
                ],
                errors=(400,),
            )
        },
        "/notifications/endpoints": {
            "get": _op(
                "notifications",
                "listNotificationEndpoints",
                "Each configured app URL, `active` or `gone` (answered 410).",
                _envelope("endpoints", _array("NotificationEndpoint")),
            )
        },
        "/notifications/{notification_id}/retry": {
            "post": _op(
                "notifications",
                "retryNotification",
                "Requeue a failed or gone notification (re-enables its URL after a 410).",
                _envelope("notification", _ref("Notification")),
                parameters=[_path("notification_id", "The notification id.", {"type": "integer"})],
                errors=(404,),
            )
        },
        "/integrations": {
            "get": _op(
                "integrations",
                "listIntegrations",
                "The integrations of nango.yaml with their syncs and webhook subscriptions.",
                _envelope("integrations", _array("IntegrationSummary")),
            )
        },
        "/integrations/{key}": {
            "get": _op(
                "integrations",
                "getIntegration",
                "One integration: each sync's models, frequency and webhook subscriptions.",
                _envelope("integration", _ref("Integration")),
                parameters=[_path("key", "The integration key (`provider_config_key`).")],
                errors=(404,),
            )
        },
        "/scripts/config": {
            "get": _op(
                "integrations",
                "getScriptsConfig",
                "Nango's scripts config: one `StandardNangoConfig` per integration.",
                {"200": _json(_array("StandardNangoConfig"))},
            )
        },
        "/healthz": {
            "get": _op(
                "meta",
                "healthz",
                "Liveness (touches neither Redis nor the database).",
                _envelope("status", {"const": "ok"}),
                public=True,
            )
        },
        "/openapi.json": {
            "get": _op(
                "meta",
                "getOpenApi",
                "This document.",
                {"200": _json({"type": "object"})},
                public=True,
            )
        },
    }


def _envelope(key: str, schema: Schema) -> dict[str, Schema]:
    """``200`` with ``{key: schema}``, the API's wrapped responses."""
    return {"200": _json(_object({key: schema}, key))}
