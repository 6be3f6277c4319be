"""The console's list filters, pure: the time a "since" box means, the choices of a select.

An operator types a time either as an age (``15m``, ``2h``, ``7d``: "the last two hours") or
as an instant (``2026-12-01T02:00`` as a ``datetime-local`` input sends it, or any ISO 8601
time; no zone means UTC, the zone every page shows). No I/O and no Flask here, so the rules
are unit-tested alone (``tests/unit/test_console_filters.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from config.errors import BadInputError

__all__ = ["AGES", "parse_time"]

#: The ages offered next to the "since" box, as (value, label).
AGES: tuple[tuple[str, str], ...] = (
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
)

_AGE = re.compile(r"^(\d{1,6})\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(raw: str | None, *, field: str, now: datetime) -> datetime | None:
    """The instant a filter box means, in UTC; None when the box is empty.

    Args:
        raw: What was typed: an age (``90s``, ``15m``, ``2h``, ``7d``) or an ISO 8601 time.
        field: The query parameter's name, for the error.
        now: The current time (an age counts back from it).

    Raises:
        BadInputError: Neither an age nor a time, naming ``field`` and the value.
    """
    text = (raw or "").strip()
    if not text:
        return None
    age = _AGE.match(text.lower())
    if age is not None:
        return now - timedelta(seconds=int(age.group(1)) * _UNIT_SECONDS[age.group(2)])
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise BadInputError(
            f"{field}: expected an age like 15m, 2h, 7d or a time like 2026-12-01T02:00 "
            f"(UTC), got {text[:40]!r}",
            field=field,
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
