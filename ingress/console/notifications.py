"""Console page: Notifications — what hooksync sent the app, each attempt, and retries.

The list shows the outbox newest first (state, attempts, the last status or error),
filtered by state, connection and time, with a retry button on failed and gone ones and one
form to retry every failed notification since a time. Above it, each configured app URL
with its state (``active``, or ``gone`` after a 410) and a re-enable button. One
notification's page lists its attempts. Reads and writes go through ``workers.outbox``, the
outbox's owner (ARCHITECTURE.md §12); the ids a write made pending are queued after commit,
as the API does. App URLs are shown redacted: operators put tokens in them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, request, url_for
from werkzeug.wrappers import Response

from cache.db import read_scope, session_scope
from cache.models import Notification, NotificationState, utcnow
from config.errors import BadInputError
from ingress.auth import current_context
from ingress.console.blueprint import bp, page
from ingress.console.filters import AGES, parse_time
from workers.app_webhooks import endpoint_id, redact_url
from workers.enqueue import enqueue_after_commit
from workers.outbox import (
    enable_endpoint,
    retry_failed,
    retry_notification,
)
from workers.outbox_views import (
    MAX_ID,
    get_notification,
    list_attempts,
    list_endpoints,
    list_notifications,
    waiting_behind,
)

__all__ = [
    "NotificationView",
    "enable_app_url",
    "notification_detail",
    "notifications",
    "retry_all_failed",
    "retry_one",
    "view_of",
]

#: Notifications on one page of the list.
PAGE_SIZE = 100

#: States a retry applies to (a pending one is on its way; a delivered one is done).
RETRYABLE = frozenset({NotificationState.FAILED.value, NotificationState.GONE.value})


@dataclass(frozen=True)
class NotificationView:
    """One notification as the pages show it: what it is about, never the full URL."""

    row: Notification
    url: str
    kind: str
    connection_id: str
    sync_name: str
    summary: str
    body: dict[str, Any]
    #: Later notifications of its stream waiting for this one (``outbox_views.waiting_behind``).
    waiting_behind: int = 0

    @property
    def retryable(self) -> bool:
        return self.row.state in RETRYABLE


def view_of(row: Notification, waiting: int = 0) -> NotificationView:
    """What a notification is about, read from its body (sync, forward or failure)."""
    try:
        body = json.loads(row.body)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if body.get("type") == "forward":
        kind, summary = "forward", f"from {body.get('from', '?')}"
    else:
        kind = str(body.get("syncType") or "sync")
        if body.get("success") is False:
            error = body.get("error") or {}
            summary = f"failed: {error.get('type', 'error') if isinstance(error, dict) else error}"
        else:
            counts = body.get("responseResults") or {}
            summary = (
                f"{body.get('model', '?')} +{counts.get('added', 0)} "
                f"~{counts.get('updated', 0)} -{counts.get('deleted', 0)}"
            )
    return NotificationView(
        row=row,
        url=redact_url(row.url),
        kind=kind,
        connection_id=str(body.get("connectionId") or ""),
        sync_name=str(body.get("syncName") or ""),
        summary=summary,
        body=body,
        waiting_behind=waiting,
    )


@bp.get("/notifications")
def notifications() -> Any:
    """The outbox, the app URLs' states; ``?state=&connection=&since=`` filter the list."""
    ctx = current_context()
    state = request.args.get("state", "").strip()
    connection = request.args.get("connection", "").strip()
    since_text = request.args.get("since", "").strip()
    error: str | None = None
    rows: list[NotificationView] = []
    with read_scope(ctx.sessions) as session:
        endpoints = [
            {"id": endpoint_id(status.url), "url": redact_url(status.url), "status": status}
            for status in list_endpoints(session, ctx.settings.app_webhook_urls)
        ]
        try:
            since = parse_time(since_text, field="since", now=utcnow())
            found = list_notifications(
                session,
                state=state or None,
                connection_id=connection or None,
                since=since,
                limit=PAGE_SIZE,
            )
            behind = waiting_behind(session, found)
            rows = [view_of(row, behind[row.id]) for row in found]
        except BadInputError as problem:
            error = str(problem)
    html = page(
        "notifications.html",
        title="Notifications",
        section="console.notifications",
        rows=rows,
        endpoints=endpoints,
        states=[item.value for item in NotificationState],
        ages=AGES,
        filters={"state": state, "connection": connection, "since": since_text},
        error=error,
        page_size=PAGE_SIZE,
    )
    return (html, 400) if error else html


@bp.get("/notifications/<int:notification_id>")
def notification_detail(notification_id: int) -> Any:
    """One notification: its body, its state and every attempt to deliver it."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        row = get_notification(session, notification_id)
        if row is None:
            abort(404)
        return page(
            "notification.html",
            title=f"Notification {notification_id}",
            section="console.notifications",
            item=view_of(row, waiting_behind(session, [row])[row.id]),
            attempts=list_attempts(session, notification_id),
            body=json.dumps(view_of(row).body, indent=2, ensure_ascii=False),
        )


@bp.post("/notifications/<int:notification_id>/retry")
def retry_one(notification_id: int) -> Response:
    """Make a failed or gone notification pending again and queue it (re-enables its URL)."""
    ctx = current_context()
    if notification_id > MAX_ID:
        abort(404)
    try:
        with session_scope(ctx.sessions) as session:
            row = retry_notification(session, notification_id, utcnow())
            if row is None:
                abort(404)
    except BadInputError as problem:  # already delivered: nothing to retry
        flash(str(problem), "error")
        return redirect(url_for("console.notification_detail", notification_id=notification_id))
    enqueue_after_commit(ctx, notification_ids=[notification_id])
    flash(f"Notification {notification_id} queued for delivery again.", "success")
    return redirect(url_for("console.notification_detail", notification_id=notification_id))


@bp.post("/notifications/retry-failed")
def retry_all_failed() -> Response:
    """Retry every failed or gone notification created since the time in the form."""
    ctx = current_context()
    since_text = request.form.get("since", "").strip()
    try:
        now = utcnow()
        since = parse_time(since_text, field="since", now=now)
        if since is None:
            raise BadInputError("since: say from when, e.g. 1h or 2026-12-01T02:00", field="since")
    except BadInputError as problem:
        flash(str(problem), "error")
        return redirect(url_for("console.notifications"))
    with session_scope(ctx.sessions) as session:
        ids = retry_failed(session, since, now)
    enqueue_after_commit(ctx, notification_ids=ids)
    flash(
        f"{len(ids)} failed notification{'s' if len(ids) != 1 else ''} since "
        f"{since:%Y-%m-%d %H:%M:%S} UTC queued for delivery again.",
        "success",
    )
    return redirect(url_for("console.notifications"))


@bp.post("/notifications/endpoints/<app_url_id>/enable")
def enable_app_url(app_url_id: str) -> Response:
    """Clear an app URL's gone mark: new notifications are recorded and sent to it again."""
    ctx = current_context()
    with session_scope(ctx.sessions) as session:
        url = enable_endpoint(session, app_url_id, ctx.settings.app_webhook_urls)
    if url is None:
        abort(404)
    flash(
        f"{redact_url(url)} is active again; notifications the 410 stopped stay gone until "
        "retried.",
        "success",
    )
    return redirect(url_for("console.notifications"))
