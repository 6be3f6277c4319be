"""The workers' Prometheus metrics: what routing, runs and deliveries count as they happen.

Each function here is called where the thing it counts is decided, after the transaction
that decided it committed, and costs one dictionary lookup and one add per label set: in
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the ``hooksync`` command) a value
is a write into this process's memory-mapped file, never a Redis or database call. The web
process's ``/metrics`` (``ingress/metrics.py``) merges the files of every process of the
machine. Without the variable (tests, a bare ``celery`` command) the values live in this
process's default registry.

Label values come from ``nango.yaml`` (integration, sync, model) or from small fixed sets
(outcome, status, action), never from request data, so the number of series stays bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from celery import signals
from prometheus_client import Counter, Histogram, multiprocess

__all__ = [
    "MULTIPROC_ENV",
    "NOTIFICATION_ATTEMPTS",
    "NOTIFICATION_DELIVERY_SECONDS",
    "RECORDS_WRITTEN",
    "RUNS",
    "RUN_SECONDS",
    "WEBHOOKS_ROUTED",
    "count_delivered",
    "count_notification_attempt",
    "count_records",
    "count_routed",
    "count_run",
]

#: The variable that switches prometheus_client to files shared by the machine's processes.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Run durations: webhook runs take milliseconds, polls of a large account an hour.
_RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: From the outbox row to the app's 2xx: milliseconds when the app is up, hours (the retry
#: schedule, up to about 38 h) when it is not.
_DELIVERY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400
)  # fmt: skip

WEBHOOKS_ROUTED = Counter(
    "hooksync_webhooks_routed",
    "Webhook events recorded by a worker, by routing outcome "
    "(routed, unrouted, duplicate, rejected); replays are not counted.",
    ["integration", "outcome"],
)
RUNS = Counter(
    "hooksync_runs",
    "Sync run attempts finished, by status: success, error (final), requeued (a transient "
    "failure, retried later).",
    ["integration", "sync", "status"],
)
RUN_SECONDS = Histogram(
    "hooksync_run_duration_seconds",
    "Seconds from a run attempt's start to its recorded outcome.",
    ["integration", "sync", "status"],
    buckets=_RUN_BUCKETS,
)
RECORDS_WRITTEN = Counter(
    "hooksync_records_written",
    "Records changed in the cache by sync scripts, by action (added, updated, deleted).",
    ["integration", "sync", "model", "action"],
)
NOTIFICATION_ATTEMPTS = Counter(
    "hooksync_notification_attempts",
    "Attempts to deliver a webhook to the app, by outcome: delivered, retry (scheduled "
    "again), failed (given up or refused), gone (the app answered 410).",
    ["outcome"],
)
NOTIFICATION_DELIVERY_SECONDS = Histogram(
    "hooksync_notification_delivery_seconds",
    "Seconds from a notification's creation to the app's 2xx, retries included.",
    buckets=_DELIVERY_BUCKETS,
)

_ACTIONS = ("added", "updated", "deleted")


def count_routed(outcomes: Iterable[tuple[str, str]]) -> None:
    """Count newly recorded events.

    Args:
        outcomes: ``(integration, state)`` per event, the state a ``WebhookState`` value.
    """
    for integration, state in outcomes:
        WEBHOOKS_ROUTED.labels(integration, state).inc()


def count_run(integration: str, sync: str, status: str, seconds: float) -> None:
    """Count one finished run attempt and its duration (``status``: success, error, requeued)."""
    RUNS.labels(integration, sync, status).inc()
    RUN_SECONDS.labels(integration, sync, status).observe(max(seconds, 0.0))


def count_records(integration: str, sync: str, results: Mapping[str, Mapping[str, Any]]) -> None:
    """Count what one execution wrote: ``results`` is ``{model: {"added": n, ...}}``."""
    for model, counts in results.items():
        for action in _ACTIONS:
            amount = int(counts.get(action) or 0)
            if amount > 0:
                RECORDS_WRITTEN.labels(integration, sync, model, action).inc(amount)


def count_notification_attempt(
    outcome: str, created_at: datetime | None = None, finished_at: datetime | None = None
) -> None:
    """Count one delivery attempt; a delivered one also observes its latency."""
    NOTIFICATION_ATTEMPTS.labels(outcome).inc()
    if outcome == "delivered" and created_at is not None and finished_at is not None:
        NOTIFICATION_DELIVERY_SECONDS.observe(max((finished_at - created_at).total_seconds(), 0.0))


def count_delivered(created: Iterable[datetime | None], finished_at: datetime) -> None:
    """Count a batch of deliveries (``deliver_many``): one creation time per notification."""
    for created_at in created:
        count_notification_attempt("delivered", created_at, finished_at)


@signals.worker_process_shutdown.connect
def _on_worker_process_shutdown(**_: Any) -> None:
    # A prefork child that exits hands back its live-gauge files, as gunicorn's child_exit
    # hook does for web workers (hooksync/gunicorn_config.py). Its counter and histogram
    # files stay: the machine's totals must not drop when a child is replaced.
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())
