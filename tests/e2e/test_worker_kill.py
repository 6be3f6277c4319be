"""A worker killed with ``kill -9`` in the middle of a poll: another worker finishes it.

Real processes (gunicorn, two Celery workers, beat, the embedded Redis) on SQLite and on
Postgres, with the default run lease (``HOOKSYNC_RUN_LEASE_SECONDS``) and tick
(``HOOKSYNC_TICK_SECONDS``). The fake tracker holds the poll's first ``GET /tasks``, so the
first worker is inside the run when its whole process group is killed. The second worker
must take the run over and finish it within 15 s of the kill (the design's bound: the lease
runs out at most a lease after the kill, the next tick's sweep re-enqueues it), measured by
the run's ``finished_at`` in the database; the cache then equals the tracker, and the app
got exactly one success notification for the model.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cache.db import make_engine, make_sessionmaker, read_scope
from cache.models import RunKind, SyncRun
from demo import stack as stack_module
from demo.app_receiver import AppReceiver
from demo.http_thread import ServerThread
from demo.stack import Stack
from tests.support.deployment import Deployment, new_fakes
from tests.support.integrations import copy_example_integrations
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

#: The issue's bound on a dead worker's run being taken over and finished.
TAKEOVER_SECONDS = 15.0
TASKS = 40


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Deployment, str]]:
    database_url = ""
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres_server").create_database("killed")
    # A second worker, as another machine would run it.
    monkeypatch.setitem(stack_module.PROCESSES, "worker2", ["worker", "--concurrency", "2"])
    api_key, signing_key, tracker, receiver = new_fakes()
    with tempfile.TemporaryDirectory(prefix="hooksync-worker-kill-") as folder:
        var = Path(folder) / "var"
        tracker_server = ServerThread(tracker.app).start()
        receiver_server = ServerThread(receiver.app).start()
        integrations = copy_example_integrations(Path(folder) / "integrations", runs="every 1 day")
        env = {
            "HOOKSYNC_VAR_DIR": str(var),
            "HOOKSYNC_INTEGRATIONS_DIR": str(integrations),
            "HOOKSYNC_REDIS_URL": "",
            "HOOKSYNC_DATABASE_URL": database_url or f"sqlite:///{var}/hooksync.db",
            "HOOKSYNC_PORT": str(free_port()),
            "HOOKSYNC_SECRET_KEY": api_key,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": signing_key,
            "HOOKSYNC_APP_WEBHOOK_URLS": f"{receiver_server.url}/hooks/hooksync",
            "TASKTRACKER_BASE_URL": tracker_server.url,
            "TASKTRACKER_WEBHOOK_SECRET": tracker.webhook_secret,
        }
        for name in ("HOOKSYNC_RUN_LEASE_SECONDS", "HOOKSYNC_TICK_SECONDS"):
            monkeypatch.delenv(name, raising=False)  # the defaults are what is shown
        stack = Stack(env, log_dir=Path(folder) / "logs")
        tracker.webhook_url = f"{stack.base_url}/webhook/tasktracker"
        try:
            stack.start()
            yield (
                Deployment(stack, tracker, receiver, api_key, signing_key, env),
                env["HOOKSYNC_DATABASE_URL"],
            )
        except BaseException:
            for name in ("web", "worker", "worker2", "beat"):
                print(f"--- {name} log ---\n{stack.tail(name, 60)}")
            raise
        finally:
            tracker.release_list_requests()
            stack.stop()
            tracker_server.stop()
            receiver_server.stop()


@pytest.mark.timeout(240)
def test_a_poll_whose_worker_is_killed_is_finished_by_another_within_15_s(
    deployment: tuple[Deployment, str],
) -> None:
    deployed, database_url = deployment
    tracker, stack = deployed.tracker, deployed.stack
    for index in range(TASKS):
        tracker.create_task(f"task {index}", notify=False)
    tracker.hold_list_requests()
    created = requests.post(
        f"{deployed.url}/connections",
        json={
            "provider_config_key": "tasktracker",
            "connection_id": "acme",
            "credentials": {"type": "API_KEY", "api_key": tracker.api_token},
            "metadata": {"workspace_id": "ws_acme"},
        },
        headers=deployed.auth(),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    # The initial poll is inside its first GET /tasks, on the only worker running.
    assert tracker.list_snapshots.acquire(timeout=60), "the initial poll never fetched"
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    try:
        run = _poll_run(sessions)
        assert (run.state, run.attempts) == ("running", 1)
        stack.start_process("worker2")
        _wait_for_log(stack, "worker2", "ready.", timeout=60)

        victim = stack.processes.pop("worker")
        os.killpg(victim.pid, signal.SIGKILL)  # the parent and its pool children at once
        killed_at = datetime.now(UTC)
        victim.wait(10)
        tracker.release_list_requests()

        deadline = time.monotonic() + 90
        while (run := _poll_run(sessions)).finished_at is None:
            assert time.monotonic() < deadline, f"the run was never finished: {run.state}"
            time.sleep(0.2)
    finally:
        engine.dispose()
    assert (run.state, run.attempts) == ("success", 2), (run.state, run.error)
    finished_at = run.finished_at
    if finished_at.tzinfo is None:
        finished_at = finished_at.replace(tzinfo=UTC)
    took = (finished_at - killed_at).total_seconds()
    print(f"run {run.id}: killed at {killed_at.isoformat()}, finished {took:.1f} s later")
    assert took <= TAKEOVER_SECONDS, f"taken over and finished {took:.1f} s after the kill"

    # The cache equals the tracker, as after a clean run.
    expected = {tracker.get_task(f"T-{n}")["id"]: f"task {n - 1}" for n in range(1, TASKS + 1)}
    records = deployed.records(limit=1000)["records"]
    assert {record["id"]: record["title"] for record in records} == expected

    # Exactly one success notification for the model, once it had time to go out.
    deadline = time.monotonic() + 30
    while not _successes(deployed.receiver):
        assert time.monotonic() < deadline, "no success notification"
        time.sleep(0.2)
    time.sleep(3)  # a duplicate would follow at once (same finish, or a second finish)
    (success,) = _successes(deployed.receiver)
    assert success["model"] == "Task" and success["responseResults"]["added"] == TASKS
    assert not [
        item.body for item in deployed.receiver.received if not item.body.get("success", True)
    ]


def _poll_run(sessions: sessionmaker[Session]) -> SyncRun:
    with read_scope(sessions) as session:
        run = session.scalars(
            select(SyncRun).where(SyncRun.kind == RunKind.POLL.value).order_by(SyncRun.id)
        ).first()
        assert run is not None, "no poll run"
        session.expunge(run)
        return run


def _successes(receiver: AppReceiver) -> list[dict[str, Any]]:
    return [
        item.body
        for item in receiver.received
        if item.body.get("success") and item.body.get("syncName") == "tasks"
    ]


def _wait_for_log(stack: Stack, name: str, text: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in stack.tail(name, 200):
        assert time.monotonic() < deadline, f"{name} never logged {text!r}:\n{stack.tail(name)}"
        time.sleep(0.2)
