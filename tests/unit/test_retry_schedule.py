"""The delivery retry schedule and the poll grid helpers: pure functions, no I/O."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.models import NotificationState, Schedule
from cache.timestamps import js_time
from config.frequency import next_run_after
from config.integrations import SyncConfig
from workers.app_webhooks import encode_body
from workers.external import parse_retry_after
from workers.outbox import classify_status
from workers.retry import MAX_RETRY_AFTER_SECONDS, RETRY_DELAYS, next_delay, retry_delay
from workers.schedules import interval_for, poll_sync_type

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_schedule_is_5s_5min_30min_2h_5h_10h_10h() -> None:
    assert RETRY_DELAYS == (5, 300, 1800, 7200, 18000, 36000, 36000)


@given(attempts=st.integers(1, len(RETRY_DELAYS)), seed=st.integers(0, 2**32))
def test_each_delay_stays_within_20_percent_of_the_schedule(attempts: int, seed: int) -> None:
    delay = next_delay(attempts, None, random.Random(seed))
    base = RETRY_DELAYS[attempts - 1]
    assert delay is not None
    assert base * 0.8 <= delay <= base * 1.2


def test_jitter_actually_spreads_the_delays() -> None:
    rng = random.Random(7)
    delays = {round(next_delay(1, None, rng) or 0, 3) for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) < 4.6 and max(delays) > 5.4


def test_retries_are_exhausted_after_the_eighth_attempt() -> None:
    assert next_delay(7, None, random.Random(1)) is not None
    assert next_delay(8, None, random.Random(1)) is None


def test_attempts_must_count_a_failure() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        next_delay(0)


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    assert next_delay(1, 120.0, random.Random(1)) == 120.0
    assert next_delay(1, 1.0, random.Random(1)) != 1.0  # shorter than the schedule: ignored
    assert next_delay(1, 10 * 365 * 86400.0, random.Random(1)) == MAX_RETRY_AFTER_SECONDS
    assert next_delay(8, 120.0, random.Random(1)) is None  # never revives an exhausted one


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120", now=NOW) == 120.0
    assert parse_retry_after("Wed, 01 May 2024 12:02:00 GMT", now=NOW) == 120.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("nan", now=NOW) is None


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (200, NotificationState.DELIVERED),
        (204, NotificationState.DELIVERED),
        (410, NotificationState.GONE),
        (400, NotificationState.FAILED),
        (401, NotificationState.FAILED),
        (404, NotificationState.FAILED),
        (301, NotificationState.FAILED),
        (408, None),
        (429, None),
        (500, None),
        (503, None),
        (None, None),
    ],
)
def test_status_classification(status: int | None, state: NotificationState | None) -> None:
    assert classify_status(status) is state


def test_timestamps_look_like_javascript_to_iso_string() -> None:
    when = datetime(2024, 5, 1, 14, 3, 4, 567891, tzinfo=timezone(timedelta(hours=2)))
    assert js_time(when) == "2024-05-01T12:03:04.567Z"
    with pytest.raises(ValueError, match="naive"):
        js_time(datetime(2024, 5, 1))


def test_bodies_are_compact_ordered_and_keep_unicode() -> None:
    body = {"b": 1, "a": "Tâche", "c": [1, {"z": None}]}
    text = encode_body(body)
    assert text == '{"b":1,"a":"Tâche","c":[1,{"z":null}]}'
    assert json.loads(text) == body


def _sync(**overrides: object) -> SyncConfig:
    values: dict[str, object] = {
        "name": "tasks",
        "integration": "tracker",
        "runs": "every hour",
        "interval_seconds": 3600,
        "sync_type": "incremental",
    }
    values.update(overrides)
    return SyncConfig(**values)  # type: ignore[arg-type]


def test_incremental_only_after_a_successful_run_of_an_incremental_sync() -> None:
    assert poll_sync_type(_sync(), None) == "INITIAL"
    assert poll_sync_type(_sync(), NOW) == "INCREMENTAL"
    assert poll_sync_type(_sync(sync_type="full"), NOW) == "INITIAL"
    assert poll_sync_type(_sync(), NOW, reset=True) == "INITIAL"


def test_a_connection_override_replaces_the_config_frequency_on_the_grid() -> None:
    schedule = Schedule(starts_at=NOW, frequency_seconds=None)
    assert interval_for(schedule, _sync()) == 3600
    schedule.frequency_seconds = 600
    assert interval_for(schedule, _sync()) == 600
    # A run finishing 25 minutes late skips the missed slots and lands on the grid.
    late = NOW + timedelta(minutes=25, seconds=3)
    assert next_run_after(NOW, interval_for(schedule, _sync()), late) == NOW + timedelta(minutes=30)


def test_run_retry_delays_back_off_and_are_capped() -> None:
    assert [retry_delay(n) for n in range(1, 5)] == [5, 10, 20, 40]
    assert retry_delay(30) == 300
