"""The run heartbeat's database cost at 1,000 concurrent runs (issue 9, ARCHITECTURE.md §10).

    python -m bench.heartbeat [--runs N] [--history N] [--seconds N]
                              [--postgres-url URL] [--no-postgres]

A running run's lease (``HOOKSYNC_RUN_LEASE_SECONDS``, default 8 s) is renewed every third
of it by its worker (``workers.execution.LeaseHeartbeat`` → ``workers.runs.renew_leases``,
fenced by ``attempts``): the shorter the lease, the sooner a dead worker's run is taken over
and the more heartbeat writes the database takes. A prefork child executes one task at a
time, so a heartbeat covers one poll run, or every run of a coalesced webhook batch (up to
the drain's 100).

For SQLite (a temp file) and Postgres (the URL given, or a throw-away server): a migrated
database with N running runs (one per connection) beside ``--history`` finished ones. Then,
each repeated for ``--seconds`` (median printed):

* **per run**: N heartbeats, each its own transaction renewing one run (a poll's);
* **per batch of 100**: N/100 transactions, each renewing 100 runs in one UPDATE (a
  coalesced batch of webhook runs);
* **one UPDATE for all**: one transaction renewing every run (the floor: one process
  beating for all of them).

It prints the database time of one round (every run renewed once) and what the heartbeat
costs per second at several leases: rounds per second = 3 / lease, so writes per second =
transactions per round × 3 / lease, and the share of one database connection's time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import insert, select

from bench.merge import postgres
from bench.scheduler import NOW, SYNC, context, insert_connections
from cache.context import AppContext
from cache.db import migrate, session_scope
from cache.models import RunKind, RunState, SyncRun
from workers import runs

#: Leases whose heartbeat cost is printed (8 s is the default; 90 s was the old one).
LEASES = (4.0, 8.0, 15.0, 90.0)
MIN_REPEATS = 3


def populate(ctx: AppContext, running: int, history: int) -> dict[int, int]:
    """``running`` running runs at attempt 1 (one per connection) and ``history`` finished
    runs; the ``{run_id: attempt}`` of the running ones."""
    with session_scope(ctx.sessions) as session:
        pks = insert_connections(session, running, NOW)

        def row(pk: int, state: str) -> dict[str, object]:
            done = state != RunState.RUNNING.value
            return {
                "connection_pk": pk,
                "sync_name": SYNC,
                "kind": RunKind.POLL.value,
                "sync_type": "INCREMENTAL",
                "state": state,
                "options": {},
                "result": {},
                "attempts": 1,
                "created_at": NOW,
                "started_at": NOW,
                "finished_at": NOW if done else None,
                "lease_expires_at": None if done else NOW + timedelta(seconds=8),
            }

        session.execute(
            insert(SyncRun),
            [row(pks[index % len(pks)], RunState.SUCCESS.value) for index in range(history)],
        )
        session.execute(insert(SyncRun), [row(pk, RunState.RUNNING.value) for pk in pks])
        ids = session.scalars(
            select(SyncRun.id).where(SyncRun.state == RunState.RUNNING.value)
        ).all()
    return {run_id: 1 for run_id in ids}


def renew_in_chunks(ctx: AppContext, attempts: dict[int, int], chunk: int) -> int:
    """One transaction per ``chunk`` runs, as that many heartbeats would; transactions."""
    items = sorted(attempts.items())
    transactions = 0
    for start in range(0, len(items), chunk):
        with session_scope(ctx.sessions) as session:
            owned = runs.renew_leases(
                session, dict(items[start : start + chunk]), NOW + timedelta(seconds=1), 8
            )
        assert owned == len(items[start : start + chunk]), "a heartbeat lost its run"
        transactions += 1
    return transactions


def measure(seconds: float, round_: Callable[[], int]) -> tuple[float, int]:
    """Median milliseconds of one round, and the transactions in a round."""
    samples: list[float] = []
    transactions = 0
    deadline = time.monotonic() + seconds
    while len(samples) < MIN_REPEATS or time.monotonic() < deadline:
        started = time.perf_counter()
        transactions = round_()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), transactions


def bench_backend(name: str, url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-hb-") as folder:
        with context(url, folder) as ctx:
            migrate(url)
            attempts = populate(ctx, args.runs, args.history)
            for label, chunk in (
                ("per run", 1),
                ("per batch of 100", 100),
                ("one UPDATE for all", len(attempts)),
            ):
                ms, transactions = measure(
                    args.seconds, lambda chunk=chunk: renew_in_chunks(ctx, attempts, chunk)
                )
                costs = "  ".join(
                    f"{transactions * 3 / lease:>7.1f}/s {ms * 3 / lease / 10:>5.1f} %"
                    for lease in LEASES
                )
                print(
                    f"{name:<9} {label:<19} {transactions:>6} {ms:>9.1f} "
                    f"{ms / transactions:>8.3f}  {costs}",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.heartbeat", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=1_000, help="running runs")
    parser.add_argument("--history", type=int, default=50_000, help="finished runs beside")
    parser.add_argument("--seconds", type=float, default=5.0, help="repeat for, per case")
    parser.add_argument("--postgres-url", help="an existing Postgres (default: start one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    leases = "  ".join(f"{f'lease {lease:g} s':<16}" for lease in LEASES)
    print(
        f"{args.runs:,} running runs beside {args.history:,} finished; a round renews every "
        "running run once; per lease: heartbeat transactions per second (a beat every "
        "lease/3) and the share of one connection's time they take"
    )
    print(f"{'database':<9} {'heartbeat':<19} {'txns':>6} {'round ms':>9} {'ms/txn':>8}  {leases}")
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-") as folder:
        bench_backend("sqlite", f"sqlite:///{folder}/bench.db", args)
    with postgres(args.postgres_url, not args.no_postgres) as url:
        if url is None:
            return 0 if args.no_postgres else 1
        bench_backend("postgres", url, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
