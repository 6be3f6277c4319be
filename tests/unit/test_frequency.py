"""Frequency parsing (Nango's ``runs``) and the fixed run grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import BadInputError
from config.frequency import (
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
    UNIT_SECONDS,
    WORD_SECONDS,
    next_run_after,
    parse_frequency,
)

# --- parse_frequency ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h", 3600),
        ("every 30 minutes", 1800),
        ("every 2 days", 172_800),
        ("every 5m", 300),
        ("30s", 30),
        ("every 45 secs", 45),
        ("every 3 hrs", 10_800),
        ("every 1 d", 86_400),
        ("1.5h", 5400),
        ("  Every 10 Minutes  ", 600),
        ("EVERY   1H", 3600),
        ("every hour", 3600),
        ("hour", 3600),
        ("every day", 86_400),
        ("every week", 604_800),
        ("every month", 2_592_000),
        ("every half day", 43_200),
        ("half hour", 1800),
        ("every quarter hour", 900),
        ("Every Half  Hour", 1800),
    ],
)
def test_parses_nango_frequencies(text: str, seconds: int) -> None:
    assert parse_frequency(text) == seconds


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("evry 1h", "did you mean 'every 1h'"),
        ("every 5 mintues", "did you mean 'minutes'"),
        ("every fortnight", "a number and a unit"),
        ("", "empty"),
        ("every", "a number and a unit"),
        ("-1h", "a number and a unit"),
        ("every 1 h 30 m", "a number and a unit"),
        ("10s", "below the minimum of 30 s"),
        ("every 0 minutes", "below the minimum"),
        ("1.0001m", "not a whole number of seconds"),
    ],
)
def test_rejects_bad_frequencies_naming_the_value_and_a_fix(text: str, hint: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_frequency(text)
    message = str(caught.value)
    assert message.startswith(f"invalid frequency {text!r}: ")
    assert hint in message
    assert caught.value.code == "invalid_frequency"


@pytest.mark.parametrize("value", [None, 3600, ["1h"]])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_frequency(value)  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"invalid frequency {value!r}: expected a string")


def test_minimum_is_thirty_seconds() -> None:
    assert parse_frequency(f"{MIN_INTERVAL_SECONDS}s") == MIN_INTERVAL_SECONDS
    with pytest.raises(BadInputError):
        parse_frequency(f"{MIN_INTERVAL_SECONDS - 1}s")


@pytest.mark.parametrize("text", ["every 366d", "every 3000000d", "every 99999999999999999999w"])
def test_maximum_is_365_days(text: str) -> None:
    # Larger intervals overflowed the grid arithmetic (and so the beat tick) or the
    # per-connection frequency column; they must be a clear error instead.
    assert parse_frequency("every 365d") == MAX_INTERVAL_SECONDS
    with pytest.raises(BadInputError, match="above the maximum") as caught:
        parse_frequency(text)
    assert caught.value.code == "invalid_frequency"
    assert repr(text) in str(caught.value)


def _formatted(number: int, unit: str, every: bool, space: bool, upper: bool) -> str:
    text = f"{'every ' if every else ''}{number}{' ' if space else ''}{unit}"
    return text.upper() if upper else text


@given(
    number=st.integers(min_value=1, max_value=100_000),
    unit=st.sampled_from(sorted(UNIT_SECONDS)),
    every=st.booleans(),
    space=st.booleans(),
    upper=st.booleans(),
)
def test_number_and_unit_round_trip(
    number: int, unit: str, every: bool, space: bool, upper: bool
) -> None:
    text = _formatted(number, unit, every, space, upper)
    expected = number * UNIT_SECONDS[unit]
    if expected < MIN_INTERVAL_SECONDS:
        with pytest.raises(BadInputError, match="below the minimum"):
            parse_frequency(text)
    elif expected > MAX_INTERVAL_SECONDS:
        with pytest.raises(BadInputError, match="above the maximum"):
            parse_frequency(text)
    else:
        assert parse_frequency(text) == expected


@given(word=st.sampled_from(sorted(WORD_SECONDS)), every=st.booleans(), upper=st.booleans())
def test_words_round_trip(word: str, every: bool, upper: bool) -> None:
    text = f"{'every ' if every else ''}{word}"
    assert parse_frequency(text.upper() if upper else text) == WORD_SECONDS[word]


# --- next_run_after -------------------------------------------------------------------

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def test_next_slot_is_strictly_after() -> None:
    assert next_run_after(T0, 3600, T0) == T0 + timedelta(hours=1)
    assert next_run_after(T0, 3600, T0 + timedelta(minutes=59)) == T0 + timedelta(hours=1)
    assert next_run_after(T0, 3600, T0 + timedelta(hours=1)) == T0 + timedelta(hours=2)


def test_before_the_start_the_start_is_next() -> None:
    assert next_run_after(T0, 3600, T0 - timedelta(days=3)) == T0


def test_missed_slots_are_skipped_not_queued() -> None:
    after = T0 + timedelta(days=2, minutes=10)
    assert next_run_after(T0, 3600, after) == T0 + timedelta(days=2, hours=1)


def test_is_exact_to_the_microsecond_far_from_the_start() -> None:
    start = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    after = datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    result = next_run_after(start, 7, after)
    assert result > after
    assert result - timedelta(seconds=7) <= after
    assert result.microsecond == 1


def test_grid_is_in_real_time_across_a_dst_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2024, 3, 30, 12, 0, tzinfo=paris)  # CET, the day before the switch
    after = datetime(2024, 3, 31, 12, 0, tzinfo=paris)  # CEST: only 23 h later
    result = next_run_after(start, 3600, after)
    assert result.astimezone(UTC) == datetime(2024, 3, 31, 11, 0, tzinfo=UTC)
    assert result.tzinfo is paris


def test_mixed_offsets_compare_by_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    after = datetime(2024, 1, 1, 14, 30, tzinfo=plus_two)  # 12:30 UTC
    assert next_run_after(T0, 3600, after) == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("starts_at", "after"),
    [(datetime(2024, 1, 1), T0), (T0, datetime(2024, 1, 1))],
)
def test_rejects_naive_datetimes(starts_at: datetime, after: datetime) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run_after(starts_at, 60, after)


@pytest.mark.parametrize("interval", [0, -60, 1.5, True])
def test_rejects_bad_intervals(interval: object) -> None:
    with pytest.raises(ValueError, match="interval_seconds"):
        next_run_after(T0, interval, T0)  # type: ignore[arg-type]


_moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)


@given(starts_at=_moments, after=_moments, interval=st.integers(1, 60 * 86_400))
def test_result_is_the_first_grid_point_after(
    starts_at: datetime, after: datetime, interval: int
) -> None:
    result = next_run_after(starts_at, interval, after)
    assert result > after
    step = timedelta(seconds=interval)
    offset = result - starts_at
    assert offset >= timedelta(0)
    assert offset % step == timedelta(0)  # on the grid
    # The previous slot is not after `after` (or there is no previous slot).
    assert result == starts_at or result - step <= after
