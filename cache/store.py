"""The record store: batch save/update/delete, deletion detection and the records API.

Every batch is one transaction, in this order:

1. lock the (connection, model) row of ``model_seqs`` (created on first use) — the lock is
   held to commit, so writers of one model queue here and the ``mod_seq`` values they hand
   out become visible in increasing order: a reader paging by cursor can never see seq 12
   and later discover a seq 11 committed behind it;
2. read the stored state of the batch's ids (one SELECT for the whole batch);
3. decide per record with ``cache.merge.decide`` — the compare-and-write happens here,
   inside the transaction, so correctness never rests on the Redis lock alone;
4. write — new records on Postgres (psycopg) with one binary ``COPY`` in the same
   transaction, everything else with executemany (SQLAlchemy Core, no ORM unit of work) —
   and move the counter.

An unchanged record is not written at all; while a deletion-detection window is open its id
goes to ``tracking_seen`` instead, so the window's end knows it was still there. A record
the merging strategy kept (skipped) is recorded there too: the source still has it.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection as DBConnection
from sqlalchemy import (
    Insert,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import NullType

from cache.db import read_scope, session_scope
from cache.merge import (
    DEFAULT_MAX_RECORD_BYTES,
    Action,
    MergeStrategy,
    Operation,
    PreparedRecord,
    StoredState,
    canonical_json,
    decide,
    deep_merge,
    hash_payload,
    parse_strategy,
    split_duplicates,
    validate_batch,
    validate_model,
)
from cache.models import ModelSeq, Record, TrackingSeen, TrackingWindow, utcnow
from cache.page import FILTERS, MAX_IDS, MAX_LIMIT, RecordsPage, list_page, time_reader
from config.errors import BadInputError

__all__ = [
    "FILTERS",
    "MAX_IDS",
    "MAX_LIMIT",
    "BatchResult",
    "PendingWrite",
    "RecordStore",
    "RecordsPage",
    "drop_tracking_of_run",
]

log = logging.getLogger(__name__)

_records = cast(Table, Record.__table__)
_seqs = cast(Table, ModelSeq.__table__)
_windows = cast(Table, TrackingWindow.__table__)
_seen = cast(Table, TrackingSeen.__table__)

#: Inserted rows between two checks of the records table's size (Postgres).
_STATS_CHECK_ROWS = 1000
#: The table's size in pages now, and at its last ANALYZE (or VACUUM). The file size is
#: current at once, unlike pg_stat's row counts, which a busy backend publishes only about
#: once a second (a fast import would outrun them and never be analysed).
_SIZE_QUERY = text(
    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, c.relpages "
    "FROM pg_class c WHERE c.oid = 'records'::regclass"
)
#: No ANALYZE before the table has twice this many pages (128 KiB at 8 KiB pages).
_STATS_MIN_PAGES = 8
#: Two writes of one record never share a ``last_modified_at``, so an update always reads
#: as UPDATED (last_modified_at > first_seen_at) even when clocks disagree or stand still.
_TICK = timedelta(microseconds=1)

_UPDATE = (
    update(_records)
    .where(_records.c.id == bindparam("rid"))
    .values(
        payload=bindparam("p_payload"),
        data_hash=bindparam("p_hash"),
        last_modified_at=bindparam("p_time"),
        mod_seq=bindparam("p_seq"),
    )
)
_UNDELETE = (
    update(_records)
    .where(_records.c.id == bindparam("rid"))
    .values(
        payload=bindparam("p_payload"),
        data_hash=bindparam("p_hash"),
        first_seen_at=bindparam("p_time"),
        last_modified_at=bindparam("p_time"),
        deleted_at=None,
        mod_seq=bindparam("p_seq"),
    )
)
_DELETE = (
    update(_records)
    .where(_records.c.id == bindparam("rid"))
    .values(
        deleted_at=bindparam("p_time"),
        last_modified_at=bindparam("p_time"),
        mod_seq=bindparam("p_seq"),
    )
)


@dataclass(frozen=True)
class BatchResult:
    """Counts of one batch operation (ARCHITECTURE.md §5)."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    #: Existing records the merging strategy left alone (counted nowhere else).
    skipped: int = 0
    #: Ids that appeared again later in the batch; only their first record was used.
    duplicate_ids: list[str] = field(default_factory=list)
    #: The highest ``mod_seq`` this batch wrote, None if it wrote nothing.
    max_seq: int | None = None

    @property
    def counts(self) -> dict[str, int]:
        """The three numbers the completion webhook reports."""
        return {"added": self.added, "updated": self.updated, "deleted": self.deleted}


@dataclass
class _Plan:
    """The writes one batch decided on, and its counts."""

    seq: int
    #: (external_id, payload, data_hash, mod_seq) of each new record.
    inserts: list[tuple[str, str, str, int]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    undeletes: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    #: Ids saved but not written (unchanged or kept by the strategy): seen by open windows.
    seen: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(frozen=True)
class PendingWrite:
    """A validated batch operation waiting to be written (``RecordStore.prepare``)."""

    operation: Operation
    connection_pk: int
    model: str
    unique: list[PreparedRecord]
    duplicates: list[str]
    strategy: MergeStrategy
    cursor_seq: int | None
    cursor_key: Any = None


#: A row of ``_read_stored``, as the driver returns it (a plain tuple: row objects cost more
#: than the SELECT on a batch of unchanged records), read through the positions below.
_StoredRow = tuple[Any, ...]
_ID, _EXTERNAL_ID, _HASH, _IS_DELETED, _SEQ, _LAST_MODIFIED, _PAYLOAD = range(7)


class RecordStore:
    """Reads and writes the records of (connection, model) pairs.

    Args:
        sessions: the sessionmaker of the cache database.
        max_record_bytes: the largest canonical JSON a record may have.
        cursor_key: the key of the cursors' HMAC (``settings.secret_key``).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        cursor_key: str,
    ) -> None:
        if not cursor_key:
            raise ValueError("cursor_key must be a non-empty string (settings.secret_key)")
        self._sessions = sessions
        self.max_record_bytes = max_record_bytes
        self._cursor_key = cursor_key
        #: Rows this store inserts before it next checks the table's size (Postgres).
        self._rows_to_stats_check = _STATS_CHECK_ROWS

    # -- batch operations ------------------------------------------------------------

    def save(
        self,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        *,
        strategy: MergeStrategy | dict[str, Any] | str = "override",
        cursor_seq: int | None = None,
        now: datetime | None = None,
    ) -> BatchResult:
        """Upsert ``records`` (``batch_save``).

        Args:
            strategy: the model's merging strategy for this execution.
            cursor_seq: the execution's cursor; required by ``ignore_if_modified_after``.
            now: the time written as first_seen_at/last_modified_at (default: now).

        Raises:
            BadInputError: a bad record or model; nothing of the batch is written.
        """
        return self._write(Operation.SAVE, connection_pk, model, records, strategy, cursor_seq, now)

    def update(
        self,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        *,
        strategy: MergeStrategy | dict[str, Any] | str = "override",
        cursor_seq: int | None = None,
        now: datetime | None = None,
    ) -> BatchResult:
        """Deep-merge ``records`` into existing live records (``batch_update``)."""
        return self._write(
            Operation.UPDATE, connection_pk, model, records, strategy, cursor_seq, now
        )

    def delete(
        self,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        *,
        strategy: MergeStrategy | dict[str, Any] | str = "override",
        cursor_seq: int | None = None,
        now: datetime | None = None,
    ) -> BatchResult:
        """Soft-delete ``records`` by id (``batch_delete``); their payloads are kept."""
        return self._write(
            Operation.DELETE, connection_pk, model, records, strategy, cursor_seq, now
        )

    def _write(
        self,
        operation: Operation,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        strategy: MergeStrategy | dict[str, Any] | str,
        cursor_seq: int | None,
        now: datetime | None,
    ) -> BatchResult:
        pending = self.prepare(operation, connection_pk, model, records, strategy, cursor_seq)
        return self.apply([pending], now=now)[0]

    def prepare(
        self,
        operation: Operation,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        strategy: MergeStrategy | dict[str, Any] | str = "override",
        cursor_seq: int | None = None,
        *,
        cursor_key: Any = None,
    ) -> PendingWrite:
        """Validate a batch without touching the database; ``apply`` writes it.

        Args:
            cursor_key: Writes given the same key in one ``apply`` are batches of one
                execution: each one's cursor moves past what the earlier ones wrote.

        Raises:
            BadInputError: a bad record or model; nothing of the batch will be written.
        """
        merge_strategy = parse_strategy(strategy)
        if merge_strategy.name == "ignore_if_modified_after" and cursor_seq is None:
            raise ValueError("ignore_if_modified_after needs the execution's cursor_seq")
        prepared = validate_batch(records, model, self.max_record_bytes)
        unique, duplicates = split_duplicates(prepared)
        return PendingWrite(
            operation, connection_pk, model, unique, duplicates, merge_strategy, cursor_seq,
            cursor_key,
        )  # fmt: skip

    def apply(
        self, writes: Sequence[PendingWrite], *, now: datetime | None = None
    ) -> list[BatchResult]:
        """Write prepared batches in order, all in one transaction.

        Each batch is decided against what the earlier ones wrote, exactly as if each had
        been its own transaction run back to back (the coalesced webhook executions of
        ``workers.coalesce`` rely on this); the hold on each model's counter row lasts to
        the commit.
        """
        now = _aware(now)
        results: list[BatchResult] = []
        cursors: dict[Any, int] = {}
        needs_analyze = False
        if not any(write.unique for write in writes):
            return [BatchResult(duplicate_ids=write.duplicates) for write in writes]
        with session_scope(self._sessions) as session:
            conn = session.connection()
            for write in writes:
                cursor = write.cursor_seq
                if write.cursor_key is not None and cursor is not None:
                    cursor = max(cursor, cursors.get(write.cursor_key, cursor))
                result, inserted = self._apply_one(conn, write, cursor, now)
                if write.cursor_key is not None and result.max_seq is not None:
                    cursors[write.cursor_key] = max(cursor or 0, result.max_seq)
                results.append(result)
                if inserted:
                    needs_analyze = self._has_outgrown_statistics(conn, inserted) or needs_analyze
        if needs_analyze:
            self._analyze()
        return results

    def _apply_one(
        self, conn: DBConnection, write: PendingWrite, cursor_seq: int | None, now: datetime
    ) -> tuple[BatchResult, int]:
        if not write.unique:
            return BatchResult(duplicate_ids=write.duplicates), 0
        operation, connection_pk, model = write.operation, write.connection_pk, write.model
        merge_strategy, unique = write.strategy, write.unique
        start = _lock_seq(conn, connection_pk, model)
        need_payload = operation is Operation.UPDATE or merge_strategy.needs_stored_payload
        stored = _read_stored(
            conn, connection_pk, model, [item.external_id for item in unique], need_payload
        )
        plan = self._plan(operation, unique, stored, merge_strategy, cursor_seq, now, start)
        if plan.updates or plan.undeletes or plan.deletes:
            to_time = time_reader(conn.dialect)
            for row in itertools.chain(plan.updates, plan.undeletes, plan.deletes):
                row["p_time"] = max(now, to_time(row["p_time"]) + _TICK)
        if plan.inserts:
            _insert_records(conn, connection_pk, model, now, plan.inserts)
        for statement, rows in (
            (_UPDATE, plan.updates),
            (_UNDELETE, plan.undeletes),
            (_DELETE, plan.deletes),
        ):
            if rows:
                conn.execute(statement, rows)
        if plan.seq != start:
            _set_seq(conn, connection_pk, model, plan.seq)
        if plan.seen:
            _mark_seen(conn, connection_pk, model, plan.seen)
        result = BatchResult(
            added=len(plan.inserts) + len(plan.undeletes),
            updated=len(plan.updates),
            deleted=len(plan.deletes),
            unchanged=plan.unchanged,
            skipped=plan.skipped,
            duplicate_ids=write.duplicates,
            max_seq=plan.seq if plan.seq != start else None,
        )
        return result, len(plan.inserts)

    def _plan(
        self,
        operation: Operation,
        unique: list[PreparedRecord],
        stored: dict[str, _StoredRow],
        strategy: MergeStrategy,
        cursor_seq: int | None,
        now: datetime,
        start_seq: int,
    ) -> _Plan:
        plan = _Plan(seq=start_seq)
        for item in unique:
            found = stored.get(item.external_id)
            payload, data_hash = item.payload, item.data_hash
            state = stored_record = None
            if found is not None:
                state = StoredState(found[_HASH], bool(found[_IS_DELETED]), found[_SEQ])
                if len(found) > _PAYLOAD:
                    stored_record = json.loads(found[_PAYLOAD])
            if operation is Operation.UPDATE and state is not None and not state.is_deleted:
                payload = canonical_json(deep_merge(stored_record, item.record))
                self._check_merged_size(item, payload)
                data_hash = hash_payload(payload)
            action = decide(
                operation,
                state,
                data_hash,
                strategy=strategy,
                cursor_seq=cursor_seq,
                incoming=item.record,
                stored_record=stored_record,
            )
            if action is Action.INSERT:
                plan.inserts.append((item.external_id, payload, data_hash, plan.next_seq()))
                continue
            if action is Action.UNCHANGED or action is Action.SKIP:
                if action is Action.UNCHANGED:
                    plan.unchanged += 1
                else:
                    plan.skipped += 1
                plan.seen.append(item.external_id)
                continue
            if action is Action.IGNORE:
                continue
            assert found is not None
            row = {
                "rid": found[_ID],
                "p_time": found[_LAST_MODIFIED],  # raw: made max(now, it + _TICK) by _write
                "p_seq": plan.next_seq(),
            }
            if action is Action.DELETE:
                plan.deletes.append(row)
                continue
            row["p_payload"] = payload
            row["p_hash"] = data_hash
            (plan.undeletes if action is Action.UNDELETE else plan.updates).append(row)
        return plan

    def _has_outgrown_statistics(self, conn: DBConnection, inserted: int) -> bool:
        """Postgres: has ``records`` doubled in size since its last statistics?

        Without statistics the planner takes a (connection, model) for a handful of rows and
        answers the batch lookup of ``_read_stored`` by reading the whole model, so each
        batch of a big first import costs more than the one before, until autovacuum gets to
        the table a minute or so later. The check is one catalog read per
        ``_STATS_CHECK_ROWS`` inserted rows, inside the batch's transaction (a round trip,
        no extra connection); the doubling rule keeps ANALYZE runs logarithmic in the
        table's size.
        """
        if conn.dialect.name != "postgresql":
            return False
        self._rows_to_stats_check -= inserted
        if self._rows_to_stats_check > 0:
            return False
        self._rows_to_stats_check = _STATS_CHECK_ROWS
        pages, analyzed_pages = conn.execute(_SIZE_QUERY).one()
        return bool(pages >= 2 * max(analyzed_pages, _STATS_MIN_PAGES))

    def _analyze(self) -> None:
        """ANALYZE ``records`` after the batch committed (it would hold the model's lock).

        Best effort: a failure is logged and the batch (already committed) stands.
        """
        try:
            with self._sessions() as session:
                session.execute(text("ANALYZE records"))
                session.commit()
        except SQLAlchemyError:
            log.warning("could not refresh the statistics of records", exc_info=True)

    def _check_merged_size(self, item: PreparedRecord, payload: str) -> None:
        if len(payload) * 4 > self.max_record_bytes:
            size = len(payload.encode("utf-8"))
            if size > self.max_record_bytes:
                raise BadInputError(
                    f"records[{item.index}]: merged with the stored record its canonical JSON "
                    f"is {size} bytes, over the limit of {self.max_record_bytes} bytes",
                    field=f"records[{item.index}]",
                )

    # -- sequence ----------------------------------------------------------------------

    def current_seq(self, connection_pk: int, model: str) -> int:
        """The highest ``mod_seq`` handed out for (connection, model); 0 before any write."""
        with session_scope(self._sessions) as session:
            value = session.execute(
                select(_seqs.c.seq).where(
                    _seqs.c.connection_pk == connection_pk, _seqs.c.model == model
                )
            ).scalar()
        return int(value or 0)

    # -- deletion detection ----------------------------------------------------------

    def open_tracking(self, run_id: int, connection_pk: int, model: str) -> int:
        """Open a deletion-detection window for (connection, model); returns its id.

        The window takes the model's lock like a writer, so its ``start_seq`` splits the
        writers cleanly: a batch either committed before (its seqs are at most start_seq) or
        runs after and sees the window.
        """
        validate_model(model)
        with session_scope(self._sessions) as session:
            conn = session.connection()
            start_seq = _lock_seq(conn, connection_pk, model)
            result = conn.execute(
                insert(_windows).values(
                    run_id=run_id,
                    connection_pk=connection_pk,
                    model=model,
                    start_seq=start_seq,
                    opened_at=utcnow(),
                )
            )
            assert result.inserted_primary_key is not None
            return int(result.inserted_primary_key[0])

    def close_tracking(self, window_id: int, *, success: bool, now: datetime | None = None) -> int:
        """Close a window; after a successful run soft-delete what it did not see.

        Deleted: live records of the window's (connection, model) not written since the
        window opened (``mod_seq <= start_seq``) and not saved unchanged meanwhile
        (``tracking_seen``). A failed run deletes nothing. Closing a closed (or unknown)
        window does nothing, so a retried close is harmless.

        Returns:
            The number of records deleted.
        """
        now = _aware(now)
        with session_scope(self._sessions) as session:
            conn = session.connection()
            window = conn.execute(
                select(_windows.c.connection_pk, _windows.c.model).where(_windows.c.id == window_id)
            ).first()
            if window is None:
                return 0
            connection_pk, model = window
            seq = _lock_seq(conn, connection_pk, model)
            start_seq = conn.execute(
                select(_windows.c.start_seq).where(_windows.c.id == window_id)
            ).scalar()
            if start_seq is None:  # closed by someone else while we waited for the lock
                return 0
            deleted = 0
            if success:
                was_seen = (
                    select(_seen.c.external_id)
                    .where(
                        _seen.c.window_id == window_id,
                        _seen.c.external_id == _records.c.external_id,
                    )
                    .exists()
                )
                stale = conn.execute(
                    select(_records.c.id, _records.c.last_modified_at)
                    .where(
                        _records.c.connection_pk == connection_pk,
                        _records.c.model == model,
                        _records.c.deleted_at.is_(None),
                        _records.c.mod_seq <= start_seq,
                        ~was_seen,
                    )
                    .order_by(_records.c.mod_seq)
                ).all()
                rows = []
                for record_id, last_modified_at in stale:
                    seq += 1
                    rows.append(
                        {
                            "rid": record_id,
                            "p_time": max(now, last_modified_at + _TICK),
                            "p_seq": seq,
                        }
                    )
                if rows:
                    conn.execute(_DELETE, rows)
                    _set_seq(conn, connection_pk, model, seq)
                deleted = len(rows)
            conn.execute(delete(_windows).where(_windows.c.id == window_id))
        return deleted

    # -- an operator's reset ------------------------------------------------------------

    def empty(self, connection_pk: int, models: list[str]) -> int:
        """Delete every record of the connection's ``models`` (``emptyCache``); how many.

        Each model's lock is taken first, as every writer takes it, so a batch in flight
        either committed before (and is deleted) or runs after (and is kept). ``model_seqs``
        stays: cursors an app holds must stay monotonic. The caller holds the connection's
        lock as well, like every other writer.
        """
        deleted = 0
        with session_scope(self._sessions) as session:
            conn = session.connection()
            for model in sorted(set(models)):
                validate_model(model)
                _lock_seq(conn, connection_pk, model)
                result = conn.execute(
                    delete(_records).where(
                        _records.c.connection_pk == connection_pk, _records.c.model == model
                    )
                )
                deleted += int(result.rowcount or 0)
        return deleted

    # -- reading -----------------------------------------------------------------------

    def count_records(
        self, connection_pk: int, model: str, *, include_deleted: bool = False
    ) -> int:
        """How many records (live ones only, unless ``include_deleted``) the model has."""
        query = select(func.count()).where(
            _records.c.connection_pk == connection_pk, _records.c.model == model
        )
        if not include_deleted:
            query = query.where(_records.c.deleted_at.is_(None))
        with read_scope(self._sessions) as session:
            return int(session.execute(query).scalar() or 0)

    def count_by_model(self, connection_pk: int, models: Iterable[str]) -> dict[str, int]:
        """Live records of each of ``models`` (0 for a model with none), one grouped query."""
        names = sorted(set(models))
        if not names:
            return {}
        query = (
            select(_records.c.model, func.count())
            .where(
                _records.c.connection_pk == connection_pk,
                _records.c.model.in_(names),
                _records.c.deleted_at.is_(None),
            )
            .group_by(_records.c.model)
        )
        with read_scope(self._sessions) as session:
            counts = {str(model): int(count) for model, count in session.execute(query).all()}
        return {name: counts.get(name, 0) for name in names}

    def list_records(
        self,
        connection_pk: int,
        model: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        modified_after: datetime | None = None,
        filter: Collection[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> RecordsPage:
        """One page of records in the Nango shape; see ``cache.page.list_page``."""
        with read_scope(self._sessions) as session:
            return list_page(
                session,
                self._cursor_key,
                connection_pk,
                model,
                cursor=cursor,
                limit=limit,
                modified_after=modified_after,
                filter=filter,
                ids=ids,
            )


def drop_tracking_of_run(session: Session, run_id: int) -> None:
    """Forget the deletion-detection windows a run left open, in the caller's transaction.

    A re-claimed run calls it: windows an earlier, dead attempt left open would make every
    later batch of the model record what it saw, and a failed attempt deletes nothing.
    """
    session.execute(delete(_windows).where(_windows.c.run_id == run_id))


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError(f"now must be an aware datetime, got naive {now!r}")
    return now


def _dialect_insert(conn: DBConnection, table: Any) -> Insert:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"database dialect {name!r} is not supported")


def _lock_seq(conn: DBConnection, connection_pk: int, model: str) -> int:
    """Lock the model's counter row until commit (creating it) and return its value.

    SQLite needs no row lock: every transaction is BEGIN IMMEDIATE (cache.db), so writers
    are already serialised; SQLAlchemy renders no FOR UPDATE there. On Postgres a missing
    row is created with ON CONFLICT DO NOTHING — two first writers race harmlessly — and
    then locked with SELECT … FOR UPDATE.
    """
    params = {"p_pk": connection_pk, "p_model": model}
    value = conn.execute(_LOCK_SEQ, params).scalar()
    if value is None:
        try:
            conn.execute(
                _dialect_insert(conn, _seqs).values(connection_pk=connection_pk, model=model, seq=0)
            )
        except IntegrityError as error:
            raise BadInputError(
                f"connection {connection_pk!r} does not exist (was it deleted?)",
                code="unknown_connection",
                field="connection",
            ) from error
        value = conn.execute(_LOCK_SEQ, params).scalar_one()
    return int(value)


# Built once: a batch of one record spends more building statements than running them.
_LOCK_SEQ = (
    select(_seqs.c.seq)
    .where(_seqs.c.connection_pk == bindparam("p_pk"), _seqs.c.model == bindparam("p_model"))
    .with_for_update()
)
_SET_SEQ = (
    update(_seqs)
    .where(_seqs.c.connection_pk == bindparam("p_pk"), _seqs.c.model == bindparam("p_model"))
    .values(seq=bindparam("p_seq"))
)


def _set_seq(conn: DBConnection, connection_pk: int, model: str, seq: int) -> None:
    conn.execute(_SET_SEQ, {"p_pk": connection_pk, "p_model": model, "p_seq": seq})


#: New records on Postgres: binary COPY, several times faster than an executemany INSERT.
#: COPY runs inside the batch's transaction like any statement (constraints, the unique
#: index and rollback all apply); ``deleted_at`` is left to its NULL default.
_COPY_RECORDS = (
    "COPY records (connection_pk, model, external_id, payload, data_hash, first_seen_at, "
    "last_modified_at, mod_seq) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ("int4", "varchar", "varchar", "text", "varchar", "timestamp", "timestamp", "int8")


def _insert_records(
    conn: DBConnection,
    connection_pk: int,
    model: str,
    now: datetime,
    rows: list[tuple[str, str, str, int]],
) -> None:
    """Insert new records, all stamped ``now`` (first_seen_at = last_modified_at)."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_records(conn, connection_pk, model, now, rows)
        return
    conn.execute(
        insert(_records),
        [
            {
                "connection_pk": connection_pk,
                "model": model,
                "external_id": external_id,
                "payload": payload,
                "data_hash": data_hash,
                "first_seen_at": now,
                "last_modified_at": now,
                "deleted_at": None,
                "mod_seq": seq,
            }
            for external_id, payload, data_hash, seq in rows
        ],
    )


def _copy_records(
    conn: DBConnection,
    connection_pk: int,
    model: str,
    now: datetime,
    rows: list[tuple[str, str, str, int]],
) -> None:
    """``_insert_records`` through psycopg's COPY on the transaction's own connection.

    A driver error is raised as SQLAlchemy's exception of the same kind (IntegrityError,
    OperationalError, …), as an executemany would raise it.
    """
    # Only on Postgres: a SQLite deployment never loads the driver.
    import psycopg

    stamp = now.astimezone(UTC).replace(tzinfo=None)  # the column holds naive UTC
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(_COPY_RECORDS) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for external_id, payload, data_hash, seq in rows:
                write((connection_pk, model, external_id, payload, data_hash, stamp, stamp, seq))
    except psycopg.Error as error:
        raise DBAPIError.instance(_COPY_RECORDS, None, error, psycopg.Error) from error


def _read_stored(
    conn: DBConnection,
    connection_pk: int,
    model: str,
    external_ids: list[str],
    with_payload: bool,
) -> dict[str, _StoredRow]:
    """The stored state of ``external_ids``: one SELECT for the whole batch.

    The ids travel as one JSON array parameter (Postgres ``json_array_elements_text``,
    SQLite ``json_each``) looked up in the (connection, model, external_id) unique index: no
    bound-variable limit and one cached statement for any batch size. JSON, not a Postgres
    array: ``json.dumps`` is one C call where the driver adapts an array item by item.
    Postgres needs statistics to plan it that way (see ``_has_outgrown_statistics``).
    """
    query = _stored_query(conn.dialect.name, with_payload)
    ids_param = json.dumps(external_ids, ensure_ascii=False)
    result = conn.execute(query, {"ids": ids_param, "p_pk": connection_pk, "p_model": model})
    # Straight from the DBAPI cursor: no column here needs converting, and SQLAlchemy's
    # row objects cost more than the SELECT itself on a batch of unchanged records.
    assert result.cursor is not None
    rows = result.cursor.fetchall()
    result.close()
    return {row[_EXTERNAL_ID]: row for row in rows}


@functools.cache
def _stored_query(dialect: str, with_payload: bool) -> Any:
    """``_read_stored``'s SELECT for a dialect, built once."""
    columns = [  # in the order of the positions _ID … _PAYLOAD
        _records.c.id,
        _records.c.external_id,
        _records.c.data_hash,
        _records.c.deleted_at.is_not(None),
        _records.c.mod_seq,
        # Most rows of a batch are often unchanged: do not pay for parsing their time.
        type_coerce(_records.c.last_modified_at, NullType()),
    ]
    if with_payload:
        columns.append(_records.c.payload)
    in_model = (
        _records.c.connection_pk == bindparam("p_pk"),
        _records.c.model == bindparam("p_model"),
    )
    if dialect == "postgresql":
        wanted = (
            func.json_array_elements_text(sql_cast(bindparam("ids", type_=Text), postgresql.JSON))
            .table_valued("value")
            .render_derived(name="wanted")
        )
        return (
            select(*columns)
            .select_from(wanted.join(_records, _records.c.external_id == wanted.c.value))
            .where(*in_model)
        )
    # SQLite: IN (subquery) is one index lookup per id; the same join scans the model.
    wanted = func.json_each(bindparam("ids", type_=String)).table_valued("value")
    return select(*columns).where(*in_model, _records.c.external_id.in_(select(wanted.c.value)))


def _mark_seen(conn: DBConnection, connection_pk: int, model: str, external_ids: list[str]) -> None:
    """Record unchanged saves in every open window of the model (usually there is none)."""
    window_ids = (
        conn.execute(
            select(_windows.c.id).where(
                _windows.c.connection_pk == connection_pk, _windows.c.model == model
            )
        )
        .scalars()
        .all()
    )
    if window_ids:
        conn.execute(
            _dialect_insert(conn, _seen),
            [
                {"window_id": window_id, "external_id": external_id}
                for window_id in window_ids
                for external_id in external_ids
            ],
        )
