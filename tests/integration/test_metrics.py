"""``GET /metrics`` in one process, on a real Redis and database (ingress/metrics.py).

The multiprocess path — two gunicorn workers and Celery prefork children merged through
``PROMETHEUS_MULTIPROC_DIR`` — is tests/e2e/test_metrics.py; here the counters live in
this process's registry, so each test compares before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from cache.context import AppContext
from config.settings import load_settings
from hooksync.metrics import remove_dead_files
from ingress.app import create_app
from ingress.provider_signatures import sign_generic
from tests.support.auth import AUTH
from tests.support.rows import add_connection, trigger_run
from tests.support.tasktracker import TASKTRACKER_ENV

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers if headers is not None else AUTH)
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels`` (0 when none: not counted yet)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def send_webhook(client: FlaskClient, *, secret: str) -> int:
    body = json.dumps({"event": "task.updated", "task_id": 1}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Tracker-Event": "task.updated",
        "X-Tracker-Signature": sign_generic(secret, body, prefix="sha256="),
    }
    return client.post("/webhook/tasktracker", data=body, headers=headers).status_code


def test_metrics_need_the_api_key_by_default(client: FlaskClient) -> None:
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.json["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401

    samples = scrape(client)
    assert value(samples, "hooksync_metrics_source_up", source="redis") == 1
    assert value(samples, "hooksync_metrics_source_up", source="database") == 1
    for kind in ("webhook", "run", "notification"):
        assert ("hooksync_oldest_pending_age_seconds", frozenset({("kind", kind)})) in samples
    for queue in ("hooksync", "inbox"):
        assert ("hooksync_queue_depth", frozenset({("queue", queue)})) in samples


@pytest.fixture
def public_ctx(make_env, database_url: str, provider_env: dict[str, str]) -> Iterator[AppContext]:
    env = make_env(HOOKSYNC_DATABASE_URL=database_url, HOOKSYNC_METRICS_PUBLIC="true")
    context = AppContext(load_settings(env))
    yield context
    context.close()


def test_public_metrics_are_served_without_the_key(public_ctx: AppContext) -> None:
    client = create_app(public_ctx).test_client()
    samples = scrape(client, headers={})
    assert value(samples, "hooksync_metrics_source_up", source="redis") == 1
    # Only the metrics are public: the API still wants the key.
    assert client.get("/webhooks/events").status_code == 401


def test_the_receiver_counts_each_answer_and_the_inbox_gauges_follow(
    client: FlaskClient,
) -> None:
    before = scrape(client)
    secret = TASKTRACKER_ENV["TASKTRACKER_WEBHOOK_SECRET"]
    assert send_webhook(client, secret=secret) == 202
    assert send_webhook(client, secret=secret) == 202
    assert send_webhook(client, secret="wrong") == 401
    assert client.post("/webhook/nope", data=b"{}").status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    received = "hooksync_webhooks_received_total"
    assert moved(received, integration="tasktracker", outcome="accepted") == 2
    assert moved(received, integration="tasktracker", reason="invalid_signature") == 1
    assert moved(received, integration="(unknown)", reason="unknown_integration") == 1
    # Nothing drains the inbox in this test: both accepted webhooks wait there.
    assert value(after, "hooksync_queue_depth", queue="inbox") == 2
    assert value(after, "hooksync_queue_depth", queue="hooksync") == 1  # one wake-up
    assert value(after, "hooksync_inbox_pending_entries") == 0
    assert value(after, "hooksync_oldest_pending_age_seconds", kind="webhook") > 0


def test_a_queued_run_shows_as_the_oldest_pending_run(ctx: AppContext, client: FlaskClient) -> None:
    assert value(scrape(client), "hooksync_oldest_pending_age_seconds", kind="run") == 0
    connection = add_connection(ctx, "tasktracker", "acme", schedules=True)
    trigger_run(ctx, connection, "tasks")
    assert value(scrape(client), "hooksync_oldest_pending_age_seconds", kind="run") > 0


def test_a_dead_process_files_are_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(finished.stdout)
    live = Path(tmp_path / f"counter_{os.getpid()}.db")
    gone = Path(tmp_path / f"counter_{dead}.db")
    other = Path(tmp_path / "notes.db")
    for path in (live, gone, other):
        path.write_bytes(b"")
    assert remove_dead_files(tmp_path) == [gone]
    assert live.exists() and other.exists() and not gone.exists()
