"""ingress/console/svg.py: the console's charts as SVG text (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.console.svg import (
    format_seconds,
    percentile,
    run_durations_chart,
    webhooks_per_minute_chart,
)

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything but well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile([1, 2, 3, 4], 0.95) == pytest.approx(3.85)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1, 2, 3], 0.0) == 1 and percentile([1, 2, 3], 1.0) == 3


@pytest.mark.parametrize(("values", "q"), [([], 0.5), ([1.0], 1.5), ([1.0], -0.1)])
def test_percentile_refuses_no_values_and_bad_quantiles(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.345, "0.34 s"), (12.34, "12.3 s"), (125, "2 min 05 s")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_webhook_chart_places_each_minutes_values() -> None:
    labels = ["14:00", "14:01", "14:02"]

    root = parse(webhooks_per_minute_chart(labels, [3, 0, 1], [1, 0, 0], [0, 0, 2]))

    minutes = root.findall("svg:g[@class='minute']", NS)
    assert [m.get("data-label") for m in minutes] == labels
    assert [
        (m.get("data-accepted"), m.get("data-rejected"), m.get("data-duplicate")) for m in minutes
    ] == [
        ("3", "1", "0"),
        ("0", "0", "0"),
        ("1", "0", "2"),
    ]
    first = {
        rect.get("class"): float(rect.get("height", 0))
        for rect in minutes[0].findall("svg:rect", NS)
    }
    assert set(first) == {"accepted", "rejected"}  # nothing drawn for a zero
    assert first["accepted"] == pytest.approx(3 * first["rejected"], rel=0.01)
    assert minutes[1].findall("svg:rect", NS) == []
    title = root.find("svg:title", NS)
    assert (
        title is not None
        and title.text == "Webhooks per minute: 4 accepted, 1 rejected, 2 duplicate"
    )


def test_webhook_chart_tallest_bar_fills_the_plot() -> None:
    root = parse(webhooks_per_minute_chart(["a", "b"], [2, 4], [0, 0], [0, 0], height=180))

    heights = [
        float(r.get("height", 0))
        for r in root.iter("{http://www.w3.org/2000/svg}rect")
        if r.get("class") == "accepted"
    ]
    assert heights[1] == pytest.approx(2 * heights[0], rel=0.01)
    assert heights[1] == pytest.approx(180 - 22 - 20, abs=0.2)


def test_webhook_chart_escapes_its_labels() -> None:
    svg = webhooks_per_minute_chart(["<b>&x"], [1], [0], [0])

    root = parse(svg)
    assert "<b>" not in svg
    minute = root.find("svg:g[@class='minute']", NS)
    assert minute is not None and minute.get("data-label") == "<b>&x"


def test_webhook_chart_refuses_series_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one value per minute"):
        webhooks_per_minute_chart(["a", "b"], [1, 2], [0], [0, 0])


def test_durations_chart_draws_p50_inside_p95_per_sync() -> None:
    rows = [("tracker/tasks", 1.5, 6.0, 12), ("tracker/<projects>", 0.5, 3.0, 2)]

    root = parse(run_durations_chart(rows, caption="runs finished in the last hour, per sync"))

    syncs = root.findall("svg:g[@class='sync']", NS)
    assert [g.get("data-label") for g in syncs] == ["tracker/tasks", "tracker/<projects>"]
    assert [(g.get("data-p50"), g.get("data-p95"), g.get("data-runs")) for g in syncs][0] == (
        "1.500",
        "6.000",
        "12",
    )
    widths = {r.get("class"): float(r.get("width", 0)) for r in syncs[0].findall("svg:rect", NS)}
    assert widths["p50"] == pytest.approx(widths["p95"] / 4, rel=0.01)
    texts = "".join(syncs[0].itertext())
    assert "p50 1.5 s · p95 6.0 s · 12 runs" in texts
    title = root.find("svg:title", NS)
    assert title is not None and "last hour, per sync" in (title.text or "")


def test_durations_chart_without_runs_says_so() -> None:
    root = parse(run_durations_chart([]))

    assert "no run finished" in "".join(root.itertext())
    assert root.findall("svg:g[@class='sync']", NS) == []


counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=0, max_size=70)


@given(st.data())
def test_webhook_chart_is_valid_svg_with_every_value_and_bars_inside_the_plot(
    data: st.DataObject,
) -> None:
    accepted = data.draw(counts)
    size = len(accepted)
    fixed = st.lists(st.integers(min_value=0, max_value=10_000), min_size=size, max_size=size)
    rejected, duplicate = data.draw(fixed), data.draw(fixed)
    labels = data.draw(st.lists(st.text(max_size=8), min_size=size, max_size=size))

    root = parse(webhooks_per_minute_chart(labels, accepted, rejected, duplicate, height=180))

    minutes = root.findall("svg:g[@class='minute']", NS)
    assert [int(m.get("data-accepted", -1)) for m in minutes] == accepted
    assert [int(m.get("data-rejected", -1)) for m in minutes] == rejected
    assert [int(m.get("data-duplicate", -1)) for m in minutes] == duplicate
    for minute in minutes:
        for rect in minute.findall("svg:rect", NS):
            assert float(rect.get("y", -1)) >= 22 - 0.1
            assert float(rect.get("y", 0)) + float(rect.get("height", 0)) <= 180 - 20 + 0.2


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50))
def test_p50_never_exceeds_p95_and_both_lie_within_the_values(values: list[float]) -> None:
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)

    assert min(values) <= p50 <= p95 <= max(values)
