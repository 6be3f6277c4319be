"""The console's time filter (``ingress.console.filters.parse_time``), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config.errors import BadInputError
from ingress.console.filters import AGES, parse_time

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-12-01T02:00", datetime(2026, 12, 1, 2, 0, tzinfo=UTC)),
        ("2026-12-01 02:00:30", datetime(2026, 12, 1, 2, 0, 30, tzinfo=UTC)),
        ("2026-12-01T02:00:00Z", datetime(2026, 12, 1, 2, 0, tzinfo=UTC)),
        ("2026-12-01T04:00:00+02:00", datetime(2026, 12, 1, 2, 0, tzinfo=UTC)),
    ],
)
def test_an_age_or_a_time_is_an_instant_in_utc(typed: str, expected: datetime) -> None:
    found = parse_time(typed, field="since", now=NOW)
    assert found == expected
    assert found is not None and found.utcoffset() == timedelta(0)


@pytest.mark.parametrize("typed", [None, "", "   "])
def test_an_empty_box_is_no_filter(typed: str | None) -> None:
    assert parse_time(typed, field="since", now=NOW) is None


@pytest.mark.parametrize("typed", ["yesterday", "15", "15 minutes", "-1h", "2026-13-01"])
def test_anything_else_is_refused_naming_the_field_and_the_value(typed: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_time(typed, field="until", now=NOW)
    assert caught.value.field == "until"
    assert str(caught.value).startswith("until: ")
    assert repr(typed) in str(caught.value)


def test_every_offered_age_parses() -> None:
    for value, _label in AGES:
        parsed = parse_time(value, field="since", now=NOW)
        assert parsed is not None and parsed < NOW
