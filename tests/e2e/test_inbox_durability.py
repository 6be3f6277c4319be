"""No webhook acknowledged with 202 is lost when workers die: ``kill -9`` under load.

Real processes (gunicorn, a Celery worker, beat, the embedded Redis with its AOF) on SQLite
and on Postgres. Signed webhooks arrive steadily while the whole worker — parent and pool
children, its process group — is killed with SIGKILL several times and started again. At
the end every webhook that got a 202 has exactly one ``webhook_events`` row with exactly one
run, its record is in the cache, and no delivery id was routed twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select

from cache.db import make_engine, make_sessionmaker, read_scope
from cache.models import Record, SyncRun, WebhookEvent
from demo.stack import REPO, Stack
from tests.support.servers import free_port
from workers import inbox

pytestmark = pytest.mark.e2e

CONNECTIONS = 4
WEBHOOKS = 300
RATE = 60.0  # per second: the kills land while batches are in flight
KILLS = 3


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, str, str]]:
    database_url = ""
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres_server").create_database("durable")
    api_key, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="hooksync-kill-") as folder:
        var = Path(folder) / "var"
        env = {
            "HOOKSYNC_VAR_DIR": str(var),
            "HOOKSYNC_REDIS_URL": "",  # the embedded default, AOF with an fsync per write
            "HOOKSYNC_DATABASE_URL": database_url or f"sqlite:///{var}/hooksync.db",
            "HOOKSYNC_PORT": str(free_port()),
            "HOOKSYNC_SECRET_KEY": api_key,
            "HOOKSYNC_INTEGRATIONS_DIR": str(REPO / "bench" / "integration"),
            "BENCH_WEBHOOK_SECRET": secret,
            "HOOKSYNC_TICK_SECONDS": "1",
            # Runs whose worker died are taken over after the run lease, and queued run
            # messages lost with it are re-sent after the queue lease; both short here.
            "HOOKSYNC_RUN_LEASE_SECONDS": "4",
            "HOOKSYNC_LEASE_SECONDS": "6",
            "HOOKSYNC_APP_WEBHOOK_URLS": "",
        }
        deployment = Stack(env, log_dir=Path(folder) / "logs")
        deployment.start()
        try:
            for index in range(CONNECTIONS):
                created = requests.post(
                    f"{deployment.base_url}/connections",
                    json={
                        "provider_config_key": "bench",
                        "connection_id": f"acct-{index}",
                        "credentials": {"type": "NONE"},
                    },
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=10,
                )
                assert created.status_code == 201, created.text
            yield deployment, env["HOOKSYNC_DATABASE_URL"], secret
        finally:
            deployment.stop()


@pytest.mark.timeout(300)
def test_every_acknowledged_webhook_is_routed_exactly_once_across_kill_9(
    stack: tuple[Stack, str, str],
) -> None:
    deployment, database_url, secret = stack
    accepted: dict[str, str] = {}  # event id -> item id
    errors: list[str] = []

    def send_all() -> None:
        session = requests.Session()
        began = time.monotonic()
        for index in range(WEBHOOKS):
            delay = began + index / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            item = f"item-{index}"
            body = json.dumps(
                {"account": f"acct-{index % CONNECTIONS}", "item_id": item, "seq": index,
                 "sent_at": 0}
            ).encode()  # fmt: skip
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Bench-Signature": f"sha256={signature}",
                "X-Bench-Event": "item.updated",
                "X-Bench-Delivery": f"delivery-{index}",
            }
            answer = session.post(
                f"{deployment.base_url}/webhook/bench", data=body, headers=headers, timeout=10
            )
            if answer.status_code == 202:
                accepted[answer.json()["id"]] = item
            else:
                errors.append(f"{index}: {answer.status_code} {answer.text[:200]}")

    broker = redis.Redis(unix_socket_path=str(deployment.var_dir / "redis" / "redis.sock"))
    sender = threading.Thread(target=send_all)
    sender.start()
    stranded = 0  # entries a killed worker had read and not yet recorded
    for _ in range(KILLS):
        time.sleep(WEBHOOKS / RATE / (KILLS + 1) / 2)
        # Aim at the window that a Celery message cannot survive: entries taken off Redis
        # (XREADGROUP) and not yet in the database.
        deadline = time.monotonic() + 5
        while _pending(broker) == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        worker = deployment.processes["worker"]
        os.killpg(worker.pid, signal.SIGKILL)  # parent and pool children at once
        worker.wait(10)
        stranded += _pending(broker)
        deployment.start_process("worker")
    sender.join(timeout=120)
    broker.close()
    assert not errors, errors[:5]
    assert len(accepted) == WEBHOOKS
    assert stranded > 0, "no kill landed between XREADGROUP and XACK; the test proved nothing"

    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    deadline = time.monotonic() + 90
    try:
        while True:
            with read_scope(sessions) as session:
                events = dict(
                    session.execute(
                        select(WebhookEvent.id, WebhookEvent.state).where(
                            WebhookEvent.id.in_(list(accepted))
                        )
                    ).all()
                )
                finished = session.scalar(
                    select(func.count()).select_from(SyncRun).where(SyncRun.state == "success")
                )
            if len(events) == WEBHOOKS and finished == WEBHOOKS:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{WEBHOOKS - len(events)} acknowledged webhook(s) never reached the "
                    f"database; {finished} of {WEBHOOKS} runs finished\n"
                    + deployment.tail("worker", 60)
                )
            time.sleep(0.5)
        with read_scope(sessions) as session:
            runs_per_event = dict(
                session.execute(
                    select(SyncRun.webhook_event_id, func.count()).group_by(
                        SyncRun.webhook_event_id
                    )
                ).all()
            )
            # Read again: the loop read the states before the run count, and a run that
            # finished in between marks its event processed in the same commit.
            events = dict(
                session.execute(
                    select(WebhookEvent.id, WebhookEvent.state).where(
                        WebhookEvent.id.in_(list(accepted))
                    )
                ).all()
            )
            states = {state for state in events.values()}
            records = set(session.scalars(select(Record.external_id).where(Record.model == "Item")))
            stuck = [event_id for event_id, state in events.items() if state != "processed"]
            stuck_runs = session.execute(
                select(SyncRun.webhook_event_id, SyncRun.id, SyncRun.state, SyncRun.attempts).where(
                    SyncRun.webhook_event_id.in_(stuck[:10])
                )
            ).all()
    finally:
        engine.dispose()
    # Routed once each: one run per event, no event routed a second time as a duplicate.
    assert set(runs_per_event) == set(accepted)
    assert set(runs_per_event.values()) == {1}
    assert states == {"processed"}, (len(stuck), stuck_runs, deployment.tail("worker", 80))
    assert records == set(accepted.values())


def _pending(client: redis.Redis) -> int:
    try:
        return int(client.xpending(inbox.STREAM, inbox.GROUP)["pending"])
    except redis.ResponseError:  # no group yet
        return 0
