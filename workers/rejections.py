"""Webhooks refused at the door, counted per minute in Redis for the console's chart.

The receiver stores nothing for a request it refuses (401 bad signature, 400 unparsable
body, 413 too large, 404 unknown integration): that is the point of refusing it before any
write. The console's "webhooks per minute" chart still wants to show them, so each refusal
adds one to a per-minute Redis counter that expires after two hours. Only the error paths
call :func:`count_rejection`; the accepted path pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

__all__ = ["KEY_PREFIX", "TTL_SECONDS", "count_rejection", "minute_of", "rejections_per_minute"]

log = logging.getLogger(__name__)

#: ``<prefix><minutes since the epoch>``: one counter per minute.
KEY_PREFIX = "hooksync:rejected:"
#: A counter outlives the chart's hour with room to spare, then Redis drops it.
TTL_SECONDS = 2 * 3600


def minute_of(epoch_seconds: float) -> int:
    """The minute index (minutes since the epoch) of a Unix time."""
    return int(epoch_seconds // 60)


def count_rejection(client: redis.Redis, now: float) -> None:
    """Add one refused webhook to the counter of the minute of ``now`` (a Unix time).

    A Redis failure is logged and swallowed: the refusal is answered all the same.
    """
    key = f"{KEY_PREFIX}{minute_of(now)}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, TTL_SECONDS)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not count a refused webhook in Redis: %s", error, exc_info=True)


def rejections_per_minute(client: redis.Redis, minutes: Sequence[int]) -> list[int] | None:
    """The refused webhooks of each minute index (0 where none), one MGET; None when Redis
    cannot be read."""
    if not minutes:
        return []
    try:
        values = client.mget([f"{KEY_PREFIX}{minute}" for minute in minutes])
    except redis.RedisError as error:
        log.warning(
            "could not read the refused-webhook counters from Redis: %s", error, exc_info=True
        )
        return None
    return [int(value or 0) for value in values]
