"""Sync control API (ARCHITECTURE.md §7) in Nango's request and response shapes.

``/sync/trigger``, ``/sync/pause``, ``/sync/start``, ``/sync/status`` and
``/sync/update-connection-frequency``. The decisions (one active poll per connection and
sync, the frequency grid) live in ``workers.schedules``; this module parses requests,
calls it in one transaction, and enqueues what it created once that transaction committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cache.context import AppContext
from cache.db import read_scope, session_scope
from cache.lock import connection_lock
from cache.models import (
    Connection,
    Record,
    RunKind,
    RunState,
    RunSyncType,
    Schedule,
    SyncRun,
    utcnow,
)
from cache.timestamps import api_optional_time
from config.errors import BadInputError
from config.integrations import SyncConfig
from ingress.auth import current_context, require_api_key
from ingress.params import (
    find_connection,
    json_body,
    provider_config_key,
    require_connection,
    unknown_connection,
)
from workers import schedules
from workers.enqueue import enqueue_after_commit
from workers.execution import record_store

__all__ = ["Targets", "bp", "control_syncs", "sync_status", "trigger_syncs"]

log = logging.getLogger(__name__)

bp = Blueprint("syncs", __name__)

#: Picks the (connection, sync names) pairs an operation acts on, inside its transaction.
Targets = Callable[[Session], list[tuple[Connection, list[str]]]]

#: Nango's legacy ``sync_mode`` values, as the options they stand for.
_SYNC_MODES = {
    "incremental": {},
    "full_refresh": {"reset": True},
    "full_refresh_and_clear_cache": {"reset": True, "emptyCache": True},
}


@bp.post("/sync/trigger")
@require_api_key
def trigger() -> Response:
    """Start a poll run now; a sync already running is acknowledged without a second run."""
    ctx = current_context()
    body = json_body()
    options = _trigger_options(body)
    trigger_syncs(ctx, lambda session: _targets(ctx, session, body), options)
    return jsonify({"success": True})


@bp.post("/sync/pause")
@require_api_key
def pause() -> Response:
    """Stop scheduling the syncs; a run in flight finishes; webhooks still run (as in Nango)."""
    return _control(schedules.pause)


@bp.post("/sync/start")
@require_api_key
def start() -> Response:
    """Resume the syncs on their frequency grid (a never-run sync runs at once)."""
    return _control(schedules.start)


def trigger_syncs(ctx: AppContext, targets: Targets, options: dict[str, Any]) -> None:
    """Start a poll run of each target sync now (``POST /sync/trigger``, the console).

    A sync already running is acknowledged without a second run.

    Args:
        ctx: The app context.
        targets: Picks the connections and syncs, inside the transaction.
        options: ``{"reset": True}`` for a full run; ``"emptyCache"`` also drops the
            models' records before it.
    """
    run_ids: list[int] = []
    to_empty: list[tuple[int, list[str]]] = []
    with session_scope(ctx.sessions) as session:
        for connection, names in targets(session):
            for name in names:
                created = schedules.trigger(
                    session,
                    ctx.integrations,
                    connection,
                    [name],
                    utcnow(),
                    reset=bool(options.get("reset")),
                    options=options,
                    lease_seconds=ctx.settings.lease_seconds,
                )
                # Only with a new full run to refill it: a sync whose run is in flight is
                # acknowledged without one, and that run (maybe incremental) would then
                # record its last_sync_date over an empty cache.
                if created and options.get("emptyCache"):
                    to_empty.append((connection.id, _models(ctx, connection, [name])))
                run_ids += created
    # After the runs committed, before their messages: nothing runs them yet (their lease
    # keeps the sweeper off), and any other writer of the connection is waited for.
    for connection_pk, models in to_empty:
        _empty_cache(ctx, connection_pk, models)
    enqueue_after_commit(ctx, run_ids=run_ids)


def control_syncs(ctx: AppContext, action: Callable[..., Any], targets: Targets) -> None:
    """Apply ``schedules.pause`` or ``schedules.start`` to the targets in one transaction
    (``POST /sync/pause``, ``/sync/start``, the console)."""
    with session_scope(ctx.sessions) as session:
        for connection, names in targets(session):
            action(session, ctx.integrations, connection, names, utcnow())


@bp.get("/sync/status")
@require_api_key
def status() -> Response:
    """``{"syncs": [...]}``: state, last and next run, latest counts and record counts."""
    ctx = current_context()
    key = provider_config_key(ctx, request.args.get("provider_config_key"))
    names = _sync_names(ctx, key, request.args.get("syncs"), field="syncs")
    connection_id = request.args.get("connection_id") or request.args.get("connectionId")
    with read_scope(ctx.sessions) as session:
        query = select(Connection).where(Connection.provider_config_key == key)
        if connection_id:
            query = query.where(Connection.connection_id == connection_id)
        connections = session.scalars(query.order_by(Connection.id)).all()
        if connection_id and not connections:
            raise unknown_connection(key, connection_id)
        integration = ctx.integrations.by_key[key]
        return jsonify(
            {
                "syncs": [
                    sync_status(session, connection, integration.syncs[name])
                    for connection in connections
                    for name in names
                ]
            }
        )


@bp.put("/sync/update-connection-frequency")
@require_api_key
def update_frequency() -> Response:
    """Override one sync's frequency for one connection; ``null`` restores the config's."""
    ctx = current_context()
    body = json_body()
    key = provider_config_key(ctx, body.get("provider_config_key"))
    name = body.get("sync_name")
    if not isinstance(name, str) or name not in ctx.integrations.by_key[key].syncs:
        raise BadInputError(
            f"sync_name: integration {key!r} has no sync {name!r}",
            code="unknown_sync",
            field="sync_name",
        )
    frequency = body.get("frequency")
    if frequency is not None and not isinstance(frequency, str):
        raise BadInputError(
            f"frequency: must be a string like 'every 1h' or null, got {frequency!r}",
            field="frequency",
        )
    with session_scope(ctx.sessions) as session:
        connection = require_connection(session, key, _connection_id(body))
        schedule = schedules.set_frequency(
            session, ctx.integrations, connection, name, frequency, utcnow()
        )
        seconds = schedule.frequency_seconds
    sync = ctx.integrations.by_key[key].syncs[name]
    return jsonify({"frequency": frequency if seconds else sync.runs})


# -- helpers ---------------------------------------------------------------------------------


def _control(action: Callable[..., Any]) -> Response:
    ctx = current_context()
    body = json_body()
    control_syncs(ctx, action, lambda session: _targets(ctx, session, body))
    return jsonify({"success": True})


def _targets(
    ctx: AppContext, session: Session, body: dict[str, Any]
) -> list[tuple[Connection, list[str]]]:
    """The connections a control request names (one, or all of the integration)."""
    key = provider_config_key(ctx, body.get("provider_config_key"))
    raw = body.get("syncs")
    # Nango: an empty list names every sync of the integration (the official Node client
    # sends ``"syncs": []`` for ``triggerSync(key)``).
    names = list(ctx.integrations.by_key[key].syncs) if raw == [] else None
    if names is None:
        names = _sync_names(ctx, key, raw, field="syncs")
    connection_id = _optional_connection_id(body)
    if connection_id is not None:
        connection = find_connection(session, key, connection_id)
        if connection is None:
            raise unknown_connection(key, connection_id)
        return [(connection, names)]
    connections = session.scalars(
        select(Connection).where(Connection.provider_config_key == key).order_by(Connection.id)
    ).all()
    return [(connection, names) for connection in connections]


def _sync_names(ctx: AppContext, key: str, raw: object, *, field: str) -> list[str]:
    """Sync names from a list (of names or ``{"name"}``), a comma string, or ``*``."""
    known = ctx.integrations.by_key[key].syncs
    if isinstance(raw, str):
        items: Sequence[object] = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise BadInputError(
            f"{field}: required; a list of sync names of {key!r} (or '*'), got {raw!r}",
            field=field,
        )
    names: list[str] = []
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else item
        if name == "*":
            return list(known)
        if not isinstance(name, str) or name not in known:
            raise BadInputError(
                f"{field}[{index}]: integration {key!r} has no sync {name!r} "
                f"(its syncs: {', '.join(known) or 'none'})",
                code="unknown_sync",
                field=field,
            )
        if name not in names:
            names.append(name)
    if not names:
        raise BadInputError(f"{field}: name at least one sync, or '*'", field=field)
    return names


def _optional_connection_id(body: dict[str, Any]) -> str | None:
    if body.get("connection_id", body.get("connectionId")) is None:
        return None
    return _connection_id(body)


def _connection_id(body: dict[str, Any]) -> str:
    value = body.get("connection_id", body.get("connectionId"))
    if not isinstance(value, str) or not value:
        raise BadInputError(
            f"connection_id: must be a non-empty string, got {value!r}", field="connection_id"
        )
    return value


def _trigger_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    mode = body.get("sync_mode")
    if mode is not None:
        if not isinstance(mode, str) or mode not in _SYNC_MODES:
            raise BadInputError(
                f"sync_mode: must be one of {', '.join(_SYNC_MODES)}, got {mode!r}",
                field="sync_mode",
            )
        options.update(_SYNC_MODES[mode])
    opts = body.get("opts")
    if opts is None:
        opts = {}
    elif not isinstance(opts, dict):
        raise BadInputError(f"opts: must be an object, got {opts!r}", field="opts")
    for name in ("reset", "emptyCache"):
        value = opts.get(name)
        if value is not None and not isinstance(value, bool):
            raise BadInputError(f"opts.{name}: must be true or false, got {value!r}", field="opts")
        if value:
            options[name] = True
    if options.get("emptyCache"):
        options["reset"] = True  # an emptied cache can only be refilled by a full run
    return options


def _models(ctx: AppContext, connection: Connection, names: list[str]) -> list[str]:
    integration = ctx.integrations.by_key[connection.provider_config_key]
    return sorted({model for name in names for model in integration.syncs[name].output})


def _empty_cache(ctx: AppContext, connection_pk: int, models: list[str]) -> None:
    """Drop the cached records of the models (``full_refresh_and_clear_cache``), through the
    record store under the connection's lock, as every write of records goes.

    Raises:
        RetriableError: The lock or the database is unavailable; the new full run is
            queued already and refills the cache, but the old records stay until the
            caller retries.
    """
    if models:
        with connection_lock(ctx.redis, connection_pk):
            record_store(ctx).empty(connection_pk, models)


def sync_status(
    session: Session,
    connection: Connection,
    sync: SyncConfig,
    record_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One sync's ``/sync/status`` entry for one connection (Nango's keys).

    Args:
        session: A read session.
        connection: The connection.
        sync: The sync's configuration.
        record_counts: Live records by model when the caller counted them already (the
            console counts a connection's models in one query); counted here when None.
    """
    schedule = session.scalars(
        select(Schedule).where(
            Schedule.connection_pk == connection.id, Schedule.sync_name == sync.name
        )
    ).first()
    latest = _last_poll(session, connection, sync)
    finished = _last_poll(session, connection, sync, RunState.SUCCESS, RunState.ERROR)
    counts = record_counts if record_counts is not None else _count(session, connection, sync)
    frequency_seconds = (schedule.frequency_seconds if schedule else None) or sync.interval_seconds
    return {
        "id": schedule.id if schedule else None,
        "connection_id": connection.connection_id,
        "name": sync.name,
        "status": _status_word(schedule, latest, finished),
        "type": (latest.sync_type if latest else RunSyncType.INITIAL.value),
        "finishedAt": api_optional_time(finished.finished_at if finished else None),
        "nextScheduledSyncAt": api_optional_time(schedule.next_run_at if schedule else None),
        "frequency": sync.runs
        if not (schedule and schedule.frequency_seconds)
        else _every(frequency_seconds),
        "latestResult": (finished.result if finished else None) or {},
        "latestExecutionStatus": _execution_word(latest),
        "recordCount": {model: int(counts.get(model, 0)) for model in sync.output},
    }


def _count(session: Session, connection: Connection, sync: SyncConfig) -> dict[str, int]:
    """Live records of the sync's models, by model (one grouped query)."""
    rows = session.execute(
        select(Record.model, func.count())
        .where(
            Record.connection_pk == connection.id,
            Record.model.in_(list(sync.output)),
            Record.deleted_at.is_(None),
        )
        .group_by(Record.model)
    ).all()
    return {model: int(count) for model, count in rows}


def _last_poll(
    session: Session, connection: Connection, sync: SyncConfig, *states: RunState
) -> SyncRun | None:
    """The newest poll run of the sync; of one of ``states`` when any are given."""
    query = select(SyncRun).where(
        SyncRun.connection_pk == connection.id,
        SyncRun.sync_name == sync.name,
        SyncRun.kind == RunKind.POLL.value,
    )
    if states:
        query = query.where(SyncRun.state.in_([state.value for state in states]))
    return session.scalars(query.order_by(SyncRun.id.desc()).limit(1)).first()


def _status_word(schedule: Schedule | None, latest: SyncRun | None, done: SyncRun | None) -> str:
    if latest is not None and RunState(latest.state).is_active:
        return "RUNNING"
    if schedule is None or schedule.state == "PAUSED":
        return "PAUSED"
    if done is None:
        return "STOPPED" if schedule.next_run_at is None else "SUCCESS"
    return "SUCCESS" if done.state == RunState.SUCCESS.value else "ERROR"


def _execution_word(run: SyncRun | None) -> str | None:
    if run is None:
        return None
    return {
        RunState.QUEUED.value: "RUNNING",
        RunState.RUNNING.value: "RUNNING",
        RunState.SUCCESS.value: "SUCCESS",
        RunState.ERROR.value: "ERROR",
        RunState.CANCELLED.value: "STOPPED",
    }.get(run.state, run.state.upper())


def _every(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"every {seconds // size}{unit}"
    return f"every {seconds}s"
