"""Server-side SVG charts for the dashboard: no script, no third-party library.

Two charts: ``bar_chart`` (horizontal bars by category, e.g. a batch's results or
reasons) and ``stacked_chart`` (one column per day, stacked by category, e.g. a key's
verdicts per day by result). Both read without colour: every bar carries its label
and count as text, every category has its own fill pattern as well as its colour, and
the legend shows pattern and name together. Each chart is ``role="img"`` with a
``<title>`` and a ``<desc>`` that states the numbers, and every bar or segment has its
own ``<title>`` (a tooltip). Colours come from CSS classes (``mv-cat-<name>`` or
``mv-cat-<n>``), so light and dark themes restyle them.

Every text that goes into the markup is escaped: labels may come from users (a batch's
categories are ours, but nothing here relies on that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date

from markupsafe import Markup, escape

__all__ = ["PATTERNS", "RESULT_ORDER", "bar_chart", "html_legend", "nice_max", "stacked_chart"]

RESULT_ORDER: tuple[str, ...] = ("deliverable", "risky", "undeliverable", "unknown")

# One fill pattern per category index (cycled): drawn over the colour, in the text's
# colour, so categories differ in black and white too. None is a plain fill.
PATTERNS: tuple[str | None, ...] = ("none", "diagonal", "dots", "cross", "horizontal", "vertical")

_BAR_WIDTH = 420  # viewBox width of the bar chart
_LABEL_W = 150
_COUNT_W = 64
_ROW_H = 30
_BAR_H = 20
_STACK_W = 640
_STACK_H = 300
_MARGIN_L = 48
_MARGIN_B = 40
_LEGEND_H = 34
_MAX_LABEL = 22  # characters shown of a bar label (the whole one is in its <title>)
_ID = re.compile(r"[^A-Za-z0-9_-]")


def _id(text: str) -> str:
    cleaned = _ID.sub("-", text)[:40]
    return cleaned if cleaned[:1].isalpha() else f"c-{cleaned}"


def _class_for(category: str, index: int) -> str:
    slug = _ID.sub("-", category.lower())[:32]
    return f"mv-cat mv-cat-{index % 8} mv-cat-{slug}"


def _pattern_defs(chart_id: str, count: int) -> str:
    """<pattern> elements ``<chart_id>-p<i>`` for the first ``count`` categories."""
    out: list[str] = []
    for i in range(count):
        kind = PATTERNS[i % len(PATTERNS)]
        pid = f"{chart_id}-p{i}"
        if kind == "diagonal":
            body = '<path d="M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4" class="mv-ink"/>'
        elif kind == "dots":
            body = '<circle cx="4" cy="4" r="1.6" class="mv-ink-fill"/>'
        elif kind == "cross":
            body = '<path d="M0,0 L8,8 M8,0 L0,8" class="mv-ink"/>'
        elif kind == "horizontal":
            body = '<path d="M0,4 H8" class="mv-ink"/>'
        elif kind == "vertical":
            body = '<path d="M4,0 V8" class="mv-ink"/>'
        else:
            continue
        out.append(
            f'<pattern id="{pid}" width="8" height="8" patternUnits="userSpaceOnUse">'
            f"{body}</pattern>"
        )
    return "<defs>" + "".join(out) + "</defs>" if out else ""


def _rect(
    chart_id: str, index: int, category: str, x: float, y: float, w: float, h: float, tip: str
) -> str:
    """A filled rectangle: the category's colour, its pattern over it, a tooltip."""
    kind = PATTERNS[index % len(PATTERNS)]
    geometry = f'x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.0):.1f}" height="{h:.1f}"'
    parts = [
        f'<g><title>{escape(tip)}</title><rect {geometry} class="{_class_for(category, index)}"/>'
    ]
    if kind != "none":
        parts.append(f'<rect {geometry} fill="url(#{chart_id}-p{index})" class="mv-pattern"/>')
    parts.append("</g>")
    return "".join(parts)


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "\u2026"


def _open(chart_id: str, width: int, height: int, title: str, desc: str, kind: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="mv-chart {kind}" id="{chart_id}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" preserveAspectRatio="xMinYMin meet">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )


def bar_chart(
    items: Sequence[tuple[str, int]],
    *,
    title: str,
    chart_id: str,
    desc: str | None = None,
    categories: Sequence[str] | None = None,
) -> Markup:
    """Horizontal bars, one per ``(label, count)`` in the order given, each with its
    label on the left and its count (and share of the total) at its end.

    ``categories`` fixes the colour / pattern index of each label (default: the order of
    ``items``), so a result keeps its look across charts."""
    cid = _id(chart_id)
    order = list(categories) if categories is not None else [label for label, _ in items]
    total = sum(max(0, n) for _, n in items)
    peak = max((n for _, n in items), default=0)
    summary = ", ".join(f"{label}: {n}" for label, n in items) or "no data"
    height = max(1, len(items)) * _ROW_H + 8
    span = _BAR_WIDTH - _LABEL_W - _COUNT_W
    out = [_open(cid, _BAR_WIDTH, height, title, desc or f"{title}. {summary}.", "mv-bars")]
    out.append(_pattern_defs(cid, len(order)))
    if not items:
        out.append(f'<text x="0" y="{_ROW_H - 10}" class="mv-label">No data yet</text>')
    for row, (label, n) in enumerate(items):
        index = order.index(label) if label in order else row
        y = row * _ROW_H + 4
        w = 0.0 if peak <= 0 else span * max(0, n) / peak
        share = f" ({100 * n / total:.0f}%)" if total else ""
        tip = f"{label}: {n}{share}"
        out.append(
            f'<text x="{_LABEL_W - 8}" y="{y + _BAR_H - 5}" text-anchor="end" '
            f'class="mv-label">{escape(_short(label))}</text>'
        )
        out.append(_rect(cid, index, label, _LABEL_W, y, max(w, 1.0 if n else 0.0), _BAR_H, tip))
        out.append(
            f'<text x="{_LABEL_W + w + 6:.1f}" y="{y + _BAR_H - 5}" class="mv-count">'
            f"{n}{escape(share)}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))


def nice_max(value: int) -> int:
    """The axis top for ``value``: 1, 2 or 5 times a power of ten, at least ``value``
    (and at least 1)."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_chart(
    days: Sequence[date],
    values: Mapping[date, Mapping[str, int]],
    *,
    title: str,
    chart_id: str,
    categories: Sequence[str] = RESULT_ORDER,
    desc: str | None = None,
    legend: bool = True,
) -> Markup:
    """One column per day of ``days`` (in that order), its segments stacked bottom-up in
    the order of ``categories``; a legend with each category's total above (unless
    ``legend`` is False: then put ``html_legend`` next to it, which wraps and scales with
    the page's text on a phone), a y axis with three ticks, and the dates under the
    columns (thinned to fit)."""
    cid = _id(chart_id)
    totals = {c: sum(int(values.get(d, {}).get(c, 0)) for d in days) for c in categories}
    day_totals = [sum(int(values.get(d, {}).get(c, 0)) for c in categories) for d in days]
    top = nice_max(max(day_totals, default=0))
    if desc is None:
        if days:
            span = f"{days[0].isoformat()} to {days[-1].isoformat()}"
            parts = ", ".join(f"{c} {totals[c]}" for c in categories)
            busiest = max(range(len(days)), key=lambda i: day_totals[i])
            desc = (
                f"{title}: {len(days)} days, {span}. Totals: {parts}. Busiest day "
                f"{days[busiest].isoformat()} with {day_totals[busiest]}."
            )
        else:
            desc = f"{title}: no data."
    out = [
        _open(cid, _STACK_W, _STACK_H, title, desc, "mv-stacked"),
        _pattern_defs(cid, len(categories)),
    ]
    # legend: swatch + "name (total)"
    x = 0.0
    for i, c in enumerate(categories if legend else ()):
        out.append(_rect(cid, i, c, x, 6, 16, 16, f"{c}: {totals[c]} in all"))
        text = f"{c} ({totals[c]})"
        out.append(f'<text x="{x + 22:.1f}" y="19" class="mv-label">{escape(text)}</text>')
        x += 22 + 8.2 * len(text) + 16
    plot_top = _LEGEND_H + 8 if legend else 12
    plot_h = _STACK_H - plot_top - _MARGIN_B
    plot_w = _STACK_W - _MARGIN_L - 4
    base = plot_top + plot_h
    # y axis: 0, half, top
    for tick in (0, top // 2 if top >= 2 else None, top):
        if tick is None:
            continue
        y = base - plot_h * tick / top
        out.append(
            f'<line x1="{_MARGIN_L}" x2="{_STACK_W - 4}" y1="{y:.1f}" y2="{y:.1f}" '
            'class="mv-grid"/>'
            f'<text x="{_MARGIN_L - 6}" y="{y + 7:.1f}" text-anchor="end" class="mv-axis-l">'
            f"{tick}</text>"
        )
    n = max(1, len(days))
    slot = plot_w / n
    bar_w = max(2.0, slot * 0.7)
    every = max(1, -(-n * 64 // plot_w))  # a date label every `every` columns, 64 units each
    for k, day in enumerate(days):
        left = _MARGIN_L + k * slot + (slot - bar_w) / 2
        y = float(base)
        for i, c in enumerate(categories):
            count = int(values.get(day, {}).get(c, 0))
            if count <= 0:
                continue
            h = plot_h * count / top
            y -= h
            out.append(_rect(cid, i, c, left, y, bar_w, h, f"{day.isoformat()}: {c} {count}"))
        if (n - 1 - k) % every == 0:  # counted from the last day, which is always shown
            out.append(
                f'<text x="{left + bar_w / 2:.1f}" y="{base + 26}" text-anchor="middle" '
                f'class="mv-axis-l">{day.strftime("%m-%d")}</text>'
            )
    out.append(
        f'<line x1="{_MARGIN_L}" x2="{_STACK_W - 4}" y1="{base}" y2="{base}" class="mv-axis-line"/>'
    )
    out.append("</svg>")
    return Markup("".join(out))


def html_legend(categories: Sequence[str], totals: Mapping[str, int], *, chart_id: str) -> Markup:
    """The legend of a chart as an HTML list: each category's swatch (its colour and
    pattern, as in the chart), its name and its total. Outside the SVG it wraps and keeps
    the page's text size on a phone."""
    cid = _id(chart_id) + "-legend"
    items: list[str] = []
    for i, c in enumerate(categories):
        sid = f"{cid}{i}"
        swatch = (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="mv-swatch" viewBox="0 0 16 16" '
            f'aria-hidden="true" focusable="false">{_pattern_defs(sid, i + 1)}'
            f"{_rect(sid, i, c, 0, 0, 16, 16, c)}</svg>"
        )
        items.append(f"<li>{swatch} {escape(c)} <strong>{int(totals.get(c, 0))}</strong></li>")
    return Markup(f'<ul class="mv-legend" id="{cid}">' + "".join(items) + "</ul>")
