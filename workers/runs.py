"""The sync runs state machine: the one module that writes ``sync_runs``.

::

    (new) ──► queued ──claim──► running ──finish──► success | error
               ▲  │                │
               │  └─ lease out ─┐  ├─ transient failure ─► queued (backoff lease)
               │                │  └─ lease out: claimable again (another worker)
               └── sweep ◄──────┘

- **New** runs are queued with a lease, or created already ``running`` when the worker that
  routed their webhook runs them at once (``new_webhook_run(claimed=True)``). A lease on a
  queued run is the time by which its Redis message must have been picked up: past it, the
  sweeper (``sweep_expired``) queues the message again.
- **Claim** (``claim``) is one conditional UPDATE: queued, or running with an expired
  lease, becomes running with ``attempts + 1``; ``attempts`` is the fencing token every
  later write of that execution is checked against (``renew_leases``, ``RunWrites``).
- **Finish** (``RunWrites``): success or error, or back to queued with a backoff lease
  after a transient failure; written by primary key in one executemany.

Callers (the execution, ``workers.events``, the scheduler) decide *when*; this module is *how*.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, insert, literal, or_, select, update
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ColumnElement

from cache.db import update_where
from cache.models import Connection, RunKind, RunState, RunSyncType, Schedule, SyncRun

__all__ = [
    "MAX_DURATION_ROWS",
    "MERGING_STRATEGIES",
    "Claim",
    "RunWrites",
    "claim",
    "discard",
    "durations_since",
    "fail_unloadable",
    "insert_poll_run",
    "insert_poll_runs",
    "last_finished_runs",
    "last_merging_strategies",
    "new_webhook_run",
    "oldest_queued",
    "renew_leases",
    "set_sync_type",
    "sweep_expired",
]

log = logging.getLogger(__name__)

#: The key of a finished run's ``options`` holding ``{model: {"strategy", "field"?}}``: the
#: merging strategies its script set (absent: every model used the default, ``override``).
MERGING_STRATEGIES = "merging_strategies"


@dataclass(frozen=True)
class Claim:
    """What the claim transaction read; everything the execution needs outside of it."""

    run_id: int
    attempt: int
    kind: str
    sync_name: str
    sync_type: str
    started_at: datetime
    payload: Any
    options: dict[str, Any]
    webhook_event_id: str | None
    connection_pk: int
    connection_id: str
    provider_config_key: str
    credentials_encrypted: str = field(repr=False)
    metadata: dict[str, Any]
    last_sync_date: datetime | None
    #: When the attempt this claim took over (a running run whose lease ran out) started.
    previous_started_at: datetime | None = None


# -- new runs ---------------------------------------------------------------------------------


def new_webhook_run(
    *,
    connection_pk: int,
    sync_name: str,
    event_id: str,
    payload: Any,
    now: datetime,
    lease: datetime,
    claimed: bool,
) -> SyncRun:
    """A run handling one routed webhook, for the caller to add to its session.

    ``claimed``: the routing worker runs it itself, so it starts ``running`` at attempt 1
    (no message, no second claim); otherwise it is queued for ``hooksync.run_sync``.
    """
    return SyncRun(
        connection_pk=connection_pk,
        sync_name=sync_name,
        kind=RunKind.WEBHOOK.value,
        sync_type=RunSyncType.WEBHOOK.value,
        state=(RunState.RUNNING if claimed else RunState.QUEUED).value,
        webhook_event_id=event_id,
        payload=payload,
        options={},
        created_at=now,
        started_at=now if claimed else None,
        lease_expires_at=lease,
        attempts=1 if claimed else 0,
        result={},
    )


def _poll_run_values(
    *,
    connection_pk: int,
    sync_name: str,
    sync_type: str,
    now: datetime,
    lease: datetime,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The columns of a new queued poll run."""
    return {
        "connection_pk": connection_pk,
        "sync_name": sync_name,
        "kind": RunKind.POLL.value,
        "sync_type": sync_type,
        "state": RunState.QUEUED.value,
        "options": options,
        "result": {},
        "attempts": 0,
        "created_at": now,
        # Not picked up by then (the Redis message was lost), the sweeper re-enqueues it.
        "lease_expires_at": lease,
    }


def insert_poll_run(
    session: Session,
    *,
    connection_pk: int,
    sync_name: str,
    sync_type: str,
    now: datetime,
    lease_seconds: int,
    options: dict[str, Any],
) -> SyncRun:
    """Insert one queued poll run (a trigger) and flush it, so it has its id."""
    run = SyncRun(
        **_poll_run_values(
            connection_pk=connection_pk,
            sync_name=sync_name,
            sync_type=sync_type,
            now=now,
            lease=now + timedelta(seconds=lease_seconds),
            options=options,
        )
    )
    session.add(run)
    session.flush()
    return run


def insert_poll_runs(
    session: Session,
    schedules: ColumnElement[bool],
    incremental: ColumnElement[bool],
    now: datetime,
    lease_seconds: int,
) -> dict[tuple[int, str], int]:
    """Insert a queued poll run for each schedule row matching ``schedules``, in one
    ``INSERT … SELECT``.

    Args:
        schedules: Which schedule rows get a run.
        incremental: Which of them poll incrementally (the others poll from the start).

    Returns:
        The new run ids by (connection_pk, sync_name), which names a schedule.
    """
    constants = _poll_run_values(
        connection_pk=0,
        sync_name="",
        sync_type=RunSyncType.INITIAL.value,
        now=now,
        lease=now + timedelta(seconds=lease_seconds),
        options={},
    )
    columns = {
        "connection_pk": Schedule.connection_pk,
        "sync_name": Schedule.sync_name,
        "sync_type": case(
            (incremental, RunSyncType.INCREMENTAL.value), else_=RunSyncType.INITIAL.value
        ),
        **{
            name: literal(value, SyncRun.__table__.c[name].type)
            for name, value in constants.items()
            if name not in ("connection_pk", "sync_name", "sync_type")
        },
    }
    inserted = session.execute(
        insert(SyncRun)
        .from_select(list(columns), select(*columns.values()).where(schedules))
        .returning(SyncRun.id, SyncRun.connection_pk, SyncRun.sync_name)
    ).all()
    # RETURNING's order is not the rows' on every database.
    return {(run.connection_pk, run.sync_name): run.id for run in inserted}


def discard(session: Session, run_ids: list[int]) -> None:
    """Delete runs whose claim lost before anybody outside this transaction saw them."""
    if run_ids:
        session.execute(
            delete(SyncRun)
            .where(SyncRun.id.in_(sorted(run_ids)))
            .execution_options(synchronize_session=False)
        )


# -- claim and lease --------------------------------------------------------------------------


def claim(session: Session, run_id: int, now: datetime, lease_seconds: float) -> SyncRun | None:
    """Take a queued run, or a running one whose lease ran out; None if this lost.

    Returns:
        The run, freshly loaded, now ``running`` with ``attempts + 1``.
    """
    won = update_where(
        session,
        SyncRun,
        [
            SyncRun.id == run_id,
            or_(
                SyncRun.state == RunState.QUEUED.value,
                and_(
                    SyncRun.state == RunState.RUNNING.value,
                    or_(SyncRun.lease_expires_at.is_(None), SyncRun.lease_expires_at < now),
                ),
            ),
        ],
        state=RunState.RUNNING.value,
        attempts=SyncRun.attempts + 1,
        started_at=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )
    if won != 1:
        return None
    return session.get(SyncRun, run_id, populate_existing=True)


def fail_unloadable(
    session: Session, run_id: int, now: datetime, error_type: str, error: str
) -> SyncRun | None:
    """End a run whose row cannot be loaded (its JSON fails to decode): ``error``, final.

    Without this the loop of issue 9: the claim's transaction rolls back with the load, so
    ``attempts`` never moves and the sweeper re-queues the run every lease, forever. Taken
    only where a claim could take it (queued, or running under an expired lease), by one
    UPDATE that reads none of its JSON.

    Returns:
        The run with its JSON columns left unloaded (reading one raises), for the failure
        notification; None when the run was not claimable (finished, or running elsewhere).
    """
    won = update_where(
        session,
        SyncRun,
        [SyncRun.id == run_id, _claimable(now)],
        state=RunState.ERROR.value,
        attempts=SyncRun.attempts + 1,
        started_at=now,
        finished_at=now,
        lease_expires_at=None,
        error_type=error_type,
        error=error,
    )
    if won != 1:
        return None
    return session.scalars(
        select(SyncRun)
        .where(SyncRun.id == run_id)
        .options(*(defer(column, raiseload=True) for column in _JSON_COLUMNS))
        .execution_options(populate_existing=True)
    ).one()


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Queued, or running with an expired lease: what ``claim`` may take."""
    return or_(
        SyncRun.state == RunState.QUEUED.value,
        and_(
            SyncRun.state == RunState.RUNNING.value,
            or_(SyncRun.lease_expires_at.is_(None), SyncRun.lease_expires_at < now),
        ),
    )


#: The columns a poison row can fail to decode.
_JSON_COLUMNS = (SyncRun.payload, SyncRun.options, SyncRun.result)


def set_sync_type(run: SyncRun, sync_type: str) -> None:
    """Record what a claimed poll run turned out to be (INITIAL or INCREMENTAL)."""
    run.sync_type = sync_type


def renew_leases(
    session: Session, attempts: dict[int, int], now: datetime, lease_seconds: float
) -> int:
    """Extend the leases of running runs still at the given attempts; how many were.

    Args:
        attempts: ``{run_id: attempt}``: each run's fencing token.
    """
    by_attempt: dict[int, list[int]] = {}
    for run_id, attempt in attempts.items():
        by_attempt.setdefault(attempt, []).append(run_id)
    owned = 0
    for attempt, run_ids in by_attempt.items():
        owned += update_where(
            session,
            SyncRun,
            [
                SyncRun.id.in_(run_ids),
                SyncRun.state == RunState.RUNNING.value,
                SyncRun.attempts == attempt,
            ],
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
    return owned


def sweep_expired(session: Session, now: datetime, lease_seconds: int, limit: int) -> list[int]:
    """Runs whose lease ran out, to enqueue again: queued ones (the message was lost, or
    never sent) and running ones (the worker died or stopped heartbeating)."""
    queued = RunState.QUEUED.value
    running = RunState.RUNNING.value
    rows = session.execute(
        select(SyncRun.id, SyncRun.state)
        .where(
            or_(
                and_(
                    SyncRun.state == queued,
                    or_(SyncRun.lease_expires_at < now, SyncRun.lease_expires_at.is_(None)),
                ),
                and_(SyncRun.state == running, SyncRun.lease_expires_at < now),
            )
        )
        .order_by(SyncRun.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    queued_ids = [row.id for row in rows if row.state == queued]
    if queued_ids:
        # Pushed forward so the next ticks leave it alone while this message is delivered.
        # A running one keeps its expired lease: that is what lets a claim take it over.
        session.execute(
            update(SyncRun)
            .where(SyncRun.id.in_(queued_ids), SyncRun.state == queued)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
    if rows:
        log.warning(
            "sweeper: re-enqueueing %d run(s) whose lease expired (%d queued)",
            len(rows),
            len(queued_ids),
        )
    return [row.id for row in rows]


# -- finish -----------------------------------------------------------------------------------


class RunWrites:
    """Finished runs' new column values, written in one executemany by primary key.

    The unit of work's change tracking cost a batch of a hundred runs more than the rest of
    its finish (the profile showed it). The loaded objects get the values too, unflushed,
    so what reads them next (notifications, the poll's schedule) sees the new state.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def requeue(
        self, run: SyncRun, until: datetime, error_type: str | None, error: str | None
    ) -> None:
        """Back to queued after a transient failure; the sweeper re-enqueues it at ``until``."""
        self._set(
            run,
            {
                "state": RunState.QUEUED.value,
                "lease_expires_at": until,
                "error_type": error_type,
                "error": error,
            },
        )

    def close(
        self,
        run: SyncRun,
        *,
        sync_type: str,
        results: dict[str, dict[str, int]],
        error_type: str | None,
        error: str | None,
        now: datetime,
        started_at: datetime | None = None,
        strategies: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Success (no ``error_type``) or error: final.

        ``started_at``: when the execution really began, if later than its claim (a drain's
        run waits for its connection's lock first), so that a run's span in the table is
        the time it held its connection.

        ``strategies`` (the merging strategies the script set, by model) go into the run's
        ``options`` under :data:`MERGING_STRATEGIES`, beside the trigger's: ``result`` keeps
        Nango's ``{model: counts}`` shape that ``/sync/status`` and the webhooks expose.
        """
        values: dict[str, Any] = {
            "state": (RunState.SUCCESS if error_type is None else RunState.ERROR).value,
            "sync_type": sync_type,
            "finished_at": now,
            "lease_expires_at": None,
            "result": results,
            "error_type": error_type,
            "error": error,
        }
        if started_at is not None:
            values["started_at"] = started_at
        if strategies:
            values["options"] = {**(run.options or {}), MERGING_STRATEGIES: strategies}
        self._set(run, values)

    def _set(self, run: SyncRun, values: dict[str, Any]) -> None:
        self.rows.append({"id": run.id, **values})
        for key, value in values.items():
            set_committed_value(run, key, value)

    def write(self, session: Session) -> None:
        if self.rows:
            session.execute(update(SyncRun), self.rows)
            self.rows = []


# -- reads for the console ----------------------------------------------------------------------


def last_merging_strategies(
    session: Session, provider_config_key: str, sync_names: list[str]
) -> dict[str, dict[str, dict[str, str]] | None]:
    """The merging strategies the newest finished run of each sync set, by model.

    Args:
        session: A read session.
        provider_config_key: The integration whose connections' runs are read.
        sync_names: The syncs to look up.

    Returns:
        ``{sync: {model: {"strategy", "field"?}}}``; a model its last run left at the
        default is absent, and a sync that never finished a run maps to None.
    """
    found: dict[str, dict[str, dict[str, str]] | None] = {}
    for name in sync_names:
        options = session.scalars(
            select(SyncRun.options)
            .join(Connection, Connection.id == SyncRun.connection_pk)
            .where(
                Connection.provider_config_key == provider_config_key,
                SyncRun.sync_name == name,
                SyncRun.finished_at.is_not(None),
            )
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
        found[name] = None if options is None else dict(options.get(MERGING_STRATEGIES) or {})
    return found


def oldest_queued(session: Session) -> datetime | None:
    """When the oldest run still waiting for a worker was created (``/metrics``).

    Reads only the queued rows, through the ``(state, lease_expires_at)`` index.
    """
    return session.scalar(
        select(SyncRun.created_at)
        .where(SyncRun.state == RunState.QUEUED.value)
        .order_by(SyncRun.created_at)
        .limit(1)
    )


def last_finished_runs(
    session: Session, connection_pk: int, sync_names: list[str]
) -> dict[str, SyncRun]:
    """The newest finished run (poll or webhook) of each sync of a connection.

    Args:
        session: A read session.
        connection_pk: The connection's primary key.
        sync_names: The syncs to look up; one without a finished run is absent.
    """
    found: dict[str, SyncRun] = {}
    for name in sync_names:
        run = session.scalars(
            select(SyncRun)
            .where(
                SyncRun.connection_pk == connection_pk,
                SyncRun.sync_name == name,
                SyncRun.finished_at.is_not(None),
            )
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
        if run is not None:
            found[name] = run
    return found


#: At most this many runs are read for the durations chart (an hour of a busy deployment).
MAX_DURATION_ROWS = 50_000


def durations_since(session: Session, since: datetime) -> list[tuple[str, str, float]]:
    """``[(integration, sync, seconds)]`` of the runs finished since ``since`` (started ones
    only), newest first, at most :data:`MAX_DURATION_ROWS`."""
    rows = session.execute(
        select(
            Connection.provider_config_key,
            SyncRun.sync_name,
            SyncRun.started_at,
            SyncRun.finished_at,
        )
        .join(Connection, Connection.id == SyncRun.connection_pk)
        .where(SyncRun.finished_at >= since, SyncRun.started_at.is_not(None))
        .order_by(SyncRun.finished_at.desc())
        .limit(MAX_DURATION_ROWS)
    ).all()
    return [
        (key, name, max(0.0, (finished - started).total_seconds()))
        for key, name, started, finished in rows
        if started is not None and finished is not None
    ]
