"""Each state table is written by one module (ARCHITECTURE.md §12).

The whole suite runs under ``tests.support.owners.OwnerWatch`` (``tests/conftest.py``): any
test during which a state table is written outside its owner fails. These tests show the
watch itself can fail: a write from another module of the project is caught, whether it is
a statement, a new ORM row or an assignment, and the owner's own write is not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from cache.context import AppContext
from cache.db import session_scope
from cache.models import RunState, SyncRun
from tests.support.owners import OWNERS, OwnerWatch
from tests.support.rows import insert_connection
from workers import runs

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _as_module(name: str, source: str, **names: Any) -> None:
    """Run ``source`` as if it were code of the module ``name`` (a view, say)."""
    exec(compile(source, f"<{name}>", "exec"), {"__name__": name, **names})  # noqa: S102


def _taken(watch: OwnerWatch, seen: int) -> list[str]:
    """The violations since ``seen``, removed so this test's own teardown check passes."""
    found = watch.violations[seen:]
    del watch.violations[seen:]
    return found


def test_every_state_table_has_an_owner_module() -> None:
    assert set(OWNERS) >= {
        "sync_runs",
        "webhook_events",
        "webhook_deliveries",
        "schedules",
        "notifications",
    }


def test_a_view_updating_runs_itself_is_caught(ctx: AppContext, owner_watch: OwnerWatch) -> None:
    with session_scope(ctx.sessions) as session:
        pk = insert_connection(session, "tracker", "c1").id
        run = runs.insert_poll_run(
            session,
            connection_pk=pk,
            sync_name="tasks",
            sync_type="INITIAL",
            now=NOW,
            lease_seconds=90,
            options={},
        )
        run_id = run.id
    seen = len(owner_watch.violations)
    with session_scope(ctx.sessions) as session:
        _as_module(
            "ingress.syncs",
            "session.execute(update(SyncRun).where(SyncRun.id == run_id).values(state=state))",
            session=session,
            update=update,
            SyncRun=SyncRun,
            run_id=run_id,
            state=RunState.CANCELLED.value,
        )
    assert _taken(owner_watch, seen) == [
        "UPDATE of sync_runs by ingress.syncs (owner: workers.runs)"
    ]


def test_a_new_row_or_an_assignment_elsewhere_is_caught(
    ctx: AppContext, owner_watch: OwnerWatch
) -> None:
    with session_scope(ctx.sessions) as session:
        pk = insert_connection(session, "tracker", "c1").id
    seen = len(owner_watch.violations)
    with session_scope(ctx.sessions) as session:
        _as_module(
            "scheduler.tick",
            "run = runs.insert_poll_run(session, connection_pk=pk, sync_name='tasks', "
            "sync_type='INITIAL', now=now, lease_seconds=90, options={})\n"
            "run.state = 'cancelled'",
            session=session,
            runs=runs,
            pk=pk,
            now=NOW,
        )
    # The run itself was made by its owner; the assignment after it was not.
    assert _taken(owner_watch, seen) == [
        "setting state of sync_runs by scheduler.tick (owner: workers.runs)"
    ]
