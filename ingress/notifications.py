"""``GET /notifications`` and ``POST /notifications/<id>/retry``: the outbox, listed and replayed.

``GET /notifications/endpoints`` shows each configured app URL and whether a 410 stopped
delivery to it. The views parse parameters and shape JSON; ``workers.notify`` does the
work. App URLs are shown without credentials or query string, since operators put tokens
there.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from cache.db import read_scope, session_scope
from cache.models import Notification, utcnow
from cache.timestamps import api_optional_time
from config.errors import BadInputError
from ingress.auth import current_context, require_api_key
from workers.enqueue import enqueue_after_commit
from workers.notify import list_endpoints, list_notifications, redact_url, retry_notification

__all__ = ["bp", "describe_notification", "redact_url"]

log = logging.getLogger(__name__)

bp = Blueprint("notifications", __name__)

DEFAULT_LIMIT = 100


@bp.get("/notifications")
@require_api_key
def list_view() -> Response:
    ctx = current_context()
    state = request.args.get("state") or None
    limit = _parse_limit(request.args.get("limit"))
    with read_scope(ctx.sessions) as session:
        rows = list_notifications(session, state, limit)
        return jsonify({"notifications": [describe_notification(row) for row in rows]})


@bp.get("/notifications/endpoints")
@require_api_key
def endpoints_view() -> Response:
    """Each configured app URL (redacted) with ``state`` ``active`` or ``gone``."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        statuses = list_endpoints(session, ctx.settings.app_webhook_urls)
    return jsonify(
        {
            "endpoints": [
                {
                    "url": redact_url(status.url),
                    "state": status.state,
                    "gone_at": api_optional_time(status.gone_at),
                    "gone_status": status.gone_status,
                }
                for status in statuses
            ]
        }
    )


@bp.post("/notifications/<int:notification_id>/retry")
@require_api_key
def retry_view(notification_id: int) -> Response:
    """Requeue a failed or gone notification with a fresh retry cycle.

    Retrying a notification whose URL answered 410 also re-enables that URL: this is the
    operator's way back once the app accepts deliveries again.
    """
    ctx = current_context()
    with session_scope(ctx.sessions) as session:
        row = retry_notification(session, notification_id, utcnow())
        if row is None:
            raise BadInputError(
                f"no notification with id {notification_id}; list them with GET /notifications",
                code="unknown_notification",
                field="id",
            )
        body = describe_notification(row)
    enqueue_after_commit(ctx, notification_ids=[notification_id])
    return jsonify({"notification": body})


def describe_notification(row: Notification) -> dict[str, Any]:
    """The API (and UI) view of one notification: no secrets, body parsed."""
    return {
        "id": row.id,
        "run_id": row.run_id,
        "url": redact_url(row.url),
        "webhook_id": row.webhook_id,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": api_optional_time(row.next_attempt_at)
        if row.state == "pending"
        else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": api_optional_time(row.created_at),
        "delivered_at": api_optional_time(row.delivered_at),
        "body": json.loads(row.body),
    }


def _parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        return int(raw)
    except ValueError:
        raise BadInputError(
            f"limit must be a whole number from 1 to 1000, got {raw!r}", field="limit"
        ) from None
