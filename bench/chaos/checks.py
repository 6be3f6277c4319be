"""The end assertions, pure: what the run collected in, one ``Check`` per claim out.

No I/O here (the driver gathers the facts; ``tests/unit/test_chaos_checks.py`` feeds made-up
ones), so each rule can be read and tested on its own:

* every webhook acknowledged with 202 ran its handler (an effect in the external API's log),
  and none ran twice — unless a fault interrupted the first execution (a run that dies or
  fails after its external call is executed again: at-least-once, reported apart);
* the cache equals the external API, item by item, after the reconciliation poll;
* every notification row was delivered, each ``webhook-id`` answered 2xx exactly once, and
  per (connection, sync, model) stream the app got them in the outbox's order;
* runs all ended ``success``; a dead worker's run was taken over within 15 s (p99);
* every fault was recovered from (the system drained what it held back).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TAKEOVER_P99_SECONDS",
    "Check",
    "check_cache",
    "check_effects",
    "check_notifications",
    "check_takeovers",
    "percentile",
]

#: The issue's bound on taking over a dead worker's run (p99 over the chaos run).
TAKEOVER_P99_SECONDS = 15.0


@dataclass(frozen=True)
class Check:
    name: str
    observed: str
    expected: str
    ok: bool
    detail: str = ""


def check_effects(
    acked: Mapping[str, float],
    effects: Sequence[tuple[str, float]],
    fault_windows: Sequence[tuple[float, float]],
) -> list[Check]:
    """Webhooks acknowledged vs handler effects.

    Args:
        acked: Delivery id -> time of its 202.
        effects: (delivery id, time) per line of the effects log.
        fault_windows: (start, end) of every fault; a second effect is explained when a
            fault window overlaps the time between the first effect and it.
    """
    times: dict[str, list[float]] = defaultdict(list)
    for delivery, at in effects:
        times[delivery].append(at)
    lost = sorted(delivery for delivery in acked if delivery not in times)
    processed = sum(1 for delivery in acked if delivery in times)
    twice = {delivery: sorted(ats) for delivery, ats in times.items() if len(ats) > 1}
    unexplained = sorted(
        delivery
        for delivery, ats in twice.items()
        if not any(s <= ats[-1] and e >= ats[0] for s, e in fault_windows)
    )
    return [
        Check(
            "webhooks acked 202 = processed",
            f"{len(acked)} acked, {processed} processed, {len(lost)} lost",
            "0 lost",
            not lost,
            f"first lost: {lost[:5]}" if lost else "",
        ),
        Check(
            "webhooks run twice (no fault between)",
            str(len(unexplained)),
            "0",
            not unexplained,
            f"e.g. {unexplained[:5]}" if unexplained else "",
        ),
        Check(
            "webhooks re-run after a fault cut their run",
            str(len(twice) - len(unexplained)),
            "(at-least-once)",
            True,
            "handler effect logged, then the run died or failed and was run again",
        ),
    ]


def check_cache(
    cache: Mapping[str, Mapping[str, Mapping[str, Any]]],
    truth: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> Check:
    """The cache (account -> id -> record) against the external API's final state."""
    wrong: list[str] = []
    total = 0
    for account in sorted(set(cache) | set(truth)):
        have, want = cache.get(account, {}), truth.get(account, {})
        for item_id in sorted(set(have) | set(want)):
            total += 1
            mine, theirs = have.get(item_id), want.get(item_id)
            mine_v = None if mine is None else mine.get("version")
            theirs_v = None if theirs is None else theirs.get("version")
            if mine_v != theirs_v:
                wrong.append(f"{account}/{item_id}: cache {mine_v!r}, API {theirs_v!r}")
    return Check(
        "cache = external API (after reconciliation)",
        f"{total - len(wrong)}/{total} items equal",
        "all equal",
        not wrong and total > 0,
        "; ".join(wrong[:5]),
    )


@dataclass(frozen=True)
class Row:
    """A ``notifications`` row as the checks need it."""

    id: int
    webhook_id: str
    state: str
    run_id: int | None


@dataclass(frozen=True)
class Received:
    """One request the app answered: its ``webhook-id``, stream, status, signature."""

    webhook_id: str
    stream: tuple[str, ...]
    status: int
    signature_ok: bool
    at: float = 0.0


def check_notifications(
    rows: Sequence[Row],
    received: Sequence[Received],
    executions: Sequence[frozenset[int]],
    fault_windows: Sequence[tuple[float, float]] = (),
) -> list[Check]:
    """Outbox rows vs the finished executions and vs what the app received (arrival order).

    Args:
        rows: The ``notifications`` rows (one URL, one model: one row per execution).
        received: What the app answered, in arrival order.
        executions: The run ids of each finished execution: one run, or the webhook runs a
            drain executed together (one notification, attached to one of them, sums them).
        fault_windows: A second 2xx of a message is at-least-once delivery when a fault
            window overlaps the time between the two (the sender died, or could not record
            the first outcome); otherwise it is a duplicate.
    """
    states = Counter(row.state for row in rows)
    by_webhook = {row.webhook_id: row for row in rows}
    answered_ok = Counter(item.webhook_id for item in received if 200 <= item.status < 300)
    missing = [row.webhook_id for row in rows if answered_ok[row.webhook_id] == 0]
    ok_times: dict[str, list[float]] = defaultdict(list)
    for item in received:
        if 200 <= item.status < 300:
            ok_times[item.webhook_id].append(item.at)
    twice = {webhook: times for webhook, times in ok_times.items() if len(times) > 1}
    duplicated = sorted(
        webhook
        for webhook, times in twice.items()
        if not any(s <= max(times) and e >= min(times) for s, e in fault_windows)
    )
    unknown = sorted(webhook for webhook in answered_ok if webhook not in by_webhook)
    bad_signatures = sum(1 for item in received if not item.signature_ok)
    execution_of = {run: index for index, runs in enumerate(executions) for run in runs}
    per_execution = Counter(execution_of.get(row.run_id, -1) for row in rows if row.run_id)
    unnotified = [min(runs) for i, runs in enumerate(executions) if not per_execution[i]]
    twice_recorded = [min(executions[i]) for i, n in per_execution.items() if i >= 0 and n > 1]
    strays = per_execution[-1]  # rows of runs that did not finish
    # Order: per stream, the first 2xx of each message, in arrival order, must follow the
    # outbox's order (row id).
    seen: set[str] = set()
    last: dict[tuple[str, ...], int] = {}
    inversions: list[str] = []
    for item in received:
        if not 200 <= item.status < 300 or item.webhook_id in seen:
            continue
        seen.add(item.webhook_id)
        row = by_webhook.get(item.webhook_id)
        if row is None:
            continue
        previous = last.get(item.stream)
        if previous is not None and row.id < previous:
            inversions.append(f"{'/'.join(item.stream)}: {row.id} after {previous}")
        last[item.stream] = max(row.id, previous or 0)
    return [
        Check(
            "notifications recorded = executions finished",
            f"{len(executions) - len(unnotified)}/{len(executions)} notified, "
            f"{len(twice_recorded)} twice, {strays} for unfinished runs",
            "one per execution",
            not unnotified and not twice_recorded and not strays,
            (f"not notified: runs {unnotified[:5]}" if unnotified else "")
            + (f" notified twice: runs {twice_recorded[:5]}" if twice_recorded else ""),
        ),
        Check(
            "notifications delivered = expected",
            f"{len(rows) - len(missing)}/{len(rows)} delivered; states {dict(states)}",
            "all delivered",
            not missing and set(states) <= {"delivered"},
            f"undelivered: {missing[:5]}" if missing else "",
        ),
        Check(
            "notifications delivered twice (no fault between)",
            str(len(duplicated)),
            "0",
            not duplicated and not unknown,
            (f"e.g. {duplicated[:5]}" if duplicated else "")
            + (f"; not in the outbox: {unknown[:5]}" if unknown else ""),
        ),
        Check(
            "notifications re-sent after a fault cut their send",
            str(len(twice) - len(duplicated)),
            "(at-least-once)",
            True,
        ),
        Check(
            "notifications in order per stream",
            f"{len(inversions)} out of order",
            "0",
            not inversions,
            "; ".join(inversions[:5]),
        ),
        Check("notification signatures valid", f"{bad_signatures} bad", "0", not bad_signatures),
    ]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0-1) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def check_takeovers(takeovers: Sequence[float], orphaned: int) -> Check:
    """Seconds from each kill to the re-claim of the runs its worker held.

    Args:
        takeovers: One figure per run the killed worker was running.
        orphaned: Such runs never claimed again (still not finished at the end).
    """
    p99 = percentile(takeovers, 0.99)
    ok = not orphaned and (not takeovers or p99 <= TAKEOVER_P99_SECONDS)
    observed = (
        f"p99 {p99:.1f} s, max {max(takeovers):.1f} s over {len(takeovers)} runs"
        if takeovers
        else "no run was cut by a kill"
    )
    return Check(
        "takeover of a dead worker's runs",
        observed + (f", {orphaned} never taken over" if orphaned else ""),
        f"p99 <= {TAKEOVER_P99_SECONDS:.0f} s",
        ok,
    )
