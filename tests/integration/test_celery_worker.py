"""A real ``celery worker`` (and ``beat``) process against the test Redis and a SQLite file.

No eager mode: messages go through Redis and the worker runs in its own process, exactly as
the Procfile starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cache.context import AppContext
from cache.db import migrate, session_scope
from cache.models import RunState, SyncRun
from config.errors import RetriableError
from config.settings import load_settings
from tests.support.api import Api
from tests.support.paths import REPO
from tests.support.queue import queued_messages
from tests.support.rows import add_connection, load_run, trigger_run
from tests.support.servers import QuietHandler, RedisServer, free_port, serving
from tests.support.tasktracker import task
from workers import inbox
from workers.celery_app import (
    DEFAULT_QUEUE,
    WORK_PRIORITY,
    broker_url,
    make_celery,
    queue_length,
)
from workers.enqueue import enqueue_runs, enqueue_tick, enqueue_webhook

CELERY = str(Path(sys.executable).with_name("celery"))
#: The connection's credentials: the example script calls the fake API with them.
CREDENTIALS = {"type": "API_KEY", "api_key": "sk-test-7f3a9c1e"}


@pytest.fixture
def api(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The shared fake API, where the example integration's environment points."""
    monkeypatch.setenv("TASKTRACKER_BASE_URL", api.base_url)
    monkeypatch.setenv("TASKTRACKER_WEBHOOK_SECRET", "tracker-secret")
    return api


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    migrate(url)
    return url


@pytest.fixture
def worker_env(
    make_env: Callable[..., dict[str, str]], sqlite_url: str, api: Api
) -> dict[str, str]:
    return make_env(HOOKSYNC_DATABASE_URL=sqlite_url, HOOKSYNC_TICK_SECONDS="0.5")


@pytest.fixture
def wctx(worker_env: dict[str, str]) -> Iterator[AppContext]:
    context = AppContext(load_settings(worker_env))
    yield context
    context.close()


class Process:
    """A celery command line running in the background, its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [CELERY, "-A", "hooksync.tasks", *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()  # warm shutdown: finish the current task, then exit
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._out.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def run(args: list[str], env: dict[str, str]) -> Process:
        process = Process(args, env, tmp_path / f"{args[0]}-{len(started)}.log")
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


WORKER = ["worker", "--pool=prefork", "--concurrency=1", "--loglevel=INFO", "--without-gossip",
          "--without-mingle", "--without-heartbeat"]  # fmt: skip


def wait_for_run(ctx: AppContext, run_id: int, process: Process, timeout: float = 30) -> SyncRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = load_run(ctx, run_id)
        if run.state not in (RunState.QUEUED.value, RunState.RUNNING.value):
            return run
        if process.popen.poll() is not None:
            pytest.fail(f"the worker exited early:\n{process.output()}")
        time.sleep(0.1)
    pytest.fail(f"run {run_id} still {run.state} after {timeout}s; worker log:\n{process.output()}")


def test_worker_runs_an_enqueued_sync(
    wctx: AppContext, worker_env: dict[str, str], api: Api, start: Callable[..., Process]
) -> None:
    api.reply("/tasks", (200, {}, {"tasks": [task(1, "t")]}))
    pk = add_connection(
        wctx, "tasktracker", "acme", {"workspace_id": "w1"}, credentials=CREDENTIALS, schedules=True
    )
    run_id = trigger_run(wctx, pk, "tasks")
    worker = start(WORKER, worker_env)
    enqueue_runs(wctx, [run_id])

    run = wait_for_run(wctx, run_id, worker)

    assert run.state == "success", run.error
    assert run.result == {"Task": {"added": 1, "updated": 0, "deleted": 0}}
    # A redelivered message changes nothing (the claim is conditional on the row's state).
    enqueue_runs(wctx, [run_id])
    queue = redis.Redis.from_url(worker_env["HOOKSYNC_REDIS_URL"])
    deadline = time.monotonic() + 15
    while queue_length(queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    again = load_run(wctx, run_id)
    assert (again.attempts, again.finished_at) == (1, run.finished_at)


def test_beat_ticks_and_the_worker_runs_due_syncs(
    wctx: AppContext, worker_env: dict[str, str], api: Api, start: Callable[..., Process]
) -> None:
    api.reply("/tasks", (200, {}, {"tasks": []}))
    pk = add_connection(  # auto_start: due at once
        wctx, "tasktracker", "acme", {"workspace_id": "w1"}, credentials=CREDENTIALS, schedules=True
    )
    worker = start(WORKER, worker_env)
    start(["beat", "--loglevel=INFO"], worker_env)
    deadline = time.monotonic() + 30
    while True:
        with session_scope(wctx.sessions) as session:
            run = session.query(SyncRun).filter_by(connection_pk=pk).first()
            state = run.state if run else None
        if state == "success":
            break
        assert time.monotonic() < deadline, f"no successful run; worker:\n{worker.output()}"
        time.sleep(0.2)


@pytest.mark.parametrize("command", [WORKER, ["beat"]])
def test_refuses_to_start_on_an_unmigrated_database(
    make_env: Callable[..., dict[str, str]],
    tmp_path: Path,
    start: Callable[..., Process],
    command: list[str],
) -> None:
    env = make_env(HOOKSYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    process = start(command, env)
    assert process.popen.wait(60) == 1
    lines = [line for line in process.output().splitlines() if line.startswith("hooksync")]
    assert len(lines) == 1 and "run the release step" in lines[0], process.output()
    assert "Traceback" not in process.output()


def test_cli_reports_bad_settings_in_one_line(
    make_env: Callable[..., dict[str, str]], start: Callable[..., Process]
) -> None:
    process = start(["worker"], make_env(HOOKSYNC_PORT="not-a-port"))
    assert process.popen.wait(60) == 1
    assert "hooksync: HOOKSYNC_PORT must be a whole number, got 'not-a-port'" in process.output()
    assert "Traceback" not in process.output()


def test_importing_the_app_module_touches_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "HOOKSYNC_VAR_DIR": str(tmp_path / "var"), "HOOKSYNC_PORT": "bad"}
    code = "import hooksync.tasks, workers.enqueue; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
    assert not (tmp_path / "var").exists()  # no settings read, no secrets file, no Redis


# -- enqueueing ------------------------------------------------------------------------------


def test_enqueue_puts_json_messages_on_our_queue(
    wctx: AppContext, worker_env: dict[str, str]
) -> None:
    enqueue_webhook(wctx, {"id": "e1", "provider_config_key": "tasktracker"})
    enqueue_webhook(wctx, {"id": "e2", "provider_config_key": "tasktracker"})
    enqueue_tick(wctx)
    client = redis.Redis.from_url(worker_env["HOOKSYNC_REDIS_URL"])
    # The tick in the list fetched first (priority 0), the work in the next step's.
    ticks = client.lrange(DEFAULT_QUEUE, 0, -1)
    work = client.lrange(f"{DEFAULT_QUEUE}\x06\x16{WORK_PRIORITY}", 0, -1)
    messages = ticks + work
    assert [b'"task": "hooksync.tick"' in message for message in ticks] == [True]
    # The webhooks wait in the inbox; one wake-up is enough for both (no drain ran yet).
    assert [entry[1][b"e"] for entry in client.xrange(inbox.STREAM)] == [
        b'{"id":"e1","provider_config_key":"tasktracker"}',
        b'{"id":"e2","provider_config_key":"tasktracker"}',
    ]
    assert len(messages) == 2
    assert all(b'"content-type": "application/json"' in message for message in messages)
    for name in (b'"task": "hooksync.drain_inbox"', b'"task": "hooksync.tick"'):
        assert sum(name in message for message in messages) == 1, messages


def test_runs_taken_back_by_the_sweeper_go_ahead_of_new_work(
    wctx: AppContext, worker_env: dict[str, str]
) -> None:
    enqueue_runs(wctx, [1])
    enqueue_runs(wctx, [2], recovery=True)
    client = redis.Redis.from_url(worker_env["HOOKSYNC_REDIS_URL"])
    assert [m["args"] for m in queued_messages(client)] == [[2], [1]]
    assert [m["args"] for m in queued_messages(client, priority=WORK_PRIORITY)] == [[1]]


def test_enqueue_fails_fast_when_redis_is_down(
    make_env: Callable[..., dict[str, str]], sqlite_url: str
) -> None:
    env = make_env(HOOKSYNC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    ctx = AppContext(load_settings({**env, "HOOKSYNC_DATABASE_URL": sqlite_url}))
    try:
        began = time.monotonic()
        with pytest.raises(RetriableError, match="could not store the webhook"):
            enqueue_webhook(ctx, {"id": "e1"})
        assert time.monotonic() - began < 3
    finally:
        ctx.close()


def test_enqueue_recovers_after_redis_comes_back(
    make_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    port = free_port()
    ctx = AppContext(load_settings(make_env(HOOKSYNC_REDIS_URL=f"redis://127.0.0.1:{port}/0")))
    server = RedisServer(tmp_path, port)
    try:
        enqueue_tick(ctx)
        server.stop()
        with pytest.raises(RetriableError):
            enqueue_tick(ctx)
        server = RedisServer(tmp_path, port)  # back on the same port, empty
        enqueue_tick(ctx)
        assert redis.Redis(port=port).llen(DEFAULT_QUEUE) == 1
    finally:
        server.stop()
        ctx.close()


def test_unix_socket_urls_work_with_the_embedded_redis(
    make_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    from config.redis_server import stop_embedded_redis

    env = make_env()
    del env["HOOKSYNC_REDIS_URL"]  # the embedded server, on a Unix socket under var/
    ctx = AppContext(load_settings(env))
    try:
        assert ctx.redis_url.startswith("unix://")
        assert make_celery(ctx).conf.broker_url == broker_url(ctx.redis_url)
        assert broker_url(ctx.redis_url).startswith("redis+socket:///")
        enqueue_tick(ctx)
        assert ctx.redis.llen(DEFAULT_QUEUE) == 1
    finally:
        ctx.close()
        stop_embedded_redis(ctx.settings.var_dir)


@pytest.mark.parametrize("listen", ["tcp", "unix"])
def test_the_worker_survives_a_broker_crash_with_work_in_flight(
    make_env: Callable[..., dict[str, str]],
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start: Callable[..., Process],
    listen: str,
) -> None:
    """Redis is killed (SIGKILL) while a run holds its message unacknowledged and the worker
    waits in BRPOP for more (a free slot), then comes back on the same address: the worker
    reconnects and goes on. kombu alone made it exit ("Unrecoverable error: AttributeError
    ... 'hostname'", workers/broker.py); the embedded Redis's Unix socket as well as TCP."""
    release = threading.Event()
    calls: list[str] = []

    class SlowTracker(QuietHandler):
        def do_GET(self) -> None:  # the example sync's GET /tasks, held until released
            calls.append(self.path)
            release.wait(30)
            self.send_json(b'{"tasks": []}')

    def serve(port: int | None = None) -> RedisServer:
        if listen == "unix":
            return RedisServer(tmp_path, unix_socket=tmp_path / "redis.sock")
        return RedisServer(tmp_path, port)

    server = serve()
    ctx = None
    with serving(SlowTracker) as tracker:
        try:
            monkeypatch.setenv("TASKTRACKER_BASE_URL", f"http://127.0.0.1:{tracker.server_port}")
            monkeypatch.setenv("TASKTRACKER_WEBHOOK_SECRET", "tracker-secret")
            env = make_env(HOOKSYNC_REDIS_URL=server.url, HOOKSYNC_DATABASE_URL=sqlite_url)
            ctx = AppContext(load_settings(env))
            held, after = (
                trigger_run(ctx, add_connection(ctx, "tasktracker", name, {"workspace_id": "w1"},
                                                credentials=CREDENTIALS, schedules=True), "tasks")
                for name in ("held", "after")
            )  # fmt: skip
            # Two slots: one runs the held run, the other waits in BRPOP for more work.
            worker = start([*WORKER, "--concurrency=2"], env)
            enqueue_runs(ctx, [held])
            deadline = time.monotonic() + 30
            while not calls:
                assert time.monotonic() < deadline, f"the run never started:\n{worker.output()}"
                assert worker.popen.poll() is None, worker.output()
                time.sleep(0.05)
            time.sleep(0.5)  # the free slot's BRPOP is sent

            # The crash. kombu went wrong when the worker notices it on another connection
            # than the BRPOP's, typically its remote control's pub/sub one: about 3 crashes
            # in 4 here. To have it every time, the worker is frozen while its pub/sub
            # connection is dropped and then Redis killed, and Redis comes back only once
            # the worker has noticed (else the pub/sub connection just reconnects).
            worker.popen.send_signal(signal.SIGSTOP)
            try:
                with redis.Redis.from_url(server.url) as client:
                    client.client_kill_filter(_type="pubsub")
                server.kill()
            finally:
                worker.popen.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 20
            while "Connection to broker lost" not in worker.output():
                assert time.monotonic() < deadline, f"no loss noticed:\n{worker.output()}"
                time.sleep(0.05)
            server = serve(server.port)  # back on the same address, empty

            deadline = time.monotonic() + 20
            while worker.output().count("Connected to") < 2:
                # Celery logs the error at once, but exits only when the held run ends.
                if worker.popen.poll() is not None or "Unrecoverable error" in worker.output():
                    pytest.fail(f"the worker gave up after the broker crash:\n{worker.output()}")
                assert time.monotonic() < deadline, f"no reconnection:\n{worker.output()}"
                time.sleep(0.1)
            release.set()
            assert wait_for_run(ctx, held, worker).state == "success"
            enqueue_runs(ctx, [after])  # taken by the new connection
            assert wait_for_run(ctx, after, worker).state == "success"
            assert worker.popen.poll() is None
            assert "Unrecoverable error" not in worker.output()
            # The held run's late ack reached the restarted Redis (the old channel's pool).
            assert "Couldn't ack" not in worker.output()
        finally:
            release.set()
            server.stop()
            if ctx is not None:
                ctx.close()


def test_a_channel_closed_after_its_transport_was_detached_fails_as_if_redis_were_down(
    wctx: AppContext,
) -> None:
    """The safety net of workers/broker.py, step by step: a channel holding an unacknowledged
    message is closed after kombu detached its transport (``Connection.collect``). kombu
    alone raised AttributeError there, which Celery calls unrecoverable."""
    from kombu import Producer, Queue

    connection = make_celery(wctx).connection_for_read()
    channel = connection.channel()
    queue = Queue("broker-test", routing_key="broker-test", channel=channel)
    Producer(channel).publish({"n": 1}, routing_key="broker-test", declare=[queue])
    message = queue.get(no_ack=False)
    assert message is not None and message.payload == {"n": 1}
    assert wctx.redis.hlen("unacked") == 1

    connection._do_close_transport()  # what collect() does after its failed channel close
    with pytest.raises(redis.ConnectionError, match="broker connection of this channel"):
        channel.close()
    # Not restored, not lost: back on its queue once the visibility timeout lapses.
    assert wctx.redis.hlen("unacked") == 1


def test_a_run_consumed_during_a_database_outage_runs_as_soon_as_it_is_back(
    wctx: AppContext, worker_env: dict[str, str], api: Api, start: Callable[..., Process]
) -> None:
    """Its message goes back to the queue: it does not wait for its lease (90 s) to lapse."""
    from sqlalchemy import text

    api.reply("/tasks", (200, {}, {"tasks": [task(1, "t")]}))
    pk = add_connection(
        wctx, "tasktracker", "acme", {"workspace_id": "w1"}, credentials=CREDENTIALS, schedules=True
    )
    run_id = trigger_run(wctx, pk, "tasks")
    worker = start(WORKER, worker_env)
    # The "outage": the runs table is gone until we put it back.
    with wctx.engine.begin() as connection:
        connection.execute(text("ALTER TABLE sync_runs RENAME TO sync_runs_away"))
    enqueue_runs(wctx, [run_id])
    deadline = time.monotonic() + 30
    while "requeued" not in worker.output():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.1)
    with wctx.engine.begin() as connection:
        connection.execute(text("ALTER TABLE sync_runs_away RENAME TO sync_runs"))
    back = time.monotonic()
    run = wait_for_run(wctx, run_id, worker, timeout=30)
    assert run.state == "success", run.error
    assert time.monotonic() - back < 20  # seconds, not the lease's 90
    assert "database is unavailable" in worker.output()


def test_a_webhook_waits_out_a_database_outage_instead_of_being_dropped(
    wctx: AppContext, worker_env: dict[str, str], api: Api, start: Callable[..., Process]
) -> None:
    """Until routed, the webhook lives only in its Redis message: an outage must not lose it."""
    from sqlalchemy import text

    from cache.models import WebhookEvent
    from ingress.webhooks import build_event

    worker = start(WORKER, worker_env)
    # The "outage": the table routing writes to is gone until we put it back.
    with wctx.engine.begin() as connection:
        connection.execute(text("ALTER TABLE webhook_events RENAME TO webhook_events_away"))
    event = build_event(
        "tasktracker",
        method="POST",
        url="http://h/webhook/tasktracker",
        headers=[("X-Tracker-Event", "task.updated"), ("X-Tracker-Delivery", "d-outage")],
        raw=b'{"event": "task.updated", "task_id": "T-1", "workspace_id": "w1"}',
    )
    enqueue_webhook(wctx, event)
    deadline = time.monotonic() + 30
    while "requeued" not in worker.output():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.1)

    with wctx.engine.begin() as connection:
        connection.execute(text("ALTER TABLE webhook_events_away RENAME TO webhook_events"))
    deadline = time.monotonic() + 30
    while True:
        with session_scope(wctx.sessions) as session:
            row = session.get(WebhookEvent, event["id"])
            if row is not None:
                break
        assert time.monotonic() < deadline, f"event never recorded:\n{worker.output()}"
        time.sleep(0.2)
    assert row.state == "unrouted"  # no connection yet, but recorded and replayable
