"""The dashboard's SVG charts: well-formed, labelled, readable without colour, escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from mailvet.dashboard.charts import (
    PATTERNS,
    RESULT_ORDER,
    bar_chart,
    html_legend,
    nice_max,
    stacked_chart,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_bar_chart_labels_every_bar_with_its_name_and_count() -> None:
    items = [("deliverable", 60), ("risky", 30), ("undeliverable", 10), ("unknown", 0)]
    root = parse(bar_chart(items, title="Results", chart_id="results", categories=RESULT_ORDER))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "results-title results-desc"
    assert root.find(f"{SVG}title").text == "Results"  # type: ignore[union-attr]
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == "Results. deliverable: 60, risky: 30, undeliverable: 10, unknown: 0."
    shown = texts(root)
    assert all(label in shown for label, _ in items)
    assert "60 (60%)" in shown and "10 (10%)" in shown and "0 (0%)" in shown
    # bar lengths are proportional to the counts (the longest is the largest)
    widths = {
        rect.get("class", "").split()[-1]: float(rect.get("width", "0"))
        for rect in root.iter(f"{SVG}rect")
        if "mv-cat" in rect.get("class", "")
    }
    assert widths["mv-cat-deliverable"] == pytest.approx(2 * widths["mv-cat-risky"], abs=0.2)
    assert widths["mv-cat-risky"] == pytest.approx(3 * widths["mv-cat-undeliverable"], abs=0.2)
    assert widths["mv-cat-unknown"] == 0


def test_each_category_has_its_own_pattern_besides_its_colour() -> None:
    items = [(c, 5) for c in RESULT_ORDER]
    root = parse(bar_chart(items, title="R", chart_id="r", categories=RESULT_ORDER))
    fills = [
        rect.get("fill") for rect in root.iter(f"{SVG}rect") if rect.get("class") == "mv-pattern"
    ]
    # the first category is plain, every other one is hatched with its own pattern
    assert fills == ["url(#r-p1)", "url(#r-p2)", "url(#r-p3)"]
    ids = {p.get("id") for p in root.iter(f"{SVG}pattern")}
    assert ids == {"r-p1", "r-p2", "r-p3"}
    assert len(set(PATTERNS)) == len(PATTERNS)
    # a category keeps its look whatever the order of the bars
    swapped = parse(
        bar_chart(list(reversed(items)), title="R", chart_id="r", categories=RESULT_ORDER)
    )
    first = next(r for r in swapped.iter(f"{SVG}rect") if "mv-cat" in r.get("class", ""))
    assert "mv-cat-unknown" in first.get("class", "") and "mv-cat-3" in first.get("class", "")


def test_labels_and_titles_are_escaped() -> None:
    hostile = '<script>alert(1)</script>"&'
    markup = str(bar_chart([(hostile, 3)], title=hostile, chart_id='x"><script>'))
    assert "<script>" not in markup
    root = parse(markup)  # still well-formed XML
    assert root.get("id") == "x---script-"
    assert root.find(f"{SVG}title").text == hostile  # type: ignore[union-attr]


def test_an_empty_bar_chart_says_so() -> None:
    root = parse(bar_chart([], title="Reasons", chart_id="reasons"))
    assert "No data yet" in texts(root)


def test_long_labels_are_shortened_with_the_whole_label_in_the_tooltip() -> None:
    label = "a-very-long-category-name-indeed-yes"
    root = parse(bar_chart([(label, 1)], title="T", chart_id="t"))
    assert any(t.endswith("\u2026") and len(t) == 22 for t in texts(root))
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert f"{label}: 1 (100%)" in tips


def test_stacked_chart_stacks_each_day_and_states_the_totals() -> None:
    days = [date(2026, 11, 1) + timedelta(days=n) for n in range(3)]
    values = {
        days[0]: {"deliverable": 4, "undeliverable": 1},
        days[2]: {"deliverable": 2, "risky": 2, "unknown": 1},
    }
    root = parse(stacked_chart(days, values, title="Usage", chart_id="usage"))
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == (
        "Usage: 3 days, 2026-11-01 to 2026-11-03. Totals: deliverable 6, risky 2, "
        "undeliverable 1, unknown 1. Busiest day 2026-11-01 with 5."
    )
    shown = texts(root)
    for legend in ("deliverable (6)", "risky (2)", "undeliverable (1)", "unknown (1)"):
        assert legend in shown
    assert {"11-01", "11-02", "11-03"} <= set(shown)
    assert {"0", "5"} <= set(shown)  # the y axis: 0 .. nice_max(5)
    tips = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert "2026-11-03: risky 2" in tips and "2026-11-01: undeliverable 1" in tips
    segments = {
        tip: float(g.find(f"{SVG}rect").get("height", "0"))  # type: ignore[union-attr]
        for g in root.iter(f"{SVG}g")
        if (tip := g.find(f"{SVG}title").text or "").startswith("2026")  # type: ignore[union-attr]
    }
    # heights are proportional: 4 deliverable are 4 times 1 undeliverable
    assert segments["2026-11-01: deliverable 4"] == pytest.approx(
        4 * segments["2026-11-01: undeliverable 1"], abs=0.2
    )
    assert segments["2026-11-03: deliverable 2"] == pytest.approx(segments["2026-11-03: risky 2"])
    assert not any(t.startswith("2026-11-02") for t in segments)  # a day with nothing


def test_stacked_chart_thins_date_labels_to_fit() -> None:
    days = [date(2026, 10, 1) + timedelta(days=n) for n in range(30)]
    root = parse(stacked_chart(days, {}, title="Usage", chart_id="u"))
    dates = [t for t in texts(root) if re.fullmatch(r"\d\d-\d\d", t)]
    assert 5 <= len(dates) < 30 and dates[-1] == "10-30"  # the last day is always labelled
    assert "Busiest day" in (root.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]


def test_stacked_chart_without_days() -> None:
    root = parse(stacked_chart([], {}, title="Usage", chart_id="u"))
    assert root.find(f"{SVG}desc").text == "Usage: no data."  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (250, 500), (1000, 1000)]
)
def test_nice_max(value: int, top: int) -> None:
    assert nice_max(value) == top


def test_html_legend_names_each_category_with_its_total_and_pattern() -> None:
    markup = str(html_legend(RESULT_ORDER, {"deliverable": 3, "risky": 1}, chart_id="u"))
    root = ET.fromstring(markup)
    items = root.findall("li")
    assert ["".join(li.itertext()).split()[-2:] for li in items] == [
        ["deliverable", "3"],
        ["risky", "1"],
        ["undeliverable", "0"],
        ["unknown", "0"],
    ]
    swatches = [li.find(f"{SVG}svg") for li in items]
    assert all(s is not None and s.get("aria-hidden") == "true" for s in swatches)
    fills = [
        r.get("fill")
        for s in swatches
        if s is not None
        for r in s.iter(f"{SVG}rect")
        if r.get("fill")
    ]
    assert fills == ["url(#u-legend1-p1)", "url(#u-legend2-p2)", "url(#u-legend3-p3)"]


def test_stacked_chart_without_its_own_legend() -> None:
    day = date(2026, 11, 1)
    root = parse(stacked_chart([day], {day: {"risky": 2}}, title="U", chart_id="u", legend=False))
    assert "risky (2)" not in texts(root)
    assert "Totals: deliverable 0, risky 2" in (root.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]
