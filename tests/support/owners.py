"""Watch every write to a state table and name any made outside the module that owns it.

ARCHITECTURE.md §12: each state table has one module performing its transitions.
``OwnerWatch`` holds that against the running code, not a reading of it: every INSERT,
UPDATE and DELETE the database is sent, every owned row constructed and every column of one
assigned, during the tests of the process that installed it. A write is the owner's when the
owner module is on the call stack at that moment (it may call helpers, such as
``cache.db``). Writes from test code (fixtures building rows, a test's callback simulating
another worker) are the test's business: the innermost frame decides.

The ORM's flush is the one write whose call stack says nothing (the caller that commits
flushes what an owner changed earlier), so flushed statements are judged at the change
instead: the constructor and the attribute assignments, which the ORM reports as events.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Mapper, Session

from cache.models import (
    AppEndpoint,
    ModelSeq,
    Notification,
    NotificationAttempt,
    Record,
    Schedule,
    SyncRun,
    TrackingSeen,
    TrackingWindow,
    WebhookDelivery,
    WebhookEvent,
)

__all__ = ["OWNERS", "OwnerWatch"]

#: Table -> the one module that may write it.
OWNERS: dict[str, str] = {
    "sync_runs": "workers.runs",
    "webhook_events": "workers.events",
    "webhook_deliveries": "workers.events",
    "schedules": "workers.schedules",
    "notifications": "workers.outbox",
    "notification_attempts": "workers.outbox",
    "app_endpoints": "workers.outbox",
    "records": "cache.store",
    "model_seqs": "cache.store",
    "tracking_windows": "cache.store",
    "tracking_seen": "cache.store",
}

_MODELS = (
    SyncRun,
    WebhookEvent,
    WebhookDelivery,
    Schedule,
    Notification,
    NotificationAttempt,
    AppEndpoint,
    Record,
    ModelSeq,
    TrackingWindow,
    TrackingSeen,
)

#: The project's own packages: a stack without any of them is test code writing.
_PROJECT = frozenset({"hooksync", "ingress", "scheduler", "workers", "cache", "config"})

_WRITE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)


def _modules(frame: FrameType | None) -> Iterator[str]:
    while frame is not None:
        yield frame.f_globals.get("__name__", "")
        frame = frame.f_back


def _innermost_is_test(modules: list[str]) -> bool:
    """Whether the write comes from test code (a fixture, or a test's callback that a sync
    script calls): the innermost frame of ours or of the tests', libraries skipped."""
    for name in modules:
        if name.split(".")[0] in _PROJECT:
            return False
        if name.startswith("tests.") and name != __name__:
            return True
    return True  # no frame of ours at all


class OwnerWatch:
    """Collects the writes to state tables made outside their owners (``violations``)."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def _judge(self, table: str, what: str) -> None:
        owner = OWNERS[table]
        modules = list(_modules(sys._getframe(2)))
        if "sqlalchemy.orm.unitofwork" in modules:
            return  # a flush: judged at the constructor and the assignments instead
        project = [m for m in modules if m.split(".")[0] in _PROJECT]
        if owner in project or _innermost_is_test(modules):
            return
        with self._lock:
            self.violations.append(f"{what} of {table} by {project[0]} (owner: {owner})")

    # -- the three kinds of event ------------------------------------------------------

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        match = _WRITE.match(statement)
        if match and match.group(1).lower() in OWNERS:
            self._judge(match.group(1).lower(), match.group(0).split()[0].upper())

    def _constructed(self, target: Any, _args: Any, _kwargs: Any) -> None:
        self._judge(target.__table__.name, "a new row")

    def _assigned(self, target: Any, _value: Any, _old: Any, initiator: Any) -> None:
        self._judge(target.__table__.name, f"setting {initiator.key}")

    def _deleted(self, session: Session, _flush_context: Any, _instances: Any) -> None:
        # ``session.delete(row)`` leaves no trace but the flush; owners delete with a
        # statement, so any owned row deleted through the unit of work is reported.
        for row in session.deleted:
            table = getattr(row, "__table__", None)
            if table is not None and table.name in OWNERS:
                with self._lock:
                    self.violations.append(f"session.delete() of a {table.name} row")

    def _targets(self) -> list[tuple[Any, str, Any]]:
        targets: list[tuple[Any, str, Any]] = [
            (Engine, "before_cursor_execute", self._statement),
            (Session, "before_flush", self._deleted),
        ]
        for model in _MODELS:
            targets.append((model, "init", self._constructed))
            mapper: Mapper[Any] = model.__mapper__
            for column in mapper.column_attrs:
                targets.append((getattr(model, column.key), "set", self._assigned))
        return targets

    @contextmanager
    def installed(self) -> Iterator[OwnerWatch]:
        targets = self._targets()
        for target, name, listener in targets:
            event.listen(target, name, listener)
        try:
            yield self
        finally:
            for target, name, listener in targets:
                event.remove(target, name, listener)
