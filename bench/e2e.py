"""End-to-end load: webhook sent → app notified, against a Celery no-op floor (ARCHITECTURE.md §11).

    python -m bench.e2e [--seconds N] [--quick] [--no-postgres] [--postgres-url URL] [--keep]

The whole deployment runs as real processes, as ``demo.stack`` starts them from the
Procfile: migrate, web (gunicorn, 2 workers), one worker (Celery prefork, concurrency 2),
beat, on the embedded Redis (``HOOKSYNC_REDIS_URL`` unset), with the bench integration
(``bench/integration``: each webhook saves one new record, no external call) and 100
connections. Only the external contracts are used: signed webhooks in
(``POST /webhook/bench``), ``POST /connections``, and the signed completion webhooks out,
received by ``bench.e2e_sink`` in a process of its own. The load comes from
``bench.e2e_load``, another process, on an absolute schedule (open loop).

Measured, on SQLite then on Postgres (a throw-away ``initdb`` server unless a URL is given):

* floor: a Celery no-op task's throughput with hooksync's broker settings and a prefork
  worker of concurrency 2 (``bench.floor_celery``), on each deployment's embedded Redis
  right before its phases (so drift on a shared machine hits both alike);
* idle latency: one webhook at a time, the next once the app has its notification;
* saturation throughput, for webhooks spread round-robin over 100 connections and for one
  hot connection: the offered rate ramps up (x1.4 every 1.25 s from 10/s) until the
  backlog (webhooks sent but not yet notified) grew by more than a quarter of what a step
  offered in two steps in a row — "backlog grows from" is the first of them — then holds for
  ``--seconds``, open loop, offering 1.25 times what was notified in the last 2 s (re-set
  every second: always more than the stack takes, without flooding ingress, whose CPU would
  come out of the worker's; sending stops early if the backlog passes 10 s of work, so
  draining stays short): webhooks notified per second after the first 2 s of the hold is
  the throughput, beside the floor (target 0.33x);
* latency at fixed offered rates 50, 100, 200/s (both spreads), ``--seconds`` each: p50 and
  p99 of send → app notified (targets at 100/s: 30 and 100 ms). A phase whose backlog passes
  100 or one second of its offered rate, whichever is more, stops sending and is reported as
  saturated (``--quick``: 3 s phases, 100/s only);
* peak RSS of every process (gunicorn master and each worker, Celery parent and each child,
  beat) during the load (targets: web 100 MB, worker 150 MB per process).

Matching notifications to webhooks: the worker may coalesce, so a completion webhook for
connection ``c`` may report ``added + updated = n > 1``; every bench webhook adds one new
record (its item id is unique). Per connection, in FIFO order, a notification covers the
``n`` oldest webhooks sent to ``c`` and not yet covered; each one's latency is the
notification's receipt time (``time.monotonic()`` in the sink) minus that webhook's send
time (``time.monotonic()`` in the generator; ``CLOCK_MONOTONIC`` is shared by processes on
Linux). Only successful ``WEBHOOK`` notifications count, each ``webhook-id`` once. At the end
every webhook must have had a 202 and been covered: lost (never covered), extra (coverage
beyond what was sent), non-202, failed runs and bad signatures are printed and any of them
fails the run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import requests

from bench import floor_celery
from bench.e2e_load import LoadGenerator, LoadResult, Plan, build_webhook, post_webhook
from bench.e2e_report import (
    CONNECTIONS,
    HEADER,
    TARGET_RATE,
    Phase,
    Row,
    format_row,
    integrity_rows,
    latency_rows,
    memory_rows,
    phase_lines,
    spread_title,
    throughput_rows,
)
from bench.e2e_sink import SIGNING_KEY_ENV
from bench.e2e_watch import Inbox, Matcher, ProcessWatch
from bench.merge import postgres
from config.redis_server import ensure_embedded_redis, stop_embedded_redis
from demo.stack import REPO, Stack

RATES = (50, 100, 200)
#: Idle webhooks sent before the measured ones (imports, connection pools, caches).
WARMUP = 10
INTEGRATION_DIR = REPO / "bench" / "integration"

#: The saturation ramp: from this rate, times FACTOR every STEP seconds, up to MAX.
RAMP_START, RAMP_FACTOR, RAMP_STEP, RAMP_MAX = 10.0, 1.4, 1.25, 2000.0
#: A ramp step is behind when the backlog grew by more than this share of what it offered
#: (a quarter: more than Little's law's growth from the higher rate alone, unless the latency
#: is over a second). Two steps behind in a row end the ramp.
RAMP_GROWTH = 0.25
#: The hold offers this many times the rate notified, and stops sending early once the
#: backlog is this many seconds of the ramp's best.
HOLD_OVER, HOLD_BACKLOG_SECONDS = 1.25, 10.0
#: Most webhooks one saturation phase may send (bodies are built up front).
SATURATION_MAX = 30_000

#: A drain gives up after this long without a new notification, or this long in all.
DRAIN_STALL, DRAIN_MAX = 20.0, 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str) -> None:
    print(text, flush=True)


class Deployment:
    """One hooksync deployment under test, plus the sink, the generator and the watchers."""

    def __init__(self, backend: str, database_url: str, folder: Path) -> None:
        self.backend = backend
        self.folder = folder
        self.nonce = uuid.uuid4().hex[:8]
        self.secret = secrets.token_urlsafe(16)
        self.signing_key = secrets.token_urlsafe(16)
        self.api_key = secrets.token_urlsafe(16)
        self.accounts = tuple(f"acct-{n:04d}" for n in range(1, CONNECTIONS + 1))
        self.sink_port, self.port = free_port(), free_port()
        self.inbox = Inbox(folder / "notifications.tsv")
        self.matcher = Matcher()
        self.env = {
            "HOOKSYNC_VAR_DIR": str(folder / "var"),
            "HOOKSYNC_REDIS_URL": "",  # the embedded Redis, as the Procfile's default
            "HOOKSYNC_DATABASE_URL": database_url,
            "HOOKSYNC_PORT": str(self.port),
            "HOOKSYNC_SECRET_KEY": self.api_key,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": self.signing_key,
            "HOOKSYNC_APP_WEBHOOK_URLS": f"http://127.0.0.1:{self.sink_port}/hooks/hooksync",
            "HOOKSYNC_INTEGRATIONS_DIR": str(INTEGRATION_DIR),
            "BENCH_WEBHOOK_SECRET": self.secret,
        }
        self.stack = Stack(self.env, log_dir=folder / "logs")
        self.sink: subprocess.Popen[bytes] | None = None
        self.load: LoadGenerator | None = None
        self.watch: ProcessWatch | None = None

    def __enter__(self) -> Deployment:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "sink.log", "ab") as log:
            command = [sys.executable, "-m", "bench.e2e_sink", "--port", str(self.sink_port)]
            self.sink = subprocess.Popen(
                [*command, "--out", str(self.inbox.path)],
                env={**self.stack.env, SIGNING_KEY_ENV: self.signing_key},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_listening(self.sink_port, self.sink)
        try:
            self.stack.start()
        except (RuntimeError, subprocess.CalledProcessError) as error:
            tails = "\n".join(
                f"--- {n} log ---\n{self.stack.tail(n)}" for n in self.stack.processes
            )
            raise RuntimeError(
                f"the {self.backend} stack did not start: {error}\n{tails}"
            ) from None
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        for account in self.accounts:
            body = {
                "provider_config_key": "bench",
                "connection_id": account,
                "credentials": {"type": "NONE"},
                "metadata": {},
            }
            response = session.post(f"{self.stack.base_url}/connections", json=body, timeout=10)
            # 409: it exists already (a --postgres-url database used before).
            if response.status_code not in (200, 201, 409):
                raise RuntimeError(
                    f"POST /connections {account!r}: {response.status_code} {response.text[:300]}"
                )
        session.close()
        self.load = LoadGenerator("127.0.0.1", self.port, self.secret, self.nonce)
        roots = {name: process.pid for name, process in self.stack.processes.items()}
        roots["sink"] = self.sink.pid
        roots["load"] = self.load.process.pid or 0
        redis_pid = self.folder / "var" / "redis" / "redis.pid"
        if redis_pid.exists():
            roots["redis"] = int(redis_pid.read_text().strip())
        self.watch = ProcessWatch(roots).start()

    def __exit__(self, *_exc: object) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.load is not None:
            self.load.close()
        self.stack.stop()
        if self.sink is not None:
            self.sink.terminate()
            self.sink.wait(10)
        self.inbox.close()

    @property
    def generator(self) -> LoadGenerator:
        assert self.load is not None
        return self.load

    def backlog(self, sending: int = 0) -> int:
        """Webhooks sent (``sending`` of them in a phase not registered yet) not yet covered."""
        self.inbox.poll()
        return self.matcher.added + sending - self.inbox.covered

    def cpu(self) -> dict[str, float]:
        assert self.watch is not None
        return self.watch.cpu_by_role()

    def check_alive(self) -> None:
        for name, process in self.stack.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} during the {self.backend} run:\n"
                    f"{self.stack.tail(name)}"
                )


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app sink exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the app sink did not listen on port {port} within {timeout}s")


# -- phases ------------------------------------------------------------------------------


def finish(dep: Deployment, phase: Phase, result: LoadResult | None) -> None:
    """Register a phase's 202s with the matcher, wait for the backlog to drain, match."""
    if result is not None:
        phase.load = result
        phase.statuses.update(sent.status for sent in result.sent)
        dep.matcher.add(phase.key, ((s.account, s.sent_at) for s in result.sent if s.status == 202))
    drained = drain(dep)
    dep.matcher.match(dep.inbox.notes)
    if not drained:
        phase.notes.append(
            f"backlog not drained: {dep.backlog()} webhooks still without a notification "
            f"after the drain gave up (no progress for {DRAIN_STALL:g} s, or {DRAIN_MAX:g} s)"
        )


def drain(dep: Deployment) -> bool:
    started = last_progress = time.monotonic()
    covered = dep.inbox.covered
    while dep.backlog() > 0:
        now = time.monotonic()
        if dep.inbox.covered != covered:
            covered, last_progress = dep.inbox.covered, now
        if now - last_progress > DRAIN_STALL or now - started > DRAIN_MAX:
            return False
        dep.check_alive()
        time.sleep(0.02)
    return True


def run_idle(dep: Deployment, count: int) -> Phase:
    """One webhook at a time to the connections in turn, the next once the app has the
    notification of the last (or after 10 s). The first WARMUP are not measured."""
    phase = Phase(f"{dep.backend}-idle", f"idle, one webhook at a time (+{WARMUP} warm-up)")
    connection = http.client.HTTPConnection("127.0.0.1", dep.port, timeout=30)
    secret = dep.secret.encode()
    for index in range(WARMUP + count):
        key = phase.key if index >= WARMUP else f"{dep.backend}-warmup"
        account = dep.accounts[index % len(dep.accounts)]
        body, headers = build_webhook(secret, account, f"{dep.nonce}-{key}-{index}", index)
        covered = dep.inbox.covered
        try:
            sent_at, status = post_webhook(connection, body, headers)
        except (OSError, http.client.HTTPException):
            sent_at, status = 0.0, -1
        phase.statuses[status] += 1
        if status == 202:
            dep.matcher.add(key, [(account, sent_at)])
            deadline = time.monotonic() + 10
            while dep.inbox.covered == covered and time.monotonic() < deadline:
                time.sleep(0.001)
                dep.inbox.poll()
        time.sleep(0.05)  # let the worker finish its acks and go idle
    connection.close()
    finish(dep, phase, None)
    return phase


def run_latency(
    dep: Deployment, spread: str, accounts: tuple[str, ...], rate: int, seconds: float
) -> Phase:
    key = f"{dep.backend}-{spread}-{rate}"
    phase = Phase(key, f"{rate}/s, {spread_title(spread)}", rate=rate)
    cap = max(100, rate)
    dep.generator.start(Plan(key, float(rate), round(rate * seconds), accounts))
    started = time.monotonic()
    while not dep.generator.is_done():
        backlog = dep.backlog(dep.generator.sent_count)
        if not phase.saturated and backlog > cap:
            dep.generator.stop()
            phase.saturated = (
                f"backlog passed {cap} after {time.monotonic() - started:.1f} s: stopped sending"
            )
        dep.check_alive()
        time.sleep(0.05)
    finish(dep, phase, dep.generator.result())
    return phase


def run_saturation(
    dep: Deployment, spread: str, accounts: tuple[str, ...], seconds: float
) -> Phase:
    """Ramp the offered rate until the backlog grows, then hold the worker saturated."""
    key = f"{dep.backend}-{spread}-saturation"
    phase = Phase(key, f"saturation, {spread_title(spread)}")
    load = dep.generator
    load.start(Plan(key, RAMP_START, SATURATION_MAX, accounts))
    while load.sent_count == 0 and not load.is_done():
        time.sleep(0.005)

    # The ramp, until the backlog grew in two steps in a row.
    rate, kept_up = RAMP_START, 0.0
    step_start, step_sent = time.monotonic(), load.sent_count
    backlog = dep.backlog(step_sent)
    # (rate set, offered/s, backlog growth) of the steps behind
    growing: list[tuple[float, float, int]] = []
    while len(growing) < 2:
        _sleep_until(step_start + RAMP_STEP)
        step_end, sent = time.monotonic(), load.sent_count
        offered, grown = sent - step_sent, dep.backlog(sent) - backlog
        backlog += grown
        if grown > RAMP_GROWTH * offered and grown >= 5:
            growing.append((rate, offered / (step_end - step_start), grown))
        else:
            growing, kept_up = [], offered / (step_end - step_start)
        if rate >= RAMP_MAX or load.is_done():
            break
        if len(growing) < 2:
            rate = min(RAMP_MAX, rate * RAMP_FACTOR)
            load.set_rate(rate)
        dep.check_alive()
        step_start, step_sent = step_end, sent

    if len(growing) < 2:
        load.stop()
        phase.saturated = f"not saturated at {kept_up:.0f}/s offered (the ramp's end)"
        phase.throughput = kept_up
        finish(dep, phase, load.result())
        return phase
    phase.knee = f"{growing[0][1]:.0f}/s"
    phase.notes.append(
        f"ramp: kept up at {kept_up:.0f}/s offered; the backlog grew by {growing[0][2]} at "
        f"{growing[0][1]:.0f}/s and by {growing[1][2]} at {growing[1][1]:.0f}/s"
    )

    # The hold: open loop from the ramp's last rate; every second the rate is re-set to
    # HOLD_OVER times what was notified in the last two, so the stack always gets more than
    # it takes but ingress is not flooded (its CPU would come out of the worker's share).
    backlog_cap = max(200, round(HOLD_BACKLOG_SECONDS * kept_up))
    settle = min(2.0, seconds / 3)
    cpu_before: dict[str, float] = {}
    machine_before = psutil.cpu_times()
    hold_start = time.monotonic()
    first = low = last = dep.backlog(load.sent_count)
    offers = [rate]
    adjusted = hold_start
    while (now := time.monotonic()) < hold_start + seconds and not load.is_done():
        last = dep.backlog(load.sent_count)
        if now - adjusted >= 1.0:
            notified = dep.inbox.covered_between(now - 2.0, now) / 2.0
            rate = max(RAMP_START, HOLD_OVER * notified)
            load.set_rate(rate)
            offers.append(rate)
            adjusted = now
        if now >= hold_start + settle:
            if not cpu_before:
                cpu_before, first, low = dep.cpu(), last, last
                machine_before = psutil.cpu_times()
            low = min(low, last)
        if last > backlog_cap:
            phase.notes.append(f"hold: backlog passed {backlog_cap}: stopped sending early")
            break
        dep.check_alive()
        time.sleep(0.1)
    hold_end = time.monotonic()
    load.stop()
    cpu_after, machine_after = dep.cpu(), psutil.cpu_times()
    dep.backlog()
    window = hold_end - hold_start - settle
    done = dep.inbox.covered_between(hold_start + settle, hold_end)
    phase.throughput = done / window if window > 0 else 0.0
    phase.notes.append(
        f"hold: offered {min(offers):.0f}-{max(offers):.0f}/s for "
        f"{hold_end - hold_start:.1f} s; in the last "
        f"{window:.1f} s {phase.throughput:.1f} webhooks/s notified, backlog {first} -> {last} "
        f"(fewest {low})" + ("" if low > 0 else ": the backlog emptied, NOT saturated")
    )
    if cpu_before and window > 0:
        used = {
            role: (seconds - cpu_before.get(role, 0.0)) / window
            for role, seconds in cpu_after.items()
        }
        worker = used.get("worker", 0.0) * window * 1000 / done if done else float("nan")
        busy = _busy_seconds(machine_after) - _busy_seconds(machine_before)
        others = max(0.0, busy / window - sum(used.values()))
        phase.notes.append(
            "CPU in the hold, share of one core: "
            + ", ".join(f"{role} {share:.0%}" for role, share in sorted(used.items(), key=_by_cpu))
            + f", other processes on the machine {others:.0%} (of {os.cpu_count()} cores); "
            f"worker {worker:.1f} ms per webhook notified"
        )
    drain_start, backlog = time.monotonic(), dep.backlog()
    finish(dep, phase, load.result())
    if backlog > 0:
        drain_rate = backlog / (time.monotonic() - drain_start)
        phase.notes.append(f"drain: {backlog} queued, notified at {drain_rate:.1f}/s (no ingress)")
    return phase


def _busy_seconds(times: Any) -> float:
    """Machine-wide CPU seconds not idle (``psutil.cpu_times()``)."""
    names = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is within user
    return float(sum(getattr(times, name, 0.0) for name in names))


def _by_cpu(item: tuple[str, float]) -> float:
    return -item[1]


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def report(dep: Deployment, phase: Phase) -> None:
    for line in phase_lines(dep.backend, phase, dep.matcher):
        say(line)


def bench_backend(
    name: str, database_url: str, folder: Path, args: argparse.Namespace, floor: float
) -> tuple[list[Row], int]:
    """All phases on one database; the rows and the number of integrity failures."""
    with Deployment(name, database_url, folder) as dep:
        say(f"{name}: web, worker, beat up at {dep.stack.base_url}; {CONNECTIONS} connections")
        spreads = {"spread": dep.accounts, "hot": dep.accounts[:1]}
        idle = run_idle(dep, args.idle)
        report(dep, idle)
        saturation: dict[str, Phase] = {}
        for spread, accounts in spreads.items():
            saturation[spread] = run_saturation(dep, spread, accounts, args.seconds)
            report(dep, saturation[spread])
        latency: dict[tuple[str, int], Phase] = {}
        for spread, accounts in spreads.items():
            for rate in args.rates:
                latency[spread, rate] = run_latency(dep, spread, accounts, rate, args.seconds)
                report(dep, latency[spread, rate])
        drain(dep)
        dep.matcher.match(dep.inbox.notes)
        assert dep.watch is not None
        rows = throughput_rows(name, saturation, floor)
        rows += latency_rows(name, dep.matcher, idle, latency)
        rows += memory_rows(name, dep.watch.peaks())
        phases = [idle, *saturation.values(), *latency.values()]
        inbox = dep.inbox
        counts = Counter(inbox.other_types)
        counts.update(duplicates=inbox.duplicates, bad_signatures=inbox.bad_signatures)
        lines, row, failures = integrity_rows(name, phases, dep.matcher, inbox.failures, counts)
        for line in lines:
            say(line)
        rows.append(row)
    return rows, failures


def machine_note() -> str:
    busy = psutil.cpu_percent(interval=1.0)
    load1, _, _ = os.getloadavg()
    note = (
        f"machine: {os.cpu_count()} CPUs, {busy:.0f}% busy before start, load average {load1:.1f}"
    )
    if busy > 20:
        note += " — other work is running: figures will be low and noisy"
    return note


def measure_floor(name: str, folder: Path, seconds: float) -> float:
    """The floor on the embedded Redis the deployment then uses (and stops when it stops)."""
    var_dir = folder / "var"
    redis_url = ensure_embedded_redis(var_dir)
    try:
        floor = floor_celery.measure(redis_url, folder / "floor-worker.log", seconds=seconds)
    except BaseException:
        stop_embedded_redis(var_dir)
        raise
    say(
        f"{name} floor: Celery no-op task, prefork concurrency 2, hooksync's broker settings, "
        f"on the deployment's embedded Redis: {floor.rate:.0f} tasks/s ({floor.done} tasks in "
        f"{floor.seconds:.1f} s from a loaded queue; worker CPU {floor.cpu_ms_per_task:.2f} "
        "ms/task)"
    )
    return floor.rate


def _stop_like_ctrl_c(_signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the stack, the sink and the servers are stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="length of each fixed-rate phase and saturation hold (default 10)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s phases, only the 100/s latency phases, 15 idle webhooks, a 3 s floor",
    )
    parser.add_argument("--postgres-url", help="an existing Postgres (default: start one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--idle", type=int, default=50, help="idle webhooks, one at a time")
    parser.add_argument(
        "--floor-seconds", type=float, default=6.0, help="how long the floor is timed"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp folder (process logs, notifications.tsv)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.idle = min(args.idle, 15)
        args.floor_seconds = min(args.floor_seconds, 3.0)
    args.rates = (TARGET_RATE,) if args.quick else RATES
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        return run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    say(machine_note())
    rows: list[Row] = []
    failures = 0
    root = Path(tempfile.mkdtemp(prefix="hooksync-bench-e2e-"))
    try:
        backends = [("sqlite", f"sqlite:///{root}/sqlite/hooksync.db")]
        with postgres(args.postgres_url, not args.no_postgres) as url:
            if url is not None:
                backends.append(("postgres", url))
            elif not args.no_postgres:
                failures += 1
            for name, database_url in backends:
                try:
                    floor = measure_floor(name, root / name, args.floor_seconds)
                    rows.append(Row(name, "floor: Celery no-op tasks/s", f"{floor:.0f}/s"))
                    got, bad = bench_backend(name, database_url, root / name, args, floor)
                except (RuntimeError, OSError, requests.RequestException) as error:
                    say(f"!!! {name}: the run stopped: {error}")
                    rows.append(Row(name, "run", "stopped", verdict="FAIL"))
                    failures += 1
                    continue
                rows += got
                failures += bad
    finally:
        if args.keep:
            say(f"kept {root} (logs/ and notifications.tsv per backend)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say(f"\ntook {time.monotonic() - started:.0f} s")
    say(HEADER)
    for row in rows:
        say(format_row(row))
    if failures:
        say(f"\nFAILED: {failures} failure(s) — see the lines marked !!! above")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
