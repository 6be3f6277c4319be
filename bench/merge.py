"""Merge and records-API throughput against floors measured in the same run (ARCHITECTURE.md §11).

    python -m bench.merge [--records N] [--postgres-url URL] [--no-postgres] [--no-peer]

For SQLite (a temp file) and Postgres (the URL given, or a throw-away server started with
``initdb``), in batches of 1,000:

* ``RecordStore.save`` of N new, then N changed, then N unchanged records, under
  ``override`` and ``ignore_if_modified_after``, each beside the floor: a raw executemany
  INSERT of the same, pre-serialised rows into a table of the same shape (same columns,
  types, unique constraint and index);
* ``list_records`` paging all N records 1,000 at a time into a JSON body, beside the floor:
  the same SELECT as text through the driver, each payload decoded, its ``id`` set and its
  timestamps attached as they come, and the page JSON-encoded — the least a records
  response takes (no metadata formatting, no cursors).

On Postgres a peer runs too (``bench.peer_dlt``): the ``dlt`` library's merge load of the same
records into the same database, new then changed, printed against the same raw-insert floor
and beside ours as ``hooksync / dlt``. Without dlt installed it prints why it was skipped.

Ratios are what to read; absolute numbers drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    text,
)

from bench import peer_dlt
from cache.db import make_engine, make_sessionmaker, migrate, session_scope
from cache.merge import canonical_json, hash_payload
from cache.models import Connection, UTCDateTime
from cache.store import RecordStore

BATCH = 1000
PAGE = 1000
MODEL = "Task"

#: The issue's targets: ratio to the floor each figure should reach.
TARGETS = {"new": 0.5, "changed": 0.5, "unchanged": 1.0, "list_records": 0.5}

#: What ours should reach against the dlt peer: the 0.5x-floor target over dlt's ~0.26x.
PEER_TARGET = 2.0


@dataclass
class Row:
    backend: str
    case: str
    rate: float
    floor: float
    #: None for a row with no target of its own (the peer's).
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.rate / self.floor if self.floor else float("nan")


def make_records(count: int, version: int) -> list[dict[str, Any]]:
    stamp = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=version)).isoformat()
    return [
        {
            "id": f"task-{i}",
            "title": f"Write the report for customer {i}",
            "status": "open" if version == 0 else "done",
            "updated_at": stamp,
            "assignee": {"id": i % 97, "name": f"User {i % 97}", "email": f"u{i % 97}@x.io"},
            "tags": ["billing", "q3"] if i % 2 else ["support"],
            "estimate": i % 13,
        }
        for i in range(count)
    ]


def batches(records: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(records), BATCH):
        yield records[start : start + BATCH]


def raw_table() -> Table:
    """A table shaped like ``records`` (without its name-bound index names)."""
    metadata = MetaData()
    Table("connections", metadata, Column("id", Integer, primary_key=True))
    return Table(
        "bench_raw_records",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("connection_pk", Integer, ForeignKey("connections.id"), nullable=False),
        Column("model", String(255), nullable=False),
        Column("external_id", String(255), nullable=False),
        Column("payload", Text, nullable=False),
        Column("data_hash", String(64), nullable=False),
        Column("first_seen_at", UTCDateTime, nullable=False),
        Column("last_modified_at", UTCDateTime, nullable=False),
        Column("deleted_at", UTCDateTime, nullable=True),
        Column("mod_seq", BigInteger, nullable=False),
        UniqueConstraint("connection_pk", "model", "external_id", name="uq_bench_raw"),
        Index("ix_bench_raw_page", "connection_pk", "model", "mod_seq", unique=True),
    )


def raw_rows(connection_pk: int, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The floor's rows: the same records, serialised and hashed before the clock starts."""
    now = datetime.now(UTC)
    rows = []
    for seq, record in enumerate(records, start=1):
        payload = canonical_json(record)
        rows.append(
            {
                "connection_pk": connection_pk,
                "model": MODEL,
                "external_id": record["id"],
                "payload": payload,
                "data_hash": hash_payload(payload),
                "first_seen_at": now,
                "last_modified_at": now,
                "deleted_at": None,
                "mod_seq": seq,
            }
        )
    return rows


def add_connection(engine: Engine) -> int:
    with session_scope(make_sessionmaker(engine)) as session:
        connection = Connection(
            provider_config_key="bench",
            connection_id=f"bench-{uuid.uuid4().hex}",
            credentials_encrypted="-",
            metadata_json={},
        )
        session.add(connection)
        session.flush()
        return connection.id


def bench_backend(name: str, url: str, count: int) -> list[Row]:
    """Each batch of ours runs right after the floor's batch of the same rows, so load from
    other processes on the machine hits both sides alike."""
    migrate(url)
    engine = make_engine(url)
    table = raw_table()
    table.drop(engine, checkfirst=True)
    table.create(engine)
    store = RecordStore(make_sessionmaker(engine), cursor_key="bench-key")
    new, changed = make_records(count, 0), make_records(count, 1)
    results: list[Row] = []
    try:
        for strategy in ("override", "ignore_if_modified_after"):
            connection_pk = add_connection(engine)
            cursor = store.current_seq(connection_pk, MODEL)
            for case, records in (("new", new), ("changed", changed), ("unchanged", changed)):
                rows = raw_rows(connection_pk, records)
                with engine.begin() as conn:
                    conn.execute(delete(table))
                ours = floor = 0.0
                for start in range(0, count, BATCH):
                    started = time.perf_counter()
                    with engine.begin() as conn:
                        conn.execute(insert(table), rows[start : start + BATCH])
                    floor += time.perf_counter() - started

                    batch = records[start : start + BATCH]
                    started = time.perf_counter()
                    if strategy == "override":
                        store.save(connection_pk, MODEL, batch)
                    else:
                        got = store.save(
                            connection_pk,
                            MODEL,
                            batch,
                            strategy={"strategy": strategy},
                            cursor_seq=cursor,
                        )
                        cursor = got.max_seq if got.max_seq is not None else cursor
                    ours += time.perf_counter() - started
                label = f"save {case:<9} {strategy}"
                results.append(Row(name, label, count / ours, count / floor, TARGETS[case]))
                _print_row(results[-1])
        results.append(bench_list(name, engine, store, connection_pk, count))
        _print_row(results[-1])
    finally:
        table.drop(engine, checkfirst=True)
        engine.dispose()
    return results


def bench_list(name: str, engine: Engine, store: RecordStore, connection_pk: int, count: int):
    """Page through every record, 1,000 at a time, alternating ours and the floor per page."""
    query = text(
        "SELECT external_id, payload, first_seen_at, last_modified_at, deleted_at, mod_seq "
        "FROM records WHERE connection_pk = :c AND model = :m AND mod_seq > :s "
        "ORDER BY mod_seq LIMIT :l"
    )
    ours = floor = 0.0
    cursor: str | None = None
    after, total = 0, 0
    while True:
        started = time.perf_counter()
        with engine.begin() as conn:
            rows = conn.execute(query, {"c": connection_pk, "m": MODEL, "s": after, "l": PAGE})
            page_records = []
            for external_id, payload, first_seen, last_modified, deleted, _seq in rows:
                record = json.loads(payload)
                record["id"] = external_id
                record["_meta"] = [first_seen, last_modified, deleted]
                page_records.append(record)
            body = json.dumps({"records": page_records}, default=str)
        floor += time.perf_counter() - started

        started = time.perf_counter()
        page = store.list_records(connection_pk, MODEL, cursor=cursor, limit=PAGE)
        body = page.to_json()
        ours += time.perf_counter() - started

        assert body
        total += len(page.record_texts)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        after += PAGE
    assert total == count, total
    label = f"list_records (pages of {PAGE})"
    return Row(name, label, count / ours, count / floor, TARGETS["list_records"])


_CASE_WIDTH = 40
_HEADER = (
    f"{'backend':<9} {'case':<{_CASE_WIDTH}} {'records/s':>10} {'floor/s':>10} {'ratio':>6}  target"
)


def _verdict(ratio: float, target: float) -> str:
    """Judge the ratio as printed (two decimals), so a row never reads "2.00x ... LOW"."""
    return "ok" if round(ratio, 2) >= target else "LOW"


def _print_row(row: Row) -> None:
    if row.target is None:
        verdict = "(peer)"
    else:
        mark = _verdict(row.ratio, row.target)
        verdict = f"{'>=' + format(row.target, 'g'):<5} {mark}"
    print(
        f"{row.backend:<9} {row.case:<{_CASE_WIDTH}} {row.rate:>10,.0f} {row.floor:>10,.0f} "
        f"{row.ratio:>6.2f}  {verdict}",
        flush=True,
    )


def bench_peer(url: str, count: int, ours: list[Row]) -> None:
    """Run the dlt peer on Postgres and print it against the same floor and beside ours.

    The floor is the median of the raw-insert floors just measured on this database: dlt
    loads all records in one run, so it cannot be interleaved batch by batch as ours is.
    """
    passes = {"new": make_records(count, 0), "changed": make_records(count, 1)}
    try:
        peer = peer_dlt.run(url, passes, BATCH)
    except peer_dlt.PeerSkipped as reason:
        print(f"dlt peer: skipped ({reason})", flush=True)
        return
    floors = sorted(row.floor for row in ours if row.case.startswith("save"))
    floor = floors[len(floors) // 2]
    print(
        f"peer: dlt {peer.version} on postgres, write_disposition=merge, primary_key=id, "
        "one pipeline.run per pass; floor/s = median raw-insert floor above",
        flush=True,
    )
    for case, rate in peer.rates.items():
        _print_row(Row("postgres", f"dlt merge {case:<9} (one load)", rate, floor))
    print(f"{'hooksync / dlt':<{_CASE_WIDTH + 10}} {'':>21} {'':>6}  target", flush=True)
    for row in ours:
        if not row.case.startswith("save"):
            continue
        _, case, strategy = row.case.split()
        if case in peer.rates:
            ratio = row.rate / peer.rates[case]
            mark = _verdict(ratio, PEER_TARGET)
            print(
                f"{'postgres':<9} {f'save {case:<9} {strategy}':<{_CASE_WIDTH}} "
                f"{'':>21} {ratio:>5.2f}x  >={PEER_TARGET:g}   {mark}",
                flush=True,
            )


@contextmanager
def postgres(url: str | None, enabled: bool) -> Iterator[str | None]:
    """The URL given, or a throw-away server (``initdb`` in a temp folder) that is stopped
    and removed on the way out; ``None`` when disabled or when it cannot start (the reason is
    printed)."""
    if url or not enabled:
        yield url
        return
    from tests.support.servers import PostgresServer

    folder = Path(tempfile.mkdtemp(prefix="hooksync-bench-pg-"))
    try:
        try:
            server = PostgresServer(folder)
        except (RuntimeError, OSError, KeyError) as error:
            print(f"postgres: skipped (could not start a server: {error})", flush=True)
            yield None
            return
        try:
            yield server.create_database("bench")
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.merge", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=100_000, help="records per case")
    parser.add_argument("--postgres-url", help="an existing Postgres (default: start one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-peer", action="store_true", help="skip the dlt peer")
    args = parser.parse_args(argv)
    if args.records < BATCH or args.records % BATCH:
        parser.error(f"--records must be a positive multiple of {BATCH}")
    print(
        f"{args.records:,} records per case, batches of {BATCH:,}; floor = raw executemany "
        "INSERT of pre-serialised rows (save), raw SELECT + payload decode + JSON encode (list)"
    )
    print(_HEADER)
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-") as folder:
        bench_backend("sqlite", f"sqlite:///{folder}/bench.db", args.records)
    with postgres(args.postgres_url, not args.no_postgres) as url:
        if url is None:
            # A bench that silently drops its Postgres rows reads as if they were fine.
            return 0 if args.no_postgres else 1
        ours = bench_backend("postgres", url, args.records)
        if args.no_peer:
            print("dlt peer: skipped (--no-peer)")
        else:
            bench_peer(url, args.records, ours)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
