"""The record store on a real database (SQLite and Postgres): counts, strategies, tracking,
list_records and the GET /records endpoint."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cache.context import AppContext
from cache.cursor import encode_cursor
from cache.db import session_scope
from cache.models import ModelSeq, Record, RunKind, SyncRun, TrackingWindow
from cache.store import BatchResult, RecordStore
from config.errors import BadInputError
from tests.support.auth import API_KEY, AUTH
from tests.support.rows import add_connection

T0 = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
T3 = T0 + timedelta(minutes=3)
MODEL = "Task"
IGNORE = {"strategy": "ignore_if_modified_after"}


# --- fixtures and helpers ---------------------------------------------------------------


def add_run(ctx: AppContext, connection_pk: int) -> int:
    with session_scope(ctx.sessions) as session:
        run = SyncRun(
            connection_pk=connection_pk,
            sync_name="tasks",
            kind=RunKind.POLL.value,
            sync_type="FULL",
        )
        session.add(run)
        session.flush()
        return run.id


@pytest.fixture
def conn(ctx: AppContext) -> int:
    return add_connection(ctx, "tasktracker", "c1")


@pytest.fixture
def store(ctx: AppContext) -> RecordStore:
    return RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)


def rows(ctx: AppContext, connection_pk: int, model: str = MODEL) -> dict[str, Record]:
    with session_scope(ctx.sessions) as session:
        found = session.scalars(
            select(Record).where(Record.connection_pk == connection_pk, Record.model == model)
        ).all()
        return {record.external_id: record for record in found}


def result(**counts: Any) -> BatchResult:
    return BatchResult(**counts)


def page_all(store: RecordStore, conn: int, **kwargs: Any) -> list[dict[str, Any]]:
    return store.list_records(conn, MODEL, limit=10_000, **kwargs).records


# --- save -------------------------------------------------------------------------------


def test_new_records_are_added_with_increasing_seqs(ctx, store, conn) -> None:
    got = store.save(conn, MODEL, [{"id": 1, "t": "a"}, {"id": "x", "t": "é"}], now=T0)
    assert got == result(added=2, max_seq=2)
    stored = rows(ctx, conn)
    assert stored["1"].payload == '{"id":1,"t":"a"}', "the record as given, canonical"
    assert stored["x"].payload == '{"id":"x","t":"é"}'
    assert (stored["1"].mod_seq, stored["x"].mod_seq) == (1, 2)
    assert stored["1"].first_seen_at == stored["1"].last_modified_at == T0
    assert stored["1"].deleted_at is None
    assert store.current_seq(conn, MODEL) == 2
    assert store.count_records(conn, MODEL) == 2


def test_an_unchanged_save_writes_nothing(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "a": {"x": 1, "y": 2}}, {"id": 2}], now=T0)
    before = {key: (r.payload, r.mod_seq, r.last_modified_at) for key, r in rows(ctx, conn).items()}
    # Same content, other key order.
    got = store.save(conn, MODEL, [{"a": {"y": 2, "x": 1}, "id": 1}, {"id": 2}], now=T1)
    assert got == result(unchanged=2, max_seq=None)
    after = {key: (r.payload, r.mod_seq, r.last_modified_at) for key, r in rows(ctx, conn).items()}
    assert after == before
    assert store.current_seq(conn, MODEL) == 2


def test_a_changed_record_is_updated(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "v": 1}, {"id": 2, "v": 1}], now=T0)
    got = store.save(conn, MODEL, [{"id": 1, "v": 2}, {"id": 2, "v": 1}, {"id": 3}], now=T1)
    assert got == result(added=1, updated=1, unchanged=1, max_seq=4)
    stored = rows(ctx, conn)
    assert stored["1"].payload == '{"id":1,"v":2}'
    assert (stored["1"].first_seen_at, stored["1"].last_modified_at) == (T0, T1)
    assert stored["1"].mod_seq == 3, "seqs follow the batch order"
    assert stored["3"].mod_seq == 4
    assert stored["2"].mod_seq == 2


def test_an_update_in_the_same_instant_still_reads_as_updated(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "v": 1}], now=T0)
    store.save(conn, MODEL, [{"id": 1, "v": 2}], now=T0 - timedelta(seconds=5))  # clock behind
    record = rows(ctx, conn)["1"]
    assert record.last_modified_at == T0 + timedelta(microseconds=1)
    assert page_all(store, conn)[0]["_nango_metadata"]["last_action"] == "UPDATED"


def test_delete_is_soft_and_counts_only_live_records(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "v": 1}, {"id": 2}], now=T0)
    got = store.delete(conn, MODEL, [{"id": 1}, {"id": "unknown"}], now=T1)
    assert got == result(deleted=1, max_seq=3)
    record = rows(ctx, conn)["1"]
    assert record.deleted_at == T1
    assert record.last_modified_at == T1
    assert record.payload == '{"id":1,"v":1}', "the payload is kept"
    assert store.delete(conn, MODEL, [{"id": 1}], now=T2) == result()
    assert rows(ctx, conn)["1"].mod_seq == 3
    assert store.count_records(conn, MODEL) == 1
    assert store.count_records(conn, MODEL, include_deleted=True) == 2


def test_saving_a_deleted_record_undeletes_it_as_added(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "v": 1}], now=T0)
    store.delete(conn, MODEL, [{"id": 1}], now=T1)
    # Even with the very same content it comes back, as added.
    got = store.save(conn, MODEL, [{"id": 1, "v": 1}], now=T2)
    assert got == result(added=1, max_seq=3)
    record = rows(ctx, conn)["1"]
    assert record.deleted_at is None
    assert record.first_seen_at == record.last_modified_at == T2
    assert page_all(store, conn)[0]["_nango_metadata"]["last_action"] == "ADDED"


def test_update_deep_merges_into_live_records_only(ctx, store, conn) -> None:
    store.save(
        conn,
        MODEL,
        [{"id": 1, "a": {"x": 1, "y": 1}, "tags": [1, 2]}, {"id": 2}, {"id": 3}],
        now=T0,
    )
    store.delete(conn, MODEL, [{"id": 3}], now=T0)
    got = store.update(
        conn,
        MODEL,
        [
            {"id": 1, "a": {"y": 2}, "tags": [3]},
            {"id": 2},  # merges to the same content
            {"id": 3, "v": 1},  # deleted: ignored
            {"id": 4, "v": 1},  # unknown: ignored
        ],
        now=T1,
    )
    assert got == result(updated=1, unchanged=1, max_seq=5)
    stored = rows(ctx, conn)
    assert stored["1"].payload == '{"a":{"x":1,"y":2},"id":1,"tags":[3]}'
    assert stored["3"].payload == '{"id":3}'
    assert "4" not in stored


def test_update_checks_the_merged_size(ctx, conn) -> None:
    store = RecordStore(ctx.sessions, cursor_key="k", max_record_bytes=60)
    store.save(conn, MODEL, [{"id": 1, "a": "x" * 30}], now=T0)
    with pytest.raises(BadInputError, match=r"records\[0\]: merged with the stored record"):
        store.update(conn, MODEL, [{"id": 1, "b": "y" * 30}], now=T1)
    assert rows(ctx, conn)["1"].payload == '{"a":"' + "x" * 30 + '","id":1}'


def test_duplicate_ids_keep_the_first(ctx, store, conn) -> None:
    got = store.save(
        conn, MODEL, [{"id": 1, "v": "a"}, {"id": 2}, {"id": "1", "v": "b"}, {"id": 1}], now=T0
    )
    assert got == result(added=2, duplicate_ids=["1", "1"], max_seq=2)
    assert rows(ctx, conn)["1"].payload == '{"id":1,"v":"a"}'


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"id": None}, "records[2].id: must be a string or integer, got None"),
        ({"v": 1}, "records[2].id: must be a string or integer, got None"),
        ({"id": False}, "records[2].id: must be a string or integer, got False"),
        ({"id": ""}, "records[2].id: must not be empty"),
        ({"id": 9, "v": float("nan")}, "records[2]: not JSON-serialisable"),
        (["id", 9], "records[2]: must be a dict"),
        ({"id": 9, "big": "x" * (1024 * 1024)}, "records[2]: canonical JSON is"),
    ],
)
def test_a_bad_record_rejects_the_whole_batch(ctx, store, conn, bad, message) -> None:
    store.save(conn, MODEL, [{"id": 1, "v": 1}], now=T0)
    for operation in (store.save, store.update, store.delete):
        with pytest.raises(BadInputError) as caught:
            operation(conn, MODEL, [{"id": 1, "v": 2}, {"id": 5}, bad], now=T1)
        assert message in str(caught.value)
    stored = rows(ctx, conn)
    assert set(stored) == {"1"}
    assert stored["1"].payload == '{"id":1,"v":1}'
    assert store.current_seq(conn, MODEL) == 1


def test_model_must_be_a_non_empty_string(store, conn) -> None:
    with pytest.raises(BadInputError, match="model must be a non-empty string"):
        store.save(conn, "", [{"id": 1}])


def test_an_empty_batch_touches_nothing(ctx, store, conn) -> None:
    assert store.save(conn, MODEL, []) == result()
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(ModelSeq)) == 0


def test_an_unknown_connection_is_refused(store) -> None:
    with pytest.raises(BadInputError) as caught:
        store.save(999_999, MODEL, [{"id": 1}])
    assert caught.value.code == "unknown_connection"


def test_connections_and_models_have_their_own_records_and_seqs(ctx, store, conn) -> None:
    other = add_connection(ctx, "tasktracker", "c2")
    store.save(conn, MODEL, [{"id": 1, "v": "task"}], now=T0)
    store.save(conn, "Note", [{"id": 1, "v": "note"}], now=T0)
    store.save(other, MODEL, [{"id": 1, "v": "other"}], now=T0)
    assert rows(ctx, conn)["1"].payload == '{"id":1,"v":"task"}'
    assert rows(ctx, conn, "Note")["1"].mod_seq == 1
    assert rows(ctx, other)["1"].mod_seq == 1
    assert store.save(conn, MODEL, [{"id": 1, "v": "task"}]).unchanged == 1


# --- strategies -------------------------------------------------------------------------


def test_ignore_if_modified_after_leaves_newer_records_alone(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": i, "v": "old"} for i in (1, 2, 3)], now=T0)
    cursor = store.current_seq(conn, MODEL)  # the poll starts here
    webhook = store.save(conn, MODEL, [{"id": 2, "v": "webhook"}], now=T1)
    store.delete(conn, MODEL, [{"id": 3}], now=T1)
    poll = store.save(
        conn,
        MODEL,
        [{"id": i, "v": "poll"} for i in (1, 2, 3, 4)],
        strategy=IGNORE,
        cursor_seq=cursor,
        now=T2,
    )
    assert webhook.max_seq == 4
    assert poll == result(added=1, updated=1, skipped=2, max_seq=7)
    stored = rows(ctx, conn)
    assert stored["1"].payload == '{"id":1,"v":"poll"}'
    assert stored["2"].payload == '{"id":2,"v":"webhook"}'
    assert stored["3"].deleted_at is not None, "a stale save does not undelete"
    assert stored["4"].payload == '{"id":4,"v":"poll"}'
    # The poll's cursor moves to its batch's max_seq: its own writes are not "newer".
    again = store.save(
        conn, MODEL, [{"id": 1, "v": "poll2"}], strategy=IGNORE, cursor_seq=poll.max_seq
    )
    assert again.updated == 1


def test_ignore_if_modified_after_applies_to_update_and_delete(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "v": 1}, {"id": 2, "v": 1}], now=T0)
    cursor = store.current_seq(conn, MODEL)
    store.save(conn, MODEL, [{"id": 1, "v": "webhook"}, {"id": 2, "v": "webhook"}], now=T1)
    update = store.update(
        conn, MODEL, [{"id": 1, "w": 1}], strategy=IGNORE, cursor_seq=cursor, now=T2
    )
    delete = store.delete(conn, MODEL, [{"id": 2}], strategy=IGNORE, cursor_seq=cursor, now=T2)
    assert update == result(skipped=1) and delete == result(skipped=1)
    stored = rows(ctx, conn)
    assert stored["1"].payload == '{"id":1,"v":"webhook"}'
    assert stored["2"].deleted_at is None


def test_ignore_if_modified_after_needs_a_cursor(store, conn) -> None:
    with pytest.raises(ValueError, match="cursor_seq"):
        store.save(conn, MODEL, [{"id": 1}], strategy=IGNORE)


def test_newest_wins_compares_the_field(ctx, store, conn) -> None:
    newest = {"strategy": "newest_wins", "field": "updated_at"}
    store.save(
        conn,
        MODEL,
        [
            {"id": 1, "updated_at": "2026-01-02T00:00:00Z", "v": "stored"},
            {"id": 2, "updated_at": "2026-01-02T00:00:00Z", "v": "stored"},
            {"id": 3, "updated_at": "2026-01-02T00:00:00Z", "v": "stored"},
            {"id": 4, "updated_at": 5, "v": "stored"},
        ],
        now=T0,
    )
    got = store.save(
        conn,
        MODEL,
        [
            {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "v": "older"},
            {"id": 2, "updated_at": "2026-01-03T00:00:00+01:00", "v": "newer"},
            {"id": 3, "v": "no field"},
            {"id": 4, "updated_at": 5, "v": "equal"},
        ],
        strategy=newest,
        now=T1,
    )
    assert got == result(updated=3, skipped=1, max_seq=7)
    stored = rows(ctx, conn)
    assert '"older"' not in stored["1"].payload
    assert '"newer"' in stored["2"].payload
    assert '"no field"' in stored["3"].payload
    assert '"equal"' in stored["4"].payload


def test_a_bad_strategy_is_refused_before_anything(store, conn) -> None:
    with pytest.raises(BadInputError, match="'latest' is unknown"):
        store.save(conn, MODEL, [{"id": 1}], strategy={"strategy": "latest"})


# --- deletion detection -----------------------------------------------------------------


def test_tracking_deletes_what_the_window_did_not_see(ctx, store, conn) -> None:
    run_id = add_run(ctx, conn)
    store.save(conn, MODEL, [{"id": i, "v": 1} for i in range(1, 7)], now=T0)
    store.delete(conn, MODEL, [{"id": 6}], now=T0)
    store.save(conn, "Other", [{"id": 1}], now=T0)
    window = store.open_tracking(run_id, conn, MODEL)
    assert store.save(conn, MODEL, [{"id": 1, "v": 1}], now=T1).unchanged == 1  # seen
    store.save(conn, MODEL, [{"id": 2, "v": 2}], now=T1)  # written
    store.delete(conn, MODEL, [{"id": 3}], now=T1)  # deleted during the window
    store.save(conn, MODEL, [{"id": 7}], now=T1)  # new
    # Another execution's unchanged save also counts as seen.
    store.save(conn, MODEL, [{"id": 4, "v": 1}], now=T1)
    seq_before = store.current_seq(conn, MODEL)

    assert store.close_tracking(window, success=True, now=T2) == 1
    stored = rows(ctx, conn)
    assert {key for key, r in stored.items() if r.deleted_at is not None} == {"3", "5", "6"}
    assert stored["5"].deleted_at == T2
    assert stored["5"].mod_seq == seq_before + 1, "a deletion is a modification"
    assert store.current_seq(conn, MODEL) == seq_before + 1
    assert rows(ctx, conn, "Other")["1"].deleted_at is None
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(TrackingWindow)) == 0
    assert store.close_tracking(window, success=True) == 0, "closing twice does nothing"


def test_a_failed_run_deletes_nothing(ctx, store, conn) -> None:
    run_id = add_run(ctx, conn)
    store.save(conn, MODEL, [{"id": 1}, {"id": 2}], now=T0)
    window = store.open_tracking(run_id, conn, MODEL)
    assert store.close_tracking(window, success=False) == 0
    assert all(r.deleted_at is None for r in rows(ctx, conn).values())
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(TrackingWindow)) == 0


def test_two_windows_track_independently(ctx, store, conn) -> None:
    run_id = add_run(ctx, conn)
    store.save(conn, MODEL, [{"id": 1}, {"id": 2}, {"id": 3}], now=T0)
    first = store.open_tracking(run_id, conn, MODEL)
    store.save(conn, MODEL, [{"id": 1}], now=T1)  # unchanged: seen by the first only
    second = store.open_tracking(run_id, conn, MODEL)
    store.save(conn, MODEL, [{"id": 2}], now=T1)  # unchanged: seen by both
    assert store.close_tracking(second, success=True, now=T2) == 2  # ids 1 and 3
    assert store.close_tracking(first, success=True, now=T3) == 0  # 3 is gone already
    assert {k for k, r in rows(ctx, conn).items() if r.deleted_at is None} == {"2"}


# --- list_records -----------------------------------------------------------------------


def test_list_records_nango_shape(store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1, "t": "a"}, {"id": "b", "t": "b"}], now=T0)
    store.save(conn, MODEL, [{"id": 1, "t": "a2"}], now=T1)
    store.delete(conn, MODEL, [{"id": "b"}], now=T2)
    page = store.list_records(conn, MODEL)
    assert page.next_cursor is None
    first, second = page.records
    assert first == {
        "id": "1",
        "t": "a2",
        "_nango_metadata": {
            "first_seen_at": "2026-11-26T12:00:00.123456+00:00",
            "last_modified_at": "2026-11-26T12:01:00.123456+00:00",
            "last_action": "UPDATED",
            "deleted_at": None,
            "cursor": encode_cursor(3, API_KEY),
        },
    }
    assert second["id"] == "b"
    assert second["_nango_metadata"]["last_action"] == "DELETED"
    assert second["_nango_metadata"]["deleted_at"] == "2026-11-26T12:02:00.123456+00:00"
    added = store.list_records(conn, MODEL, filter={"added"}).records
    assert added == []
    store.save(conn, MODEL, [{"id": "c"}], now=T3)
    added = store.list_records(conn, MODEL, filter={"added"}).records
    assert added[0]["_nango_metadata"]["last_action"] == "ADDED"


def test_the_body_is_the_records_as_compact_json(store, conn) -> None:
    """The body is spliced from the stored canonical JSON where it can be: it must read
    exactly as encoding the records would, whatever the id and payload look like."""
    store.save(
        conn,
        MODEL,
        [
            {"id": 7, "n": {"id": 7}},
            {"id": "8", "t": "digits, but a string"},
            {"id": "-9"},
            {"id": "task-1", "assignee": {"id": "task-1"}, "f": [1.5, -0.0, 10**30, None]},
            {"id": 'é "q" \\ \n', "s": "ünï ☃ \u2028 \x01"},
            {"id": "own-meta", "_nango_metadata": {"x": 1}, "z": True},
        ],
        now=T0,
    )
    store.delete(conn, MODEL, [{"id": "-9"}], now=T1)
    store.update(conn, MODEL, [{"id": 8, "u": 1}], now=T2)
    page = store.list_records(conn, MODEL, limit=3)
    rest = store.list_records(conn, MODEL, cursor=page.next_cursor)
    for one in (page, rest):
        assert one.to_json() == json.dumps(
            {"records": one.records, "next_cursor": one.next_cursor},
            ensure_ascii=False,
            separators=(",", ":"),
        )
    records = {record["id"]: record for record in page.records + rest.records}
    assert list(records) == ["7", "task-1", 'é "q" \\ \n', "own-meta", "-9", "8"]
    assert records["7"]["n"] == {"id": 7}
    assert records["task-1"]["assignee"] == {"id": "task-1"}
    assert records["own-meta"]["_nango_metadata"]["last_action"] == "ADDED"
    assert list(records["own-meta"]) == ["_nango_metadata", "id", "z"]
    assert records["-9"]["_nango_metadata"]["deleted_at"] == T1.isoformat()
    assert records["8"]["u"] == 1
    assert records["8"]["_nango_metadata"]["last_action"] == "UPDATED"


def test_every_timestamp_has_one_format(store, conn) -> None:
    whole_second = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.save(conn, MODEL, [{"id": 1}], now=whole_second)
    store.delete(conn, MODEL, [{"id": 1}], now=whole_second + timedelta(microseconds=7))
    meta = store.list_records(conn, MODEL).records[0]["_nango_metadata"]
    assert meta["first_seen_at"] == "2026-01-02T03:04:05.000000+00:00"
    assert meta["last_modified_at"] == "2026-01-02T03:04:05.000007+00:00"
    assert meta["deleted_at"] == "2026-01-02T03:04:05.000007+00:00"
    for value in (meta["first_seen_at"], meta["last_modified_at"]):
        assert datetime.fromisoformat(value).tzinfo is not None


def test_paging_by_cursor_in_mod_seq_order(store, conn) -> None:
    store.save(conn, MODEL, [{"id": i} for i in range(10)], now=T0)
    store.save(conn, MODEL, [{"id": 3, "v": 1}], now=T1)  # moves to the end
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_records(conn, MODEL, cursor=cursor, limit=3)
        pages += 1
        seen.extend(record["id"] for record in page.records)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.records[-1]["_nango_metadata"]["cursor"]
        cursor = page.next_cursor
    assert seen == ["0", "1", "2", "4", "5", "6", "7", "8", "9", "3"]
    assert pages == 4, "the last page is not full, so it has no next_cursor"
    # A full last page has a next_cursor; the page after it is empty.
    full = store.list_records(conn, MODEL, limit=10)
    assert full.next_cursor is not None
    assert store.list_records(conn, MODEL, cursor=full.next_cursor, limit=10).records == []
    # A record's own cursor resumes right after it.
    after = store.list_records(conn, MODEL, cursor=full.records[7]["_nango_metadata"]["cursor"])
    assert [r["id"] for r in after.records] == ["9", "3"]


def test_list_records_filters(store, conn) -> None:
    store.save(conn, MODEL, [{"id": i} for i in range(1, 6)], now=T0)  # 1-5 added
    store.save(conn, MODEL, [{"id": 2, "v": 1}, {"id": 3, "v": 1}], now=T1)  # 2, 3 updated
    store.delete(conn, MODEL, [{"id": 4}], now=T2)  # 4 deleted

    def ids(**kwargs: Any) -> list[str]:
        return [record["id"] for record in page_all(store, conn, **kwargs)]

    assert ids() == ["1", "5", "2", "3", "4"]
    assert ids(filter={"added"}) == ["1", "5"]
    assert ids(filter={"updated"}) == ["2", "3"]
    assert ids(filter={"deleted"}) == ["4"]
    assert ids(filter={"added", "deleted"}) == ["1", "5", "4"]
    assert ids(filter={"added", "updated", "deleted"}) == ids()
    assert ids(filter=set()) == ids()
    assert ids(ids=["5", "2", "nope"]) == ["5", "2"]
    # modified_after is strictly after.
    assert ids(modified_after=T1) == ["4"]
    assert ids(modified_after=T1 - timedelta(microseconds=1)) == ["2", "3", "4"]
    assert ids(modified_after=T0 - timedelta(days=1)) == ids()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"filter": {"added", "created"}}, "filter"),
        ({"filter": "added"}, "filter"),
        ({"ids": [str(i) for i in range(101)]}, "ids"),
        ({"ids": "abc"}, "ids"),
        ({"modified_after": datetime(2026, 1, 1)}, "modified_after"),
        ({"cursor": "forged"}, "cursor"),
    ],
)
def test_list_records_rejects_bad_parameters(store, conn, kwargs, field) -> None:
    with pytest.raises(BadInputError) as caught:
        store.list_records(conn, MODEL, **kwargs)
    assert caught.value.field == field


def test_a_cursor_signed_with_another_key_is_refused(ctx, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1}])
    other = RecordStore(ctx.sessions, cursor_key="another-key")
    cursor = other.list_records(conn, MODEL).records[0]["_nango_metadata"]["cursor"]
    with pytest.raises(BadInputError) as caught:
        store.list_records(conn, MODEL, cursor=cursor)
    assert caught.value.code == "invalid_cursor"


def test_concurrent_writers_and_a_paging_reader(ctx, store, conn) -> None:
    """Threads write the same ids at once; a reader pages all along, then once more.

    The reader must end with the final state of every record: any seq handed out out of
    commit order would let it step over a record for good.
    """
    ids = list(range(20))
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for round_ in range(15):
                batch = [{"id": i, "w": worker, "r": round_} for i in ids[worker::2]]
                batch += [{"id": i, "w": worker, "r": round_} for i in ids[:3]]
                if round_ % 5 == 4:
                    store.delete(conn, MODEL, batch[:2])
                else:
                    store.save(conn, MODEL, batch)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    replica: dict[str, dict[str, Any]] = {}
    cursor: str | None = None

    def read_page() -> None:
        nonlocal cursor
        page = store.list_records(conn, MODEL, cursor=cursor, limit=7)
        for record in page.records:
            replica[record["id"]] = record
            cursor = record["_nango_metadata"]["cursor"]

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        read_page()
    for thread in threads:
        thread.join()
    assert not errors, errors
    before = None
    while before != cursor:
        before = cursor
        read_page()
    final = page_all(store, conn)
    assert {r["id"]: r for r in final} == replica
    seqs = [r["_nango_metadata"]["cursor"] for r in final]
    assert len(set(seqs)) == len(seqs)


# --- GET /records -----------------------------------------------------------------------

HEADERS = {**AUTH, "Connection-Id": "c1", "Provider-Config-Key": "tasktracker"}


def test_get_records_pages(client, store, conn) -> None:
    store.save(conn, MODEL, [{"id": i, "n": i} for i in range(5)], now=T0)
    response = client.get("/records?model=Task&limit=3", headers=HEADERS)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert [r["id"] for r in body["records"]] == ["0", "1", "2"]
    assert body["records"][0]["n"] == 0
    assert body["records"][0]["_nango_metadata"]["last_action"] == "ADDED"
    response = client.get(
        "/records", query_string={"model": "Task", "cursor": body["next_cursor"]}, headers=HEADERS
    )
    body = response.get_json()
    assert [r["id"] for r in body["records"]] == ["3", "4"]
    assert body["next_cursor"] is None


def test_get_records_parameters(client, store, conn) -> None:
    store.save(conn, MODEL, [{"id": i} for i in range(5)], now=T0)
    store.save(conn, MODEL, [{"id": 1, "v": 1}], now=T1)
    store.delete(conn, MODEL, [{"id": 2}], now=T2)

    def ids(query: str) -> list[str]:
        response = client.get(f"/records?model=Task&{query}", headers=HEADERS)
        assert response.status_code == 200, response.get_json()
        return [record["id"] for record in response.get_json()["records"]]

    assert ids("ids=3&ids=0,4") == ["0", "3", "4"]
    assert ids("filter=updated,deleted") == ["1", "2"]
    assert ids("filter=ADDED") == ["0", "3", "4"]
    # A naive modified_after is UTC; "Z" is accepted.
    assert ids("modified_after=2026-11-26T12:01:00.123456") == ["2"]
    assert ids("modified_after=2026-11-26T12:01:00.123455Z") == ["1", "2"]
    assert ids("model=Task") == ["0", "3", "4", "1", "2"]


@pytest.mark.parametrize(
    ("query", "code", "named"),
    [
        ("", "missing_parameter", "model"),
        ("model=Task&limit=0", "invalid_parameter", "'0'"),
        ("model=Task&limit=10001", "invalid_parameter", "'10001'"),
        ("model=Task&limit=ten", "invalid_parameter", "'ten'"),
        ("model=Task&filter=created", "invalid_parameter", "'created'"),
        ("model=Task&filter=,", "invalid_parameter", "filter"),
        ("model=Task&modified_after=yesterday", "invalid_parameter", "'yesterday'"),
        ("model=Task&ids=" + ",".join(str(i) for i in range(101)), "invalid_parameter", "101"),
        ("model=Task&ids=,", "invalid_parameter", "ids"),
        ("model=Task&cursor=AAAAAAAAAAAAAAAAAAAAAA", "invalid_cursor", "AAAA"),
    ],
)
def test_get_records_bad_parameters_are_400(client, conn, query, code, named) -> None:
    response = client.get(f"/records?{query}", headers=HEADERS)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    assert named in error["message"]


def test_get_records_refuses_a_forged_cursor(client, store, conn) -> None:
    store.save(conn, MODEL, [{"id": 1}])
    forged = encode_cursor(0, "not-the-server-key")
    response = client.get(f"/records?model=Task&cursor={forged}", headers=HEADERS)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_cursor"


def test_get_records_needs_the_connection_headers(client, conn) -> None:
    response = client.get("/records?model=Task", headers=AUTH)
    assert response.status_code == 400
    assert "Connection-Id" in response.get_json()["error"]["message"]
    response = client.get("/records?model=Task", headers={**HEADERS, "Provider-Config-Key": "  "})
    assert response.status_code == 400
    assert "Provider-Config-Key" in response.get_json()["error"]["message"]


def test_get_records_unknown_connection_is_404(client, conn) -> None:
    response = client.get("/records?model=Task", headers={**HEADERS, "Connection-Id": "nope"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_connection"


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", API_KEY, "Basic dGVzdC1hcGkta2V5"])
def test_get_records_needs_the_api_key(client, store, conn, auth) -> None:
    store.save(conn, MODEL, [{"id": 1, "secret": "s"}])
    headers = {k: v for k, v in HEADERS.items() if k != "Authorization"}
    if auth is not None:
        headers["Authorization"] = auth
    response = client.get("/records?model=Task", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert b'"secret"' not in response.data


# Postgres only: SQLite keeps no statistics to check.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_statistics_follow_a_big_import(ctx, store, conn) -> None:
    """Without statistics Postgres plans the batch lookup as a scan of the whole model."""
    from sqlalchemy import text

    assert ctx.engine.dialect.name == "postgresql"
    store.save(conn, MODEL, [{"id": i} for i in range(1000)])
    time.sleep(1.5)  # a backend publishes its row counts about once a second
    store.save(conn, MODEL, [{"id": i} for i in range(1000, 2000)])
    with ctx.engine.connect() as connection:
        analyzed = connection.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'records'")
        ).scalar()
        estimated = connection.execute(
            text("SELECT reltuples FROM pg_class WHERE relname = 'records'")
        ).scalar()
    assert analyzed is not None
    assert estimated >= 1000


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_modified_after_outside_the_utc_range_is_400_not_500(
    client: FlaskClient, conn: int, value: str
) -> None:
    response = client.get(
        "/records", query_string={"model": "Task", "modified_after": value}, headers=HEADERS
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["field"] == "modified_after"
    assert repr(value) in error["message"]


def test_modified_after_with_an_offset_is_compared_in_utc(
    client: FlaskClient, store: RecordStore, conn: int
) -> None:
    store.save(conn, MODEL, [{"id": 1}])
    response = client.get(
        "/records",
        query_string={"model": "Task", "modified_after": "2000-01-01T05:00:00+05:00"},
        headers=HEADERS,
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.get_json()["records"]] == ["1"]
