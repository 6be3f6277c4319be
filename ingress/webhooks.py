"""External webhooks in (ARCHITECTURE.md §6), and the API to list and replay received events.

The receiver (``POST /webhook/<provider_config_key>``) runs its checks in this order, each
failure a JSON error: unknown integration → 404; body over ``HOOKSYNC_MAX_WEBHOOK_BYTES`` →
413; bad or missing signature → 401; unparsable body → 400. Slack's ``url_verification``
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
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import select

from cache.context import AppContext
from cache.db import read_scope, session_scope
from cache.models import WebhookEvent, WebhookState
from cache.timestamps import api_optional_time, api_time
from config.errors import BadInputError, RetriableError
from ingress.auth import current_context, require_api_key
from ingress.errors import RETRY_AFTER_SECONDS, error_response
from ingress.provider_signatures import SignatureError, get_scheme
from workers.enqueue import enqueue_after_commit, enqueue_webhook
from workers.events import RouteResult, replay_event
from workers.routing import parse_body

__all__ = ["bp", "build_event", "event_to_json", "replay_and_enqueue"]

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

#: Request headers never copied into the queued event (they are the caller's, not the
#: provider's, and may be credentials).
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

#: ``GET /webhooks/events?limit=`` bounds.
_DEFAULT_LIMIT, _MAX_LIMIT = 50, 500

_READ_CHUNK = 64 * 1024


@bp.post("/webhook/<provider_config_key>")
@bp.post("/webhook/<path:prefix>/<provider_config_key>")
def receive_webhook(provider_config_key: str, prefix: str | None = None) -> Any:
    """Verify, then queue one external webhook. Touches Redis only."""
    ctx = current_context()
    integration = ctx.integrations.by_key.get(provider_config_key)
    if integration is None:
        return error_response(
            404,
            "unknown_integration",
            f"no integration named {provider_config_key[:100]!r} is configured",
        )

    limit = ctx.settings.max_webhook_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    # Content-Length can be absent (chunked) or wrong: read at most limit + 1 bytes.
    raw = _read_body(limit)
    if len(raw) > limit:
        return _too_large(limit)

    headers = {name.lower(): value for name, value in request.headers.items()}
    provider = integration.provider
    signature = provider.webhook.signature
    if signature.scheme != "none" and not provider.webhook_secrets:
        return error_response(
            401,
            "webhook_secret_missing",
            f"webhook_secret is not configured for provider {provider_config_key!r}, so its "
            f"{signature.scheme!r} signature cannot be checked; set "
            f"providers.{provider_config_key}.webhook_secret in nango.yaml",
        )
    try:
        get_scheme(signature.scheme).verify(
            secrets=provider.webhook_secrets,
            body=raw,
            headers=headers,
            method=request.method,
            url=request.url,
            now=time.time(),
            config=signature,
        )
    except SignatureError as error:
        return error_response(401, error.code, str(error), field=error.field)

    try:
        body = parse_body(raw, headers.get("content-type"))
    except BadInputError as error:
        return error_response(400, error.code, str(error), field=error.field)

    if isinstance(body, dict) and body.get("type") == "url_verification" and "challenge" in body:
        # Slack's handshake when the events URL is saved: echo the challenge, queue nothing.
        return jsonify({"challenge": body["challenge"]})

    event = build_event(
        provider_config_key,
        method=request.method,
        url=request.url,
        headers=headers.items(),
        raw=raw,
    )
    try:
        enqueue_webhook(ctx, event)
    except (RetriableError, redis.RedisError, KombuOperationalError, OSError):
        log.warning(
            "could not queue webhook %s for %r; answered 503",
            event["id"],
            provider_config_key,
            exc_info=True,
        )
        return error_response(
            503,
            "queue_unavailable",
            "the webhook could not be stored (queue unavailable); retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return jsonify({"status": "accepted", "id": event["id"]}), 202


def build_event(
    provider_config_key: str,
    *,
    method: str,
    url: str,
    headers: Any,
    raw: bytes,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON-safe event stored in the inbox for ``workers.events`` to route.

    Args:
        headers: ``(name, value)`` pairs; names are lower-cased, credentials dropped.
    """
    received = received_at or datetime.now(UTC)
    return {
        "id": uuid.uuid4().hex,
        "provider_config_key": provider_config_key,
        "method": method,
        "url": url,
        "headers": {
            name.lower(): value for name, value in headers if name.lower() not in _DROPPED_HEADERS
        },
        "body_b64": base64.b64encode(raw).decode("ascii"),
        "received_at": api_time(received),
    }


@bp.get("/webhooks/events")
@require_api_key
def list_events() -> Response:
    """Recent received events, newest first: ``?limit=&state=&provider_config_key=``."""
    ctx = current_context()
    limit = _parse_limit(request.args.get("limit"))
    query = select(WebhookEvent).order_by(WebhookEvent.received_at.desc(), WebhookEvent.id)
    state = request.args.get("state")
    if state:
        known = [item.value for item in WebhookState]
        if state not in known:
            raise BadInputError(
                f"state: unknown state {state[:40]!r}; use one of {', '.join(known)}",
                field="state",
            )
        query = query.where(WebhookEvent.state == state)
    key = request.args.get("provider_config_key")
    if key:
        query = query.where(WebhookEvent.provider_config_key == key)
    with read_scope(ctx.sessions) as session:
        rows = session.scalars(query.limit(limit)).all()
        events = [event_to_json(row) for row in rows]
    return jsonify({"events": events})


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


def _parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return _DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        raise BadInputError(
            f"limit: must be a whole number from 1 to {_MAX_LIMIT}, got {raw[:20]!r}",
            field="limit",
        )
    return value
