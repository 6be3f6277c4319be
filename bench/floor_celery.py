"""The end-to-end floor of ``bench.e2e``: a Celery no-op task's throughput on hooksync's broker.

A tiny Celery app with one task that does nothing, configured like hooksync's
(``workers/celery_app.py``: JSON, ``acks_late``, ``reject_on_worker_lost``, prefetch 1, no
result backend, the same visibility timeout and transport options), consumed by a prefork
worker with concurrency 2 started like hooksync's (``--loglevel INFO --without-gossip
--without-mingle``), on the same embedded Redis (a Unix socket, AOF fsync on every write).

``measure(redis_url, count, log_path)`` loads the queue with ``count`` tasks first, then
starts the worker and times it from 10 % to 90 % of the tasks done (worker start-up and the
last stragglers are outside the window). Done is read from Redis without touching the task:
``count - LLEN(queue) - HLEN(unacked)`` (kombu keeps a delivered, unacknowledged message in
the ``unacked`` hash until the late ack).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery

__all__ = ["QUEUE", "FloorResult", "app", "measure"]

#: The floor's own queue, so nothing of hooksync's is consumed or counted.
QUEUE = "bench-floor"

#: How the worker process finds its broker.
BROKER_ENV = "BENCH_FLOOR_BROKER"

REPO = Path(__file__).resolve().parent.parent


def _kombu_url(redis_url: str) -> str:
    """kombu's spelling of a redis-py Unix socket URL, as hooksync translates it."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def make_app(redis_url: str) -> Celery:
    """The floor app: hooksync's broker settings (workers/celery_app.py), one no-op task."""
    celery = Celery("bench_floor", set_as_current=False)
    celery.conf.update(
        broker_url=_kombu_url(redis_url),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2.0,
        broker_transport_options={
            "visibility_timeout": 3600,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 10.0,
            "max_retries": 1,
        },
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        enable_utc=True,
        timezone="UTC",
        worker_hijack_root_logger=True,
    )

    @celery.task(name="bench.noop", ignore_result=True, acks_late=True, shared=False)
    def noop(_index: int) -> None:
        """Nothing: the floor is Celery's and the broker's own cost per task."""

    return celery


#: The entry point of ``celery -A bench.floor_celery worker`` (nothing connects at import).
app = make_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))


@dataclass(frozen=True)
class FloorResult:
    #: Tasks completed per second between 10 % and 90 % done.
    rate: float
    #: Tasks published per second while the queue was loaded (one producer, for reference).
    publish_rate: float
    count: int
    #: CPU time of the worker (parent and children) per task between 10 % and 90 % done.
    cpu_ms_per_task: float


def measure(redis_url: str, count: int, log_path: Path, timeout: float = 120.0) -> FloorResult:
    """Publish ``count`` no-op tasks, then time a concurrency-2 prefork worker through them."""
    producer_app = make_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.delete(QUEUE)
    task = producer_app.tasks["bench.noop"]
    started = time.perf_counter()
    with producer_app.producer_or_acquire() as producer:
        for index in range(count):
            task.apply_async((index,), producer=producer)
    publish_rate = count / (time.perf_counter() - started)

    env = {**os.environ, BROKER_ENV: redis_url, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "celery", "-A", "bench.floor_celery", "worker",
        "--pool", "prefork", "--concurrency", "2", "--queues", QUEUE,
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        marks, cpu = _watch(client, count, worker, timeout)
    finally:
        _stop(worker)
        client.close()
        producer_app.close()
    t10, t90 = marks
    done = count - 2 * (count // 10)
    return FloorResult(
        rate=done / (t90 - t10),
        publish_rate=publish_rate,
        count=count,
        cpu_ms_per_task=cpu * 1000 / done,
    )


def _watch(
    client: Any, count: int, worker: subprocess.Popen[bytes], timeout: float
) -> tuple[tuple[float, float], float]:
    """Poll how many tasks are done until all are: the times 10 % and 90 % were reached, and
    the worker's CPU seconds in between."""
    low, high = count // 10, count - count // 10
    marks: dict[int, tuple[float, float]] = {}
    deadline = time.monotonic() + timeout
    done = 0
    while done < count:
        if worker.poll() is not None:
            raise RuntimeError(f"the floor's Celery worker exited with {worker.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the floor's Celery worker did not finish in {timeout}s")
        pipe = client.pipeline(transaction=False)
        pipe.llen(QUEUE)
        pipe.hlen("unacked")
        waiting, unacked = pipe.execute()
        done = count - waiting - unacked
        for mark in (low, high):
            if done >= mark and mark not in marks:
                marks[mark] = (time.monotonic(), _cpu_seconds(worker.pid))
        time.sleep(0.005)
    (t_low, cpu_low), (t_high, cpu_high) = marks[low], marks[high]
    return (t_low, t_high), cpu_high - cpu_low


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children so far."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _stop(worker: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(worker.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            worker.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # pool children share the group
    except (ProcessLookupError, PermissionError):
        pass
