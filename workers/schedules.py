"""Schedules and poll runs: when each (connection, sync) polls, and at most one at a time.

Every (connection, sync) has one ``schedules`` row (ARCHITECTURE.md §7). A poll run is created by
claiming the row: ``UPDATE schedules SET active_run_id = :run WHERE id = :id AND
active_run_id IS NULL ...``. Only one transaction can win that UPDATE, in any number of beat
processes or API requests, on SQLite (transactions are serialized by ``BEGIN IMMEDIATE``)
and on Postgres (the row lock makes the loser re-check ``active_run_id IS NULL`` after the
winner commits, and find it false). The loser deletes the run it inserted in the same
transaction, so nobody ever sees it.

Due times sit on a fixed grid ``starts_at + k * interval``. Claiming already moves
``next_run_at`` to the first grid point after the claim, so the grid holds even when a run
dies; ``finish_poll_run`` moves it again past the finish, skipping slots a long run missed.

Sync control (``trigger``, ``pause``, ``start``, ``set_frequency``: the ``/sync/*`` API) lives
here too: it is the same rows and the same claim.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, overload

from sqlalchemy import (
    ColumnElement,
    Integer,
    any_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute, Session

from cache.db import rows_matched, update_where
from cache.models import (
    Connection,
    ConnectionState,
    RunKind,
    RunState,
    RunSyncType,
    Schedule,
    ScheduleState,
    SyncRun,
    UTCDateTime,
)
from config.errors import BadInputError
from config.frequency import next_run_after, parse_frequency
from config.integrations import IntegrationConfig, Integrations, SyncConfig, SyncType
from workers import runs

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "claim_due",
    "create_schedules",
    "finish_poll_run",
    "get_schedules",
    "interval_for",
    "pause",
    "poll_sync_type",
    "resume_polls",
    "set_frequency",
    "start",
    "trigger",
]

log = logging.getLogger(__name__)

#: A queued run not picked up within this many seconds is re-enqueued by the sweeper.
DEFAULT_LEASE_SECONDS = 90
#: A schedule whose sync left the integrations file is looked at again after this long (in
#: case the sync comes back) instead of on every tick.
ORPHAN_RECHECK_SECONDS = 3600


@overload
def interval_for(schedule: Schedule, sync: SyncConfig) -> int: ...
@overload
def interval_for(schedule: Schedule, sync: SyncConfig | None) -> int | None: ...
def interval_for(schedule: Schedule, sync: SyncConfig | None) -> int | None:
    """The schedule's frequency in seconds: its per-connection override, else its sync's
    (None for a sync no longer configured). The one place this rule is written."""
    if schedule.frequency_seconds:
        return schedule.frequency_seconds
    return sync.interval_seconds if sync is not None else None


def poll_sync_type(
    sync: SyncConfig, last_sync_date: datetime | None, *, reset: bool = False
) -> str:
    """``INCREMENTAL`` when the sync is incremental and a previous run succeeded."""
    if sync.sync_type == SyncType.INCREMENTAL and last_sync_date is not None and not reset:
        return RunSyncType.INCREMENTAL.value
    return RunSyncType.INITIAL.value


def create_schedules(
    session: Session, integrations: Integrations, connection: Connection, now: datetime
) -> list[Schedule]:
    """Create the missing schedules of a connection, one per sync of its integration.

    ``auto_start`` syncs start ``STARTED`` and due at once; the others ``PAUSED``. Existing
    schedules are left alone, so calling this again (say after a sync was added to the
    integrations file) only fills the gaps.

    Returns:
        The schedules created by this call (flushed, with ids).
    """
    integration = integrations.by_key.get(connection.provider_config_key)
    if integration is None:
        return []
    if connection.id is None:
        session.flush()
    existing = set(
        session.scalars(select(Schedule.sync_name).where(Schedule.connection_pk == connection.id))
    )
    created = []
    for sync in integration.syncs.values():
        if sync.name in existing:
            continue
        created.append(
            Schedule(
                connection_pk=connection.id,
                sync_name=sync.name,
                state=(ScheduleState.STARTED if sync.auto_start else ScheduleState.PAUSED).value,
                starts_at=now,
                next_run_at=now if sync.auto_start else None,
            )
        )
    session.add_all(created)
    session.flush()
    return created


def get_schedules(
    session: Session,
    integrations: Integrations,
    connection: Connection,
    sync_names: Sequence[str],
    now: datetime,
    *,
    lock: bool = False,
) -> list[tuple[Schedule, SyncConfig]]:
    """The schedules of ``sync_names``, creating missing ones, in the order asked.

    Raises:
        BadInputError: Naming the first sync the connection's integration does not have.
    """
    integration = _integration(integrations, connection)
    syncs = [_sync(integration, name) for name in sync_names]
    create_schedules(session, integrations, connection, now)
    query = select(Schedule).where(
        Schedule.connection_pk == connection.id, Schedule.sync_name.in_(list(sync_names))
    )
    if lock:
        query = query.with_for_update()
    by_name = {schedule.sync_name: schedule for schedule in session.scalars(query)}
    return [(by_name[sync.name], sync) for sync in syncs]


def claim_due(
    session: Session,
    integrations: Integrations,
    now: datetime,
    limit: int = 100,
    *,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> list[int]:
    """Create a queued poll run for each due schedule, at most ``limit`` of them.

    Due means ``STARTED``, ``next_run_at <= now`` and no active run; the query walks the
    ``ix_schedules_due`` index. On Postgres, rows another beat is claiming are skipped
    (``SKIP LOCKED``) rather than waited for. Schedules whose sync is no longer configured
    are pushed back by ``ORPHAN_RECHECK_SECONDS``; those of a ``refresh_failed`` connection
    skip their slot (``resume_polls`` brings them back once new credentials come).

    A batch costs the same few statements however many schedules it claims: the locking
    SELECT, the connections' integrations, one INSERT of all the runs, one statement of all
    the claims (and, only if a claim lost, one DELETE of the losers' runs).

    Returns:
        The new run ids, to enqueue after commit.
    """
    rows = session.execute(
        select(
            Schedule.id,
            Schedule.connection_pk,
            Schedule.sync_name,
            Schedule.next_run_at,
            Schedule.starts_at,
            Schedule.frequency_seconds,
            Schedule.last_sync_date,
        )
        .where(
            Schedule.state == ScheduleState.STARTED.value,
            Schedule.next_run_at <= now,
            Schedule.active_run_id.is_(None),
        )
        .order_by(Schedule.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    # The integration of each connection, looked up apart: joined into the locking query,
    # Postgres hashed the whole connections table on every claim.
    integration_of: dict[int, str] = {}
    failed: set[int] = set()
    for pk, key, state in session.execute(
        select(Connection.id, Connection.provider_config_key, Connection.state).where(
            _among(session, Connection.id, sorted({row.connection_pk for row in rows}))
        )
    ):
        integration_of[pk] = key
        if state == ConnectionState.REFRESH_FAILED.value:
            failed.add(pk)

    claims: list[tuple[Any, SyncConfig]] = []
    for row in rows:
        sync = integrations.get_sync(integration_of.get(row.connection_pk, ""), row.sync_name)
        if sync is None:
            _defer_orphan(session, row.id, row.next_run_at, now)
        elif row.connection_pk in failed:
            # Its credentials were refused: polling would only fail again. The slot moves
            # on (rather than the row staying due) so it does not hold up the due queue.
            _skip_slot(session, row, sync, now)
        else:
            claims.append((row, sync))
    if not claims:
        return []

    # The whole batch in two statements instead of two per schedule (a tick with 1,000 due
    # spent most of its time in per-row round trips and ORM flushes): one INSERT ... SELECT
    # of the runs, then one statement holding every schedule's conditional UPDATE.
    incremental = [
        row.id
        for row, sync in claims
        if poll_sync_type(sync, row.last_sync_date) != RunSyncType.INITIAL.value
    ]
    run_of = runs.insert_poll_runs(
        session,
        _among(session, Schedule.id, [row.id for row, _s in claims]),
        _among(session, Schedule.id, incremental),
        now,
        lease_seconds,
    )
    # In claim order: (connection, sync) names a run's schedule, at most once in a batch.
    new_runs = [run_of[(row.connection_pk, row.sync_name)] for row, _sync in claims]
    won = _take_schedules(session, claims, new_runs, now)
    # Claims that lost: their runs go, unseen outside this transaction.
    runs.discard(session, sorted(set(new_runs) - set(won)))
    return won


def _take_schedules(
    session: Session, claims: list[tuple[Any, SyncConfig]], runs: list[int], now: datetime
) -> list[int]:
    """Claim each schedule for its run: ``active_run_id`` set and ``next_run_at`` on the
    grid, only where nobody claimed it or moved its due time since it was read.

    Returns:
        The runs whose claim won, in claim order.
    """
    params = [
        {
            "b_id": row.id,
            "b_seen": row.next_run_at,
            "b_run": run_id,
            "b_next": next_run_after(row.starts_at, interval_for(row, sync), now),
        }
        for (row, sync), run_id in zip(claims, runs, strict=True)
    ]
    if session.get_bind().dialect.name == "postgresql":
        # One UPDATE joined to the batch as arrays: a server round trip per schedule (an
        # executemany) cost about as much as the whole rest of the tick.
        taken = set(
            session.scalars(
                _CLAIM_ARRAYS,
                {name: [param[name] for param in params] for name in params[0]},
            )
        )
        return [run_id for run_id in runs if run_id in taken]
    # SQLite runs the executemany in-process, without round trips; the rows matched,
    # summed over the batch, tell whether every claim won.
    matched = rows_matched(session.connection().execute(_CLAIM, params))
    if matched == len(runs):
        return runs
    holder = dict(
        session.execute(
            select(Schedule.id, Schedule.active_run_id).where(
                Schedule.id.in_([param["b_id"] for param in params])
            )
        ).all()
    )
    return [param["b_run"] for param in params if holder.get(param["b_id"]) == param["b_run"]]


def _among(
    session: Session, column: InstrumentedAttribute[int], ids: Sequence[int]
) -> ColumnElement[bool]:
    """``column IN ids``; on Postgres ``column = ANY(:array)``, one parameter instead of one
    per id (a batch's IN lists of 500 cost the driver more than the rest of the statement)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(Integer())))
    return column.in_(ids)


#: A schedule's claim, run as an executemany over a batch.
_CLAIM = (
    update(Schedule)
    .where(
        Schedule.id == bindparam("b_id"),
        Schedule.active_run_id.is_(None),
        Schedule.next_run_at == bindparam("b_seen", type_=UTCDateTime()),
    )
    .values(
        active_run_id=bindparam("b_run", type_=Integer()),
        next_run_at=bindparam("b_next", type_=UTCDateTime()),
    )
)

#: The batch of ``_CLAIM_ARRAYS``: one array per parameter of ``_CLAIM``, unnested side by
#: side into rows.
_claim_batch = select(
    func.unnest(bindparam("b_id", type_=postgresql.ARRAY(Integer()))).label("b_id"),
    func.unnest(bindparam("b_seen", type_=postgresql.ARRAY(UTCDateTime()))).label("b_seen"),
    func.unnest(bindparam("b_run", type_=postgresql.ARRAY(Integer()))).label("b_run"),
    func.unnest(bindparam("b_next", type_=postgresql.ARRAY(UTCDateTime()))).label("b_next"),
).subquery("batch")

#: ``_CLAIM`` for a whole batch in one statement (Postgres). RETURNING names the runs that
#: won.
_CLAIM_ARRAYS = (
    update(Schedule)
    .where(
        Schedule.id == _claim_batch.c.b_id,
        Schedule.active_run_id.is_(None),
        Schedule.next_run_at == _claim_batch.c.b_seen,
    )
    .values(active_run_id=_claim_batch.c.b_run, next_run_at=_claim_batch.c.b_next)
    .returning(Schedule.active_run_id)
    .execution_options(synchronize_session=False)
)


def trigger(
    session: Session,
    integrations: Integrations,
    connection: Connection,
    sync_names: Sequence[str],
    now: datetime,
    *,
    reset: bool = False,
    options: dict[str, Any] | None = None,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> list[int]:
    """Start a poll run now for each named sync that has none active (paused ones too).

    A sync whose run is already queued or running is acknowledged and left alone: it gets
    no second run. With ``reset`` the run is a full ``INITIAL`` one and the schedule forgets
    its ``last_sync_date``.

    Args:
        options: Extra run options from the API (e.g. ``{"emptyCache": True}``); ``reset``
            is added to them.

    Returns:
        The ids of the runs created, to enqueue after commit.

    Raises:
        BadInputError: Naming a sync the connection's integration does not have.
    """
    run_options = dict(options or {})
    if reset:
        run_options["reset"] = True
    created: list[int] = []
    for schedule, sync in get_schedules(session, integrations, connection, sync_names, now):
        if schedule.active_run_id is not None:
            log.info(
                "sync %s of connection %s already has run %s; trigger acknowledged",
                sync.name,
                connection.id,
                schedule.active_run_id,
            )
            continue
        run = runs.insert_poll_run(
            session,
            connection_pk=connection.id,
            sync_name=sync.name,
            sync_type=poll_sync_type(sync, schedule.last_sync_date, reset=reset),
            now=now,
            lease_seconds=lease_seconds,
            options=run_options,
        )
        values: dict[str, Any] = {"active_run_id": run.id}
        if reset:
            values["last_sync_date"] = None
        won = update_where(
            session,
            Schedule,
            [Schedule.id == schedule.id, Schedule.active_run_id.is_(None)],
            **values,
        )
        if won:
            created.append(run.id)
        else:
            runs.discard(session, [run.id])
        # The UPDATE bypassed the identity map; reload the row if the caller reads it.
        session.expire(schedule)
    return created


def finish_poll_run(
    session: Session,
    run: SyncRun,
    now: datetime,
    *,
    integrations: Integrations | None = None,
) -> None:
    """Release a finished poll run's schedule and put ``next_run_at`` back on the grid.

    Call it in the transaction that moves the run to ``success``/``error``. It clears
    ``active_run_id`` only if it still names this run, records ``last_sync_date`` (the run's
    start) on success, and, for a ``STARTED`` schedule, sets ``next_run_at`` to the first
    grid point after ``now``: slots missed while the run took long are skipped.

    Args:
        integrations: Needed for the config frequency when the schedule has no override;
            without it, the grid point chosen when the run was claimed is kept.
    """
    if run.kind != RunKind.POLL.value:
        return
    schedule = session.scalars(
        select(Schedule)
        .where(Schedule.connection_pk == run.connection_pk, Schedule.sync_name == run.sync_name)
        .with_for_update()
    ).first()
    if schedule is None:
        return
    if schedule.active_run_id == run.id:
        schedule.active_run_id = None
    if run.state == RunState.SUCCESS.value and run.started_at is not None:
        if schedule.last_sync_date is None or run.started_at > schedule.last_sync_date:
            schedule.last_sync_date = run.started_at
            schedule.last_success_run_id = run.id
    if schedule.state == ScheduleState.STARTED.value:
        sync = None
        if schedule.frequency_seconds is None and integrations is not None:
            # Looked up only when needed: the override alone decides otherwise.
            connection = session.get(Connection, run.connection_pk)
            if connection is not None:
                sync = integrations.get_sync(connection.provider_config_key, run.sync_name)
        interval = interval_for(schedule, sync)
        if interval:
            schedule.next_run_at = next_run_after(schedule.starts_at, interval, now)
    session.flush()


# -- sync control: pause, start, frequency (the /sync/* API) ---------------------------------
# These only change schedule rows. Pausing never cancels a run in flight, as in Nango: it
# only stops new scheduled runs.


def pause(
    session: Session,
    integrations: Integrations,
    connection: Connection,
    sync_names: Sequence[str],
    now: datetime,
) -> list[Schedule]:
    """Stop scheduling the named syncs; a run already queued or running finishes.

    Raises:
        BadInputError: Naming a sync the connection's integration does not have.
    """
    schedules = []
    for schedule, _sync in get_schedules(
        session, integrations, connection, sync_names, now, lock=True
    ):
        schedule.state = ScheduleState.PAUSED.value
        schedule.next_run_at = None
        schedules.append(schedule)
    session.flush()
    return schedules


def start(
    session: Session,
    integrations: Integrations,
    connection: Connection,
    sync_names: Sequence[str],
    now: datetime,
) -> list[Schedule]:
    """Resume (or first start) the named syncs.

    A sync that never completed a run is due at once; one that did resumes at the next
    point of its grid. Starting a started sync changes nothing.

    Raises:
        BadInputError: Naming a sync the connection's integration does not have.
    """
    schedules = []
    for schedule, sync in get_schedules(
        session, integrations, connection, sync_names, now, lock=True
    ):
        if schedule.state != ScheduleState.STARTED.value or schedule.next_run_at is None:
            schedule.state = ScheduleState.STARTED.value
            if schedule.last_sync_date is None:
                schedule.next_run_at = now
            else:
                schedule.next_run_at = next_run_after(
                    schedule.starts_at, interval_for(schedule, sync), now
                )
        schedules.append(schedule)
    session.flush()
    return schedules


def set_frequency(
    session: Session,
    integrations: Integrations,
    connection: Connection,
    sync_name: str,
    frequency: str | None,
    now: datetime,
) -> Schedule:
    """Override a sync's frequency for one connection, or with None go back to the config's.

    A started schedule moves to the first point after ``now`` of its new grid (same
    ``starts_at``); a paused one keeps no due time until started.

    Raises:
        BadInputError: For an unknown sync, or a frequency ``parse_frequency`` rejects
            (code ``invalid_frequency``).
    """
    seconds = None if frequency is None else parse_frequency(frequency)
    ((schedule, sync),) = get_schedules(
        session, integrations, connection, [sync_name], now, lock=True
    )
    schedule.frequency_seconds = seconds
    if schedule.state == ScheduleState.STARTED.value:
        schedule.next_run_at = next_run_after(schedule.starts_at, interval_for(schedule, sync), now)
    session.flush()
    return schedule


def _defer_orphan(session: Session, schedule_id: int, seen: datetime | None, now: datetime) -> None:
    log.warning("schedule %s names a sync that is no longer configured; skipped", schedule_id)
    session.execute(
        update(Schedule)
        .where(
            Schedule.id == schedule_id,
            Schedule.active_run_id.is_(None),
            Schedule.next_run_at == seen,
        )
        .values(next_run_at=now + timedelta(seconds=ORPHAN_RECHECK_SECONDS))
        .execution_options(synchronize_session=False)
    )


def _skip_slot(session: Session, row: Any, sync: SyncConfig, now: datetime) -> None:
    session.execute(
        update(Schedule)
        .where(
            Schedule.id == row.id,
            Schedule.active_run_id.is_(None),
            Schedule.next_run_at == row.next_run_at,
        )
        .values(next_run_at=next_run_after(row.starts_at, interval_for(row, sync), now))
        .execution_options(synchronize_session=False)
    )


def resume_polls(session: Session, connection_pk: int, now: datetime) -> int:
    """Make the started schedules of a connection due now (its credentials were replaced
    after a refused refresh: the slots it skipped are caught up at the next tick).

    Returns:
        How many schedules were made due.
    """
    result = session.execute(
        update(Schedule)
        .where(
            Schedule.connection_pk == connection_pk,
            Schedule.state == ScheduleState.STARTED.value,
            Schedule.active_run_id.is_(None),
        )
        .values(next_run_at=now)
        .execution_options(synchronize_session=False)
    )
    return rows_matched(result)


def _integration(integrations: Integrations, connection: Connection) -> IntegrationConfig:
    integration = integrations.by_key.get(connection.provider_config_key)
    if integration is None:
        known = ", ".join(sorted(integrations.by_key)) or "none"
        raise BadInputError(
            f"provider_config_key {connection.provider_config_key!r} is not a configured "
            f"integration (configured: {known})",
            code="unknown_integration",
            field="provider_config_key",
        )
    return integration


def _sync(integration: IntegrationConfig, name: str) -> SyncConfig:
    sync = integration.syncs.get(name)
    if sync is None:
        known = ", ".join(sorted(integration.syncs)) or "none"
        raise BadInputError(
            f"sync {name!r} is not a sync of integration {integration.key!r} (its syncs: {known})",
            code="unknown_sync",
            field="syncs",
        )
    return sync


_TERMINAL_RUN_STATES = (RunState.SUCCESS.value, RunState.ERROR.value, RunState.CANCELLED.value)


def release_finished(session: Session, limit: int) -> int:
    """Clear ``active_run_id`` where that run is over or gone.

    A safety net: ``finish_poll_run`` normally does this in the run's final transaction.
    ``next_run_at`` needs no repair, claiming already put it on the grid.
    """
    rows = session.execute(
        select(Schedule.id, Schedule.active_run_id)
        .outerjoin(SyncRun, SyncRun.id == Schedule.active_run_id)
        .where(
            Schedule.active_run_id.is_not(None),
            or_(SyncRun.id.is_(None), SyncRun.state.in_(_TERMINAL_RUN_STATES)),
        )
        .limit(limit)
    ).all()
    for row in rows:
        session.execute(
            update(Schedule)
            .where(Schedule.id == row.id, Schedule.active_run_id == row.active_run_id)
            .values(active_run_id=None)
            .execution_options(synchronize_session=False)
        )
    if rows:
        log.warning("released %d schedule(s) whose active run had ended", len(rows))
    return len(rows)
