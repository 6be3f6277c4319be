"""The outbox API: ``/notifications`` listed, shown with its attempts, and retried.

``GET /notifications/endpoints`` shows each configured app URL, its stable ``id`` and
whether a 410 stopped delivery to it; ``POST /notifications/endpoints/<id>/enable`` clears
that. The views parse parameters (``ingress.params``) and shape JSON; ``workers.outbox``
does the work. App URLs are shown without credentials or query string, since operators
put tokens there.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from cache.db import read_scope, session_scope
from cache.models import Notification, NotificationAttempt, NotificationState, utcnow
from cache.timestamps import api_optional_time, api_time
from config.errors import BadInputError
from ingress.auth import current_context, require_api_key
from ingress.params import choice_param, limit_param, text_param, time_param
from workers.app_webhooks import endpoint_id, redact_url
from workers.enqueue import enqueue_after_commit
from workers.outbox import (
    enable_endpoint,
    retry_failed,
    retry_notification,
)
from workers.outbox_views import (
    MAX_ID,
    MAX_LIST_LIMIT,
    EndpointStatus,
    get_notification,
    list_attempts,
    list_endpoints,
    list_notifications,
    waiting_behind,
)

__all__ = [
    "attempt_to_json",
    "bp",
    "describe_notification",
    "endpoint_to_json",
]

log = logging.getLogger(__name__)

bp = Blueprint("notifications", __name__)

#: ``GET /notifications?limit=`` default.
DEFAULT_LIMIT = 100
_STATES = tuple(state.value for state in NotificationState)
#: A path id: digits, at most ``MAX_ID`` (a larger one would overflow the database's
#: 64-bit integers; werkzeug answers 404 for it like for any unknown id).
_ID = f"int(min=1, max={MAX_ID})"


@bp.get("/notifications")
@require_api_key
def list_view() -> Response:
    """Newest first: ``?state=&connection_id=&since=&until=&limit=``."""
    ctx = current_context()
    args = request.args
    state = choice_param("state", args.get("state"), _STATES)
    connection_id = text_param("connection_id", args.get("connection_id"))
    since = time_param("since", args.get("since"))
    until = time_param("until", args.get("until"))
    limit = limit_param("limit", args.get("limit"), default=DEFAULT_LIMIT, maximum=MAX_LIST_LIMIT)
    with read_scope(ctx.sessions) as session:
        rows = list_notifications(
            session,
            state=state,
            connection_id=connection_id,
            since=since,
            until=until,
            limit=limit,
        )
        behind = waiting_behind(session, rows)
        return jsonify(
            {"notifications": [describe_notification(row, behind[row.id]) for row in rows]}
        )


@bp.get(f"/notifications/<{_ID}:notification_id>")
@require_api_key
def get_view(notification_id: int) -> Response:
    """``{"notification", "attempts"}``: the row and every POST of it, oldest first."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        row = get_notification(session, notification_id)
        if row is None:
            raise _unknown(notification_id)
        attempts = list_attempts(session, notification_id)
        behind = waiting_behind(session, [row])
        body = {
            "notification": describe_notification(row, behind[row.id]),
            "attempts": [attempt_to_json(item) for item in attempts],
        }
    return jsonify(body)


@bp.get("/notifications/endpoints")
@require_api_key
def endpoints_view() -> Response:
    """Each configured app URL (redacted) with its ``id`` and ``state`` (``active``/``gone``)."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        statuses = list_endpoints(session, ctx.settings.app_webhook_urls)
    return jsonify({"endpoints": [endpoint_to_json(status) for status in statuses]})


@bp.post("/notifications/endpoints/<endpoint_key>/enable")
@require_api_key
def enable_view(endpoint_key: str) -> Response:
    """Clear a 410's mark on a configured app URL: notifications are recorded for it again.

    The notifications the 410 stopped stay ``gone``; retry them (``retry-failed``).
    """
    ctx = current_context()
    urls = ctx.settings.app_webhook_urls
    with session_scope(ctx.sessions) as session:
        url = enable_endpoint(session, endpoint_key, urls)
        if url is None:
            raise BadInputError(
                f"no configured app URL has the id {endpoint_key[:40]!r}; list them with "
                "GET /notifications/endpoints",
                code="unknown_endpoint",
                field="endpoint_key",
            )
    with read_scope(ctx.sessions) as session:
        (status,) = list_endpoints(session, [url])
    return jsonify({"endpoint": endpoint_to_json(status)})


@bp.post(f"/notifications/<{_ID}:notification_id>/retry")
@require_api_key
def retry_view(notification_id: int) -> Response:
    """Requeue a failed or gone notification with a fresh retry cycle.

    Retrying a notification whose URL answered 410 also re-enables that URL: this is the
    operator's way back once the app accepts deliveries again. A delivered one is refused
    (400 ``not_retryable``).
    """
    ctx = current_context()
    with session_scope(ctx.sessions) as session:
        row = retry_notification(session, notification_id, utcnow())
        if row is None:
            raise _unknown(notification_id)
        body = describe_notification(row, waiting_behind(session, [row])[row.id])
    enqueue_after_commit(ctx, notification_ids=[notification_id])
    return jsonify({"notification": body})


@bp.post("/notifications/retry-failed")
@require_api_key
def retry_failed_view() -> Response:
    """Requeue every failed or gone notification created at or after ``?since=`` (required)."""
    ctx = current_context()
    since = time_param("since", request.args.get("since"), required=True)
    assert since is not None  # required=True
    with session_scope(ctx.sessions) as session:
        ids = retry_failed(session, since, utcnow())
    enqueue_after_commit(ctx, notification_ids=ids)
    return jsonify({"retried": len(ids), "ids": ids, "since": api_time(since)})


def describe_notification(row: Notification, waiting: int = 0) -> dict[str, Any]:
    """The API (and UI) view of one notification: no secrets, body parsed.

    ``waiting``: how many later notifications of its stream wait for it to leave
    ``pending`` (``workers.outbox_views.waiting_behind``), shown as ``waiting_behind``.
    """
    return {
        "id": row.id,
        "run_id": row.run_id,
        "url": redact_url(row.url),
        "endpoint_id": endpoint_id(row.url),
        "webhook_id": row.webhook_id,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": api_optional_time(row.next_attempt_at)
        if row.state == "pending"
        else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "waiting_behind": waiting,
        "created_at": api_optional_time(row.created_at),
        "delivered_at": api_optional_time(row.delivered_at),
        "body": json.loads(row.body),
    }


def attempt_to_json(row: NotificationAttempt) -> dict[str, Any]:
    """One POST of a notification: when, the app's status (None: no answer), how long."""
    return {
        "attempt": row.attempt,
        "attempted_at": api_time(row.attempted_at),
        "status": row.status,
        "error": row.error,
        "duration_ms": row.duration_ms,
    }


def endpoint_to_json(status: EndpointStatus) -> dict[str, Any]:
    """One configured app URL, redacted, with the id its enable route takes."""
    return {
        "id": endpoint_id(status.url),
        "url": redact_url(status.url),
        "state": status.state,
        "gone_at": api_optional_time(status.gone_at),
        "gone_status": status.gone_status,
    }


def _unknown(notification_id: int) -> BadInputError:
    return BadInputError(
        f"no notification with id {notification_id}; list them with GET /notifications",
        code="unknown_notification",
        field="notification_id",
    )
