"""Line charts as inline SVG, drawn on the server: no chart library, nothing for the browser to run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], *, width: int = 640, height: int = 220, title: str = ""
) -> Markup:
    """One SVG with a polyline per series (x: step or day index, y: value), axes labelled with min/max."""
    points = [p for values in series.values() for p in values]
    if not points:
        return Markup('<p class="muted">no points to draw</p>')
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 56, 12, 22, 26

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title or "chart")}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">',
        f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="tick">{y1:.4g}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="tick">{y0:.4g}</text>',
        f'<text x="{left}" y="{height - 8}" class="tick">{x0:g}</text>',
        f'<text x="{width - right}" y="{height - 8}" text-anchor="end" class="tick">{x1:g}</text>',
    ]
    legend_x = width - right - 130 * len(series)  # top right; the title sits top left
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        if len(values) == 1:
            parts.append(f'<circle cx="{sx(values[0][0]):.1f}" cy="{sy(values[0][1]):.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<text x="{legend_x + 130 * i}" y="14" fill="{colour}" class="legend">■ {escape(str(name))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    width: int = 640,
    title: str = "",
    unit: str = "",
) -> Markup:
    """Grouped horizontal bars: one row per category (a model, a template), one bar per series (p50, p95)."""
    if not categories or not any(v is not None for values in series.values() for v in values):
        return Markup('<p class="muted">no values to draw</p>')
    top = max(v for values in series.values() for v in values if v is not None) or 1.0
    left, right, bar, gap = 180, 70, 12, 10
    row = bar * len(series) + gap
    height = 30 + row * len(categories)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title or "chart")}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">',
        f'<text x="8" y="14" class="chart-title">{escape(title)}</text>',
    ]
    for i, name in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(
            f'<text x="{width - right - 90 * (len(series) - i)}" y="14" fill="{colour}" class="legend">■ '
            f"{escape(str(name))}</text>"
        )
    for c, category in enumerate(categories):
        y = 26 + c * row
        label = category if len(category) <= 26 else category[:25] + "…"
        parts.append(
            f'<text x="{left - 6}" y="{y + row / 2 - 2:.1f}" text-anchor="end" class="tick">{escape(label)}</text>'
        )
        for i, values in enumerate(series.values()):
            value = values[c]
            if value is None:
                continue
            length = value / top * (width - left - right)
            by = y + i * bar
            parts.append(
                f'<rect x="{left}" y="{by}" width="{length:.1f}" height="{bar - 2}" '
                f'fill="{COLOURS[i % len(COLOURS)]}"><title>{escape(category)}: {value:.4g}{unit}</title></rect>'
            )
            parts.append(f'<text x="{left + length + 4:.1f}" y="{by + bar - 3}" class="tick">{value:.4g}{unit}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
