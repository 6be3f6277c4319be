"""``hooksync dryrun <integration> <sync> <connection_id>``: what a poll would save, saving
nothing.

The sync script's ``fetch_data`` runs against the real external API with the connection's
stored credentials, through the same ``nango`` object a worker hands it
(``workers.runtime.NangoRuntime``), but over a store that only collects: each batch is
validated as the record store validates it (``RecordStore.prepare``, which touches no
database) and compared with the cached records, and nothing is applied. No ``sync_runs``
row, cursor, record, tracking window or notification is written; ``set_metadata`` changes
only the script's own copy.

The credentials are read from the database (the API never returns them), so the command
runs where the database and ``HOOKSYNC_ENCRYPTION_KEY`` (or ``var/secrets.json``) are, like
a worker. It does not need Redis or a running stack.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cache.context import AppContext
from cache.credentials import decrypt_credentials
from cache.db import read_scope
from cache.merge import MergeStrategy, Operation
from cache.models import Record, RunSyncType, Schedule
from cache.store import BatchResult, PendingWrite, RecordStore
from cache.timestamps import api_optional_time
from config.errors import BadInputError, HooksyncError
from config.settings import load_settings
from hooksync.output import print_json, print_table
from ingress.params import find_connection
from workers.execution import classify_error
from workers.external import redact, secret_values
from workers.runtime import ConnectionInfo, NangoRuntime
from workers.schedules import poll_sync_type
from workers.scripts import load_function

__all__ = ["CollectingStore", "DryRunFailed", "DryRunResult", "ModelPlan", "dry_run", "run_command"]

#: What a dry run says each record would do.
NEW, CHANGED, UNCHANGED, UPDATE, DELETE, IGNORED, UNSEEN = (
    "new", "changed", "unchanged", "update", "delete", "ignored", "unseen-delete",
)  # fmt: skip


class DryRunFailed(HooksyncError):
    """The script failed; the message is classified and has the credentials masked."""


@dataclass
class ModelPlan:
    """What one model would get: each record's action, in the order the script sent them."""

    model: str
    records: list[dict[str, Any]] = field(default_factory=list)

    def add(self, action: str, external_id: str, record: dict[str, Any] | None) -> None:
        self.records.append({"action": action, "id": external_id, "record": record})

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((NEW, CHANGED, UNCHANGED, UPDATE, DELETE, IGNORED, UNSEEN), 0)
        for item in self.records:
            counts[item["action"]] += 1
        return counts


@dataclass(frozen=True)
class DryRunResult:
    integration: str
    sync: str
    connection_id: str
    sync_type: str
    last_sync_date: datetime | None
    models: dict[str, ModelPlan]

    def to_json(self) -> dict[str, Any]:
        return {
            "integration": self.integration,
            "sync": self.sync,
            "connection_id": self.connection_id,
            "sync_type": self.sync_type,
            "last_sync_date": api_optional_time(self.last_sync_date),
            "written": False,
            "models": {
                name: {"counts": plan.counts, "records": plan.records}
                for name, plan in self.models.items()
            },
        }


class CollectingStore:
    """A ``workers.runtime.StoreLike`` that validates and compares, and writes nothing.

    Args:
        sessions: Read-only access to the cached records (``read_scope`` only).
        connection_pk: The connection whose records are compared.
        models: The sync's declared models (listed even when the script sends nothing).
    """

    def __init__(
        self, sessions: sessionmaker[Session], connection_pk: int, models: Sequence[str]
    ) -> None:
        self._sessions = sessions
        self._connection_pk = connection_pk
        # prepare() is pure validation; this store's other methods are never called.
        self._validator = RecordStore(sessions, cursor_key="dry-run")
        self.models = {model: ModelPlan(model) for model in models}
        self._windows: dict[int, str] = {}
        self._window_ids = itertools.count(1)
        self._seen: dict[str, set[str]] = {}

    def prepare(
        self,
        operation: Operation,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        strategy: MergeStrategy,
        cursor_seq: int | None,
        *,
        cursor_key: Any = None,
    ) -> PendingWrite:
        # The cursor only fences real writes; 0 satisfies ignore_if_modified_after's check.
        return self._validator.prepare(
            operation, connection_pk, model, records, strategy, cursor_seq or 0,
            cursor_key=cursor_key,
        )  # fmt: skip

    def apply(
        self, writes: Sequence[PendingWrite], *, now: datetime | None = None
    ) -> list[BatchResult]:
        for write in writes:
            plan = self.models.setdefault(write.model, ModelPlan(write.model))
            stored = self._stored(write.model, [item.external_id for item in write.unique])
            seen = self._seen.setdefault(write.model, set())
            for item in write.unique:
                stored_hash, live = stored.get(item.external_id, (None, False))
                if write.operation is Operation.SAVE:
                    seen.add(item.external_id)
                    if not live:
                        action = NEW
                    else:
                        action = UNCHANGED if stored_hash == item.data_hash else CHANGED
                elif write.operation is Operation.UPDATE:
                    action = UPDATE if live else IGNORED
                else:
                    action = DELETE if live else IGNORED
                plan.add(action, item.external_id, item.record)
        return [BatchResult() for _ in writes]

    def current_seq(self, connection_pk: int, model: str) -> int:
        return 0

    def open_tracking(self, run_id: int, connection_pk: int, model: str) -> int:
        window = next(self._window_ids)
        self._windows[window] = model
        return window

    def close_tracking(self, window_id: int, *, success: bool) -> int:
        """Name the live records the run did not save: a real run would delete them."""
        model = self._windows.pop(window_id)
        if not success:
            return 0
        with read_scope(self._sessions) as session:
            live = session.scalars(
                select(Record.external_id)
                .where(
                    Record.connection_pk == self._connection_pk,
                    Record.model == model,
                    Record.deleted_at.is_(None),
                )
                .order_by(Record.mod_seq)
            ).all()
        unseen = [
            external_id for external_id in live if external_id not in self._seen.get(model, set())
        ]
        plan = self.models.setdefault(model, ModelPlan(model))
        for external_id in unseen:
            plan.add(UNSEEN, external_id, None)
        return len(unseen)

    def _stored(self, model: str, external_ids: list[str]) -> dict[str, tuple[str | None, bool]]:
        """``{external_id: (data_hash, is_live)}`` of the cached records among the ids."""
        if not external_ids:
            return {}
        with read_scope(self._sessions) as session:
            rows = session.execute(
                select(Record.external_id, Record.data_hash, Record.deleted_at).where(
                    Record.connection_pk == self._connection_pk,
                    Record.model == model,
                    Record.external_id.in_(external_ids),
                )
            ).all()
        return {row[0]: (row[1], row[2] is None) for row in rows}


def dry_run(
    ctx: AppContext, integration: str, sync_name: str, connection_id: str, *, full: bool = False
) -> DryRunResult:
    """Run the sync's ``fetch_data`` for the connection and collect what it would save.

    Args:
        ctx: The process's context (its database and integrations; Redis is not used).
        integration: The integration key.
        sync_name: One of its syncs.
        connection_id: The connection whose credentials and metadata are used.
        full: Run as a full (INITIAL) sync even when the next poll would be incremental.

    Raises:
        BadInputError: Unknown integration, sync or connection.
        DryRunFailed: The script failed (the message says how, credentials masked).
    """
    known = ctx.integrations.by_key.get(integration)
    if known is None:
        names = ", ".join(sorted(ctx.integrations.by_key)) or "none"
        raise BadInputError(
            f"integration: no integration {integration!r} in nango.yaml (configured: {names})",
            field="integration",
        )
    sync = known.syncs.get(sync_name)
    if sync is None:
        raise BadInputError(
            f"sync: integration {integration!r} has no sync {sync_name!r} "
            f"(its syncs: {', '.join(known.syncs) or 'none'})",
            field="sync",
        )
    with read_scope(ctx.sessions) as session:
        connection = find_connection(session, integration, connection_id)
        if connection is None:
            raise BadInputError(
                f"connection_id: connection {connection_id!r} not found in integration "
                f"{integration!r}",
                field="connection_id",
            )
        last = session.scalar(
            select(Schedule.last_sync_date).where(
                Schedule.connection_pk == connection.id, Schedule.sync_name == sync_name
            )
        )
        info = (
            connection.id,
            connection.credentials_encrypted,
            dict(connection.metadata_json or {}),
        )
    sync_type = poll_sync_type(sync, last, reset=full)
    last_sync_date = last if sync_type == RunSyncType.INCREMENTAL.value else None
    credentials = decrypt_credentials(ctx.settings.encryption_key, info[1])
    store = CollectingStore(ctx.sessions, info[0], sync.output)
    runtime = NangoRuntime(
        store=store,
        connection=ConnectionInfo(
            pk=info[0],
            connection_id=connection_id,
            provider_config_key=integration,
            credentials=credentials,
            metadata=info[2],
        ),
        provider=known.provider,
        run_id=0,
        sync_name=sync_name,
        sync_type=sync_type,
        last_sync_date=last_sync_date,
        output_models=sync.output,
    )
    try:
        fetch_data = load_function(
            ctx.settings.integrations_dir, integration, sync_name, "fetch_data"
        )
        if sync.track_deletes and sync_type == RunSyncType.INITIAL.value:
            for model in sync.output:
                runtime.track_deletes_start(model)
        fetch_data(runtime)
        runtime.close_tracking(success=True)
    except Exception as error:
        error_type, message = classify_error(error)
        raise DryRunFailed(
            f"fetch_data failed ({error_type}): {redact(message, secret_values(credentials))}"
        ) from None
    finally:
        runtime.close()
    return DryRunResult(
        integration, sync_name, connection_id, sync_type, last_sync_date, store.models
    )


def run_command(args: argparse.Namespace) -> int:
    """``hooksync dryrun``: the dry run, printed as tables or (``--json``) in full."""
    ctx = AppContext(load_settings())
    try:
        result = dry_run(ctx, args.integration, args.sync, args.connection_id, full=args.full)
    finally:
        ctx.close()
    if args.json:
        print_json(result.to_json())
        return 0
    since = f" since {api_optional_time(result.last_sync_date)}" if result.last_sync_date else ""
    print(
        f"dry run of {result.integration}/{result.sync} for connection "
        f"{result.connection_id!r}: {result.sync_type}{since}; nothing was written"
    )
    for name, plan in result.models.items():
        counts = {action: count for action, count in plan.counts.items() if count}
        summary = ", ".join(f"{count} {action}" for action, count in counts.items())
        print(f"{name}: {len(plan.records)} record(s){': ' + summary if summary else ''}")
        print_table(
            ["ACTION", "ID", "RECORD"],
            [[item["action"], item["id"], _fields(item["record"])] for item in plan.records],
            empty="  (nothing)",
        )
    return 0


def _fields(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without its id (a column of its own)."""
    return None if record is None else {k: v for k, v in record.items() if k != "id"}
