"""The end-to-end floor of ``bench.e2e``: a Celery no-op task's throughput on hooksync's broker.

A tiny Celery app with one task that does nothing, configured like hooksync's
(``workers/celery_app.py``: JSON, ``acks_late``, ``reject_on_worker_lost``, prefetch 1, no
result backend, the same visibility timeout and transport options), consumed by a prefork
worker with concurrency 2 started like hooksync's (``--loglevel INFO --without-gossip
--without-mingle``), on the same embedded Redis (a Unix socket, AOF fsync on every write).

``measure(redis_url, log_path)`` loads the queue first (far more tasks than the window
needs), then starts the worker and counts the tasks it completes in a fixed window opened
once the first 100 are done (so the pool's start-up is outside it). Done is read from Redis
without touching the task: ``count - LLEN(queue) - HLEN(unacked)`` (kombu keeps a delivered,
unacknowledged message in the ``unacked`` hash until the late ack).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery

__all__ = ["QUEUE", "FloorResult", "app", "make_app", "measure"]

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
    #: Tasks completed per second in the measured window.
    rate: float
    #: Tasks completed in the window, and its length.
    done: int
    seconds: float
    #: CPU time of the worker (parent and children) per task in the window.
    cpu_ms_per_task: float


def measure(
    redis_url: str, log_path: Path, *, seconds: float = 6.0, count: int = 20_000
) -> FloorResult:
    """Load the queue with ``count`` no-op tasks, start a concurrency-2 prefork worker, and
    count what it completes in ``seconds`` once the first ``WARMUP`` are done."""
    client = redis.Redis.from_url(redis_url)
    try:
        _load_queue(client, make_app(redis_url), count)
        worker = _start_worker(redis_url, log_path)
        try:
            result = _watch(client, count, worker, seconds)
        finally:
            _stop(worker)
            # Whatever the worker did not take; it gave back what it held when it stopped.
            client.delete(QUEUE, "unacked", "unacked_index")
    finally:
        client.close()
    return result


#: Tasks done before the window opens (the pool's start-up is not the floor).
WARMUP = 100


def _load_queue(client: Any, producer_app: Celery, count: int) -> None:
    """Publish one task through Celery, then copy its message ``count - 1`` times with new
    task ids and delivery tags in one Redis pipeline: the same wire format, loaded in
    milliseconds rather than the seconds ``count`` calls to ``apply_async`` take."""
    client.delete(QUEUE)
    producer_app.tasks["bench.noop"].apply_async((0,))
    producer_app.close()
    template = json.loads(client.lrange(QUEUE, 0, 0)[0])
    pipe = client.pipeline(transaction=False)
    for index in range(1, count):
        message = copy.deepcopy(template)
        task_id = str(uuid.uuid4())
        message["headers"].update(id=task_id, root_id=task_id, argsrepr=f"({index},)")
        message["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
        message["body"] = base64.b64encode(
            json.dumps([[index], {}, json.loads(base64.b64decode(template["body"]))[2]]).encode()
        ).decode()
        pipe.lpush(QUEUE, json.dumps(message))
    pipe.execute()


def _start_worker(redis_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, BROKER_ENV: redis_url, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "celery", "-A", "bench.floor_celery", "worker",
        "--pool", "prefork", "--concurrency", "2", "--queues", QUEUE,
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _watch(
    client: Any, count: int, worker: subprocess.Popen[bytes], seconds: float, timeout: float = 60
) -> FloorResult:
    """Poll how many tasks are done (``count - LLEN(queue) - HLEN(unacked)``)."""
    deadline = time.monotonic() + timeout
    opened: tuple[float, int, float] | None = None  # (time, done, worker CPU) at WARMUP
    while True:
        if worker.poll() is not None:
            raise RuntimeError(f"the floor's Celery worker exited with {worker.returncode}")
        pipe = client.pipeline(transaction=False)
        pipe.llen(QUEUE)
        pipe.hlen("unacked")
        waiting, unacked = pipe.execute()
        now, done = time.monotonic(), count - waiting - unacked
        if opened is None:
            if done >= WARMUP:
                opened = (now, done, _cpu_seconds(worker.pid))
            elif now > deadline:
                raise RuntimeError(f"the floor's Celery worker did not start in {timeout}s")
        elif now - opened[0] >= seconds or done >= count:
            tasks, elapsed = done - opened[1], now - opened[0]
            cpu = _cpu_seconds(worker.pid) - opened[2]
            return FloorResult(tasks / elapsed, tasks, elapsed, cpu * 1000 / max(tasks, 1))
        time.sleep(0.005)


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
