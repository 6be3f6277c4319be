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

from flask import Blueprint, Response, jsonify

from cache.models import NotificationState, WebhookState
from cache.page import FILTERS, MAX_IDS, MAX_LIMIT
from ingress.integrations import SCRIPT_FORMATS
from ingress.openapi_schemas import (
    HEADER_TEXT,
    ID_PATH,
    KEY_QUERY,
    NON_EMPTY,
    RESPONSES,
    SCHEMAS,
    STRING,
    STRINGS,
    SUCCESS,
    TEXT,
    TIME_QUERY,
    Schema,
    array_of,
    envelope,
    json_body,
    json_response,
    object_schema,
    operation,
    path_param,
    query_param,
    ref,
)

__all__ = ["bp", "build_document"]

bp = Blueprint("openapi", __name__)

#: The project version shown in ``info.version`` (pyproject's ``version``).
API_VERSION = "0.1.0"


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
            "schemas": SCHEMAS,
            "responses": RESPONSES,
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

#: What ``GET /records?filter=`` accepts: a comma list of the filter names.
_FILTER_NAME = "(" + "|".join(sorted(FILTERS)) + ")"
_FILTER_PATTERN = f"^[ ,]*{_FILTER_NAME}( *,[ ,]*{_FILTER_NAME})*[ ,]*$"

_TAGS = ("webhooks", "records", "connections", "syncs", "notifications", "integrations", "meta")


# --- paths ------------------------------------------------------------------------------


def _paths() -> dict[str, Schema]:
    records = operation(
        "records",
        "listRecords",
        "Nango's records API: changes since a cursor, ascending by modification sequence.",
        {"200": json_response(ref("RecordsPage"))},
        parameters=[
            query_param("model", TEXT, "The model name, e.g. `Task`.", required=True),
            query_param("cursor", STRING, "`next_cursor` or a record's `_nango_metadata.cursor`."),
            query_param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
                "Page size.",
            ),
            query_param(
                "modified_after",
                {"type": "string", "format": "date-time"},
                "Strictly after this time (no zone = UTC).",
            ),
            query_param(
                "filter",
                {"type": "string", "pattern": _FILTER_PATTERN},
                f"Comma list of {', '.join(sorted(FILTERS))}: the union of those sets.",
            ),
            {
                **query_param(
                    "ids",
                    {
                        "type": "array",
                        "items": {"type": "string", "pattern": "[^,\\s]"},
                        "maxItems": MAX_IDS,
                    },
                    "",
                ),
                "description": f"Record ids; repeatable or comma-separated, at most {MAX_IDS}.",
                "style": "form",
                "explode": True,
            },
            *(
                {"name": name, "in": "header", "required": True, "schema": HEADER_TEXT}
                for name in ("Connection-Id", "Provider-Config-Key")
            ),
        ],
        errors=(400, 404),
    )
    records_slash = {
        **records,
        "operationId": "listRecordsSlash",
        "summary": "Same as `GET /records` (the path the official Nango Node client calls).",
    }
    webhook_responses = {
        "202": json_response(
            object_schema({"status": {"const": "accepted"}, "id": STRING}, "status id"),
            "Queued on Redis.",
        ),
        "200": json_response(
            object_schema({"challenge": {}}, "challenge"),
            "Slack `url_verification` answered inline.",
        ),
    }
    webhook_body = {
        "required": False,
        "description": "The provider's raw webhook; its signature is checked on these bytes.",
        "content": {"*/*": {"schema": {}}},
    }
    receiver_errors = (400, 401, 404, 413, 503)
    connection_id = path_param(
        "connection_id",
        "The connection id chosen at import (`metadata` is the metadata route; list such a "
        "connection with `GET /connections?connection_id=metadata`).",
        {"type": "string", "not": {"const": "metadata"}},
    )
    metadata_body = json_body(ref("MetadataUpdate"))
    metadata_reply = {
        "200": json_response(
            object_schema(
                {
                    "connection_id": {"oneOf": [STRING, STRINGS]},
                    "provider_config_key": STRING,
                    "metadata": {"type": "object"},
                }
            )
        )
    }
    return {
        "/webhook/{provider_config_key}": {
            "post": operation(
                "webhooks",
                "receiveWebhook",
                "Receive an external API's webhook: verify its signature, queue it, 202.",
                webhook_responses,
                parameters=[path_param("provider_config_key", "The integration key.")],
                body=webhook_body,
                public=True,
                errors=receiver_errors,
            )
        },
        "/webhook/{prefix}/{provider_config_key}": {
            "post": operation(
                "webhooks",
                "receiveWebhookPrefixed",
                "Same as `POST /webhook/{provider_config_key}`, under any prefix (may hold `/`).",
                webhook_responses,
                parameters=[
                    path_param("prefix", "Ignored path segment(s), e.g. an environment name."),
                    path_param("provider_config_key", "The integration key."),
                ],
                body=webhook_body,
                public=True,
                errors=receiver_errors,
            )
        },
        "/webhooks/events": {
            "get": operation(
                "webhooks",
                "listWebhookEvents",
                "Received webhooks, newest first, with their routing outcome and the runs "
                "each caused.",
                envelope("events", array_of("WebhookEventWithRuns")),
                parameters=[
                    query_param(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        "How many.",
                    ),
                    query_param(
                        "state", {"enum": [s.value for s in WebhookState]}, "Only this state."
                    ),
                    query_param("provider_config_key", NON_EMPTY, "Only this integration."),
                    query_param("since", TIME_QUERY, "Received at or after (ISO 8601)."),
                    query_param("until", TIME_QUERY, "Received before (ISO 8601)."),
                ],
                errors=(400,),
            )
        },
        "/webhooks/events/{event_id}": {
            "get": operation(
                "webhooks",
                "getWebhookEvent",
                "One received webhook: its runs, its headers (credential-like ones "
                "`[redacted]`) and its raw body.",
                {"200": json_response(ref("WebhookEventDetail"))},
                parameters=[
                    path_param("event_id", "The event id (`id` of `GET /webhooks/events`).")
                ],
                errors=(404,),
            )
        },
        "/webhooks/events/{event_id}/replay": {
            "post": operation(
                "webhooks",
                "replayWebhookEvent",
                "Route a stored webhook again (bypassing the dedupe) and queue what it makes.",
                {"200": json_response(ref("ReplayResult"))},
                parameters=[
                    path_param("event_id", "The event id (`id` of `GET /webhooks/events`).")
                ],
                errors=(404, 503),
            )
        },
        "/webhooks/signing-secret": {
            "get": operation(
                "webhooks",
                "getSigningSecret",
                "The Standard Webhooks secret(s) to verify hooksync's webhooks to the app.",
                {"200": json_response(ref("SigningSecret"))},
            )
        },
        "/records": {"get": records},
        "/records/": {"get": records_slash},
        "/connections": {
            "post": operation(
                "connections",
                "createConnection",
                "Import a connection with existing credentials (stored encrypted, never returned).",
                {"201": json_response(ref("Connection"), "Created.")},
                body=json_body(ref("ConnectionCreate")),
                errors=(400, 409),
            ),
            "get": operation(
                "connections",
                "listConnections",
                "List connections.",
                envelope("connections", array_of("Connection")),
                parameters=[
                    KEY_QUERY,
                    query_param("connection_id", STRING, "Only this connection id."),
                    query_param(
                        "search",
                        {**NON_EMPTY, "maxLength": 255},
                        "Only connection ids containing this text, in any case.",
                    ),
                ],
                errors=(400,),
            ),
        },
        "/connections/{connection_id}": {
            "get": operation(
                "connections",
                "getConnection",
                "One connection, with `credentials: {type}` (never a secret).",
                {"200": json_response(ref("Connection"))},
                parameters=[connection_id, KEY_QUERY],
                errors=(400, 404, 405),
            ),
            "patch": operation(
                "connections",
                "updateConnectionCredentials",
                "Replace a connection's credentials; a `refresh_failed` connection becomes "
                "`active` and its polls resume.",
                {"200": json_response(ref("Connection"))},
                parameters=[connection_id],
                body=json_body(ref("CredentialsUpdate")),
                errors=(400, 404, 405),
            ),
            "delete": operation(
                "connections",
                "deleteConnection",
                "Delete a connection with its records, schedules and runs.",
                {"204": {"description": "Deleted."}},
                parameters=[connection_id, KEY_QUERY],
                errors=(400, 404, 405),
            ),
        },
        "/connections/metadata": {
            "post": operation(
                "connections",
                "replaceConnectionMetadata",
                "Replace the metadata of one or more connections.",
                metadata_reply,
                body=metadata_body,
                errors=(400, 404),
            ),
            "patch": operation(
                "connections",
                "mergeConnectionMetadata",
                "Shallow-merge into the metadata of one or more connections.",
                metadata_reply,
                body=metadata_body,
                errors=(400, 404),
            ),
        },
        "/sync/trigger": {
            "post": operation(
                "syncs",
                "triggerSync",
                "Run syncs now; a sync already running is acknowledged without a second run.",
                {"200": SUCCESS},
                body=json_body(ref("TriggerRequest")),
                errors=(400, 404),
            )
        },
        "/sync/pause": {
            "post": operation(
                "syncs",
                "pauseSync",
                "Stop scheduling the syncs (webhooks still run them).",
                {"200": SUCCESS},
                body=json_body(ref("ControlRequest")),
                errors=(400, 404),
            )
        },
        "/sync/start": {
            "post": operation(
                "syncs",
                "startSync",
                "Resume the syncs on their frequency grid.",
                {"200": SUCCESS},
                body=json_body(ref("ControlRequest")),
                errors=(400, 404),
            )
        },
        "/sync/status": {
            "get": operation(
                "syncs",
                "getSyncStatus",
                "Each sync's state, last and next run, latest result and record counts.",
                envelope("syncs", array_of("SyncStatus")),
                parameters=[
                    {**KEY_QUERY, "required": True, "schema": NON_EMPTY},
                    query_param(
                        "syncs",
                        {"type": "string", "pattern": "[^,\\s]"},
                        "Comma list of sync names, or `*`.",
                        required=True,
                    ),
                    query_param("connection_id", STRING, "Only this connection."),
                ],
                errors=(400, 404),
            )
        },
        "/sync/update-connection-frequency": {
            "put": operation(
                "syncs",
                "updateConnectionFrequency",
                "Override one sync's frequency for one connection.",
                envelope("frequency", STRING),
                body=json_body(ref("FrequencyUpdate")),
                errors=(400, 404),
            )
        },
        "/notifications": {
            "get": operation(
                "notifications",
                "listNotifications",
                "Completion-webhook deliveries (the outbox), newest first.",
                envelope("notifications", array_of("Notification")),
                parameters=[
                    query_param(
                        "state", {"enum": [s.value for s in NotificationState]}, "Only this state."
                    ),
                    query_param(
                        "connection_id",
                        {**NON_EMPTY, "maxLength": 255},
                        "Only those about this connection id (any integration).",
                    ),
                    query_param("since", TIME_QUERY, "Created at or after (ISO 8601)."),
                    query_param("until", TIME_QUERY, "Created before (ISO 8601)."),
                    query_param(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "How many.",
                    ),
                ],
                errors=(400,),
            )
        },
        "/notifications/{notification_id}": {
            "get": operation(
                "notifications",
                "getNotification",
                "One notification and every attempt to send it, oldest first.",
                {"200": json_response(ref("NotificationDetail"))},
                parameters=[path_param("notification_id", "The notification id.", ID_PATH)],
                errors=(404,),
            )
        },
        "/notifications/retry-failed": {
            "post": operation(
                "notifications",
                "retryFailedNotifications",
                "Requeue every failed or gone notification created since a time (re-enables "
                "their URLs after a 410).",
                {"200": json_response(ref("RetryFailedResult"))},
                parameters=[
                    query_param(
                        "since", TIME_QUERY, "Created at or after (ISO 8601).", required=True
                    )
                ],
                errors=(400,),
            )
        },
        "/notifications/endpoints/{endpoint_key}/enable": {
            "post": operation(
                "notifications",
                "enableNotificationEndpoint",
                "Clear a 410's mark on a configured app URL (its stopped notifications stay "
                "`gone`: retry them).",
                envelope("endpoint", ref("NotificationEndpoint")),
                parameters=[
                    path_param(
                        "endpoint_key", "The endpoint's `id` from `GET /notifications/endpoints`."
                    )
                ],
                errors=(404,),
            )
        },
        "/notifications/endpoints": {
            "get": operation(
                "notifications",
                "listNotificationEndpoints",
                "Each configured app URL, `active` or `gone` (answered 410).",
                envelope("endpoints", array_of("NotificationEndpoint")),
            )
        },
        "/notifications/{notification_id}/retry": {
            "post": operation(
                "notifications",
                "retryNotification",
                "Requeue a failed or gone notification (re-enables its URL after a 410); a "
                "delivered one is refused with 400 `not_retryable`.",
                envelope("notification", ref("Notification")),
                parameters=[path_param("notification_id", "The notification id.", ID_PATH)],
                errors=(400, 404),
            )
        },
        "/integrations": {
            "get": operation(
                "integrations",
                "listIntegrations",
                "The integrations of nango.yaml with their syncs and webhook subscriptions.",
                envelope("integrations", array_of("IntegrationSummary")),
            )
        },
        "/integrations/{key}": {
            "get": operation(
                "integrations",
                "getIntegration",
                "One integration: each sync's models, frequency and webhook subscriptions.",
                envelope("integration", ref("Integration")),
                parameters=[path_param("key", "The integration key (`provider_config_key`).")],
                errors=(404,),
            )
        },
        "/scripts/config": {
            "get": operation(
                "integrations",
                "getScriptsConfig",
                "Nango's scripts config: one `StandardNangoConfig` per integration; with "
                "`format=openai`, `{data: []}` (OpenAI functions describe actions, and "
                "hooksync runs none).",
                {
                    "200": json_response(
                        {
                            "oneOf": [
                                array_of("StandardNangoConfig"),
                                object_schema(
                                    {"data": {"type": "array", "maxItems": 0}}, required="data"
                                ),
                            ]
                        }
                    )
                },
                parameters=[
                    query_param(
                        "format",
                        {"enum": list(SCRIPT_FORMATS), "default": "nango"},
                        "The shape of the answer (the Node client sends `nango`).",
                    )
                ],
                errors=(400,),
            )
        },
        "/healthz": {
            "get": operation(
                "meta",
                "healthz",
                "Liveness (touches neither Redis nor the database).",
                envelope("status", {"const": "ok"}),
                public=True,
            )
        },
        "/openapi.json": {
            "get": operation(
                "meta",
                "getOpenApi",
                "This document.",
                {"200": json_response({"type": "object"})},
                public=True,
            )
        },
        "/metrics": {
            "get": operation(
                "meta",
                "getMetrics",
                "Prometheus metrics of this machine's processes, in the text exposition format "
                "(no key needed when `HOOKSYNC_METRICS_PUBLIC=true`).",
                {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
    }
