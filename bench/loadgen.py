"""A small HTTP load generator for the ingress benchmark, run in a process of its own.

    python -m bench.loadgen --url URL --request FILE --seconds N (--rate R | --connections C)

``--rate R`` is **open loop**: request ``i`` is due at ``start + i / R`` whatever happened to
the earlier ones, and its latency runs from that due time (not from when it was sent) to the
last byte of the answer, so a server that stalls is charged for every request queued behind
the stall (no coordinated omission). ``--connections C`` is closed loop: C clients each send
the next request when the last one was answered — the fallback for the maximum rate when
``wrk`` is not available.

gunicorn's sync workers answer ``Connection: close``, so every request opens a connection
(as ``wrk`` does against them). ``FILE`` holds the whole request (line, headers and body)
sent as is. One JSON object is printed at the end: status counts, errors, latencies
(seconds, sorted), how late requests were sent against their due time, and this process's
CPU time, which is how the caller checks the generator kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


class _Stats:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0


async def _send(host: str, port: int, request: bytes, due: float, stats: _Stats) -> None:
    loop = asyncio.get_running_loop()
    stats.lateness.append(loop.time() - due)
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        stats.latencies.append(loop.time() - due)
        stats.statuses[status] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        stats.errors[type(error).__name__] += 1
    finally:
        stats.in_flight -= 1
        if writer is not None:
            writer.close()


async def run_open(host: str, port: int, request: bytes, rate: float, seconds: float) -> _Stats:
    """Send ``rate`` requests a second for ``seconds``, each on its own schedule."""
    loop = asyncio.get_running_loop()
    stats = _Stats()
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time() + 0.05
    for index in range(int(rate * seconds)):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_send(host, port, request, due, stats))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return stats


async def run_closed(
    host: str, port: int, request: bytes, connections: int, seconds: float
) -> _Stats:
    """``connections`` clients, each sending its next request once the last was answered."""
    loop = asyncio.get_running_loop()
    stats = _Stats()
    end = loop.time() + seconds

    async def client() -> None:
        while loop.time() < end:
            await _send(host, port, request, loop.time(), stats)

    await asyncio.gather(*(client() for _ in range(connections)))
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--url", required=True, help="http://host:port (the path is in FILE)")
    parser.add_argument("--request", required=True, help="file with the raw HTTP request")
    parser.add_argument("--seconds", type=float, required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--connections", type=int, help="closed loop: concurrent clients")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with open(args.request, "rb") as file:
        request = file.read()

    started = time.monotonic()
    if args.rate:
        stats = asyncio.run(run_open(host, port, request, args.rate, args.seconds))
    else:
        stats = asyncio.run(run_closed(host, port, request, args.connections, args.seconds))
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, Any] = {
        "elapsed": elapsed,
        "statuses": dict(stats.statuses),
        "errors": dict(stats.errors),
        "latencies": sorted(stats.latencies),
        "lateness": sorted(stats.lateness),
        "max_in_flight": stats.max_in_flight,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
