"""The building blocks of the OpenAPI document served by :mod:`ingress.openapi`.

Small builders for the recurring shapes (``$ref``, JSON bodies and responses, parameters,
operations) and the reusable ``components``: ``SCHEMAS`` and ``RESPONSES``. Pure data, no
Flask; ``ingress/openapi.py`` keeps the blueprint and the paths.
"""

from __future__ import annotations

from typing import Any

from cache.models import ConnectionState, NotificationState, WebhookState

__all__ = [
    "Schema",
    "ref",
    "array_of",
    "json_response",
    "error_responses",
    "json_body",
    "query_param",
    "path_param",
    "operation",
    "object_schema",
    "envelope",
    "STRING",
    "NON_EMPTY",
    "TEXT",
    "ID_TEXT",
    "HEADER_TEXT",
    "TIME_QUERY",
    "ID_PATH",
    "NULLABLE_STRING",
    "TIME",
    "STRINGS",
    "INTEGERS",
    "KEY_QUERY",
    "SUCCESS",
    "SYNC_NAMES",
    "CONTROL",
    "SCHEMAS",
    "RESPONSES",
]

Schema = dict[str, Any]


# --- small builders -------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> Schema:
    return {"type": "array", "items": ref(name)}


def json_response(schema: Schema, description: str = "OK", **extra: Any) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def error_responses(*statuses: int) -> dict[str, Schema]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        413: "PayloadTooLarge",
        414: "UriTooLong",
        503: "Unavailable",
    }
    return {str(status): {"$ref": f"#/components/responses/{names[status]}"} for status in statuses}


def json_body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def query_param(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string"},
        "description": description,
    }


def operation(
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
    op: Schema = {"tags": [tag], "operationId": operation_id, "summary": summary}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    # Any request may be one the HTTP server cannot parse (a control character in a
    # header: 400; a request line over its limit: 414), answered before any view runs.
    statuses = (*errors, *SERVER_ERRORS) if public else (401, *errors, *SERVER_ERRORS)
    op["responses"] = {**responses, **error_responses(*sorted(set(statuses)))}
    return op


#: Statuses gunicorn itself answers (as JSON, ``ingress.gunicorn_worker``) to any request.
SERVER_ERRORS = (400, 414)

STRING: Schema = {"type": "string"}
#: A string parameter the code needs a value for (``?key=`` empty is a 400).
NON_EMPTY: Schema = {"type": "string", "minLength": 1}
#: A value the code strips first: it needs a character other than white space.
TEXT: Schema = {"type": "string", "pattern": "\\S"}
#: An id the code strips and refuses blank, at most 255 characters.
ID_TEXT: Schema = {"type": "string", "maxLength": 255, "pattern": "\\S"}
#: A header value: printable ASCII (HTTP carries nothing else reliably), not blank.
HEADER_TEXT: Schema = {"type": "string", "pattern": "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$"}
#: An ISO 8601 time in a query (zone-less = UTC).
TIME_QUERY: Schema = {"type": "string", "format": "date-time", "minLength": 1}
#: A row id in a path: the databases' 64-bit integers (a larger one is a 404).
ID_PATH: Schema = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
STRINGS: Schema = {"type": "array", "items": STRING}
INTEGERS: Schema = {"type": "array", "items": {"type": "integer"}}
KEY_QUERY = query_param(
    "provider_config_key",
    STRING,
    "The integration key from nango.yaml (`providerConfigKey` is accepted too).",
)
SUCCESS = json_response(
    {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"const": True}},
    }
)


# --- schemas ----------------------------------------------------------------------------


def object_schema(properties: dict[str, Schema], required: str = "", **extra: Any) -> Schema:
    """An object schema; ``required`` lists the required property names, space-separated."""
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required.split()
    return schema


SYNC_NAMES: Schema = {
    "description": "Sync names: a list (of names or `{name}` objects; `[]` = every sync), "
    "a comma-separated string, or `*`.",
    "oneOf": [
        {
            "type": "array",
            "items": {"oneOf": [NON_EMPTY, object_schema({"name": NON_EMPTY}, "name")]},
        },
        {"type": "string", "pattern": "[^,\\s]"},
    ],
}

CONTROL = object_schema(
    {
        "provider_config_key": NON_EMPTY,
        "syncs": SYNC_NAMES,
        "connection_id": {
            **NON_EMPTY,
            "description": "One connection; absent = every connection of the integration.",
        },
    },
    "provider_config_key syncs",
)

SCHEMAS: dict[str, Schema] = {
    "Error": object_schema(
        {
            "error": object_schema(
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
            object_schema({"type": {"const": "API_KEY"}, "api_key": STRING}, "type api_key"),
            object_schema(
                {"type": {"const": "BASIC"}, "username": STRING, "password": STRING},
                "type username password",
            ),
            object_schema(
                {
                    "type": {"const": "OAUTH2"},
                    "access_token": STRING,
                    "refresh_token": STRING,
                    "expires_at": {**STRING, "format": "date-time"},
                    "token_url": {
                        **STRING,
                        "format": "uri",
                        "description": "The provider's OAuth2 token endpoint; with a "
                        "`refresh_token`, hooksync refreshes the token before it expires.",
                    },
                    "client_id": STRING,
                    "client_secret": STRING,
                },
                "type access_token",
            ),
            object_schema(
                {
                    "type": {"const": "APP"},
                    "app_id": {"oneOf": [{"type": "integer"}, STRING]},
                    "installation_id": {"oneOf": [{"type": "integer"}, STRING]},
                    "private_key": {**STRING, "description": "The GitHub App's PEM private key."},
                    "access_token": STRING,
                    "expires_at": {**STRING, "format": "date-time"},
                },
                "type app_id installation_id private_key",
                description="A GitHub App installation: its tokens are minted from the key.",
            ),
            object_schema({"type": {"const": "NONE"}}, "type"),
        ]
    },
    "ConnectionCreate": object_schema(
        {
            "provider_config_key": NON_EMPTY,
            "connection_id": ID_TEXT,
            "credentials": ref("Credentials"),
            "metadata": {"type": "object"},
        },
        "provider_config_key connection_id credentials",
    ),
    "Connection": object_schema(
        {
            "id": {"type": "integer"},
            "connection_id": STRING,
            "provider_config_key": STRING,
            "provider": STRING,
            "created": TIME,
            "created_at": TIME,
            "updated_at": TIME,
            "metadata": {"type": "object"},
            "state": {
                "enum": [state.value for state in ConnectionState],
                "description": "`refresh_failed`: its token refresh was refused; its polls "
                "stop until new credentials are PATCHed.",
            },
            "state_error": {**NULLABLE_STRING, "description": "Why it is not `active`."},
            "credentials": object_schema(
                {
                    "type": {"enum": ["API_KEY", "BASIC", "OAUTH2", "APP", "NONE"]},
                    "expires_at": {**STRING, "format": "date-time"},
                    "app_id": STRING,
                    "installation_id": STRING,
                },
                "type",
                description="Only on `GET` and `PATCH /connections/{connection_id}`: the type "
                "and when the token expires, never a secret.",
            ),
        },
        "id connection_id provider_config_key metadata state",
    ),
    "CredentialsUpdate": object_schema(
        {"provider_config_key": NON_EMPTY, "credentials": ref("Credentials")},
        "provider_config_key credentials",
    ),
    "MetadataUpdate": object_schema(
        {
            "provider_config_key": NON_EMPTY,
            "connection_id": {
                "oneOf": [ID_TEXT, {"type": "array", "items": ID_TEXT, "minItems": 1}]
            },
            "metadata": {"type": "object"},
        },
        "provider_config_key connection_id metadata",
    ),
    "Record": {
        "type": "object",
        "description": "The record as the script saved it, plus `_nango_metadata`.",
        "required": ["id", "_nango_metadata"],
        "properties": {
            "id": STRING,
            "_nango_metadata": object_schema(
                {
                    "first_seen_at": {"type": "string", "format": "date-time"},
                    "last_modified_at": {"type": "string", "format": "date-time"},
                    "last_action": {"enum": ["ADDED", "UPDATED", "DELETED"]},
                    "deleted_at": TIME,
                    "cursor": STRING,
                },
                "first_seen_at last_modified_at last_action deleted_at cursor",
            ),
        },
        "additionalProperties": True,
    },
    "RecordsPage": object_schema(
        {
            "records": {"type": "array", "items": ref("Record")},
            "next_cursor": NULLABLE_STRING,
        },
        "records next_cursor",
    ),
    "TriggerRequest": {
        **CONTROL,
        "properties": {
            **CONTROL["properties"],
            "opts": object_schema(
                {"reset": {"type": "boolean"}, "emptyCache": {"type": "boolean"}}
            ),
            "sync_mode": {
                "enum": ["incremental", "full_refresh", "full_refresh_and_clear_cache"],
                "description": "Legacy form of `opts`.",
            },
        },
    },
    "ControlRequest": CONTROL,
    "SyncStatus": object_schema(
        {
            "id": {"type": ["integer", "null"]},
            "connection_id": STRING,
            "name": STRING,
            "status": {"enum": ["RUNNING", "PAUSED", "SUCCESS", "ERROR", "STOPPED"]},
            "type": {"enum": ["INITIAL", "INCREMENTAL"]},
            "finishedAt": TIME,
            "nextScheduledSyncAt": TIME,
            "frequency": STRING,
            "latestResult": {
                "type": "object",
                "additionalProperties": object_schema(
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
    "FrequencyUpdate": object_schema(
        {
            "provider_config_key": NON_EMPTY,
            "connection_id": NON_EMPTY,
            "sync_name": NON_EMPTY,
            "frequency": {
                "type": ["string", "null"],
                "description": "e.g. `every 1h`; `null` restores the nango.yaml `runs`.",
            },
        },
        "provider_config_key connection_id sync_name frequency",
    ),
    "WebhookEvent": object_schema(
        {
            "id": STRING,
            "provider_config_key": STRING,
            "delivery_id": NULLABLE_STRING,
            "event_type": NULLABLE_STRING,
            "state": {"enum": [state.value for state in WebhookState]},
            "received_at": TIME,
            "routed_at": TIME,
            "runs_count": {"type": ["integer", "null"]},
            "error": NULLABLE_STRING,
        },
        "id provider_config_key state received_at",
    ),
    "WebhookEventWithRuns": {
        "allOf": [
            ref("WebhookEvent"),
            object_schema({"runs": array_of("EventRun")}, "runs"),
        ]
    },
    "EventRun": object_schema(
        {
            "id": {"type": "integer"},
            "connection_id": NULLABLE_STRING,
            "sync_name": STRING,
            "sync_type": {"enum": ["INITIAL", "INCREMENTAL", "WEBHOOK"]},
            "state": {"enum": ["queued", "running", "success", "error", "cancelled"]},
            "started_at": TIME,
            "finished_at": TIME,
            "error_type": NULLABLE_STRING,
            "error": NULLABLE_STRING,
        },
        "id connection_id sync_name sync_type state started_at finished_at error",
        description="A run the event caused, and how it ended.",
    ),
    "WebhookEventDetail": {
        "allOf": [
            ref("WebhookEventWithRuns"),
            object_schema(
                {
                    "url": STRING,
                    "headers": {
                        "type": "object",
                        "additionalProperties": STRING,
                        "description": "As received, names lower-cased; `authorization`, "
                        "`proxy-authorization`, `cookie`, `x-api-key` and any name holding "
                        "`secret` or `token` read `[redacted]`.",
                    },
                    "body": {
                        "type": "string",
                        "description": "The raw body: its text, or base64 (see `body_encoding`).",
                    },
                    "body_encoding": {"enum": ["utf-8", "base64"]},
                },
                "url headers body body_encoding",
            ),
        ]
    },
    "NotificationDetail": object_schema(
        {"notification": ref("Notification"), "attempts": array_of("NotificationAttempt")},
        "notification attempts",
    ),
    "NotificationAttempt": object_schema(
        {
            "attempt": {
                "type": "integer",
                "description": "1 for the first POST of a retry cycle.",
            },
            "attempted_at": {"type": "string", "format": "date-time"},
            "status": {
                "type": ["integer", "null"],
                "description": "The app's HTTP status; null for a network error.",
            },
            "error": NULLABLE_STRING,
            "duration_ms": {"type": "integer"},
        },
        "attempt attempted_at status error duration_ms",
    ),
    "RetryFailedResult": object_schema(
        {
            "retried": {"type": "integer"},
            "ids": INTEGERS,
            "since": {"type": "string", "format": "date-time"},
        },
        "retried ids since",
    ),
    "Notification": object_schema(
        {
            "id": {"type": "integer"},
            "run_id": {"type": ["integer", "null"]},
            "url": {"type": "string", "description": "Without credentials or query string."},
            "endpoint_id": {
                "type": "string",
                "description": "The `id` of its URL in `GET /notifications/endpoints`.",
            },
            "webhook_id": STRING,
            "state": {"enum": [state.value for state in NotificationState]},
            "attempts": {"type": "integer"},
            "next_attempt_at": TIME,
            "last_status": {"type": ["integer", "null"]},
            "last_error": NULLABLE_STRING,
            "created_at": TIME,
            "delivered_at": TIME,
            "waiting_behind": {
                "type": "integer",
                "description": "Pending notifications of its stream (app URL, connection, "
                "sync, model) held back until this one is delivered or given up.",
            },
            "body": {"type": "object", "description": "The JSON body sent to the app."},
        },
        "id url webhook_id state attempts body",
    ),
    "SyncDescription": object_schema(
        {
            "name": STRING,
            "models": STRINGS,
            "runs": {"type": "string", "examples": ["every 30 seconds"]},
            "interval_seconds": {"type": "integer"},
            "sync_type": {"enum": ["incremental", "full"]},
            "track_deletes": {"type": "boolean"},
            "auto_start": {"type": "boolean"},
            "webhook_subscriptions": {
                **STRINGS,
                "description": "Event types that run the sync's webhook handler; `*` = all; "
                "empty = the sync does not take webhooks.",
            },
            "description": STRING,
            "endpoints": {"type": "array", "items": ref("Endpoint")},
        },
        "name models runs interval_seconds sync_type track_deletes auto_start "
        "webhook_subscriptions description endpoints",
    ),
    "Endpoint": object_schema(
        {
            "method": {"enum": ["GET", "POST", "PATCH", "PUT", "DELETE"]},
            "path": STRING,
            "group": STRING,
        },
        "method path",
    ),
    "ModelSchema": object_schema(
        {
            "name": STRING,
            "fields": {
                "type": "array",
                "items": object_schema(
                    {"name": STRING, "type": {}, "optional": {"type": "boolean"}}, "name type"
                ),
            },
        },
        "name fields",
    ),
    "NangoSyncConfig": object_schema(
        {
            "name": STRING,
            "type": {"const": "sync"},
            "runs": STRING,
            "returns": STRINGS,
            "description": STRING,
            "track_deletes": {"type": "boolean"},
            "auto_start": {"type": "boolean"},
            "attributes": {"type": "object"},
            "scopes": STRINGS,
            "version": NULLABLE_STRING,
            "is_public": {"type": "boolean"},
            "pre_built": {"type": "boolean"},
            "endpoints": {"type": "array", "items": ref("Endpoint")},
            "input": {"oneOf": [ref("ModelSchema"), {"type": "null"}]},
            "enabled": {"type": "boolean"},
            "models": {"type": "array", "items": ref("ModelSchema")},
            "sync_type": {"enum": ["incremental", "full"]},
            "webhookSubscriptions": STRINGS,
            "json_schema": {"type": ["object", "null"]},
        },
        "name type runs returns track_deletes auto_start sync_type webhookSubscriptions "
        "endpoints description version",
    ),
    "SigningSecret": object_schema(
        {
            "standard_webhooks_secret": {"type": ["string", "null"], "pattern": "^whsec_"},
            "standard_webhooks_secrets": {
                **STRINGS,
                "description": "Every active key during a rotation, the signing one first.",
            },
            "header": {"const": "X-Nango-Hmac-Sha256"},
        },
        "standard_webhooks_secret standard_webhooks_secrets header",
    ),
    "ReplayResult": {
        "allOf": [
            ref("WebhookEvent"),
            object_schema(
                {"run_ids": INTEGERS, "notification_ids": INTEGERS},
                "run_ids notification_ids",
            ),
        ]
    },
    "NotificationEndpoint": object_schema(
        {
            "id": {
                "type": "string",
                "pattern": "^[0-9a-f]{12}$",
                "description": "Stable: the first 12 hex digits of the URL's sha256.",
            },
            "url": STRING,
            "state": {"enum": ["active", "gone"]},
            "gone_at": TIME,
            "gone_status": {"type": ["integer", "null"]},
        },
        "id url state",
    ),
    "IntegrationSummary": object_schema(
        {
            "unique_key": STRING,
            "provider": STRING,
            "syncs": STRINGS,
            "webhook_subscriptions": {**STRINGS, "description": "Union over its syncs."},
        },
        "unique_key provider syncs webhook_subscriptions",
    ),
    "Integration": object_schema(
        {"unique_key": STRING, "provider": STRING, "syncs": array_of("SyncDescription")},
        "unique_key provider syncs",
    ),
    "StandardNangoConfig": object_schema(
        {
            "providerConfigKey": STRING,
            "provider": STRING,
            "syncs": {"type": "array", "items": ref("NangoSyncConfig")},
            "actions": {"type": "array", "items": {}, "maxItems": 0},
            "on-events": {"type": "array", "items": {}, "maxItems": 0},
        },
        "providerConfigKey syncs actions",
    ),
}

RESPONSES: dict[str, Schema] = {
    name: json_response(ref("Error"), description)
    for name, description in (
        (
            "BadRequest",
            "A malformed parameter or body (`error.field` names it), or a request the HTTP "
            "server cannot parse.",
        ),
        ("Unauthorized", "Missing or wrong bearer key (or, on `/webhook/*`, bad signature)."),
        ("NotFound", "Unknown integration, connection, event or notification."),
        ("MethodNotAllowed", "Not served here (`/connections/metadata` takes POST and PATCH)."),
        ("Conflict", "The connection already exists."),
        ("PayloadTooLarge", "Body over the size limit."),
        ("UriTooLong", "Request line (path and query) over the HTTP server's limit."),
    )
}
RESPONSES["Unavailable"] = json_response(
    ref("Error"),
    "Redis or the database is briefly unavailable; retry after `Retry-After` seconds.",
    headers={"Retry-After": {"schema": {"type": "integer"}}},
)


def envelope(key: str, schema: Schema) -> dict[str, Schema]:
    """``200`` with ``{key: schema}``, the API's wrapped responses."""
    return {"200": json_response(object_schema({key: schema}, key))}
