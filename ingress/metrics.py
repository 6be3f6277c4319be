"""``GET /metrics``: Prometheus metrics of every process on this machine, and the web's own.

Counters and histograms are counted where things happen: the receiver's here
(``WEBHOOKS_RECEIVED``), the workers' in ``workers/metrics.py``. Under the ``hooksync``
command every process writes them to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``
(``var/metrics``, prepared by ``hooksync/metrics.py``), and whichever gunicorn worker
answers the scrape merges the files of all of them — both web workers and every Celery
prefork child of the machine. Without the variable (tests, a bare ``gunicorn``) the
process's own default registry is served.

Gauges of backlog and age are not counted: ``BacklogCollector`` computes them at scrape
time, one cheap read each — three Redis commands for the inbox, one per Celery priority
list, and two indexed queries — so they are right whichever process made the work, and cost
nothing on the hot path. A failed read leaves its gauges out and sets
``hooksync_metrics_source_up{source}`` to 0 instead of failing the scrape.

The route needs the API key unless ``HOOKSYNC_METRICS_PUBLIC=true``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cache.context import AppContext
from cache.db import read_scope
from cache.models import utcnow
from ingress.auth import current_context, require_api_key
from workers import inbox, outbox_views, runs
from workers.celery_app import DEFAULT_QUEUE, queue_length
from workers.metrics import MULTIPROC_ENV

__all__ = ["UNKNOWN_INTEGRATION", "WEBHOOKS_RECEIVED", "BacklogCollector", "bp", "count_received"]

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

#: The ``integration`` label of webhooks sent to a key that is not configured: the path is
#: the sender's, and must not mint a new series per request.
UNKNOWN_INTEGRATION = "(unknown)"

WEBHOOKS_RECEIVED = Counter(
    "hooksync_webhooks_received",
    "Webhooks answered by the receiver, by outcome: accepted (queued, 202), rejected (with "
    "the error code as reason), verification (a provider's handshake answered inline).",
    ["integration", "outcome", "reason"],
)


def count_received(integration: str, outcome: str, reason: str = "") -> None:
    """Count one webhook request; an mmap write in multiprocess mode, nothing else."""
    WEBHOOKS_RECEIVED.labels(integration, outcome, reason).inc()


@bp.get("/metrics")
def metrics() -> Any:
    """The Prometheus text format; the API key is required unless the metrics are public."""
    ctx = current_context()
    if ctx.settings.metrics_public:
        return _render(ctx)
    return require_api_key(_render)(ctx)


def _render(ctx: AppContext) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
        registry.register(BacklogCollector(ctx))
        output = generate_latest(registry)
    else:
        # One process: its own registry holds every counter it made.
        registry.register(BacklogCollector(ctx))
        output = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(output, mimetype=None, content_type=CONTENT_TYPE_LATEST)


class BacklogCollector(Collector):
    """Scrape-time gauges: queue depths and the age of the oldest waiting work."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    def describe(self) -> Iterable[Any]:
        # Nothing until collect(): registering must not touch Redis or the database.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "hooksync_queue_depth",
            "Messages waiting per queue: the Celery queue (task messages) and the webhook "
            "inbox (accepted webhooks not yet recorded in the database).",
            labels=["queue"],
        )
        inflight = GaugeMetricFamily(
            "hooksync_inbox_pending_entries",
            "Inbox entries a worker has read and not yet acknowledged.",
        )
        oldest = GaugeMetricFamily(
            "hooksync_oldest_pending_age_seconds",
            "Age of the oldest waiting item: webhook (in the inbox, not yet recorded), run "
            "(queued, not yet claimed), notification (not yet delivered). 0 when none waits.",
            labels=["kind"],
        )
        up = GaugeMetricFamily(
            "hooksync_metrics_source_up",
            "1 when the scrape could read the source of the backlog gauges, else 0.",
            labels=["source"],
        )
        now = utcnow()
        up.add_metric(["redis"], self._read(lambda: self._redis(now, depth, inflight, oldest)))
        up.add_metric(["database"], self._read(lambda: self._database(now, oldest)))
        yield depth
        yield inflight
        yield oldest
        yield up

    def _redis(
        self,
        now: datetime,
        depth: GaugeMetricFamily,
        inflight: GaugeMetricFamily,
        oldest: GaugeMetricFamily,
    ) -> None:
        client = self._ctx.redis
        waiting = queue_length(client)
        backlog = inbox.backlog(client)
        depth.add_metric([DEFAULT_QUEUE], waiting)
        depth.add_metric(["inbox"], backlog.length)
        inflight.add_metric([], backlog.pending)
        received = _parse_time(backlog.oldest_received_at)
        oldest.add_metric(["webhook"], _age(now, received))

    def _database(self, now: datetime, oldest: GaugeMetricFamily) -> None:
        with read_scope(self._ctx.sessions) as session:
            run = runs.oldest_queued(session)
            notification = outbox_views.oldest_pending(session)
        oldest.add_metric(["run"], _age(now, run))
        oldest.add_metric(["notification"], _age(now, notification))

    @staticmethod
    def _read(read: Callable[[], None]) -> int:
        try:
            read()
        except Exception:
            # A scrape must still answer (the counters matter most when Redis or the
            # database is in trouble); the gap shows as hooksync_metrics_source_up 0.
            log.warning("metrics: a backlog gauge could not be read", exc_info=True)
            return 0
        return 1


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0
