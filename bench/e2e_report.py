"""The report of ``bench.e2e``: each phase's lines as it ends, and the final table.

Every figure is printed beside its floor (where there is one) and its target, with "ok" or
"MISS by <factor>x"; a phase that saturated says so, and the integrity row (webhooks lost,
covered twice, not accepted, failed) fails the run when it is not all zeros.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.e2e_load import LoadResult
from bench.e2e_sink import Note
from bench.e2e_watch import Matcher, percentile

__all__ = [
    "HEADER",
    "Phase",
    "Row",
    "format_row",
    "integrity_rows",
    "latency_rows",
    "memory_rows",
    "phase_lines",
    "spread_title",
    "throughput_rows",
]

CONNECTIONS = 100

#: The issue's targets.
TARGET_FLOOR_RATIO = 0.33
TARGET_RATE = 100
TARGET_P50_MS, TARGET_P99_MS = 30.0, 100.0
TARGET_IDLE_P50_MS = 20.0
TARGET_RSS_MB = {"web": 100.0, "worker": 150.0}


@dataclass
class Row:
    backend: str
    case: str
    figure: str
    floor: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Phase:
    """One measured phase: what was offered, what came back."""

    key: str
    title: str
    rate: float = 0.0
    load: LoadResult | None = None
    #: HTTP status of every webhook sent (-1: a network error).
    statuses: Counter[int] = field(default_factory=Counter)
    saturated: str = ""
    #: Saturation phases: webhooks notified per second while saturated, and the ramp's knee.
    throughput: float = 0.0
    knee: str = ""
    notes: list[str] = field(default_factory=list)


def verdict_at_least(value: float, target: float) -> str:
    """Judged as printed (two decimals), so a row never reads "0.33x ... MISS"."""
    if round(value, 2) >= target:
        return "ok"
    return _miss(target / value) if value > 0 else "MISS"


def verdict_at_most(value: float, target: float) -> str:
    return "ok" if value <= target else _miss(value / target)


def _miss(factor: float) -> str:
    return f"MISS by {factor:.2f}x" if factor < 1.1 else f"MISS by {factor:.1f}x"


def spread_title(spread: str) -> str:
    return f"{CONNECTIONS} connections" if spread == "spread" else "1 hot connection"


def describe_load(phase: Phase) -> str:
    load = phase.load
    if load is None or not load.sent:
        return "nothing sent"
    sends = sorted(s.sent_at for s in load.sent)
    span = sends[-1] - sends[0]
    achieved = (len(sends) - 1) / span if span > 0 else float("nan")
    late = [(s.sent_at - s.scheduled) * 1000 for s in load.sent if s.status != -1]
    ack = [(s.acked_at - s.sent_at) * 1000 for s in load.sent if s.status != -1]
    offered = f"offered {phase.rate:.0f}/s, " if phase.rate else ""
    text = (
        f"load: {len(load.sent)} of {load.planned} planned sent in {span:.1f} s "
        f"({offered}achieved {achieved:.1f}/s)"
    )
    if late:
        text += (
            f"; late p50 {percentile(late, 0.5):.1f} p99 {percentile(late, 0.99):.1f} "
            f"max {max(late):.1f} ms; 202 in p50 {percentile(ack, 0.5):.1f} "
            f"p99 {percentile(ack, 0.99):.1f} ms"
        )
    share = load.cpu_seconds / span if span > 0 else float("nan")
    text += (
        f"; generator {load.cpu_seconds * 1000 / len(load.sent):.2f} ms CPU/webhook "
        f"({share:.0%} of a core), at most {load.max_busy}/{load.senders} senders busy"
    )
    if load.errors:
        text += f"; errors: {load.errors}"
    return text


def phase_lines(backend: str, phase: Phase, matcher: Matcher) -> list[str]:
    """What a phase printed when it ends: counts and latency, the load, its notes."""
    latencies = [x * 1000 for x in matcher.latencies.get(phase.key, [])]
    sent = sum(phase.statuses.values())
    head = f"  {backend} {phase.title}: {sent} sent, {phase.statuses.get(202, 0)} accepted"
    if latencies:
        head += (
            f", {len(latencies)} notified; latency p50 {percentile(latencies, 0.5):.1f} "
            f"p99 {percentile(latencies, 0.99):.1f} max {max(latencies):.1f} ms"
        )
    lines = [head]
    if phase.load is not None:
        lines.append(f"    {describe_load(phase)}")
    lines += [f"    {note}" for note in ([phase.saturated] if phase.saturated else [])]
    lines += [f"    {note}" for note in phase.notes]
    return lines


def throughput_rows(name: str, saturation: dict[str, Phase], floor: float) -> list[Row]:
    rows = []
    for spread, phase in saturation.items():
        title = spread_title(spread)
        ratio = phase.throughput / floor if floor else float("nan")
        verdict = verdict_at_least(ratio, TARGET_FLOOR_RATIO)
        if phase.saturated:
            verdict += " (not saturated)"
        figure = f"{phase.throughput:.1f}/s"
        target = f">={TARGET_FLOOR_RATIO}x"
        row = Row(name, f"throughput, {title}", figure, f"{floor:.0f}/s", f"{ratio:.2f}x")
        row.target, row.verdict = target, verdict
        rows.append(row)
        rows.append(Row(name, f"  backlog grows from (offered), {title}", phase.knee or "-"))
    return rows


def latency_rows(
    name: str, matcher: Matcher, idle: Phase, latency: dict[tuple[str, int], Phase]
) -> list[Row]:
    rows = []
    idle_ms = [x * 1000 for x in matcher.latencies.get(idle.key, [])]
    if idle_ms:
        p50 = percentile(idle_ms, 0.5)
        row = Row(name, "latency idle, one at a time p50", f"{p50:.1f} ms")
        row.target = f"<={TARGET_IDLE_P50_MS:g} ms"
        row.verdict = verdict_at_most(p50, TARGET_IDLE_P50_MS)
        rows.append(row)
        p99 = percentile(idle_ms, 0.99)
        rows.append(Row(name, "latency idle, one at a time p99", f"{p99:.1f} ms"))
    for (spread, rate), phase in latency.items():
        values = [x * 1000 for x in matcher.latencies.get(phase.key, [])]
        for label, fraction, target in (("p50", 0.5, TARGET_P50_MS), ("p99", 0.99, TARGET_P99_MS)):
            figure = percentile(values, fraction) if values else None
            case = f"latency {rate}/s, {spread_title(spread)} {label}"
            row = Row(name, case, "-" if figure is None else f"{figure:.1f} ms")
            if rate == TARGET_RATE:
                row.target = f"<={target:g} ms"
                row.verdict = "MISS" if figure is None else verdict_at_most(figure, target)
            if phase.saturated:
                row.verdict = f"{row.verdict} (saturated)".strip()
            rows.append(row)
    return rows


def memory_rows(name: str, peaks: list[tuple[str, str, int, int]]) -> list[Row]:
    rows = []
    for role, label, pid, peak in peaks:
        if role not in ("web", "worker", "beat"):
            continue
        mb = peak / 2**20
        row = Row(name, f"peak RSS {label} (pid {pid})", f"{mb:.0f} MB")
        if role in TARGET_RSS_MB:
            row.target = f"<={TARGET_RSS_MB[role]:g} MB"
            row.verdict = verdict_at_most(mb, TARGET_RSS_MB[role])
        rows.append(row)
    return rows


def integrity_rows(
    backend: str,
    phases: list[Phase],
    matcher: Matcher,
    failed_runs: list[Note],
    inbox: Counter[str],
) -> tuple[list[str], Row, int]:
    """Every webhook accepted and covered exactly once: the lines to print, the row and the
    number of failures. ``inbox`` counts ``duplicates``, ``bad_signatures`` and, per sync type,
    the notifications ignored."""
    outstanding = matcher.outstanding()
    sent = sum(sum(p.statuses.values()) for p in phases)
    non_202 = sum(n for p in phases for status, n in p.statuses.items() if status != 202)
    lost = sum(outstanding.values())
    extra = matcher.extra
    bad_signatures = inbox["bad_signatures"]
    failures = non_202 + lost + extra + len(failed_runs) + bad_signatures
    others = {k: v for k, v in inbox.items() if k not in ("duplicates", "bad_signatures")}
    lines = [
        f"  {backend} integrity: {sent} webhooks sent, {non_202} not answered 202, {lost} "
        f"never notified, {extra} extra covered, {len(failed_runs)} failed runs notified, "
        f"{inbox['duplicates']} duplicate deliveries, {bad_signatures} bad signatures, "
        f"other notifications: {others or 'none'}"
    ]
    if failures:
        lines.append(f"  !!! {backend}: {failures} INTEGRITY FAILURES !!!")
        for phase in phases:
            bad = {status: n for status, n in phase.statuses.items() if status != 202}
            if bad:
                lines.append(f"  !!! {phase.title}: answered {bad} (-1 = a network error)")
        for key, count in outstanding.items():
            lines.append(f"  !!! phase {key}: {count} webhooks never notified")
        for note in failed_runs[:5]:
            lines.append(f"  !!! a failed run was notified for {note.connection_id}")
    figure = f"{lost}/{extra}/{non_202}/{len(failed_runs)}"
    row = Row(backend, "webhooks lost / extra / not 202 / failed", figure)
    row.target, row.verdict = "0/0/0/0", "FAIL" if failures else "ok"
    return lines, row, failures


_WIDTH = 46
HEADER = (
    f"{'backend':<9}{'case':<{_WIDTH}}{'figure':>11}{'floor':>10}{'ratio':>7}  "
    f"{'target':<11}verdict"
)


def format_row(row: Row) -> str:
    return (
        f"{row.backend:<9}{row.case:<{_WIDTH}}{row.figure:>11}{row.floor:>10}{row.ratio:>7}  "
        f"{row.target:<11}{row.verdict}"
    )
