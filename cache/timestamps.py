"""The two timestamp formats hooksync speaks, pure.

- ``api_time``: the records API and every other JSON answer of ours: UTC with microseconds,
  ``2026-11-26T12:00:00.123456+00:00`` (records keep microseconds; ordering rests on them).
- ``js_time``: the completion webhooks, as Nango sends them: JavaScript's
  ``Date.toISOString()``, ``2026-11-26T12:00:00.123Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["api_optional_time", "api_time", "js_time"]


def api_time(value: datetime) -> str:
    """The API's timestamp: UTC with microseconds, ``2026-11-26T12:00:00.123456+00:00``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def api_optional_time(value: datetime | None) -> str | None:
    """``api_time``, or None for a timestamp that is not set (``deleted_at``, …)."""
    return None if value is None else api_time(value)


def js_time(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, like JavaScript's ``Date.toISOString``."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} given; use an aware UTC datetime")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
