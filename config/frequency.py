"""Sync frequencies: Nango's ``runs`` syntax and the fixed grid that due runs sit on.

Pure functions, no I/O. ``parse_frequency`` turns ``"every 30 minutes"`` into seconds;
``next_run_after`` finds the next slot of a sync's grid ``starts_at + k * interval``, so a
sync that missed slots (beat was down) runs once, on the grid, instead of catching up.
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NoReturn

from config.errors import BadInputError

__all__ = [
    "MAX_INTERVAL_SECONDS",
    "MIN_INTERVAL_SECONDS",
    "UNIT_SECONDS",
    "WORD_SECONDS",
    "next_run_after",
    "parse_duration",
    "parse_frequency",
]

#: Nango itself refuses less than 5 minutes on its cloud; self-hosted polling may go lower,
#: but not so low that a slow API call overlaps the next slot every time.
MIN_INTERVAL_SECONDS = 30

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

#: The longest interval: a grid point years away overflows datetime arithmetic (the beat
#: tick would fail for every schedule) and, past ~68 years, the per-connection override
#: column. Polling less than once a year is better triggered by hand.
MAX_INTERVAL_SECONDS = 365 * _DAY

#: Unit spellings accepted after a number ("30m", "every 2 days"), as in the ``ms`` package
#: Nango parses ``runs`` with. Weeks are accepted because ``ms`` accepts them too.
UNIT_SECONDS: dict[str, int] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), _MINUTE),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), _HOUR),
    **dict.fromkeys(("d", "day", "days"), _DAY),
    **dict.fromkeys(("w", "week", "weeks"), 7 * _DAY),
}

#: Frequencies written as words (optionally after "every "). A month is 30 days, as in Nango.
WORD_SECONDS: dict[str, int] = {
    "hour": _HOUR,
    "day": _DAY,
    "week": 7 * _DAY,
    "month": 30 * _DAY,
    "half day": 12 * _HOUR,
    "half hour": 30 * _MINUTE,
    "quarter hour": 15 * _MINUTE,
}

_NUMBER_UNIT = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)")
_EXAMPLES = "e.g. 'every 30 minutes', 'every 1h', '2d', 'every day' or 'every half hour'"


def parse_frequency(text: str) -> int:
    """Parse a Nango ``runs`` value into a number of seconds.

    Accepts an optional ``every``, then a number and a unit (``30m``, ``every 2 days``,
    ``1.5h``), or one of the words ``hour``, ``day``, ``week``, ``month`` (30 days),
    ``half day``, ``half hour``, ``quarter hour``. Case and extra whitespace are ignored.

    Args:
        text: The value as written in nango.yaml.

    Returns:
        The interval in whole seconds, from ``MIN_INTERVAL_SECONDS`` to
        ``MAX_INTERVAL_SECONDS``.

    Raises:
        BadInputError: With code ``invalid_frequency`` when the value cannot be parsed, is
            not a whole number of seconds, or is below the minimum or above the maximum.
    """
    if not isinstance(text, str):
        _fail(text, f"expected a string, {_EXAMPLES}")
    words = text.strip().lower().split()
    if not words:
        _fail(text, f"it is empty; write how often the sync runs, {_EXAMPLES}")
    if words[0] == "every":
        words = words[1:]
    elif len(words) > 1 and _is_close(words[0], "every"):
        _fail(text, f"did you mean {'every ' + ' '.join(words[1:])!r}?")
    body = " ".join(words)
    if body in WORD_SECONDS:
        return WORD_SECONDS[body]
    seconds = _parse_number_and_unit(text, body)
    if seconds < MIN_INTERVAL_SECONDS:
        _fail(
            text,
            f"{seconds} s is below the minimum of {MIN_INTERVAL_SECONDS} s; "
            f"use 'every {MIN_INTERVAL_SECONDS}s' or longer",
        )
    if seconds > MAX_INTERVAL_SECONDS:
        _fail(
            text,
            f"{seconds} s is above the maximum of {MAX_INTERVAL_SECONDS} s (365 days); "
            "use 'every 365d' or less",
        )
    return seconds


def parse_duration(value: object) -> int:
    """Parse a duration that is not a schedule (a sync's ``time_limit``) into seconds.

    A positive whole number of seconds, or a number and a unit as ``runs`` takes them
    (``90``, ``"90s"``, ``"10m"``, ``"1.5h"``); no ``every``, no minimum.

    Raises:
        BadInputError: With code ``invalid_duration``, naming the value.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        _fail_duration(value, "expected a number of seconds or a string such as '10m'")
    if isinstance(value, int):
        seconds = value
    else:
        body = value.strip().lower()
        if body.isdigit():
            seconds = int(body)
        else:
            try:
                seconds = _parse_number_and_unit(value, body)
            except BadInputError as error:
                _fail_duration(value, str(error).split(": ", 1)[-1])
    if seconds <= 0:
        _fail_duration(value, "it must be above 0 seconds")
    return seconds


def _fail_duration(value: object, reason: str) -> NoReturn:
    raise BadInputError(f"invalid duration {value!r}: {reason}", code="invalid_duration")


def next_run_after(starts_at: datetime, interval_seconds: int, after: datetime) -> datetime:
    """Return the first grid point ``starts_at + k * interval`` (k >= 0) strictly after ``after``.

    Slots between ``starts_at`` and ``after`` are skipped, not queued: a sync that was
    down for a day runs once at the next slot. The arithmetic is on integer microseconds
    in UTC, so the grid never drifts and daylight-saving changes cannot shift it.

    Args:
        starts_at: The grid's origin (timezone-aware).
        interval_seconds: Grid spacing, a positive whole number of seconds.
        after: The instant the next run must follow (timezone-aware).

    Returns:
        The next run time, in the timezone of ``starts_at``.

    Raises:
        ValueError: If a datetime is naive or the interval is not a positive integer.
    """
    _require_aware("starts_at", starts_at)
    _require_aware("after", after)
    if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int):
        raise ValueError(f"interval_seconds must be an int, got {interval_seconds!r}")
    if interval_seconds <= 0:
        raise ValueError(f"interval_seconds must be positive, got {interval_seconds!r}")
    # Subtracting two datetimes that share a tzinfo ignores their UTC offsets (wall-clock
    # difference), which is wrong across a DST change; converting to UTC first is exact.
    origin = starts_at.astimezone(UTC)
    elapsed = after.astimezone(UTC) - origin
    step_us = interval_seconds * 1_000_000
    elapsed_us = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
    slots = 0 if elapsed_us < 0 else elapsed_us // step_us + 1
    result = origin + timedelta(microseconds=slots * step_us)
    return result.astimezone(starts_at.tzinfo)


def _parse_number_and_unit(text: str, body: str) -> int:
    match = _NUMBER_UNIT.fullmatch(body)
    if match is None:
        _fail(text, f"expected an optional 'every', a number and a unit, or a word; {_EXAMPLES}")
    unit = match["unit"]
    if unit not in UNIT_SECONDS:
        close = difflib.get_close_matches(unit, UNIT_SECONDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        _fail(text, f"unknown unit {unit!r}; {hint}use s, m, h, d or w, {_EXAMPLES}")
    # Decimal keeps "1.5h" exact; a float could turn it into 5399.999... seconds.
    seconds = Decimal(match["number"]) * UNIT_SECONDS[unit]
    if seconds != seconds.to_integral_value():
        _fail(text, f"it is {seconds} s, not a whole number of seconds; use a smaller unit")
    return int(seconds)


def _is_close(word: str, target: str) -> bool:
    return difflib.SequenceMatcher(None, word, target).ratio() >= 0.75


def _require_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware, got naive {value!r}; "
            "use datetime.now(timezone.utc) or attach a tzinfo"
        )


def _fail(text: object, reason: str) -> NoReturn:
    raise BadInputError(f"invalid frequency {text!r}: {reason}", code="invalid_frequency")
