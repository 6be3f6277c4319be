"""External webhooks in (ARCHITECTURE.md §6), and the API to list and replay received events.

The receiver (``POST /webhook/<provider_config_key>``) runs its checks in this order, each
failure a JSON error: unknown integration → 404; body over ``HOOKSYNC_MAX_WEBHOOK_BYTES`` →
413; bad or missing signature → 401; unparsable or unacceptable body (nested deeper than
``workers.payloads.MAX_DEPTH`` levels, a lone surrogate) → 400. Slack's ``url_verification``
handshake is answered inline. Anything else is put on Redis for a worker to route, and the
202 is sent only after Redis acknowledged the write (503 with ``Retry-After`` when it did
not). The receiver never touches the database, so ingestion keeps working while the
database is slow or down.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import OperationalError as KombuOperationalError

from cache.context import AppContext
from cache.db import read_scope, session_scope
from cache.models import SyncRun, WebhookEvent, WebhookState
from cache.timestamps import api_optional_time, api_time
from config.errors import BadInputError, RetriableError
from ingress.auth import current_context, require_api_key
from ingress.errors import RETRY_AFTER_SECONDS, error_response
from ingress.logs import note
from ingress.metrics import UNKNOWN_INTEGRATION, count_received
from ingress.params import choice_param, limit_param, text_param, time_param
from ingress.provider_signatures import SignatureError, get_scheme
from ingress.proxy import public_request_url
from workers import events
from workers.app_webhooks import redact_url
from workers.enqueue import enqueue_after_commit, enqueue_webhook
from workers.events import RouteResult, replay_event
from workers.payloads import redact_headers
from workers.rejections import count_rejection
from workers.routing import parse_body, routing_headers

__all__ = [
    "body_to_json",
    "bp",
    "build_event",
    "event_to_json",
    "replay_and_enqueue",
    "run_to_json",
]

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

#: Request headers never copied into the queued event (they are the caller's, not the
#: provider's, and may be credentials).
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

#: ``GET /webhooks/events?limit=`` default.
_DEFAULT_LIMIT = 50
_STATES = tuple(state.value for state in WebhookState)

_READ_CHUNK = 64 * 1024


@bp.post("/webhook/<provider_config_key>")
@bp.post("/webhook/<path:prefix>/<provider_config_key>")
def receive_webhook(provider_config_key: str, prefix: str | None = None) -> Any:
    """Verify, then queue one external webhook. Touches Redis only."""
    ctx = current_context()
    integration = ctx.integrations.by_key.get(provider_config_key)
    if integration is None:
        _count_refused(ctx, UNKNOWN_INTEGRATION, "unknown_integration")
        return error_response(
            404,
            "unknown_integration",
            f"no integration named {provider_config_key[:100]!r} is configured",
        )

    limit = ctx.settings.max_webhook_bytes
    if request.content_length is not None and request.content_length > limit:
        _count_refused(ctx, provider_config_key, "payload_too_large")
        return _too_large(limit)
    # Content-Length can be absent (chunked) or wrong: read at most limit + 1 bytes.
    raw = _read_body(limit)
    if len(raw) > limit:
        _count_refused(ctx, provider_config_key, "payload_too_large")
        return _too_large(limit)

    headers = {name.lower(): value for name, value in request.headers.items()}
    provider = integration.provider
    signature = provider.webhook.signature
    if signature.scheme != "none" and not provider.webhook_secrets:
        _count_refused(ctx, provider_config_key, "webhook_secret_missing")
        return error_response(
            401,
            "webhook_secret_missing",
            f"webhook_secret is not configured for provider {provider_config_key!r}, so its "
            f"{signature.scheme!r} signature cannot be checked; set "
            f"providers.{provider_config_key}.webhook_secret in nango.yaml",
        )
    # The URL the provider called and signed (HubSpot v3), not the proxy's internal one.
    url = public_request_url(request.url, request.root_url, ctx.settings.public_url)
    try:
        get_scheme(signature.scheme).verify(
            secrets=provider.webhook_secrets,
            body=raw,
            headers=headers,
            method=request.method,
            url=url,
            now=time.time(),
            config=signature,
        )
    except SignatureError as error:
        _count_refused(ctx, provider_config_key, error.code)
        return error_response(401, error.code, str(error), field=error.field)

    try:
        body = parse_body(raw, headers.get("content-type"))
    except BadInputError as error:
        _count_refused(ctx, provider_config_key, error.code)
        return error_response(400, error.code, str(error), field=error.field)

    if isinstance(body, dict) and body.get("type") == "url_verification" and "challenge" in body:
        # Slack's handshake when the events URL is saved: echo the challenge, queue nothing.
        count_received(provider_config_key, "verification")
        return jsonify({"challenge": body["challenge"]})

    event = build_event(
        provider_config_key,
        method=request.method,
        url=url,
        headers=headers.items(),
        raw=raw,
        keep=routing_headers(provider.webhook),
    )
    # From here every line of this request, and its access line, carries the event id.
    note(event_id=event["id"], integration=provider_config_key)
    try:
        enqueue_webhook(ctx, event)
    except (RetriableError, redis.RedisError, KombuOperationalError, OSError):
        log.warning(
            "could not queue webhook %s for %r; answered 503",
            event["id"],
            provider_config_key,
            exc_info=True,
        )
        count_received(provider_config_key, "rejected", "queue_unavailable")
        return error_response(
            503,
            "queue_unavailable",
            "the webhook could not be stored (queue unavailable); retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.info("webhook received and queued (%d bytes)", len(raw))
    count_received(provider_config_key, "accepted")
    return jsonify({"status": "accepted", "id": event["id"]}), 202


def _count_refused(ctx: AppContext, integration: str, reason: str) -> None:
    """Count a webhook refused at the door: its metric, and the console chart's per-minute
    Redis counter (``workers.rejections``)."""
    count_received(integration, "rejected", reason)
    count_rejection(ctx.redis, time.time())


def build_event(
    provider_config_key: str,
    *,
    method: str,
    url: str,
    headers: Any,
    raw: bytes,
    received_at: datetime | None = None,
    keep: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The JSON-safe event stored in the inbox for ``workers.events`` to route.

    Args:
        headers: ``(name, value)`` pairs; names are lower-cased, the caller's credentials
            dropped, and any other credential-like value stored as ``[redacted]``
            (``workers.payloads.redact_headers``).
        keep: Header names routing reads (``workers.routing.routing_headers``), kept
            verbatim even when they look like credentials.
    """
    received = received_at or datetime.now(UTC)
    kept = {name.lower(): value for name, value in headers if name.lower() not in _DROPPED_HEADERS}
    return {
        "id": uuid.uuid4().hex,
        "provider_config_key": provider_config_key,
        "method": method,
        "url": url,
        # Redacted before it reaches Redis (its AOF is a file too) and webhook_events.
        "headers": redact_headers(kept, keep),
        "body_b64": base64.b64encode(raw).decode("ascii"),
        "received_at": api_time(received),
    }


@bp.get("/webhooks/events")
@require_api_key
def list_events() -> Response:
    """Received events, newest first, each with the runs it caused.

    Query: ``provider_config_key``, ``state``, ``since``/``until`` (ISO 8601, received
    at or after / before), ``limit`` (1-500, default 50).
    """
    ctx = current_context()
    args = request.args
    key = text_param("provider_config_key", args.get("provider_config_key"))
    state = choice_param("state", args.get("state"), _STATES)
    since = time_param("since", args.get("since"))
    until = time_param("until", args.get("until"))
    limit = limit_param(
        "limit", args.get("limit"), default=_DEFAULT_LIMIT, maximum=events.MAX_LIST_LIMIT
    )
    with read_scope(ctx.sessions) as session:
        rows = events.list_events(
            session, provider_config_key=key, state=state, since=since, until=until, limit=limit
        )
        runs = events.runs_of_events(session, [row.id for row in rows])
        names = events.connection_ids(
            session, (run.connection_pk for found in runs.values() for run in found)
        )
        body = [
            {**event_to_json(row), "runs": [run_to_json(run, names) for run in runs[row.id]]}
            for row in rows
        ]
    return jsonify({"events": body})


@bp.get("/webhooks/events/<event_id>")
@require_api_key
def get_event(event_id: str) -> Response:
    """One event with its runs, its headers (credentials redacted) and its raw body."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        row = events.get_event(session, event_id)
        if row is None:
            raise _unknown_event(event_id)
        runs = events.runs_of_events(session, [row.id])[row.id]
        names = events.connection_ids(session, (run.connection_pk for run in runs))
        body = {
            **event_to_json(row),
            "runs": [run_to_json(run, names) for run in runs],
            # The receiver URL as called: its query may hold a token, so it is dropped.
            "url": redact_url(row.url),
            "headers": redact_headers(row.headers or {}),
            **body_to_json(bytes(row.body or b"")),
        }
    return jsonify(body)


@bp.post("/webhooks/events/<event_id>/replay")
@require_api_key
def replay(event_id: str) -> Response:
    """Route a stored event again, bypassing the dedupe, and queue what it produced."""
    ctx = current_context()
    result = replay_and_enqueue(ctx, event_id)
    with session_scope(ctx.sessions) as session:
        row = session.get(WebhookEvent, event_id)
        body: dict[str, Any] = event_to_json(row) if row is not None else {"id": event_id}
    body["run_ids"] = list(result.run_ids)
    body["notification_ids"] = list(result.notification_ids)
    return jsonify(body)


def replay_and_enqueue(ctx: AppContext, event_id: str) -> RouteResult:
    """Route a stored event again (``workers.events.replay_event``), then queue the runs and
    forwards it produced once they are committed: the API's and the console's replay.

    Raises:
        BadInputError: code ``unknown_event`` when no event has that id.
    """
    result = replay_event(ctx, event_id)
    enqueue_after_commit(ctx, run_ids=result.run_ids, notification_ids=result.notification_ids)
    return result


def run_to_json(run: SyncRun, connection_ids: Mapping[int, str]) -> dict[str, Any]:
    """One run an event caused: its outcome, as the event listings show it."""
    return {
        "id": run.id,
        "connection_id": connection_ids.get(run.connection_pk),
        "sync_name": run.sync_name,
        "sync_type": run.sync_type,
        "state": run.state,
        "started_at": api_optional_time(run.started_at),
        "finished_at": api_optional_time(run.finished_at),
        "error_type": run.error_type,
        "error": run.error,
    }


def body_to_json(raw: bytes) -> dict[str, str]:
    """``{"body", "body_encoding"}``: the text when it is UTF-8, else base64."""
    try:
        return {"body": raw.decode("utf-8"), "body_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(raw).decode("ascii"), "body_encoding": "base64"}


def event_to_json(row: WebhookEvent) -> dict[str, Any]:
    """What the API and the UI show of a received event (not its body or headers)."""
    return {
        "id": row.id,
        "provider_config_key": row.provider_config_key,
        "delivery_id": row.delivery_id,
        "event_type": row.event_type,
        "state": row.state,
        "received_at": api_optional_time(row.received_at),
        "routed_at": api_optional_time(row.routed_at),
        "runs_count": row.runs_count,
        "error": row.error,
    }


def _read_body(limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    stream = request.stream
    while size <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> tuple[Response, int]:
    return error_response(
        413,
        "payload_too_large",
        f"webhook body is over the {limit}-byte limit (HOOKSYNC_MAX_WEBHOOK_BYTES)",
    )


def _unknown_event(event_id: str) -> BadInputError:
    return BadInputError(
        f"no webhook event with id {event_id[:100]!r}; list them with GET /webhooks/events",
        code="unknown_event",
        field="event_id",
    )
