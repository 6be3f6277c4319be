"""The printed result: the checks, then one line per fault with its recovery time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.chaos.checks import Check

__all__ = ["FaultLine", "render"]


@dataclass(frozen=True)
class FaultLine:
    name: str
    started: float  # seconds since the load began
    seconds: float  # the fault's window
    recovery: float | None  # seconds from its end to drained; None: never within the wait
    notes: str = ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
        line(row) for row in rows
    ]


def render(checks: Sequence[Check], faults: Sequence[FaultLine], summary: str) -> str:
    """Markdown tables (they read as text too), the failures spelled out under them."""
    lines = [summary, ""]
    lines += _table(
        ("check", "observed", "expected", "ok"),
        [(c.name, c.observed, c.expected, "yes" if c.ok else "NO") for c in checks],
    )
    lines.append("")
    lines += _table(
        ("fault", "at (s)", "lasted (s)", "recovered in (s)", "notes"),
        [
            (
                f.name,
                f"{f.started:.0f}",
                f"{f.seconds:.1f}",
                "not recovered" if f.recovery is None else f"{f.recovery:.1f}",
                f.notes,
            )
            for f in faults
        ],
    )
    failed = [c for c in checks if not c.ok]
    failed_faults = [f for f in faults if f.recovery is None]
    if failed or failed_faults:
        lines.append("")
        lines.append("FAILED:")
        lines += [f"- {c.name}: {c.observed} (expected {c.expected}) {c.detail}" for c in failed]
        lines += [f"- {f.name}: the system did not drain after it" for f in failed_faults]
    else:
        lines += ["", "all checks passed"]
    details = [c for c in checks if c.ok and c.detail]
    lines += [f"note - {c.name}: {c.detail}" for c in details]
    return "\n".join(lines)
