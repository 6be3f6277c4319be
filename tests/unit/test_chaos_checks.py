"""The chaos suite's end assertions (bench/chaos/checks.py) on made-up facts, no I/O."""

from __future__ import annotations

import math

from bench.chaos.checks import (
    Received,
    Row,
    check_cache,
    check_effects,
    check_notifications,
    check_takeovers,
    percentile,
)


def _by_name(checks: list) -> dict:
    return {check.name: check for check in checks}


def test_an_acknowledged_webhook_without_an_effect_is_lost() -> None:
    checks = _by_name(check_effects({"a": 1.0, "b": 2.0}, [("a", 1.5)], []))
    lost = checks["webhooks acked 202 = processed"]
    assert not lost.ok and "1 lost" in lost.observed and "'b'" in lost.detail


def test_a_second_effect_is_a_duplicate_unless_a_fault_cut_the_first_run() -> None:
    effects = [("a", 1.0), ("a", 5.0), ("b", 10.0), ("b", 11.0)]
    checks = _by_name(check_effects({"a": 0.5, "b": 9.0}, effects, [(3.0, 4.0)]))
    assert checks["webhooks acked 202 = processed"].ok
    twice = checks["webhooks run twice (no fault between)"]
    assert not twice.ok and twice.observed == "1" and "'b'" in twice.detail
    assert checks["webhooks re-run after a fault cut their run"].observed == "1"


def test_effects_of_never_acknowledged_webhooks_are_not_losses() -> None:
    checks = check_effects({}, [("x", 1.0)], [])
    assert all(check.ok for check in checks)


def test_the_cache_must_hold_every_item_at_the_api_version() -> None:
    truth = {"acct": {"i1": {"version": 3}, "i2": {"version": 1}}}
    assert check_cache({"acct": {"i1": {"version": 3}, "i2": {"version": 1}}}, truth).ok
    stale = check_cache({"acct": {"i1": {"version": 2}}}, truth)
    assert not stale.ok
    assert "acct/i1: cache 2, API 3" in stale.detail and "acct/i2: cache None" in stale.detail
    assert not check_cache({}, {}).ok  # nothing compared proves nothing


def _row(id_: int, run: int, state: str = "delivered") -> Row:
    return Row(id_, f"msg_{id_}", state, run)


def _got(id_: int, stream: str = "acct", status: int = 200) -> Received:
    return Received(f"msg_{id_}", (stream, "items", "Item"), status, True)


def test_notifications_all_delivered_once_in_order_pass() -> None:
    rows = [_row(1, 10), _row(2, 12)]
    received = [_got(1, status=503), _got(1), _got(2)]
    executions = [frozenset({10}), frozenset({11, 12})]  # 11 and 12 ran together
    assert all(check.ok for check in check_notifications(rows, received, executions))


def test_a_message_answered_2xx_twice_is_a_duplicate() -> None:
    checks = _by_name(check_notifications([_row(1, 10)], [_got(1), _got(1)], [frozenset({10})]))
    assert not checks["notifications delivered twice (no fault between)"].ok


def test_a_later_message_of_a_stream_delivered_first_is_out_of_order() -> None:
    rows = [_row(1, 10), _row(2, 11), _row(3, 12)]
    received = [_got(2), _got(3, stream="other"), _got(1)]
    executions = [frozenset({10}), frozenset({11}), frozenset({12})]
    order = _by_name(check_notifications(rows, received, executions))[
        "notifications in order per stream"
    ]
    assert not order.ok and order.observed == "1 out of order" and "1 after 2" in order.detail


def test_an_execution_without_its_notification_or_with_two_fails() -> None:
    rows = [_row(1, 10), _row(2, 10)]
    executions = [frozenset({10}), frozenset({11})]
    recorded = _by_name(check_notifications(rows, [_got(1), _got(2)], executions))[
        "notifications recorded = executions finished"
    ]
    assert (
        not recorded.ok and "runs [11]" in recorded.detail and "twice: runs [10]" in recorded.detail
    )


def test_an_undelivered_row_fails_delivery() -> None:
    rows = [_row(1, 10, state="pending")]
    delivered = _by_name(check_notifications(rows, [], [frozenset({10})]))[
        "notifications delivered = expected"
    ]
    assert not delivered.ok and "msg_1" in delivered.detail


def test_takeover_p99_is_held_to_15_seconds() -> None:
    assert check_takeovers([3.0] * 99 + [14.0], 0).ok
    assert not check_takeovers([3.0] * 98 + [16.0, 16.0], 0).ok
    assert not check_takeovers([3.0], 1).ok  # a run never taken over
    assert check_takeovers([], 0).ok


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert math.isnan(percentile([], 0.99))


def test_a_second_2xx_across_a_fault_is_at_least_once_not_a_duplicate() -> None:
    received = [
        Received("msg_1", ("acct", "items", "Item"), 200, True, 10.0),
        Received("msg_1", ("acct", "items", "Item"), 200, True, 20.0),
    ]
    checks = _by_name(check_notifications([_row(1, 10)], received, [frozenset({10})], [(12, 15)]))
    assert checks["notifications delivered twice (no fault between)"].ok
    assert checks["notifications re-sent after a fault cut their send"].observed == "1"
