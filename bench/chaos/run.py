"""The chaos driver: start the deployment, load it, break it, and check nothing was lost.

    python -m bench.chaos [--profile default|ci] [--keep]    (make chaos / make chaos-ci)

Order: Postgres (a throw-away ``initdb`` server), the fakes (external API, app endpoint),
the deployment (bench/chaos/cluster.py); then the webhook load starts and, with the polls
running every 30 s, the faults run one after another — each followed by a wait until the
system drained what it held back (its recovery time) — then several at once. The load
stops, the system drains, one reconciliation poll per connection runs, and the checks read
the effects log, the cache (``GET /records``), the outbox and what the app received.
Exit 0 when every check passed, 1 otherwise (the table says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.chaos import checks
from bench.chaos.app_receiver import AppReceiver
from bench.chaos.cluster import WORKERS, ChaosCluster, RestartablePostgres
from bench.chaos.fake_api import FakeAPI
from bench.chaos.faults import (
    ApiBurst,
    AppOutage,
    DatabaseDown,
    Fault,
    RedisKill,
    WebKill,
    Window,
    WorkerKills,
    run_overlapping,
)
from bench.chaos.load import Load
from bench.chaos.profile import Profile, pick_profile
from bench.chaos.report import FaultLine, render

__all__ = ["main"]

#: The beat tick here: the default (3 s) is what the takeover bound is about.
TICK_SECONDS = 3.0


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class Observer:
    """What the database and the fakes say about the backlog; None while the database is down."""

    def __init__(self, cluster: ChaosCluster, api: FakeAPI, load: Load | None = None) -> None:
        self.cluster = cluster
        self.api = api
        self.load = load

    def query(self, sql: str, **params: Any) -> list[Any] | None:
        try:
            with self.cluster.engine.connect() as db:
                return list(db.execute(sa.text(sql), params))
        except sa.exc.SQLAlchemyError:
            self.cluster.engine.dispose()  # the pool's connections died with the server
            return None

    def backlog(self, until: float) -> int | None:
        """Runs not finished, events not routed, notifications pending, created up to
        ``until``, plus acknowledged webhooks (up to then) without an effect."""
        parts = self.backlog_parts(until)
        return None if parts is None else sum(parts.values())

    def backlog_parts(self, until: float) -> dict[str, int] | None:
        """``backlog`` by kind, to say what a fault left behind when it is slow to drain."""
        rows = self.query(
            "SELECT"
            " (SELECT count(*) FROM sync_runs WHERE finished_at IS NULL AND created_at <= :t"
            "  AND state = 'queued'),"
            " (SELECT count(*) FROM sync_runs WHERE finished_at IS NULL AND created_at <= :t"
            "  AND state <> 'queued'),"
            " (SELECT count(*) FROM webhook_events"
            "    WHERE state = 'received' AND received_at <= :t),"
            " (SELECT count(*) FROM notifications WHERE state = 'pending' AND created_at <= :t)",
            t=_dt(until),
        )
        if rows is None:
            return None
        missing = 0
        if self.load is not None:
            done = {effect.delivery for effect in self.api.effects_copy()}
            missing = sum(1 for d in self.load.acked_until(until) if d not in done)
        queued, running, events, notifications = (int(value) for value in rows[0])
        return {
            "runs queued": queued,
            "runs running": running,
            "events unrouted": events,
            "notifications pending": notifications,
            "webhooks without effect": missing,
        }


class Recovery:
    """Watches each ended fault until the backlog it left (everything up to its end) is gone."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.watched: list[tuple[Window, float | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> Recovery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def add(self, window: Window) -> None:
        with self._lock:
            self.watched.append((window, None))

    def recovered(self, window: Window) -> float | None:
        with self._lock:
            return next((at for w, at in self.watched if w is window), None)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                open_ = [(i, w) for i, (w, at) in enumerate(self.watched) if at is None]
            for index, window in open_:
                now = time.time()
                if self.observer.backlog(window.ended) == 0:
                    with self._lock:
                        self.watched[index] = (window, now - window.ended)


class Takeovers:
    """The runs each killed worker held, and how long until another worker claimed them.

    Which runs the victim held is read from their heartbeats: right after the kill, the
    running runs with their attempt and lease; ``HEARTBEAT_GRACE`` later, those still
    running at the same attempt whose lease did not move are the dead worker's (a live
    worker renews every third of the 8 s lease). A run that a live worker gave back for a
    transient error is not a takeover and is not counted.

    Each held run is then watched until its *next* attempt is claimed: that claim's
    ``started_at`` is the takeover. (Its last ``started_at`` at the end would not do: a run
    taken over by a worker that is killed in turn is claimed a third time, and that second
    takeover is measured from the second kill.)
    """

    #: Longer than one renewal period (lease / 3 = 2.7 s) plus a slow database write.
    HEARTBEAT_GRACE = 4.5
    #: How often the watched runs are read, and how long at most.
    WATCH_EVERY = 0.5
    WATCH_FOR = 180.0

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        #: (kill time, victim, [(run id, attempt)])
        self.victims: list[tuple[float, str, list[tuple[int, int]]]] = []
        #: (run id, attempt) → seconds from its worker's kill to the next attempt's claim.
        self.took: dict[tuple[int, int], float] = {}
        self.notes: list[str] = []
        self._timers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _running(self) -> dict[int, tuple[int, Any]] | None:
        rows = self.observer.query(
            "SELECT id, attempts, lease_expires_at FROM sync_runs WHERE state = 'running'"
        )
        return None if rows is None else {int(r[0]): (int(r[1]), r[2]) for r in rows}

    def on_kill(self, victim: str, at: float) -> None:
        before = self._running()
        if before is None:
            self.notes.append(f"{victim} killed while the database was down: not measured")
            return

        def later() -> None:
            time.sleep(self.HEARTBEAT_GRACE)
            after = self._running()
            if after is None:
                self.notes.append(f"{victim}'s runs not identified: the database was down")
                return
            held = [(run, attempt) for run, (attempt, lease) in before.items()
                    if after.get(run) == (attempt, lease)]  # fmt: skip
            with self._lock:
                self.victims.append((at, victim, held))
            self._watch(at, held)

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        self._timers.append(thread)

    def _watch(self, at: float, held: list[tuple[int, int]]) -> None:
        """Until each held run's next attempt is claimed (or ``WATCH_FOR`` passed)."""
        waiting = dict(held)
        deadline = time.monotonic() + self.WATCH_FOR
        while waiting and time.monotonic() < deadline:
            rows = self.observer.query(
                "SELECT id, attempts, started_at FROM sync_runs WHERE id = ANY(:ids)",
                ids=list(waiting),
            )
            seen = time.time()
            for run_id, attempts, started in rows or []:
                attempt = waiting[run_id]
                if attempts <= attempt:
                    continue
                # The next claim's own start, unless a later claim overwrote it already
                # (then when it was seen: at most WATCH_EVERY late).
                claimed = _epoch(started) if attempts == attempt + 1 else seen
                with self._lock:
                    self.took[(run_id, attempt)] = claimed - at
                del waiting[run_id]
            time.sleep(self.WATCH_EVERY)

    def measure(self) -> tuple[list[float], int, str]:
        """(seconds from kill to re-claim per run cut, runs never taken over, the worst)."""
        for thread in self._timers:
            thread.join(self.HEARTBEAT_GRACE + self.WATCH_FOR + 30)
        figures: list[float] = []
        orphaned = 0
        worst = (0.0, "")
        for _at, victim, held in self.victims:
            for run_id, attempt in held:
                took = self.took.get((run_id, attempt))
                if took is not None:
                    figures.append(took)
                    if took > worst[0]:
                        worst = (took, f"run {run_id} of {victim} (attempt {attempt + 1} "
                                       f"claimed {took:.1f} s after the kill)")  # fmt: skip
                    continue
                rows = self.observer.query(
                    "SELECT finished_at FROM sync_runs WHERE id = :id", id=run_id
                )
                if rows and rows[0][0] is None:
                    orphaned += 1
        return figures, orphaned, worst[1]


class Chaos:
    def __init__(self, profile: Profile, root: Path) -> None:
        self.profile = profile
        self.root = root
        self.api = FakeAPI().start()
        self.signing_key = secrets.token_urlsafe(16)
        self.receiver = AppReceiver(self.signing_key)
        # Its own temp folder: as root, initdb runs as the postgres user, who cannot enter
        # ``root`` (0700).
        self.postgres_folder = Path(tempfile.mkdtemp(prefix="hooksync-chaos-pg-"))
        self.postgres = RestartablePostgres(self.postgres_folder)
        self.cluster = ChaosCluster(
            root / "machines",
            self.postgres.create_database("chaos"),
            connections=profile.connections,
            api_url=self.api.url,
            app_url=self.receiver.url,
            signing_key=self.signing_key,
            tick_seconds=TICK_SECONDS,
        )
        self.observer = Observer(self.cluster, self.api)
        self.recovery = Recovery(self.observer)
        self.takeovers = Takeovers(self.observer)
        self.windows: list[Window] = []
        #: (process, time, its last log lines) of each exit nobody asked for.
        self.crashes: list[tuple[str, float, str]] = []
        self.load: Load | None = None
        self.began = 0.0

    # -- phases ---------------------------------------------------------------------------

    def start(self) -> None:
        (self.root / "machines").mkdir(mode=0o700)
        self.cluster.start()
        deadline = time.monotonic() + 60
        for name in WORKERS:
            while " ready." not in self.cluster.tail(name, 200):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready:\n{self.cluster.tail(name)}")
                time.sleep(0.2)
        say(f"deployment up: web x2 {self.cluster.web_ports}, beat, worker x2; API {self.api.url}")

    def faults(self) -> list[Fault]:
        p, cluster = self.profile, self.cluster
        return [
            WorkerKills(cluster, p.worker_kills, p.kill_interval, self.takeovers.on_kill),
            RedisKill(cluster, p.redis_down),
            DatabaseDown(cluster, self.postgres.crash, self.postgres.start_again, p.database_down),
            AppOutage(self.receiver, p.app_each),
            ApiBurst(self.api, p.api_each),
            WebKill(cluster),
        ]

    def overlapping(self) -> list[Fault]:
        p, cluster = self.profile, self.cluster
        return [
            WorkerKills(cluster, 2, p.kill_interval, self.takeovers.on_kill, seed=1),
            RedisKill(cluster, p.redis_down),
            ApiBurst(self.api, p.api_each),
            WebKill(cluster, "web2"),
        ]

    def settle(self, windows: list[Window]) -> None:
        """Wait until each fault just ended is recovered from, at most ``profile.settle``."""
        for window in windows:
            self.recovery.add(window)
            self.windows.append(window)
        deadline = time.monotonic() + self.profile.settle
        while time.monotonic() < deadline:
            if all(self.recovery.recovered(w) is not None for w in windows):
                break
            time.sleep(0.5)
        for window in windows:
            took = self.recovery.recovered(window)
            if took is not None:
                state = f"recovered in {took:.1f} s"
            else:
                parts = self.observer.backlog_parts(window.ended) or {}
                left = ", ".join(f"{n} {kind}" for kind, n in parts.items() if n)
                state = f"not yet recovered ({left or 'the database is down'})"
            say(f"{window.name}: {window.ended - window.started:.1f} s, {state}")
        self.restart_dead()

    def restart_dead(self) -> None:
        """A process that exited without being killed is a finding: kept for the report
        (with its last log lines), then restarted as a supervisor would."""
        for name in self.cluster.dead():
            tail = self.cluster.tail(name, 25)
            self.crashes.append((name, time.time(), tail))
            say(f"!!! {name} exited on its own; restarted. Its last lines:\n{tail}")
            self.cluster.processes.pop(name)
            if name.startswith("worker"):
                self.cluster.start_worker(name)
            elif name.startswith("web"):
                self.cluster.start_web(name)
            else:
                self.cluster.spawn(name, [sys.executable, "-m", "hooksync.cli", name],
                                   self.cluster.machine_env(name))  # fmt: skip

    def run_faults(self) -> None:
        self.load = Load(
            ports=self.cluster.web_ports,
            secret=self.cluster.secret,
            accounts=self.cluster.accounts,
            bump=self.api.bump,
            rate=self.profile.rate,
            nonce=self.cluster.nonce,
        ).start()
        self.observer.load = self.load
        self.began = time.time()
        self.recovery.start()
        time.sleep(5)  # a steady state first
        for fault in self.faults():
            say(f"fault: {fault.name}")
            self.settle([fault.run()])
        if self.profile.overlap:
            say("faults at once: " + ", ".join(f.name for f in self.overlapping()))
            self.settle(run_overlapping(self.overlapping()))

    def drain(self, what: str, done: Callable[[], bool]) -> float:
        started = time.monotonic()
        deadline = started + self.profile.drain_timeout
        while not done():
            if time.monotonic() > deadline:
                say(f"{what}: not drained within {self.profile.drain_timeout:.0f} s")
                return -1.0
            time.sleep(0.5)
        took = time.monotonic() - started
        say(f"{what}: drained in {took:.1f} s")
        return took

    def finish(self) -> int:
        assert self.load is not None
        say("load stopping (in-flight webhooks retried until acknowledged)")
        self.load.stop()
        self.restart_dead()
        self.drain("after the load", lambda: self.observer.backlog(time.time()) == 0)
        quiet = time.time()
        response = self.cluster.api(
            "POST", "/sync/trigger", json={"provider_config_key": "chaos", "syncs": ["items"]}
        )
        say(f"reconciliation triggered: {response.status_code}")
        self.drain("reconciliation", lambda: self.reconciled(quiet))
        self.drain("after reconciliation", lambda: self.observer.backlog(time.time()) == 0)
        time.sleep(2)  # a duplicate delivery would come at once
        self.recovery.stop()
        return self.report()

    def reconciled(self, since: float) -> bool:
        """Every connection has a poll that started after the system went quiet, finished."""
        rows = self.observer.query(
            "SELECT count(DISTINCT connection_pk) FROM sync_runs WHERE kind = 'poll'"
            " AND started_at >= :t AND finished_at IS NOT NULL",
            t=_dt(since),
        )
        return rows is not None and int(rows[0][0]) >= self.profile.connections

    # -- checks ---------------------------------------------------------------------------

    def cache(self) -> dict[str, dict[str, dict[str, Any]]]:
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for account in self.cluster.accounts:
            response = self.cluster.api(
                "GET",
                "/records",
                params={"model": "Item", "limit": 1000},
                headers={"Connection-Id": account, "Provider-Config-Key": "chaos"},
            )
            response.raise_for_status()
            found[account] = {r["id"]: r for r in response.json()["records"]}
        return found

    def report(self) -> int:
        assert self.load is not None
        stats = self.load.stats
        spans = [(w.started, w.ended) for w in self.windows]
        effects = [(e.delivery, e.at) for e in self.api.effects_copy()]
        acked = {delivery: at for delivery, (_account, at) in stats.acked.items()}
        result = checks.check_effects(acked, effects, spans)
        result.append(
            checks.Check(
                "webhooks never acknowledged (given up after 120 s)",
                str(len(stats.given_up)),
                "0",
                not stats.given_up,
                f"e.g. {stats.given_up[:5]}" if stats.given_up else "",
            )
        )
        self.restart_dead()
        result.append(
            checks.Check(
                "processes that exited on their own",
                str(len(self.crashes)),
                "0",
                not self.crashes,
                "; ".join(
                    f"{name} at {at - self.began:.0f} s: {tail.strip().splitlines()[-1]}"
                    for name, at, tail in self.crashes
                ),
            )
        )
        result.append(checks.check_cache(self.cache(), self.api.snapshot()))
        runs = (
            self.observer.query(
                "SELECT id, state, finished_at, kind, connection_pk, sync_name FROM sync_runs"
            )
            or []
        )
        # The webhook runs a drain executed together finish at once, with one notification.
        groups: dict[tuple[Any, ...], set[int]] = {}
        for run_id, state, finished_at, kind, connection_pk, sync_name in runs:
            if finished_at is None:
                continue
            together = kind == "webhook" and state == "success"
            key = (connection_pk, sync_name, finished_at) if together else (run_id,)
            groups.setdefault(key, set()).add(int(run_id))
        executions = [frozenset(group) for group in groups.values()]
        not_ok = [f"{r[0]}:{r[1]}" for r in runs if r[1] != "success"]
        result.append(
            checks.Check(
                "runs ended success", f"{len(runs) - len(not_ok)}/{len(runs)}", "all", not not_ok,
                f"others: {not_ok[:8]}" if not_ok else "",
            )
        )  # fmt: skip
        rows = [
            checks.Row(int(r[0]), str(r[1]), str(r[2]), r[3])
            for r in self.observer.query(
                "SELECT id, webhook_id, state, run_id FROM notifications ORDER BY id"
            )
            or []
        ]
        received = [
            checks.Received(d.webhook_id, d.stream, d.status, d.signature_ok, d.at)
            for d in self.receiver.deliveries()
        ]
        result += checks.check_notifications(rows, received, executions, spans)
        figures, orphaned, worst = self.takeovers.measure()
        takeover = checks.check_takeovers(figures, orphaned)
        result.append(dataclasses.replace(takeover, detail=worst) if worst else takeover)
        lines = [
            FaultLine(
                w.name,
                w.started - self.began,
                w.ended - w.started,
                self.recovery.recovered(w),
                ", ".join(w.notes),
            )
            for w in self.windows
        ]
        answers = ", ".join(f"{k}: {n}" for k, n in sorted(stats.answers.items()))
        summary = (
            f"chaos profile {self.profile.name!r}: {self.profile.connections} connections, "
            f"{self.profile.rate:g} webhooks/s, polls every 30 s, web x2, worker x2 "
            f"(concurrency 2), beat; Postgres, embedded Redis (AOF); {stats.sent} webhooks "
            f"sent, {stats.resent} resends ({answers or 'no failed answers'}); "
            f"{len(self.receiver.deliveries())} notification requests received"
        )
        if self.takeovers.notes:
            summary += "; " + "; ".join(self.takeovers.notes)
        print("\n" + render(result, lines, summary), flush=True)
        failed = any(not c.ok for c in result) or any(line.recovery is None for line in lines)
        return 1 if failed else 0

    def stop(self) -> None:
        try:
            self.cluster.stop_all()
        finally:
            self.postgres.stop()
            shutil.rmtree(self.postgres_folder, ignore_errors=True)
            self.receiver.stop()
            self.api.stop()


def _stop_like_ctrl_c(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--profile", help="default or ci (else HOOKSYNC_CHAOS_PROFILE)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args(argv)
    try:
        profile = pick_profile(args.profile)
    except ValueError as error:
        parser.error(str(error))
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    root = Path(tempfile.mkdtemp(prefix="hooksync-chaos-"))
    try:
        try:
            chaos = Chaos(profile, root)
        except (RuntimeError, OSError, KeyError) as error:
            say(f"!!! could not start Postgres ({error}): the chaos suite needs initdb/pg_ctl")
            return 2
        try:
            chaos.start()
            chaos.run_faults()
            return chaos.finish()
        except BaseException:
            for name in ("web1", "worker1", "worker2", "beat"):
                print(f"--- {name} ---\n{chaos.cluster.tail(name, 40)}", flush=True)
            raise
        finally:
            chaos.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
