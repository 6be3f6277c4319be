"""The data behind the console's two charts, and the charts as markup for a template.

- **Webhooks per minute**, the last hour: ``accepted`` (stored for routing: received,
  routed, unrouted, processed), ``duplicate`` and ``rejected`` (stored as rejected by
  routing, plus the requests refused at the door, counted in Redis by
  ``workers.rejections`` since nothing of them is stored).
- **Run durations**, p50 and p95 per sync, of the runs finished in the last hour
  (``started_at`` → ``finished_at``, polls and webhook runs together).

The SVG is drawn by the pure ``ingress.console.svg``, which escapes every text it places;
that is why its output, and only it, is marked safe here.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from markupsafe import Markup

from cache.context import AppContext
from cache.db import read_scope
from cache.models import WebhookState
from ingress.console.svg import percentile, run_durations_chart, webhooks_per_minute_chart
from workers.events import count_per_minute
from workers.rejections import minute_of, rejections_per_minute
from workers.runs import durations_since

__all__ = [
    "WINDOW",
    "duration_rows",
    "durations_chart",
    "webhook_chart",
    "webhook_series",
]

#: Both charts cover this much time, up to now.
WINDOW = timedelta(hours=1)

#: Stored states that count as accepted (the receiver took them; routing did its work).
_ACCEPTED = frozenset(
    {
        WebhookState.RECEIVED.value,
        WebhookState.ROUTED.value,
        WebhookState.UNROUTED.value,
        WebhookState.PROCESSED.value,
    }
)


def webhook_series(
    ctx: AppContext, now: datetime
) -> tuple[list[str], list[int], list[int], list[int]]:
    """``(labels, accepted, rejected, duplicate)``, one entry per minute of the last hour.

    The last entry is the current (partial) minute; labels are ``HH:MM`` UTC.
    """
    current = minute_of(now.timestamp())
    minutes = list(range(current - 59, current + 1))
    starts = [datetime.fromtimestamp(minute * 60, UTC) for minute in minutes]
    keys = [start.strftime("%Y-%m-%d %H:%M") for start in starts]
    with read_scope(ctx.sessions) as session:
        rows = count_per_minute(session, starts[0])
    by_state: dict[str, dict[str, int]] = defaultdict(dict)
    for minute, state, count in rows:
        by_state[minute][state] = by_state[minute].get(state, 0) + count
    door = rejections_per_minute(ctx.redis, minutes) or [0] * len(minutes)
    accepted, rejected, duplicate = [], [], []
    for key, refused in zip(keys, door, strict=True):
        states = by_state.get(key, {})
        accepted.append(sum(count for state, count in states.items() if state in _ACCEPTED))
        duplicate.append(states.get(WebhookState.DUPLICATE.value, 0))
        rejected.append(states.get(WebhookState.REJECTED.value, 0) + refused)
    return [start.strftime("%H:%M") for start in starts], accepted, rejected, duplicate


def duration_rows(ctx: AppContext, now: datetime) -> list[tuple[str, float, float, int]]:
    """``[(integration/sync, p50, p95, runs)]`` of the runs finished in the last hour, the
    slowest p95 first."""
    with read_scope(ctx.sessions) as session:
        rows = durations_since(session, now - WINDOW)
    by_sync: dict[str, list[float]] = defaultdict(list)
    for key, name, seconds in rows:
        by_sync[f"{key}/{name}"].append(seconds)
    result = [
        (label, percentile(values, 0.5), percentile(values, 0.95), len(values))
        for label, values in by_sync.items()
    ]
    return sorted(result, key=lambda row: (-row[2], row[0]))


def webhook_chart(ctx: AppContext, now: datetime | None = None) -> Markup:
    """The webhooks-per-minute chart of the last hour, as inline SVG markup."""
    labels, accepted, rejected, duplicate = webhook_series(ctx, now or datetime.now(UTC))
    # Safe: svg.py escapes every text it writes, and the numbers are ints.
    return Markup(webhooks_per_minute_chart(labels, accepted, rejected, duplicate))


def durations_chart(ctx: AppContext, now: datetime | None = None) -> Markup:
    """The p50/p95 run durations per sync of the last hour, as inline SVG markup."""
    rows = duration_rows(ctx, now or datetime.now(UTC))
    svg = run_durations_chart(rows, caption="runs finished in the last hour, per sync")
    # Safe: svg.py escapes every text it writes (sync and integration names included).
    return Markup(svg)
