"""The console's two charts as SVG text: pure functions of numbers (no I/O, no Flask).

``webhooks_per_minute_chart`` stacks, for each minute, the accepted, duplicate and refused
webhooks; ``run_durations_chart`` draws each sync's p50 and p95 run duration. Both return a
complete ``<svg>`` element that the page embeds inline (no external asset, no script);
every text in it is XML-escaped here, so a sync or integration name cannot inject markup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape as _escape

__all__ = [
    "COLORS",
    "format_seconds",
    "percentile",
    "run_durations_chart",
    "webhooks_per_minute_chart",
]

#: Series colours, the console's state badge colours (static/console.css).
COLORS = {
    "accepted": "#1f7a3d",
    "duplicate": "#9a6200",
    "rejected": "#b3261e",
    "p50": "#2456c8",
    "p95": "#a9bde9",
}

#: Characters XML 1.0 does not allow at all, escaped or not (C0 controls but tab and
#: newlines, surrogates, U+FFFE/U+FFFF): dropped from any text placed in a chart.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_FONT = 'font-family="system-ui, sans-serif" font-size="11"'
_MUTED = "#5f6b7a"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated (numpy's default).

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside 0..1.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within 0 and 1, got {q!r}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def format_seconds(seconds: float) -> str:
    """``0.35 s``, ``12.3 s``, ``2 min 05 s``: a duration for a chart label."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def webhooks_per_minute_chart(
    labels: Sequence[str],
    accepted: Sequence[int],
    rejected: Sequence[int],
    duplicate: Sequence[int],
    *,
    width: int = 540,
    height: int = 180,
) -> str:
    """Stacked bars, one per minute (oldest first): accepted, duplicate, rejected.

    Args:
        labels: Each minute's label (e.g. ``"14:05"``), shown on hover and on the axis ends.
        accepted: Webhooks stored for routing, per minute.
        rejected: Webhooks refused at the door or rejected by routing, per minute.
        duplicate: Webhooks whose delivery id was seen before, per minute.
        width: The SVG's width in pixels.
        height: The SVG's height in pixels.

    Raises:
        ValueError: The four sequences differ in length.
    """
    count = len(labels)
    if not (len(accepted) == len(rejected) == len(duplicate) == count):
        raise ValueError(
            f"one value per minute in each series: {count} labels, {len(accepted)} accepted, "
            f"{len(rejected)} rejected, {len(duplicate)} duplicate"
        )
    left, right, top, bottom = 34, 8, 22, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([a + r + d for a, r, d in zip(accepted, rejected, duplicate, strict=True)] or [0])
    scale_max = max(peak, 1)
    slot = plot_w / max(count, 1)
    bar_w = max(slot - 1, 1)
    totals = {"accepted": sum(accepted), "rejected": sum(rejected), "duplicate": sum(duplicate)}
    summary = ", ".join(f"{totals[name]} {name}" for name in ("accepted", "rejected", "duplicate"))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart webhooks-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(f"Webhooks per minute: {summary}")}">',
        f"<title>{escape(f'Webhooks per minute: {summary}')}</title>",
        _legend([(name, f"{name} {totals[name]}") for name in totals], left),
        _axis(left, top, plot_w, plot_h, f"{scale_max}"),
    ]
    for index in range(count):
        x = left + index * slot
        base: float = top + plot_h
        values = {
            "accepted": accepted[index],
            "duplicate": duplicate[index],
            "rejected": rejected[index],
        }
        hover = (
            f"{labels[index]}: {values['accepted']} accepted, {values['rejected']} rejected, "
            f"{values['duplicate']} duplicate"
        )
        parts.append(
            f'<g class="minute" data-label="{escape(labels[index])}" '
            f'data-accepted="{values["accepted"]}" data-rejected="{values["rejected"]}" '
            f'data-duplicate="{values["duplicate"]}"><title>{escape(hover)}</title>'
        )
        for name in ("accepted", "duplicate", "rejected"):
            value = values[name]
            if value <= 0:
                continue
            bar_h = plot_h * value / scale_max
            base -= bar_h
            parts.append(
                f'<rect class="{name}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                f'height="{bar_h:.1f}" fill="{COLORS[name]}"/>'
            )
        parts.append("</g>")
    if count:
        axis_y = top + plot_h + 14
        parts.append(
            f'<text x="{left}" y="{axis_y}" {_FONT} fill="{_MUTED}">{escape(labels[0])}</text>'
        )
        parts.append(
            f'<text x="{left + plot_w}" y="{axis_y}" text-anchor="end" {_FONT} '
            f'fill="{_MUTED}">{escape(labels[-1])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def run_durations_chart(
    rows: Sequence[tuple[str, float, float, int]], *, width: int = 540, caption: str = ""
) -> str:
    """One row per sync: a p95 bar with the p50 bar over it, and both values written out.

    Args:
        rows: ``(label, p50 seconds, p95 seconds, runs)``, in display order.
        width: The SVG's width in pixels.
        caption: What the rows cover (e.g. "runs finished in the last hour, per sync").
    """
    row_h, top, label_w, value_w = 26, 22, 150, 215
    height = top + max(len(rows), 1) * row_h + 8
    plot_w = max(width - label_w - value_w, 40)
    longest = max([p95 for _, _, p95, _ in rows] or [0.0])
    scale_max = longest if longest > 0 else 1.0
    title = f"Run durations (p50/p95){': ' + caption if caption else ''}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart durations-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        _legend([("p50", "p50"), ("p95", "p95")], label_w),
    ]
    if not rows:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{top + 16}" text-anchor="middle" {_FONT} '
            f'fill="{_MUTED}">no run finished in this period</text>'
        )
    for index, (label, p50, p95, runs) in enumerate(rows):
        y = top + index * row_h
        text = f"p50 {format_seconds(p50)} · p95 {format_seconds(p95)} · {runs} runs"
        parts.append(
            f'<g class="sync" data-label="{escape(label)}" data-p50="{p50:.3f}" '
            f'data-p95="{p95:.3f}" data-runs="{runs}"><title>{escape(f"{label}: {text}")}</title>'
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" {_FONT} '
            f'fill="#1d2330">{escape(_shorten(label, 24))}</text>'
            f'<rect class="p95" x="{label_w}" y="{y + 4}" '
            f'width="{plot_w * p95 / scale_max:.1f}" height="14" fill="{COLORS["p95"]}"/>'
            f'<rect class="p50" x="{label_w}" y="{y + 7}" '
            f'width="{plot_w * p50 / scale_max:.1f}" height="8" fill="{COLORS["p50"]}"/>'
            f'<text x="{label_w + plot_w + 6}" y="{y + 15}" {_FONT} '
            f'fill="{_MUTED}">{escape(text)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(entries: Sequence[tuple[str, str]], x: int) -> str:
    parts = []
    for name, text in entries:
        parts.append(
            f'<rect x="{x}" y="6" width="10" height="10" fill="{COLORS[name]}"/>'
            f'<text x="{x + 14}" y="15" {_FONT} fill="#1d2330">{escape(text)}</text>'
        )
        x += 14 + 7 * len(text) + 16
    return f'<g class="legend">{"".join(parts)}</g>'


def _axis(left: int, top: int, plot_w: float, plot_h: float, peak: str) -> str:
    bottom = top + plot_h
    return (
        f'<g class="axis"><line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" '
        f'stroke="#d9dde3"/><line x1="{left}" y1="{top}" x2="{left + plot_w}" y2="{top}" '
        f'stroke="#eef1f5"/><text x="{left - 4}" y="{top + 4}" text-anchor="end" {_FONT} '
        f'fill="{_MUTED}">{escape(peak)}</text><text x="{left - 4}" y="{bottom}" '
        f'text-anchor="end" {_FONT} fill="{_MUTED}">0</text></g>'
    )


def escape(text: str) -> str:
    """``text`` safe inside an SVG element or a quoted attribute."""
    return _escape(_NOT_XML.sub("", text), quote=True)


def _shorten(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
