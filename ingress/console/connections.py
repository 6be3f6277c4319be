"""Console: Connections and one connection's syncs, with pause / start / trigger.

The buttons are CSRF-protected POST forms (``ingress.console.auth``) that call the very
functions ``POST /sync/pause``, ``/sync/start`` and ``/sync/trigger`` call
(``ingress.syncs``): the console adds no sync-control logic of its own. A connection's
credentials are never read here, let alone shown.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from cache.db import read_scope
from cache.models import Connection, Schedule, SyncRun
from ingress.auth import current_context
from ingress.console.blueprint import bp, page
from ingress.params import find_connection
from ingress.syncs import control_syncs, sync_status, trigger_syncs
from workers import schedules
from workers.execution import record_store
from workers.runs import last_finished_runs

__all__ = ["MAX_LISTED", "connection", "connection_action", "connections"]

#: The nav entry these pages belong to.
_SECTION = "console.connections"

#: The connections list shows at most this many (filter by integration to see others).
MAX_LISTED = 500

#: The console's sync actions: the schedules function each applies (trigger has its own).
_CONTROLS = {"pause": schedules.pause, "start": schedules.start}


@bp.get("/connections")
def connections() -> str:
    """Every connection (optionally of one integration) with its syncs' schedule states."""
    ctx = current_context()
    wanted = request.args.get("integration") or None
    query = select(Connection).order_by(Connection.provider_config_key, Connection.id)
    if wanted:
        query = query.where(Connection.provider_config_key == wanted)
    with read_scope(ctx.sessions) as session:
        rows = session.scalars(query.limit(MAX_LISTED + 1)).all()
        truncated = len(rows) > MAX_LISTED
        rows = rows[:MAX_LISTED]
        states: dict[int, dict[str, str]] = {}
        pks = [row.id for row in rows]
        if pks:
            for pk, name, state in session.execute(
                select(Schedule.connection_pk, Schedule.sync_name, Schedule.state).where(
                    Schedule.connection_pk.in_(pks)
                )
            ).all():
                states.setdefault(pk, {})[name] = state
        listed = [
            {
                "integration": row.provider_config_key,
                "connection_id": row.connection_id,
                "created_at": row.created_at,
                "syncs": sorted(states.get(row.id, {}).items()),
            }
            for row in rows
        ]
    return page(
        "connections.html",
        title="Connections",
        section=_SECTION,
        rows=listed,
        integrations=sorted(ctx.integrations.by_key),
        wanted=wanted,
        truncated=truncated,
        limit=MAX_LISTED,
    )


@bp.get("/connection")
def connection() -> str:
    """One connection: each sync's state, last and next run, last result, record counts."""
    ctx = current_context()
    key, connection_id = _identity(request.args)
    integration = ctx.integrations.by_key.get(key)
    with read_scope(ctx.sessions) as session:
        row = find_connection(session, key, connection_id)
        if row is None or integration is None:
            abort(404)
        names = list(integration.syncs)
        models = {model for sync in integration.syncs.values() for model in sync.output}
        counts = record_store(ctx).count_by_model(row.id, models)
        last = last_finished_runs(session, row.id, names)
        syncs = [
            {
                "status": sync_status(
                    session, row, sync, {model: counts.get(model, 0) for model in sync.output}
                ),
                "last": _run_view(last.get(sync.name)),
                "webhooks": bool(sync.webhook_subscriptions),
            }
            for sync in integration.syncs.values()
        ]
        metadata = json.dumps(row.metadata_json or {}, indent=2, sort_keys=True, default=str)
        facts = {"created_at": row.created_at, "updated_at": row.updated_at}
    return page(
        "connection.html",
        title=f"{connection_id} · Connections",
        section=_SECTION,
        key=key,
        connection_id=connection_id,
        syncs=syncs,
        metadata=metadata,
        facts=facts,
    )


@bp.post("/connection/<action>")
def connection_action(action: str) -> Response:
    """Pause, start or trigger one sync of one connection, then back to its page."""
    ctx = current_context()
    key, connection_id = _identity(request.form)
    name = request.form.get("sync", "")
    integration = ctx.integrations.by_key.get(key)
    if action not in (*_CONTROLS, "trigger") or integration is None:
        abort(404)
    if name not in integration.syncs:
        abort(404)
    with read_scope(ctx.sessions) as session:
        if find_connection(session, key, connection_id) is None:
            abort(404)

    def targets(session: Any) -> list[tuple[Connection, list[str]]]:
        row = find_connection(session, key, connection_id)
        return [] if row is None else [(row, [name])]

    if action == "trigger":
        reset = request.form.get("reset") == "on"
        trigger_syncs(ctx, targets, {"reset": True} if reset else {})
        flash(f"Triggered {'a full (reset) run' if reset else 'a run'} of {name}.", "success")
    else:
        control_syncs(ctx, _CONTROLS[action], targets)
        flash(f"{'Paused' if action == 'pause' else 'Started'} {name}.", "success")
    return redirect(url_for("console.connection", integration=key, connection_id=connection_id))


def _identity(values: Any) -> tuple[str, str]:
    key = values.get("integration", "")
    connection_id = values.get("connection_id", "")
    if not key or not connection_id:
        abort(404)
    return str(key), str(connection_id)


def _run_view(run: SyncRun | None) -> dict[str, Any] | None:
    """What the page shows of a finished run (no payload: it may hold provider data)."""
    if run is None:
        return None
    return {
        "id": run.id,
        "kind": run.kind,
        "state": run.state,
        "sync_type": run.sync_type,
        "finished_at": run.finished_at,
        "seconds": _seconds(run.started_at, run.finished_at),
        "result": run.result or {},
        "error_type": run.error_type,
        "error": run.error,
    }


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 2)
