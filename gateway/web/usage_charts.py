"""Charts for the usage page, drawn here as inline SVG (no script, no third-party code).

The page's CSP allows no inline styles, so every size is an SVG attribute and colours are classes in
``app.css`` (``.chart-bar``, ``.chart-axis``, ``.chart-label``). Each bar carries a ``<title>`` (a
tooltip, and what screen readers say), and each chart an ``aria-label`` summing it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from markupsafe import Markup, escape

__all__ = ["column_chart", "row_chart"]

_W, _H = 640, 180
_LEFT, _BOTTOM, _TOP = 48, 22, 10


def _fmt(v: Decimal) -> str:
    """Short, never rounded to a misleading 0: below 1, two significant digits (0.00031), down to 1e-6."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.1f}".removesuffix(".0")
    if v <= 0:
        return "0"
    places = min(6, 1 - v.adjusted())
    text = f"{v:.{places}f}".rstrip("0").rstrip(".")
    return "<0.000001" if text == "0" else text


def column_chart(points: Sequence[tuple[str, Decimal]], unit: str, title: str) -> Markup:
    """Vertical bars, one per point (e.g. per day), with the maximum on the axis."""
    if not points:
        return Markup("")
    top = max((v for _, v in points), default=Decimal(0))
    scale = top if top > 0 else Decimal(1)
    plot_w, plot_h = _W - _LEFT - 4, _H - _BOTTOM - _TOP
    step = Decimal(plot_w) / len(points)
    bar_w = max(Decimal(1), step * Decimal("0.8"))
    parts = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
             f'aria-label="{escape(title)}: highest {escape(_fmt(top))} {escape(unit)}">',
             f'<line class="chart-axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_W - 4}" y2="{_TOP + plot_h}"/>',
             f'<text class="chart-label" x="{_LEFT - 4}" y="{_TOP + 8}" text-anchor="end">{escape(_fmt(top))}</text>',
             f'<text class="chart-label" x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end">0</text>']
    label_every = max(1, len(points) // 8)
    for i, (label, value) in enumerate(points):
        h = Decimal(plot_h) * value / scale
        x = Decimal(_LEFT) + step * i + (step - bar_w) / 2
        y = Decimal(_TOP) + plot_h - h
        parts.append(f'<rect class="chart-bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                     f'<title>{escape(label)}: {escape(_fmt(value))} {escape(unit)}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text class="chart-label" x="{x + bar_w / 2:.1f}" y="{_H - 6}" text-anchor="middle">'
                         f'{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped labels only


def row_chart(rows: Sequence[tuple[str, Decimal, str]], title: str) -> Markup:
    """Horizontal bars: ``(label, value, text shown at the bar's end)`` per row (clusters, resources)."""
    if not rows:
        return Markup("")
    top = max((v for _, v, _ in rows), default=Decimal(0))
    scale = top if top > 0 else Decimal(1)
    row_h, label_w, text_w = 26, 150, 150
    height = row_h * len(rows) + 4
    plot_w = _W - label_w - text_w
    parts = [f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" aria-label="{escape(title)}">']
    for i, (label, value, text) in enumerate(rows):
        y = 2 + i * row_h
        w = Decimal(plot_w) * value / scale
        parts.append(f'<text class="chart-label" x="{label_w - 6}" y="{y + 17}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect class="chart-bar" x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}">'
                     f'<title>{escape(label)}: {escape(text)}</title></rect>')
        parts.append(f'<text class="chart-label" x="{label_w + w + 6:.1f}" y="{y + 17}">{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped labels only
