"""Property tests of the record store under interleavings (SQLite and Postgres).

1. A polling execution (``ignore_if_modified_after``, pages fetched before they are saved)
   interleaved with webhook executions (``override``) on a few records: the poll never
   overwrites a record a webhook modified since the poll's last write, so the version held
   by the cache never goes backwards.
2. A reader paging ``list_records`` by cursor between writers' batches, and once more at the
   end, holds the final state of every record.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from cache.context import AppContext
from cache.db import session_scope
from cache.models import ModelSeq, Record, TrackingSeen, TrackingWindow
from cache.store import RecordStore
from tests.support.rows import insert_connection

MODEL = "Task"
IDS = ["a", "b", "c", "d"]
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def conn(ctx: AppContext) -> int:
    with session_scope(ctx.sessions) as session:
        return insert_connection(session, "tasktracker", "c1").id


@pytest.fixture
def store(ctx: AppContext) -> RecordStore:
    return RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)


def reset(ctx: AppContext) -> None:
    """Empty the cache between examples (the database is per test, not per example)."""
    with session_scope(ctx.sessions) as session:
        for table in (TrackingSeen, TrackingWindow, Record, ModelSeq):
            session.execute(delete(table))


def stored_state(ctx: AppContext, conn: int) -> dict[str, tuple[int, bool, str]]:
    """external_id -> (mod_seq, is_deleted, payload)."""
    with session_scope(ctx.sessions) as session:
        found = session.execute(
            select(Record.external_id, Record.mod_seq, Record.deleted_at, Record.payload).where(
                Record.connection_pk == conn, Record.model == MODEL
            )
        ).all()
    return {row[0]: (row[1], row[2] is not None, row[3]) for row in found}


# --- 1. polling vs webhooks -------------------------------------------------------------

record_id = st.sampled_from(IDS)
poll_steps = st.lists(
    st.one_of(
        st.tuples(st.just("change"), record_id),  # the external API changes a record
        st.tuples(st.just("remove"), record_id),  # ... or deletes it
        st.tuples(st.just("webhook"), record_id),  # a webhook execution for that record
        st.tuples(st.just("fetch"), st.lists(record_id, min_size=1, max_size=4, unique=True)),
        st.tuples(st.just("save")),  # the poll saves the page it fetched
    ),
    max_size=30,
)


@PROPERTY_SETTINGS
@given(initial=st.sets(record_id), steps=poll_steps)
def test_a_poll_never_overwrites_a_newer_webhook_write(
    ctx: AppContext, conn: int, store: RecordStore, initial: set[str], steps: list[tuple]
) -> None:
    reset(ctx)
    counter = itertools.count(1)
    # The external API: id -> (version, exists). Every change gets a new, higher version.
    external = {rid: (0, True) for rid in IDS}
    # The version of the external state each cached record holds (deletions included).
    cached_version: dict[str, int] = {}
    if initial:
        store.save(conn, MODEL, [{"id": rid, "v": 0} for rid in sorted(initial)])
        cached_version = {rid: 0 for rid in initial}

    poll_cursor = store.current_seq(conn, MODEL)  # set_merging_strategy at the poll's start
    page: list[tuple[str, int]] | None = None  # fetched by the poll, not yet saved
    touched_by_webhooks: set[str] = set()  # modified by a webhook since the poll's last write

    def record_writes(before: dict, written: dict[str, int]) -> set[str]:
        """Check that written records moved forward; return the ids actually written."""
        after = stored_state(ctx, conn)
        changed = {rid for rid in after if before.get(rid, (None,))[0] != after[rid][0]}
        for rid in changed:
            assert written[rid] >= cached_version.get(rid, -1), (
                f"record {rid!r} went back from version {cached_version.get(rid)} to {written[rid]}"
            )
            cached_version[rid] = written[rid]
        return changed

    for step in steps:
        kind = step[0]
        if kind in ("change", "remove"):
            external[step[1]] = (next(counter), kind == "change")
        elif kind == "webhook":
            rid = step[1]
            version, exists = external[rid]
            before = stored_state(ctx, conn)
            if exists:
                result = store.save(conn, MODEL, [{"id": rid, "v": version}])
            else:
                result = store.delete(conn, MODEL, [{"id": rid}])
            if record_writes(before, {rid: version}):
                assert result.max_seq is not None
                touched_by_webhooks.add(rid)
        elif kind == "fetch":
            page = [(rid, external[rid][0]) for rid in step[1] if external[rid][1]]
        elif kind == "save" and page is not None:
            before = stored_state(ctx, conn)
            result = store.save(
                conn,
                MODEL,
                [{"id": rid, "v": version} for rid, version in page],
                strategy={"strategy": "ignore_if_modified_after"},
                cursor_seq=poll_cursor,
            )
            changed = record_writes(before, dict(page))
            after = stored_state(ctx, conn)
            protected = {rid for rid, _ in page} & touched_by_webhooks
            for rid in protected:
                assert after[rid] == before[rid], f"the poll overwrote webhook write of {rid!r}"
            assert result.skipped == len(protected)
            # Everything else in the page was written, or already identical.
            for rid, version in page:
                if rid not in protected:
                    assert rid in changed or after[rid][2] == f'{{"id":"{rid}","v":{version}}}'
            if result.max_seq is not None:
                poll_cursor = result.max_seq  # the runtime moves the cursor after each batch
                touched_by_webhooks.clear()
            page = None


# --- 2. a reader paging by cursor while writers run -------------------------------------

value = st.integers(0, 3)
writer_or_reader = st.one_of(
    st.tuples(st.just("save"), st.lists(st.tuples(record_id, value), min_size=1, max_size=4)),
    st.tuples(st.just("update"), st.lists(st.tuples(record_id, value), min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.lists(record_id, min_size=1, max_size=3)),
    st.tuples(st.just("read"), st.integers(1, 3)),
)


@PROPERTY_SETTINGS
@given(steps=st.lists(writer_or_reader, max_size=30), final_limit=st.integers(1, 5))
def test_a_reader_paging_by_cursor_sees_every_final_state(
    ctx: AppContext, conn: int, store: RecordStore, steps: list[tuple], final_limit: int
) -> None:
    reset(ctx)
    replica: dict[str, dict[str, Any]] = {}
    cursor: str | None = None

    def read(limit: int) -> bool:
        """Read one page into the replica; True if it was full (there may be more)."""
        nonlocal cursor
        page = store.list_records(conn, MODEL, cursor=cursor, limit=limit)
        for record in page.records:
            replica[record["id"]] = record
            # Resume after the last record seen, even when the page had no next_cursor.
            cursor = record["_nango_metadata"]["cursor"]
        assert (page.next_cursor is not None) == (len(page.records) == limit)
        return page.next_cursor is not None

    for kind, arg in steps:
        if kind == "save":
            store.save(conn, MODEL, [{"id": rid, "n": n} for rid, n in arg])
        elif kind == "update":
            store.update(conn, MODEL, [{"id": rid, "extra": {str(n): n}} for rid, n in arg])
        elif kind == "delete":
            store.delete(conn, MODEL, [{"id": rid} for rid in arg])
        else:
            read(arg)
    while read(final_limit):
        pass

    final = store.list_records(conn, MODEL, limit=10_000).records
    assert replica == {record["id"]: record for record in final}
