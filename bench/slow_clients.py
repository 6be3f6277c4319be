"""Slow clients against ``hooksync web`` (issue 9, bench/RESULTS.md "Slow clients").

    python -m bench.slow_clients [--slow N] [--seconds S] [--workers sync,gevent]

One ``hooksync web`` (``demo.stack.Stack``: the Procfile's command, 2 gunicorn workers,
the embedded Redis, SQLite in a temp folder) serving the bench integration
(``bench/integration``: HMAC-SHA256 signed webhooks). Two phases of ``--seconds`` each:

* the **floor**: signed webhooks sent one after the other, each on a new connection (as a
  provider sends them), nothing else connected;
* **slow**: the same, while ``--slow`` (200) sockets stay open: half send a webhook's
  request line and headers one byte a second, half send complete headers with a
  ``Content-Length`` and then the body one byte a second. A socket the server closes is
  opened again at once (an attacker keeps its sockets), and the reopenings are counted.

Both for each worker class of ``--workers`` (default: the sync worker ``hooksync web`` ran
before issue 9, then its gevent worker), each with a fresh server, chosen through
``GUNICORN_CMD_ARGS``. Printed per phase: webhooks sent, p50, p99 and max latency (connect
to the last byte of the answer), how many were not 2xx (a timeout or socket error counts),
and p99 over the floor's. Then the slow sockets are closed and the time until ``/healthz``
answers again is printed, and how many workers gunicorn killed (``WORKER TIMEOUT``).
"""

from __future__ import annotations

import argparse
import http.client
import math
import multiprocessing
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.e2e_load import WEBHOOK_PATH, build_webhook, post_webhook
from demo.stack import REPO, Stack

__all__ = [
    "Latencies",
    "SlowSockets",
    "bench_web",
    "percentile",
    "send_webhooks",
]

INTEGRATION_DIR = REPO / "bench" / "integration"
#: Seconds between two bytes of a slow socket.
TRICKLE_INTERVAL = 1.0
#: A webhook not answered within this long counts as failed (as a provider's timeout).
WEBHOOK_TIMEOUT = 30.0
#: ``--workers`` names -> gunicorn worker classes.
WORKER_CLASSES = {
    "sync": "ingress.gunicorn_worker.JsonErrorWorker",
    "gevent": "ingress.gunicorn_worker.JsonErrorGeventWorker",
}
#: Body a body-trickling socket declares: longer than any run, so it never completes.
SLOW_BODY_BYTES = 4096


def say(text: str) -> None:
    print(text, flush=True)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Latencies:
    """The webhooks of one phase: each one's seconds and status (``-1``: no answer)."""

    seconds: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def not_2xx(self) -> int:
        return sum(1 for status in self.statuses if not 200 <= status < 300)

    def ms(self, share: float) -> float:
        return percentile(self.seconds, share) * 1000

    def summary(self) -> str:
        return (
            f"{len(self.seconds)} webhooks, p50 {self.ms(0.5):.1f} ms, p99 {self.ms(0.99):.1f} ms,"
            f" max {self.ms(1.0):.1f} ms, not 2xx {self.not_2xx}"
        )


def send_webhooks(
    port: int,
    secret: str,
    *,
    count: int | None = None,
    seconds: float | None = None,
    timeout: float = WEBHOOK_TIMEOUT,
) -> Latencies:
    """Send signed bench webhooks one after the other, each on its own connection, until
    ``count`` are sent or ``seconds`` have passed (whichever is given first)."""
    result = Latencies()
    nonce = secrets.token_hex(4)
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")
    index = 0
    while (count is None or index < count) and time.monotonic() < deadline:
        body, headers = build_webhook(secret.encode(), "acct-001", f"{nonce}-{index}", index)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        started = time.perf_counter()
        try:
            _, status = post_webhook(connection, body, headers)
        except (OSError, http.client.HTTPException):
            status = -1
        finally:
            connection.close()
        result.seconds.append(time.perf_counter() - started)
        result.statuses.append(status)
        index += 1
    return result


def _slow_header_request(port: int) -> bytes:
    """A whole webhook request (headers and a 2-byte body), to be sent a byte at a time."""
    return (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nX-Bench-Event: item.created\r\n"
        f"X-Bench-Signature: sha256={'0' * 64}\r\n"
        "Content-Length: 2\r\n\r\n{}"
    ).encode()


def _slow_body_head(port: int) -> bytes:
    return (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {SLOW_BODY_BYTES}\r\n\r\n"
    ).encode()


@dataclass
class _Slow:
    sock: socket.socket
    pending: bytes


class SlowSockets:
    """``count`` sockets to ``port`` that each send one byte every ``TRICKLE_INTERVAL``; the
    first half trickle their headers, the rest their body.

    They live in a child process, so the process timing the webhooks shares no interpreter
    lock with them: its figures are the server's, not its own. A socket the server closed
    (or answered) is replaced by a new one of the same kind, so ``count`` stay open while
    the server lets them connect; ``reopened`` counts those.
    """

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        context = multiprocessing.get_context("spawn")
        #: open now, reopened, failed connects: written by the child.
        self._stats = context.Array("q", 3)
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_hold,
            args=(port, count, self._stats, self._ready, self._stop),
            name="slow-sockets",
            daemon=True,
        )

    def __enter__(self) -> SlowSockets:
        self._process.start()
        if not self._ready.wait(60):
            self.close()
            raise RuntimeError(f"the {self.count} slow sockets were not open within 60 s")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def open_now(self) -> int:
        return int(self._stats[0])

    @property
    def reopened(self) -> int:
        return int(self._stats[1])

    @property
    def connect_failures(self) -> int:
        return int(self._stats[2])

    def close(self) -> None:
        """Close every slow socket (the child closes them as it exits)."""
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


def _hold(port: int, count: int, stats: Any, ready: Any, stop: Any) -> None:
    """The child of ``SlowSockets``: open, trickle, reopen until ``stop`` is set."""
    kinds = ["headers" if i < count // 2 else "body" for i in range(count)]
    slots = [_open(port, kind, stats) for kind in kinds]
    stats[0] = sum(1 for slow in slots if slow is not None)
    ready.set()
    try:
        while not stop.wait(TRICKLE_INTERVAL):
            for slot, slow in enumerate(slots):
                if slow is not None and _trickle(slow):
                    continue
                if slow is not None:
                    slow.sock.close()
                    stats[1] += 1
                slots[slot] = _open(port, kinds[slot], stats)
                if stop.is_set():
                    break
            stats[0] = sum(1 for slow in slots if slow is not None)
    finally:
        for slow in slots:
            if slow is not None:
                slow.sock.close()


def _open(port: int, kind: str, stats: Any) -> _Slow | None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        stats[2] += 1
        return None
    sock.setblocking(False)
    if kind == "headers":
        return _Slow(sock, _slow_header_request(port))
    try:
        sock.sendall(_slow_body_head(port))  # small: fits the socket buffer
    except OSError:
        sock.close()
        return None
    return _Slow(sock, b"x" * SLOW_BODY_BYTES)


def _trickle(slow: _Slow) -> bool:
    """Send the next byte; False when the server closed or answered the socket."""
    try:
        slow.sock.recv(1024, socket.MSG_PEEK)
        return False  # an answer (an error page) or the end: the server is done with it
    except BlockingIOError:
        pass  # nothing to read: still open
    except OSError:
        return False
    if not slow.pending:
        return False  # the whole request went out: start another
    try:
        slow.sock.send(slow.pending[:1])
    except BlockingIOError:
        return True
    except OSError:
        return False
    slow.pending = slow.pending[1:]
    return True


@contextmanager
def bench_web(
    folder: Path, secret: str, *, gunicorn_args: str = "", log_format: str = "text"
) -> Iterator[Stack]:
    """``hooksync web`` alone (no worker: webhooks stay queued), on the bench integration;
    ``gunicorn_args`` (``GUNICORN_CMD_ARGS``) override its gunicorn configuration file."""
    env = {
        "GUNICORN_CMD_ARGS": gunicorn_args,
        "HOOKSYNC_VAR_DIR": str(folder / "var"),
        "HOOKSYNC_INTEGRATIONS_DIR": str(INTEGRATION_DIR),
        "HOOKSYNC_REDIS_URL": "",  # the embedded default
        "HOOKSYNC_DATABASE_URL": "",  # SQLite under the var dir
        "HOOKSYNC_HOST": "127.0.0.1",
        "HOOKSYNC_PORT": str(_free_port()),
        "HOOKSYNC_LOG_FORMAT": log_format,
        "BENCH_WEBHOOK_SECRET": secret,
    }
    stack = Stack(env, log_dir=folder / "logs")
    try:
        stack.start(("web",))
        yield stack
    finally:
        stack.stop()


def port_of(stack: Stack) -> int:
    return int(stack.base_url.rsplit(":", 1)[1])


def seconds_until_healthy(stack: Stack, timeout: float = 60.0) -> float:
    started = time.perf_counter()
    stack.wait_healthy(timeout)
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gunicorn_worker(stack: Stack) -> str:
    """The worker class, from the log's first lines (gunicorn prints it)."""
    for line in stack.tail("web", 400).splitlines():
        if "Using worker:" in line:
            return line.split("Using worker:", 1)[1].strip()
    return "?"


@dataclass
class Outcome:
    worker: str
    floor: Latencies
    slow: Latencies
    slow_sockets: str
    healthy_after: float
    worker_timeouts: int


def run_one(worker: str, args: argparse.Namespace) -> Outcome:
    """The floor, then the slow phase, against a fresh ``hooksync web`` of ``worker``."""
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-slow-") as name:
        with bench_web(
            Path(name), secret, gunicorn_args=f"--worker-class {WORKER_CLASSES[worker]}"
        ) as stack:
            port = port_of(stack)
            say(f"{worker}: hooksync web on :{port}, {_gunicorn_worker(stack)}")
            send_webhooks(port, secret, count=20)  # warm-up: imports, Redis connections
            floor = send_webhooks(port, secret, seconds=args.seconds)
            say(f"  floor (0 slow sockets): {floor.summary()}")
            with SlowSockets(port, args.slow) as slow:
                time.sleep(2 * TRICKLE_INTERVAL)  # every slow socket has started sending
                loaded = send_webhooks(port, secret, seconds=args.seconds)
                sockets = (
                    f"{slow.open_now} open at the end, {slow.reopened} closed by the server "
                    f"and reopened, {slow.connect_failures} connects failed"
                )
            say(f"  slow ({args.slow} slow sockets; {sockets}): {loaded.summary()}")
            healthy_after = seconds_until_healthy(stack)
            say(f"  slow sockets closed: /healthz answered after {healthy_after:.2f} s")
            timeouts = stack.tail("web", 1_000_000).count("WORKER TIMEOUT")
    return Outcome(worker, floor, loaded, sockets, healthy_after, timeouts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.slow_clients", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--slow", type=int, default=200, help="slow sockets kept open")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument(
        "--workers",
        default="sync,gevent",
        help="worker classes to measure, in order: sync (JsonErrorWorker, before issue 9), "
        "gevent (JsonErrorGeventWorker, hooksync web's own)",
    )
    args = parser.parse_args(argv)
    workers = [name.strip() for name in args.workers.split(",") if name.strip()]
    unknown = [name for name in workers if name not in WORKER_CLASSES]
    if unknown:
        parser.error(f"--workers: unknown {unknown!r}; choose from {sorted(WORKER_CLASSES)}")
    say(f"{args.slow} slow sockets, {args.seconds:g} s per phase, {os.cpu_count()} cpus")
    outcomes = [run_one(worker, args) for worker in workers]
    say("")
    say("| worker | phase | webhooks | p50 ms | p99 ms | max ms | not 2xx | p99 / floor |")
    say("|---|---|---:|---:|---:|---:|---:|---:|")
    for outcome in outcomes:
        for phase, figures in (("floor", outcome.floor), ("slow", outcome.slow)):
            ratio = figures.ms(0.99) / outcome.floor.ms(0.99)
            say(
                f"| {outcome.worker} | {phase} | {len(figures.seconds)} | {figures.ms(0.5):.1f} "
                f"| {figures.ms(0.99):.1f} | {figures.ms(1.0):.1f} | {figures.not_2xx} "
                f"| {ratio:.1f}× |"
            )
    for outcome in outcomes:
        say(
            f"{outcome.worker}: slow sockets {outcome.slow_sockets}; /healthz after closing "
            f"them {outcome.healthy_after:.2f} s; 'WORKER TIMEOUT' lines {outcome.worker_timeouts}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
