"""``/metrics`` of a real deployment: two gunicorn workers and a Celery prefork worker
counting into one ``PROMETHEUS_MULTIPROC_DIR`` (issue 8's acceptance 3).

The scrape is parsed with prometheus_client's own parser. The receiver's counter must move
by exactly the number of webhooks sent, and the test sends until both gunicorn workers have
answered some of them (read from each process's own file), so a scrape that saw only the
answering worker's counts would fall short. Run, record and notification counters are
counted in Celery's prefork children, not in the web at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support.deployment import Deployment
from tests.support.notifications import notified

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

RECEIVED = "hooksync_webhooks_received_total"
#: Webhooks sent at once: more than the two gunicorn workers answer at a time.
PARALLEL = 8
#: Rounds of ``PARALLEL`` webhooks before giving up on reaching both web workers.
MAX_ROUNDS = 10


def scrape(deployment: Deployment) -> Samples:
    response = requests.get(f"{deployment.url}/metrics", headers=deployment.auth(), timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels`` (0 when not counted yet)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def accepted_per_file(folder: Path) -> dict[str, float]:
    """Each process's own count of accepted tasktracker webhooks, from its counter file."""
    counts = {}
    for path in sorted(folder.glob("counter_*.db")):
        samples = [
            sample
            for metric in MultiProcessCollector.merge([str(path)], accumulate=True)
            for sample in metric.samples
        ]
        counts[path.name] = sum(
            sample.value
            for sample in samples
            if sample.name == RECEIVED
            and sample.labels.get("integration") == "tasktracker"
            and sample.labels.get("outcome") == "accepted"
        )
    return counts


def scrape_until(
    deployment: Deployment, done: Callable[[Samples], bool], timeout: float = 60.0
) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(deployment)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_metrics_need_the_api_key(deployment: Deployment) -> None:
    response = requests.get(f"{deployment.url}/metrics", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_counters_of_every_process_move_as_webhooks_flow(connected: Deployment) -> None:
    folder = Path(connected.env["HOOKSYNC_VAR_DIR"]) / "metrics"
    assert folder.is_dir(), "the hooksync command did not prepare PROMETHEUS_MULTIPROC_DIR"
    before = scrape(connected)
    files_before = accepted_per_file(folder)
    mark = connected.receiver.mark()
    connected.tracker.update_task("T-2", title="Fix login redirect (again)", notify=False)

    sent = 0
    contributors: list[str] = []
    with ThreadPoolExecutor(PARALLEL) as pool:
        for _ in range(MAX_ROUNDS):
            answers = pool.map(
                lambda _: connected.tracker.send_webhook("task.updated", "T-2"), range(PARALLEL)
            )
            assert [answer.status for answer in answers] == [202] * PARALLEL
            sent += PARALLEL
            files = accepted_per_file(folder)
            contributors = [
                name for name, count in files.items() if count > files_before.get(name, 0)
            ]
            if len(contributors) >= 2:
                break
    assert len(contributors) >= 2, f"every webhook was answered by one web worker: {files}"
    assert sum(files.values()) - sum(files_before.values()) == sent

    def moved(after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    run = {"integration": "tasktracker", "sync": "tasks", "status": "success"}
    connected.receiver.wait_for(notified("WEBHOOK"), timeout=60, after=mark)
    after = scrape_until(
        connected,
        lambda now: (
            moved(now, "hooksync_runs_total", **run) >= sent
            and moved(now, "hooksync_notification_attempts_total", outcome="delivered") >= 1
        ),
    )

    # Web: the receiver's counter, summed over both gunicorn workers' files.
    assert moved(after, RECEIVED, integration="tasktracker", outcome="accepted") == sent
    # Workers (Celery prefork children): routing, runs, records, deliveries.
    routed = {"integration": "tasktracker", "outcome": "routed"}
    assert moved(after, "hooksync_webhooks_routed_total", **routed) == sent
    assert moved(after, "hooksync_runs_total", **run) >= sent
    assert moved(after, "hooksync_run_duration_seconds_count", **run) >= sent
    records = {"integration": "tasktracker", "sync": "tasks", "model": "Task"}
    assert moved(after, "hooksync_records_written_total", action="updated", **records) >= 1
    delivered = {"outcome": "delivered"}
    assert moved(after, "hooksync_notification_attempts_total", **delivered) >= 1
    assert moved(after, "hooksync_notification_delivery_seconds_count") >= 1
    # The scrape-time gauges read Redis and the database.
    assert value(after, "hooksync_metrics_source_up", source="redis") == 1
    assert value(after, "hooksync_metrics_source_up", source="database") == 1
