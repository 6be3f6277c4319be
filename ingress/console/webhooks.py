"""Console page: Webhooks — received events, where each went, and a replay button.

The list shows recent events newest first with their routing outcome: every run an event
caused (connection, sync, how the run ended), filtered by integration, state and time. One
event's page adds the raw body and the headers, credential-like headers redacted. Replay is
the API's (``ingress.webhooks.replay_and_enqueue``): route again past the dedupe, queue the
runs after commit. Everything is read through ``workers.events``, the tables' owner
(ARCHITECTURE.md §12); nothing here writes a row itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from cache.context import AppContext
from cache.db import read_scope
from cache.models import SyncRun, WebhookEvent, WebhookState, utcnow
from config.errors import BadInputError
from ingress.auth import current_context
from ingress.console.blueprint import bp, page
from ingress.console.charts import durations_chart, webhook_chart
from ingress.console.filters import AGES, parse_time
from ingress.webhooks import replay_and_enqueue
from workers.events import connection_ids, get_event, list_events, runs_of_events
from workers.payloads import redact_headers

__all__ = ["RunOutcome", "event_detail", "replay_webhook", "summarize_result", "webhooks"]

#: Events on one page of the list.
PAGE_SIZE = 50

#: The raw body shown on an event's page is cut here (the full body stays in the database).
MAX_BODY_CHARS = 64 * 1024


@dataclass(frozen=True)
class RunOutcome:
    """One run an event caused, as the page shows it."""

    id: int
    connection_id: str
    sync_name: str
    state: str
    summary: str
    error: str | None


@bp.get("/webhooks")
def webhooks() -> Any:
    """Recent events with their outcome; ``?integration=&state=&since=`` filter the list."""
    ctx = current_context()
    integration = request.args.get("integration", "").strip()
    state = request.args.get("state", "").strip()
    since_text = request.args.get("since", "").strip()
    error: str | None = None
    events: list[WebhookEvent] = []
    outcomes: dict[str, list[RunOutcome]] = {}
    try:
        since = parse_time(since_text, field="since", now=utcnow())
        with read_scope(ctx.sessions) as session:
            events = list_events(
                session,
                provider_config_key=integration or None,
                state=state or None,
                since=since,
                limit=PAGE_SIZE,
            )
            outcomes = _outcomes(session, [event.id for event in events])
    except BadInputError as problem:
        error = str(problem)
    html = page(
        "webhooks.html",
        title="Webhooks",
        section="console.webhooks",
        events=events,
        outcomes=outcomes,
        integrations=sorted(ctx.integrations.by_key),
        states=[item.value for item in WebhookState],
        ages=AGES,
        filters={"integration": integration, "state": state, "since": since_text},
        error=error,
        charts=_charts(ctx),
        page_size=PAGE_SIZE,
    )
    return (html, 400) if error else html


@bp.get("/webhooks/<event_id>")
def event_detail(event_id: str) -> Any:
    """One event: what was received (headers redacted, raw body) and the runs it caused."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        event = get_event(session, event_id)
        if event is None:
            abort(404)
        outcome = _outcomes(session, [event.id])[event.id]
        headers = sorted(redact_headers(event.headers or {}).items())
        body = _body_text(event.body)
        return page(
            "webhook.html",
            title=f"Webhook {event.id}",
            section="console.webhooks",
            event=event,
            runs=outcome,
            headers=headers,
            body=body,
        )


@bp.post("/webhooks/<event_id>/replay")
def replay_webhook(event_id: str) -> Response:
    """Route the event again (dedupe bypassed) and queue what it produced."""
    try:
        result = replay_and_enqueue(current_context(), event_id)
    except BadInputError as problem:
        if problem.code == "unknown_event":
            abort(404)
        raise
    runs = len(result.run_ids)
    flash(
        f"Replayed: {runs} run{'s' if runs != 1 else ''} queued, event now {result.state}.",
        "success",
    )
    return redirect(url_for("console.event_detail", event_id=event_id))


def summarize_result(result: dict[str, Any] | None) -> str:
    """A run's counts in one line: ``Task +1 ~2 -0`` per model; "" when it wrote nothing."""
    parts = []
    for model, counts in sorted((result or {}).items()):
        if not isinstance(counts, dict):
            continue
        parts.append(
            f"{model} +{counts.get('added', 0)} ~{counts.get('updated', 0)} "
            f"-{counts.get('deleted', 0)}"
        )
    return ", ".join(parts)


def _outcomes(session: Any, event_ids: list[str]) -> dict[str, list[RunOutcome]]:
    runs = runs_of_events(session, event_ids)
    names = connection_ids(session, [run.connection_pk for found in runs.values() for run in found])
    return {event_id: [_outcome(run, names) for run in found] for event_id, found in runs.items()}


def _outcome(run: SyncRun, names: dict[int, str]) -> RunOutcome:
    return RunOutcome(
        id=run.id,
        connection_id=names.get(run.connection_pk, f"#{run.connection_pk}"),
        sync_name=run.sync_name,
        state=run.state,
        summary=summarize_result(run.result),
        error=run.error,
    )


def _body_text(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", errors="replace")
    if len(text) > MAX_BODY_CHARS:
        return text[:MAX_BODY_CHARS] + f"\n… ({len(text) - MAX_BODY_CHARS} more characters)"
    return text


def _charts(ctx: AppContext) -> list[tuple[str, Markup]]:
    """The two SVG charts at the top of the page, as ``(caption, svg)``."""
    now = utcnow()
    return [
        ("Webhooks per minute, last hour", webhook_chart(ctx, now)),
        ("Run durations (p50 / p95), last hour", durations_chart(ctx, now)),
    ]
